"""Tiled inference agrees with the whole-image run (issue 3 thresholds), and the tiling
mechanics (coverage, blend weights, padding, OOM back-off) behave."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from restore_cli.engine.tiling import TileSettings, pad_sides, run_tiled, run_with_oom_backoff, tile_starts
from restore_cli.errors import RestoreError
from restore_cli.models.architectures import build_model
from restore_cli.ops.kernels import fspecial_gaussian


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def smooth_image(h: int, w: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, h // 8 + 2, w // 8 + 2, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (x + 0.05 * torch.rand(1, channels, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (64, 64, 8), (65, 32, 16), (10, 32, 4)])
def test_tile_starts_cover_everything(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length


def test_pad_sides_circular_matches_numpy_wrap() -> None:
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    got = pad_sides(x, 3, 9, 2, 11, "circular")
    want = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 9), (2, 11)), mode="wrap")
    assert np.array_equal(got.numpy(), want)


def test_pad_sides_reflect_beyond_image_size_falls_back_without_error() -> None:
    x = torch.rand(1, 1, 4, 4)
    got = pad_sides(x, 10, 10, 10, 10, "reflect")
    assert got.shape == (1, 1, 24, 24)
    # The first level of padding is a true reflection.
    assert torch.equal(got[..., 10:14, 9], x[..., :, 1])


def test_identity_function_is_reproduced_exactly_by_tiles() -> None:
    x = torch.rand(1, 3, 70, 90)
    y = run_tiled(x, lambda r: r, 1, TileSettings(tile=24, overlap=8, context=4, multiple=8))
    assert torch.allclose(y, x, atol=1e-6)


def test_scaled_function_blends_to_the_whole_image_result() -> None:
    x = torch.rand(1, 1, 37, 41)
    up = lambda r: r.repeat_interleave(3, dim=-2).repeat_interleave(3, dim=-1)  # noqa: E731
    y = run_tiled(x, up, 3, TileSettings(tile=16, overlap=8, context=2))
    assert y.shape == (1, 1, 111, 123)
    assert torch.allclose(y, up(x), atol=1e-6)


@pytest.mark.parametrize("tile", [24, 40, 64])
def test_denoiser_tiled_matches_untiled_to_50_db(tile: int) -> None:
    torch.manual_seed(0)
    model = build_model("resunet-denoiser", {"channels": 3, "nc": (16, 32, 64, 64), "nb": 2}).eval()
    x = smooth_image(96, 120)
    sigma = torch.full((1, 1, 1, 1), 25 / 255)

    def fn(region: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(region, sigma)

    whole = run_tiled(x, fn, 1, TileSettings(tile=0, context=32, multiple=8))
    tiled = run_tiled(x, fn, 1, TileSettings(tile=tile, overlap=16, context=32, multiple=8))
    assert psnr_db(whole, tiled) >= 50.0


@pytest.mark.parametrize("scale,tile", [(2, 24), (4, 16), (3, 24), (1, 40)])
def test_usrnet_tiled_matches_untiled_to_40_db(scale: int, tile: int) -> None:
    torch.manual_seed(0)
    model = build_model("usrnet", {"n_iter": 2, "h_nc": 8, "nc": (4, 8, 8, 8), "nb": 1}).eval()
    k = torch.from_numpy(fspecial_gaussian(25, 1.2)).float()[None, None]
    sigma = torch.full((1, 1, 1, 1), 2 / 255)
    x = smooth_image(48, 56)

    def fn(region: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(region, k, scale, sigma)

    reach = math.ceil(25 / (2 * scale))
    context = max(16, 2 * reach + 8)
    multiple = 8 // math.gcd(8, scale)
    whole = run_tiled(x, fn, scale, TileSettings(tile=0, context=context, multiple=multiple))
    tiled = run_tiled(x, fn, scale, TileSettings(tile=tile, overlap=8, context=context, multiple=multiple))
    assert whole.shape == (1, 3, 48 * scale, 56 * scale)
    assert psnr_db(whole, tiled) >= 40.0


def test_oom_backoff_halves_the_tile_and_retries() -> None:
    x = torch.rand(1, 1, 64, 64)
    seen: list[int] = []

    def fn(region: torch.Tensor) -> torch.Tensor:
        seen.append(region.shape[-1])
        if region.shape[-1] > 40:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return region

    retries: list[tuple[int, int]] = []
    y, used = run_with_oom_backoff(x, fn, 1, TileSettings(tile=64, overlap=8, context=4),
                                   on_retry=lambda a, b: retries.append((a, b)))
    assert torch.allclose(y, x, atol=1e-6)
    assert retries and retries[0][0] == 64 and used.tile < 64


def test_oom_backoff_gives_up_with_a_clear_error() -> None:
    def fn(region: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(RestoreError, match="out of memory"):
        run_with_oom_backoff(torch.rand(1, 1, 64, 64), fn, 1, TileSettings(tile=64, overlap=8))


def test_other_errors_are_not_swallowed() -> None:
    def fn(region: torch.Tensor) -> torch.Tensor:
        raise ValueError("bug")

    with pytest.raises(ValueError):
        run_with_oom_backoff(torch.rand(1, 1, 32, 32), fn, 1, TileSettings(tile=16))


def test_auto_tile_size_follows_the_budget() -> None:
    from restore_cli.engine.tiling import auto_tile_size

    big = auto_tile_size(768 << 20, 900.0, 4, 16)
    small = auto_tile_size(64 << 20, 900.0, 4, 16)
    assert big % 8 == 0 and small % 8 == 0 and small < big
    # The tile's run (core + context, at the output scale) stays within the budget.
    assert ((big + 2 * 16) * 4) ** 2 * 900.0 <= 768 << 20
    assert auto_tile_size(1 << 40, 900.0, 1, 0) == 2048  # capped
