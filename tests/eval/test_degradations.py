"""Benchmark inputs against independent statements of the reference recipes.

The Table 1 check re-implements the steps of cszn/USRNet main_test_table1.py here with numpy/scipy:
modcrop to lcm(s, 8), scipy.ndimage.convolve of the uint8 array per channel with mode='wrap',
[::s, ::s], float32 /255, then np.random.seed(0) + np.random.normal in float.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from restore_cli.eval.degradations import (
    awgn,
    bicubic_lr,
    gray_levels,
    item_seed,
    modcrop,
    patches,
    toolchain_input,
    uint8_to_float32,
    wrap_blur_uint8,
)
from restore_cli.eval.protocols import build_config, make_cases
from restore_cli.eval.settings import ProtocolName
from restore_cli.ops.rl_restore import blur_sigma_interval, level_triples

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
KERNELS_12 = SHARED / "datasets" / "kernels" / "kernels_12.mat"


def kair_global_noise(shape: tuple[int, ...], sigma_unit: float) -> np.ndarray:
    """np.random.seed(0); np.random.normal(0, σ, shape), as KAIR does, leaving the global state as found."""
    state = np.random.get_state()
    try:
        np.random.seed(seed=0)
        return np.random.normal(0, sigma_unit, shape)
    finally:
        np.random.set_state(state)


def reference_table1(hr: np.ndarray, kernel: np.ndarray, scale: int, sigma_255: float) -> tuple[np.ndarray, np.ndarray]:
    """The Table 1 steps, written out independently: (cropped HR uint8, LR float32)."""
    m = math.lcm(scale, 8)
    h, w = hr.shape[:2]
    hr = hr[: h - h % m, : w - w % m]
    blurred = np.stack([ndimage.convolve(hr[..., c], kernel, mode="wrap") for c in range(hr.shape[2])], axis=-1)
    assert blurred.dtype == np.uint8
    lr = np.float32(blurred[::scale, ::scale] / 255.0)
    lr += kair_global_noise(lr.shape, sigma_255 / 255.0)
    return hr, lr


def textured_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3)).astype(np.float64)
    smooth = ndimage.uniform_filter(base, size=(3, 3, 1))
    return np.clip(smooth + rng.normal(0, 20, base.shape), 0, 255).round().astype(np.uint8)


def asymmetric_kernel(size: int = 9) -> np.ndarray:
    rng = np.random.default_rng(4)
    k = rng.uniform(0, 1, (size, size)) * np.linspace(0.2, 1.0, size)[None, :]
    return k / k.sum()


def cases_for(protocol: ProtocolName, tmp_path: Path, image: np.ndarray, kernel: np.ndarray | None = None, **options):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    Image.fromarray(image).save(data / "img.png")
    if kernel is not None:
        np.save(tmp_path / "k.npy", kernel)
        options["kernels"] = tmp_path / "k.npy"
    config = build_config(protocol, data, **options)
    return list(make_cases(config, "img", data / "img.png", image))


@pytest.mark.parametrize("scale,sigma", [(3, 7.65), (2, 0.0), (4, 2.55)])
def test_table1_input_matches_the_reference_steps_pixel_for_pixel(tmp_path: Path, scale: int, sigma: float) -> None:
    image = textured_image(53, 70, seed=scale)  # not a multiple of lcm(s, 8): modcrop matters
    kernel = asymmetric_kernel()
    (case,) = cases_for(ProtocolName.usrnet_table1, tmp_path, image, kernel,
                        scales=(scale,), noise=(sigma,))
    hr, lr = reference_table1(image, kernel, scale, sigma)
    assert case.reference.dtype == torch.float64
    np.testing.assert_array_equal(case.reference.numpy().transpose(1, 2, 0), hr.astype(np.float64))
    got = case.degraded[0].numpy().transpose(1, 2, 0)
    assert got.dtype == np.float32 and got.shape == lr.shape
    np.testing.assert_array_equal(got, lr)  # bit for bit, noise included
    assert case.sigma == pytest.approx(sigma / 255.0) and case.scale == scale
    np.testing.assert_array_equal(case.kernel, kernel)


@pytest.mark.parametrize("kernel_index", [1, 10])
def test_table1_input_with_the_stored_kernels_on_a_real_image(tmp_path: Path, kernel_index: int) -> None:
    """kernels_12.mat as the reference reads it (loadmat, [0, i].astype(float64), no renormalising:
    with a truncating blur, dividing by a sum of 1 ± 1e-8 would change ~9 % of the pixels for k1)."""
    photo = SHARED / "datasets" / "CBSD68" / "101085.png"
    if not KERNELS_12.is_file() or not photo.is_file():
        pytest.skip(f"../shared not found: {KERNELS_12}, {photo}")
    from scipy.io import loadmat

    stored = loadmat(str(KERNELS_12))["kernels"][0, kernel_index - 1].astype(np.float64)
    image = np.asarray(Image.open(photo).convert("RGB"))[:120, :96]  # a crop keeps the test fast
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(image).save(data / "101085.png")
    config = build_config(ProtocolName.usrnet_table1, data, scales=(3,), noise=(7.65,))
    case = [c for c in make_cases(config, "101085", data / "101085.png", image) if c.setting.kernel_index == kernel_index][0]
    assert case.setting.name == f"k{kernel_index:02d}_x3_n7.65"
    np.testing.assert_array_equal(case.kernel, stored)
    hr, lr = reference_table1(image, stored, 3, 7.65)
    np.testing.assert_array_equal(case.reference.numpy().transpose(1, 2, 0), hr)
    np.testing.assert_array_equal(case.degraded[0].numpy().transpose(1, 2, 0), lr)


def test_the_reference_blur_truncates_instead_of_rounding() -> None:
    image = np.zeros((6, 6, 1), np.uint8)
    image[0, 0, 0] = 10
    kernel = np.full((3, 3), 1 / 9)
    out = wrap_blur_uint8(image, kernel)
    assert out.dtype == np.uint8
    assert out[0, 0, 0] == 1 and out[1, 1, 0] == 1  # 10/9 = 1.11 → 1
    image[:] = 5
    assert wrap_blur_uint8(image, np.full((3, 3), 0.99 / 9))[2, 2, 0] == 4  # 4.95 → 4, not 5


@pytest.mark.parametrize("channels", [1, 3])
def test_awgn_is_kairs_seeded_noise(channels: int) -> None:
    image = textured_image(17, 23, seed=1)[..., :channels].copy()
    image[0, :4] = 0
    image[1, :4] = 255  # the noise takes some of these out of [0, 1]
    x = uint8_to_float32(image)
    np.testing.assert_array_equal(x, np.float32(image / 255.0))
    expected = x.copy()
    expected += kair_global_noise(x.shape, 25 / 255.0)
    got = awgn(x, 25.0, seed=0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert got.min() < 0 or got.max() > 1  # unclipped
    clipped = awgn(x, 25.0, seed=0, clip=True)
    np.testing.assert_array_equal(clipped, np.clip(expected, 0, 1))
    np.testing.assert_array_equal(awgn(x, 0.0, seed=0), x)
    assert not np.array_equal(awgn(x, 25.0, seed=1), got)


def test_denoise_cases_add_the_noise_to_the_clean_image(tmp_path: Path) -> None:
    image = textured_image(20, 24, seed=2)
    cases = cases_for(ProtocolName.denoise, tmp_path, image, noise=(15.0, 50.0))
    assert [c.setting.name for c in cases] == ["n15", "n50"]
    for case, sigma in zip(cases, (15.0, 50.0)):
        expected = uint8_to_float32(image)
        expected += kair_global_noise(expected.shape, sigma / 255.0)
        np.testing.assert_array_equal(case.degraded[0].numpy().transpose(1, 2, 0), expected)
        assert case.sigma == pytest.approx(sigma / 255.0)


def test_modcrop_and_patches() -> None:
    image = np.arange(10 * 13 * 1).reshape(10, 13, 1)
    assert modcrop(image, 4).shape == (8, 12, 1)
    np.testing.assert_array_equal(modcrop(image, 4), image[:8, :12])
    assert modcrop(image, 1) is image
    grid = patches(image, 4)
    assert [name for name, _ in grid] == [f"p{i:03d}" for i in range(6)]  # 2 rows × 3 columns
    np.testing.assert_array_equal(grid[4][1], image[4:8, 4:8])
    assert patches(image, 0) == [("", image)]


def test_bicubic_lr_reproduces_the_distributed_lr_files() -> None:
    hr_path = SHARED / "datasets" / "Set5" / "bird.png"
    if not hr_path.is_file():
        pytest.skip(f"../shared not found: {hr_path}")
    hr = np.asarray(Image.open(hr_path).convert("RGB"))
    for scale in (2, 3, 4):
        lr_file = SHARED / "datasets" / f"Set5_LR_bicubic_X{scale}" / f"birdx{scale}.png"
        expected = np.asarray(Image.open(lr_file).convert("RGB"))
        got = bicubic_lr(modcrop(hr, scale), scale, uint8=True)
        np.testing.assert_array_equal(np.round(got * 255).astype(np.uint8), expected)
        unrounded = bicubic_lr(modcrop(hr, scale), scale, uint8=False)
        error = np.abs(unrounded * 255.0 - expected)  # one rounding instead of one per axis
        assert error.max() < 4 and error.mean() < 0.5 and not np.array_equal(unrounded, got)


def test_gray_levels_are_rounded_studio_range_y() -> None:
    image = textured_image(9, 11, seed=3)
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    expected = np.round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)
    np.testing.assert_array_equal(gray_levels(image)[..., 0], expected)
    gray = image[..., :1]
    assert gray_levels(gray) is gray


def test_toolchain_inputs_are_reproducible_per_item(tmp_path: Path) -> None:
    image = textured_image(40, 40, seed=5)
    a, details = toolchain_input(image, "mild", seed=0, item="img")
    b, _ = toolchain_input(image, "mild", seed=0, item="img")
    c, _ = toolchain_input(image, "mild", seed=0, item="other")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert a.shape == (1, 3, 40, 40) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(torch.round(a * 255), a * 255)  # JPEG output: whole grey levels
    blur_lo, blur_hi = blur_sigma_interval(1)[0], blur_sigma_interval(10)[1]
    assert blur_lo <= details["blur_sigma"] <= blur_hi
    assert 10 <= details["jpeg_quality"] <= 100 and 0 <= details["noise_sigma"] <= 50
    assert len(level_triples("mild")) == 163
    assert item_seed(0, "img", "mild") == item_seed(0, "img", "mild") != item_seed(1, "img", "mild")


def test_toolchain_cases_cut_patches(tmp_path: Path) -> None:
    image = textured_image(40, 52, seed=6)
    cases = cases_for(ProtocolName.toolchain, tmp_path, image, patch=16, levels=("severe",))
    assert [c.item for c in cases] == [f"img_p{i:03d}" for i in range(6)]
    np.testing.assert_array_equal(cases[5].reference.numpy().transpose(1, 2, 0), image[16:32, 32:48])


def test_jpeg_cases_are_gray_and_decoded_by_pillow(tmp_path: Path) -> None:
    image = textured_image(24, 32, seed=7)
    (case,) = cases_for(ProtocolName.jpeg, tmp_path, image, qualities=(20,))
    gray = gray_levels(image)
    assert case.reference.shape == (1, 24, 32)
    import io

    buffer = io.BytesIO()
    Image.fromarray(gray[..., 0], "L").save(buffer, format="JPEG", quality=20)
    expected = np.asarray(Image.open(buffer), dtype=np.float32) / 255
    np.testing.assert_array_equal(case.degraded[0, 0].numpy(), expected)
