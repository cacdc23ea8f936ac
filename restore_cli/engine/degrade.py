"""`restore degrade`: y = (x ⊗ k)↓s + n, then JPEG (USRNet Eq. 1), or an RL-Restore preset.

The settings are validated once (`DegradeSettings.validate`) and then trusted. Every output is
described by a `DegradationRecord`, written as a JSON sidecar so that `restore sr --params`
can undo exactly this degradation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from restore_cli.engine.units import image_to_tensor, sigma_to_unit, tensor_to_image
from restore_cli.errors import RestoreError
from restore_cli.io.images import ImageData, resize_alpha
from restore_cli.io.sidecar import DegradationRecord
from restore_cli.ops import degradation, rl_restore
from restore_cli.ops.kernels import fspecial_gaussian

Boundary = Literal["wrap", "reflect", "replicate"]
Down = Literal["direct", "bicubic"]
Preset = Literal["mild", "moderate", "severe"]

RL_RESTORE_KERNEL_SIZE = 21


@dataclass(frozen=True)
class DegradeSettings:
    scale: int = 1
    kernel: np.ndarray | None = None  # 2-D, sums to 1; None = no blur
    kernel_description: str | None = None
    noise: float = 0.0  # 0–255 scale
    seed: int = 0
    jpeg_quality: float | None = None
    boundary: Boundary = "wrap"
    down: Down = "direct"
    preset: Preset | None = None
    clip_noise: bool = False

    def validate(self) -> "DegradeSettings":
        if not 1 <= self.scale <= 4:
            raise RestoreError(f"--scale must be an integer from 1 to 4, got {self.scale}")
        if self.noise < 0:
            raise RestoreError(f"--noise must be ≥ 0 (0–255 scale), got {self.noise}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise RestoreError(f"--jpeg must be a quality from 1 to 100, got {self.jpeg_quality}")
        if self.preset is not None and (
            self.kernel is not None or self.noise > 0 or self.jpeg_quality is not None or self.scale != 1
        ):
            raise RestoreError("--preset draws blur, noise and JPEG itself: do not combine it with "
                               "--kernel, --noise, --jpeg or --scale")
        return self

    def resolved(self) -> "DegradeSettings":
        """Concrete settings: an RL-Restore preset is drawn once from the seed into blur, noise
        and JPEG values (blur → noise → JPEG, replicate borders, clipped noise)."""
        return self if self.preset is None else _draw_preset(self)


def _draw_preset(settings: DegradeSettings) -> DegradeSettings:
    assert settings.preset is not None
    rng = np.random.default_rng(settings.seed)
    drawn = rl_restore.draw_mixed_distortion(rng, settings.preset)
    kernel = None
    description = None
    if drawn.blur_sigma > 1e-3:
        kernel = fspecial_gaussian(RL_RESTORE_KERNEL_SIZE, drawn.blur_sigma)
        description = f"gaussian:{drawn.blur_sigma:.4f},{RL_RESTORE_KERNEL_SIZE}"
    return replace(
        settings,
        kernel=kernel,
        kernel_description=description,
        noise=float(drawn.noise_sigma),
        jpeg_quality=float(drawn.jpeg_quality),
        boundary="replicate",
        clip_noise=True,
    )


def degrade_image(image: ImageData, settings: DegradeSettings, source: str = "") -> tuple[ImageData, DegradationRecord]:
    """Degrade one image; returns the degraded image (same bit depth, channels, metadata) and
    the record of what was done. `settings` must be `resolved()`."""
    x = image_to_tensor(image.pixels).to(torch.float64)
    generator = torch.Generator().manual_seed(int(settings.seed))
    kernel = None if settings.kernel is None else torch.from_numpy(np.asarray(settings.kernel, dtype=np.float64))
    y = degradation.degrade(
        x,
        kernel,
        settings.scale,
        sigma_to_unit(settings.noise),
        down=settings.down,
        boundary=settings.boundary,
        jpeg_quality=settings.jpeg_quality,
        generator=generator,
        clip_noise=settings.clip_noise,
    )
    pixels = tensor_to_image(y)
    alpha = image.alpha
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        alpha = resize_alpha(alpha, (pixels.shape[0], pixels.shape[1]))
    out = replace(image, pixels=pixels, alpha=alpha)
    record = DegradationRecord(
        scale=settings.scale,
        kernel=settings.kernel_description or "none",
        kernel_taps=None if settings.kernel is None else np.asarray(settings.kernel, dtype=np.float64).tolist(),
        noise=float(settings.noise),
        seed=int(settings.seed),
        jpeg_quality=settings.jpeg_quality,
        boundary=settings.boundary,
        down=settings.down,
        preset=settings.preset,
        source=source,
    )
    return out, record

