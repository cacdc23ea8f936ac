"""Degradation operators on image batches: blur, decimation, noise, JPEG, and the composite
y = (x ⊗ k)↓s + n of USRNet (ANCHORS 1.1, §8).

Images are float tensors N×C×H×W in [0, 1]; noise σ is on the [0, 1] scale.
"""

from __future__ import annotations

import io
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .resize import matlab_imresize

__all__ = [
    "Boundary",
    "add_gaussian_noise",
    "blur",
    "decimate",
    "degrade",
    "jpeg_compress",
]

Boundary = Literal["wrap", "reflect", "replicate"]

# Kernels with more taps than this (larger than 7×7) go through the FFT; measured on CPU, the
# direct depthwise conv2d is only competitive below.
FFT_MIN_TAPS = 49


def _boundary_index(n: int, before: int, after: int, boundary: Boundary, device: torch.device) -> Tensor:
    """Source indices for padding a length-n axis by (before, after) samples.

    wrap: periodic (scipy 'wrap'); reflect: symmetric with the edge sample repeated, period 2n
    (scipy 'reflect', MATLAB 'symmetric'); replicate: edge sample repeated (scipy 'nearest')."""
    idx = torch.arange(-before, n + after, device=device)
    if boundary == "wrap":
        return torch.remainder(idx, n)
    if boundary == "replicate":
        return idx.clamp(0, n - 1)
    if boundary == "reflect":
        m = torch.remainder(idx, 2 * n)
        return torch.where(m < n, m, 2 * n - 1 - m)
    raise ValueError(f"unknown boundary {boundary!r}; use 'wrap', 'reflect' or 'replicate'")


def _as_kernel_tensor(k: Tensor | np.ndarray, x: Tensor) -> Tensor:
    """Kernel as a tensor of x's dtype and device, shape (h, w) or (N, 1, h, w)."""
    kt = torch.as_tensor(np.ascontiguousarray(k) if isinstance(k, np.ndarray) else k)
    kt = kt.to(device=x.device, dtype=x.dtype)
    if kt.ndim == 2:
        return kt
    if kt.ndim == 4 and kt.shape[1] == 1:
        if kt.shape[0] == 1:
            return kt[0, 0]
        if kt.shape[0] != x.shape[0]:
            raise ValueError(f"got {kt.shape[0]} kernels for a batch of {x.shape[0]} images")
        return kt
    raise ValueError(f"kernel must have shape (h, w) or (N, 1, h, w), got {tuple(kt.shape)}")


def blur(x: Tensor, k: Tensor | np.ndarray, boundary: Boundary = "wrap") -> Tensor:
    """True 2-D convolution y[i, j] = Σ_{a,b} k[a, b] · x[i + ch − a, j + cw − b] with kernel centre
    (ch, cw) = (floor(h/2), floor(w/2)) and the given boundary extension.

    Equals scipy.ndimage.convolve(x, k, mode='wrap' | 'reflect' | 'nearest') for boundary
    'wrap' | 'reflect' | 'replicate'. x: N×C×H×W; k: (h, w) shared by all images and channels, or
    N×1×h×w, one per image. Any kernel size works, also larger than the image. Kernels with more
    than FFT_MIN_TAPS taps use an FFT of the padded image (same result to float precision)."""
    if x.ndim != 4:
        raise ValueError(f"expected an N×C×H×W tensor, got shape {tuple(x.shape)}")
    kt = _as_kernel_tensor(k, x)
    n, c, height, width = x.shape
    kh, kw = kt.shape[-2:]
    ch, cw = kh // 2, kw // 2
    # Output pixel i reads x[i + ch − (kh − 1)] … x[i + ch]: pad kh−1−ch before and ch after.
    rows = _boundary_index(height, kh - 1 - ch, ch, boundary, x.device)
    cols = _boundary_index(width, kw - 1 - cw, cw, boundary, x.device)
    xp = x.index_select(-2, rows).index_select(-1, cols)  # N×C×(H+kh−1)×(W+kw−1)
    hp, wp = xp.shape[-2:]

    if kh * kw > FFT_MIN_TAPS:
        # Linear convolution of the padded image via a (hp, wp) circular one: the valid window
        # [kh−1 :, kw−1 :] never wraps around.
        work = torch.float64 if x.dtype == torch.float64 else torch.float32  # fp16/bf16 promoted
        spec = torch.fft.rfft2(xp.to(work), s=(hp, wp)) * torch.fft.rfft2(kt.to(work), s=(hp, wp))
        full = torch.fft.irfft2(spec, s=(hp, wp))
        return full[..., kh - 1 :, kw - 1 :].to(x.dtype).contiguous()

    weight = torch.flip(kt, dims=(-2, -1))  # conv2d correlates; flipping makes it a convolution
    if kt.ndim == 2:
        out = F.conv2d(xp.reshape(n * c, 1, hp, wp), weight.reshape(1, 1, kh, kw))
        return out.reshape(n, c, height, width)
    weight = weight.repeat_interleave(c, dim=0)  # (N·C)×1×kh×kw
    out = F.conv2d(xp.reshape(1, n * c, hp, wp), weight, groups=n * c)
    return out.reshape(n, c, height, width)


