"""Small generated images for the end-to-end CLI tests, written with independent writers.

8-bit files are written with Pillow, 16-bit PNG with a PNG encoder written here (filter 0, zlib),
16-bit TIFF with tifffile, so that a bug in `restore_cli.io` cannot hide itself in the inputs.
16-bit PNG outputs are read back with libpng (imagecodecs), TIFF with tifffile, 8-bit with Pillow.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(h: int = 48, w: int = 64, channels: int = 3, seed: int = 0,
                 lo: float = 40.0, hi: float = 215.0, noise: float = 8.0) -> np.ndarray:
    """A smooth random picture plus some fine texture, float64 H×W×C on the 0–255 scale,
    kept inside [lo − 4·noise, hi + 4·noise] (no clipping for the defaults)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(lo, hi, size=(h // 8 + 2, w // 8 + 2, channels))
    yy = np.linspace(0, coarse.shape[0] - 1.001, h)
    xx = np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[:, None, None], (xx - x0)[None, :, None]
    img = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
           + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)
    texture = np.clip(rng.normal(0.0, noise, img.shape), -4 * noise, 4 * noise)
    return img + texture


def uint8_image(h: int = 48, w: int = 64, channels: int = 3, seed: int = 0, **kwargs: float) -> np.ndarray:
    """H×W×C uint8 (C = 1, 3 or 4)."""
    return np.clip(np.rint(smooth_image(h, w, channels, seed, **kwargs)), 0, 255).astype(np.uint8)


def uint16_image(h: int = 48, w: int = 64, channels: int = 3, seed: int = 0, **kwargs: float) -> np.ndarray:
    """H×W×C uint16 using the full 16-bit resolution (not an 8-bit image times 257)."""
    scaled = smooth_image(h, w, channels, seed, **kwargs) * 257.0
    return np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)


def write_png8(path: Path, array: np.ndarray) -> np.ndarray:
    """Write uint8 H×W×{1,3,4} (or H×W) with Pillow; returns the array as H×W×C."""
    array = np.asarray(array, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[:, :, 0] if mode == "L" else array, mode).save(path)
    return array


def write_jpeg(path: Path, array: np.ndarray, quality: int = 95) -> np.ndarray:
    """Write uint8 H×W×3 as JPEG with Pillow; returns the decoded pixels (what a reader sees)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), "RGB").save(path, quality=quality)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png16(path: Path, array: np.ndarray) -> np.ndarray:
    """Write uint16 H×W×{1,2,3,4} as a 16-bit PNG (filter 0 on every row, big-endian samples)."""
    array = np.asarray(array, dtype=np.uint16)
    if array.ndim == 2:
        array = array[:, :, None]
    h, w, c = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = array.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return array


def write_tiff16(path: Path, array: np.ndarray) -> np.ndarray:
    """Write uint16 H×W×3 (or H×W) as a 16-bit TIFF with tifffile."""
    import tifffile

    array = np.asarray(array, dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array,
                     photometric="rgb" if array.ndim == 3 and array.shape[2] == 3 else "minisblack")
    return array if array.ndim == 3 else array[:, :, None]


def png_bit_depth(path: Path) -> int:
    """The bit depth in a PNG's IHDR."""
    data = Path(path).read_bytes()
    assert data[12:16] == b"IHDR", f"{path} is not a PNG"
    return data[24]


def read_output(path: Path) -> np.ndarray:
    """Read an output file as H×W×C integers (uint8 or uint16), alpha last if present."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(path)
    elif suffix == ".png" and png_bit_depth(path) == 16:
        import imagecodecs

        array = imagecodecs.png_decode(path.read_bytes())
    else:
        with Image.open(path) as im:
            array = np.asarray(im)
    return array[:, :, None] if array.ndim == 2 else array


def temp_files_under(folder: Path) -> list[Path]:
    """Files an atomic write could leave behind: names starting with '.' and ending '.tmp'."""
    return [p for p in Path(folder).rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
