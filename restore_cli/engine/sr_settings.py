"""The settings of one `restore sr` run: scale, kernel, noise and boundary, from options and an
optional `restore degrade` sidecar (explicit options win)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restore_cli.errors import RestoreError

DEFAULT_SCALE = 4
REAL_IMAGE_NOISE = 2.0  # USRNet real-image recipe: "0.5~3 for clean images" (0–255 scale)
PAD_MODE_FOR_BOUNDARY = {"reflect": "reflect", "wrap": "circular", "replicate": "replicate"}


@dataclass(frozen=True)
class SrSettings:
    scale: int
    kernel: np.ndarray
    kernel_description: str
    noise: float  # 0–255 scale
    pad_mode: str  # reflect | circular | replicate


def resolve_sr_settings(*, scale: int | None, kernel: str | None, kernel_width: float | None, noise: float | None,
                        params: Path | None, boundary: str | None) -> SrSettings:
    from restore_cli.io.kernel_files import load_kernel
    from restore_cli.ops.kernels import real_image_kernel

    taps: np.ndarray | None = None
    description: str | None = None
    if params is not None:
        from restore_cli.io.sidecar import read_sidecar

        record = read_sidecar(params)
        if record.down != "direct":
            raise RestoreError(f"the degradation used --down {record.down}; USRNet undoes direct decimation only "
                               "(for bicubic inputs give --kernel kernels_bicubicx234.mat:N)", params)
        scale = record.scale if scale is None else scale
        noise = record.noise if noise is None else noise
        if boundary is None:
            boundary = "wrap" if record.boundary == "wrap" else "reflect"
        if kernel is None:
            if record.kernel_taps is not None:
                taps = np.asarray(record.kernel_taps, dtype=np.float64)
                description = record.kernel
            else:
                taps = np.ones((1, 1))
                description = "delta (no blur)"
    scale = DEFAULT_SCALE if scale is None else scale
    if not 1 <= scale <= 4:
        raise RestoreError(f"--scale must be from 1 to 4, got {scale}")
    if kernel is not None:
        if kernel_width is not None:
            raise RestoreError("--kernel-width applies to the default kernel only; do not combine it with --kernel")
        taps, description = load_kernel(kernel)
    elif taps is None:
        taps = real_image_kernel(scale, kernel_width)
        width = "default" if kernel_width is None else f"{kernel_width:g}"
        description = f"real-image gaussian (width {width}, shifted for ×{scale})"
    noise = REAL_IMAGE_NOISE if noise is None else float(noise)
    boundary = boundary or "reflect"
    return SrSettings(scale, np.asarray(taps, dtype=np.float64), description or "", noise, PAD_MODE_FOR_BOUNDARY[boundary])
