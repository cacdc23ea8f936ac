"""Orthonormal 2-D DCT-II and stochastic frequency masking (SFM).

SFM is from El Helou, Zhou, Süsstrunk, "Stochastic Frequency Masking to Improve
Super-Resolution and Denoising Networks" (ECCV 2020). An image is taken to the DCT
domain (orthonormal DCT-II over rows and columns), a band of coefficients is zeroed,
and the image is transformed back. One 2-D mask is shared by all colour channels.

Mask geometry (ANCHORS §3.1): the coefficient (i, j) has radius D(i, j) = sqrt(i² + j²),
DC at (0, 0); r_max = sqrt(h² + w²); the band a1 < D < a2 (strict) is zeroed.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

SfmMode = Literal["central", "targeted", "random"]
"""central: a1, a2 ~ U(0, r_max) sorted; targeted: a band around center·r_max of
half-normal widths (spread·r_max); random: each coefficient kept with probability 1/2."""

_SFM_MODES: tuple[str, ...] = get_args(SfmMode)


def dct_matrix(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """The n×n orthonormal DCT-II matrix C, C[k, m] = a_k cos(π(2m+1)k / (2n)).

    a_0 = sqrt(1/n), a_k = sqrt(2/n) otherwise, so C is orthogonal and C @ v equals
    scipy.fft.dct(v, type=2, norm='ortho'). Built in float64, then cast to `dtype`.
    """
    if n < 1:
        raise ValueError(f"DCT size must be positive, got {n}")
    k = torch.arange(n, dtype=torch.float64, device=device).unsqueeze(1)
    m = torch.arange(n, dtype=torch.float64, device=device).unsqueeze(0)
    c = torch.cos(math.pi * (2.0 * m + 1.0) * k / (2.0 * n))
    c *= math.sqrt(2.0 / n)
    c[0] = math.sqrt(1.0 / n)
    return c.to(dtype)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32/float64 stay as they are; lower precisions are computed in float32."""
    if not x.is_floating_point():
        raise TypeError(f"DCT needs a floating-point tensor, got {x.dtype}")
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _check_2d(x: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(f"DCT needs at least 2 dims (…×H×W), got shape {tuple(x.shape)}")


def dct2(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two dims (any leading dims).

    Equals scipy.fft.dctn(x, type=2, norm='ortho', axes=(-2, -1)): X = C_H · x · C_Wᵀ.
    """
    _check_2d(x)
    dt = _compute_dtype(x)
    h, w = x.shape[-2:]
    ch = dct_matrix(h, x.device, dt)
    cw = ch if w == h else dct_matrix(w, x.device, dt)
    return (ch @ x.to(dt) @ cw.T).to(x.dtype)


def idct2(x: Tensor) -> Tensor:
    """Inverse of `dct2` (orthonormal DCT-III) over the last two dims: x = C_Hᵀ · X · C_W."""
    _check_2d(x)
    dt = _compute_dtype(x)
    h, w = x.shape[-2:]
    ch = dct_matrix(h, x.device, dt)
    cw = ch if w == h else dct_matrix(w, x.device, dt)
    return (ch.T @ x.to(dt) @ cw).to(x.dtype)


def _radius_grid(h: int, w: int, device: torch.device | str | None) -> Tensor:
    """H×W float64 grid of D(i, j) = sqrt(i² + j²), i the row and j the column index."""
    i = torch.arange(h, dtype=torch.float64, device=device).unsqueeze(1)
    j = torch.arange(w, dtype=torch.float64, device=device).unsqueeze(0)
    return torch.sqrt(i * i + j * j)


def radial_band_mask(
    h: int,
    w: int,
    a1: float,
    a2: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """H×W DCT mask: 0 where a1 < sqrt(i² + j²) < a2 (strict), 1 elsewhere; DC at (0, 0)."""
    d = _radius_grid(h, w, device)
    zeroed = (d > a1) & (d < a2)
    return (~zeroed).to(dtype)


def _check_sfm_args(mode: str, center: float, spread: float) -> None:
    if mode not in _SFM_MODES:
        raise ValueError(f"unknown SFM mode {mode!r}; expected one of {', '.join(_SFM_MODES)}")
    if mode == "targeted":
        if not 0.0 <= center <= 1.0:
            raise ValueError(f"SFM targeted centre must be in [0, 1] (fraction of r_max), got {center}")
        if spread < 0.0:
            raise ValueError(f"SFM targeted spread must be >= 0, got {spread}")


def draw_band_radii(
    n: int,
    h: int,
    w: int,
    mode: Literal["central", "targeted"],
    generator: torch.Generator,
    center: float = 0.85,
    spread: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """n band radii pairs (a1, a2), float64 tensors of length n with a1 ≤ a2 (ANCHORS §3.1).

    central: a1, a2 ~ U(0, r_max) drawn independently, then sorted.
    targeted: r_c = center·r_max, σ_Δ = spread·r_max; a1 = r_c − |N(0, σ_Δ)|, a2 = r_c + |N(0, σ_Δ)|.
    r_max = sqrt(h² + w²). Draws come from `generator` only.
    """
    _check_sfm_args(mode, center, spread)
    if mode == "random":
        raise ValueError("SFM random mode has no band radii")
    if n < 0:
        raise ValueError(f"number of masks must be >= 0, got {n}")
    device = generator.device
    r_max = math.sqrt(h * h + w * w)
    if mode == "central":
        a = torch.rand((n, 2), generator=generator, device=device, dtype=torch.float64) * r_max
        return a.min(dim=1).values, a.max(dim=1).values
    r_c = center * r_max
    delta = torch.randn((n, 2), generator=generator, device=device, dtype=torch.float64).abs() * (spread * r_max)
    return r_c - delta[:, 0], r_c + delta[:, 1]


def draw_sfm_masks(
    n: int,
    h: int,
    w: int,
    mode: SfmMode,
    generator: torch.Generator,
    center: float = 0.85,
    spread: float = 0.15,
) -> Tensor:
    """n independent SFM masks, n×H×W float32 of 0/1, on the generator's device.

    central / targeted: band masks with radii from `draw_band_radii` (same draws).
    random: each coefficient kept i.i.d. with probability 0.5 (not a band).
    All randomness comes from `generator`, so a seed fixes the masks.
    """
    _check_sfm_args(mode, center, spread)
    if n < 0:
        raise ValueError(f"number of masks must be >= 0, got {n}")
    device = generator.device
    if mode == "random":
        # The reference zeroes a coefficient when U(0,1) > 0.5: keep it when U <= 0.5.
        u = torch.rand((n, h, w), generator=generator, device=device)
        return (u <= 0.5).to(torch.float32)
    a1, a2 = draw_band_radii(n, h, w, mode, generator, center=center, spread=spread)
    d = _radius_grid(h, w, device).unsqueeze(0)  # 1×H×W
    zeroed = (d > a1.view(-1, 1, 1)) & (d < a2.view(-1, 1, 1))
    return (~zeroed).to(torch.float32)


def draw_sfm_mask(
    h: int,
    w: int,
    mode: SfmMode,
    generator: torch.Generator,
    center: float = 0.85,
    spread: float = 0.15,
) -> Tensor:
    """One H×W SFM mask (see `draw_sfm_masks`), float32 0/1 on the generator's device."""
    return draw_sfm_masks(1, h, w, mode, generator, center=center, spread=spread)[0]


def apply_frequency_mask(x: Tensor, mask: Tensor) -> Tensor:
    """idct2(dct2(x) · mask) for x C×H×W or N×C×H×W; never mutates x.

    `mask` is H×W (shared by every channel and sample) or N×H×W (one per sample of an
    N×C×H×W batch, shared by that sample's channels).
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"expected C×H×W or N×C×H×W, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if mask.dim() == 2:
        if tuple(mask.shape) != (h, w):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match image size {(h, w)}")
        m = mask
    elif mask.dim() == 3 and x.dim() == 4:
        if tuple(mask.shape) != (x.shape[0], h, w):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match batch {(x.shape[0], h, w)}")
        m = mask.unsqueeze(1)  # N×1×H×W, broadcast over channels
    else:
        raise ValueError(f"mask must be H×W, or N×H×W for a batch; got {tuple(mask.shape)}")
    coeffs = dct2(x)
    return idct2(coeffs * m.to(device=coeffs.device, dtype=coeffs.dtype))


def sfm(
    x: Tensor,
    mode: SfmMode,
    generator: torch.Generator,
    center: float = 0.85,
    spread: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """Mask one image (C×H×W or 1×C×H×W) with a freshly drawn SFM mask.

    Returns (masked image of x's shape, H×W mask). x is not modified.
    """
    if x.dim() == 4 and x.shape[0] != 1:
        raise ValueError(f"sfm masks one image; use sfm_batch for a batch of {x.shape[0]}")
    if x.dim() not in (3, 4):
        raise ValueError(f"expected C×H×W or 1×C×H×W, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    mask = draw_sfm_mask(h, w, mode, generator, center=center, spread=spread).to(x.device)
    return apply_frequency_mask(x, mask), mask


def sfm_batch(
    x: Tensor,
    rate: float,
    mode: SfmMode,
    generator: torch.Generator,
    center: float = 0.85,
    spread: float = 0.15,
) -> Tensor:
    """SFM for a training batch N×C×H×W: each sample is masked with probability `rate`.

    Chosen samples each get their own mask; the others are returned unchanged (the
    reference trainers put zeros there instead, a bug not reproduced here). Returns a
    new tensor; x is not modified. Draw order: N selection uniforms, then the masks.
    """
    if x.dim() != 4:
        raise ValueError(f"sfm_batch expects N×C×H×W, got shape {tuple(x.shape)}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"SFM rate must be in [0, 1], got {rate}")
    _check_sfm_args(mode, center, spread)
    n, _, h, w = x.shape
    chosen = torch.rand(n, generator=generator, device=generator.device) < rate
    out = x.clone()
    idx = torch.nonzero(chosen, as_tuple=False).flatten().to(x.device)
    if idx.numel() == 0:
        return out
    masks = draw_sfm_masks(idx.numel(), h, w, mode, generator, center=center, spread=spread)
    out[idx] = apply_frequency_mask(x[idx], masks.to(x.device))
    return out
