"""The texture metric (ops.spectrum): the radially averaged power spectrum against a direct
statement of its definition, the log-spectral distance and band energy on known spectra, and the
evaluation's tensor metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from restore_cli.ops import spectrum as sp


def direct_spectrum(image: np.ndarray, nbins: int, window: bool) -> np.ndarray:
    """The radially averaged power spectrum written out coefficient by coefficient."""
    h, w = image.shape
    weights = np.outer(np.hanning(h), np.hanning(w)) if window else np.ones((h, w))
    x = (image - image.mean()) * weights
    coeffs = np.zeros((h, w), dtype=complex)
    for u in range(h):
        for v in range(w):
            phase = np.exp(-2j * np.pi * (u * np.arange(h)[:, None] / h + v * np.arange(w)[None, :] / w))
            coeffs[u, v] = (x * phase).sum()
    sums, counts = np.zeros(nbins), np.zeros(nbins)
    for u in range(h):
        for v in range(w):
            fy = u / h if u < (h + 1) // 2 else (u - h) / h
            fx = v / w if v < (w + 1) // 2 else (v - w) / w
            rho = math.hypot(fy, fx)
            if rho == 0 or rho > 0.5:
                continue
            for b in range(nbins):  # bin b holds (b·0.5/n, (b+1)·0.5/n]
                if b * 0.5 / nbins < rho <= (b + 1) * 0.5 / nbins + 1e-12:
                    sums[b] += abs(coeffs[u, v]) ** 2 / (weights ** 2).sum()
                    counts[b] += 1
                    break
    return sums / counts


@pytest.mark.parametrize(("shape", "window"), [((16, 16), True), ((12, 20), False), ((15, 9), True)])
def test_radial_power_spectrum_matches_the_direct_statement(shape: tuple[int, int], window: bool) -> None:
    image = np.random.default_rng(6).random(shape)
    freqs, power = sp.radial_power_spectrum(image, window=window)
    nbins = min(shape) // 2
    assert freqs.shape == (nbins,) and freqs[0] == pytest.approx(0.25 / nbins)
    np.testing.assert_allclose(power, direct_spectrum(image, nbins, window), rtol=1e-10)


def test_log_spectral_distance() -> None:
    freqs = np.linspace(0.01, 0.5, 50)
    p = np.random.default_rng(7).random(50) + 0.1
    assert sp.log_spectral_distance(p, p, freqs) == 0.0
    assert sp.log_spectral_distance(10 * p, p, freqs) == pytest.approx(10.0)  # 10 dB everywhere
    q = p.copy()
    q[freqs < 0.25] *= 100  # differences below the band do not count
    assert sp.log_spectral_distance(q, p, freqs) == 0.0
    chosen = freqs >= 0.25
    r = p * np.exp(np.random.default_rng(8).normal(size=50))
    expected = math.sqrt(np.mean((10 * np.log10(r[chosen] / p[chosen])) ** 2))
    assert sp.log_spectral_distance(r, p, freqs) == pytest.approx(expected)
    with pytest.raises(ValueError, match="band"):
        sp.log_spectral_distance(p, p, freqs, band=(0.6, 0.7))


def test_blurring_raises_the_high_frequency_distance() -> None:
    rng = np.random.default_rng(9)
    texture = ndimage.gaussian_filter(rng.random((64, 64)), 0.7)
    smooth = ndimage.gaussian_filter(texture, 1.5)
    assert sp.image_log_spectral_distance(texture, texture) == 0.0
    assert sp.image_log_spectral_distance(smooth, texture) > 10.0
    assert sp.image_log_spectral_distance(smooth, texture, band=(0.0, 0.05)) < sp.image_log_spectral_distance(smooth, texture)


def test_channels_average_their_spectra() -> None:
    rng = np.random.default_rng(10)
    a, b = rng.random((24, 24)), rng.random((24, 24)) * 3
    _, pa = sp.radial_power_spectrum(a)
    _, pb = sp.radial_power_spectrum(b)
    freqs, both = sp.radial_power_spectrum(np.stack([a, b]))
    np.testing.assert_allclose(both, (pa + pb) / 2, rtol=1e-12)
    with pytest.raises(ValueError, match="H×W or C×H×W"):
        sp.radial_power_spectrum(np.zeros((1, 2, 8, 8)))


def test_band_energy_db_measures_gain_and_smoothing() -> None:
    rng = np.random.default_rng(11)
    texture = ndimage.gaussian_filter(rng.random((64, 64)), 0.7)
    assert sp.band_energy_db(texture, texture) == 0.0
    assert sp.band_energy_db(2.0 * texture, texture) == pytest.approx(20 * math.log10(2.0), abs=1e-9)  # amplitude ×2
    smooth = ndimage.gaussian_filter(texture, 1.5)
    assert sp.band_energy_db(smooth, texture) < -10.0  # smoother than the reference: far below 0
    noisy = texture + rng.normal(0, 0.2, texture.shape)
    assert sp.band_energy_db(noisy, texture) > 3.0  # extra high-frequency energy: above 0
    with pytest.raises(ValueError, match="differ in shape"):
        sp.band_energy_db(texture, texture[:32])


def test_evaluation_metrics_shave_the_border_and_rank_blur() -> None:
    rng = np.random.default_rng(12)
    reference = ndimage.gaussian_filter(rng.random((3, 48, 48)) * 255, (0, 0.6, 0.6))
    blurred = ndimage.gaussian_filter(reference, (0, 1.0, 1.0))
    more = ndimage.gaussian_filter(reference, (0, 2.0, 2.0))
    ref_t, blur_t, more_t = (torch.from_numpy(v) for v in (reference, blurred, more))
    assert sp.lsd_hf(ref_t, ref_t, border=4) == 0.0
    assert 0.0 < sp.lsd_hf(blur_t, ref_t, border=4) < sp.lsd_hf(more_t, ref_t, border=4)
    assert sp.hf_energy_db(more_t, ref_t, border=4) < sp.hf_energy_db(blur_t, ref_t, border=4) < 0.0
    # only the inside counts: a changed border leaves both metrics as they were
    framed = ref_t.clone()
    framed[:, :4] = 0.0
    assert sp.lsd_hf(framed, ref_t, border=4) == 0.0
    assert sp.lsd_hf(framed, ref_t, border=0) > 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        sp.lsd_hf(ref_t, ref_t[:, :40])
