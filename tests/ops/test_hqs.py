"""The HQS data step against an independent statement of it: a dense float64 linear solve of the
normal equations, with the operator A built column by column from scipy.ndimage.convolve(wrap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from restore_cli.ops.hqs import (
    block_mean,
    data_step,
    prepare_data_terms,
    psf_to_otf,
    upsample_zeros,
    wrap_convolve_and_decimate,
)

# (HR height, HR width, scale, kernel size) from ANCHORS 1.2.
DENSE_CASES = [(12, 12, 2, 5), (12, 18, 3, 5), (16, 16, 4, 7), (10, 10, 1, 3)]


def _degrade_scipy(image: np.ndarray, kernel: np.ndarray, scale: int) -> np.ndarray:
    """(x ⊗ k)↓s: circular true convolution (centre floor(h/2)), upper-left decimation."""
    return ndimage.convolve(image, kernel, mode="wrap")[::scale, ::scale]


def _dense_operator(height: int, width: int, kernel: np.ndarray, scale: int) -> np.ndarray:
    """A as a (h·w)×(H·W) matrix, one column per HR unit image."""
    columns = []
    for index in range(height * width):
        unit = np.zeros(height * width)
        unit[index] = 1.0
        columns.append(_degrade_scipy(unit.reshape(height, width), kernel, scale).ravel())
    return np.stack(columns, axis=1)


def _random_kernel(rng: np.random.Generator, kh: int, kw: int) -> np.ndarray:
    kernel = rng.random((kh, kw)) + 0.05
    kernel[0, -1] += 1.0  # make sure it is far from symmetric
    return kernel / kernel.sum()


@pytest.mark.parametrize(("height", "width", "scale", "ksize"), DENSE_CASES)
def test_data_step_equals_dense_normal_equations(height: int, width: int, scale: int, ksize: int) -> None:
    rng = np.random.default_rng(1234 + height * 100 + width + scale)
    kernel = _random_kernel(rng, ksize, ksize)
    assert not np.allclose(kernel, kernel[::-1, ::-1])
    a = _dense_operator(height, width, kernel, scale)
    h, w = height // scale, width // scale
    channels = 2
    y = rng.random((1, channels, h, w))
    x = rng.random((1, channels, height, width))
    alpha = 0.37

    terms = prepare_data_terms(torch.from_numpy(y), torch.from_numpy(kernel), scale)
    z = data_step(torch.from_numpy(x), terms, torch.tensor([[[[alpha]]]], dtype=torch.float64), scale)
    assert z.dtype == torch.float64 and z.shape == (1, channels, height, width)
    # A Python float α must not pass through float32 on its way (that alone costs ~1e-9).
    torch.testing.assert_close(data_step(torch.from_numpy(x), terms, alpha, scale), z, rtol=0, atol=1e-14)

    normal = a.T @ a + alpha * np.eye(height * width)
    for c in range(channels):
        rhs = a.T @ y[0, c].ravel() + alpha * x[0, c].ravel()
        expected = np.linalg.solve(normal, rhs).reshape(height, width)
        np.testing.assert_allclose(z[0, c].numpy(), expected, rtol=0, atol=1e-12)


def test_data_step_batch_has_its_own_kernel_and_alpha() -> None:
    """Each batch element is solved with its own kernel and α (N×1×kh×kw, N×1×1×1)."""
    rng = np.random.default_rng(7)
    height, width, scale = 12, 12, 3
    kernels = [_random_kernel(rng, 4, 6), _random_kernel(rng, 4, 6)]  # even-sized kernels too
    alphas = [0.05, 2.0]
    y = rng.random((2, 1, height // scale, width // scale))
    x = rng.random((2, 1, height, width))
    terms = prepare_data_terms(torch.from_numpy(y), torch.from_numpy(np.stack(kernels)[:, None]), scale)
    z = data_step(torch.from_numpy(x), terms, torch.tensor(alphas, dtype=torch.float64).reshape(2, 1, 1, 1), scale)
    for n in range(2):
        a = _dense_operator(height, width, kernels[n], scale)
        rhs = a.T @ y[n, 0].ravel() + alphas[n] * x[n, 0].ravel()
        expected = np.linalg.solve(a.T @ a + alphas[n] * np.eye(height * width), rhs)
        np.testing.assert_allclose(z[n, 0].numpy(), expected.reshape(height, width), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("height", "width", "scale", "kh", "kw"), [(12, 18, 3, 5, 5), (16, 16, 4, 7, 6), (10, 14, 1, 4, 3), (24, 24, 2, 25, 25)])
def test_forward_operator_matches_scipy_wrap_convolution(height: int, width: int, scale: int, kh: int, kw: int) -> None:
    rng = np.random.default_rng(kh * 10 + kw)
    kernel = _random_kernel(rng, kh, kw)
    image = rng.random((height, width))
    ours = wrap_convolve_and_decimate(torch.from_numpy(image)[None, None], torch.from_numpy(kernel), scale)
    np.testing.assert_allclose(ours[0, 0].numpy(), _degrade_scipy(image, kernel, scale), rtol=0, atol=1e-12)


def test_kernel_larger_than_image_folds_taps() -> None:
    """A kernel bigger than the HR grid acts as circular convolution with its taps folded."""
    rng = np.random.default_rng(3)
    height, width = 6, 5
    kernel = _random_kernel(rng, 9, 8)
    image = rng.random((height, width))
    # Independent statement: out[i, j] = Σ_ab k[a, b] x[(i − a + ⌊kh/2⌋) mod H, (j − b + ⌊kw/2⌋) mod W].
    expected = np.zeros_like(image)
    for a in range(9):
        for b in range(8):
            expected += kernel[a, b] * np.roll(image, shift=(a - 9 // 2, b - 8 // 2), axis=(0, 1))
    ours = wrap_convolve_and_decimate(torch.from_numpy(image)[None, None], torch.from_numpy(kernel), 1)
    np.testing.assert_allclose(ours[0, 0].numpy(), expected, rtol=0, atol=1e-12)


def test_psf_to_otf_matches_shifted_fft() -> None:
    """MATLAB psf2otf: pad, circshift by −floor(size/2), FFT; a centred delta has OTF ≡ 1."""
    delta = torch.zeros(5, 4, dtype=torch.float64)
    delta[2, 2] = 1.0
    otf = psf_to_otf(delta, (8, 10))
    assert otf.shape == (1, 1, 8, 10) and otf.is_complex()
    torch.testing.assert_close(otf, torch.ones_like(otf))
    rng = np.random.default_rng(0)
    kernel = rng.random((3, 6))
    padded = np.zeros((7, 9))
    padded[:3, :6] = kernel
    expected = np.fft.fft2(np.roll(padded, (-1, -3), axis=(0, 1)))
    np.testing.assert_allclose(psf_to_otf(torch.from_numpy(kernel), (7, 9))[0, 0].numpy(), expected, atol=1e-12)


def test_upsample_zeros_and_block_mean() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    up = upsample_zeros(x, 3)
    assert up.shape == (1, 1, 6, 9)
    torch.testing.assert_close(up[..., ::3, ::3], x)
    assert up.sum() == x.sum() and torch.count_nonzero(up) == torch.count_nonzero(x)

    big = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    expected = sum(big[..., i * 4 : (i + 1) * 4, j * 6 : (j + 1) * 6] for i in range(2) for j in range(2)) / 4
    torch.testing.assert_close(block_mean(big, 2), expected)
    complex_big = torch.complex(big, big.flip(-1))
    torch.testing.assert_close(block_mean(complex_big, 2).imag, block_mean(big.flip(-1), 2))


def test_data_step_promotes_low_precision_to_float32() -> None:
    y = torch.rand(1, 3, 5, 7).to(torch.bfloat16)
    terms = prepare_data_terms(y, torch.full((1, 1, 3, 3), 1 / 9), 2)
    z = data_step(torch.rand(1, 3, 10, 14, dtype=torch.bfloat16), terms, torch.full((1, 1, 1, 1), 0.1), 2)
    assert z.dtype == torch.float32 and z.shape == (1, 3, 10, 14)
    assert torch.isfinite(z).all()
