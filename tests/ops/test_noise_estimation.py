"""Tests for restore_cli.ops.noise_estimation (Chen, Zhu, Heng, ICCV 2015)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from restore_cli.ops.noise_estimation import (
    estimate_noise_sigma,
    noise_variance_from_eigenvalues,
    patch_covariance_eigenvalues,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth_image(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """C×H×W in [0.2, 0.8]: products of low-frequency sinusoids, different per channel."""
    g = _gen(seed)
    i = torch.arange(h, dtype=torch.float64).view(-1, 1)
    j = torch.arange(w, dtype=torch.float64).view(1, -1)
    chans = []
    for _ in range(c):
        p = torch.rand(4, generator=g, dtype=torch.float64)
        chans.append(0.5 + 0.3 * torch.sin(i / (6 + 10 * p[0]) + 6 * p[1]) * torch.cos(j / (8 + 10 * p[2]) + 6 * p[3]))
    return torch.stack(chans)


def _add_noise(x: torch.Tensor, sigma255: float, seed: int) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=_gen(seed), dtype=torch.float64) * (sigma255 / 255.0)


def _test_images() -> list[torch.Tensor]:
    images = [_smooth_image(1, 96, 96, 0), _smooth_image(3, 96, 96, 1)]
    folder = SHARED / "datasets" / "CBSD68"
    if folder.is_dir():
        from PIL import Image

        for name in ("101085.png", "351093.png"):
            a = np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float64)[:128, :128] / 255.0
            images.append(torch.from_numpy(a).permute(2, 0, 1).contiguous())
    return images


@pytest.mark.parametrize("sigma255", [15.0, 50.0])
def test_estimate_within_two_levels(sigma255: float) -> None:
    """|σ̂ − σ| < 2 on the 0–255 scale, on synthetic smooth images and CBSD68 crops (when present)."""
    for k, x in enumerate(_test_images()):
        est = estimate_noise_sigma(_add_noise(x, sigma255, 100 + k)) * 255.0
        assert abs(est - sigma255) < 2.0, (k, est)


def test_pure_noise_and_constant_image() -> None:
    noise = _add_noise(torch.full((1, 64, 64), 0.5, dtype=torch.float64), 20.0, 3)
    assert estimate_noise_sigma(noise) * 255 == pytest.approx(20.0, abs=1.0)
    assert estimate_noise_sigma(torch.full((3, 32, 32), 0.3, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-7)


def test_batch_of_one_and_errors() -> None:
    x = _add_noise(_smooth_image(3, 40, 40, 4), 25.0, 5).float()
    assert estimate_noise_sigma(x.unsqueeze(0)) == estimate_noise_sigma(x)
    with pytest.raises(ValueError):
        estimate_noise_sigma(torch.zeros(2, 3, 40, 40))
    with pytest.raises(ValueError):
        estimate_noise_sigma(torch.zeros(3, 7, 40))


def test_eigenvalues_match_numpy_covariance() -> None:
    """Patch covariance eigenvalues equal numpy's on explicitly gathered overlapping patches."""
    x = torch.rand((2, 12, 11), generator=_gen(6), dtype=torch.float64)
    d = 4
    vecs = [
        x[:, i : i + d, j : j + d].reshape(-1).numpy() for i in range(12 - d + 1) for j in range(11 - d + 1)
    ]
    cov = np.cov(np.stack(vecs, axis=1), bias=True)
    want = np.linalg.eigvalsh(cov)
    got = patch_covariance_eigenvalues(x, patch_size=d, stride=1)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    assert got.numel() == 2 * d * d


def test_variance_rule_on_constructed_spectrum() -> None:
    """Noise eigenvalues σ²(1 ± ε) symmetric around σ², plus large signal eigenvalues: returns σ²."""
    s2 = 0.01
    eps = torch.linspace(-0.2, 0.2, 40, dtype=torch.float64)
    lam = torch.cat([s2 * (1 + eps), torch.tensor([0.5, 1.0, 3.0, 10.0], dtype=torch.float64)])
    lam = lam[torch.randperm(lam.numel(), generator=_gen(7))]  # order must not matter
    assert noise_variance_from_eigenvalues(lam) == pytest.approx(s2, rel=1e-12)


def test_variance_rule_takes_largest_prefix() -> None:
    """Direct check of Algorithm 1 on small spectra: the largest m with #above τ = #below τ."""
    rng = np.random.default_rng(8)
    for _ in range(50):
        lam = np.sort(rng.exponential(size=rng.integers(2, 12)))
        want = None
        for m in range(len(lam), 0, -1):
            tau = lam[:m].mean()
            if np.sum(lam[:m] > tau) == np.sum(lam[:m] < tau):
                want = tau
                break
        assert want is not None
        assert math.isclose(noise_variance_from_eigenvalues(torch.from_numpy(lam)), want, rel_tol=1e-12)
