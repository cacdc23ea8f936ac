"""Colour conversions used by the metrics: MATLAB rgb2ycbcr / ycbcr2rgb and rgb2gray.

YCbCr is ITU-R BT.601 studio range, as in MATLAB (ANCHORS §6.1): with RGB in [0, 1],
  Y  =  16 + 65.481 R + 128.553 G +  24.966 B
  Cb = 128 − 37.797 R −  74.203 G + 112.000 B
  Cr = 128 + 112.000 R − 93.786 G −  18.214 B
on the 0–255 scale; here every result is divided by 255, so Y ∈ [16, 235]/255.
This is not OpenCV's / kornia's full-range YCrCb.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Rows give Y, Cb, Cr (0–255 scale) from R, G, B in [0, 1].
_YCBCR_FROM_RGB: tuple[tuple[float, float, float], ...] = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_YCBCR_OFFSET: tuple[float, float, float] = (16.0, 128.0, 128.0)

# MATLAB rgb2gray: the first row of inv of the NTSC YIQ matrix, as MATLAB computes it.
GRAY_WEIGHTS: tuple[float, float, float] = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def _channel_dim(x: Tensor) -> int:
    """Channel axis of a 3×H×W or N×3×H×W tensor; raises otherwise."""
    if x.dim() == 3 and x.shape[0] == 3:
        return 0
    if x.dim() == 4 and x.shape[1] == 3:
        return 1
    raise ValueError(f"expected a 3×H×W or N×3×H×W tensor, got shape {tuple(x.shape)}")


def _apply_matrix(x: Tensor, matrix: Tensor, offset: Tensor) -> Tensor:
    """out[c] = Σ_k matrix[c, k] · x[k] + offset[c] along the channel axis."""
    if not x.is_floating_point():
        raise TypeError(f"colour conversion needs a floating-point tensor, got {x.dtype}")
    cdim = _channel_dim(x)
    m = matrix.to(device=x.device, dtype=x.dtype)
    b = offset.to(device=x.device, dtype=x.dtype)
    moved = x.movedim(cdim, -1)  # …×H×W×3
    out = moved @ m.T + b
    return out.movedim(-1, cdim)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """MATLAB rgb2ycbcr for float RGB in [0, 1], 3×H×W or N×3×H×W; YCbCr on the [0, 1] scale."""
    m = torch.tensor(_YCBCR_FROM_RGB, dtype=torch.float64) / 255.0
    b = torch.tensor(_YCBCR_OFFSET, dtype=torch.float64) / 255.0
    return _apply_matrix(x, m, b)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """MATLAB ycbcr2rgb: inverse of `rgb_to_ycbcr` (YCbCr and RGB on the [0, 1] scale), unclamped."""
    t = torch.tensor(_YCBCR_FROM_RGB, dtype=torch.float64)
    t_inv = torch.linalg.inv(t)  # RGB = T⁻¹ (255·YCbCr − offset)
    offset = torch.tensor(_YCBCR_OFFSET, dtype=torch.float64)
    return _apply_matrix(x, t_inv * 255.0, -(t_inv @ offset))


def rgb_to_y(x: Tensor) -> Tensor:
    """Y of MATLAB rgb2ycbcr, (16 + 65.481R + 128.553G + 24.966B)/255; keeps a channel dim of 1."""
    cdim = _channel_dim(x)
    if not x.is_floating_point():
        raise TypeError(f"colour conversion needs a floating-point tensor, got {x.dtype}")
    r, g, b = x.unbind(cdim)
    y = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return y.unsqueeze(cdim)


def rgb_to_gray(x: Tensor) -> Tensor:
    """MATLAB rgb2gray (0.298936…R + 0.587043…G + 0.114020…B); keeps a channel dim of 1.

    Unrounded; MATLAB rounds when its input is uint8 (BSD68 = round(rgb2gray(CBSD68))).
    """
    cdim = _channel_dim(x)
    if not x.is_floating_point():
        raise TypeError(f"colour conversion needs a floating-point tensor, got {x.dtype}")
    r, g, b = x.unbind(cdim)
    wr, wg, wb = GRAY_WEIGHTS
    return (wr * r + wg * g + wb * b).unsqueeze(cdim)