def decimate(x: Tensor, scale: int) -> Tensor:
    """Standard s-fold decimation keeping the upper-left pixel of each s×s block, x[..., ::s, ::s]."""
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return x[..., :: int(scale), :: int(scale)]


def add_gaussian_noise(
    x: Tensor,
    sigma: float | Tensor,
    generator: torch.Generator | None = None,
    clip: bool = False,
) -> Tensor:
    """x + σ·N(0, 1), σ on the [0, 1] scale: a number, or a tensor of shape (N,) for one σ per image.

    Noise is drawn on the generator's device, then moved to x's. clip=True clamps to [0, 1]
    (MATLAB `imnoise`); the USRNet and AWGN benchmarks leave it unclipped."""
    gen_device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=gen_device).to(x.device)
    if isinstance(sigma, Tensor):
        s = sigma.to(device=x.device, dtype=x.dtype)
        if s.ndim == 1:
            if s.shape[0] != x.shape[0]:
                raise ValueError(f"got {s.shape[0]} noise levels for a batch of {x.shape[0]} images")
            s = s.reshape(-1, *([1] * (x.ndim - 1)))
        elif s.ndim != 0:
            raise ValueError(f"sigma must be a number or a tensor of shape (N,), got {tuple(s.shape)}")
    else:
        s = float(sigma)
    y = x + s * noise
    return y.clamp(0.0, 1.0) if clip else y


def jpeg_quality_int(quality: float) -> int:
    """Pillow/libjpeg take an integer quality: round half up and clamp to 1..100."""
    if not math.isfinite(quality):
        raise ValueError(f"JPEG quality must be a finite number, got {quality!r}")
    return int(min(100, max(1, math.floor(quality + 0.5))))


def jpeg_compress(x: Tensor, quality: float) -> Tensor:
    """Round trip each image through an in-memory Pillow JPEG: quantise to uint8 (clamp, round),
    encode at `jpeg_quality_int(quality)` with Pillow's default 4:2:0 chroma subsampling (colour)
    or as a one-channel grayscale JPEG (C = 1), decode, /255. Not differentiable.

    MATLAB `imwrite` (RL-Restore) accepts non-integer qualities; here they are rounded."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected an N×C×H×W tensor with C = 1 or 3, got shape {tuple(x.shape)}")
    q = jpeg_quality_int(quality)
    # clamp, then round halves up (MATLAB im2uint8; torch.round would go to even)
    arr = torch.floor(x.detach().to("cpu", torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).numpy()  # N×H×W×C
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        pil = Image.fromarray(img[..., 0], mode="L") if img.shape[-1] == 1 else Image.fromarray(img, mode="RGB")
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as decoded:
            dec = np.asarray(decoded.convert(pil.mode))
        out[i] = dec[..., None] if dec.ndim == 2 else dec
    y = torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
    return y / 255.0


def degrade(
    x: Tensor,
    kernel: Tensor | np.ndarray | None,
    scale: int,
    sigma: float | Tensor,
    *,
    down: Literal["direct", "bicubic"] = "direct",
    boundary: Boundary = "wrap",
    jpeg_quality: float | None = None,
    generator: torch.Generator | None = None,
    clip_noise: bool = False,
) -> Tensor:
    """y = (x ⊗ k)↓s + n, then an optional JPEG round trip (USRNet Eq. 1, ANCHORS 1.1 and §8).

    down='direct': blur with `boundary`, keep the upper-left pixel of each s×s block.
    down='bicubic': blur (when a kernel is given), then MATLAB imresize(·, 1/s, 'bicubic').
    kernel=None means no blur. σ on the [0, 1] scale (number or per-image tensor); σ = 0 adds
    nothing and draws nothing. Noise is unclipped unless clip_noise."""
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    y = x if kernel is None else blur(x, kernel, boundary)
    if down == "direct":
        y = decimate(y, int(scale))
    elif down == "bicubic":
        if scale != 1:
            y = matlab_imresize(y, scale=1.0 / int(scale))
    else:
        raise ValueError(f"unknown downsampler {down!r}; use 'direct' or 'bicubic'")
    no_noise = not isinstance(sigma, Tensor) and float(sigma) == 0.0
    if not no_noise:
        y = add_gaussian_noise(y, sigma, generator=generator, clip=clip_noise)
    if jpeg_quality is not None:
        y = jpeg_compress(y, jpeg_quality)
    return y
