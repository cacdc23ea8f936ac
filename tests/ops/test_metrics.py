"""Tests for restore_cli.ops.metrics against scikit-image and direct statements (ANCHORS §6)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.metrics
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from restore_cli.ops.metrics import (
    blocking_effect_factor,
    crop_border,
    psnr,
    psnr_b,
    quantize_to_uint8_levels,
    ssim,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


def _rand(shape: tuple[int, ...], seed: int, scale: float = 255.0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x + sigma * n).clamp(0, 255)


def _real_image() -> torch.Tensor:
    """A 3×96×80 crop of a CBSD68 image on 0–255 (skips when ../shared is absent)."""
    path = SHARED / "datasets" / "CBSD68" / "101085.png"
    if not path.is_file():
        pytest.skip(f"../shared not found: {path}")
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)[100:196, 150:230]
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------- quantisation and cropping


def test_quantize_rounding_modes() -> None:
    x = torch.tensor([-0.2, 0.5, 1.5, 2.5, 127.5, 254.5, 300.0], dtype=torch.float64) / 255.0
    even = quantize_to_uint8_levels(x)
    away = quantize_to_uint8_levels(x, rounding="half_away")
    assert even.dtype == torch.float64 and away.dtype == torch.float64
    assert even.tolist() == [0.0, 0.0, 2.0, 2.0, 128.0, 254.0, 255.0]
    assert away.tolist() == [0.0, 1.0, 2.0, 3.0, 128.0, 255.0, 255.0]
    with pytest.raises(ValueError):
        quantize_to_uint8_levels(x, rounding="up")  # type: ignore[arg-type]


def test_quantize_matches_numpy_uint8_convention() -> None:
    """np.uint8((clip(x, 0, 1) * 255).round()), as in the Python reference metric code."""
    x = torch.rand((3, 20, 20), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.2 - 0.1
    want = np.uint8((np.clip(x.numpy(), 0, 1) * 255.0).round()).astype(np.float64)
    np.testing.assert_array_equal(quantize_to_uint8_levels(x).numpy(), want)


def test_crop_border() -> None:
    x = torch.arange(2 * 7 * 9, dtype=torch.float64).view(2, 7, 9)
    assert torch.equal(crop_border(x, 0), x)
    assert torch.equal(crop_border(x, 2), x[:, 2:5, 2:7])
    with pytest.raises(ValueError):
        crop_border(x, 4)
    with pytest.raises(ValueError):
        crop_border(x, -1)


# ---------------------------------------------------------------- PSNR


def test_psnr_matches_formula_and_skimage() -> None:
    x = _rand((3, 30, 40), 1)
    y = _noisy(x, 10.0, 2)
    mse = float(((x - y) ** 2).mean())
    assert math.isclose(psnr(x, y), 10 * math.log10(255**2 / mse), rel_tol=1e-12)
    want = skimage.metrics.peak_signal_noise_ratio(x.numpy(), y.numpy(), data_range=255)
    assert math.isclose(psnr(x, y), want, rel_tol=1e-12)
    assert math.isclose(psnr(x / 255, y / 255, data_range=1.0), want, rel_tol=1e-10)


def test_psnr_border_inf_and_shapes() -> None:
    x = _rand((1, 20, 20), 3)
    y = x.clone()
    y[:, :2, :] += 50.0  # differences only in the top 2 rows
    assert psnr(x, x) == math.inf
    assert psnr(x, y, border=2) == math.inf
    assert psnr(x, y) < 30
    assert math.isclose(psnr(x[0], y[0]), psnr(x, y), rel_tol=1e-15)  # H×W accepted
    with pytest.raises(ValueError):
        psnr(x, y[:, :19])


# ---------------------------------------------------------------- SSIM


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(
        skimage.metrics.structural_similarity(
            x.numpy(),
            y.numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=0,
        )
    )


@pytest.mark.parametrize("shape,sigma", [((3, 48, 56), 20.0), ((1, 33, 27), 5.0), ((3, 11, 11), 40.0)])
def test_ssim_matches_skimage_random(shape: tuple[int, int, int], sigma: float) -> None:
    x = _rand(shape, 4)
    y = _noisy(x, sigma, 5)
    assert abs(ssim(x, y) - _skimage_ssim(x, y)) < 1e-10


def test_ssim_matches_skimage_real_image() -> None:
    x = _real_image()
    for sigma, seed in ((5.0, 6), (25.0, 7)):
        y = torch.round(_noisy(x, sigma, seed))
        ours = ssim(x, y)
        assert abs(ours - _skimage_ssim(x, y)) < 1e-4
        assert 0.0 < ours < 1.0
    y = torch.round(_noisy(x, 15.0, 8))
    gray = skimage.metrics.structural_similarity(
        x[0].numpy(), y[0].numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert abs(ssim(x[0], y[0]) - gray) < 1e-10
    # border cropping before SSIM equals SSIM of the cropped images
    assert ssim(x, y, border=4) == pytest.approx(_skimage_ssim(x[:, 4:-4, 4:-4], y[:, 4:-4, 4:-4]), abs=1e-10)


def test_ssim_identity_and_too_small() -> None:
    x = _rand((2, 16, 16), 9)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        ssim(x[:, :10], x[:, :10])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.5, 80.0))
def test_ssim_symmetric_and_bounded(seed: int, sigma: float) -> None:
    x = _rand((1, 16, 18), seed)
    y = _noisy(x, sigma, seed + 1)
    s = ssim(x, y)
    assert -1.0 <= s < 1.0
    assert s == pytest.approx(ssim(y, x), abs=1e-12)


# ---------------------------------------------------------------- PSNR-B


def _bef_by_definition(img: np.ndarray, block: int = 8) -> float:
    """Yim & Bovik 2011, Eqs. 3–6, written as loops over every neighbouring pixel pair."""
    h, w = img.shape
    s_b = s_bc = 0.0
    n_b = n_bc = 0
    for i in range(h):
        for j in range(w - 1):  # horizontal pairs (i, j)-(i, j+1)
            d = (img[i, j] - img[i, j + 1]) ** 2
            if (j + 1) % block == 0:
                s_b, n_b = s_b + d, n_b + 1
            else:
                s_bc, n_bc = s_bc + d, n_bc + 1
    for i in range(h - 1):
        for j in range(w):  # vertical pairs (i, j)-(i+1, j)
            d = (img[i, j] - img[i + 1, j]) ** 2
            if (i + 1) % block == 0:
                s_b, n_b = s_b + d, n_b + 1
            else:
                s_bc, n_bc = s_bc + d, n_bc + 1
    if h % block == 0 and w % block == 0:  # the paper's closed-form counts
        assert n_b == h * (w // block - 1) + w * (h // block - 1)
        assert n_bc == h * (w - 1) + w * (h - 1) - n_b
    d_b, d_bc = s_b / n_b, s_bc / n_bc
    eta = math.log2(block) / math.log2(min(h, w)) if d_b > d_bc else 0.0
    return eta * (d_b - d_bc)


def _smooth_and_blocky(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image and its 8×8 block-mean (piecewise-constant) version, 0–255."""
    i = torch.arange(h, dtype=torch.float64).view(-1, 1)
    j = torch.arange(w, dtype=torch.float64).view(1, -1)
    smooth = 128 + 60 * torch.sin(i / 5.0) * torch.cos(j / 7.0) + 0.8 * j
    blocky = smooth.clone()
    for r in range(0, h, 8):
        for c in range(0, w, 8):
            blocky[r : r + 8, c : c + 8] = smooth[r : r + 8, c : c + 8].mean()
    return smooth, blocky


