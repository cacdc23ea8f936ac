"""Texture metrics from the radially averaged power spectrum: how well an output's high
frequencies match the ground truth's (SFT-GAN's "realistic texture", which PSNR does not see).

`radial_power_spectrum(image)`: P(f) = |FFT2((x − mean)·w)|² / Σw² with w a separable Hann
window (so the image border adds no cross of spurious power), averaged over rings of equal
radial frequency ρ = √(fx² + fy²) in cycles per pixel, `bins` equal rings over (0, 0.5]
(default min(H, W) // 2); DC and the corners beyond 0.5 are left out. A C×H×W image averages
its channels' spectra.

`log_spectral_distance(P, P_ref, f)`: √(mean over the rings in the band of (10·log10(P/P_ref))²)
in dB (0: the same spectrum; a blurry output far below the reference scores large).
`band_energy_db(image, reference)`: 10·log10 of the power ratio in the band (< 0: smoother than
the reference, > 0: more high-frequency energy, noise or over-sharpening, than it).

The band defaults to the upper half of the frequencies, 0.25–0.5 cycles/pixel. `lsd_hf` and
`hf_energy_db` are the evaluation's metrics: C×H×W (or H×W) tensors on the 0–255 scale with the
other metrics' signature (border shaved first). Arrays are float64 numpy.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from restore_cli.ops.metrics import crop_border

UPPER_HALF: tuple[float, float] = (0.25, 0.5)
POWER_FLOOR = 1e-20


def radial_power_spectrum(image: np.ndarray, bins: int | None = None, window: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of an H×W or C×H×W image → (bin centres in cycles/pixel,
    power per bin; NaN for an empty bin). Bins (e_i, e_i+1] split (0, 0.5] into equal parts."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected an H×W or C×H×W image, got shape {x.shape}")
    _, h, w = x.shape
    if min(h, w) < 4:
        raise ValueError(f"spectrum needs at least 4×4 pixels, got {h}×{w}")
    nbins = bins if bins is not None else min(h, w) // 2
    if nbins < 1:
        raise ValueError(f"bins must be >= 1, got {nbins}")
    weights = np.outer(np.hanning(h), np.hanning(w)) if window else np.ones((h, w))
    centred = (x - x.mean(axis=(1, 2), keepdims=True)) * weights
    power = (np.abs(np.fft.fft2(centred)) ** 2).mean(axis=0) / (weights * weights).sum()
    rho = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    index = np.ceil(rho * 2.0 * nbins - 1e-9).astype(np.int64) - 1  # (e_i, e_i+1] → i; DC → −1
    keep = (index >= 0) & (index < nbins) & (rho <= 0.5 + 1e-12)
    sums = np.bincount(index[keep], weights=power[keep], minlength=nbins)
    counts = np.bincount(index[keep], minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        spectrum = sums / counts
    spectrum[counts == 0] = np.nan
    edges = np.linspace(0.0, 0.5, nbins + 1)
    return (edges[:-1] + edges[1:]) / 2.0, spectrum


def _band(freqs: np.ndarray, p: np.ndarray, q: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    chosen = (freqs >= band[0]) & (freqs <= band[1]) & np.isfinite(p) & np.isfinite(q)
    if not chosen.any():
        raise ValueError(f"no spectrum bin lies in the band {band}")
    return chosen


def log_spectral_distance(
    power: np.ndarray, reference: np.ndarray, freqs: np.ndarray, band: tuple[float, float] = UPPER_HALF, floor: float = POWER_FLOOR
) -> float:
    """LSD in dB over the bins whose centre lies in `band`:
    sqrt(mean_f (10·log10((P(f) + floor) / (P_ref(f) + floor)))²); empty bins are skipped."""
    p, q, f = (np.asarray(a, dtype=np.float64) for a in (power, reference, freqs))
    if not p.shape == q.shape == f.shape:
        raise ValueError(f"spectra and frequencies differ in shape: {p.shape}, {q.shape}, {f.shape}")
    chosen = _band(f, p, q, band)
    ratio_db = 10.0 * np.log10((p[chosen] + floor) / (q[chosen] + floor))
    return float(np.sqrt(np.mean(ratio_db * ratio_db)))


def _spectra(image: np.ndarray, reference: np.ndarray, window: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.asarray(image), np.asarray(reference)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    freqs, p = radial_power_spectrum(a, window=window)
    _, q = radial_power_spectrum(b, window=window)
    return freqs, p, q


def image_log_spectral_distance(
    image: np.ndarray, reference: np.ndarray, band: tuple[float, float] = UPPER_HALF, window: bool = True
) -> float:
    """LSD between the radially averaged power spectra of two equal-size images."""
    freqs, p, q = _spectra(image, reference, window)
    return log_spectral_distance(p, q, freqs, band)


def band_energy_db(image: np.ndarray, reference: np.ndarray, band: tuple[float, float] = UPPER_HALF,
                   window: bool = True) -> float:
    """10·log10(Σ_band P_image / Σ_band P_reference) in dB over the bins in `band`."""
    freqs, p, q = _spectra(image, reference, window)
    chosen = _band(freqs, p, q, band)
    return float(10.0 * np.log10((p[chosen].sum() + POWER_FLOOR) / (q[chosen].sum() + POWER_FLOOR)))


def _levels(x: Tensor, border: int) -> np.ndarray:
    return crop_border(x.detach().cpu().double(), border).numpy()


def lsd_hf(x: Tensor, y: Tensor, border: int = 0) -> float:
    """Evaluation metric: LSD of x against reference y over the upper half of the frequencies."""
    return image_log_spectral_distance(_levels(x, border), _levels(y, border), UPPER_HALF)


def hf_energy_db(x: Tensor, y: Tensor, border: int = 0) -> float:
    """Evaluation metric: band_energy_db of x against reference y over the upper half."""
    return band_energy_db(_levels(x, border), _levels(y, border), UPPER_HALF)
