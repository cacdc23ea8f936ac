"""Image files in and out: PNG, JPEG, BMP, TIFF and WebP, 8 or 16 bits, gray or RGB, alpha, ICC, EXIF.

Reading gives float32 planes in [0, 1] plus everything needed to write the result back the way it
came: the bit depth, the alpha plane, the ICC profile and the EXIF block (with the EXIF orientation
already applied to the pixels and reset to 1 in the block).

Decoders and encoders (Pillow plus imagecodecs, i.e. libpng, libtiff and libwebp):
- PNG: headers by Pillow; 8-bit pixels by Pillow, 16-bit by imagecodecs (Pillow has no 16-bit
  RGB(A) mode). All PNGs are encoded by imagecodecs; the iCCP and eXIf chunks are spliced in by
  `png_with_chunks`, so metadata survives at 16 bits too.
- TIFF: headers by a small IFD parser of our own (`_TiffDirectory`, which also finds the
  orientation tag inside EXIF blocks: EXIF is a TIFF structure), all pixels by imagecodecs.
  16-bit files are encoded by imagecodecs (ICC but no EXIF), 8-bit ones by Pillow (ICC, EXIF).
- JPEG, BMP: Pillow. WebP: RIFF chunks parsed here, pixels decoded by imagecodecs, encoded by Pillow.

The decompression-bomb guard (`max_pixels`) is applied to the header size before any pixel is
decoded. Pillow's own guard reads the module global `Image.MAX_IMAGE_PIXELS` and runs in
`Image.open`, in the WebP opener and in the TIFF loader; none of these is used, so the global is
neither consulted nor changed and no DecompressionBombWarning is printed. Headers are parsed
with the plugin classes directly (`Image.open` minus its size check).
`ImageFile.LOAD_TRUNCATED_IMAGES` is left False: a truncated file is an error, never a partial
image. Pillow's warnings about odd metadata (rare) are left to the caller's warning filters.

Quantisation on write: clip to [0, 1] (NaN becomes 0), multiply by 2^b − 1 and round half to
even (`numpy.rint`). Exact ties do not occur for values that came from 8- or 16-bit files.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import (
    BmpImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,  # noqa: F401  (registers the WebP writer)
)

from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write_bytes

ImageFormat = Literal["png", "jpeg", "bmp", "tiff", "webp"]
FORMATS: tuple[ImageFormat, ...] = ("png", "jpeg", "bmp", "tiff", "webp")
SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_FORMAT_FOR_SUFFIX: dict[str, ImageFormat] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
}
_PILLOW_FORMAT: dict[ImageFormat, str] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "bmp": "BMP",
    "tiff": "TIFF",
    "webp": "WEBP",
}
#: Formats that store 16 bits per sample; the others are written with 8.
SIXTEEN_BIT_FORMATS: tuple[ImageFormat, ...] = ("png", "tiff")
#: Formats whose files we write with an alpha plane.
ALPHA_FORMATS: tuple[ImageFormat, ...] = ("png", "tiff", "webp")

EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ICC profile name written into PNG iCCP chunks (the name is not interpreted by readers).
_PNG_ICC_NAME = b"ICC Profile"
#: IFD0 tags carried from a TIFF source into the output's EXIF (descriptive tags only; the
#: structural ones describe the source's strips and samples and would be wrong for the output).
_TIFF_EXIF_TAGS = (270, 271, 272, 282, 283, 296, 305, 306, 315, 33432, 0x8769, 0x8825)

# Magic numbers of formats we recognise but do not read, for a clearer message.
_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"qoif", "QOI"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"%PDF", "PDF"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
)


@dataclass
class ImageData:
    """A decoded image: float planes in [0, 1] plus what is needed to write it back faithfully."""

    pixels: np.ndarray  # float32 H×W×C in [0,1], C = 1 (gray) or 3 (RGB); never includes alpha
    alpha: np.ndarray | None  # float32 H×W in [0,1] or None
    bit_depth: int  # 8 or 16: of the source file, and what the output should be written with
    icc_profile: bytes | None
    exif: bytes | None  # EXIF block starting with b"Exif\0\0", orientation already reset to 1
    source_format: str  # "png", "jpeg", "bmp", "tiff", "webp"

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2]) if self.pixels.ndim == 3 else 1


def image_format_for_suffix(suffix: str) -> str:
    """The format written for a file suffix (".jpg" → "jpeg"), case-insensitive."""
    key = suffix.lower()
    if key and not key.startswith("."):
        key = "." + key
    try:
        return _FORMAT_FOR_SUFFIX[key]
    except KeyError:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        shown = suffix or "(none)"
        raise RestoreError(f"unsupported image file suffix {shown}; use one of {supported}") from None


def _normalised_format(format: str) -> ImageFormat:
    name = format.lower().lstrip(".")
    if name in ("jpg", "jpeg"):
        return "jpeg"
    if name in ("tif", "tiff"):
        return "tiff"
    if name in FORMATS:
        return name  # type: ignore[return-value]
    raise RestoreError(f"unsupported image format {format!r}; use one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------------------------
# TIFF directories (also the structure inside EXIF blocks)


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_TIFF_INT_CODES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}


@dataclass(frozen=True)
class _TiffEntry:
    type: int
    count: int
    offset: int  # where the value bytes start in the buffer


class _TiffDirectory:
    """The first IFD of a TIFF (classic or BigTIFF) or of an EXIF block, parsed lazily.

    Only what the readers need: integer tags, raw byte tags, and where a value lives (so that
    the EXIF orientation can be rewritten in place). Raises ValueError on malformed data.
    """

    def __init__(self, data: bytes) -> None:
        if len(data) < 8:
            raise ValueError("TIFF header is truncated")
        if data[:2] == b"II":
            self.byte_order = "<"
        elif data[:2] == b"MM":
            self.byte_order = ">"
        else:
            raise ValueError("no TIFF byte-order mark")
        bo = self.byte_order
        (magic,) = struct.unpack_from(bo + "H", data, 2)
        if magic == 42:
            (ifd_offset,) = struct.unpack_from(bo + "I", data, 4)
            count_code, count_size, entry_size, inline_size = "H", 2, 12, 4
        elif magic == 43 and len(data) >= 16:
            (ifd_offset,) = struct.unpack_from(bo + "Q", data, 8)
            count_code, count_size, entry_size, inline_size = "Q", 8, 20, 8
        else:
            raise ValueError("not a TIFF structure")
        if not 8 <= ifd_offset <= len(data) - count_size:
            raise ValueError("TIFF directory offset is outside the data")
        (n_entries,) = struct.unpack_from(bo + count_code, data, ifd_offset)
        start = ifd_offset + count_size
        if start + n_entries * entry_size > len(data):
            raise ValueError("TIFF directory is truncated")
        value_code = "I" if inline_size == 4 else "Q"
        self.data = data
        self.entries: dict[int, _TiffEntry] = {}
        for i in range(n_entries):
            pos = start + i * entry_size
            tag, type_ = struct.unpack_from(bo + "HH", data, pos)
            (count,) = struct.unpack_from(bo + value_code, data, pos + 4)
            size = _TIFF_TYPE_SIZES.get(type_)
            if size is None:
                continue  # unknown type: skip, as readers must
            if size * count <= inline_size:
                offset = pos + 4 + inline_size
            else:
                (offset,) = struct.unpack_from(bo + value_code, data, pos + 4 + inline_size)
            self.entries.setdefault(tag, _TiffEntry(type_, count, offset))

    def ints(self, tag: int) -> tuple[int, ...] | None:
        entry = self.entries.get(tag)
        if entry is None or entry.type not in _TIFF_INT_CODES:
            return None
        size = _TIFF_TYPE_SIZES[entry.type]
        if entry.offset + size * entry.count > len(self.data):
            raise ValueError(f"TIFF tag {tag} points outside the data")
        code = f"{self.byte_order}{entry.count}{_TIFF_INT_CODES[entry.type]}"
        return tuple(int(v) for v in struct.unpack_from(code, self.data, entry.offset))

    def int(self, tag: int, default: int) -> int:
        values = self.ints(tag)
        return values[0] if values else default

    def raw(self, tag: int) -> bytes | None:
        entry = self.entries.get(tag)
        if entry is None:
            return None
        end = entry.offset + _TIFF_TYPE_SIZES[entry.type] * entry.count
        if end > len(self.data):
            raise ValueError(f"TIFF tag {tag} points outside the data")
        return bytes(self.data[entry.offset : end])


def exif_orientation(exif: bytes | None) -> int:
    """The EXIF orientation (1–8) of an EXIF block (with or without the b"Exif\\0\\0" header); 1 if
    absent, unreadable or out of range."""
    if not exif:
        return 1
    payload = exif[len(EXIF_HEADER) :] if exif.startswith(EXIF_HEADER) else exif
    try:
        value = _TiffDirectory(payload).int(_ORIENTATION_TAG, 1)
    except (ValueError, struct.error):
        return 1
    return value if 1 <= value <= 8 else 1


def exif_with_orientation_reset(exif: bytes | None) -> bytes | None:
    """The EXIF block with its orientation tag set to 1, everything else byte for byte the same.

    Returns the block with the b"Exif\\0\\0" header, or None when there is none or it cannot be
    parsed (an EXIF whose orientation cannot be reset must not be carried: viewers would rotate
    the already-rotated pixels again).
    """
    if not exif:
        return None
    payload = exif[len(EXIF_HEADER) :] if exif.startswith(EXIF_HEADER) else exif
    try:
        directory = _TiffDirectory(payload)
        entry = directory.entries.get(_ORIENTATION_TAG)
        if entry is None:
            return EXIF_HEADER + bytes(payload)
        if entry.type not in (3, 4) or entry.count < 1 or entry.offset + 4 > len(payload):
            return None
        patched = bytearray(payload)
        code = directory.byte_order + ("H" if entry.type == 3 else "I")
        struct.pack_into(code, patched, entry.offset, 1)
        return EXIF_HEADER + bytes(patched)
    except (ValueError, struct.error):
        return None


def apply_exif_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Transpose an H×W[×C] array so that EXIF orientation `orientation` becomes 1.

    The same transforms as PIL.ImageOps.exif_transpose: 2 mirror, 3 rotate 180°, 4 flip,
    5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° counter-clockwise.
    """
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return np.swapaxes(array, 0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return np.swapaxes(array[::-1, ::-1], 0, 1)
    if orientation == 8:
        return np.rot90(array, 1)
    return array


# --------------------------------------------------------------------------------------------
# PNG chunks


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk's data, in file order; stops at IEND or the end of data."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        start = pos + 8
        end = start + length
        yield kind, start, min(end, len(data))
        if kind == b"IEND":
            return
        pos = end + 4


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Insert chunks (type, data) right after IHDR; used for iCCP and eXIf, which precede IDAT."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG stream")
    (ihdr_length,) = struct.unpack_from(">I", png, 8)
    cut = 8 + 12 + ihdr_length
    extra = b"".join(_png_chunk(kind, payload) for kind, payload in chunks)
    return png[:cut] + extra + png[cut:]


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Decoded:
    """Integer planes as stored in the file, before the orientation is applied and before scaling."""

    pixels: np.ndarray  # H×W×C uint8 or uint16, C = 1 or 3
    alpha: np.ndarray | None  # H×W, same dtype
    bit_depth: int
    icc: bytes | None
    exif: bytes | None  # b"Exif\0\0" block as found (orientation not yet reset)
    orientation: int


