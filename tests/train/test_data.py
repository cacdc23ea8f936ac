"""Training data: image loading and channel conversion, dihedral augmentation, patch sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restore_cli.errors import RestoreError
from restore_cli.train.data import (
    BatchPrefetcher,
    center_crop,
    dihedral,
    load_image_set,
    sample_patches,
    to_uint8_channels,
)


def write_images(folder: Path, count: int, height: int, width: int, channels: int, seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(count):
        a = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
        Image.fromarray(a[:, :, 0] if channels == 1 else a).save(folder / f"img{i:02d}.png")
        arrays.append(a)
    return arrays


def test_load_keeps_uint8_pixels_and_converts_channels(tmp_path: Path) -> None:
    colour = write_images(tmp_path / "rgb", 2, 20, 24, 3)
    gray = write_images(tmp_path / "gray", 1, 20, 24, 1, seed=1)
    rgb_set = load_image_set([tmp_path / "rgb", tmp_path / "gray"], channels=3)
    assert [a.dtype for a in rgb_set.images] == [np.uint8] * 3
    np.testing.assert_array_equal(rgb_set.images[0], colour[0])
    np.testing.assert_array_equal(rgb_set.images[2], np.repeat(gray[0], 3, axis=2))  # gray replicated

    gray_set = load_image_set([tmp_path / "rgb"], channels=1)
    # MATLAB rgb2gray: 0.298936021293775 R + 0.587043074451121 G + 0.114020904255103 B, rounded.
    weights = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    expected = np.rint(colour[1].astype(np.float64) @ weights).astype(np.uint8)
    np.testing.assert_array_equal(gray_set.images[1][:, :, 0], expected)
    assert gray_set.fingerprint() != rgb_set.fingerprint()
    assert gray_set.fingerprint() == load_image_set([tmp_path / "rgb"], channels=1).fingerprint()


def test_to_uint8_rejects_other_channel_counts() -> None:
    with pytest.raises(ValueError):
        to_uint8_channels(np.zeros((4, 4, 2), np.float32), 3)


@pytest.mark.parametrize("case", ["missing", "empty", "too_small"])
def test_user_errors_name_the_problem(tmp_path: Path, case: str) -> None:
    if case == "missing":
        folders, match = [tmp_path / "nope"], "not found"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("x")
        folders, match = [tmp_path / "empty"], "no images"
    else:
        write_images(tmp_path / "small", 2, 10, 30, 3)
        folders, match = [tmp_path / "small"], "all 2 images are smaller than 16×16"
    with pytest.raises(RestoreError, match=match):
        load_image_set(folders, channels=3, min_size=16)


def test_images_smaller_than_the_patch_are_left_out(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 1, 10, 30, 3)
    write_images(tmp_path / "b", 1, 20, 20, 3)
    images = load_image_set([tmp_path / "a", tmp_path / "b"], channels=3, min_size=16)
    assert images.paths == (tmp_path / "b" / "img00.png",) and images.skipped == (tmp_path / "a" / "img00.png",)


def test_dihedral_gives_the_eight_distinct_symmetries() -> None:
    a = np.arange(12).reshape(3, 4)
    results = [dihedral(a, m) for m in range(8)]
    assert len({(r.shape, r.tobytes()) for r in map(np.ascontiguousarray, results)}) == 8
    # Independent statement: rotations are np.rot90 powers, modes 4..7 add an up-down flip.
    np.testing.assert_array_equal(results[1], np.rot90(a))
    np.testing.assert_array_equal(results[4], np.flipud(a))
    np.testing.assert_array_equal(results[6], np.flipud(np.rot90(a, 2)))
    with pytest.raises(ValueError):
        dihedral(a, 8)


def test_patches_are_transformed_crops_and_reproducible(tmp_path: Path) -> None:
    write_images(tmp_path / "d", 2, 12, 14, 3)
    images = load_image_set([tmp_path / "d"], channels=3)
    batch = sample_patches(images, 6, 5, np.random.default_rng(7))
    again = sample_patches(images, 6, 5, np.random.default_rng(7))
    other = sample_patches(images, 6, 5, np.random.default_rng(8))
    assert batch.shape == (6, 3, 5, 5) and batch.dtype.is_floating_point
    assert float(batch.min()) >= 0 and float(batch.max()) <= 1
    assert bool((batch == again).all()) and not bool((batch == other).all())
    # Each patch is one of the 8 transforms of some 5×5 crop of some image (brute force).
    candidates = {
        np.ascontiguousarray(dihedral(img[t : t + 5, l : l + 5], m)).tobytes()
        for img in images.images
        for t in range(img.shape[0] - 4)
        for l in range(img.shape[1] - 4)
        for m in range(8)
    }
    for patch in batch:
        levels = np.rint(patch.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert np.ascontiguousarray(levels).tobytes() in candidates


def test_center_crop_limits_size_and_keeps_the_centre() -> None:
    a = np.arange(10 * 13).reshape(10, 13, 1)
    c = center_crop(a, 8, multiple=4)
    assert c.shape == (8, 8, 1)
    np.testing.assert_array_equal(c, a[1:9, 2:10])
    assert center_crop(a, 256).shape == (10, 13, 1)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetcher_pairs_each_batch_with_the_state_after_it(depth: int) -> None:
    counter = {"n": 0}

    def produce() -> int:
        counter["n"] += 1
        return counter["n"]

    prefetcher = BatchPrefetcher(produce, lambda: counter["n"], depth)
    try:
        assert [prefetcher.next() for _ in range(5)] == [(i, i) for i in range(1, 6)]
    finally:
        prefetcher.close()
    assert counter["n"] <= 5 + depth + 1  # the thread stays at most `depth` (+ one in hand) ahead


def test_prefetcher_hands_errors_to_the_consumer() -> None:
    def produce() -> int:
        raise ValueError("broken batch")

    prefetcher = BatchPrefetcher(produce, lambda: None, 2)
    with pytest.raises(ValueError, match="broken batch"):
        prefetcher.next()
    prefetcher.close()
