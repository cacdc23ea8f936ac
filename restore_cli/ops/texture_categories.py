"""Texture categories derived from the training data itself, and the texture metric.

SFT-GAN conditions its generator on per-pixel category probabilities (ANCHORS 5). No segmentation
labels or pretrained segmenters are available here, so the categories are made by clustering
HR windows on texture and colour statistics:

- window: WINDOW × WINDOW HR pixels (32 = 8 LR pixels at ×4), laid out with stride STRIDE (16);
- features (all invariant to the 8 dihedral transforms, so augmentation does not move a window
  to another category):
  tone       mean Y (MATLAB BT.601 studio-range Y, the SR metric's channel);
  colour     mean Cb and Cr, and the chroma spread sqrt(var Cb + var Cr);
  texture    log10 of the mean energy per coefficient of the window's orthonormal 2-D DCT (Y,
             mean removed) in the radial bands 1–2, 2–4, 4–8, 8–16 and ≥ 16 (radius sqrt(i²+j²));
  structure  directionality |log(E_i>j / E_j>i)| and axis alignment (share of the energy above
             radius 4 that lies on the first DCT row and column: straight horizontal or
             vertical edges);
- standardisation: z-scores over the clustering sample, then per-feature weights that give the
  four groups total squared weights tone 1, colour 1, texture 2, structure 1;
- k-means (k-means++ seeding, Lloyd iterations, best of several restarts, every draw from a
  `numpy.random.Generator`); clusters are numbered by increasing texture energy, so category 0
  is the flattest.

The texture metric (radially averaged power spectra) is in `ops.spectrum`.

Arrays here are numpy; images are float in [0, 1], windows N×3×W×W (RGB) or N×W×W (Y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BAND_EDGES",
    "ENERGY_FLOOR",
    "FEATURE_NAMES",
    "STRIDE",
    "WINDOW",
    "TextureClusters",
    "assign_categories",
    "category_grid",
    "describe_category",
    "extract_windows",
    "feature_weights",
    "fit_texture_clusters",
    "kmeans",
    "patch_category",
    "window_features",
    "window_origins",
]

WINDOW = 32
STRIDE = 16
BAND_EDGES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
FEATURE_NAMES: tuple[str, ...] = (
    "y_mean",
    "cb_mean",
    "cr_mean",
    "chroma_spread",
    "band_1_2",
    "band_2_4",
    "band_4_8",
    "band_8_16",
    "band_16_up",
    "directionality",
    "axis_alignment",
)
_GROUPS: tuple[tuple[str, float, tuple[int, ...]], ...] = (
    ("tone", 1.0, (0,)),
    ("colour", 1.0, (1, 2, 3)),
    ("texture", 2.0, (4, 5, 6, 7, 8)),
    ("structure", 1.0, (9, 10)),
)
_TEXTURE = slice(4, 9)
ENERGY_FLOOR = 1e-7  # below the quantisation noise of 8-bit images (1/255² / 12 ≈ 1.3e-6)

# MATLAB rgb2ycbcr rows on the [0, 1] scale (ANCHORS 6.1); written out here because ops/colour.py
# works on tensors and this module on arrays.
_Y = np.array([65.481, 128.553, 24.966]) / 255.0
_CB = np.array([-37.797, -74.203, 112.0]) / 255.0
_CR = np.array([112.0, -93.786, -18.214]) / 255.0


def feature_weights() -> np.ndarray:
    """Per-feature weights: each group's squared weights sum to its group weight."""
    w = np.zeros(len(FEATURE_NAMES))
    for _, total, members in _GROUPS:
        w[list(members)] = math.sqrt(total / len(members))
    return w


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (C @ v = scipy.fft.dct(v, norm='ortho'))."""
    k = np.arange(n)[:, None]
    m = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * m + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] = math.sqrt(1.0 / n)
    return c


def _band_index(n: int) -> np.ndarray:
    """n×n map of the radial band of each DCT coefficient (−1 for DC)."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    radius = np.sqrt(i * i + j * j)
    index = np.full((n, n), -1, dtype=np.int64)
    for b in range(len(BAND_EDGES) - 1):
        index[(radius >= BAND_EDGES[b]) & (radius < BAND_EDGES[b + 1])] = b
    return index


