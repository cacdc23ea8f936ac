"""Regularised least squares / Wiener deconvolution against a dense linear solve.

The independent statement: A is built column by column from scipy.ndimage.convolve(mode='wrap')
followed by upper-left decimation; the minimiser of ‖y − Ax‖² + α‖x − x₀‖² solves
(AᵀA + αI) x = Aᵀy + αx₀.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from restore_cli.ops.wiener import (
    DEFAULT_ALPHA_FACTOR,
    DEFAULT_SIGMA_FLOOR,
    alpha_from_sigma,
    regularised_inverse,
    wiener_deconvolve,
)


def dense_operator(shape: tuple[int, int], k: np.ndarray, scale: int) -> np.ndarray:
    """Matrix of x ↦ (x ⊛ k)↓s on row-major flattened images (scipy wrap convolution)."""
    h, w = shape
    columns = []
    for j in range(h * w):
        e = np.zeros(h * w)
        e[j] = 1.0
        blurred = ndimage.convolve(e.reshape(h, w), k, mode="wrap")
        columns.append(blurred[::scale, ::scale].ravel())
    return np.stack(columns, axis=1)


def dense_solution(y: np.ndarray, k: np.ndarray, scale: int, alpha: float, x0: np.ndarray) -> np.ndarray:
    """y: C×h×w, x0: C×H×W → C×H×W minimiser, one channel at a time."""
    c, height, width = x0.shape
    a = dense_operator((height, width), k, scale)
    lhs = a.T @ a + alpha * np.eye(height * width)
    out = [np.linalg.solve(lhs, a.T @ y[i].ravel() + alpha * x0[i].ravel()).reshape(height, width) for i in range(c)]
    return np.stack(out)


@pytest.mark.parametrize(
    "hr,scale,ksize",
    [((12, 12), 2, (5, 5)), ((12, 18), 3, (5, 3)), ((16, 16), 4, (7, 7)), ((10, 10), 1, (3, 3)), ((9, 11), 1, (5, 4))],
)
def test_regularised_inverse_is_the_exact_minimiser(hr: tuple[int, int], scale: int, ksize: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    k = rng.uniform(0, 1, ksize)  # non-symmetric, so a correlation/convolution mix-up would show
    k /= k.sum()
    x0 = rng.uniform(0, 1, (2, *hr))
    y = rng.uniform(0, 1, (2, hr[0] // scale, hr[1] // scale))
    alpha = 0.037
    expected = dense_solution(y, k, scale, alpha, x0)
    got = regularised_inverse(torch.from_numpy(y)[None], k, scale, alpha, torch.from_numpy(x0)[None])
    assert got.dtype == torch.float64 and got.shape == (1, 2, *hr)
    np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("ksize", [(5, 5), (4, 6), (3, 1)])
def test_wiener_matches_dense_solve_with_and_without_prior_mean(ksize: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    k = rng.uniform(0, 1, ksize)
    k /= k.sum()
    y = rng.uniform(0, 1, (3, 10, 12))
    x0 = rng.uniform(0, 1, (3, 10, 12))
    for prior in (x0, np.zeros_like(x0)):
        expected = dense_solution(y, k, 1, 0.01, prior)
        x0_t = None if not prior.any() else torch.from_numpy(prior)[None]
        got = wiener_deconvolve(torch.from_numpy(y)[None], k, 0.01, x0_t)
        np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-10)


def test_scale_one_inverse_equals_wiener() -> None:
    rng = np.random.default_rng(5)
    k = rng.uniform(0, 1, (7, 7))
    y = torch.from_numpy(rng.uniform(0, 1, (1, 3, 16, 20)))
    x0 = torch.from_numpy(rng.uniform(0, 1, (1, 3, 16, 20)))
    a = wiener_deconvolve(y, k / k.sum(), 0.002, x0)
    b = regularised_inverse(y, torch.from_numpy(k / k.sum()), 1, 0.002, x0)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_noise_free_blur_is_undone_with_small_alpha() -> None:
    """A Gaussian kernel whose OTF stays away from 0 on a small grid: α → 0 recovers x."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0, 1, (1, 1, 16, 16))
    g = np.exp(-0.5 * (np.arange(-2, 3) / 0.6) ** 2)
    k = np.outer(g, g) / np.outer(g, g).sum()
    y = ndimage.convolve(x[0, 0], k, mode="wrap")[None, None]
    out = wiener_deconvolve(torch.from_numpy(y), k, 1e-9)
    np.testing.assert_allclose(out.numpy(), x, atol=1e-5)


def test_float32_inputs_stay_float32() -> None:
    y = torch.rand(1, 3, 8, 8)
    out = regularised_inverse(y, np.full((3, 3), 1 / 9), 2, 0.01, torch.rand(1, 3, 16, 16))
    assert out.dtype == torch.float32 and out.shape == (1, 3, 16, 16)


def test_alpha_from_sigma_and_its_floor() -> None:
    assert alpha_from_sigma(0.03) == pytest.approx(DEFAULT_ALPHA_FACTOR * 0.03**2)
    assert alpha_from_sigma(0.0) == pytest.approx(DEFAULT_ALPHA_FACTOR * DEFAULT_SIGMA_FLOOR**2)
    assert alpha_from_sigma(7.65 / 255, factor=1.0, sigma_floor=0.0) == pytest.approx((7.65 / 255) ** 2)
    assert math.isclose(DEFAULT_SIGMA_FLOOR, 0.5 / 255)
    with pytest.raises(ValueError):
        alpha_from_sigma(0.0, sigma_floor=0.0)
    with pytest.raises(ValueError):
        alpha_from_sigma(-1.0)


def test_bad_arguments_are_refused() -> None:
    y = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="alpha"):
        wiener_deconvolve(y, np.ones((3, 3)) / 9, 0.0)
    with pytest.raises(ValueError, match="x0 must be 16×16"):
        regularised_inverse(y, np.ones((3, 3)) / 9, 2, 0.1, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="scale"):
        regularised_inverse(y, np.ones((3, 3)) / 9, 0, 0.1, y)
