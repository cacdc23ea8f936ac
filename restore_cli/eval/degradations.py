"""Benchmark inputs made exactly as the reference scripts make them (ANCHORS §1.11, §6.2).

These work on the uint8 pixels of the test images with numpy/scipy on purpose: the references
(cszn/KAIR, cszn/USRNet, cszn/DPIR) blur the *uint8* array with `scipy.ndimage.convolve`, which
returns uint8 by truncating its float64 sums, and draw noise with `np.random.seed(s)` followed by
`np.random.normal(0, σ/255, H×W×C)`. Reproducing them pixel for pixel needs the same operations
(summation order included), so the torch ops of `restore_cli.ops.degradation` are not used here.

Noise: `numpy.random.RandomState(seed).normal(0, σ/255, (H, W, C))`, a fresh generator per
image and setting: the same stream as KAIR's global `np.random.seed(seed)`, without global
state. It is added in float to the float32 image (result float32), not clipped (unless asked),
not quantised.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from restore_cli.ops.colour import rgb_to_y
from restore_cli.ops.degradation import jpeg_compress
from restore_cli.ops.resize import matlab_imresize
from restore_cli.ops.rl_restore import apply_mixed_distortion, draw_mixed_distortion

from restore_cli.eval.settings import Setting


@dataclass
class Case:
    """One (image, setting) pair: the reference, what every method gets, and what the model is told.

    reference: C×H×W float64 on the 0–255 scale (integer levels), the ground truth after modcrop.
    degraded: 1×C×h×w float32 on the [0, 1] scale (may leave [0, 1]: unclipped noise).
    kernel: the kernel given to the model (true kernel, or the bicubic approximation), or None.
    sigma: the noise level given to the model, [0, 1] scale.
    """

    item: str
    setting: Setting
    reference: Tensor
    degraded: Tensor
    kernel: np.ndarray | None = None
    scale: int = 1
    sigma: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def modcrop(image: np.ndarray, multiple: int) -> np.ndarray:
    """The top-left H'×W' part with H', W' multiples of `multiple` (KAIR `modcrop`)."""
    if multiple <= 1:
        return image
    h, w = image.shape[:2]
    return image[: h - h % multiple, : w - w % multiple]


def uint8_to_float32(image: np.ndarray) -> np.ndarray:
    """KAIR `uint2single`: float32(u8 / 255) computed in float64 then rounded once."""
    return (image.astype(np.float64) / 255.0).astype(np.float32)


def awgn(image: np.ndarray, sigma_255: float, seed: int, clip: bool = False) -> np.ndarray:
    """float32 image + N(0, σ/255) from `RandomState(seed)`, shaped like the image (H×W×C).

    Equals KAIR `np.random.seed(seed); img += np.random.normal(0, σ/255, img.shape)` on a float32
    image: the float64 noise is added and the sum stored in float32. σ = 0 draws nothing."""
    out = image.astype(np.float32, copy=True)
    if sigma_255 > 0:
        out += np.random.RandomState(seed).normal(0.0, sigma_255 / 255.0, out.shape)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def wrap_blur_uint8(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """scipy.ndimage.convolve of the uint8 H×W×C array with kernel[..., None], mode 'wrap': a true
    convolution per channel whose float64 sums are truncated to uint8 (the reference's blur)."""
    if image.dtype != np.uint8:
        raise TypeError(f"the reference blur works on uint8 images, got {image.dtype}")
    return ndimage.convolve(image, np.asarray(kernel, dtype=np.float64)[..., None], mode="wrap")


def usrnet_lr(blurred: np.ndarray, scale: int, sigma_255: float, seed: int, clip: bool = False) -> np.ndarray:
    """USRNet Table 1 / DPIR deblurring LR from a `wrap_blur_uint8` result: upper-left s-fold
    decimation, float32 /255, then seed-`seed` AWGN. Returns float32 h×w×C."""
    decimated = blurred[::scale, ::scale]
    return awgn(uint8_to_float32(decimated), sigma_255, seed, clip)


def to_tensor(image: np.ndarray) -> Tensor:
    """H×W×C array → 1×C×H×W float32 tensor (a copy)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).unsqueeze(0).to(torch.float32).clone()


def levels_tensor(image: np.ndarray) -> Tensor:
    """uint8 H×W×C → C×H×W float64 on the 0–255 scale (a reference for the metrics)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float64)


def bicubic_lr(hr: np.ndarray, scale: int, uint8: bool = True) -> np.ndarray:
    """MATLAB imresize(hr, 1/s, 'bicubic') of a uint8 H×W×C image, as float32 h×w×C in [0, 1].

    uint8=True resizes in MATLAB's integer class (rounded after each axis): this is how the "BI"
    LR files were made, bit for bit. uint8=False resizes the float image (KAIR `imresize_np`, the
    USRNet bicubic test script), unquantised."""
    x = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))
    if uint8:
        lr = matlab_imresize(x, scale=1.0 / scale).to(torch.float64) / 255.0
    else:
        lr = matlab_imresize(x.to(torch.float64) / 255.0, scale=1.0 / scale)
    return lr.permute(1, 2, 0).numpy().astype(np.float32)


def gray_levels(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×1 unchanged; RGB → round(Y) of MATLAB rgb2ycbcr (BT.601 studio range), uint8 H×W×1
    (the Y channel on which JPEG artefact removal is benchmarked)."""
    if image.shape[2] == 1:
        return image
    y = rgb_to_y(levels_tensor(image) / 255.0) * 255.0  # 1×H×W
    return np.clip(np.round(y.numpy()), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def jpeg_input(image: np.ndarray, quality: int) -> Tensor:
    """The Pillow (libjpeg) JPEG round trip of a uint8 H×W×C image at integer `quality`, 1×C×H×W."""
    return jpeg_compress(to_tensor(uint8_to_float32(image)), float(quality))


def item_seed(seed: int, *keys: str) -> list[int]:
    """A seed sequence for one item that depends only on the run seed and the item's own names
    (CRC-32 of each), not on its position in the folder: --limit keeps the draws of the others."""
    return [int(seed)] + [zlib.crc32(key.encode("utf-8")) for key in keys]


def toolchain_input(image: np.ndarray, level: str, seed: int, item: str) -> tuple[Tensor, dict[str, Any]]:
    """RL-Restore mixed distortion (blur → noise → JPEG, `ops.rl_restore`) at a severity, drawn from
    numpy Generator(item_seed) (levels and parameters) and a torch Generator seeded from it (noise)."""
    rng = np.random.default_rng(item_seed(seed, item, level))
    drawn = draw_mixed_distortion(rng, level)
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    x = to_tensor(uint8_to_float32(image))
    y = apply_mixed_distortion(x, drawn, generator=generator)
    details = {"blur_sigma": round(drawn.blur_sigma, 6), "noise_sigma": round(drawn.noise_sigma, 6),
               "jpeg_quality": round(drawn.jpeg_quality, 6)}
    return y, details


def patches(image: np.ndarray, size: int) -> list[tuple[str, np.ndarray]]:
    """Non-overlapping size×size patches on a grid from the top-left corner, named p000, p001, …
    in row-major order; leftover borders are dropped. size 0: the whole image, named ""."""
    if size <= 0:
        return [("", image)]
    h, w = image.shape[:2]
    out = []
    for r in range(0, h - size + 1, size):
        for c in range(0, w - size + 1, size):
            out.append((f"p{len(out):03d}", image[r : r + size, c : c + size]))
    return out
