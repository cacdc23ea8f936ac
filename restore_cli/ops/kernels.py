"""Blur-kernel generators: MATLAB `fspecial('gaussian')`, the SRMD/USRNet anisotropic Gaussians,
USRNet's random training kernels (shifted Gaussians and camera-trajectory motion blur), the
real-image kernel recipe, and the `--kernel` generator specs.

Every kernel is a 2-D float64 array that is non-negative and sums to 1. The kernel centre is
(floor(h/2), floor(w/2)), the convention of `degradation.blur` (ANCHORS 1.1).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from scipy import ndimage

__all__ = [
    "REAL_IMAGE_KERNEL_WIDTHS",
    "anisotropic_gaussian",
    "augment_kernel",
    "fspecial_gaussian",
    "is_generator_spec",
    "kernel_from_spec",
    "motion_kernel",
    "random_gaussian_kernel",
    "real_image_kernel",
    "shift_kernel",
    "training_kernel",
]

# USRNet main_test_realapplication.py: Gaussian widths for scales 1..4 on clean real images.
REAL_IMAGE_KERNEL_WIDTHS: Final[dict[int, float]] = {1: 0.4, 2: 0.7, 3: 1.5, 4: 2.0}

GENERATOR_NAMES: Final[tuple[str, ...]] = ("gaussian", "aniso", "motion", "random")


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"kernel size must be a positive integer, got {size!r}")
    return int(size)


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB `fspecial('gaussian', size, sigma)`: exp(-(x²+y²)/2σ²) sampled on a grid centred at
    (size-1)/2, taps below eps·max set to zero, normalised to sum 1. Shape (size, size)."""
    size = _check_size(size)
    if not sigma > 0:
        raise ValueError(f"Gaussian sigma must be > 0, got {sigma!r}")
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    k = np.exp(-r2 / (2.0 * float(sigma) ** 2))
    k[k < np.finfo(np.float64).eps * k.max()] = 0.0
    return k / k.sum()


def _gaussian_on_grid(size: int, mean_xy: tuple[float, float], cov: np.ndarray) -> np.ndarray:
    """exp(-½ dᵀ Σ⁻¹ d) at every pixel, d = (column − mean_x, row − mean_y), normalised.

    The first coordinate of Σ is the horizontal (column) axis, as in SRMD/USRNet code."""
    idx = np.arange(size, dtype=np.float64)
    dy, dx = np.meshgrid(idx - mean_xy[1], idx - mean_xy[0], indexing="ij")
    d = np.stack([dx, dy], axis=-1)  # (size, size, 2) as (x, y)
    inv = np.linalg.inv(cov)
    q = np.einsum("...i,ij,...j->...", d, inv, d)
    k = np.exp(-0.5 * q)
    return k / k.sum()


def anisotropic_gaussian(size: int, theta: float, l1: float, l2: float) -> np.ndarray:
    """SRMD/USRNet anisotropic Gaussian (kernels_12.mat #5–8): Σ = V·diag(l1, l2)·V⁻¹ with
    V = [[cos θ, sin θ], [sin θ, −cos θ]] (θ in radians; l1 is the variance along (cos θ, sin θ)
    with x to the right and y downwards). The pdf is sampled at offsets (i − size/2 + 0.5) from
    the pixel index i, i.e. centred on pixel 12 for size 25 (ANCHORS 1.7/1.9), and normalised."""
    size = _check_size(size)
    if not (l1 > 0 and l2 > 0):
        raise ValueError(f"anisotropic Gaussian eigenvalues must be > 0, got l1={l1!r}, l2={l2!r}")
    c, s = math.cos(theta), math.sin(theta)
    v = np.array([[c, s], [s, -c]])
    cov = v @ np.diag([float(l1), float(l2)]) @ np.linalg.inv(v)
    centre = size / 2.0 - 0.5
    return _gaussian_on_grid(size, (centre, centre), cov)


def random_gaussian_kernel(
    rng: np.random.Generator, size: int = 25, min_var: float = 0.6, max_var: float = 12.0
) -> np.ndarray:
    """USRNet training Gaussian (KAIR `gen_kernel` semantics): λ1, λ2 ~ U[min_var, max_var],
    θ ~ U[0, π), Σ = Q·diag(λ1, λ2)·Qᵀ with Q the rotation by θ.

    The mean is deliberately shifted: it sits at size//2 − (s_k − 1)/2 on both axes with s_k drawn
    here uniformly from {1, 2, 3, 4}, independently of the scale being trained (the reference
    code re-draws it inside and ignores its scale argument). This mimics the (s−1)/2 up-left
    offset of the upper-left decimator for a random scale. Draw order: s_k, λ1, λ2, θ."""
    size = _check_size(size)
    if not 0 < min_var <= max_var:
        raise ValueError(f"need 0 < min_var <= max_var, got {min_var!r}, {max_var!r}")
    s_k = int(rng.integers(1, 5))
    lam1 = min_var + rng.random() * (max_var - min_var)
    lam2 = min_var + rng.random() * (max_var - min_var)
    theta = rng.random() * math.pi
    c, s = math.cos(theta), math.sin(theta)
    q = np.array([[c, -s], [s, c]])
    cov = q @ np.diag([lam1, lam2]) @ q.T
    mean = size // 2 - 0.5 * (s_k - 1)
    return _gaussian_on_grid(size, (mean, mean), cov)


