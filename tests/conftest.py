"""Shared test fixtures: the ../shared folder, the CLI runner, small generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"


@pytest.fixture
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip("../shared/datasets not found beside the repository: dataset checks skipped")
    return DATASETS


@pytest.fixture
def cli():
    """Run the real Typer app in-process; returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from restore_cli.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def write_rgb(path: Path, h: int = 48, w: int = 64, seed: int = 0, mode: str = "RGB") -> np.ndarray:
    """A smooth random test picture (values well inside [0, 255] to avoid clipping)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    coarse = rng.uniform(40, 215, size=(h // 8 + 2, w // 8 + 2, channels))
    yy = np.linspace(0, coarse.shape[0] - 1.001, h)
    xx = np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[:, None, None], (xx - x0)[None, :, None]
    img = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
           + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).round().astype(np.uint8)
    if mode == "L":
        img = img[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode).save(path)
    return img
