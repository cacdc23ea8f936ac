"""Degradation operators against scipy.ndimage / NumPy statements of the same maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from restore_cli.ops import degradation
from restore_cli.ops.degradation import (
    add_gaussian_noise,
    blur,
    decimate,
    degrade,
    jpeg_compress,
    jpeg_quality_int,
)
from restore_cli.ops.resize import matlab_imresize

SCIPY_MODE = {"wrap": "wrap", "reflect": "reflect", "replicate": "nearest"}


def _scipy_blur(x: np.ndarray, k: np.ndarray, mode: str) -> np.ndarray:
    """N×C×H×W numpy reference: scipy.ndimage.convolve per image and channel."""
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[n, c] = ndimage.convolve(x[n, c], k, mode=mode)
    return out


@pytest.mark.parametrize("boundary", ["wrap", "reflect", "replicate"])
@pytest.mark.parametrize("ksize", [(3, 3), (4, 4), (2, 5), (6, 3), (9, 8), (25, 25)])
def test_blur_matches_scipy_convolve(boundary: str, ksize: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(ksize))
    x = rng.random((2, 3, 17, 20))
    k = rng.random(ksize)  # non-symmetric, odd and even sides; 9×8 and 25×25 take the FFT path
    k /= k.sum()
    ref = _scipy_blur(x, k, SCIPY_MODE[boundary])
    out = blur(torch.from_numpy(x), k, boundary)  # type: ignore[arg-type]
    assert out.shape == x.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("boundary", ["wrap", "reflect", "replicate"])
def test_blur_kernel_larger_than_image(boundary: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((1, 1, 6, 7))
    k = rng.random((25, 24))
    ref = _scipy_blur(x, k, SCIPY_MODE[boundary])
    out = blur(torch.from_numpy(x), torch.from_numpy(k), boundary)  # type: ignore[arg-type]
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    if boundary == "wrap":  # the circular-convolution definition, written out
        h, w = x.shape[-2:]
        direct = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                for a in range(k.shape[0]):
                    for b in range(k.shape[1]):
                        direct[i, j] += k[a, b] * x[0, 0, (i + 12 - a) % h, (j + 12 - b) % w]
        np.testing.assert_allclose(out.numpy()[0, 0], direct, atol=1e-12)


@pytest.mark.parametrize("ksize", [5, 25])
def test_blur_per_image_kernels(ksize: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.random((3, 2, 16, 16))
    ks = rng.random((3, 1, ksize, ksize))
    out = blur(torch.from_numpy(x), torch.from_numpy(ks), "wrap")
    for n in range(3):
        np.testing.assert_allclose(out[n].numpy(), _scipy_blur(x[n : n + 1], ks[n, 0], "wrap")[0], atol=1e-12)
    with pytest.raises(ValueError):
        blur(torch.from_numpy(x), torch.from_numpy(ks[:2]), "wrap")


def test_blur_float32_fft_and_direct_agree() -> None:
    x = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    k = torch.rand(15, 15, generator=torch.Generator().manual_seed(1))
    k /= k.sum()
    fft = blur(x, k)
    assert fft.dtype == torch.float32
    ref = _scipy_blur(x.double().numpy(), k.double().numpy(), "wrap")
    np.testing.assert_allclose(fft.double().numpy(), ref, atol=2e-6)
    saved = degradation.FFT_MIN_TAPS
    try:
        degradation.FFT_MIN_TAPS = 10**9
        np.testing.assert_allclose(blur(x, k).double().numpy(), ref, atol=2e-6)
    finally:
        degradation.FFT_MIN_TAPS = saved


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kh=st.integers(1, 30),
    kw=st.integers(1, 30),
    boundary=st.sampled_from(["wrap", "reflect", "replicate"]),
    seed=st.integers(0, 2**16),
)
def test_blur_delta_kernel_is_identity(h: int, w: int, kh: int, kw: int, boundary: str, seed: int) -> None:
    x = torch.rand(1, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    k = torch.zeros(kh, kw, dtype=torch.float64)
    k[kh // 2, kw // 2] = 1.0
    torch.testing.assert_close(blur(x, k, boundary), x, atol=1e-12, rtol=0)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(2, 16),
    w=st.integers(2, 16),
    kh=st.integers(1, 20),
    kw=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_blur_wrap_preserves_mean(h: int, w: int, kh: int, kw: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, h, w, generator=g, dtype=torch.float64)
    k = torch.rand(kh, kw, generator=g, dtype=torch.float64)
    k /= k.sum()
    assert abs(blur(x, k, "wrap").mean().item() - x.mean().item()) < 1e-12


def test_decimate_keeps_upper_left() -> None:
    x = torch.arange(2 * 1 * 7 * 9, dtype=torch.float32).reshape(2, 1, 7, 9)
    y = decimate(x, 3)
    assert y.shape == (2, 1, 3, 3)
    assert torch.equal(y, x[:, :, [0, 3, 6]][:, :, :, [0, 3, 6]])
    assert torch.equal(decimate(x, 1), x)
    with pytest.raises(ValueError):
        decimate(x, 0)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_degrade_direct_wrap_matches_numpy(scale: int) -> None:
    rng = np.random.default_rng(scale)
    x = rng.random((1, 3, 24, 24)).astype(np.float32)
    k = rng.random((25, 25))
    k /= k.sum()
    ref = _scipy_blur(x.astype(np.float64), k, "wrap")[:, :, ::scale, ::scale]
    y = degrade(torch.from_numpy(x), k, scale, 0.0)
    assert y.shape == ref.shape
    assert np.abs(y.double().numpy() - ref).max() <= 0.5 / 255


def test_degrade_noise_jpeg_and_bicubic_paths() -> None:
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k = torch.ones(3, 3, dtype=torch.float64) / 9
    clean = degrade(x, k, 2, 0.0)
    noisy = degrade(x, k, 2, 0.1, generator=torch.Generator().manual_seed(5))
    expected = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(noisy, expected)
    clipped = degrade(x, k, 2, 0.5, generator=torch.Generator().manual_seed(5), clip_noise=True)
    assert clipped.min() >= 0 and clipped.max() <= 1
    # bicubic, no kernel: exactly MATLAB imresize(1/s)
    torch.testing.assert_close(degrade(x, None, 3, 0.0, down="bicubic"), matlab_imresize(x, scale=1 / 3))
    bic = degrade(x, k, 2, 0.0, down="bicubic", boundary="reflect")
    torch.testing.assert_close(bic, matlab_imresize(blur(x, k, "reflect"), scale=0.5))
    jp = degrade(x, k, 1, 0.0, jpeg_quality=30)
    assert jp.shape == x.shape and not torch.allclose(jp, blur(x, k), atol=1e-3)
    with pytest.raises(ValueError):
        degrade(x, k, 2, 0.0, down="nearest")  # type: ignore[arg-type]


def test_add_gaussian_noise_statistics_and_seeding() -> None:
    x = torch.full((2, 1, 200, 200), 0.5)
    y = add_gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0))
    assert abs((y - x).std().item() - 0.1) < 0.002 and abs((y - x).mean().item()) < 0.002
    same = add_gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0))
    other = add_gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y, same) and not torch.equal(y, other)
    per = add_gaussian_noise(x, torch.tensor([0.02, 0.2]), generator=torch.Generator().manual_seed(0))
    assert abs((per[0] - x[0]).std().item() - 0.02) < 0.001
    assert abs((per[1] - x[1]).std().item() - 0.2) < 0.004
    clipped = add_gaussian_noise(x, 0.5, generator=torch.Generator().manual_seed(0), clip=True)
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    with pytest.raises(ValueError):
        add_gaussian_noise(x, torch.tensor([0.1, 0.2, 0.3]))


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_compress_round_trip(channels: int) -> None:
    g = torch.Generator().manual_seed(0)
    # a ramp plus luminance texture (shared by the channels: 4:2:0 chroma subsampling would
    # smear independent per-channel noise at any quality), so the quality matters
    ramp = torch.linspace(0, 1, 40).reshape(1, 1, 1, 40)
    tint = torch.tensor([1.0, 0.8, 0.6])[:channels].reshape(1, channels, 1, 1)
    x = (0.6 * ramp + 0.4 * torch.rand(2, 1, 32, 40, generator=g)) * tint
    low = jpeg_compress(x, 10)
    high = jpeg_compress(x, 95)
    assert low.shape == x.shape and high.shape == x.shape and low.dtype == x.dtype
    assert torch.equal(torch.round(low * 255), low * 255)  # decoded 8-bit values
    err_low, err_high = (low - x).abs().mean().item(), (high - x).abs().mean().item()
    assert err_low > 2 / 255 and err_high < err_low / 2
    assert torch.equal(jpeg_compress(x, 10), low)  # deterministic
    assert torch.equal(jpeg_compress(x, 10.4), low)  # qualities are rounded
    with pytest.raises(ValueError):
        jpeg_compress(torch.rand(1, 2, 8, 8), 50)


def test_jpeg_quality_int() -> None:
    assert [jpeg_quality_int(q) for q in (0.2, 1.0, 49.5, 50.49, 99.6, 250)] == [1, 1, 50, 50, 100, 100]