def _read_file_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RestoreError("file not found", path) from None
    except IsADirectoryError:
        raise RestoreError("is a directory, not an image file", path) from None
    except PermissionError:
        raise RestoreError("cannot read: permission denied", path) from None
    except OSError as error:
        raise RestoreError(f"cannot read: {error.strerror or error}", path) from None
    if not data:
        raise RestoreError("empty file", path)
    return data


def _sniff_format(data: bytes, path: Path) -> ImageFormat:
    """The format from the file's magic number (never from its suffix)."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    for offset, magic, name in _OTHER_FORMATS:
        if data[offset : offset + len(magic)] == magic:
            raise RestoreError(f"unsupported image format {name} (supported: PNG, JPEG, BMP, TIFF, WebP)", path)
    raise RestoreError("not an image file (expected PNG, JPEG, BMP, TIFF or WebP)", path)


def _check_pixels(width: int, height: int, max_pixels: int, path: Path) -> None:
    if width <= 0 or height <= 0:
        raise RestoreError(f"image has invalid size {width}×{height}", path)
    count = width * height
    if count > max_pixels:
        raise RestoreError(f"image has {width}×{height} = {count} pixels, more than --max-pixels {max_pixels}", path)


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _exif_block(raw: bytes | None) -> bytes | None:
    """EXIF as stored by JPEG/WebP/PNG (with or without the b"Exif\\0\\0" header) → with it."""
    if not raw:
        return None
    return raw if raw.startswith(EXIF_HEADER) else EXIF_HEADER + raw


_PILLOW_CLASSES: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,  # not jpeg_factory: MPO files are read as their first image
    "bmp": BmpImagePlugin.BmpImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
}


def _pillow_header(data: bytes, fmt: str, path: Path) -> ImageFile.ImageFile:
    """Parse the header with Pillow's plugin class: `Image.open` minus its global size guard."""
    try:
        return _PILLOW_CLASSES[fmt](io.BytesIO(data), str(path))
    except (SyntaxError, OSError, ValueError, IndexError, TypeError, EOFError, KeyError, struct.error) as error:
        raise RestoreError(f"corrupt or truncated {fmt.upper()} header ({_short(error)})", path) from None


