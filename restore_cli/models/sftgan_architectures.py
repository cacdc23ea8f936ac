"""Architecture-table entries of the sftgan models (merged into `restore_cli.models.architectures`)."""

from __future__ import annotations

from typing import Any

ARCHITECTURES: dict[str, Any] = {}
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {}
