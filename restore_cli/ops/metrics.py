"""Image-quality metrics with the field's conventions (ANCHORS §6): PSNR, SSIM, PSNR-B.

Every metric takes C×H×W or H×W tensors on the 0–255 scale and computes in float64 on
the CPU. Quantise network outputs first with `quantize_to_uint8_levels` (the uint8
convention of BasicSR / KAIR / SwinIR) and pick the channel (e.g. Y) before calling.
For C > 1 every metric is the mean of the per-channel values (PSNR: one MSE over all).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Rounding = Literal["half_even", "half_away"]
"""half_even: torch.round / numpy.round, what the Python references (BasicSR, KAIR,
SwinIR: `np.uint8((x*255).round())`) do. half_away: MATLAB im2uint8 / round."""

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
PSNRB_BLOCK = 8


def quantize_to_uint8_levels(x: Tensor, rounding: Rounding = "half_even") -> Tensor:
    """Clamp [0, 1] to [0, 1], ×255, round to integers; float64 on the 0–255 scale.

    The default rounds half to even, as numpy's round in the Python reference metric
    code does; "half_away" rounds like MATLAB. They differ only at exact .5 values.
    """
    y = x.detach().to(device="cpu", dtype=torch.float64).clamp(0.0, 1.0) * 255.0
    if rounding == "half_even":
        return torch.round(y)
    if rounding == "half_away":
        return torch.floor(y + 0.5)  # y ≥ 0, so this is half away from zero
    raise ValueError(f"unknown rounding {rounding!r}; expected 'half_even' or 'half_away'")


def crop_border(x: Tensor, border: int) -> Tensor:
    """Shave `border` pixels from each side of the last two dims (border 0: unchanged)."""
    if border < 0:
        raise ValueError(f"crop border must be >= 0, got {border}")
    if border == 0:
        return x
    h, w = x.shape[-2:]
    if 2 * border >= min(h, w):
        raise ValueError(f"crop border {border} leaves nothing of a {h}×{w} image")
    return x[..., border : h - border, border : w - border]


def _prepare_pair(x: Tensor, y: Tensor, border: int) -> tuple[Tensor, Tensor]:
    """Check shapes, make both C×H×W float64 on the CPU, crop borders."""
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() == 2:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"expected C×H×W or H×W, got shape {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    y = y.detach().to(device="cpu", dtype=torch.float64)
    return crop_border(x, border), crop_border(y, border)


def _psnr_from_mse(mse: float, data_range: float) -> float:
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range * data_range / mse)


def psnr(x: Tensor, y: Tensor, border: int = 0, data_range: float = 255.0) -> float:
    """PSNR = 10·log10(range² / MSE), MSE over all channels and pixels; inf when identical."""
    a, b = _prepare_pair(x, y, border)
    return _psnr_from_mse(float(torch.mean((a - b) ** 2)), data_range)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """size×size float64 Gaussian window summing to 1 (MATLAB fspecial('gaussian'))."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(r * r) / (2.0 * sigma * sigma))
    g /= g.sum()
    return torch.outer(g, g)


def ssim_map(x: Tensor, y: Tensor, data_range: float = 255.0) -> Tensor:
    """SSIM map of Wang et al. (2004), Eq. 13, per channel: C×(H−10)×(W−10) ('valid' filtering).

    x, y are C×H×W float64; local statistics use the 11×11 Gaussian window (σ 1.5) and
    population (not sample) variances; C1 = (K1·L)², C2 = (K2·L)².
    """
    c, h, w = x.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {h}×{w}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    # The Gaussian window is separable (outer product of its 1-D profile): filter rows, then
    # columns — the same 'valid' result as the 11×11 window, about 15× faster.
    window = gaussian_window().to(x.dtype)
    profile = window.sum(dim=1)
    row = profile.view(1, 1, 1, SSIM_WINDOW)
    col = profile.view(1, 1, SSIM_WINDOW, 1)
    # Filter x, y, x², y², xy of every channel at once: (5C)×1×H×W, valid conv.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=0).unsqueeze(1)
    filtered = F.conv2d(F.conv2d(stack, row), col)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.squeeze(1).split(c, dim=0)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim(x: Tensor, y: Tensor, border: int = 0, data_range: float = 255.0) -> float:
    """Mean SSIM (K1 0.01, K2 0.03, 11×11 Gaussian σ 1.5, valid filtering); mean over channels."""
    a, b = _prepare_pair(x, y, border)
    return float(ssim_map(a, b, data_range).mean(dim=(-2, -1)).mean())


def blocking_effect_factor(x: Tensor, block: int = PSNRB_BLOCK) -> float:
    """BEF of one H×W image (Yim & Bovik 2011, Eqs. 3–6), on the image's own scale squared.

    D_B: mean squared difference of neighbouring pixels across block boundaries (columns
    or rows kB−1 | kB); D_B^c: the same over all other neighbour pairs;
    BEF = log2(B)/log2(min(H, W)) · (D_B − D_B^c) when D_B > D_B^c, else 0.
    Pairs are counted exactly, so sizes that are not multiples of B are handled too.
    """
    if x.dim() != 2:
        raise ValueError(f"BEF takes one H×W channel, got shape {tuple(x.shape)}")
    h, w = x.shape
    if min(h, w) < 2:
        raise ValueError(f"BEF needs at least 2×2 pixels, got {h}×{w}")
    x = x.to(torch.float64)
    dh = (x[:, :-1] - x[:, 1:]) ** 2  # H×(W−1): pair (j, j+1) at column j
    dv = (x[:-1, :] - x[1:, :]) ** 2  # (H−1)×W: pair (i, i+1) at row i
    col_b = (torch.arange(w - 1) % block) == block - 1
    row_b = (torch.arange(h - 1) % block) == block - 1
    n_b = h * int(col_b.sum()) + w * int(row_b.sum())
    n_bc = h * (w - 1) + w * (h - 1) - n_b
    if n_b == 0 or n_bc == 0:
        return 0.0
    s_b = float(dh[:, col_b].sum() + dv[row_b, :].sum())
    s_bc = float(dh[:, ~col_b].sum() + dv[~row_b, :].sum())
    d_b, d_bc = s_b / n_b, s_bc / n_bc
    if d_b <= d_bc:
        return 0.0
    eta = math.log2(block) / math.log2(min(h, w))
    return eta * (d_b - d_bc)


def psnr_b(x: Tensor, y: Tensor, border: int = 0, data_range: float = 255.0) -> float:
    """PSNR-B (Yim & Bovik 2011): 10·log10(range² / (MSE + BEF(x))), 8×8 blocks.

    x is the image under test (decoded or restored) and y the reference: the blocking
    effect factor is measured on x only. Borders are cropped first, so the block grid is
    counted from the cropped corner. For C > 1, the mean of the per-channel PSNR-B.
    """
    a, b = _prepare_pair(x, y, border)
    values = []
    for xc, yc in zip(a, b):
        mse = float(torch.mean((xc - yc) ** 2))
        values.append(_psnr_from_mse(mse + blocking_effect_factor(xc), data_range))
    return sum(values) / len(values)
