"""FFT pieces of the HQS data step of USRNet: the OTF, s-fold zero insertion, the block mean and
the closed-form solution of the data sub-problem (USRNet paper Eq. 7, after Zhao et al. 2016).

Degradation model (ANCHORS 1.1): y = (x ⊗ k)↓s + n, with ⊗ a 2-D circular *convolution* whose
kernel centre is (floor(kh/2), floor(kw/2)) and ↓s keeping the upper-left pixel of each s×s block.
Everything is computed in float32, or float64 when the inputs are float64; lower precisions are
promoted, because the division by (|F(k)|²⇓s + α) needs the mantissa.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _fft_real_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 are promoted)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _as_kernel_batch(k: Tensor) -> Tensor:
    """Kernel as N×1×kh×kw; a kh×kw kernel becomes 1×1×kh×kw (broadcast over the batch)."""
    if k.dim() == 2:
        return k[None, None]
    if k.dim() == 3:
        return k[:, None]
    if k.dim() == 4:
        if k.shape[1] != 1:
            raise ValueError(f"kernel must be N×1×kh×kw, got shape {tuple(k.shape)}")
        return k
    raise ValueError(f"kernel must have 2, 3 or 4 dimensions, got shape {tuple(k.shape)}")


def psf_to_otf(k: Tensor, shape: tuple[int, int]) -> Tensor:
    """Optical transfer function of a PSF at image size `shape` (MATLAB `psf2otf` semantics).

    The kernel is zero-padded to `shape`, circularly shifted by −floor(kh/2), −floor(kw/2) so that
    its centre lands on (0, 0), and Fourier transformed. Kernels larger than `shape` are folded
    (taps added modulo the image size), which is exact for circular convolution.
    k: N×1×kh×kw (or kh×kw) real; returns complex N×1×H×W (1×1×H×W for a kh×kw kernel).
    """
    k = _as_kernel_batch(k)
    k = k.to(_fft_real_dtype(k))
    height, width = int(shape[0]), int(shape[1])
    kh, kw = k.shape[-2:]
    rows = -(-kh // height) * height  # kh rounded up to a multiple of the image height
    cols = -(-kw // width) * width
    padded = torch.nn.functional.pad(k, (0, cols - kw, 0, rows - kh))
    if rows != height or cols != width:
        # Fold: tap (a, b) goes to (a mod H, b mod W).
        padded = padded.reshape(*padded.shape[:-2], rows // height, height, cols // width, width)
        padded = padded.sum(dim=(-4, -2))
    shifted = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.fft2(shifted)


def upsample_zeros(x: Tensor, scale: int) -> Tensor:
    """s-fold zero insertion (the adjoint of upper-left decimation): LR pixel (i, j) → (s·i, s·j).

    x: …×h×w; returns …×(s·h)×(s·w) with zeros everywhere else.
    """
    if scale == 1:
        return x
    h, w = x.shape[-2:]
    out = x.new_zeros(*x.shape[:-2], h, scale, w, scale)
    out[..., :, 0, :, 0] = x
    return out.reshape(*x.shape[:-2], h * scale, w * scale)


def block_mean(x: Tensor, scale: int) -> Tensor:
    """The ⇓s operator of USRNet Eq. 7: cut the sH×sW array into s×s distinct blocks of size
    H×W and average them. Works on real and complex tensors; x: …×(s·H)×(s·W) → …×H×W."""
    if scale == 1:
        return x
    rows, cols = x.shape[-2:]
    if rows % scale or cols % scale:
        raise ValueError(f"block_mean: size {rows}×{cols} is not a multiple of the scale {scale}")
    blocks = x.reshape(*x.shape[:-2], scale, rows // scale, scale, cols // scale)
    return blocks.mean(dim=(-4, -2))


def wrap_convolve_and_decimate(x: Tensor, k: Tensor, scale: int) -> Tensor:
    """The forward operator A of the degradation model: (x ⊗ k)↓s with circular boundaries,
    evaluated by FFT. x: N×C×H×W, k: N×1×kh×kw (or kh×kw); returns N×C×⌈H/s⌉×⌈W/s⌉."""
    dtype = _fft_real_dtype(x, k)
    otf = psf_to_otf(k.to(dtype), (x.shape[-2], x.shape[-1]))
    blurred = torch.fft.ifft2(otf * torch.fft.fft2(x.to(dtype))).real
    return blurred[..., ::scale, ::scale]


@dataclass
class DataTerms:
    """The per-forward constants of the data step (computed once, reused for all K iterations).

    FB: F(k), complex N×1×sH×sW. FBC: conj(F(k)). F2B: |F(k)|², real N×1×sH×sW.
    FBFy: conj(F(k))·F(y↑s), complex N×C×sH×sW. F2B_mean: (|F(k)|²)⇓s, real N×1×H×W
    (derived from F2B when left out).
    """

    FB: Tensor
    FBC: Tensor
    F2B: Tensor
    FBFy: Tensor
    F2B_mean: Tensor | None = None


def prepare_data_terms(y: Tensor, k: Tensor, scale: int) -> DataTerms:
    """FFT constants of the data step for LR image y (N×C×h×w) and kernel k (N×1×kh×kw or
    kh×kw) at scale s: the HR grid is s·h × s·w."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    dtype = _fft_real_dtype(y, k)
    y = y.to(dtype)
    h, w = y.shape[-2:]
    fb = psf_to_otf(k.to(dtype), (h * scale, w * scale))
    fbc = torch.conj(fb)
    f2b = fb.real.square() + fb.imag.square()
    fbfy = fbc * torch.fft.fft2(upsample_zeros(y, scale))
    return DataTerms(FB=fb, FBC=fbc, F2B=f2b, FBFy=fbfy, F2B_mean=block_mean(f2b, scale))


def data_step(x: Tensor, terms: DataTerms, alpha: Tensor | float, scale: int) -> Tensor:
    """Closed-form z = argmin_z ‖y − (z ⊗ k)↓s‖² + α‖z − x‖² under circular boundaries
    (USRNet Eq. 7):

        d = conj(F(k))·F(y↑s) + α·F(x)
        z = F⁻¹( (d − conj(F(k)) ⊙s [ (F(k)·d)⇓s / ((|F(k)|²)⇓s + α) ]) / α )

    x: N×C×sH×sW (the previous estimate), alpha: N×1×1×1 (or a scalar), α > 0.
    Returns the real part, N×C×sH×sW, in the dtype of the terms (float32 or float64).
    """
    dtype = terms.F2B.dtype
    alpha_t = torch.as_tensor(alpha, dtype=dtype, device=x.device)
    if alpha_t.dim() == 1:
        alpha_t = alpha_t.reshape(-1, 1, 1, 1)
    f2b_mean = terms.F2B_mean if terms.F2B_mean is not None else block_mean(terms.F2B, scale)
    d = terms.FBFy + torch.fft.fft2(alpha_t * x.to(dtype))
    fbd_mean = block_mean(terms.FB * d, scale)
    ratio = fbd_mean / (f2b_mean + alpha_t)
    correction = terms.FBC * torch.tile(ratio, (scale, scale))
    return torch.fft.ifft2((d - correction) / alpha_t).real
