"""Training degradations: AWGN pairs with SFM before the noise, USRNet pairs (blur, decimate, noise)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from scipy import ndimage

from restore_cli.train.tasks import (
    SfmSettings,
    denoiser_batch,
    denoiser_validation_batch,
    usrnet_batch,
    usrnet_validation_batch,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one intra-op thread, and stay fast when the machine is busy
    (two OpenMP threads on a loaded 2-core machine were measured 10× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smooth_batch(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    """Clean patches with content at every frequency (random) but in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, c, size, size), generator=g, dtype=torch.float32)


def radius_grid(h: int, w: int) -> np.ndarray:
    return np.sqrt(np.arange(h)[:, None] ** 2 + np.arange(w)[None, :] ** 2)


def test_sfm_rate_one_masks_the_clean_image_before_the_noise() -> None:
    clean = smooth_batch(3, 1, 32)
    sfm = SfmSettings(rate=1.0, mode="targeted", center=0.5, spread=0.15)
    batch = denoiser_batch(clean, (10 / 255, 30 / 255), np.random.default_rng(0), torch.Generator().manual_seed(1), sfm)
    radius = radius_grid(32, 32)
    for i in range(3):
        c = scipy.fft.dctn(clean[i, 0].double().numpy(), norm="ortho")
        t = scipy.fft.dctn(batch.target[i, 0].double().numpy(), norm="ortho")
        found = (np.abs(t) < 1e-5) & (np.abs(c) > 1e-3)
        assert found.sum() > 0, "the target is not masked"
        # The zeroed coefficients form a radial band; outside it the target keeps the clean ones
        # (up to coefficients too small to tell apart at the band's edges).
        band = (radius >= radius[found].min()) & (radius <= radius[found].max())
        assert np.abs(t[band]).max() < 1e-5
        np.testing.assert_allclose(t[~band], c[~band], atol=1.1e-3)
        assert (np.abs(t[~band] - c[~band]) < 1e-4).mean() > 0.99
        # The noise (input − target) is not masked: its DCT has energy inside the band.
        n = scipy.fft.dctn((batch.noisy[i, 0] - batch.target[i, 0]).double().numpy(), norm="ortho")
        assert np.abs(n[band]).mean() > 0.5 * float(batch.sigma[i])


def test_sfm_rate_zero_leaves_the_clean_image_and_noise_has_the_drawn_sigma() -> None:
    clean = smooth_batch(4, 3, 48)
    for sfm in (None, SfmSettings(rate=0.0, mode="targeted")):
        batch = denoiser_batch(clean, (5 / 255, 50 / 255), np.random.default_rng(3), torch.Generator().manual_seed(4), sfm)
        assert torch.equal(batch.target, clean)
        sigma = batch.sigma.view(-1)
        assert batch.sigma.shape == (4, 1, 1, 1)
        assert bool(((sigma >= 5 / 255) & (sigma <= 50 / 255)).all())
        residual_std = (batch.noisy - clean).flatten(1).std(dim=1)
        torch.testing.assert_close(residual_std, sigma, rtol=0.05, atol=0)
        assert (batch.noisy > 1).any() or (batch.noisy < 0).any()  # unclipped


def test_denoiser_batch_is_reproducible_from_the_generators() -> None:
    clean = smooth_batch(2, 1, 16)
    sfm = SfmSettings(rate=0.5, mode="targeted")
    a = denoiser_batch(clean, (0, 50 / 255), np.random.default_rng(5), torch.Generator().manual_seed(6), sfm)
    b = denoiser_batch(clean, (0, 50 / 255), np.random.default_rng(5), torch.Generator().manual_seed(6), sfm)
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.sigma, b.sigma) and torch.equal(a.target, b.target)


def test_usrnet_batch_is_wrap_blur_then_upper_left_decimation() -> None:
    clean = smooth_batch(3, 3, 24)
    batch = usrnet_batch(clean, (2, 3), (0.0, 0.0), np.random.default_rng(2), torch.Generator().manual_seed(0))
    s = batch.scale
    assert s in (2, 3)
    assert batch.lr.shape == (3, 3, 24 // s, 24 // s) and batch.kernels.shape == (3, 1, 25, 25)
    assert torch.equal(batch.target, clean) and bool((batch.sigma == 0).all())
    torch.testing.assert_close(batch.kernels.sum(dim=(-2, -1)), torch.ones(3, 1), atol=1e-5, rtol=0)
    for i in range(3):
        k = batch.kernels[i, 0].double().numpy()
        for ch in range(3):
            expected = ndimage.convolve(clean[i, ch].double().numpy(), k, mode="wrap")[::s, ::s]
            np.testing.assert_allclose(batch.lr[i, ch].numpy(), expected, atol=2e-5)


def test_usrnet_noise_levels_follow_the_recipe() -> None:
    clean = smooth_batch(90, 1, 12)
    sigmas = []
    for seed in range(2):
        batch = usrnet_batch(clean, (1,), (0.0, 25 / 255), np.random.default_rng(seed), torch.Generator().manual_seed(seed))
        sigmas.append(batch.sigma.view(-1))
    sigma = torch.cat(sigmas)
    zero = int((sigma == 0).sum())
    assert 6 <= zero <= 40  # 1/9 of 180 = 20, binomial sd ≈ 4.2
    assert float(sigma.max()) <= 25 / 255 and float(sigma[sigma > 0].min()) < 5 / 255


def test_usrnet_sfm_masks_the_hr_before_the_degradation() -> None:
    clean = smooth_batch(2, 1, 24)
    sfm = SfmSettings(rate=1.0, mode="central")
    batch = usrnet_batch(clean, (2,), (0.0, 0.0), np.random.default_rng(1), torch.Generator().manual_seed(9), sfm)
    assert not torch.allclose(batch.target, clean, atol=1e-3)
    k = batch.kernels[0, 0].double().numpy()
    expected = ndimage.convolve(batch.target[0, 0].double().numpy(), k, mode="wrap")[::2, ::2]
    np.testing.assert_allclose(batch.lr[0, 0].numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("index", [0, 3])
def test_validation_pairs_are_fixed(index: int) -> None:
    clean = smooth_batch(1, 3, 32)
    a, b = denoiser_validation_batch(clean, index), denoiser_validation_batch(clean, index)
    assert torch.equal(a.noisy, b.noisy)
    assert abs(float((a.noisy - clean).std()) - 25 / 255) < 0.1 * 25 / 255
    u = usrnet_validation_batch(clean)
    assert u.scale == 4 and u.lr.shape == (1, 3, 8, 8) and float(u.sigma) == 0.0
