"""RL-Restore mixed distortions: Gaussian blur → AWGN → JPEG at random levels (ANCHORS 4.5,
`generate_train.m` / `noise_combination.m` semantics).

Each distortion has 10 levels L = 1..10; a severity picks the ordered level triples (L_b, L_n, L_j)
with L_b + L_n + L_j − 2 inside its window. Noise σ here is on the 0–255 scale, as in the recipe;
`apply_mixed_distortion` converts it to [0, 1] once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

import numpy as np
import torch
from torch import Tensor

from .degradation import add_gaussian_noise, blur, jpeg_compress
from .kernels import fspecial_gaussian

__all__ = [
    "BLUR_KERNEL_SIZE",
    "JPEG_QUALITY_TABLE",
    "LEVELS",
    "SEVERITY_WINDOWS",
    "MixedDistortion",
    "Severity",
    "apply_mixed_distortion",
    "blur_sigma_interval",
    "draw_mixed_distortion",
    "jpeg_quality_interval",
    "level_triples",
    "noise_sigma_interval",
]

Severity = Literal["light", "mild", "moderate", "severe"]

LEVELS: Final[int] = 10
BLUR_KERNEL_SIZE: Final[int] = 21
# JPEG level L spans qualities JPEG_QUALITY_TABLE[L] .. JPEG_QUALITY_TABLE[L-1] (L1 = 80–100).
JPEG_QUALITY_TABLE: Final[tuple[int, ...]] = (100, 80, 60, 50, 40, 35, 30, 25, 20, 15, 10)
# Inclusive windows for L_b + L_n + L_j − 2; "moderate" is the training distribution. mild,
# moderate and severe are the reference's; "light" (every level ≤ 4, some triples nearly clean:
# blur σ ≤ 0.5, noise σ ≤ 5, JPEG quality ≥ 80 at (1, 1, 1)) is this project's, for the inputs
# where the right chain is short or empty: it trains and measures the stop action.
SEVERITY_WINDOWS: Final[dict[str, tuple[int, int]]] = {
    "light": (1, 4),
    "mild": (9, 11),
    "moderate": (12, 17),
    "severe": (18, 20),
}
# Below this blur σ the 21×21 Gaussian is a delta to float precision; skip the convolution.
MIN_BLUR_SIGMA: Final[float] = 1e-3


def _check_level(level: int) -> None:
    if not 1 <= level <= LEVELS:
        raise ValueError(f"distortion level must be in 1..{LEVELS}, got {level}")


def blur_sigma_interval(level: int) -> tuple[float, float]:
    """Gaussian blur σ range of a level: [0.5(L−1), 0.5L] (pixels)."""
    _check_level(level)
    return 0.5 * (level - 1), 0.5 * level


def noise_sigma_interval(level: int) -> tuple[float, float]:
    """AWGN σ range of a level on the 0–255 scale: [5(L−1), 5L]."""
    _check_level(level)
    return 5.0 * (level - 1), 5.0 * level


def jpeg_quality_interval(level: int) -> tuple[float, float]:
    """JPEG quality range of a level: between consecutive table entries (low, high)."""
    _check_level(level)
    return float(JPEG_QUALITY_TABLE[level]), float(JPEG_QUALITY_TABLE[level - 1])


@lru_cache(maxsize=None)
def _triples(low: int, high: int) -> tuple[tuple[int, int, int], ...]:
    r = range(1, LEVELS + 1)
    return tuple((b, n, j) for b in r for n in r for j in r if low <= b + n + j - 2 <= high)


def level_triples(severity: str) -> list[tuple[int, int, int]]:
    """All ordered (L_b, L_n, L_j) with L_b + L_n + L_j − 2 in the severity's window, in
    lexicographic order (20 light, 163 mild, 434 moderate, 163 severe)."""
    if severity not in SEVERITY_WINDOWS:
        raise ValueError(f"unknown severity {severity!r}; use one of {', '.join(SEVERITY_WINDOWS)}")
    return list(_triples(*SEVERITY_WINDOWS[severity]))


@dataclass(frozen=True)
class MixedDistortion:
    """One blur → noise → JPEG combination. noise_sigma is on the 0–255 scale."""

    blur_sigma: float
    noise_sigma: float
    jpeg_quality: float


def draw_mixed_distortion(rng: np.random.Generator, severity: str) -> MixedDistortion:
    """A triple drawn uniformly from `level_triples(severity)`, then each parameter uniformly
    within its level's interval (draw order: triple, blur, noise, JPEG)."""
    triples = level_triples(severity)
    lb, ln, lj = triples[int(rng.integers(len(triples)))]
    b_lo, b_hi = blur_sigma_interval(lb)
    n_lo, n_hi = noise_sigma_interval(ln)
    q_lo, q_hi = jpeg_quality_interval(lj)
    return MixedDistortion(
        blur_sigma=float(rng.uniform(b_lo, b_hi)),
        noise_sigma=float(rng.uniform(n_lo, n_hi)),
        jpeg_quality=float(rng.uniform(q_lo, q_hi)),
    )


def apply_mixed_distortion(
    x: Tensor, d: MixedDistortion, generator: torch.Generator | None = None
) -> Tensor:
    """RL-Restore order, blur → noise → JPEG, on x (N×C×H×W, C = 1 or 3, in [0, 1]):
    fspecial_gaussian(21, σ_b) with replicate borders (skipped for σ_b < 1e-3); AWGN of std
    σ_n/255 clipped to [0, 1] (MATLAB `imnoise`); JPEG round trip at the rounded quality."""
    y = x
    if d.blur_sigma >= MIN_BLUR_SIGMA:
        y = blur(y, fspecial_gaussian(BLUR_KERNEL_SIZE, d.blur_sigma), boundary="replicate")
    if d.noise_sigma > 0:
        y = add_gaussian_noise(y, d.noise_sigma / 255.0, generator=generator, clip=True)
    return jpeg_compress(y, d.jpeg_quality)
