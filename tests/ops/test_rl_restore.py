"""RL-Restore mixed-distortion recipe: level tables, severity windows, sampling and order."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import ndimage

from restore_cli.ops.degradation import add_gaussian_noise, blur, jpeg_compress
from restore_cli.ops.kernels import fspecial_gaussian
from restore_cli.ops.rl_restore import (
    SEVERITY_WINDOWS,
    MixedDistortion,
    apply_mixed_distortion,
    blur_sigma_interval,
    draw_mixed_distortion,
    jpeg_quality_interval,
    level_triples,
    noise_sigma_interval,
)


def test_severity_windows_and_triple_counts() -> None:
    assert SEVERITY_WINDOWS == {"light": (1, 4), "mild": (9, 11), "moderate": (12, 17), "severe": (18, 20)}
    counts = {s: len(level_triples(s)) for s in SEVERITY_WINDOWS}
    assert counts == {"light": 20, "mild": 163, "moderate": 434, "severe": 163}
    # light: no level above 4, and the nearly clean triple is in it
    assert max(max(t) for t in level_triples("light")) == 4 and (1, 1, 1) in level_triples("light")
    for severity, (lo, hi) in SEVERITY_WINDOWS.items():
        triples = level_triples(severity)
        assert len(set(triples)) == len(triples)
        assert all(lo <= sum(t) - 2 <= hi and all(1 <= v <= 10 for v in t) for t in triples)
    with pytest.raises(ValueError):
        level_triples("extreme")


def test_level_intervals() -> None:
    assert blur_sigma_interval(1) == (0.0, 0.5) and blur_sigma_interval(10) == (4.5, 5.0)
    assert noise_sigma_interval(1) == (0.0, 5.0) and noise_sigma_interval(10) == (45.0, 50.0)
    assert jpeg_quality_interval(1) == (80.0, 100.0)
    assert jpeg_quality_interval(5) == (35.0, 40.0)
    assert jpeg_quality_interval(10) == (10.0, 15.0)
    with pytest.raises(ValueError):
        blur_sigma_interval(11)


def _levels_of(d: MixedDistortion) -> tuple[int, int, int]:
    """The level whose interval holds each parameter (independent of the sampler's bookkeeping)."""
    table = [100, 80, 60, 50, 40, 35, 30, 25, 20, 15, 10]
    lb = max(1, math.ceil(d.blur_sigma / 0.5))
    ln = max(1, math.ceil(d.noise_sigma / 5.0))
    lj = next(i for i in range(1, 11) if table[i] <= d.jpeg_quality <= table[i - 1])
    return lb, ln, lj


@pytest.mark.parametrize("severity", ["light", "mild", "moderate", "severe"])
def test_draws_fall_in_the_window_and_cover_it(severity: str) -> None:
    rng = np.random.default_rng(0)
    draws = [draw_mixed_distortion(rng, severity) for _ in range(1500)]
    allowed = set(level_triples(severity))
    levels = [_levels_of(d) for d in draws]
    assert set(levels) <= allowed
    # uniform over triples: the blur-level marginal follows the triple counts
    expected = Counter(t[0] for t in allowed)
    seen = Counter(lv[0] for lv in levels)
    for lb in range(1, 11):
        assert abs(seen[lb] / len(draws) - expected[lb] / len(allowed)) < 0.04
    # deterministic for a seed
    assert draw_mixed_distortion(np.random.default_rng(0), severity) == draws[0]
    assert draw_mixed_distortion(np.random.default_rng(1), severity) != draws[0]


def _image(channels: int = 3) -> torch.Tensor:
    ramp = torch.linspace(0.1, 0.9, 48)
    base = 0.5 * ramp.reshape(1, 1, 1, 48) + 0.5 * ramp.reshape(1, 1, 48, 1)
    stripes = 0.2 * (torch.arange(48).reshape(1, 1, 1, 48) % 6 < 3).float()
    return (base * 0.8 + stripes).expand(1, channels, 48, 48).contiguous()


def test_blur_uses_replicate_borders_and_21_tap_gaussian() -> None:
    x = _image(1)
    d = MixedDistortion(blur_sigma=2.0, noise_sigma=0.0, jpeg_quality=100.0)
    y = apply_mixed_distortion(x, d)
    ref = ndimage.convolve(x[0, 0].double().numpy(), fspecial_gaussian(21, 2.0), mode="nearest")
    assert np.abs(y[0, 0].double().numpy() - ref).mean() < 1.0 / 255  # JPEG q100 only
    wrapped = ndimage.convolve(x[0, 0].double().numpy(), fspecial_gaussian(21, 2.0), mode="wrap")
    assert np.abs(y[0, 0].double().numpy() - wrapped).max() > 0.05  # the border rule matters


def test_noise_is_clipped_and_order_is_blur_noise_jpeg() -> None:
    # clipped AWGN on a black image has mean σ/√(2π) > 0 (unclipped would be 0)
    black = torch.zeros(1, 1, 64, 64)
    d = MixedDistortion(blur_sigma=0.0, noise_sigma=50.0, jpeg_quality=100.0)
    y = apply_mixed_distortion(black, d, generator=torch.Generator().manual_seed(0))
    assert abs(y.mean().item() - (50 / 255) / math.sqrt(2 * math.pi)) < 0.01
    # the full chain equals blur → clipped noise → JPEG composed by hand
    x = _image(3)
    d = MixedDistortion(blur_sigma=1.3, noise_sigma=12.0, jpeg_quality=37.6)
    y = apply_mixed_distortion(x, d, generator=torch.Generator().manual_seed(3))
    b = blur(x, fspecial_gaussian(21, 1.3), "replicate")
    n = add_gaussian_noise(b, 12.0 / 255, generator=torch.Generator().manual_seed(3), clip=True)
    torch.testing.assert_close(y, jpeg_compress(n, 38))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    # JPEG last: outputs are decoded 8-bit values
    assert torch.equal(torch.round(y * 255), y * 255)
