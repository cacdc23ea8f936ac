"""Tiled inference: overlapping tiles merged with a smooth weighted blend.

One mechanism serves every model. The image is first padded by `context` pixels with the
boundary mode (reflect for real images, circular for benchmark images made with wrap blur), so a
whole-image run and a tiled run see the same input. Each tile is then cut out with `context`
extra pixels on every side, run, and cropped back to its core; the context absorbs the tile's own
border effects (for USRNet, the wrap-around of its FFT data step). Neighbouring cores overlap by
`overlap` pixels and are merged with raised-cosine ramps, so no seam remains.

Sizes are in input (LR) pixels; the output is `scale` times larger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from restore_cli.engine.device import is_out_of_memory
from restore_cli.errors import RestoreError

PadMode = Literal["reflect", "replicate", "circular"]
MIN_TILE = 16


@dataclass(frozen=True)
class TileSettings:
    tile: int  # core size in input pixels; 0 = the whole image at once
    overlap: int = 16
    context: int = 0
    pad_mode: PadMode = "reflect"
    multiple: int = 1  # the model's size multiple for the tile (with context)


def pad_sides(x: Tensor, top: int, bottom: int, left: int, right: int, mode: PadMode) -> Tensor:
    """Pad each side by its amount; reflect falls back to replicate beyond what reflection reaches,
    circular repeats the image as often as needed."""
    if max(top, bottom, left, right) <= 0:
        return x
    if mode == "circular":
        h, w = x.shape[-2:]
        rows = (torch.arange(-top, h + bottom) % h).to(x.device)
        cols = (torch.arange(-left, w + right) % w).to(x.device)
        return x.index_select(-2, rows).index_select(-1, cols)
    if mode == "reflect":
        while max(top, bottom, left, right) > 0:
            h, w = x.shape[-2:]
            t, b = min(top, h - 1), min(bottom, h - 1)
            l, r = min(left, w - 1), min(right, w - 1)
            if max(t, b, l, r) <= 0:
                return F.pad(x, (left, right, top, bottom), mode="replicate")
            x = F.pad(x, (l, r, t, b), mode="reflect")
            top, bottom, left, right = top - t, bottom - b, left - l, right - r
        return x
    return F.pad(x, (left, right, top, bottom), mode=mode)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of cores of size `tile` covering [0, length), the last one snapped to the end."""
    if tile >= length:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


def _ramp(length: int, ramp_in: int, ramp_out: int, dtype: torch.dtype) -> Tensor:
    """1-D blend weights: raised-cosine rise over `ramp_in`, fall over `ramp_out`, 1 between."""
    w = torch.ones(length, dtype=dtype)
    if ramp_in > 0:
        t = (torch.arange(ramp_in, dtype=dtype) + 0.5) / ramp_in
        w[:ramp_in] = 0.5 - 0.5 * torch.cos(math.pi * t)
    if ramp_out > 0:
        t = (torch.arange(ramp_out, dtype=dtype) + 0.5) / ramp_out
        w[length - ramp_out:] = torch.minimum(w[length - ramp_out:], torch.flip(0.5 - 0.5 * torch.cos(math.pi * t), [0]))
    return w


def _round_up(value: int, multiple: int) -> int:
    return value if multiple <= 1 else -(-value // multiple) * multiple


def run_tiled(x: Tensor, fn: Callable[[Tensor], Tensor], scale: int, settings: TileSettings) -> Tensor:
    """Apply `fn` (1×C×h×w → 1×C'×sh×sw) to `x` (1×C×H×W) tile by tile; returns 1×C'×sH×sW
    float32 on the CPU. `fn` moves data to its device itself.

    The image is padded once (context on every side, plus bottom/right up to the model's size
    multiple), and tile sizes, overlaps and starts are multiples of that multiple, so every tile
    sees the same sampling grid of strided layers as a whole-image run.
    """
    _, _, h, w = x.shape
    m = max(1, settings.multiple)
    c = _round_up(settings.context, m)
    hp, wp = _round_up(h, m), _round_up(w, m)
    padded = pad_sides(x, c, c + hp - h, c, c + wp - w, settings.pad_mode)
    if settings.tile <= 0 or (settings.tile >= hp and settings.tile >= wp):
        full = _run_region(padded, fn, scale, c, hp, wp)
        return full[..., : h * scale, : w * scale]
    tile = max(_round_up(MIN_TILE, m), _round_up(settings.tile, m))
    overlap = min(_round_up(settings.overlap, m), (tile // 2) // m * m)
    ys, xs = tile_starts(hp, tile, overlap), tile_starts(wp, tile, overlap)
    out: Tensor | None = None
    weight = torch.zeros(1, 1, hp * scale, wp * scale)
    th, tw = min(tile, hp), min(tile, wp)
    for y0 in ys:
        for x0 in xs:
            region = padded[..., y0:y0 + th + 2 * c, x0:x0 + tw + 2 * c]
            core = _run_region(region, fn, scale, c, th, tw)
            if out is None:
                out = torch.zeros(1, core.shape[1], hp * scale, wp * scale)
            # Ramps only on sides that touch another tile; image borders keep full weight.
            ov = overlap * scale
            wy = _ramp(th * scale, ov if y0 > 0 else 0, ov if y0 + th < hp else 0, torch.float32)
            wx = _ramp(tw * scale, ov if x0 > 0 else 0, ov if x0 + tw < wp else 0, torch.float32)
            wmap = (wy[:, None] * wx[None, :])[None, None]
            sy, sx = y0 * scale, x0 * scale
            out[..., sy:sy + th * scale, sx:sx + tw * scale] += core * wmap
            weight[..., sy:sy + th * scale, sx:sx + tw * scale] += wmap
    assert out is not None
    return (out / weight.clamp_min(1e-12))[..., : h * scale, : w * scale]


def _run_region(region: Tensor, fn: Callable[[Tensor], Tensor], scale: int, c: int, core_h: int, core_w: int) -> Tensor:
    """Run `fn` on a padded region (core + context) and return the core of the output."""
    result = fn(region).float().cpu()
    return result[..., c * scale:(c + core_h) * scale, c * scale:(c + core_w) * scale]


def run_with_oom_backoff(x: Tensor, fn: Callable[[Tensor], Tensor], scale: int, settings: TileSettings,
                         on_retry: Callable[[int, int], None] | None = None) -> tuple[Tensor, TileSettings]:
    """`run_tiled`, halving the tile after an out-of-memory error until it fits or gets too small."""
    while True:
        try:
            return run_tiled(x, fn, scale, settings), settings
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            h, w = x.shape[-2:]
            current = settings.tile if settings.tile > 0 else max(h, w)
            smaller = max(MIN_TILE, _round_up(current // 2, 8))
            if smaller >= current or current <= MIN_TILE:
                raise RestoreError(f"out of memory even with {current}-pixel tiles") from None
            if on_retry is not None:
                on_retry(current, smaller)
            settings = TileSettings(smaller, settings.overlap, settings.context, settings.pad_mode, settings.multiple)


def auto_tile_size(budget: int, bytes_per_pixel: float, scale: int, context: int, largest: int = 2048) -> int:
    """The largest square core whose run (with context, at `bytes_per_pixel` of the model's
    output-resolution activations) fits in `budget` bytes."""
    side_out = math.sqrt(max(budget / max(bytes_per_pixel, 1.0), 1.0))
    side_in = int(side_out / scale) - 2 * context
    side_in = max(MIN_TILE * 4, min(largest, side_in))
    return side_in - side_in % 8
