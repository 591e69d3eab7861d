"""Reading and writing images without losing what users care about.

Fidelity rules (repeated in the README):

* **Orientation**: the EXIF orientation is applied on reading; the EXIF written back has
  ``Orientation = 1`` so viewers do not rotate the result a second time.
* **Alpha** is returned separately from the colour channels by the engine and written back
  untouched. JPEG cannot store alpha: writing an image with alpha to ``.jpg`` is an error,
  never a silent loss.
* **Bit depth**: 16-bit PNG/TIFF in, 16-bit PNG/TIFF out (JPEG and WebP are 8-bit formats:
  16-bit images written to them are rounded to 8 bits, as the user chose that format).
* **Grayscale** in, grayscale out (WebP has no grayscale mode and stores it as RGB).
* **ICC profile** and **EXIF** are carried to PNG, JPEG, WebP and TIFF outputs, except EXIF in
  16-bit TIFF (see :func:`_tiff_add_icc`). A profile whose colour space no longer matches the
  written pixels (a CMYK profile after conversion to RGB, a gray profile on an RGB WebP) is
  dropped rather than attached to the wrong data.

Pixel arrays are ``(H, W)`` gray, ``(H, W, 2)`` gray+alpha, ``(H, W, 3)`` RGB or
``(H, W, 4)`` RGBA, ``uint8`` or ``uint16``, channels in RGB(A) order (not OpenCV's BGR).

Libraries do the decoding and encoding: Pillow for 8-bit images and all metadata, OpenCV for
16-bit colour pixels (Pillow has no 16-bit RGB mode). Hand-written pieces, each small:
:func:`_png_bit_depth` (reads one header byte), :func:`apply_orientation` (the 8 EXIF cases
as numpy flips, tested against ``PIL.ImageOps.exif_transpose``), :func:`_png_add_chunks`
(inserts ``iCCP``/``eXIf`` chunks into OpenCV's 16-bit PNG) and :func:`_tiff_add_icc`
(adds the ICC tag to OpenCV's 16-bit TIFF). Writes are atomic: :func:`atomic_write_bytes`.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deblur_cli.errors import DeblurError

#: Output extension -> Pillow/OpenCV format name.
OUTPUT_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
#: Extensions the ``folder`` command picks up as inputs (any format Pillow reads also works
#: with ``image``).
INPUT_EXTENSIONS: frozenset[str] = frozenset({*OUTPUT_FORMATS, ".bmp"})
#: JPEG/WebP quality used when none is given (high: this is a restoration tool).
DEFAULT_QUALITY = 95

_ORIENTATION = 0x0112
# TIFF structure tags that Pillow reports through ``getexif()`` for TIFF inputs; they describe
# the source file's layout and must not be copied as EXIF into another file.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 282, 283, 284, 296,
     317, 320, 322, 323, 324, 325, 338, 339, 340, 341, 530, 531, 532, 700, 33723, 34377, 34675}
)  # fmt: skip


@dataclass
class ImageData:
    """Decoded pixels plus the metadata to carry to the output.

    Attributes:
        pixels: see the module docstring; orientation already applied.
        icc_profile: the embedded ICC profile, if any.
        exif: EXIF block (``Exif\\0\\0`` + TIFF structure) with ``Orientation = 1``, if any.
        source_format: Pillow's format name of the input (``"PNG"``, ``"JPEG"``, ...).
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_format: str | None = None


def _check_input_path(path: Path) -> None:
    if not path.exists():
        raise DeblurError(f"{path}: no such file")
    if path.is_dir():
        raise DeblurError(f"{path}: is a directory, not an image (use `deblur folder` for directories)")


