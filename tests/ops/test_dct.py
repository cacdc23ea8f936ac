"""Tests for restore_cli.ops.dct: DCT against scipy.fft, SFM masks (ANCHORS §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restore_cli.ops.dct import (
    apply_frequency_mask,
    dct2,
    dct_matrix,
    draw_band_radii,
    draw_sfm_mask,
    draw_sfm_masks,
    idct2,
    radial_band_mask,
    sfm,
    sfm_batch,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- DCT vs scipy


@pytest.mark.parametrize("shape", [(5, 7), (3, 16, 16), (2, 3, 9, 4), (1, 1), (4, 1, 12)])
def test_dct2_matches_scipy_dctn(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape)
    want = scipy.fft.dctn(a, type=2, norm="ortho", axes=(-2, -1))
    got = dct2(torch.from_numpy(a))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 7), (3, 16, 16), (2, 3, 9, 4)])
def test_idct2_matches_scipy_idctn(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape)
    want = scipy.fft.idctn(a, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(idct2(torch.from_numpy(a)).numpy(), want, rtol=0, atol=1e-12)


def test_dct_matrix_is_orthogonal_and_matches_scipy_1d() -> None:
    c = dct_matrix(13)
    np.testing.assert_allclose((c @ c.T).numpy(), np.eye(13), atol=1e-13)
    np.testing.assert_allclose(c.numpy(), scipy.fft.dct(np.eye(13), type=2, norm="ortho", axis=0), atol=1e-13)


def test_dct2_float32_stays_float32_and_is_accurate() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((3, 96, 96)).astype(np.float32)
    got = dct2(torch.from_numpy(a))
    assert got.dtype == torch.float32
    want = scipy.fft.dctn(a.astype(np.float64), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(got.numpy(), want, atol=2e-4)


def test_dct2_rejects_integer_and_1d() -> None:
    with pytest.raises(TypeError):
        dct2(torch.zeros(4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError):
        dct2(torch.zeros(4))


@settings(max_examples=40, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    seed=st.integers(0, 2**31 - 1),
)
def test_roundtrip_and_parseval(lead: list[int], h: int, w: int, seed: int) -> None:
    """idct2(dct2(x)) == x and ‖dct2(x)‖ = ‖x‖ (orthonormal transform)."""
    x = torch.randn((*lead, h, w), generator=_gen(seed), dtype=torch.float64)
    c = dct2(x)
    torch.testing.assert_close(idct2(c), x, rtol=0, atol=1e-12)
    assert math.isclose(float((c * c).sum()), float((x * x).sum()), rel_tol=1e-12, abs_tol=1e-12)


# ---------------------------------------------------------------- masks


def test_radial_band_mask_matches_definition() -> None:
    h, w, a1, a2 = 9, 13, 2.0, 5.0  # radius 5 exactly (3,4) and 2 exactly (0,2) stay kept
    want = np.ones((h, w))
    for i in range(h):
        for j in range(w):
            if a1 < math.sqrt(i * i + j * j) < a2:
                want[i, j] = 0.0
    got = radial_band_mask(h, w, a1, a2)
    assert got.dtype == torch.float32 and got.shape == (h, w)
    np.testing.assert_array_equal(got.numpy(), want)
    assert got[3, 4] == 1 and got[0, 2] == 1 and got[0, 0] == 1 and got[2, 2] == 0


def test_band_mask_removes_band_energy_and_keeps_the_rest() -> None:
    x = torch.rand((3, 40, 56), generator=_gen(3), dtype=torch.float64)
    mask = radial_band_mask(40, 56, 10.5, 30.0, dtype=torch.float64)
    out = apply_frequency_mask(x, mask)
    cx, co = dct2(x), dct2(out)
    band = mask == 0
    assert band.sum() > 100
    energy_in = float((cx[:, band] ** 2).sum())
    energy_out = float((co[:, band] ** 2).sum())
    assert energy_out <= 0.01 * energy_in
    assert energy_out < 1e-20
    torch.testing.assert_close(co[:, ~band], cx[:, ~band], rtol=0, atol=1e-12)


def test_apply_frequency_mask_float32_band() -> None:
    x = torch.rand((1, 3, 48, 48), generator=_gen(4))
    mask = radial_band_mask(48, 48, 20.0, 50.0)
    out = apply_frequency_mask(x, mask)
    assert out.dtype == torch.float32 and out.shape == x.shape
    cx, co = dct2(x.double()), dct2(out.double())
    band = mask == 0
    assert float((co[..., band] ** 2).sum()) <= 0.01 * float((cx[..., band] ** 2).sum())
    torch.testing.assert_close(co[..., ~band], cx[..., ~band], rtol=0, atol=1e-5)


def test_mask_shared_by_channels_and_per_sample_masks() -> None:
    x = torch.rand((2, 3, 16, 20), generator=_gen(5), dtype=torch.float64)
    masks = draw_sfm_masks(2, 16, 20, "random", _gen(6)).double()
    out = apply_frequency_mask(x, masks)
    for n in range(2):
        for c in range(3):
            ref = scipy.fft.idctn(
                scipy.fft.dctn(x[n, c].numpy(), norm="ortho") * masks[n].numpy(), norm="ortho"
            )
            np.testing.assert_allclose(out[n, c].numpy(), ref, atol=1e-12)


def test_central_radii_statistics() -> None:
    h, w = 64, 48
    r_max = math.sqrt(h * h + w * w)
    a1, a2 = draw_band_radii(20000, h, w, "central", _gen(7))
    assert bool((a1 <= a2).all()) and float(a1.min()) >= 0 and float(a2.max()) <= r_max
    # min and max of two U(0, r_max): means r_max/3 and 2r_max/3, std r_max/sqrt(18).
    tol = 5 * (r_max / math.sqrt(18)) / math.sqrt(20000)
    assert abs(float(a1.mean()) - r_max / 3) < tol
    assert abs(float(a2.mean()) - 2 * r_max / 3) < tol
    # the union of both draws is uniform on [0, r_max]
    both = torch.cat([a1, a2]) / r_max
    hist = torch.histc(both, bins=10, min=0.0, max=1.0) / both.numel()
    assert float((hist - 0.1).abs().max()) < 0.01


def test_targeted_radii_statistics() -> None:
    h, w, center, spread = 64, 64, 0.85, 0.15
    r_max = math.sqrt(h * h + w * w)
    r_c, s_d = center * r_max, spread * r_max
    a1, a2 = draw_band_radii(20000, h, w, "targeted", _gen(8), center=center, spread=spread)
    assert bool((a1 <= r_c).all()) and bool((a2 >= r_c).all())
    d1, d2 = r_c - a1, a2 - r_c
    half_normal_mean = s_d * math.sqrt(2 / math.pi)
    half_normal_std = s_d * math.sqrt(1 - 2 / math.pi)
    tol = 5 * half_normal_std / math.sqrt(20000)
    assert abs(float(d1.mean()) - half_normal_mean) < tol
    assert abs(float(d2.mean()) - half_normal_mean) < tol
    assert abs(float((d1 * d1).mean()) - s_d**2) < 0.05 * s_d**2  # E|N|² = σ²
    assert abs(float(torch.corrcoef(torch.stack([d1, d2]))[0, 1])) < 0.03  # independent draws


@pytest.mark.parametrize("mode", ["central", "targeted"])
def test_band_masks_follow_the_drawn_radii(mode: str) -> None:
    h, w = 24, 32
    a1, a2 = draw_band_radii(5, h, w, mode, _gen(9))
    masks = draw_sfm_masks(5, h, w, mode, _gen(9))
    for k in range(5):
        torch.testing.assert_close(masks[k], radial_band_mask(h, w, float(a1[k]), float(a2[k])))
    single = draw_sfm_mask(h, w, mode, _gen(9))
    torch.testing.assert_close(single, masks[0])


def test_random_mode_keeps_half_iid() -> None:
    m = draw_sfm_masks(50, 64, 64, "random", _gen(10))
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    frac = float(m.mean())
    assert abs(frac - 0.5) < 0.005
    assert not torch.equal(m[0], m[1])


@pytest.mark.parametrize("mode", ["central", "targeted", "random"])
def test_masks_reproducible_per_seed(mode: str) -> None:
    a = draw_sfm_masks(8, 32, 32, mode, _gen(11))
    b = draw_sfm_masks(8, 32, 32, mode, _gen(11))
    c = draw_sfm_masks(8, 32, 32, mode, _gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_invalid_arguments() -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            draw_sfm_mask(16, 16, "targeted", _gen(0), center=bad)
    with pytest.raises(ValueError):
        draw_sfm_mask(16, 16, "sideways", _gen(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sfm_batch(torch.zeros(2, 1, 8, 8), 1.5, "central", _gen(0))
    with pytest.raises(ValueError):
        apply_frequency_mask(torch.zeros(1, 8, 8), torch.ones(8, 9))


# ---------------------------------------------------------------- sfm / sfm_batch


def test_sfm_does_not_mutate_and_applies_its_mask() -> None:
    x = torch.rand((3, 32, 32), generator=_gen(13), dtype=torch.float64)
    before = x.clone()
    out, mask = sfm(x, "targeted", _gen(14))
    assert torch.equal(x, before)
    assert out.shape == x.shape and mask.shape == (32, 32)
    assert torch.equal(mask, draw_sfm_mask(32, 32, "targeted", _gen(14)))
    torch.testing.assert_close(dct2(out), dct2(x) * mask.double(), rtol=0, atol=1e-12)
    out4, _ = sfm(x.unsqueeze(0), "targeted", _gen(14))
    torch.testing.assert_close(out4[0], out, rtol=0, atol=0)


def test_sfm_batch_unchosen_unchanged_and_chosen_masked() -> None:
    n, h, w, rate, seed = 12, 16, 16, 0.5, 15
    x = torch.rand((n, 3, h, w), generator=_gen(16)) + 0.1  # no zero image anywhere
    before = x.clone()
    out = sfm_batch(x, rate, "central", _gen(seed))
    assert torch.equal(x, before)
    # Reproduce the documented draw order: N selection uniforms, then one mask per chosen sample.
    g = _gen(seed)
    chosen = torch.rand(n, generator=g) < rate
    masks = draw_sfm_masks(int(chosen.sum()), h, w, "central", g)
    assert 0 < int(chosen.sum()) < n
    for k in torch.nonzero(~chosen).flatten().tolist():
        assert torch.equal(out[k], x[k])  # passed through, not zeroed
    for m, k in enumerate(torch.nonzero(chosen).flatten().tolist()):
        torch.testing.assert_close(out[k], apply_frequency_mask(x[k], masks[m]))


def test_sfm_batch_rate_statistics() -> None:
    n, rate = 3000, 0.3
    x = torch.rand((n, 1, 8, 8), generator=_gen(17))
    out = sfm_batch(x, rate, "random", _gen(18))
    changed = (out - x).abs().flatten(1).amax(dim=1) > 1e-6
    frac = float(changed.float().mean())
    assert abs(frac - rate) < 5 * math.sqrt(rate * (1 - rate) / n)


def test_sfm_batch_rate_zero_and_one() -> None:
    x = torch.rand((6, 3, 12, 12), generator=_gen(19))
    assert torch.equal(sfm_batch(x, 0.0, "targeted", _gen(0)), x)
    out = sfm_batch(x, 1.0, "random", _gen(0))
    assert bool(((out - x).abs().flatten(1).amax(dim=1) > 1e-6).all())


def test_sfm_batch_reproducible() -> None:
    x = torch.rand((8, 3, 24, 24), generator=_gen(20))
    a = sfm_batch(x, 0.5, "targeted", _gen(21))
    b = sfm_batch(x, 0.5, "targeted", _gen(21))
    assert torch.equal(a, b)
