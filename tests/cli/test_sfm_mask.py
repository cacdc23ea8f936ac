"""`restore sfm-mask` end to end, checked in the DCT domain with scipy.fft.dctn(norm='ortho').

What the written file must satisfy, per channel, with X = DCT of the input and Y = DCT of the
output (both on the file's integer scale) and B the dropped band read from --save-mask:
- the band is gone: Σ_B Y² ≤ 1 % of Σ_B X²;
- everything else is X up to the rounding of the written file. By Parseval the whole DCT-domain
  error Σ_B Y² + Σ_notB (Y − X)² equals the pixel-domain rounding error, at most N/4 (N pixels,
  |error| ≤ 1/2 each), which is the bound asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from images_for_tests import png_bit_depth, read_output, uint8_image, uint16_image, write_png8, write_png16
from scipy.fft import dctn


def dct_per_channel(image: np.ndarray) -> np.ndarray:
    return np.stack([dctn(image[:, :, c].astype(np.float64), type=2, norm="ortho") for c in range(image.shape[2])], axis=2)


def assert_radial_band(kept: np.ndarray) -> None:
    """The dropped coefficients are exactly those with a1 < sqrt(i² + j²) < a2 for some a1 < a2."""
    h, w = kept.shape
    radius = np.hypot(*np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))
    dropped = radius[~kept]
    assert dropped.size > 0
    inside = (radius >= dropped.min()) & (radius <= dropped.max())
    assert not np.any(kept & inside), "a kept coefficient lies inside the dropped band"


def check_masked_output(source: np.ndarray, output: np.ndarray, kept: np.ndarray, maxval: int) -> None:
    assert output.shape == source.shape
    assert output.min() > 0 and output.max() < maxval, "the test image must not clip"
    x, y = dct_per_channel(source), dct_per_channel(output)
    band = ~kept
    n_pixels = kept.size
    for c in range(source.shape[2]):
        xc, yc = x[:, :, c], y[:, :, c]
        band_in = float(np.sum(xc[band] ** 2))
        band_out = float(np.sum(yc[band] ** 2))
        assert band_out <= 0.01 * band_in, f"channel {c}: band keeps {band_out / band_in:.2%} of its energy"
        rest_error = float(np.sum((yc[kept] - xc[kept]) ** 2))
        assert band_out + rest_error <= n_pixels / 4 + 1e-6, (
            f"channel {c}: DCT-domain error {band_out + rest_error:.1f} exceeds the rounding bound {n_pixels / 4}"
        )


def read_mask(path: Path) -> np.ndarray:
    mask = read_output(path)[:, :, 0]
    assert set(np.unique(mask).tolist()) <= {0, 255}, "the mask must be pure black/white"
    return mask == 255


def test_8_bit_central_band_is_removed_and_the_rest_kept(cli, tmp_path: Path) -> None:
    source = write_png8(tmp_path / "in.png", uint8_image(48, 64, 3, seed=3, lo=90, hi=165, noise=12))
    code, stdout, err = cli("sfm-mask", tmp_path / "in.png", "-o", tmp_path / "out.png", "--mode", "central",
                            "--seed", 4, "--save-mask", "--save-spectrum", "--json", "-q")
    assert code == 0, err
    record = json.loads(stdout.splitlines()[0])
    kept = read_mask(tmp_path / "out_mask.png")
    assert record["mask"] == str(tmp_path / "out_mask.png")
    assert kept.shape == (48, 64)
    assert_radial_band(kept)
    assert 0.05 < 1 - kept.mean() < 0.95, "pick a seed whose band is neither empty nor everything"
    assert record["kept_fraction"] == pytest.approx(kept.mean())
    assert png_bit_depth(tmp_path / "out.png") == 8
    check_masked_output(source, read_output(tmp_path / "out.png"), kept, 255)
    spectrum = read_output(tmp_path / "out_spectrum.png")
    assert spectrum.shape[0] == 48 and spectrum.shape[1] > 2 * 64


def test_16_bit_targeted_band_is_removed_and_the_output_stays_16_bit(cli, tmp_path: Path) -> None:
    source = write_png16(tmp_path / "in.png", uint16_image(48, 64, 3, seed=5, lo=90, hi=165, noise=12))
    code, _, err = cli("sfm-mask", tmp_path / "in.png", "-o", tmp_path / "out.png", "--mode", "targeted",
                       "--seed", 1, "--save-mask", "-q")
    assert code == 0, err
    assert png_bit_depth(tmp_path / "out.png") == 16
    output = read_output(tmp_path / "out.png")
    assert output.dtype == np.uint16
    assert not np.all(output % 257 == 0), "16-bit output must not be 8-bit values scaled up"
    kept = read_mask(tmp_path / "out_mask.png")
    assert_radial_band(kept)
    assert 1 - kept.mean() > 0.01
    check_masked_output(source, output, kept, 65535)


def test_same_seed_same_mask_other_seed_other_mask(cli, tmp_path: Path) -> None:
    write_png8(tmp_path / "in.png", uint8_image(32, 32, 3, seed=1))
    masks = []
    for tag, seed in (("a", 9), ("b", 9), ("c", 10)):
        code, _, err = cli("sfm-mask", tmp_path / "in.png", "-o", tmp_path / f"{tag}.png", "--mode", "central",
                           "--seed", seed, "--save-mask", "-q")
        assert code == 0, err
        masks.append(read_mask(tmp_path / f"{tag}_mask.png"))
    np.testing.assert_array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[0], masks[2])


def test_gray_stays_gray_and_alpha_is_kept(cli, tmp_path: Path) -> None:
    gray = write_png8(tmp_path / "gray.png", uint8_image(32, 40, 1, seed=2, lo=90, hi=165, noise=12))
    rgba = write_png8(tmp_path / "rgba.png", uint8_image(32, 40, 4, seed=3, lo=90, hi=165, noise=12))
    code, _, err = cli("sfm-mask", tmp_path / "gray.png", tmp_path / "rgba.png", "-o", tmp_path / "out",
                       "--mode", "central", "--seed", 4, "--save-mask", "-q")
    assert code == 0, err
    gray_out = read_output(tmp_path / "out" / "gray_sfm.png")
    assert gray_out.shape == (32, 40, 1)
    check_masked_output(gray, gray_out, read_mask(tmp_path / "out" / "gray_sfm_mask.png"), 255)
    rgba_out = read_output(tmp_path / "out" / "rgba_sfm.png")
    assert rgba_out.shape == (32, 40, 4)
    np.testing.assert_array_equal(rgba_out[:, :, 3], rgba[:, :, 3])
    check_masked_output(rgba[:, :, :3], rgba_out[:, :, :3], read_mask(tmp_path / "out" / "rgba_sfm_mask.png"), 255)