# ---------------------------------------------------------------------------------------------
# Motion blur from a random camera trajectory (ANCHORS 1.9, `blurkernel_synthesis` semantics)
# ---------------------------------------------------------------------------------------------


def _rotation_xyz(angles: np.ndarray) -> np.ndarray:
    """Rz·Ry·Rx for rotation angles (ax, ay, az) in radians."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def _camera_trajectory(rng: np.random.Generator, steps: int = 250) -> np.ndarray:
    """A random 3-D camera path, shape (3, steps).

    The velocity starts as N(0, I) and receives kicks N(0, I)/(t+1); the orientation drifts with
    step 2π/steps times (its own previous value + N(0, I)/(t+1)); each step moves the position by
    the velocity rotated into the current orientation. Early kicks dominate, so paths are smooth."""
    pos = np.zeros((3, steps))
    vel = rng.standard_normal(3)
    rot = np.zeros(3)
    rot_rate = 2.0 * math.pi / steps
    for t in range(1, steps):
        rot_force = rng.standard_normal(3) / (t + 1) + rot
        vel_kick = rng.standard_normal(3) / (t + 1)
        rot = rot + rot_rate * rot_force
        vel = vel + vel_kick
        pos[:, t] = pos[:, t - 1] + _rotation_xyz(rot) @ vel
    return pos


def _centre_fit(k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-pad or crop `k` symmetrically (extra pixel after) to `size`."""
    out = k
    for axis, target in enumerate(size):
        n = out.shape[axis]
        if n < target:
            before = (target - n) // 2
            pad = [(0, 0), (0, 0)]
            pad[axis] = (before, target - n - before)
            out = np.pad(out, pad)
        elif n > target:
            start = (n - target) // 2
            out = np.take(out, np.arange(start, start + target), axis=axis)
    return out


