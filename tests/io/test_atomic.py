from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from restore_cli.errors import RestoreError
from restore_cli.io.atomic import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    is_temp_file,
    temp_path_for,
)


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX) and p.name.endswith(TEMP_SUFFIX)]


def test_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    atomic_write_text(tmp_path / "t.txt", "héllo\nwörld\r\n")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\nwörld\r\n".encode()
    assert _temps(tmp_path) == []


def test_temp_file_is_hidden_beside_target_while_writing(tmp_path: Path) -> None:
    target = tmp_path / "image.png"
    with atomic_write(target) as handle:
        handle.write(b"partial")
        temps = _temps(tmp_path)
        assert len(temps) == 1 and is_temp_file(temps[0])
        assert temps[0].name.startswith(".image.png.")
        assert not target.exists()
    assert target.read_bytes() == b"partial" and _temps(tmp_path) == []
    assert temp_path_for(target) != temp_path_for(target)  # unique names


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_keeps_old_target_and_removes_temp(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_write(target, "w") as handle:
            handle.write("new but incomplete")
            raise error
    assert target.read_text() == "old"
    assert _temps(tmp_path) == []


def test_exception_without_old_target_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "new.bin") as handle:
            handle.write(b"x")
            raise ValueError("encoder failed")
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_a_restore_error(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir.png"
    with pytest.raises(RestoreError, match="directory does not exist") as info:
        atomic_write_bytes(target, b"x")
    assert info.value.path == str(target)


def test_target_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match="is a directory"):
        atomic_write_bytes(tmp_path, b"x")


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        with atomic_write(Path("x"), "a"):  # type: ignore[arg-type]
            pass


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permissions_follow_umask_or_existing_file(tmp_path: Path) -> None:
    reference = tmp_path / "plain.txt"
    reference.write_text("x")  # created with the process umask, like any ordinary file
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "y")
    assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)
    existing = tmp_path / "existing.txt"
    existing.write_text("old")
    existing.chmod(0o640)
    atomic_write_text(existing, "new")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
