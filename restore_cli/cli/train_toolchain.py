"""`restore train` subcommands of the toolchain models (registered on `train_app`)."""

from __future__ import annotations

import typer


def register(train_app: typer.Typer) -> None:
    """Add this family's training commands to `restore train`."""