def _png_bit_depth(data: bytes) -> int:
    """Bit depth from a PNG's IHDR (byte 24 of the file); 8 if the header is not there."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 25:
        return data[24]
    return 8


def apply_orientation(pixels: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W[, C])`` array, as ``exif_transpose`` does.

    Hand-written because Pillow cannot hold 16-bit RGB; the mapping follows
    ``PIL.ImageOps.exif_transpose`` (2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate
    90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise), and
    ``tests/test_imageio.py`` checks all eight cases against it.
    """
    if orientation == 2:
        pixels = pixels[:, ::-1]
    elif orientation == 3:
        pixels = pixels[::-1, ::-1]
    elif orientation == 4:
        pixels = pixels[::-1]
    elif orientation == 5:
        pixels = pixels.swapaxes(0, 1)
    elif orientation == 6:
        pixels = np.rot90(pixels, -1)
    elif orientation == 7:
        pixels = pixels[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        pixels = np.rot90(pixels, 1)
    return np.ascontiguousarray(pixels)


def _clean_exif(exif: object, source_format: str | None) -> bytes | None:
    """EXIF bytes with ``Orientation = 1`` (and no TIFF layout tags), or ``None`` if empty."""
    from PIL import Image

    assert isinstance(exif, Image.Exif)
    if source_format == "TIFF":
        for tag in [t for t in exif if t in _TIFF_LAYOUT_TAGS]:
            del exif[tag]
    if not len(exif):
        return None
    exif[_ORIENTATION] = 1  # the pixels are upright now
    return exif.tobytes()


def read_image(path: str | os.PathLike[str]) -> ImageData:
    """Decode an image file with its orientation, alpha, bit depth, ICC profile and EXIF.

    Args:
        path: any format Pillow reads (PNG, JPEG, WebP, TIFF, BMP, ...).

    Raises:
        DeblurError: missing file, a directory, not an image, corrupt or truncated data,
            or a sample format other than 8/16-bit integers. The message names the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_input_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeblurError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DeblurError(f"{path}: not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as exc:
        raise DeblurError(f"{path}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise DeblurError(f"{path}: corrupt image ({exc})") from None
    fmt = img.format
    icc = img.info.get("icc_profile") or None
    try:
        orientation_before = img.getexif().get(_ORIENTATION)
        img.load()  # decodes everything: truncated or corrupt data fails here
    except Image.DecompressionBombError as exc:
        raise DeblurError(f"{path}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise DeblurError(f"{path}: corrupt or truncated image ({exc})") from None

    deep = (fmt == "PNG" and _png_bit_depth(data) > 8) or (
        fmt == "TIFF" and max(np.atleast_1d(img.tag_v2.get(258, 8))) > 8  # type: ignore[attr-defined]
    )
    if deep:
        gray_alpha = (fmt == "PNG" and data[25] == 4) or (fmt == "TIFF" and img.tag_v2.get(277) == 2)  # type: ignore[attr-defined]
        pixels = _decode_deep(path, data, gray_alpha)
        # OpenCV does not orient IMREAD_UNCHANGED images; Pillow drops a TIFF's tag on load.
        pixels = apply_orientation(pixels, orientation_before or img.getexif().get(_ORIENTATION))
        exif = _clean_exif(img.getexif(), fmt)
    else:
        upright = ImageOps.exif_transpose(img)  # before _clean_exif edits img's Exif
        exif = _clean_exif(img.getexif(), fmt)
        pixels, icc = _pillow_pixels(path, upright, icc)
    return ImageData(pixels=pixels, icc_profile=icc, exif=exif, source_format=fmt)


def _pillow_pixels(path: Path, img: object, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """8-bit (or 16-bit gray) pixels of a loaded Pillow image, in one of our four layouts."""
    from PIL import Image

    assert isinstance(img, Image.Image)
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        pass
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("La", "PA"):
        img = img.convert("LA" if mode == "La" else "RGBA")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise DeblurError(f"{path}: 32-bit integer images are not supported")
        return arr.astype(np.uint16), icc
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")  # the source profile describes the old colour space
    else:
        raise DeblurError(f"{path}: unsupported pixel format {mode!r}")
    return np.asarray(img).copy(), icc


def _decode_deep(path: Path, data: bytes, gray_alpha: bool) -> np.ndarray:
    """16-bit pixels via OpenCV (``IMREAD_UNCHANGED``), converted to RGB(A) order.

    ``gray_alpha``: the file is gray+alpha, which OpenCV expands to 4 channels; undo that.
    """
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DeblurError(f"{path}: corrupt or unsupported image data")
    if arr.dtype != np.uint16:
        raise DeblurError(f"{path}: unsupported sample format {arr.dtype} (8 and 16-bit integers are)")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
        if gray_alpha:
            arr = np.ascontiguousarray(arr[:, :, [0, 3]])
    return arr


def probe_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from the header only (no decoding); orientation not applied.

    Cheap, for grouping files of the same size into batches. Raises :class:`DeblurError`
    like :func:`read_image` on missing or non-image files.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_input_path(path)
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise DeblurError(f"{path}: not a readable image ({exc})") from None


def output_format(path: str | os.PathLike[str]) -> str:
    """The format written for ``path``, from its extension (``PNG``, ``JPEG``, ``WEBP``, ``TIFF``).

    Raises:
        DeblurError: an extension we do not write.
    """
    ext = Path(path).suffix.lower()
    try:
        return OUTPUT_FORMATS[ext]
    except KeyError:
        raise DeblurError(
            f"{path}: cannot write {ext or 'files without an extension'}; use one of "
            + ", ".join(sorted(OUTPUT_FORMATS))
        ) from None


def _icc_matches(icc: bytes | None, channels: int) -> bytes | None:
    """``icc`` if its colour space (header bytes 16-20) fits gray (1 channel) or RGB (3), else None."""
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if space == (b"GRAY" if channels == 1 else b"RGB ") else None


def encode_image(
    pixels: np.ndarray,
    fmt: str,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int | None = None,
) -> bytes:
    """Encode ``pixels`` (layouts of the module docstring) as ``fmt`` with metadata.

    Args:
        pixels: ``uint8`` or ``uint16`` array.
        fmt: ``"PNG"``, ``"JPEG"``, ``"WEBP"`` or ``"TIFF"``.
        icc_profile: attached when the format and the pixels allow (see module docstring).
        exif: EXIF block to attach (``Exif\\0\\0`` prefix optional).
        quality: JPEG/WebP quality 1-100 (WebP 100 is lossless); default :data:`DEFAULT_QUALITY`.

    Raises:
        DeblurError: alpha to JPEG, or an unsupported array.
    """
    from PIL import Image

    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3):
        raise DeblurError(f"cannot encode a {pixels.dtype} array of shape {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    has_alpha = channels in (2, 4)
    if fmt == "JPEG" and has_alpha:
        raise DeblurError("the image has an alpha channel, which JPEG cannot store; write .png, .webp or .tiff")
    if pixels.dtype == np.uint16 and fmt in ("PNG", "TIFF") and pixels.ndim == 3:
        return _encode_deep(pixels, fmt, icc_profile=icc_profile, exif=exif)
    if pixels.dtype == np.uint16 and pixels.ndim == 2 and fmt in ("PNG", "TIFF"):
        img = Image.fromarray(pixels)  # Pillow's "I;16" gray mode
    else:
        if pixels.dtype == np.uint16:  # 8-bit formats
            pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
        img = Image.fromarray(np.ascontiguousarray(pixels))
    colour_channels = 1 if channels in (1, 2) and fmt != "WEBP" else 3
    kwargs: dict[str, object] = {}
    icc = _icc_matches(icc_profile, colour_channels)
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif
    q = DEFAULT_QUALITY if quality is None else quality
    if fmt == "JPEG":
        kwargs.update(quality=q, subsampling=0 if q >= 90 else 2)
    elif fmt == "WEBP":
        kwargs.update(quality=q, lossless=q >= 100, exact=True)
    elif fmt == "PNG":
        kwargs.update(compress_level=6)
    # TIFF: Pillow's own (uncompressed) writer, which carries EXIF; libtiff's compressed
    # writer rejects the EXIF sub-IFD pointer.
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **kwargs)  # type: ignore[arg-type]
    except ValueError as exc:
        if "exif" not in str(exc).lower() or "exif" not in kwargs:
            raise DeblurError(f"cannot encode {fmt}: {exc}") from None
        kwargs.pop("exif")  # e.g. a maker note larger than JPEG's 64 KiB APP1 segment
        buf = io.BytesIO()
        img.save(buf, fmt, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def _encode_deep(pixels: np.ndarray, fmt: str, *, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """16-bit colour PNG/TIFF via OpenCV, then metadata added by hand (OpenCV 4 writes none).

    Gray+alpha (2 channels) is written as RGBA: neither OpenCV nor Pillow encodes 16-bit LA.
    """
    import cv2

    if pixels.shape[2] == 2:
        pixels = pixels[:, :, [0, 0, 0, 1]]
    code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    bgr = cv2.cvtColor(np.ascontiguousarray(pixels), code)
    ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tiff", bgr)
    if not ok:
        raise DeblurError(f"OpenCV could not encode a 16-bit {fmt}")
    data = buf.tobytes()
    icc = _icc_matches(icc_profile, 3)
    if fmt == "PNG":
        chunks = []
        if icc:
            chunks.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
        if exif:
            chunks.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
        return _png_add_chunks(data, chunks)
    return _tiff_add_icc(data, icc) if icc else data


def _png_add_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Insert ancillary chunks right after IHDR (hand-written: length, type, data, CRC-32)."""
    end_of_ihdr = 8 + 8 + 13 + 4
    out = [png[:end_of_ihdr]]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    out.append(png[end_of_ihdr:])
    return b"".join(out)


def _tiff_add_icc(tiff: bytes, icc: bytes) -> bytes:
    """Add the ICC profile tag (34675) to the first IFD of a classic TIFF (hand-written).

    The profile and a copy of the IFD with the extra entry are appended at the end of the
    file and the header is pointed at the new IFD; nothing already in the file moves, so
    every existing offset stays valid. Other files (BigTIFF) are returned unchanged.
    EXIF is not added: it lives in a sub-IFD whose offsets would all need relocating.
    """
    order = tiff[:2]
    if order not in (b"II", b"MM"):
        return tiff
    e = "<" if order == b"II" else ">"
    if struct.unpack(e + "H", tiff[2:4])[0] != 42:
        return tiff
    ifd = struct.unpack(e + "I", tiff[4:8])[0]
    n = struct.unpack(e + "H", tiff[ifd : ifd + 2])[0]
    entries = [tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(n)]
    next_ifd = tiff[ifd + 2 + 12 * n : ifd + 6 + 12 * n]
    entries = [x for x in entries if struct.unpack(e + "H", x[:2])[0] != 34675]
    out = bytearray(tiff)
    if len(out) % 2:
        out += b"\x00"
    icc_offset = len(out)
    out += icc
    if len(out) % 2:
        out += b"\x00"
    entries.append(struct.pack(e + "HHII", 34675, 7, len(icc), icc_offset))
    entries.sort(key=lambda x: struct.unpack(e + "H", x[:2])[0])
    new_ifd = len(out)
    out += struct.pack(e + "H", len(entries)) + b"".join(entries) + next_ifd
    out[4:8] = struct.pack(e + "I", new_ifd)
    return bytes(out)


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory + ``os.replace``.

    An interrupted or failed write leaves either the old file or nothing, never half an
    image, and no temporary file. Missing parent directories are created.

    Raises:
        DeblurError: ``path`` exists and ``overwrite`` is false, is a directory, or cannot be
            written.
    """
    path = Path(path)
    if path.is_dir():
        raise DeblurError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise DeblurError(f"{path}: already exists (use --overwrite to replace it)")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        # mkstemp makes 0600 files; an output image gets the usual permissions (0666 - umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise DeblurError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Encode ``pixels`` in the format ``path``'s extension names and write it atomically.

    Raises:
        DeblurError: unknown extension, existing file without ``overwrite``, alpha to JPEG,
            or the file cannot be written.
    """
    fmt = output_format(path)
    path = Path(path)
    if path.exists() and not overwrite:  # fail before spending time on encoding
        raise DeblurError(f"{path}: already exists (use --overwrite to replace it)")
    data = encode_image(pixels, fmt, icc_profile=icc_profile, exif=exif, quality=quality)
    return atomic_write_bytes(path, data, overwrite=overwrite)
