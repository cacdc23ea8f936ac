"""A plain (non-editable) install carries `weights/` as package data (`restore_cli._weights`)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_the_weights_store(tmp_path: Path) -> None:
    if not (REPO / "pyproject.toml").exists():
        pytest.skip("not run from a source checkout")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        pytest.skip(f"could not build a wheel here (no build backend reachable?): {done.stderr.strip()[-200:]}")
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (REPO / "weights").iterdir() if p.suffix in (".safetensors", ".json")}
    assert "manifest.json" in shipped
    for name in shipped:
        assert f"restore_cli/_weights/{name}" in names
    assert "restore_cli/cli/app.py" in names and "restore_cli/ops/hqs.py" in names
