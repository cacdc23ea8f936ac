"""`restore sfm-mask`: stochastic frequency masking of one image (El Helou et al., ECCV 2020).

The same `restore_cli.ops.dct.sfm` that training applies per sample (with a rate) is applied
here to whole images, with the mask and the DCT spectra returned for inspection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from restore_cli.engine.units import image_to_tensor, tensor_to_image
from restore_cli.errors import RestoreError
from restore_cli.io.images import ImageData
from restore_cli.ops.dct import dct2, sfm

SfmMode = Literal["central", "targeted", "random"]


@dataclass(frozen=True)
class SfmSettings:
    mode: SfmMode = "targeted"
    seed: int = 0
    center: float = 0.85
    spread: float = 0.15

    def validate(self) -> "SfmSettings":
        if not 0.0 <= self.center <= 1.0:
            raise RestoreError(f"--center must be within [0, 1] (a fraction of the largest DCT radius), got {self.center}")
        if self.spread <= 0.0:
            raise RestoreError(f"--spread must be > 0, got {self.spread}")
        return self


@dataclass
class SfmResult:
    image: ImageData
    mask: np.ndarray  # H×W, 1 = kept, 0 = dropped
    spectrum: np.ndarray  # H×(2W+gap) log-magnitude DCT, before | after, scaled to [0, 1]


def log_spectrum_pair(before: torch.Tensor, after: torch.Tensor, gap: int = 8) -> np.ndarray:
    """Side-by-side log-magnitude DCT spectra (channel mean), on one shared scale."""
    lb = torch.log1p(dct2(before).abs().mean(dim=(0, 1)) * 255.0)
    la = torch.log1p(dct2(after).abs().mean(dim=(0, 1)) * 255.0)
    top = float(lb.max()) or 1.0
    h = lb.shape[0]
    strip = torch.ones(h, gap, dtype=lb.dtype)
    return (torch.cat([lb, strip * top, la], dim=1) / top).clamp(0, 1).numpy()


def mask_image(image: ImageData, settings: SfmSettings) -> SfmResult:
    x = image_to_tensor(image.pixels).to(torch.float64)
    generator = torch.Generator().manual_seed(int(settings.seed))
    masked, mask = sfm(x, settings.mode, generator, center=settings.center, spread=settings.spread)
    masked = masked.reshape(x.shape)
    return SfmResult(
        image=replace(image, pixels=tensor_to_image(masked)),
        mask=mask.to(torch.float32).cpu().numpy(),
        spectrum=log_spectrum_pair(x, masked),
    )
