from __future__ import annotations

import importlib.util
import io
import struct
import warnings
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps

from restore_cli.errors import RestoreError
from restore_cli.io import atomic, images
from restore_cli.io.images import (
    SUPPORTED_SUFFIXES,
    ImageData,
    image_format_for_suffix,
    read_image,
    resize_alpha,
    write_image,
)

DATA = Path(__file__).resolve().parents[1] / "data"
RNG_SEED = 1234


def _levels(shape: tuple[int, ...], bits: int, seed: int = RNG_SEED) -> np.ndarray:
    """Random integer levels of a `bits`-bit image, covering 0 and the maximum."""
    maxval = (1 << bits) - 1
    values = np.random.default_rng(seed).integers(0, maxval + 1, size=shape)
    values.flat[0], values.flat[-1] = 0, maxval
    return values


def _image(levels: np.ndarray, alpha: np.ndarray | None, bits: int, **meta: object) -> ImageData:
    maxval = (1 << bits) - 1
    return ImageData(
        pixels=(levels / maxval).astype(np.float32),
        alpha=None if alpha is None else (alpha / maxval).astype(np.float32),
        bit_depth=bits,
        icc_profile=meta.get("icc"),  # type: ignore[arg-type]
        exif=meta.get("exif"),  # type: ignore[arg-type]
        source_format="png",
    )


