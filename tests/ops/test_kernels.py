"""Kernel generators against the stored USRNet test kernels and independent statements."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from restore_cli.ops.kernels import (
    anisotropic_gaussian,
    augment_kernel,
    fspecial_gaussian,
    is_generator_spec,
    kernel_from_spec,
    motion_kernel,
    random_gaussian_kernel,
    real_image_kernel,
    shift_kernel,
    training_kernel,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
KERNELS_12 = SHARED / "datasets" / "kernels" / "kernels_12.mat"

ISO_SIGMAS = [0.7, 1.2, 1.6, 2.0]
ANISO_PARAMS = [(0.0, 7.0, 2.0), (0.30 * math.pi, 1.5, 9.0), (0.75 * math.pi, 1.5, 8.0), (0.79 * math.pi, 5.0, 7.0)]


@pytest.fixture(scope="module")
def kernels_12() -> list[np.ndarray]:
    if not KERNELS_12.is_file():
        pytest.skip(f"../shared not found: {KERNELS_12}")
    from scipy.io import loadmat

    cell = loadmat(str(KERNELS_12))["kernels"]
    return [np.asarray(cell[0, i], dtype=np.float64) for i in range(cell.shape[1])]


def _centroid(k: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(k.shape)
    return float((k * rows).sum() / k.sum()), float((k * cols).sum() / k.sum())


@pytest.mark.parametrize("i", range(4))
def test_fspecial_gaussian_reproduces_kernels_12_isotropic(kernels_12: list[np.ndarray], i: int) -> None:
    k = fspecial_gaussian(25, ISO_SIGMAS[i])
    assert k.shape == (25, 25) and k.dtype == np.float64
    assert np.abs(k - kernels_12[i]).max() <= 1e-7


@pytest.mark.parametrize("i", range(4))
def test_anisotropic_gaussian_reproduces_kernels_12(kernels_12: list[np.ndarray], i: int) -> None:
    theta, l1, l2 = ANISO_PARAMS[i]
    k = anisotropic_gaussian(25, theta, l1, l2)
    assert np.abs(k - kernels_12[4 + i]).max() <= 1e-7


def test_fspecial_gaussian_matches_definition() -> None:
    # even size: grid at half-integers; taps under eps*max are zeroed (MATLAB)
    k = fspecial_gaussian(4, 0.8)
    g = np.exp(-((np.arange(4) - 1.5) ** 2) / (2 * 0.8**2))
    np.testing.assert_allclose(k, np.outer(g, g) / np.outer(g, g).sum(), rtol=1e-12)
    tiny = fspecial_gaussian(25, 0.3)
    # r² = 9: exp(-50) < eps·max is zeroed; r² = 4: exp(-22.2) > eps·max is kept
    assert tiny[12, 15] == 0.0 and tiny[12, 14] > 0.0
    assert abs(tiny.sum() - 1) < 1e-12
    with pytest.raises(ValueError):
        fspecial_gaussian(25, 0.0)


def test_anisotropic_gaussian_covariance_and_orientation() -> None:
    # second moments of a small, untruncated kernel equal the covariance; x = columns, y = rows
    for theta in (0.0, math.pi / 2, math.pi / 6):
        k = anisotropic_gaussian(31, theta, 4.0, 1.0)
        rows, cols = np.indices(k.shape) - 15.0
        cov = np.array([[(k * cols * cols).sum(), (k * cols * rows).sum()], [(k * rows * cols).sum(), (k * rows * rows).sum()]])
        v = np.array([math.cos(theta), math.sin(theta)])
        expected = 4.0 * np.outer(v, v) + 1.0 * (np.eye(2) - np.outer(v, v))
        np.testing.assert_allclose(cov, expected, atol=2e-3)
    # l1 == l2 is isotropic: exp(-r²/2l)
    g = np.exp(-((np.arange(25) - 12.0) ** 2) / (2 * 3.0))
    np.testing.assert_allclose(anisotropic_gaussian(25, 0.4, 3.0, 3.0), np.outer(g, g) / np.outer(g, g).sum(), atol=1e-14)


def _check_random_kernel(k: np.ndarray) -> None:
    assert k.shape == (25, 25) and k.dtype == np.float64
    assert k.min() >= 0.0
    assert abs(k.sum() - 1.0) < 1e-12
    assert np.isfinite(k).all()


@pytest.mark.parametrize("make", [random_gaussian_kernel, motion_kernel, training_kernel])
def test_random_kernels_valid_deterministic_and_varied(make) -> None:  # type: ignore[no-untyped-def]
    ks = [make(np.random.default_rng(seed)) for seed in range(6)]
    for k in ks:
        _check_random_kernel(k)
    np.testing.assert_array_equal(make(np.random.default_rng(3)), ks[3])
    for a in range(len(ks)):
        for b in range(a + 1, len(ks)):
            assert not np.allclose(ks[a], ks[b])


def test_random_gaussian_kernel_mean_is_shifted_by_a_scale() -> None:
    # the mean sits at 12 − (s_k − 1)/2 for s_k ∈ {1, 2, 3, 4} on both axes (same shift on both)
    seen = set()
    for seed in range(40):
        k = random_gaussian_kernel(np.random.default_rng(seed), min_var=0.6, max_var=2.0)
        r, c = _centroid(k)
        shift = 12.0 - r
        assert abs(r - c) < 1e-6
        assert min(abs(shift - s) for s in (0.0, 0.5, 1.0, 1.5)) < 1e-6
        seen.add(round(shift * 2))
    assert seen == {0, 1, 2, 3}


def test_motion_kernel_is_not_a_gaussian() -> None:
    # motion kernels are generally not centrosymmetric, unlike every Gaussian above
    asym = [np.abs(k - k[::-1, ::-1]).max() for k in (motion_kernel(np.random.default_rng(s)) for s in range(5))]
    assert max(asym) > 1e-3


def test_augment_kernel_gives_eight_distinct_transforms() -> None:
    k = np.random.default_rng(0).random((5, 5))
    outs = [augment_kernel(k, m) for m in range(8)]
    assert np.array_equal(outs[0], k)
    assert np.array_equal(outs[1], np.rot90(k)) and np.array_equal(outs[4], np.flipud(k))
    assert len({o.tobytes() for o in outs}) == 8
    with pytest.raises(ValueError):
        augment_kernel(k, 8)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_shift_kernel_moves_centroid_up_left(scale: int) -> None:
    k = fspecial_gaussian(25, 1.5)
    shifted = shift_kernel(k, scale)
    r, c = _centroid(shifted)
    assert abs(r - (12 - (scale - 1) / 2)) < 1e-9 and abs(c - (12 - (scale - 1) / 2)) < 1e-9
    assert shifted.min() >= 0 and abs(shifted.sum() - 1) < 1e-12


def test_real_image_kernel_defaults() -> None:
    for scale, width in zip((1, 2, 3, 4), (0.4, 0.7, 1.5, 2.0)):
        np.testing.assert_allclose(real_image_kernel(scale), shift_kernel(fspecial_gaussian(25, width), scale))
    np.testing.assert_allclose(real_image_kernel(4, 2.2), shift_kernel(fspecial_gaussian(25, 2.2), 4))
    with pytest.raises(ValueError):
        real_image_kernel(5)


def test_kernel_from_spec_generators() -> None:
    k, desc = kernel_from_spec("gaussian:1.6")
    np.testing.assert_array_equal(k, fspecial_gaussian(25, 1.6))
    assert desc == "gaussian:1.6,25"
    k, desc = kernel_from_spec(" Gaussian:2,15 ")
    assert k.shape == (15, 15) and desc == "gaussian:2,15"
    # THETA in degrees: 0.30π = 54°
    k, desc = kernel_from_spec("aniso:1.5,9,54")
    np.testing.assert_allclose(k, anisotropic_gaussian(25, 0.30 * math.pi, 1.5, 9.0), atol=1e-14)
    assert desc == "aniso:1.5,9,54"
    k, desc = kernel_from_spec("motion:7")
    np.testing.assert_array_equal(k, motion_kernel(np.random.default_rng(7)))
    assert desc == "motion:7"
    k, desc = kernel_from_spec("random:7")
    np.testing.assert_array_equal(k, training_kernel(np.random.default_rng(7)))
    # the canonical spec re-parses to the same kernel
    for spec in ("gaussian:0.75", "aniso:7,2,0", "motion:1", "random:2"):
        k1, d1 = kernel_from_spec(spec)
        k2, d2 = kernel_from_spec(d1)
        assert d1 == d2
        np.testing.assert_array_equal(k1, k2)


@pytest.mark.parametrize(
    "spec",
    ["gaussian:", "gaussian:-1", "gaussian:abc", "gaussian:1,2,3", "gaussian:1,2.5", "gaussian:nan",
     "aniso:1,2", "aniso:0,2,30", "motion:x", "motion:-1", "random:1.5", "foo:1", "kernel.png"],
)
def test_kernel_from_spec_errors(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        kernel_from_spec(spec)
    assert "\n" not in str(info.value) and spec.strip() in str(info.value)


def test_is_generator_spec() -> None:
    for spec in ("gaussian:1.6", "aniso:7,2,0", "motion:3", "random:0", "gaussian:bad"):
        assert is_generator_spec(spec)
    for spec in ("kernels/k.png", "C:\\k.mat", "k.mat", "gauss:1", ""):
        assert not is_generator_spec(spec)
