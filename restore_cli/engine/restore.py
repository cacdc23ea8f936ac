"""Running a model on images: placement, channel adaptation, tiling, and the two tasks.

`Restorer` holds one model placed on its device with its precision; `denoise` and
`super_resolve` take a 1×C×H×W float tensor in [0, 1] and return the restored tensor (float32,
CPU, not clipped). Noise levels here are on the [0, 1] scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from restore_cli.engine.device import Placement, available_memory_bytes
from restore_cli.engine.registry import ResolvedModel
from restore_cli.engine.tiling import PadMode, TileSettings, auto_tile_size, run_with_oom_backoff
from restore_cli.errors import RestoreError

SIZE_MULTIPLE = 8  # the ResUNet's three stride-2 stages
CPU_TILE_BUDGET = 768 << 20


@dataclass(frozen=True)
class TileRequest:
    """`--tile` (None = auto, 0 = whole image, N = core size in input pixels) and `--tile-overlap`."""

    tile: int | None = None
    overlap: int = 32


def _first_width(config: dict) -> int:
    nc = config.get("nc", (64,))
    return int(nc[0])


def activation_bytes_per_pixel(model: ResolvedModel, precision: str) -> float:
    """Peak activation memory per output pixel: about ten full-resolution feature maps of the
    first ResUNet width alive at once, plus USRNet's complex FFT terms. Calibrated against
    measured peak RSS (USRNet-tiny ≈ 900 B/px, a 32-wide denoiser ≈ 900–1260 B/px)."""
    element = 2 if precision in ("bf16", "fp16") else 4
    per_pixel = 10 * _first_width(model.config) * element
    if model.arch == "usrnet":
        per_pixel += 256
    return float(per_pixel)


def tile_memory_budget(device: torch.device) -> int:
    """Memory one tile may use: half the free GPU memory, or on the CPU a quarter of the
    available memory capped at 768 MiB (a laptop keeps working; larger tiles gain little)."""
    free = available_memory_bytes(device)
    if device.type == "cuda":
        return free // 2
    return min(free // 4, CPU_TILE_BUDGET)


class Restorer:
    """One model on its device, ready to run tiled inference."""

    def __init__(self, model: ResolvedModel, placement: Placement, tiles: TileRequest = TileRequest(),
                 log: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.placement = placement
        self.tiles = tiles
        self.log = log or (lambda message: None)
        self.module = model.module.to(placement.device).eval().to(memory_format=torch.channels_last)

    # -- plumbing -------------------------------------------------------------------------
    def _adapt_in(self, x: Tensor) -> tuple[Tensor, int]:
        """Gray images run through colour models as three equal channels (and back)."""
        channels = x.shape[1]
        if channels == self.model.channels:
            return x, channels
        if channels == 1 and self.model.channels == 3:
            return x.expand(-1, 3, -1, -1), channels
        raise RestoreError(
            f"model '{self.model.name}' takes {self.model.channels}-channel images, this one has {channels}"
        )

    @staticmethod
    def _adapt_out(y: Tensor, channels: int) -> Tensor:
        return y.mean(dim=1, keepdim=True) if channels == 1 and y.shape[1] != 1 else y

    def _settings(self, x: Tensor, scale: int, context: int, pad_mode: PadMode) -> TileSettings:
        tile = self.tiles.tile
        if tile is None:
            budget = tile_memory_budget(self.placement.device)
            tile = auto_tile_size(budget, activation_bytes_per_pixel(self.model, self.placement.precision), scale, context)
        # The prior runs at the output resolution, which must be a multiple of 8 there.
        multiple = SIZE_MULTIPLE // math.gcd(SIZE_MULTIPLE, scale)
        whole = tile <= 0 or tile >= max(x.shape[-2:])
        if whole and pad_mode == "circular":
            context = 0  # a periodic image needs no margin: the FFT's wrap-around is its boundary
        return TileSettings(tile=0 if whole else tile, overlap=self.tiles.overlap, context=context,
                            pad_mode=pad_mode, multiple=multiple)

    def _run(self, x: Tensor, forward: Callable[[Tensor], Tensor], scale: int, context: int, pad_mode: PadMode) -> Tensor:
        placement = self.placement

        def fn(region: Tensor) -> Tensor:
            region = region.to(placement.device, torch.float32).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), placement.autocast():
                out = forward(region)
            return out.float()

        x, channels = self._adapt_in(x)
        settings = self._settings(x, scale, context, pad_mode)
        self.log(f"tiles: {settings.tile or 'off'} (overlap {settings.overlap}, context {settings.context}, {pad_mode})")
        y, used = run_with_oom_backoff(
            x, fn, scale, settings,
            on_retry=lambda old, new: self.log(f"out of memory with {old}-pixel tiles; retrying with {new}"),
        )
        return self._adapt_out(y, channels)

    # -- tasks ----------------------------------------------------------------------------
    def denoise(self, x: Tensor, sigma: float) -> Tensor:
        """Non-blind denoising at noise level `sigma` ([0, 1] scale)."""
        sigma_map = torch.full((1, 1, 1, 1), float(sigma), device=self.placement.device)
        return self._run(x, lambda r: self.module(r, sigma_map), scale=1, context=32, pad_mode="reflect")

    def super_resolve(self, x: Tensor, kernel: np.ndarray, scale: int, sigma: float, pad_mode: PadMode = "reflect") -> Tensor:
        """USRNet: x LR 1×C×h×w, known kernel (2-D, sums to 1), scale 1–4, noise σ ([0, 1])."""
        if scale not in self.model.scales:
            raise RestoreError(f"model '{self.model.name}' handles scales {self.model.scales}, not {scale}")
        device = self.placement.device
        k = torch.as_tensor(np.asarray(kernel, dtype=np.float32), device=device)[None, None]
        sigma_t = torch.full((1, 1, 1, 1), float(sigma), device=device)
        # Context in LR pixels: the kernel's reach plus a margin for the FFT's wrap-around to fade.
        reach = math.ceil(max(kernel.shape) / (2 * scale))
        context = max(16, 2 * reach + 8)
        return self._run(x, lambda r: self.module(r, k, scale, sigma_t), scale=scale, context=context, pad_mode=pad_mode)