def _as_levels(values: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(values.astype(np.float64) * ((1 << bits) - 1)).astype(np.int64)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    """A PNG chunk, written out here independently of the module's own helper."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _insert_after_ihdr(png: bytes, *chunks: bytes) -> bytes:
    return png[:33] + b"".join(chunks) + png[33:]


def _exif_bytes(orientation: int | None, make: str = "TestCam") -> bytes:
    exif = Image.Exif()
    exif[0x010F] = make
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def _orientation_of(exif: bytes | None) -> int | None:
    parsed = Image.Exif()
    parsed.load(exif)
    return parsed.get(0x0112)


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# ------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels,with_alpha", [(1, False), (1, True), (3, False), (3, True)], ids=["L", "LA", "RGB", "RGBA"])
def test_png_tiff_round_trip_is_exact(tmp_path: Path, suffix: str, bits: int, channels: int, with_alpha: bool) -> None:
    levels = _levels((13, 17, channels), bits)
    alpha = _levels((13, 17), bits, seed=7) if with_alpha else None
    path = tmp_path / f"img{suffix}"
    write_image(path, _image(levels, alpha, bits))
    back = read_image(path)
    assert back.bit_depth == bits
    assert back.source_format == ("png" if suffix == ".png" else "tiff")
    assert back.pixels.dtype == np.float32 and back.pixels.shape == (13, 17, channels)
    np.testing.assert_array_equal(_as_levels(back.pixels, bits), levels)
    if with_alpha:
        assert back.alpha is not None and back.alpha.dtype == np.float32
        np.testing.assert_array_equal(_as_levels(back.alpha, bits), alpha)
    else:
        assert back.alpha is None


def test_16_bit_png_checked_by_pillow(tmp_path: Path) -> None:
    """Pillow reads 16-bit gray exactly and 16-bit RGB(A) as the high bytes: an independent decoder."""
    gray = _levels((9, 11, 1), 16)
    write_image(tmp_path / "g.png", _image(gray, None, 16))
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im).astype(np.int64), gray[:, :, 0])
    rgb, alpha = _levels((9, 11, 3), 16), _levels((9, 11), 16, seed=3)
    write_image(tmp_path / "c.png", _image(rgb, alpha, 16))
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "RGBA"
        high = np.asarray(im).astype(np.int64)
    np.testing.assert_array_equal(high[:, :, :3], rgb >> 8)
    np.testing.assert_array_equal(high[:, :, 3], alpha >> 8)


def test_16_bit_files_from_other_writers_are_read_exactly(tmp_path: Path) -> None:
    gray = _levels((8, 10), 16).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "pillow16.png")  # Pillow I;16 writer
    back = read_image(tmp_path / "pillow16.png")
    assert back.bit_depth == 16 and back.pixels.shape == (8, 10, 1)
    np.testing.assert_array_equal(_as_levels(back.pixels[:, :, 0], 16), gray)
    Image.fromarray(gray).save(tmp_path / "pillow16.tif")
    np.testing.assert_array_equal(_as_levels(read_image(tmp_path / "pillow16.tif").pixels[:, :, 0], 16), gray)
    rgba = _levels((8, 10, 4), 16).astype(np.uint16)
    (tmp_path / "ic.png").write_bytes(imagecodecs.png_encode(rgba))
    back = read_image(tmp_path / "ic.png")
    np.testing.assert_array_equal(_as_levels(back.pixels, 16), rgba[:, :, :3])
    np.testing.assert_array_equal(_as_levels(back.alpha, 16), rgba[:, :, 3])


def test_bmp_and_lossless_webp_round_trip(tmp_path: Path) -> None:
    rgb = _levels((12, 9, 3), 8)
    for name in ("a.bmp", "a.webp"):
        write_image(tmp_path / name, _image(rgb, None, 8), quality=100)
        back = read_image(tmp_path / name)
        assert back.bit_depth == 8 and back.alpha is None
        np.testing.assert_array_equal(_as_levels(back.pixels, 8), rgb)
    gray = _levels((12, 9, 1), 8)
    write_image(tmp_path / "g.bmp", _image(gray, None, 8))
    back = read_image(tmp_path / "g.bmp")
    assert back.pixels.shape == (12, 9, 1)
    np.testing.assert_array_equal(_as_levels(back.pixels, 8), gray)
    alpha = _levels((12, 9), 8, seed=5)
    write_image(tmp_path / "rgba.webp", _image(rgb, alpha, 8), quality=100)
    back = read_image(tmp_path / "rgba.webp")
    np.testing.assert_array_equal(_as_levels(back.pixels, 8), rgb)
    np.testing.assert_array_equal(_as_levels(back.alpha, 8), alpha)


def test_jpeg_round_trip_is_close_and_keeps_gray(tmp_path: Path) -> None:
    sample = read_image(DATA / "sample.png")
    write_image(tmp_path / "s.jpg", sample, quality=95)
    back = read_image(tmp_path / "s.jpg")
    assert back.source_format == "jpeg" and back.bit_depth == 8 and back.pixels.shape == sample.pixels.shape
    mse = float(np.mean((back.pixels.astype(np.float64) - sample.pixels) ** 2))
    assert 10 * np.log10(1 / mse) > 35
    gray = ImageData(sample.pixels.mean(axis=2, keepdims=True), None, 8, None, None, "png")
    write_image(tmp_path / "g.jpeg", gray)
    assert read_image(tmp_path / "g.jpeg").pixels.shape == (128, 192, 1)


def test_16_bit_source_written_to_8_bit_format_is_rounded(tmp_path: Path) -> None:
    levels = np.arange(65536, dtype=np.int64).reshape(256, 256)
    write_image(tmp_path / "q.bmp", _image(levels[:, :, None], None, 16))
    back = _as_levels(read_image(tmp_path / "q.bmp").pixels[:, :, 0], 8)
    expected = (levels * 255 * 2 + 65535) // (2 * 65535)  # round(v·255/65535), in integers
    np.testing.assert_array_equal(back, expected)


def test_quantise_rounds_half_to_even_and_clips() -> None:
    values = np.array([-0.5, 0.5 / 255, 1.5 / 255, 2.5 / 255, np.nan, 1.7])
    np.testing.assert_array_equal(images.quantise(values, 8), [0, 0, 2, 2, 0, 255])


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_into_format_without_alpha_is_refused(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    with pytest.raises(RestoreError, match="alpha") as info:
        write_image(target, _image(_levels((4, 4, 3), 8), _levels((4, 4), 8), 8))
    assert info.value.path == str(target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_write_image_keeps_target_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old contents")
    image = _image(_levels((4, 4, 3), 8), None, 8)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(images, "_encode_png", interrupted)  # Ctrl-C while encoding
        with pytest.raises(KeyboardInterrupt):
            write_image(target, image)
    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "fsync", interrupted)  # Ctrl-C with the temp file written
        with pytest.raises(KeyboardInterrupt):
            write_image(target, image)
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    write_image(target, image)
    np.testing.assert_array_equal(_as_levels(read_image(target).pixels, 8), _levels((4, 4, 3), 8))


# ------------------------------------------------------------------------------------------
# Modes


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    index = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    im = Image.fromarray(index, "L").convert("P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    im.save(tmp_path / "p.png", transparency=1)
    back = read_image(tmp_path / "p.png")
    assert back.bit_depth == 8 and back.pixels.shape == (2, 3, 3)
    np.testing.assert_array_equal(_as_levels(back.pixels[0, 0], 8), [255, 0, 0])
    np.testing.assert_array_equal(_as_levels(back.alpha, 8), np.where(index == 1, 0, 255))
    im.save(tmp_path / "opaque.png")
    opaque = read_image(tmp_path / "opaque.png")
    assert opaque.alpha is None and opaque.pixels.shape == (2, 3, 3)


def test_one_bit_la_and_gray_trns(tmp_path: Path) -> None:
    bits = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    back = read_image(tmp_path / "b.png")
    assert back.bit_depth == 8 and back.pixels.shape == (2, 3, 1)
    np.testing.assert_array_equal(back.pixels[:, :, 0], bits.astype(np.float32))
    la = np.dstack([_levels((3, 4), 8), _levels((3, 4), 8, seed=9)]).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    back = read_image(tmp_path / "la.png")
    assert back.pixels.shape == (3, 4, 1)
    np.testing.assert_array_equal(_as_levels(back.alpha, 8), la[:, :, 1])
    gray = np.array([[10, 20], [30, 10]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "trns.png", transparency=10)
    back = read_image(tmp_path / "trns.png")
    assert back.pixels.shape == (2, 2, 1)
    np.testing.assert_array_equal(_as_levels(back.alpha, 8), [[0, 255], [255, 0]])


def test_16_bit_gray_with_trns_gets_alpha(tmp_path: Path) -> None:
    gray = np.array([[1000, 2000], [3000, 1000]], dtype=np.uint16)
    png = imagecodecs.png_encode(gray)
    png = _insert_after_ihdr(png, _chunk(b"tRNS", struct.pack(">H", 1000)))
    (tmp_path / "t16.png").write_bytes(png)
    back = read_image(tmp_path / "t16.png")
    assert back.bit_depth == 16 and back.pixels.shape == (2, 2, 1)
    np.testing.assert_array_equal(_as_levels(back.alpha, 16), [[0, 65535], [65535, 0]])


def test_cmyk_jpeg_becomes_rgb_and_drops_its_icc(tmp_path: Path, srgb_icc: bytes) -> None:
    cmyk = Image.fromarray(_levels((6, 6, 4), 8).astype(np.uint8), "CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", icc_profile=srgb_icc)  # any profile: it describes CMYK data
    back = read_image(tmp_path / "cmyk.jpg")
    assert back.pixels.shape == (6, 6, 3) and back.icc_profile is None


def test_float_tiff_is_an_unsupported_mode(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(RestoreError, match="unsupported image mode") as info:
        read_image(tmp_path / "f.tif")
    assert "f.tif" in str(info.value)


def _tiff_bytes(im: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "TIFF", **options)
    return buffer.getvalue()


def test_tiff_palette_bilevel_and_cmyk(tmp_path: Path) -> None:
    index = _levels((5, 7), 2).astype(np.uint8)
    palette = Image.fromarray(index, "L").convert("P")
    palette.putpalette([(i * 37) % 256 for i in range(768)])
    (tmp_path / "p.tif").write_bytes(_tiff_bytes(palette))
    back = read_image(tmp_path / "p.tif")
    np.testing.assert_array_equal(_as_levels(back.pixels, 8), np.asarray(palette.convert("RGB")))
    bits = np.random.default_rng(2).random((6, 11)) > 0.5
    (tmp_path / "b.tif").write_bytes(_tiff_bytes(Image.fromarray(bits)))
    back = read_image(tmp_path / "b.tif")
    assert back.bit_depth == 8 and back.pixels.shape == (6, 11, 1)
    np.testing.assert_array_equal(back.pixels[:, :, 0], bits.astype(np.float32))
    (tmp_path / "w.tif").write_bytes(imagecodecs.tiff_encode(bits, photometric="miniswhite"))
    np.testing.assert_array_equal(read_image(tmp_path / "w.tif").pixels[:, :, 0], (~bits).astype(np.float32))
    cmyk = Image.fromarray(_levels((5, 7, 4), 8).astype(np.uint8), "CMYK")
    (tmp_path / "c.tif").write_bytes(_tiff_bytes(cmyk, icc_profile=b"cmyk profile"))
    back = read_image(tmp_path / "c.tif")
    assert back.pixels.shape == (5, 7, 3) and back.icc_profile is None
    reference = np.asarray(cmyk.convert("RGB")).astype(np.int64)
    assert np.abs(_as_levels(back.pixels, 8) - reference).max() <= 2  # libtiff vs Pillow CMYK → RGB


def test_tiff_planar_and_premultiplied_16_bit(tmp_path: Path) -> None:
    rgb = _levels((3, 6, 8), 16).astype(np.uint16)  # samples × H × W
    (tmp_path / "planar.tif").write_bytes(imagecodecs.tiff_encode(rgb, photometric="rgb", planarconfig="separate"))
    back = read_image(tmp_path / "planar.tif")
    np.testing.assert_array_equal(_as_levels(back.pixels, 16), np.moveaxis(rgb, 0, -1))
    straight = np.full((4, 4, 3), 40000.0)
    alpha = np.array([[65535, 32768, 0, 65535]] * 4, dtype=np.float64)
    premultiplied = np.dstack([np.rint(straight * alpha[:, :, None] / 65535), alpha]).astype(np.uint16)
    encoded = imagecodecs.tiff_encode(premultiplied, photometric="rgb", extrasample=imagecodecs.TIFF.EXTRASAMPLE.ASSOCALPHA)
    (tmp_path / "assoc.tif").write_bytes(encoded)
    back = read_image(tmp_path / "assoc.tif")
    np.testing.assert_array_equal(_as_levels(back.alpha, 16), alpha.astype(np.int64))
    levels = _as_levels(back.pixels, 16)
    assert np.abs(levels[:, [0, 1, 3]] - 40000).max() <= 2 and np.all(levels[:, 2] == 0)


@pytest.mark.parametrize("options", [{"lossless": True}, {"quality": 90}, {"quality": 90, "icc_profile": b"p" * 50}])
def test_webp_header_size_is_parsed_for_each_bitstream(tmp_path: Path, options: dict) -> None:
    """Simple lossless (VP8L), simple lossy (VP8) and extended (VP8X) files."""
    Image.new("RGB", (37, 23), (10, 200, 30)).save(tmp_path / "s.webp", **options)
    assert read_image(tmp_path / "s.webp").pixels.shape == (23, 37, 3)
    with pytest.raises(RestoreError, match="37×23 = 851 pixels"):
        read_image(tmp_path / "s.webp", max_pixels=850)


# ------------------------------------------------------------------------------------------
# EXIF orientation, ICC, EXIF


def test_jpeg_orientation_6_is_applied_and_reset(tmp_path: Path) -> None:
    source = np.zeros((40, 64, 3), np.uint8)
    source[:8, :16] = (255, 0, 0)  # a red block in the top-left corner of the stored pixels
    Image.fromarray(source).save(tmp_path / "o6.jpg", exif=_exif_bytes(6), quality=95)
    back = read_image(tmp_path / "o6.jpg")
    assert back.pixels.shape == (64, 40, 3)  # rotated: width and height swapped
    with Image.open(tmp_path / "o6.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im)).astype(np.float32) / 255
    np.testing.assert_array_equal(back.pixels, expected)
    assert back.pixels[2, -3, 0] > 0.9 and back.pixels[-3, 2, 0] < 0.1  # red now top-right
    assert _orientation_of(back.exif) == 1
    assert Image.Exif().load(back.exif) is None and "TestCam" in back.exif.decode("latin-1")
    write_image(tmp_path / "out.jpg", back)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.size == (40, 64)
        assert im.getexif().get(0x0112) == 1 and im.getexif().get(0x010F) == "TestCam"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    source = _levels((5, 7, 3), 8).astype(np.uint8)
    Image.fromarray(source).save(tmp_path / "o.png", exif=_exif_bytes(orientation))
    back = read_image(tmp_path / "o.png")
    with Image.open(tmp_path / "o.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(_as_levels(back.pixels, 8), expected)
    assert _orientation_of(back.exif) == 1


def test_orientation_on_16_bit_png_and_tiff(tmp_path: Path) -> None:
    rgba = _levels((6, 9, 4), 16).astype(np.uint16)
    exif = _exif_bytes(8)[6:]  # eXIf holds the TIFF structure without the "Exif\0\0" header
    png = _insert_after_ihdr(imagecodecs.png_encode(rgba), _chunk(b"eXIf", exif))
    (tmp_path / "o8.png").write_bytes(png)
    back = read_image(tmp_path / "o8.png")
    rotated = np.rot90(rgba, 1)  # orientation 8: rotate 90° counter-clockwise
    assert back.bit_depth == 16
    np.testing.assert_array_equal(_as_levels(back.pixels, 16), rotated[:, :, :3])
    np.testing.assert_array_equal(_as_levels(back.alpha, 16), rotated[:, :, 3])
    assert _orientation_of(back.exif) == 1
    gray = _levels((6, 9), 8).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "o3.tif", tiffinfo={274: 3, 271: "TiffCam"})
    back = read_image(tmp_path / "o3.tif")
    np.testing.assert_array_equal(_as_levels(back.pixels[:, :, 0], 8), gray[::-1, ::-1])
    assert _orientation_of(back.exif) in (1, None) and "TiffCam" in back.exif.decode("latin-1")


@pytest.mark.parametrize(
    "name,bits", [("a.png", 8), ("a.png", 16), ("a.tif", 8), ("a.tif", 16), ("a.jpg", 8), ("a.webp", 8)]
)
def test_icc_carried_and_stripped(tmp_path: Path, srgb_icc: bytes, name: str, bits: int) -> None:
    image = _image(_levels((8, 8, 3), bits), None, bits, icc=srgb_icc)
    write_image(tmp_path / name, image)
    assert read_image(tmp_path / name).icc_profile == srgb_icc
    with Image.open(tmp_path / name) as im:  # Pillow finds it too (independent parser)
        assert im.info.get("icc_profile") == srgb_icc
    write_image(tmp_path / name, image, strip_metadata=True)
    assert read_image(tmp_path / name).icc_profile is None


@pytest.mark.parametrize("name,bits", [("e.png", 8), ("e.png", 16), ("e.jpg", 8), ("e.webp", 8), ("e.tif", 8)])
def test_exif_carried_with_orientation_1_and_stripped(tmp_path: Path, name: str, bits: int) -> None:
    image = _image(_levels((8, 10, 3), bits), None, bits, exif=_exif_bytes(6, make="CarryCam"))
    write_image(tmp_path / name, image)  # an orientation of 6 handed in is still written as 1
    with Image.open(tmp_path / name) as im:
        exif = im.getexif()
        assert exif.get(0x010F) == "CarryCam" and exif.get(0x0112) in (1, None)
        assert im.size == (10, 8)
    assert "CarryCam" in (read_image(tmp_path / name).exif or b"").decode("latin-1")
    write_image(tmp_path / name, image, strip_metadata=True)
    assert read_image(tmp_path / name).exif is None


# ------------------------------------------------------------------------------------------
# Decompression-bomb guard


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def test_pixel_guard_refuses_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(imagecodecs, "png_decode", no_decoding)
    monkeypatch.setattr(imagecodecs, "tiff_decode", no_decoding)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(RestoreError) as info:
        read_image(path)
    assert str(info.value) == (
        f"{path}: image has 100000×100000 = 10000000000 pixels, more than --max-pixels 200000000"
    )
    tiff = tmp_path / "bomb.tif"
    tiff.write_bytes(
        b"II*\x00\x08\x00\x00\x00\x02\x00"
        + struct.pack("<HHII", 256, 4, 1, 70_000)
        + struct.pack("<HHII", 257, 4, 1, 70_000)
        + b"\x00\x00\x00\x00"
    )
    with pytest.raises(RestoreError, match="70000×70000 = 4900000000 pixels"):
        read_image(tiff)


def test_pixel_guard_on_a_real_3000_square_jpeg(tmp_path: Path) -> None:
    Image.new("RGB", (3000, 3000), (40, 80, 120)).save(tmp_path / "big.jpg", quality=50)
    with pytest.raises(RestoreError, match=r"3000×3000 = 9000000 pixels, more than --max-pixels 1000000") as info:
        read_image(tmp_path / "big.jpg", max_pixels=1_000_000)
    assert info.value.path == str(tmp_path / "big.jpg")


def test_pillow_global_guard_neither_fires_nor_warns_nor_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would warn above 1000, fail above 2000
    for name in ("w.png", "w.jpg", "w.tif", "w.webp", "w.bmp"):
        Image.new("RGB", (60, 50), (1, 2, 3)).save(tmp_path / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert read_image(tmp_path / name).pixels.shape == (50, 60, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ------------------------------------------------------------------------------------------
# Bad files


def _sample_png_bytes() -> bytes:
    return (DATA / "sample.png").read_bytes()


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.png", b"", "empty file"),
        ("notes.png", b"this is a text file, not an image\n", "not an image file"),
        ("anim.png", b"GIF89a" + b"\0" * 40, "unsupported image format GIF"),
        ("trunc.png", None, "truncated image data"),
        ("trunc.jpg", None, "truncated image data"),
        ("trunc16.png", None, "truncated image data"),
        ("header.png", b"\x89PNG\r\n\x1a\n\x00\x00", "corrupt or truncated PNG header"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    if name == "trunc.png":
        data = _sample_png_bytes()
        content = data[: len(data) // 2]
    elif name == "trunc.jpg":
        buffer = io.BytesIO()
        Image.open(DATA / "sample.png").save(buffer, "JPEG")
        content = buffer.getvalue()[: buffer.tell() // 2]
    elif name == "trunc16.png":
        data = imagecodecs.png_encode(_levels((40, 40, 3), 16).astype(np.uint16))
        content = data[: len(data) - 40]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RestoreError) as info:
        read_image(path)
    text = str(info.value)
    assert message in text and name in text and "\n" not in text
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_16_bit_tiff(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_levels((60, 80), 16).astype(np.uint16)).save(buffer, "TIFF")  # IFD before the strip
    (tmp_path / "t.tif").write_bytes(buffer.getvalue()[:5000])
    with pytest.raises(RestoreError, match="truncated") as info:
        read_image(tmp_path / "t.tif")
    assert "t.tif" in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(RestoreError, match="is a directory"):
        read_image(tmp_path)


# ------------------------------------------------------------------------------------------
# Suffixes, alpha resizing, the sample image


def test_image_format_for_suffix() -> None:
    assert [image_format_for_suffix(s) for s in SUPPORTED_SUFFIXES] == [
        "png", "jpeg", "jpeg", "bmp", "tiff", "tiff", "webp",
    ]
    assert image_format_for_suffix(".JPG") == "jpeg" and image_format_for_suffix("tif") == "tiff"
    for bad in (".gif", "", ".exr"):
        with pytest.raises(RestoreError, match="unsupported image file suffix"):
            image_format_for_suffix(bad)


def test_png_compress_level_changes_size_not_pixels(tmp_path: Path) -> None:
    sample = read_image(DATA / "sample.png")
    write_image(tmp_path / "0.png", sample, compress_level=0)
    write_image(tmp_path / "9.png", sample, compress_level=9)
    assert (tmp_path / "0.png").stat().st_size > 2 * (tmp_path / "9.png").stat().st_size
    np.testing.assert_array_equal(read_image(tmp_path / "0.png").pixels, sample.pixels)
    with pytest.raises(RestoreError, match="compression level"):
        write_image(tmp_path / "x.png", sample, compress_level=10)


def test_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    write_image(tmp_path / "out.dat", _image(_levels((4, 5, 3), 8), None, 8), format="jpg")
    assert read_image(tmp_path / "out.dat").source_format == "jpeg"


def test_resize_alpha() -> None:
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (32, 1))
    up = resize_alpha(ramp, (64, 128))
    assert up.shape == (64, 128) and up.dtype == np.float32
    centres = (np.arange(128) + 0.5) / 2 - 0.5  # output pixel centres in input coordinates
    np.testing.assert_allclose(up[:, 8:-8], np.tile(centres[8:-8] / 63, (64, 1)), atol=2e-3)
    down = resize_alpha(ramp, (16, 32))
    np.testing.assert_allclose(down[:, 2:-2], ramp.reshape(16, 2, 32, 2).mean(axis=(1, 3))[:, 2:-2], atol=2e-3)
    step = np.zeros((16, 16), np.float32)
    step[:, 8:] = 1
    sharp = resize_alpha(step, (64, 64))
    assert sharp.min() >= 0 and sharp.max() <= 1  # Lanczos overshoot clipped
    np.testing.assert_array_equal(resize_alpha(np.full((5, 7), 0.25, np.float32), (15, 21)), np.float32(0.25))


def test_sample_image_is_the_generated_one() -> None:
    spec = importlib.util.spec_from_file_location("make_sample", DATA / "make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = DATA / "sample.png"
    assert path.stat().st_size < 60_000
    sample = read_image(path)
    assert sample.pixels.shape == (128, 192, 3) and sample.bit_depth == 8 and sample.alpha is None
    np.testing.assert_array_equal(_as_levels(sample.pixels, 8), module.make_sample())
