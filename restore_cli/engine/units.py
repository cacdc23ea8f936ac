"""The one place where CLI units become engine units.

Noise levels are given on the 0–255 scale at the CLI (and in sidecars and reports) and used on
the [0, 1] scale by ops and models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def sigma_to_unit(sigma_255: float) -> float:
    """σ on the 0–255 scale → σ on the [0, 1] scale of the engine."""
    return float(sigma_255) / 255.0


def sigma_to_255(sigma_unit: float) -> float:
    return float(sigma_unit) * 255.0


def image_to_tensor(pixels: np.ndarray) -> Tensor:
    """H×W×C float32 array in [0, 1] → 1×C×H×W tensor (shares no memory with the input)."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).unsqueeze(0).clone()


def tensor_to_image(x: Tensor) -> np.ndarray:
    """1×C×H×W (or C×H×W) tensor → H×W×C float32 array, not clipped (the writer clips)."""
    if x.dim() == 4:
        x = x[0]
    return x.detach().to(torch.float32).cpu().numpy().transpose(1, 2, 0).copy()
