"""The one exception type for errors a user can cause (bad file, bad option value).

The CLI turns a `RestoreError` into one line on stderr and a non-zero exit code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class RestoreError(Exception):
    """A user-facing error. `path` names the file concerned, when there is one."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
