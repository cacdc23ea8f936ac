"""Atomic file writes: write a hidden temp file beside the target, fsync it, then rename it over.

A reader of the target sees either the old file or the complete new one, never a partial write,
and an interrupted run (exception, Ctrl-C) leaves no temp file and the old target untouched.
Temp names are `.<target name>.<random hex>.tmp` in the target's directory, so that the batch
runner can find leftovers of a killed process with `TEMP_PREFIX`/`TEMP_SUFFIX`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

from restore_cli.errors import RestoreError

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"

WriteMode = Literal["wb", "w"]


def temp_path_for(path: Path) -> Path:
    """A fresh temp-file name in `path`'s directory: `.<name>.<16 hex digits>.tmp`."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")


def is_temp_file(path: Path) -> bool:
    """Whether `path` looks like a temp file left by `atomic_write` (for clean-up of killed runs)."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create and open a new temp file exclusively; mode 0o666 so the umask applies as usual."""
    for _ in range(100):
        temp = temp_path_for(path)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        except FileNotFoundError:
            raise RestoreError("cannot write: the output directory does not exist", path) from None
        except OSError as error:
            raise RestoreError(f"cannot write: {error.strerror or error}", path) from None
        return fd, temp
    raise RestoreError("cannot write: could not create a unique temporary file", path)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable on POSIX; directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path, mode: WriteMode = "wb") -> Iterator[IO]:
    """Yield a file object whose contents replace `path` only when the block ends without error.

    `mode` is "wb" (bytes) or "w" (UTF-8 text). On any exception, KeyboardInterrupt included, the
    temp file is removed and `path` keeps its old contents. If `path` already exists, the new file
    takes over its permission bits.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise RestoreError("cannot write: is a directory", path)
    fd, temp = _create_temp(path)
    try:
        if mode == "wb":
            handle: IO = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(error, OSError) and error.errno is not None:
            # A real OS failure (disk full, permission, I/O error) is the user's to fix.
            raise RestoreError(f"cannot write: {error.strerror or error}", path) from error
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8, newlines written as given) atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)