def _load(im: ImageFile.ImageFile, path: Path) -> None:
    """Decode all pixels; truncated or corrupt data is an error, never a partial image."""
    try:
        im.load()
    except EOFError:
        raise RestoreError("truncated image data", path) from None
    except (OSError, SyntaxError, ValueError, IndexError, struct.error, zlib.error) as error:
        if "truncat" in str(error).lower():
            raise RestoreError("truncated image data", path) from None
        raise RestoreError(f"corrupt image data ({_short(error)})", path) from None


def _pillow_planes(im: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """uint8 H×W×C planes (C = 1 or 3) and alpha from a loaded 8-bit Pillow image.

    Returns (pixels, alpha, keeps_icc): the ICC profile no longer applies after CMYK → RGB.
    """
    mode = im.mode
    has_transparency = "transparency" in im.info
    keeps_icc = True
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or has_transparency else "RGB")
    elif mode == "L" and has_transparency:
        im = im.convert("LA")
    elif mode == "RGB" and has_transparency:
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode in ("RGBX", "YCbCr"):
        im = im.convert("RGB")
    elif mode == "CMYK":
        im = im.convert("RGB")
        keeps_icc = False
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        described = {"F": "32-bit float", "I": "32-bit integer", "LAB": "CIELAB", "HSV": "HSV"}.get(mode, mode)
        raise RestoreError(f"unsupported image mode {mode} ({described})", path)
    pixels, alpha = _split_channels(np.asarray(im), path)
    return pixels, alpha, keeps_icc


