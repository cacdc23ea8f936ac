"""MATLAB bicubic imresize: hand-derived weights, invariants, and the stored Set5 LR references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from restore_cli.ops.degradation import degrade
from restore_cli.ops.resize import cubic, matlab_imresize, resize_contributions

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DATASETS = SHARED / "datasets"
SET5_NAMES = ["baby", "bird", "butterfly", "head", "woman"]


def test_cubic_hand_values() -> None:
    # Keys a = −0.5: 1.5|t|³ − 2.5|t|² + 1 on |t| ≤ 1; −0.5|t|³ + 2.5|t|² − 4|t| + 2 on 1 < |t| ≤ 2
    t = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5, -0.25])
    expected = [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0, 0.8671875]
    np.testing.assert_allclose(cubic(t), expected, atol=1e-15)


def test_upscale_by_two_first_sample_hand_derived() -> None:
    # output 1 sits at u = 0.75 (1-based): taps at input 2, 1, 1, 2 (indices −1, 0 mirror to 2, 1)
    # with cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25) → 1.09375·x1 − 0.09375·x2
    w, src = resize_contributions(6, 12, 2.0)
    dense = np.zeros((12, 6))
    np.add.at(dense, (np.repeat(np.arange(12), w.shape[1]), src.ravel()), w.ravel())
    np.testing.assert_allclose(dense[0, :3], [1.09375, -0.09375, 0.0], atol=1e-15)
    x = torch.arange(6, dtype=torch.float64).reshape(1, 6)
    y = matlab_imresize(x, scale=2.0)
    assert y.shape == (2, 12)
    # Keys' cubic reproduces a ramp away from the borders: output j maps to input (j+0.5)/2 − 0.5
    interior = torch.arange(3, 9)
    torch.testing.assert_close(y[0, interior], (interior.double() + 0.5) / 2 - 0.5)
    assert abs(y[0, 0].item() - (-0.09375)) < 1e-15


def test_downscale_by_two_antialias_filter_hand_derived() -> None:
    # scale ½: h(t) = ½·cubic(t/2), taps at ±0.5, ±1.5, ±2.5, ±3.5 (8-tap filter summing to 1)
    w, src = resize_contributions(32, 16, 0.5)
    expected = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]
    row = 8  # interior output sample 9 (1-based) at u = 17.5 reads inputs 14..21 (1-based)
    nz = w[row] != 0
    np.testing.assert_allclose(w[row][nz], expected, atol=1e-15)
    np.testing.assert_array_equal(src[row][nz], np.arange(13, 21))
    # without antialiasing the plain 4-tap cubic is used: cubic(±0.5), cubic(±1.5)
    w2, _ = resize_contributions(32, 16, 0.5, antialias=False)
    nz2 = w2[row] != 0
    np.testing.assert_allclose(w2[row][nz2], [-0.0625, 0.5625, 0.5625, -0.0625], atol=1e-15)


@pytest.mark.parametrize(("n_in", "n_out", "scale"), [(10, 3, 1 / 3), (7, 28, 4.0), (13, 5, 5 / 13), (1, 3, 3.0)])
def test_contributions_sum_to_one_and_stay_in_range(n_in: int, n_out: int, scale: float) -> None:
    w, src = resize_contributions(n_in, n_out, scale)
    assert w.shape == src.shape and w.shape[0] == n_out
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-14)
    assert src.min() >= 0 and src.max() < n_in


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    scale=st.sampled_from([0.25, 1 / 3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0]),
    value=st.floats(-2.0, 2.0),
)
def test_constant_image_stays_constant(h: int, w: int, scale: float, value: float) -> None:
    x = torch.full((1, 2, h, w), value, dtype=torch.float64)
    y = matlab_imresize(x, scale=scale)
    assert y.shape[-2:] == (math.ceil(h * scale - 1e-9), math.ceil(w * scale - 1e-9))
    torch.testing.assert_close(y, torch.full_like(y, value), atol=1e-12, rtol=0)


def test_sizes_dtypes_and_arguments() -> None:
    x = torch.rand(2, 3, 510, 9, dtype=torch.float32)
    assert matlab_imresize(x, scale=1 / 3).shape == (2, 3, 170, 3)  # 510/3 snaps to 170, not 171
    assert matlab_imresize(x, scale=1 / 3).dtype == torch.float32
    assert matlab_imresize(x[..., :7], scale=0.5).shape == (2, 3, 255, 4)  # ceil
    assert matlab_imresize(x, size=(100, 20)).shape == (2, 3, 100, 20)
    assert not torch.allclose(matlab_imresize(x, scale=0.25), matlab_imresize(x, scale=0.25, antialias=False))
    u8 = (torch.rand(1, 1, 20, 20) * 255).to(torch.uint8)
    assert matlab_imresize(u8, scale=0.5).dtype == torch.uint8
    with pytest.raises(ValueError):
        matlab_imresize(x, scale=0.5, size=(4, 4))
    with pytest.raises(ValueError):
        matlab_imresize(x)


def _load_set5(name: str, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """HR modcropped to a multiple of s, and the stored MATLAB LR (both uint8 H×W×3)."""
    hr = np.array(Image.open(DATASETS / "Set5" / f"{name}.png").convert("RGB"))
    lr = np.array(Image.open(DATASETS / f"Set5_LR_bicubic_X{scale}" / f"{name}x{scale}.png").convert("RGB"))
    h, w = hr.shape[:2]
    hr = hr[: h - h % scale, : w - w % scale]
    # The reference sizes are floor(H/s) × floor(W/s): the HR was modcropped before resizing
    # (e.g. baby 512² ×3 → 170², woman 344×228 ×3 → 114×76).
    assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3)
    return hr, lr


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_references(scale: int) -> None:
    if not (DATASETS / f"Set5_LR_bicubic_X{scale}").is_dir():
        pytest.skip(f"../shared not found: {DATASETS}")
    for name in SET5_NAMES:
        hr, lr = _load_set5(name, scale)
        x = torch.from_numpy(hr).permute(2, 0, 1)[None]
        # float path, as `restore degrade --down bicubic`: [0, 1] in, ×255 and rounded (halves up)
        y = degrade(x.double() / 255, None, scale, 0.0, down="bicubic")
        y8 = np.clip(np.floor(y[0].permute(1, 2, 0).numpy() * 255 + 0.5), 0, 255)
        psnr = _psnr(y8, lr)
        # uint8 path: MATLAB rounds to uint8 after each axis pass; this is bit-exact
        y_u8 = matlab_imresize(x, scale=1 / scale)[0].permute(1, 2, 0).numpy()
        print(f"Set5 x{scale} {name}: float path {psnr:.2f} dB, uint8 path {_psnr(y_u8, lr):.2f} dB")
        assert psnr >= 55.0, f"{name} x{scale}: {psnr:.2f} dB"
        np.testing.assert_array_equal(y_u8, lr)
