"""Regularised least-squares inversion of y = (x ⊗ k)↓s + n with a known kernel: the classical
baseline a deep model is measured against (Wiener deconvolution for s = 1).

    x̂ = argmin_x ‖y − (x ⊗ k)↓s‖² + α‖x − x₀‖²

under circular boundaries, where x₀ is an initial guess (the upsampled input, or 0). For s = 1
this is a Wiener filter with a flat (white) signal prior of mean x₀ and noise-to-signal ratio α,

    X̂ = (conj(K)·Y + α·X₀) / (|K|² + α),

and for s > 1 it is the closed-form data step of USRNet (paper Eq. 7; `hqs.data_step`).
Images are N×C×H×W float tensors in [0, 1], σ on the [0, 1] scale.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch
from torch import Tensor

from .hqs import data_step, prepare_data_terms, psf_to_otf

__all__ = [
    "DEFAULT_ALPHA_FACTOR",
    "DEFAULT_SIGMA_FLOOR",
    "alpha_from_sigma",
    "regularised_inverse",
    "wiener_deconvolve",
]

#: α = DEFAULT_ALPHA_FACTOR · max(σ, DEFAULT_SIGMA_FLOOR)², σ on the [0, 1] scale. The factor
#: stands for 1/(signal power per frequency) of a flat prior. Chosen by a sweep over 100–1000 on
#: BSDS500 *train* images (not a test set): Levin09 deblurring and kernels_12 ×3 SR at σ 2.55
#: and 7.65 all peak between 100 and 500; 200 is within 0.1 dB of the best in all four.
DEFAULT_ALPHA_FACTOR: Final[float] = 200.0
#: Floor on σ: half a grey level. "Noise-free" benchmark inputs still carry uint8 rounding
#: (RMS 0.29 levels) or truncation (RMS 0.58 levels) error that an unregularised inverse would
#: amplify; with the factor above this gives α ≈ 7.7e-4 at σ 0, where the same sweep peaks
#: (3e-4 to 1e-3 for ×2/×4 SR and deblurring).
DEFAULT_SIGMA_FLOOR: Final[float] = 0.5 / 255.0


def alpha_from_sigma(sigma: float, factor: float = DEFAULT_ALPHA_FACTOR, sigma_floor: float = DEFAULT_SIGMA_FLOOR) -> float:
    """The regularisation weight α = factor · max(σ, σ_floor)² for noise σ on the [0, 1] scale."""
    if sigma < 0 or factor <= 0 or sigma_floor < 0:
        raise ValueError(f"need sigma >= 0, factor > 0, sigma_floor >= 0; got {sigma}, {factor}, {sigma_floor}")
    value = factor * max(float(sigma), float(sigma_floor)) ** 2
    if value <= 0:
        raise ValueError("alpha must be > 0: give a positive sigma_floor for sigma 0")
    return value


def _kernel_tensor(k: Tensor | np.ndarray, dtype: torch.dtype, device: torch.device) -> Tensor:
    kt = torch.as_tensor(np.ascontiguousarray(k) if isinstance(k, np.ndarray) else k)
    return kt.to(device=device, dtype=dtype)


def _work_dtype(y: Tensor) -> torch.dtype:
    return torch.float64 if y.dtype == torch.float64 else torch.float32


def wiener_deconvolve(y: Tensor, k: Tensor | np.ndarray, alpha: float, x0: Tensor | None = None) -> Tensor:
    """Wiener deconvolution with a flat prior: argmin_x ‖y − k ⊛ x‖² + α‖x − x₀‖² (circular ⊛).

    y: N×C×H×W; k: kh×kw (or N×1×kh×kw), centre (floor(kh/2), floor(kw/2)) as in
    `degradation.blur`; x0: N×C×H×W or None (= 0, the textbook Wiener filter with constant
    noise-to-signal ratio α). Returns float32 (float64 for float64 input), unclipped.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if y.dim() != 4:
        raise ValueError(f"expected an N×C×H×W tensor, got shape {tuple(y.shape)}")
    dtype = _work_dtype(y)
    yw = y.to(dtype)
    otf = psf_to_otf(_kernel_tensor(k, dtype, y.device), (y.shape[-2], y.shape[-1]))
    numerator = torch.conj(otf) * torch.fft.fft2(yw)
    if x0 is not None:
        if tuple(x0.shape) != tuple(y.shape):
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, y has {tuple(y.shape)}")
        numerator = numerator + alpha * torch.fft.fft2(x0.to(dtype))
    denominator = otf.real.square() + otf.imag.square() + alpha
    return torch.fft.ifft2(numerator / denominator).real


def regularised_inverse(y: Tensor, k: Tensor | np.ndarray, scale: int, alpha: float, x0: Tensor) -> Tensor:
    """argmin_x ‖y − (x ⊛ k)↓s‖² + α‖x − x₀‖² in closed form (USRNet Eq. 7, circular ⊛,
    upper-left ↓s). y: N×C×h×w LR; x0: N×C×(s·h)×(s·w), e.g. the bicubic upsampling of y.
    Returns N×C×(s·h)×(s·w), float32 (float64 for float64 input), unclipped. Equals
    `wiener_deconvolve(y, k, alpha, x0)` for s = 1."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    h, w = y.shape[-2:]
    if tuple(x0.shape[-2:]) != (h * scale, w * scale):
        raise ValueError(f"x0 must be {h * scale}×{w * scale} for a {h}×{w} input at scale {scale}, got {tuple(x0.shape)}")
    dtype = _work_dtype(y)
    terms = prepare_data_terms(y.to(dtype), _kernel_tensor(k, dtype, y.device), scale)
    return data_step(x0.to(dtype), terms, alpha, scale)
