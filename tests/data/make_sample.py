"""Make tests/data/sample.png: a small procedural RGB test image (no dataset content).

192×128, 8-bit RGB: smooth colour gradients (where noise shows), sharp-edged coloured shapes and
one-pixel lines (where blur and SR show), a checkerboard and a seeded texture (where
over-smoothing shows). Deterministic: `python tests/data/make_sample.py` rewrites the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 192, 128
SEED = 20240607


def make_sample() -> np.ndarray:
    """The sample image as a uint8 H×W×3 array."""
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    u, v = x / (WIDTH - 1), y / (HEIGHT - 1)

    # Smooth background: a colour gradient with one slow wave.
    img = np.stack(
        [
            0.15 + 0.7 * u,
            0.25 + 0.35 * np.sin(np.pi * (u + v)) ** 2,
            0.85 - 0.6 * v,
        ],
        axis=2,
    )

    # Texture (bottom right): a few seeded sinusoids plus a little seeded grain.
    tex = np.zeros((HEIGHT, WIDTH))
    for _ in range(4):
        fx, fy = rng.uniform(0.08, 0.45, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        tex += np.sin(fx * x + fy * y + phase)
    tex = 0.5 + 0.12 * tex + rng.normal(0.0, 0.03, size=tex.shape)
    region = (x >= 128) & (y >= 72)
    img[region] = np.stack([tex, 0.8 * tex, 0.6 * tex + 0.2], axis=2)[region]

    # Checkerboard (top right), 2-pixel squares: the finest detail SR has to bring back.
    checker = ((x // 2 + y // 2) % 2).astype(np.float64)
    region = (x >= 150) & (x < 182) & (y >= 8) & (y < 40)
    img[region] = (0.1 + 0.8 * checker[region])[:, None]

    # Hard-edged shapes.
    disc = (x - 40) ** 2 + (y - 40) ** 2 <= 22**2
    img[disc] = (0.9, 0.15, 0.1)
    ring = np.abs(np.hypot(x - 40, y - 40) - 28) <= 1.5
    img[ring] = (1.0, 1.0, 1.0)
    rect = (x >= 80) & (x < 130) & (y >= 14) & (y < 52)
    img[rect] = (0.1, 0.2, 0.8)
    border = rect & ~((x >= 83) & (x < 127) & (y >= 17) & (y < 49))
    img[border] = (0.95, 0.95, 0.95)
    triangle = (y >= 70) & (y < 118) & (np.abs(x - 60) <= (y - 70) * 0.6)
    img[triangle] = (0.95, 0.85, 0.1)

    # One-pixel lines at a few angles (bottom middle).
    for angle in (0.0, 20.0, 45.0, 70.0):
        t = np.deg2rad(angle)
        dist = np.abs((x - 100) * np.sin(t) - (y - 95) * np.cos(t))
        inside = (x >= 90) & (x < 124) & (y >= 66) & (y < 124)
        img[(dist < 0.5) & inside] = (0.05, 0.05, 0.05)

    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def main() -> None:
    out = Path(__file__).resolve().parent / "sample.png"
    Image.fromarray(make_sample()).save(out, "PNG", optimize=True)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
