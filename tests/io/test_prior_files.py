"""`--prior FILE` formats: .npy probabilities at LR and HR size, label images with and without a
class list, the colour-coded PNG writer (which round-trips), and one clear error per bad case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restore_cli.errors import RestoreError
from restore_cli.io.prior_files import (
    category_palette,
    find_prior_in_folder,
    prior_png_bytes,
    read_class_list,
    read_prior_file,
    write_prior_png,
)

K = 4
LR = (5, 7)


def probabilities(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).random(shape) + 0.01
    return p / p.sum(axis=0)


def save_npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


@pytest.mark.parametrize(("size", "at_hr"), [(LR, False), ((20, 28), True)])
def test_npy_at_lr_and_hr_size(tmp_path: Path, size: tuple[int, int], at_hr: bool) -> None:
    p = probabilities((K, *size)).astype(np.float32)
    maps = read_prior_file(save_npy(tmp_path / "p.npy", p), K, LR)
    assert maps.at_hr is at_hr and maps.probabilities.shape == (K, *size) and maps.probabilities.dtype == np.float32
    np.testing.assert_allclose(maps.probabilities, p, rtol=1e-6)


def test_npy_sums_within_tolerance_are_renormalised_and_integers_accepted(tmp_path: Path) -> None:
    p = probabilities((K, *LR)) * (1 + 5e-4)
    maps = read_prior_file(save_npy(tmp_path / "p.npy", p), K, LR)
    np.testing.assert_allclose(maps.probabilities.sum(axis=0), 1.0, atol=1e-6)
    one_hot = np.zeros((K, *LR), dtype=np.uint8)
    one_hot[2] = 1
    assert read_prior_file(save_npy(tmp_path / "h.npy", one_hot), K, LR).probabilities[2].min() == 1.0


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (probabilities((3, *LR)), "has 3 maps, but the model uses 4 categories"),
        (np.moveaxis(probabilities((K, *LR)), 0, -1), r"channels last\? expected K×H×W"),
        (probabilities((K, 6, 7)), r"prior is 6×7, but this input needs 5×7 \(LR size\) or 20×28 \(HR size\)"),
        (probabilities((K, *LR))[0], "K×H×W array"),
        (np.where(np.arange(K)[:, None, None] == 0, -0.2, 0.4) * np.ones((K, *LR)), "negative values"),
        (np.full((K, *LR), np.nan), "NaN or infinite"),
        (probabilities((K, *LR)) * 2, r"does not sum to 1 .* sums to 2"),
        (np.array([["a"]] * K), "numeric array"),
    ],
)
def test_npy_errors(tmp_path: Path, array: np.ndarray, message: str) -> None:
    with pytest.raises(RestoreError, match=message) as info:
        read_prior_file(save_npy(tmp_path / "bad.npy", array), K, LR)
    assert info.value.path == str(tmp_path / "bad.npy")


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(RestoreError, match="cannot read the prior as a .npy"):
        read_prior_file(tmp_path / "junk.npy", K, LR)
    with pytest.raises(RestoreError, match="not found"):
        read_prior_file(tmp_path / "missing.npy", K, LR)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(RestoreError, match="cannot read the label image"):
        read_prior_file(tmp_path / "junk.png", K, LR)
    with pytest.raises(RestoreError, match="lossless"):
        read_prior_file(tmp_path / "labels.jpg", K, LR)
    with pytest.raises(RestoreError, match="unknown prior format"):
        read_prior_file(tmp_path / "labels.txt", K, LR)


def test_label_image_without_class_list_is_category_indices(tmp_path: Path) -> None:
    labels = np.random.default_rng(1).integers(0, K, LR).astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "l.png")
    maps = read_prior_file(tmp_path / "l.png", K, LR)
    assert not maps.at_hr
    np.testing.assert_array_equal(maps.probabilities.argmax(axis=0), labels)
    assert set(np.unique(maps.probabilities)) == {0.0, 1.0}
    deep = (np.random.default_rng(2).integers(0, K, (20, 28))).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit gray (I;16)
    hr = read_prior_file(tmp_path / "deep.png", K, LR)
    assert hr.at_hr and np.array_equal(hr.probabilities.argmax(axis=0), deep)


def test_label_image_with_class_list(tmp_path: Path) -> None:
    labels = np.array([[10, 20, 255]] * 5, dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "l.png")
    (tmp_path / "classes.txt").write_text("# label category\n10 3\n20 0   # the flat one\n\n255 uniform\n")
    maps = read_prior_file(tmp_path / "l.png", K, (5, 3), classes=tmp_path / "classes.txt")
    np.testing.assert_array_equal(maps.probabilities[:, 0, 0], [0, 0, 0, 1])
    np.testing.assert_array_equal(maps.probabilities[:, 0, 1], [1, 0, 0, 0])
    np.testing.assert_allclose(maps.probabilities[:, 0, 2], [0.25] * 4)


def test_label_errors(tmp_path: Path) -> None:
    labels = np.zeros(LR, dtype=np.uint8)
    labels[3, 4] = 9
    Image.fromarray(labels).save(tmp_path / "l.png")
    with pytest.raises(RestoreError, match=r"label 9 at pixel \(3, 4\) is out of range: the model has categories 0–3"):
        read_prior_file(tmp_path / "l.png", K, LR)
    (tmp_path / "c.txt").write_text("0 1\n")
    with pytest.raises(RestoreError, match=r"label 9 at pixel \(3, 4\) is not in the class list"):
        read_prior_file(tmp_path / "l.png", K, LR, classes=tmp_path / "c.txt")
    Image.fromarray(np.zeros((*LR, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(RestoreError, match="one channel of integer labels .* RGB"):
        read_prior_file(tmp_path / "rgb.png", K, LR)
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(tmp_path / "size.png")
    with pytest.raises(RestoreError, match="prior is 6×6"):
        read_prior_file(tmp_path / "size.png", K, LR)
    with pytest.raises(RestoreError, match="class list applies to label images"):
        read_prior_file(save_npy(tmp_path / "p.npy", probabilities((K, *LR))), K, LR, classes=tmp_path / "c.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0\n", "line 1: expected 'LABEL CATEGORY'"),
        ("x 1\n", "label 'x' is not an integer"),
        ("-1 1\n", "label -1 is negative"),
        ("0 sky\n", "neither an index nor 'uniform'"),
        ("0 4\n", r"category 4 is out of range \(the model has categories 0–3\)"),
        ("0 1\n# c\n0 2\n", "line 3: label 0 is listed twice"),
        ("# nothing\n\n", "class list is empty"),
    ],
)
def test_class_list_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "c.txt").write_text(text)
    with pytest.raises(RestoreError, match=message):
        read_class_list(tmp_path / "c.txt", K)
    with pytest.raises(RestoreError, match="class list not found"):
        read_class_list(tmp_path / "none.txt", K)


def test_written_prior_png_is_colour_coded_and_round_trips(tmp_path: Path) -> None:
    p = probabilities((K, 9, 11), seed=3)
    write_prior_png(tmp_path / "x_prior.png", p)
    with Image.open(tmp_path / "x_prior.png") as image:
        assert image.mode == "P" and image.size == (11, 9)
        rgb = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(rgb, category_palette(K)[p.argmax(axis=0)])
    maps = read_prior_file(tmp_path / "x_prior.png", K, (9, 11))
    np.testing.assert_array_equal(maps.probabilities.argmax(axis=0), p.argmax(axis=0))
    with pytest.raises(ValueError, match="K×H×W"):
        prior_png_bytes(p[0])


def test_palette_colours_are_distinct_and_stable() -> None:
    palette = category_palette(40)
    assert palette.shape == (40, 3) and len({tuple(c) for c in palette}) == 40
    np.testing.assert_array_equal(category_palette(8), palette[:8])


def test_prior_folder_lookup(tmp_path: Path) -> None:
    save_npy(tmp_path / "a.npy", probabilities((K, *LR)))
    Image.fromarray(np.zeros(LR, dtype=np.uint8)).save(tmp_path / "b.png")
    assert find_prior_in_folder(tmp_path, "a") == tmp_path / "a.npy"
    assert find_prior_in_folder(tmp_path, "b") == tmp_path / "b.png"
    with pytest.raises(RestoreError, match="no prior for input 'c'"):
        find_prior_in_folder(tmp_path, "c")
    Image.fromarray(np.zeros(LR, dtype=np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(RestoreError, match="several priors for input 'a'"):
        find_prior_in_folder(tmp_path, "a")
