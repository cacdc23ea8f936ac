"""Tests for restore_cli.ops.colour: MATLAB BT.601 studio-range YCbCr and rgb2gray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.color
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from restore_cli.ops.colour import rgb_to_gray, rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


def _random_rgb(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_known_values() -> None:
    # black, white, pure red: MATLAB rgb2ycbcr on doubles
    x = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64).view(3, 1, 3)
    ycc = rgb_to_ycbcr(x) * 255.0
    np.testing.assert_allclose(ycc[:, 0, 0].numpy(), [16.0, 128.0, 128.0], atol=1e-12)
    np.testing.assert_allclose(ycc[:, 0, 1].numpy(), [235.0, 128.0, 128.0], atol=1e-12)
    np.testing.assert_allclose(ycc[:, 0, 2].numpy(), [16 + 65.481, 128 - 37.797, 128 + 112.0], atol=1e-12)


def test_rgb_to_ycbcr_matches_skimage() -> None:
    """skimage.color.rgb2ycbcr implements the same MATLAB matrix (output on 0–255)."""
    x = _random_rgb((3, 17, 23), 0)
    want = skimage.color.rgb2ycbcr(x.permute(1, 2, 0).numpy())
    got = rgb_to_ycbcr(x).permute(1, 2, 0).numpy() * 255.0
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_ycbcr_to_rgb_matches_skimage() -> None:
    ycc = 16 / 255 + _random_rgb((3, 11, 9), 1) * (219 / 255)
    want = skimage.color.ycbcr2rgb(ycc.permute(1, 2, 0).numpy() * 255.0)
    got = ycbcr_to_rgb(ycc).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, want, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_roundtrip_and_y_consistency(n: int, h: int, w: int, seed: int) -> None:
    x = _random_rgb((n, 3, h, w), seed)
    ycc = rgb_to_ycbcr(x)
    assert ycc.shape == x.shape
    torch.testing.assert_close(ycbcr_to_rgb(ycc), x, rtol=0, atol=1e-12)
    y = rgb_to_y(x)
    assert y.shape == (n, 1, h, w)
    torch.testing.assert_close(y, ycc[:, :1], rtol=0, atol=1e-14)
    assert float(y.min()) >= 16 / 255 - 1e-12 and float(y.max()) <= 235 / 255 + 1e-12


def test_y_and_gray_keep_channel_dim_and_dtype() -> None:
    x = _random_rgb((3, 5, 6), 2).float()
    assert rgb_to_y(x).shape == (1, 5, 6) and rgb_to_y(x).dtype == torch.float32
    assert rgb_to_gray(x).shape == (1, 5, 6)
    with pytest.raises(ValueError):
        rgb_to_y(torch.zeros(1, 5, 6))


def test_gray_weights_direct() -> None:
    x = _random_rgb((2, 3, 4, 4), 3)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    want = 0.298936021293775 * r + 0.587043074451121 * g + 0.114020904255103 * b
    torch.testing.assert_close(rgb_to_gray(x)[:, 0], want, rtol=0, atol=1e-15)
    ones = torch.ones(3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(rgb_to_gray(ones), torch.ones(1, 2, 2, dtype=torch.float64), rtol=0, atol=1e-14)


def test_bsd68_is_rounded_rgb2gray_of_cbsd68() -> None:
    """BSD68 testNNN = round(rgb2gray(CBSD68 NNN-th id in string order)), exactly."""
    cbsd, bsd = SHARED / "datasets" / "CBSD68", SHARED / "datasets" / "BSD68"
    if not (cbsd.is_dir() and bsd.is_dir()):
        pytest.skip(f"../shared not found: {cbsd} / {bsd}")
    ids = sorted(p.name for p in cbsd.glob("*.png"))
    assert len(ids) == 68
    for number in (1, 20, 66, 68):
        rgb = np.asarray(Image.open(cbsd / ids[number - 1]).convert("RGB"), dtype=np.float64) / 255.0
        gray = np.asarray(Image.open(bsd / f"test{number:03d}.png"), dtype=np.float64)
        x = torch.from_numpy(rgb).permute(2, 0, 1)
        ours = torch.round(rgb_to_gray(x)[0] * 255.0).numpy()
        assert ours.shape == gray.shape
        np.testing.assert_array_equal(ours, gray)