def window_features(windows: np.ndarray) -> np.ndarray:
    """Raw (unstandardised) features of RGB windows N×3×W×W in [0, 1] → N×11 float64
    (order: FEATURE_NAMES)."""
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ValueError(f"expected N×3×W×W windows, got shape {x.shape}")
    n, _, size, _ = x.shape
    y = np.einsum("c,nchw->nhw", _Y, x) + 16.0 / 255.0
    cb = np.einsum("c,nchw->nhw", _CB, x) + 128.0 / 255.0
    cr = np.einsum("c,nchw->nhw", _CR, x) + 128.0 / 255.0
    out = np.empty((n, len(FEATURE_NAMES)))
    out[:, 0] = y.mean(axis=(1, 2))
    out[:, 1] = cb.mean(axis=(1, 2))
    out[:, 2] = cr.mean(axis=(1, 2))
    out[:, 3] = np.sqrt(cb.var(axis=(1, 2)) + cr.var(axis=(1, 2)))
    c = _dct_matrix(size)
    coeffs = c @ (y - out[:, 0, None, None]) @ c.T
    energy = coeffs * coeffs
    bands = _band_index(size)
    for b in range(len(BAND_EDGES) - 1):
        mask = bands == b
        out[:, 4 + b] = np.log10(energy[:, mask].mean(axis=1) + ENERGY_FLOOR)
    i = np.arange(size)[:, None]
    j = np.arange(size)[None, :]
    vertical = energy[:, (i > j)].sum(axis=1)
    horizontal = energy[:, (j > i)].sum(axis=1)
    out[:, 9] = np.abs(np.log((vertical + ENERGY_FLOOR) / (horizontal + ENERGY_FLOOR)))
    # Above radius 4 only: the lowest frequencies of every natural window sit near the axes.
    high = bands >= 2
    on_axis = high & ((i == 0) | (j == 0))
    out[:, 10] = energy[:, on_axis].sum(axis=1) / (energy[:, high].sum(axis=1) + ENERGY_FLOOR * high.sum())
    return out


def window_origins(length: int, window: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
    """Start offsets of the windows that fit inside an axis of `length` pixels."""
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, stride, dtype=np.int64)


def extract_windows(image: np.ndarray, window: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
    """The grid of windows of an RGB image 3×H×W → (rows·cols)×3×window×window, row-major."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a 3×H×W image, got shape {image.shape}")
    rows = window_origins(image.shape[1], window, stride)
    cols = window_origins(image.shape[2], window, stride)
    if rows.size == 0 or cols.size == 0:
        raise ValueError(f"a {image.shape[1]}×{image.shape[2]} image holds no {window}×{window} window")
    view = np.lib.stride_tricks.sliding_window_view(image, (window, window), axis=(1, 2))  # 3×H'×W'×w×w
    picked = view[:, rows][:, :, cols]  # 3×R×C×w×w
    return np.ascontiguousarray(picked.transpose(1, 2, 0, 3, 4).reshape(-1, 3, window, window))


@dataclass(frozen=True)
class TextureClusters:
    """K cluster centres in the standardised, weighted feature space, and the affine map into it:
    z = (f − mean) / scale, where scale = std / weight."""

    centres: np.ndarray  # K×F
    mean: np.ndarray  # F
    scale: np.ndarray  # F

    @property
    def categories(self) -> int:
        return int(self.centres.shape[0])

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.scale

    def raw_centres(self) -> np.ndarray:
        """The centres in raw feature units (for descriptions)."""
        return self.centres * self.scale + self.mean


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """N×K squared Euclidean distances."""
    d = (points * points).sum(1)[:, None] - 2.0 * points @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest chosen one."""
    n = points.shape[0]
    centres = [points[int(rng.integers(n))]]
    closest = _squared_distances(points, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        index = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=closest / total))
        centres.append(points[index])
        closest = np.minimum(closest, _squared_distances(points, points[index][None])[:, 0])
    return np.stack(centres)


