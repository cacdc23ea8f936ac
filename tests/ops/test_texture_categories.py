"""Texture categories: window features against scipy's DCT and explicit loops, k-means
determinism and separation of obviously different textures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft

from restore_cli.ops import texture_categories as tc


def flat_windows(n: int, rgb: tuple[float, float, float], rng: np.random.Generator, noise: float = 0.002) -> np.ndarray:
    w = np.empty((n, 3, 32, 32))
    w[:] = np.asarray(rgb)[None, :, None, None]
    return np.clip(w + rng.normal(0, noise, w.shape), 0, 1)


def grass_windows(n: int, rng: np.random.Generator) -> np.ndarray:
    w = np.empty((n, 3, 32, 32))
    w[:] = np.array([0.25, 0.5, 0.15])[None, :, None, None]
    return np.clip(w + rng.normal(0, 0.12, (n, 1, 32, 32)), 0, 1)


def stripe_windows(n: int, rng: np.random.Generator) -> np.ndarray:
    rows = (np.arange(32) // 3 % 2)[None, None, :, None] * 0.7 + 0.15
    phase = rng.integers(0, 6, n)
    w = np.stack([np.roll(np.broadcast_to(rows, (1, 3, 32, 32)), p, axis=2)[0] for p in phase])
    return np.clip(w + rng.normal(0, 0.01, w.shape), 0, 1)


def test_window_features_match_an_independent_statement() -> None:
    rng = np.random.default_rng(0)
    windows = rng.random((3, 3, 32, 32))
    features = tc.window_features(windows)
    for f, w in zip(features, windows):
        r, g, b = w
        y = (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255
        cb = (128 - 37.797 * r - 74.203 * g + 112.0 * b) / 255
        cr = (128 + 112.0 * r - 93.786 * g - 18.214 * b) / 255
        assert f[0] == pytest.approx(y.mean()) and f[1] == pytest.approx(cb.mean()) and f[2] == pytest.approx(cr.mean())
        assert f[3] == pytest.approx(math.sqrt(cb.var() + cr.var()))
        coeffs = scipy.fft.dctn(y - y.mean(), type=2, norm="ortho")
        sums = [0.0] * 5
        counts = [0] * 5
        vertical = horizontal = on_axis = high = 0.0
        for i in range(32):
            for j in range(32):
                radius = math.hypot(i, j)
                e = coeffs[i, j] ** 2
                if radius >= 1:
                    band = 0 if radius < 2 else 1 if radius < 4 else 2 if radius < 8 else 3 if radius < 16 else 4
                    sums[band] += e
                    counts[band] += 1
                if radius >= 4:
                    high += e
                    if i == 0 or j == 0:
                        on_axis += e
                if i > j:
                    vertical += e
                elif j > i:
                    horizontal += e
        for band in range(5):
            assert f[4 + band] == pytest.approx(math.log10(sums[band] / counts[band] + tc.ENERGY_FLOOR))
        assert f[9] == pytest.approx(abs(math.log((vertical + tc.ENERGY_FLOOR) / (horizontal + tc.ENERGY_FLOOR))))
        n_high = sum(1 for i in range(32) for j in range(32) if math.hypot(i, j) >= 4)
        assert f[10] == pytest.approx(on_axis / (high + tc.ENERGY_FLOOR * n_high))


def test_features_are_invariant_to_the_dihedral_transforms() -> None:
    w = np.random.default_rng(1).random((1, 3, 32, 32))
    base = tc.window_features(w)
    for transformed in (w[..., ::-1], w[..., ::-1, :], np.swapaxes(w, 2, 3), np.rot90(w, 1, axes=(2, 3))):
        np.testing.assert_allclose(tc.window_features(np.ascontiguousarray(transformed)), base, rtol=1e-9, atol=1e-12)


def test_extract_windows_is_the_stride_grid() -> None:
    image = np.random.default_rng(2).random((3, 70, 50))
    windows = tc.extract_windows(image)
    rows, cols = [0, 16, 32], [0, 16]
    assert windows.shape == (6, 3, 32, 32)
    for k, (r, c) in enumerate((r, c) for r in rows for c in cols):
        np.testing.assert_array_equal(windows[k], image[:, r:r + 32, c:c + 32])
    with pytest.raises(ValueError, match="no 32×32 window"):
        tc.extract_windows(image[:, :20])


def test_kmeans_finds_separated_blobs_and_is_deterministic_per_seed() -> None:
    rng = np.random.default_rng(3)
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([m + rng.normal(0, 0.5, (50, 2)) for m in means])
    centres, labels, inertia = tc.kmeans(points, 3, np.random.default_rng(7))
    order = np.argsort(centres[:, 0] + 2 * centres[:, 1])
    np.testing.assert_allclose(centres[order], [points[:50].mean(0), points[50:100].mean(0), points[100:].mean(0)], atol=1e-12)
    assert all(len(set(labels[i * 50:(i + 1) * 50])) == 1 for i in range(3))
    again = tc.kmeans(points, 3, np.random.default_rng(7))
    assert np.array_equal(again[0], centres) and np.array_equal(again[1], labels) and again[2] == inertia
    with pytest.raises(ValueError, match="k-means needs"):
        tc.kmeans(points[:2], 3, np.random.default_rng(0))


def test_categories_separate_obviously_different_textures() -> None:
    rng = np.random.default_rng(4)
    sky = flat_windows(120, (0.45, 0.65, 0.9), rng)
    grass = grass_windows(120, rng)
    stripes = stripe_windows(120, rng)
    features = tc.window_features(np.concatenate([sky, grass, stripes]))
    clusters = tc.fit_texture_clusters(features, 3, np.random.default_rng(11))
    labels = tc.assign_categories(features, clusters)
    groups = [set(labels[i * 120:(i + 1) * 120].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    assert groups[0] == {0}  # categories are numbered by texture energy: the flat sky first
    same = tc.fit_texture_clusters(features, 3, np.random.default_rng(11))
    assert np.array_equal(same.centres, clusters.centres)
    descriptions = [tc.describe_category(c) for c in clusters.raw_centres()]
    assert descriptions[0].endswith("flat") and "blue" in descriptions[0]
    assert any("green" in d for d in descriptions)
    assert any("straight edges" in d for d in descriptions)  # the horizontal stripes


def test_category_grid_and_patch_label() -> None:
    rng = np.random.default_rng(5)
    sky = flat_windows(60, (0.45, 0.65, 0.9), rng)
    grass = grass_windows(60, rng)
    clusters = tc.fit_texture_clusters(tc.window_features(np.concatenate([sky, grass])), 2, np.random.default_rng(0))
    image = np.empty((3, 64, 96))
    image[:, :, :48] = flat_windows(1, (0.45, 0.65, 0.9), rng, noise=0.002)[0, :, :1, :1]
    image[:, :, 48:] = np.clip(np.array([0.25, 0.5, 0.15])[:, None, None] + rng.normal(0, 0.12, (1, 64, 48)), 0, 1)
    grid = tc.category_grid(image, clusters)
    assert grid.shape == (3, 5)
    assert set(grid[:, :2].ravel()) == {0} and set(grid[:, 3:].ravel()) == {1}
    assert tc.patch_category(np.array([[1, 1, 0]]), 2) == 1
    assert tc.patch_category(np.array([[1, 0, 2, 3]]), 4, min_purity=0.5) == -100
