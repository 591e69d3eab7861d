"""Image fidelity: orientation, alpha, 16 bits, grayscale, ICC, EXIF; bad files; atomic writes."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from deblur_cli.io import images as dio
from deblur_cli.errors import DeblurError

H, W = 20, 24  # tiny, and not square so orientation mistakes show


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _rgb8(seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, channels), dtype=np.uint8)


def _rgb16(seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, (H, W, channels), dtype=np.uint16)


def _exif(orientation: int | None = None, make: str = "TestCam") -> bytes:
    ex = Image.Exif()
    ex[0x010F] = make
    if orientation is not None:
        ex[0x0112] = orientation
    ex.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"  # DateTimeOriginal in the Exif sub-IFD
    return ex.tobytes()


def _exif_of(path) -> Image.Exif:
    with Image.open(path) as im:
        im.load()
        return im.getexif()


# --- orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pillow(orientation):
    pixels = _rgb8()
    im = Image.fromarray(pixels)
    ex = im.getexif()
    ex[0x0112] = orientation
    im.info["exif"] = ex.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(dio.apply_orientation(pixels, orientation), expected)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_exif_orientation_applied_and_reset(tmp_path, ext):
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:4, :4] = 255  # a white top-left corner
    src = tmp_path / f"in{ext}"
    kwargs = {"quality": 100} if ext != ".png" else {}
    Image.fromarray(pixels).save(src, exif=_exif(orientation=6), **kwargs)
    data = dio.read_image(src)
    assert data.pixels.shape == (W, H, 3)  # rotated 90 degrees clockwise
    assert data.pixels[:4, -4:].mean() > 200 and data.pixels[-4:, :4].mean() < 50  # corner moved to top-right
    out = tmp_path / "out.png"
    dio.write_image(out, data.pixels, exif=data.exif, icc_profile=data.icc_profile)
    exif = _exif_of(out)
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"
    assert exif.get_ifd(0x8769)[0x9003] == "2020:01:02 03:04:05"


def test_tiff_orientation(tmp_path):
    pixels = _rgb8()
    src = tmp_path / "in.tif"
    Image.fromarray(pixels).save(src, exif=_exif(orientation=8))
    data = dio.read_image(src)
    np.testing.assert_array_equal(data.pixels, np.rot90(pixels, 1))
    # TIFF layout tags that Pillow reports as EXIF are not carried into another format
    exif = Image.Exif()
    exif.load(data.exif)
    assert 256 not in exif and 273 not in exif and exif[0x010F] == "TestCam"


def test_16bit_orientation_via_opencv(tmp_path):
    pixels = _rgb16()
    src = tmp_path / "in.png"
    src.write_bytes(dio.encode_image(pixels, "PNG", exif=_exif(orientation=3)))
    data = dio.read_image(src)
    np.testing.assert_array_equal(data.pixels, pixels[::-1, ::-1])
    exif = Image.Exif()
    exif.load(data.exif)
    assert exif[0x0112] == 1


# --- alpha, bit depth, gray -----------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".webp", ".tif"])
def test_rgba8_round_trip(tmp_path, ext):
    pixels = _rgb8(channels=4)
    path = tmp_path / f"x{ext}"
    dio.write_image(path, pixels, quality=100)  # WebP quality 100 is lossless
    data = dio.read_image(path)
    np.testing.assert_array_equal(data.pixels, pixels)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_round_trip(tmp_path, ext, channels, srgb_icc):
    pixels = _rgb16(channels=channels)
    path = tmp_path / f"x{ext}"
    dio.write_image(path, pixels, icc_profile=srgb_icc)
    data = dio.read_image(path)
    assert data.pixels.dtype == np.uint16
    np.testing.assert_array_equal(data.pixels, pixels)
    assert data.icc_profile == srgb_icc


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_gray_round_trip(tmp_path, ext):
    pixels = np.random.default_rng(1).integers(0, 65536, (H, W), dtype=np.uint16)
    path = tmp_path / f"g{ext}"
    dio.write_image(path, pixels)
    data = dio.read_image(path)
    assert data.pixels.dtype == np.uint16 and data.pixels.shape == (H, W)
    np.testing.assert_array_equal(data.pixels, pixels)


def test_16bit_png_exif_chunk(tmp_path):
    path = tmp_path / "x.png"
    dio.write_image(path, _rgb16(), exif=_exif())
    assert _exif_of(path)[0x010F] == "TestCam"


def test_16bit_gray_alpha_png_is_read_as_gray_alpha(tmp_path):
    # Pillow reports 16-bit LA PNGs as RGBA and OpenCV expands them: neither may win.
    import struct
    import zlib

    la = np.random.default_rng(2).integers(0, 65536, (H, W, 2), dtype=np.uint16)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in la)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", W, H, 16, 4, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    (tmp_path / "la.png").write_bytes(png)
    np.testing.assert_array_equal(dio.read_image(tmp_path / "la.png").pixels, la)


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_gray8_stays_gray(tmp_path, ext):
    pixels = np.random.default_rng(3).integers(0, 256, (H, W), dtype=np.uint8)
    path = tmp_path / f"g{ext}"
    dio.write_image(path, pixels, quality=100)
    with Image.open(path) as im:
        assert im.mode == "L"
    data = dio.read_image(path)
    assert data.pixels.shape == (H, W)


def test_gray_alpha_png(tmp_path):
    pixels = _rgb8(channels=2)
    path = tmp_path / "la.png"
    dio.write_image(path, pixels)
    np.testing.assert_array_equal(dio.read_image(path).pixels, pixels)


def test_palette_with_transparency_becomes_rgba(tmp_path):
    im = Image.fromarray(_rgb8()).convert("P")
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    assert dio.read_image(tmp_path / "p.png").pixels.shape == (H, W, 4)


def test_16bit_to_8bit_formats_rounds(tmp_path):
    pixels = np.full((H, W, 3), 257 * 200 + 100, np.uint16)
    dio.write_image(tmp_path / "x.webp", pixels, quality=100)
    np.testing.assert_array_equal(dio.read_image(tmp_path / "x.webp").pixels, 200)


# --- ICC and EXIF --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_icc_and_exif_carried(tmp_path, ext, srgb_icc):
    src = tmp_path / f"in{ext}"
    Image.fromarray(_rgb8()).save(src, icc_profile=srgb_icc, exif=_exif())
    data = dio.read_image(src)
    assert data.icc_profile == srgb_icc
    out = tmp_path / f"out{ext}"
    dio.write_image(out, data.pixels, icc_profile=data.icc_profile, exif=data.exif)
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == srgb_icc
    assert _exif_of(out)[0x010F] == "TestCam"


def test_icc_kept_only_when_it_matches_the_pixels(srgb_icc):
    gray_profile = srgb_icc[:16] + b"GRAY" + srgb_icc[20:]
    assert dio._icc_matches(srgb_icc, 3) == srgb_icc
    assert dio._icc_matches(srgb_icc, 1) is None
    assert dio._icc_matches(gray_profile, 1) == gray_profile
    assert dio._icc_matches(b"junk", 3) is None


def test_cmyk_jpeg_becomes_rgb_without_its_profile(tmp_path, srgb_icc):
    cmyk_profile = srgb_icc[:16] + b"CMYK" + srgb_icc[20:]
    Image.fromarray(_rgb8()).convert("CMYK").save(tmp_path / "c.jpg", icc_profile=cmyk_profile)
    data = dio.read_image(tmp_path / "c.jpg")
    assert data.pixels.shape == (H, W, 3)
    out = dio.encode_image(data.pixels, "PNG", icc_profile=data.icc_profile)
    assert "icc_profile" not in Image.open(io.BytesIO(out)).info


def test_jpeg_quality(tmp_path):
    pixels = _rgb8()
    low = dio.encode_image(pixels, "JPEG", quality=10)
    high = dio.encode_image(pixels, "JPEG", quality=95)
    assert len(low) < len(high)


# --- bad inputs ----------------------------------------------------------------------------


def test_missing_and_directory(tmp_path):
    with pytest.raises(DeblurError, match="nope.png: no such file"):
        dio.read_image(tmp_path / "nope.png")
    with pytest.raises(DeblurError, match="is a directory"):
        dio.read_image(tmp_path)


def test_non_image_file(tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(DeblurError, match="notes.png: not an image"):
        dio.read_image(tmp_path / "notes.png")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_image(tmp_path, ext):
    buf = io.BytesIO()
    Image.fromarray(_rgb8()).save(buf, "PNG" if ext == ".png" else "JPEG")
    path = tmp_path / f"cut{ext}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DeblurError, match=f"cut{ext}: corrupt"):
        dio.read_image(path)


def test_truncated_16bit_png(tmp_path):
    data = dio.encode_image(_rgb16(), "PNG")
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DeblurError, match="cut16.png: corrupt"):
        dio.read_image(tmp_path / "cut16.png")


def test_unknown_output_extension():
    with pytest.raises(DeblurError, match="cannot write .gif"):
        dio.output_format("x.gif")
    assert dio.output_format("X.JPEG") == "JPEG"


def test_alpha_to_jpeg_is_an_error():
    with pytest.raises(DeblurError, match="alpha"):
        dio.encode_image(_rgb8(channels=4), "JPEG")


# --- atomic writes -------------------------------------------------------------------------


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"old")
    with pytest.raises(DeblurError, match="already exists"):
        dio.write_image(path, _rgb8())
    assert path.read_bytes() == b"old"
    dio.write_image(path, _rgb8(), overwrite=True)
    assert dio.read_image(path).pixels.shape == (H, W, 3)
    assert os.listdir(tmp_path) == ["x.png"]  # no temporary file left behind


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(DeblurError, match="No space left"):
        dio.atomic_write_bytes(path, b"new", overwrite=True)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.png"]


def test_unwritable_output(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(DeblurError, match="cannot write"):
        dio.write_image(tmp_path / "file" / "out.png", _rgb8())


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    import stat

    from deblur_cli.io.images import atomic_write_bytes

    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "x.bin", b"abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == b"abc"