def _bilinear_resize(k: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and clamped edges (OpenCV INTER_LINEAR upscaling)."""

    def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, fr = axis_weights(k.shape[0], rows)
    c0, c1, fc = axis_weights(k.shape[1], cols)
    tmp = k[r0, :] * (1 - fr)[:, None] + k[r1, :] * fr[:, None]
    return tmp[:, c0] * (1 - fc)[None, :] + tmp[:, c1] * fc[None, :]


def motion_kernel(rng: np.random.Generator, size: int = 25) -> np.ndarray:
    """Random camera-shake kernel (USRNet training, `blurkernel_synthesis` semantics), (size, size).

    1. a 250-step 3-D camera trajectory (see `_camera_trajectory`), projected on its first two axes;
    2. support n = round(min(5 − ln(U)/0.15, 27)), forced odd; 2-D histogram of the path on an
       n×n grid spanning its extent; normalise; smooth with a 3×3 Gaussian (σ 1, zero borders);
    3. centre zero-pad (or centre-crop) to size×size;
    4. with p = 1/4: bilinear resize to (randint[size, 5·size], randint[size, 5·size]) and
       centre-crop back (longer, thicker blur);
    5. if the sum is below 0.1 (mass cropped away), fall back to fspecial_gaussian(size, 0.1 + 6U);
       normalise."""
    size = _check_size(size)
    path = _camera_trajectory(rng)
    u = 1.0 - rng.random()  # in (0, 1]
    support = int(round(min(5.0 - math.log(u) / 0.15, 27.0)))
    support += 1 - support % 2
    hist, _, _ = np.histogram2d(path[0], path[1], bins=support)
    k = hist / hist.sum()
    k = ndimage.convolve(k, fspecial_gaussian(3, 1.0), mode="constant", cval=0.0)
    k = _centre_fit(k / k.sum(), (size, size))
    if rng.integers(0, 4) == 1:
        rows = int(rng.integers(size, 5 * size + 1))
        cols = int(rng.integers(size, 5 * size + 1))
        big = _bilinear_resize(k, rows, cols)
        top, left = rows // 2 - size // 2, cols // 2 - size // 2
        k = big[top : top + size, left : left + size]
    if k.sum() < 0.1:
        k = fspecial_gaussian(size, 0.1 + 6.0 * rng.random())
    k = np.clip(k, 0.0, None)
    return k / k.sum()


def augment_kernel(k: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 dihedral transforms: rotate by 90°·(mode % 4), then flip up-down if mode ≥ 4."""
    if not 0 <= mode < 8:
        raise ValueError(f"augmentation mode must be in 0..7, got {mode}")
    out = np.rot90(k, mode % 4)
    if mode >= 4:
        out = np.flipud(out)
    return np.ascontiguousarray(out)


def training_kernel(rng: np.random.Generator, size: int = 25) -> np.ndarray:
    """USRNet training mix: with p = 1/2 a motion kernel, otherwise a random (shifted) Gaussian
    followed by a random 8-way flip/rotation (the flip also moves the mean shift, as in KAIR)."""
    if rng.random() < 0.5:
        return motion_kernel(rng, size)
    k = random_gaussian_kernel(rng, size)
    return augment_kernel(k, int(rng.integers(0, 8)))


def shift_kernel(k: np.ndarray, scale: int) -> np.ndarray:
    """Shift `k` by (scale−1)/2 px up and left (bilinear, zero fill), then renormalise.

    With the upper-left decimator, a kernel centred this way makes (x ⊗ k)↓s aligned with the
    centre of each s×s block (USRNet `shift_pixel`, ANCHORS 1.9). The centroid moves by exactly
    (s−1)/2 on each axis as long as no mass crosses the border."""
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    k = np.asarray(k, dtype=np.float64)
    if scale == 1:
        return k / k.sum()
    d = (scale - 1) / 2.0
    out = ndimage.shift(k, (-d, -d), order=1, mode="constant", cval=0.0)
    out = np.clip(out, 0.0, None)
    return out / out.sum()


def real_image_kernel(scale: int, width: float | None = None) -> np.ndarray:
    """USRNet real-image kernel: fspecial_gaussian(25, width) shifted by (s−1)/2 up-left.

    Default widths for scales 1..4: 0.4, 0.7, 1.5, 2.0 (clean images; `chip.png` used
    0.6, 0.9, 1.7, 2.2)."""
    if width is None:
        if scale not in REAL_IMAGE_KERNEL_WIDTHS:
            raise ValueError(f"no default kernel width for scale {scale}; give a width")
        width = REAL_IMAGE_KERNEL_WIDTHS[scale]
    return shift_kernel(fspecial_gaussian(25, width), scale)


# ---------------------------------------------------------------------------------------------
# `--kernel` generator specs
# ---------------------------------------------------------------------------------------------


def is_generator_spec(spec: str) -> bool:
    """True when `spec` names a kernel generator (`gaussian:`, `aniso:`, `motion:`, `random:`),
    False for anything else (e.g. a kernel file path), which the io layer then reads as a file."""
    name, sep, _ = spec.strip().partition(":")
    return bool(sep) and name.strip().lower() in GENERATOR_NAMES


def _fmt(v: float) -> str:
    return f"{v:.10g}"


def _parse_numbers(name: str, body: str, spec: str, counts: tuple[int, ...]) -> list[float]:
    parts = [p.strip() for p in body.split(",")]
    if len(parts) not in counts or any(p == "" for p in parts):
        want = " or ".join(str(c) for c in counts)
        raise ValueError(f"kernel spec {spec!r}: '{name}:' takes {want} comma-separated number(s)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"kernel spec {spec!r}: {body!r} is not a list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"kernel spec {spec!r}: numbers must be finite")
    return values


def _parse_seed(name: str, body: str, spec: str) -> int:
    try:
        seed = int(body.strip())
    except ValueError:
        raise ValueError(f"kernel spec {spec!r}: '{name}:' takes an integer seed") from None
    if seed < 0:
        raise ValueError(f"kernel spec {spec!r}: the seed must be >= 0")
    return seed


def kernel_from_spec(spec: str) -> tuple[np.ndarray, str]:
    """Build a kernel from a generator spec; returns (kernel, canonical spec).

    Specs: `gaussian:SIGMA[,SIZE]` (isotropic, 25×25 unless SIZE), `aniso:L1,L2,THETA` (covariance
    eigenvalues, THETA in degrees, 25×25), `motion:SEED` (camera-shake kernel), `random:SEED`
    (USRNet training mix). The canonical spec re-parses to the same kernel, e.g. `gaussian:1.6,25`.
    Raises ValueError with a one-line message for a malformed spec."""
    if not is_generator_spec(spec):
        names = ", ".join(f"{n}:" for n in GENERATOR_NAMES)
        raise ValueError(f"kernel spec {spec!r} is not a generator spec ({names})")
    name, _, body = spec.strip().partition(":")
    name = name.strip().lower()
    if name == "gaussian":
        values = _parse_numbers(name, body, spec, (1, 2))
        sigma = values[0]
        size = values[1] if len(values) == 2 else 25.0
        if sigma <= 0:
            raise ValueError(f"kernel spec {spec!r}: sigma must be > 0")
        if size != int(size) or size < 1:
            raise ValueError(f"kernel spec {spec!r}: size must be a positive integer")
        return fspecial_gaussian(int(size), sigma), f"gaussian:{_fmt(sigma)},{int(size)}"
    if name == "aniso":
        l1, l2, theta_deg = _parse_numbers(name, body, spec, (3,))
        if l1 <= 0 or l2 <= 0:
            raise ValueError(f"kernel spec {spec!r}: eigenvalues L1, L2 must be > 0")
        k = anisotropic_gaussian(25, math.radians(theta_deg), l1, l2)
        return k, f"aniso:{_fmt(l1)},{_fmt(l2)},{_fmt(theta_deg)}"
    seed = _parse_seed(name, body, spec)
    rng = np.random.default_rng(seed)
    if name == "motion":
        return motion_kernel(rng, 25), f"motion:{seed}"
    return training_kernel(rng, 25), f"random:{seed}"