def kmeans(
    points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100, restarts: int = 4
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means on N×F points: (centres K×F, labels N, inertia), the best of `restarts`
    k-means++ seedings. An emptied cluster is re-seeded at the point farthest from its centre."""
    points = np.asarray(points, dtype=np.float64)
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k}, n={n}")
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(max(1, restarts)):
        centres = _kmeans_plus_plus(points, k, rng)
        labels = np.full(n, -1)
        for _ in range(iterations):
            distances = _squared_distances(points, centres)
            new_labels = distances.argmin(axis=1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
            for c in range(k):
                members = labels == c
                if members.any():
                    centres[c] = points[members].mean(axis=0)
                else:
                    far = int(distances[np.arange(n), labels].argmax())
                    centres[c] = points[far]
                    labels[far] = c
        distances = _squared_distances(points, centres)
        labels = distances.argmin(axis=1)
        inertia = float(distances[np.arange(n), labels].sum())
        if best is None or inertia < best[2]:
            best = (centres.copy(), labels, inertia)
    assert best is not None
    return best


def fit_texture_clusters(
    features: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100, restarts: int = 4
) -> TextureClusters:
    """Standardise raw window features (N×F), weight them, cluster into k categories, and number
    the categories by increasing total texture energy (category 0 = the flattest)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"expected N×{len(FEATURE_NAMES)} features, got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or infinity")
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    scale = std / feature_weights()
    z = (features - mean) / scale
    centres, _, _ = kmeans(z, k, rng, iterations, restarts)
    raw = centres * scale + mean
    order = np.lexsort((raw[:, 0], raw[:, _TEXTURE].sum(axis=1)))  # texture energy, then tone
    return TextureClusters(centres=centres[order], mean=mean, scale=scale)


def assign_categories(features: np.ndarray, clusters: TextureClusters) -> np.ndarray:
    """Nearest-centre category of each raw feature row (N×F → N int64)."""
    z = clusters.transform(features)
    return _squared_distances(z, clusters.centres).argmin(axis=1)


def category_grid(image: np.ndarray, clusters: TextureClusters, window: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
    """Categories of the window grid of an RGB image 3×H×W → rows×cols int64, where entry (r, c)
    is the window with top-left corner (r·stride, c·stride)."""
    rows = window_origins(image.shape[1], window, stride).size
    cols = window_origins(image.shape[2], window, stride).size
    labels = assign_categories(window_features(extract_windows(image, window, stride)), clusters)
    return labels.reshape(rows, cols)


def patch_category(grid: np.ndarray, categories: int, min_purity: float = 0.5, ignore: int = -100) -> int:
    """One label for a training patch from its window grid: the majority category when it holds
    at least `min_purity` of the windows, else `ignore` (mixed patches teach no class)."""
    counts = np.bincount(np.asarray(grid).ravel(), minlength=categories)
    top = int(counts.argmax())
    return top if counts[top] >= min_purity * counts.sum() else ignore


_HUES: tuple[tuple[float, str], ...] = (
    (0.0, "red"), (30.0, "orange"), (60.0, "yellow"), (120.0, "green"), (180.0, "cyan"), (240.0, "blue"), (300.0, "magenta"),
)


def describe_category(raw_centre: np.ndarray) -> str:
    """A short human description of a category from its centre in raw feature units, e.g.
    'bright neutral, flat' or 'mid green, fine texture, directional'."""
    f = np.asarray(raw_centre, dtype=np.float64)
    y = (f[0] - 16.0 / 255.0) / (219.0 / 255.0)
    tone = "dark" if y < 0.3 else "bright" if y > 0.7 else "mid"
    cb, cr = f[1] - 128.0 / 255.0, f[2] - 128.0 / 255.0
    if math.hypot(cb, cr) < 0.04:
        colour = "neutral"
    else:
        # The chroma vector taken back to RGB (BT.601 inverse, luma removed); its hue names it.
        r = 1.402 * cr
        g = -0.344136 * cb - 0.714136 * cr
        b = 1.772 * cb
        mx, mn = max(r, g, b), min(r, g, b)
        if mx == r:
            rgb_hue = (60.0 * (g - b) / (mx - mn) + 360.0) % 360.0
        elif mx == g:
            rgb_hue = 60.0 * (b - r) / (mx - mn) + 120.0
        else:
            rgb_hue = 60.0 * (r - g) / (mx - mn) + 240.0
        colour = min(_HUES, key=lambda h: min(abs(rgb_hue - h[0]), 360.0 - abs(rgb_hue - h[0])))[1]
    # log10 mean energy per coefficient at radius >= 16 (periods under 4 HR pixels); on BSDS500
    # windows its quartiles are about -4.2, -3.2 and -2.7.
    fine = f[8]
    if fine < -5.0:
        texture = "flat"
    elif fine < -4.0:
        texture = "smooth"
    elif fine < -3.0:
        texture = "textured"
    else:
        texture = "fine texture"
    words = [f"{tone} {colour}", texture]
    if f[10] > 0.3:
        words.append("straight edges")
    elif f[9] > 2.0:
        words.append("directional")
    return ", ".join(words)
