"""`restore degrade`: y = (x ⊗ k)↓s + n, then JPEG (USRNet Eq. 1), or an RL-Restore preset.

The settings are validated once (`DegradeSettings.validate`) and then trusted. Every output is
described by a `DegradationRecord`, written as a JSON sidecar so that `restore sr --params`
can undo exactly this degradation.

With s > 1 the input is first cropped to a multiple of s (bottom rows and right columns dropped,
"modcrop"), as SR benchmarks do: the output is exactly H/s × W/s of the cropped input, which is
the high-resolution image the output pairs with (and what `restore sr` gives back), and the
circular-blur model holds on it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from restore_cli.engine.units import image_to_tensor, sigma_to_unit, tensor_to_image
from restore_cli.errors import RestoreError
from restore_cli.io.images import ImageData
from restore_cli.io.sidecar import DegradationRecord
from restore_cli.ops import degradation, resize, rl_restore
from restore_cli.ops.kernels import fspecial_gaussian

Boundary = Literal["wrap", "reflect", "replicate"]
Down = Literal["direct", "bicubic"]
Preset = rl_restore.Severity

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


def modcrop_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """The largest size ≤ (height, width) that is a multiple of `scale` on both axes."""
    return height - height % scale, width - width % scale


def crop_to_multiple(image: ImageData, scale: int, source: str = "") -> ImageData:
    """The image (and its alpha) cropped to a multiple of `scale`: bottom rows and right columns
    go, as the benchmarks' modcrop does. Unchanged when already a multiple."""
    height, width = modcrop_size(image.height, image.width, scale)
    if height == 0 or width == 0:
        raise RestoreError(f"image is {image.width}×{image.height} pixels, smaller than --scale {scale}", source or None)
    if (height, width) == (image.height, image.width):
        return image
    alpha = None if image.alpha is None else image.alpha[:height, :width]
    return replace(image, pixels=image.pixels[:height, :width], alpha=alpha)


def _matlab_uint8_bicubic(image: ImageData, scale: int) -> torch.Tensor:
    """MATLAB imresize(x, 1/s) of an 8-bit image in its integer class (rounded after each axis),
    which is how the "BI" benchmark LR images were made: it reproduces them bit for bit, where
    the float path is off by one grey level on ~10 % of pixels."""
    x = image_to_tensor(image.pixels).to(torch.float64)
    levels = torch.round(x * 255.0).to(torch.uint8)  # exact: the values came from an 8-bit file
    return resize.matlab_imresize(levels, scale=1.0 / scale).to(torch.float64) / 255.0


def _downsampled_alpha(alpha: np.ndarray, settings: DegradeSettings) -> np.ndarray:
    """The alpha plane (H×W) on the output's pixel grid: the colour's down-sampler without blur,
    noise or JPEG, so that colour and alpha stay aligned (unchanged at s = 1)."""
    if settings.scale == 1:
        return alpha
    if settings.down == "direct":
        return np.ascontiguousarray(alpha[:: settings.scale, :: settings.scale])
    plane = torch.from_numpy(np.asarray(alpha, dtype=np.float64))
    return resize.matlab_imresize(plane, scale=1.0 / settings.scale).clamp(0.0, 1.0).to(torch.float32).numpy()


def degrade_image(image: ImageData, settings: DegradeSettings, source: str = "") -> tuple[ImageData, DegradationRecord]:
    """Degrade one image; returns the degraded image (same bit depth, channels, metadata) and
    the record of what was done. `settings` must be `resolved()`. With s > 1 the image is first
    cropped to a multiple of s (`crop_to_multiple`)."""
    image = crop_to_multiple(image, settings.scale, source)
    generator = torch.Generator().manual_seed(int(settings.seed))
    kernel = None if settings.kernel is None else torch.from_numpy(np.asarray(settings.kernel, dtype=np.float64))
    if settings.down == "bicubic" and kernel is None and settings.scale > 1 and image.bit_depth == 8:
        x, scale, down = _matlab_uint8_bicubic(image, settings.scale), 1, "direct"  # then noise, JPEG
    else:
        x, scale, down = image_to_tensor(image.pixels).to(torch.float64), settings.scale, settings.down
    y = degradation.degrade(
        x,
        kernel,
        scale,
        sigma_to_unit(settings.noise),
        down=down,
        boundary=settings.boundary,
        jpeg_quality=settings.jpeg_quality,
        generator=generator,
        clip_noise=settings.clip_noise,
    )
    pixels = tensor_to_image(y)
    alpha = None if image.alpha is None else _downsampled_alpha(image.alpha, settings)
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