@pytest.mark.parametrize("h,w", [(32, 40), (30, 37)])
def test_psnr_b_matches_definition_on_blocky_image(h: int, w: int) -> None:
    smooth, blocky = _smooth_and_blocky(h, w)
    bef = _bef_by_definition(blocky.numpy())
    assert bef > 0
    assert blocking_effect_factor(blocky) == pytest.approx(bef, rel=1e-12)
    mse = float(((blocky - smooth) ** 2).mean())
    want = 10 * math.log10(255**2 / (mse + bef))
    got = psnr_b(blocky[None], smooth[None])
    assert got == pytest.approx(want, rel=1e-12)
    assert got < psnr(blocky, smooth)
    # BEF is measured on the first argument (the image under test) only
    assert psnr_b(smooth, blocky) == pytest.approx(psnr(smooth, blocky), rel=1e-12)


def test_psnr_b_equals_psnr_without_excess_boundary_differences() -> None:
    """A linear ramp has the same neighbour difference everywhere: D_B = D_B^c, BEF = 0."""
    ref = _rand((1, 32, 32), 10)
    j = torch.arange(32, dtype=torch.float64)
    ramp = (3.0 * j.view(1, -1) + 2.0 * j.view(-1, 1)).unsqueeze(0)
    assert blocking_effect_factor(ramp[0]) == 0.0
    assert _bef_by_definition(ramp[0].numpy()) == 0.0
    assert psnr_b(ramp, ref) == pytest.approx(psnr(ramp, ref), rel=1e-14)
    # differences only inside blocks (constant across boundaries): D_B < D_B^c, BEF = 0
    inner = torch.zeros(1, 32, 32, dtype=torch.float64)
    inner[..., 3::8] = 40.0
    assert blocking_effect_factor(inner[0]) == 0.0
    assert psnr_b(inner, ref) == pytest.approx(psnr(inner, ref), rel=1e-14)


def test_psnr_b_colour_is_mean_over_channels() -> None:
    smooth, blocky = _smooth_and_blocky(24, 32)
    x = torch.stack([blocky, smooth + 3.0, blocky * 0.9])
    y = torch.stack([smooth, smooth, smooth])
    per_channel = [psnr_b(x[c], y[c]) for c in range(3)]
    assert psnr_b(x, y) == pytest.approx(sum(per_channel) / 3, rel=1e-14)
    assert psnr_b(x, x) == math.inf


def test_psnr_b_on_jpeg_is_below_psnr() -> None:
    x = _real_image()
    gray = np.uint8(np.round(x.numpy().mean(axis=0)))
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="JPEG", quality=10)
    dec = torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float64))
    ref = torch.from_numpy(gray.astype(np.float64))
    assert blocking_effect_factor(dec) > 0
    assert psnr_b(dec, ref) < psnr(dec, ref)
    assert blocking_effect_factor(dec) == pytest.approx(_bef_by_definition(dec.numpy()), rel=1e-10)
