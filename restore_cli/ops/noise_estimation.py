"""Blind AWGN level estimation from patch statistics.

Chen, Zhu, Heng, "An Efficient Statistical Method for Image Noise Level Estimation"
(ICCV 2015). Patches of a natural image lie close to a low-dimensional subspace, so
the smallest eigenvalues of the patch covariance are due to the noise alone and all
equal σ². Sorting eigenvalues λ(1) ≤ … ≤ λ(r), the estimate is σ² = mean(λ(1..m)) for
the largest m whose mean is also the median of those m eigenvalues (Algorithm 1: the
mean splits them into equally many above and below).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH_SIZE = 8
MAX_PATCHES = 40_000
"""Patch extraction stride is raised until at most about this many patches remain."""


def _patch_stride(h: int, w: int, d: int, max_patches: int) -> int:
    """Smallest stride s ≥ 1 with ⌈(h−d+1)/s⌉·⌈(w−d+1)/s⌉ ≤ max_patches."""
    s = 1
    while math.ceil((h - d + 1) / s) * math.ceil((w - d + 1) / s) > max_patches:
        s += 1
    return s


def patch_covariance_eigenvalues(x: Tensor, patch_size: int = PATCH_SIZE, stride: int | None = None) -> Tensor:
    """Ascending eigenvalues (float64) of the covariance of the d×d×C patch vectors of x (C×H×W).

    Patches overlap (stride 1) unless the image is large, then a stride keeps about
    `MAX_PATCHES` of them; the channels of a patch are stacked into one vector (r = d²C).
    """
    c, h, w = x.shape
    if min(h, w) < patch_size:
        raise ValueError(f"noise estimation needs at least {patch_size}×{patch_size} pixels, got {h}×{w}")
    s = stride if stride is not None else _patch_stride(h, w, patch_size, MAX_PATCHES)
    img = x.detach().to(torch.float64).unsqueeze(0)
    patches = F.unfold(img, kernel_size=patch_size, stride=s)[0]  # r × n
    n = patches.shape[1]
    if n < 2:
        raise ValueError(f"too few patches ({n}) for a covariance")
    centred = patches - patches.mean(dim=1, keepdim=True)
    cov = centred @ centred.T / n
    return torch.linalg.eigvalsh(cov)


def noise_variance_from_eigenvalues(eigenvalues: Tensor) -> float:
    """σ² from ascending eigenvalues: mean of the largest prefix whose mean is its median.

    For each m, τ_m = mean(λ(1..m)); the rule accepts m when as many of λ(1..m) lie
    above τ_m as below it. The largest accepted m wins (m = 1 always qualifies).
    """
    lam = eigenvalues.to(torch.float64).flatten().sort().values
    r = lam.numel()
    m = torch.arange(1, r + 1, dtype=torch.float64)
    tau = torch.cumsum(lam, 0) / m  # τ_m for m = 1..r
    in_prefix = torch.arange(r).unsqueeze(0) < torch.arange(1, r + 1).unsqueeze(1)  # [m−1, j]: j < m
    above = ((lam.unsqueeze(0) > tau.unsqueeze(1)) & in_prefix).sum(dim=1)
    below = ((lam.unsqueeze(0) < tau.unsqueeze(1)) & in_prefix).sum(dim=1)
    ok = torch.nonzero(above == below).flatten()
    best = int(ok.max())  # index m−1 of the largest accepted prefix
    return max(float(tau[best]), 0.0)


def estimate_noise_sigma(x: Tensor, patch_size: int = PATCH_SIZE, stride: int | None = None) -> float:
    """AWGN σ of x (C×H×W or 1×C×H×W, [0, 1] scale), returned on the [0, 1] scale.

    Chen et al. (ICCV 2015), Algorithm 1 on d×d patches (d = 8; colour channels stacked
    into the patch vector). Biased upwards on strongly textured images at low σ.
    """
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"estimate_noise_sigma takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3:
        raise ValueError(f"expected C×H×W or 1×C×H×W, got shape {tuple(x.shape)}")
    lam = patch_covariance_eigenvalues(x, patch_size=patch_size, stride=stride)
    return math.sqrt(noise_variance_from_eigenvalues(lam))