def _split_channels(array: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """H×W, H×W×1/2/3/4 → (H×W×C pixels, alpha or None) by channel count."""
    if array.ndim == 2:
        return array[:, :, None], None
    channels = array.shape[2]
    if channels in (1, 3):
        return array, None
    if channels == 2:
        return array[:, :, :1], array[:, :, 1]
    if channels == 4:
        return array[:, :, :3], array[:, :, 3]
    raise RestoreError(f"unsupported image mode: {channels} channels", path)


def _transparency_alpha(pixels: np.ndarray, transparency: Any, maxval: int) -> np.ndarray | None:
    """Alpha from a PNG tRNS colour key (gray value or RGB triple): 0 where the pixel matches."""
    key = np.atleast_1d(np.asarray(transparency, dtype=np.int64))
    if key.size != pixels.shape[2]:
        return None
    matches = np.all(pixels == key.astype(pixels.dtype), axis=2)
    return np.where(matches, 0, maxval).astype(pixels.dtype)


def _unpremultiply(pixels: np.ndarray, alpha: np.ndarray, maxval: int) -> np.ndarray:
    """Associated (premultiplied) alpha → straight colour; 0 where alpha is 0."""
    a = alpha.astype(np.float64)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = np.where(a > 0, pixels * (maxval / np.maximum(a, 1)), 0)
    return np.clip(np.rint(straight), 0, maxval).astype(pixels.dtype)


# PNG ----------------------------------------------------------------------------------------


def _png_ihdr(data: bytes, path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise RestoreError("corrupt or truncated PNG header", path)
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    return width, height, depth, colour


def _png_exif(data: bytes) -> bytes | None:
    """The eXIf chunk, wherever it is (Pillow only sees one after IDAT once pixels are loaded)."""
    for kind, start, end in _png_chunks(data):
        if kind == b"eXIf":
            return EXIF_HEADER + data[start:end]
    return None


def _png_pixel_stream(data: bytes) -> bytes:
    """The PNG reduced to IHDR, IDAT and IEND: libpng then sees no ancillary chunk to warn about
    on stderr (a bad iCCP, say), and no tRNS to expand (alpha from tRNS is made here)."""
    parts = [data[: len(_PNG_SIGNATURE)]]
    for kind, start, end in _png_chunks(data):
        if kind in (b"IHDR", b"IDAT", b"IEND"):
            parts.append(data[start - 8 : end + 4])
    return b"".join(parts)


def _read_png(data: bytes, path: Path, max_pixels: int) -> _Decoded:
    width, height, depth, _ = _png_ihdr(data, path)
    _check_pixels(width, height, max_pixels, path)
    im = _pillow_header(data, "png", path)
    icc = im.info.get("icc_profile") or None
    exif = _png_exif(data)
    if depth != 16:
        _load(im, path)
        pixels, alpha, keeps_icc = _pillow_planes(im, path)
        return _Decoded(pixels, alpha, 8, icc if keeps_icc else None, exif, exif_orientation(exif))
    import imagecodecs

    try:
        array = imagecodecs.png_decode(_png_pixel_stream(data))
    except Exception as error:  # imagecodecs.PngError
        if "too small" in str(error) or "truncat" in str(error).lower():
            raise RestoreError("truncated image data", path) from None
        raise RestoreError(f"corrupt image data ({_short(error)})", path) from None
    if array.dtype != np.uint16 or array.shape[:2] != (height, width):
        raise RestoreError(f"unsupported PNG layout (decoded {array.dtype} {array.shape})", path)
    pixels, alpha = _split_channels(array, path)
    if alpha is None and "transparency" in im.info:
        alpha = _transparency_alpha(pixels, im.info["transparency"], 65535)
    return _Decoded(pixels, alpha, 16, icc, exif, exif_orientation(exif))


# JPEG and BMP -------------------------------------------------------------------------------


def _read_with_pillow(data: bytes, fmt: str, path: Path, max_pixels: int) -> _Decoded:
    im = _pillow_header(data, fmt, path)
    _check_pixels(im.size[0], im.size[1], max_pixels, path)
    icc = im.info.get("icc_profile") or None
    exif = _exif_block(im.info.get("exif"))
    _load(im, path)
    pixels, alpha, keeps_icc = _pillow_planes(im, path)
    return _Decoded(pixels, alpha, 8, icc if keeps_icc else None, exif, exif_orientation(exif))


# WebP (decoded by libwebp through imagecodecs: Pillow's WebP opener applies its global guard) --


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, start, end) of each chunk of a RIFF/WEBP file."""
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        start = pos + 8
        yield fourcc, start, min(start + length, len(data))
        pos = start + length + (length & 1)


def _read_webp(data: bytes, path: Path, max_pixels: int) -> _Decoded:
    width = height = 0
    icc = exif = None
    for fourcc, start, end in _riff_chunks(data):
        payload = data[start:end]
        if fourcc == b"VP8X" and len(payload) >= 10:
            width = 1 + int.from_bytes(payload[4:7], "little")
            height = 1 + int.from_bytes(payload[7:10], "little")
        elif fourcc == b"VP8L" and not width and len(payload) >= 5 and payload[0] == 0x2F:
            bits = int.from_bytes(payload[1:5], "little")
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif fourcc == b"VP8 " and not width and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
            width = int.from_bytes(payload[6:8], "little") & 0x3FFF
            height = int.from_bytes(payload[8:10], "little") & 0x3FFF
        elif fourcc == b"ICCP":
            icc = payload or None
        elif fourcc == b"EXIF":
            exif = _exif_block(payload)
    if not width:
        raise RestoreError("corrupt or truncated WEBP header", path)
    _check_pixels(width, height, max_pixels, path)
    import imagecodecs

    try:
        array = imagecodecs.webp_decode(data, index=0)
    except Exception as error:  # imagecodecs.WebpError
        raise RestoreError(f"truncated or corrupt image data ({_short(error)})", path) from None
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[:2] != (height, width):
        raise RestoreError(f"unsupported WebP layout (decoded {array.dtype} {array.shape})", path)
    pixels, alpha = _split_channels(array, path)
    return _Decoded(pixels, alpha, 8, icc, exif, exif_orientation(exif))


# TIFF (decoded by libtiff through imagecodecs; header by `_TiffDirectory`) -------------------

_PHOTOMETRIC_NAMES = {0: "min-is-white", 1: "min-is-black", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK", 6: "YCbCr", 8: "CIELAB"}


def _tiff_exif(data: bytes) -> bytes | None:
    """An EXIF block made of a TIFF's descriptive IFD0 tags and its EXIF/GPS sub-IFDs (via Pillow;
    None when Pillow cannot parse the file or the tags)."""
    try:
        source = TiffImagePlugin.TiffImageFile(io.BytesIO(data)).getexif()
        exif = Image.Exif()
        for tag in _TIFF_EXIF_TAGS:
            if tag in source:
                exif[tag] = source.get_ifd(tag) if tag in (0x8769, 0x8825) else source[tag]
        return _exif_block(exif.tobytes()) if len(exif) else None
    except Exception:  # metadata that cannot be parsed must not stop the image from being read
        return None


def _read_tiff(data: bytes, path: Path, max_pixels: int) -> _Decoded:
    try:
        directory = _TiffDirectory(data)
        width, height = directory.int(256, 0), directory.int(257, 0)
        bits = directory.ints(258) or (1,)
        sample_format = directory.int(339, 1)
        photometric = directory.int(262, 1)
        planar = directory.int(284, 1)
        extra = directory.ints(338) or ()
        orientation = directory.int(274, 1)
        icc = directory.raw(34675) or None
        colormap = directory.ints(320)
    except (ValueError, struct.error) as error:
        raise RestoreError(f"corrupt or truncated TIFF header ({_short(error)})", path) from None
    _check_pixels(width, height, max_pixels, path)
    depth = max(bits)
    kind = _PHOTOMETRIC_NAMES.get(photometric, f"photometric {photometric}")
    if sample_format != 1 or depth not in (1, 2, 4, 8, 16) or len(set(bits)) != 1:
        number = {2: "signed integer", 3: "float"}.get(sample_format, "integer")
        raise RestoreError(f"unsupported image mode: {'/'.join(map(str, bits))}-bit {number} TIFF samples", path)
    import imagecodecs

    try:
        array = imagecodecs.tiff_decode(data, index=0, verbose=0)
    except Exception as error:  # imagecodecs.TiffError; IndexError for a missing directory
        raise RestoreError(f"truncated or corrupt image data ({_short(error)})", path) from None
    if array.ndim == 3 and planar == 2 and array.shape[1:] == (height, width):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[:2] != (height, width):
        raise RestoreError(f"unsupported TIFF layout (decoded shape {array.shape})", path)
    keeps_icc = True
    alpha = None
    if photometric in (0, 1, 2):
        colour = 3 if photometric == 2 else 1
        if array.shape[2] < colour or (colour == 3 and depth not in (8, 16)):
            raise RestoreError(f"unsupported image mode: {depth}-bit {kind} TIFF", path)
        if depth < 8:  # 1/2/4-bit gray → 8-bit levels
            levels = array.astype(np.uint8) * np.uint8(255 // ((1 << depth) - 1))
            bit_depth = 8
        else:
            levels, bit_depth = array, depth
        maxval = (1 << bit_depth) - 1
        pixels = levels[:, :, :colour]
        if photometric == 0:
            pixels = maxval - pixels
        if levels.shape[2] > colour and extra and extra[0] in (1, 2):
            alpha = levels[:, :, colour]
            if extra[0] == 1:
                pixels = _unpremultiply(pixels, alpha, maxval)
    elif photometric == 3 and depth <= 8 and colormap is not None and len(colormap) == 3 << depth:
        table = np.asarray(colormap, dtype=np.int64).reshape(3, -1).T  # (2^depth, 3), 16-bit entries
        table8 = (table >> 8).astype(np.uint8)  # exact for both v·257 and v·256 (Pillow) writers
        pixels, bit_depth = table8[array[:, :, 0].astype(np.intp)], 8
    elif photometric in (5, 6) and depth == 8 and array.shape[2] == 3:  # libtiff converted to RGB
        pixels, bit_depth = array, 8
        keeps_icc = photometric != 5  # a CMYK profile does not describe the RGB pixels
    else:
        raise RestoreError(f"unsupported image mode: {depth}-bit {kind} TIFF", path)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise RestoreError(f"unsupported TIFF sample type {pixels.dtype}", path)
    return _Decoded(
        pixels,
        alpha,
        bit_depth,
        icc if keeps_icc else None,
        _tiff_exif(data),
        orientation if 1 <= orientation <= 8 else 1,
    )


def read_image(path: Path, max_pixels: int = 200_000_000) -> ImageData:
    """Read an image file into float32 planes in [0, 1]; see the module docstring.

    Refuses images larger than `max_pixels` from the header, before decoding. Grayscale stays
    one channel; palette becomes RGB(A); 1/2/4-bit becomes 8-bit gray; CMYK/YCbCr become RGB
    (a CMYK ICC profile is dropped). The EXIF orientation is applied to the pixels and reset to 1
    in `exif`. Pillow warnings about odd metadata are left to the caller's warning filters.
    """
    path = Path(path)
    data = _read_file_bytes(path)
    fmt = _sniff_format(data, path)
    if fmt == "png":
        decoded = _read_png(data, path, max_pixels)
    elif fmt == "tiff":
        decoded = _read_tiff(data, path, max_pixels)
    elif fmt == "webp":
        decoded = _read_webp(data, path, max_pixels)
    else:
        decoded = _read_with_pillow(data, fmt, path, max_pixels)
    divisor = np.float32((1 << decoded.bit_depth) - 1)  # dividing gives v/maxval correctly rounded
    pixels = apply_exif_orientation(decoded.pixels, decoded.orientation)
    alpha = None
    if decoded.alpha is not None:
        alpha = np.ascontiguousarray(apply_exif_orientation(decoded.alpha, decoded.orientation), np.float32) / divisor
    return ImageData(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32) / divisor,
        alpha=alpha,
        bit_depth=decoded.bit_depth,
        icc_profile=decoded.icc,
        exif=exif_with_orientation_reset(decoded.exif),
        source_format=fmt,
    )


# --------------------------------------------------------------------------------------------
# Writing


def quantise(values: np.ndarray, bits: int) -> np.ndarray:
    """Float [0, 1] → uint8/uint16: clip (NaN → 0), scale by 2^bits − 1, round half to even."""
    maxval = (1 << bits) - 1
    scaled = np.rint(np.clip(np.nan_to_num(values.astype(np.float64), nan=0.0), 0.0, 1.0) * maxval)
    return scaled.astype(np.uint16 if bits == 16 else np.uint8)


def _validated_planes(image: ImageData) -> tuple[np.ndarray, np.ndarray | None]:
    pixels = np.asarray(image.pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"pixels must be H×W×1 or H×W×3, got shape {pixels.shape}")
    alpha = None if image.alpha is None else np.asarray(image.alpha)
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        raise ValueError(f"alpha shape {alpha.shape} does not match pixels {pixels.shape[:2]}")
    if image.bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {image.bit_depth}")
    return pixels, alpha


def _interleaved(pixels: np.ndarray, alpha: np.ndarray | None, bits: int) -> np.ndarray:
    """H×W (gray) or H×W×2/3/4 integer array with alpha last."""
    planes = quantise(pixels, bits)
    if alpha is not None:
        planes = np.concatenate([planes, quantise(alpha, bits)[:, :, None]], axis=2)
    if planes.shape[2] == 1:
        planes = planes[:, :, 0]
    return np.ascontiguousarray(planes)


def _encode_png(array: np.ndarray, icc: bytes | None, exif: bytes | None, level: int = 6) -> bytes:
    import imagecodecs

    png = bytes(imagecodecs.png_encode(array, level=level))
    chunks: list[tuple[bytes, bytes]] = []
    if icc:
        chunks.append((b"iCCP", _PNG_ICC_NAME + b"\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append((b"eXIf", exif[len(EXIF_HEADER) :]))
    return png_with_chunks(png, chunks) if chunks else png


def _encode_tiff16(array: np.ndarray, icc: bytes | None) -> bytes:
    import imagecodecs

    channels = 1 if array.ndim == 2 else array.shape[2]
    return bytes(
        imagecodecs.tiff_encode(
            array,
            photometric="rgb" if channels >= 3 else "minisblack",
            extrasample=imagecodecs.TIFF.EXTRASAMPLE.UNASSALPHA if channels in (2, 4) else None,
            compression=imagecodecs.TIFF.COMPRESSION.ADOBE_DEFLATE,
            predictor=imagecodecs.TIFF.PREDICTOR.HORIZONTAL,
            iccprofile=icc,
        )
    )


def _encode_with_pillow(
    array: np.ndarray,
    fmt: ImageFormat,
    quality: int,
    icc: bytes | None,
    exif: bytes | None,
) -> bytes:
    im = Image.fromarray(array)  # uint8 H×W → L, H×W×2 → LA, ×3 → RGB, ×4 → RGBA
    mode = im.mode
    options: dict[str, Any] = {}
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    if fmt == "jpeg":
        options["quality"] = quality
        if quality >= 90:
            options["subsampling"] = 0  # 4:4:4: chroma subsampling would undo restored colour detail
        if exif and len(exif) > 65533:
            del options["exif"]  # a JPEG APP1 segment cannot hold it; drop rather than fail
    elif fmt == "webp":
        if mode in ("L", "LA"):
            im = im.convert("RGBA" if mode == "LA" else "RGB")  # WebP has no gray modes
        if quality >= 100:
            options.update(lossless=True, exact=True, quality=100)
        else:
            options["quality"] = quality
    elif fmt == "tiff":
        options["compression"] = "tiff_adobe_deflate"
    elif fmt == "bmp":
        options.pop("icc_profile", None)
        options.pop("exif", None)
    buffer = io.BytesIO()
    im.save(buffer, _PILLOW_FORMAT[fmt], **options)
    return buffer.getvalue()


def encode_image(
    image: ImageData,
    format: str,
    *,
    quality: int = 95,
    strip_metadata: bool = False,
    compress_level: int = 6,
) -> bytes:
    """The encoded file contents for `image` in `format`; `write_image` without the file."""
    fmt = _normalised_format(format)
    pixels, alpha = _validated_planes(image)
    if alpha is not None and fmt not in ALPHA_FORMATS:
        raise RestoreError(f"{fmt.upper()} cannot store an alpha channel; write PNG, TIFF or WebP, or drop the alpha")
    if fmt in ("jpeg", "webp") and not 1 <= quality <= 100:
        raise RestoreError(f"{fmt.upper()} quality must be between 1 and 100, got {quality}")
    if not 0 <= compress_level <= 9:
        raise RestoreError(f"PNG compression level must be between 0 and 9, got {compress_level}")
    bits = image.bit_depth if fmt in SIXTEEN_BIT_FORMATS else 8
    icc = None if strip_metadata else image.icc_profile or None
    exif = None if strip_metadata else exif_with_orientation_reset(image.exif)
    array = _interleaved(pixels, alpha, bits)
    if fmt == "png":
        return _encode_png(array, icc, exif, compress_level)
    if fmt == "tiff" and bits == 16:
        return _encode_tiff16(array, icc)
    return _encode_with_pillow(array, fmt, quality, icc, exif)


def write_image(
    path: Path,
    image: ImageData,
    *,
    format: str | None = None,
    quality: int = 95,
    strip_metadata: bool = False,
    compress_level: int = 6,
) -> None:
    """Write `image` to `path` atomically, in `format` or the one its suffix names.

    PNG and TIFF keep `image.bit_depth` (8 or 16); JPEG, BMP and WebP are written with 8 bits.
    Alpha is written as LA/RGBA (PNG, TIFF, WebP; JPEG and BMP refuse it). `quality` is the
    JPEG/WebP quality (1–100; JPEG ≥ 90 uses 4:4:4 chroma; WebP 100 is lossless). ICC and EXIF
    are written where the format allows (not BMP; no EXIF in 16-bit TIFF), unless
    `strip_metadata`. `compress_level` is the PNG zlib level (0–9; 6 is Pillow's default too).
    """
    path = Path(path)
    fmt = _normalised_format(format) if format else image_format_for_suffix(path.suffix)
    try:
        data = encode_image(
            image, fmt, quality=quality, strip_metadata=strip_metadata, compress_level=compress_level
        )
    except RestoreError as error:
        if error.path is None:
            raise RestoreError(error.message, path) from None
        raise
    atomic_write_bytes(path, data)


# --------------------------------------------------------------------------------------------
# Alpha resampling


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H×W alpha plane to `size` = (height, width) with Lanczos-3 in float32, clipped
    to [0, 1] (for outputs whose size changed, e.g. after ×4 SR). Antialiased when shrinking."""
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (height, width), got {size}")
    plane = np.ascontiguousarray(alpha, dtype=np.float32)
    if plane.ndim != 2:
        raise ValueError(f"alpha must be H×W, got shape {plane.shape}")
    if plane.shape == (height, width):
        return plane.copy()
    resized = Image.fromarray(plane).resize((width, height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
