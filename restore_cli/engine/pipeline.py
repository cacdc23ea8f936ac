"""Image-level tasks: from `ImageData` in to `ImageData` out, with what was done.

These glue the I/O layer's images to a `Restorer`: channel and alpha handling, the noise-level
estimate, the kernel, and the details each command reports (model, device, precision, σ).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from restore_cli.engine.restore import Restorer
from restore_cli.engine.units import image_to_tensor, sigma_to_255, sigma_to_unit, tensor_to_image
from restore_cli.io.images import ImageData, resize_alpha


def _details(restorer: Restorer) -> dict[str, Any]:
    return {
        "model": restorer.model.name,
        "device": str(restorer.placement.device),
        "precision": restorer.placement.precision,
    }


def denoise_image(restorer: Restorer, image: ImageData, sigma_255: float | None) -> tuple[ImageData, dict[str, Any]]:
    """Denoise at σ (0–255 scale), or at the per-image estimate when σ is None."""
    x = image_to_tensor(image.pixels)
    if sigma_255 is None:
        from restore_cli.ops.noise_estimation import estimate_noise_sigma

        sigma_unit = float(estimate_noise_sigma(x[0].double()))
        estimated = True
    else:
        sigma_unit = sigma_to_unit(sigma_255)
        estimated = False
    y = restorer.denoise(x, sigma_unit)
    details = _details(restorer) | {"noise": round(sigma_to_255(sigma_unit), 3), "noise_estimated": estimated}
    return replace(image, pixels=tensor_to_image(y)), details


def super_resolve_image(restorer: Restorer, image: ImageData, kernel: np.ndarray, scale: int, sigma_255: float,
                        pad_mode: str = "reflect") -> tuple[ImageData, dict[str, Any]]:
    """USRNet with a known kernel and noise level; alpha is resized to the output size."""
    x = image_to_tensor(image.pixels)
    y = restorer.super_resolve(x, kernel, scale, sigma_to_unit(sigma_255), pad_mode=pad_mode)  # type: ignore[arg-type]
    pixels = tensor_to_image(y)
    alpha = image.alpha
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        alpha = resize_alpha(alpha, (pixels.shape[0], pixels.shape[1]))
    details = _details(restorer) | {"scale": scale, "noise": sigma_255}
    return replace(image, pixels=pixels, alpha=alpha), details
