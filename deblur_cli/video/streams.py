"""Reading a video: open any container FFmpeg reads (through PyAV), describe its video stream, and
turn decoded frames into RGB arrays and back with the stream's own colour matrix and range.

A frame goes YUV -> RGB with the matrix and range the stream is tagged with, and the deblurred RGB goes
back with the same matrix and range, tagged the same: so a player shows the output exactly as it
showed the input, whatever the tags say (an untagged stream uses BT.709 from 720 lines up and BT.601
below, as players assume).
"""

from __future__ import annotations

import heapq
import os
import struct
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from deblur_cli.errors import DeblurError

#: Frames held back to put timestamps in order (:class:`Timestamps`): more than any encoder's B-frame depth.
REORDER_WINDOW = 4

# AVColorSpace (frame.colorspace) -> the matrix swscale converts with.
_MATRIX = {1: Colorspace.ITU709, 4: Colorspace.FCC, 5: Colorspace.ITU601, 6: Colorspace.ITU601,
           7: Colorspace.SMPTE240M, 9: Colorspace.BT2020, 10: Colorspace.BT2020}  # fmt: skip
# ACCURATE_RND: round to nearest in swscale, so that YUV -> RGB -> YUV returns the same values.
_INTERPOLATION = Interpolation.BILINEAR | Interpolation.ACCURATE_RND


@dataclass(frozen=True)
class ColorTags:
    """The colour description of a stream, as FFmpeg's enum values (``AVColorPrimaries``,
    ``AVColorTransferCharacteristic``, ``AVColorSpace``, ``AVColorRange``; 2 and 0 mean unspecified)."""

    primaries: int = 2
    transfer: int = 2
    matrix: int = 2
    range: int = 0

    def conversion(self, height: int) -> tuple[Colorspace, ColorRange]:
        """The matrix and range that YUV <-> RGB conversions use for a frame ``height`` lines high."""
        matrix = _MATRIX.get(self.matrix, Colorspace.ITU709 if height >= 720 else Colorspace.ITU601)
        return matrix, ColorRange.JPEG if self.range == 2 else ColorRange.MPEG


@dataclass(frozen=True)
class VideoInfo:
    """What the output must keep of the input's video stream (read from the stream and its first frame).

    Attributes:
        width, height: coded frame size (before the display rotation).
        pix_fmt: decoded pixel format, e.g. ``yuv420p``, ``yuv420p10le``.
        bits: bits per sample (8, 10, 12, ...).
        chroma: horizontal and vertical chroma subsampling shifts, ``(1, 1)`` for 4:2:0,
            ``(0, 0)`` for 4:4:4 and RGB.
        time_base: the stream's time base (timestamps are kept in it).
        rate: average frame rate (``None`` when the container does not say).
        frames: number of frames, from the header or estimated from the duration (``None``: unknown).
        duration_s: the stream's duration in seconds (``None``: unknown).
        rotation: display rotation in degrees, counter-clockwise (0, 90, 180, 270 or other).
        display_matrix: the raw 3x3 display matrix (9 ints), kept as is (it may also flip), or ``None``.
        color: the colour tags.
        sample_aspect_ratio: pixel aspect ratio, ``None`` for square or unknown.
    """

    width: int
    height: int
    pix_fmt: str
    bits: int
    chroma: tuple[int, int]
    time_base: Fraction
    rate: Fraction | None
    frames: int | None
    duration_s: float | None
    rotation: int
    display_matrix: tuple[int, ...] | None
    color: ColorTags
    sample_aspect_ratio: Fraction | None = None

    @property
    def deep(self) -> bool:
        """More than 8 bits per sample: frames go through the network as 16-bit RGB."""
        return self.bits > 8

    @property
    def rgb_format(self) -> str:
        """The packed RGB format frames are converted to: ``rgb24`` or ``rgb48le``."""
        return "rgb48le" if self.deep else "rgb24"


def open_input(src: str | os.PathLike[str]) -> Any:
    """Open ``src`` for reading (an ``av.container.InputContainer``) with its first video stream.

    Raises:
        DeblurError: missing file, a folder, a file FFmpeg cannot read, or one without video.
    """
    path = Path(src)
    if not path.exists():
        raise DeblurError(f"{path}: no such file")
    if path.is_dir():
        raise DeblurError(f"{path}: is a directory, not a video (use `deblur folder` for directories)")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DeblurError(f"{path}: not a video FFmpeg can read ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise DeblurError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        container.close()
        raise DeblurError(f"{path}: its video codec is not one FFmpeg can decode")
    return container


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip() or type(exc).__name__


def describe(stream: Any, first_frame: Any) -> VideoInfo:
    """The :class:`VideoInfo` of an input video ``stream`` from its first decoded frame."""
    fmt = av.VideoFormat(first_frame.format.name, 64, 64)
    comps = fmt.components
    bits = max(c.bits for c in comps)
    chroma = (0, 0)
    if not fmt.is_rgb and len(comps) >= 3:
        chroma = ((64 // max(1, comps[1].width)).bit_length() - 1, (64 // max(1, comps[1].height)).bit_length() - 1)
    tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1000)
    rate = stream.average_rate or stream.guessed_rate
    rate = Fraction(rate) if rate else None
    duration_s = float(stream.duration * tb) if stream.duration else None
    if duration_s is None and stream.container.duration:
        duration_s = stream.container.duration / av.time_base
    frames = int(stream.frames) if stream.frames else None
    if frames is None and duration_s and rate:
        frames = max(1, round(duration_s * float(rate)))
    matrix = _display_matrix(first_frame)
    range_ = int(first_frame.color_range or 0)
    if first_frame.format.name.startswith("yuvj"):
        range_ = 2  # the JPEG formats are full range whatever the tag says
    color = ColorTags(int(first_frame.color_primaries or 2), int(first_frame.color_trc or 2),
                      int(first_frame.colorspace or 2), range_)  # fmt: skip
    sar = stream.sample_aspect_ratio
    return VideoInfo(
        width=first_frame.width, height=first_frame.height, pix_fmt=first_frame.format.name, bits=bits, chroma=chroma,
        time_base=tb, rate=rate, frames=frames, duration_s=duration_s, rotation=int(first_frame.rotation or 0),
        display_matrix=matrix, color=color, sample_aspect_ratio=Fraction(sar) if sar and sar != 1 else None,
    )  # fmt: skip


def _display_matrix(frame: Any) -> tuple[int, ...] | None:
    from av.sidedata.sidedata import Type

    data = frame.side_data.get(Type.DISPLAYMATRIX)
    if data is None:
        return None
    raw = bytes(data)
    return tuple(struct.unpack("<9i", raw[:36])) if len(raw) >= 36 else None


def frame_to_rgb(frame: Any, info: VideoInfo) -> np.ndarray:
    """A decoded frame -> ``(H, W, 3)`` RGB, uint8 (8-bit streams) or uint16 (deeper ones), converted
    with the stream's matrix and range (:meth:`ColorTags.conversion`)."""
    fmt = frame.format
    if fmt.is_rgb or fmt.name in ("gray", "gray10le", "gray12le", "gray16le", "pal8"):
        return frame.to_ndarray(format=info.rgb_format)  # no matrix involved
    matrix, range_ = info.color.conversion(frame.height)
    rgb = frame.reformat(format=info.rgb_format, src_colorspace=matrix, src_color_range=range_,
                         dst_color_range=ColorRange.JPEG, interpolation=_INTERPOLATION)  # fmt: skip
    return rgb.to_ndarray()


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, info: VideoInfo) -> Any:
    """``(H, W, 3)`` uint8/uint16 RGB -> an ``av.VideoFrame`` in ``pix_fmt`` with the input's matrix and
    range (the exact inverse of :func:`frame_to_rgb` up to rounding and chroma subsampling)."""
    packed = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=packed)
    matrix, range_ = info.color.conversion(rgb.shape[0])
    out = frame.reformat(format=pix_fmt, dst_colorspace=matrix, dst_color_range=range_, interpolation=_INTERPOLATION)
    # Tags as the input's (the reformatter tags the matrix it used, which may name an unspecified one)
    out.colorspace = info.color.matrix
    out.color_range = info.color.range
    out.color_primaries = info.color.primaries
    out.color_trc = info.color.transfer
    return out


def display_oriented(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """``(H, W, C)`` as a player shows it: rotated by ``rotation`` degrees counter-clockwise
    (multiples of 90; others are left as they are)."""
    k = (rotation // 90) % 4 if rotation % 90 == 0 else 0
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


class Timestamps:
    """Presentation timestamps for decoded frames, strictly increasing.

    Decoders hand frames over in display order, but some containers attach the wrong timestamps: AVI
    stores decode times, so a clip with B-frames reads 4, 16, 12, 20, 8, ... For a correct stream the
    timestamps already increase and nothing changes. Otherwise the frames are held ``window`` at a time
    and each gets the smallest timestamp not yet given (the sorted timestamps are the display times);
    a timestamp still not after the previous one (damage beyond the window) becomes the previous one
    plus a frame. Missing timestamps follow the previous frame.

    Args:
        step: one frame's duration in time-base units (for missing timestamps and durations).
        window: frames held back.
    """

    def __init__(self, step: int, window: int = REORDER_WINDOW) -> None:
        self.step, self.window = max(1, step), window
        self.retimed = 0  # frames whose timestamp was changed
        self._heap: list[int] = []
        self._held: deque[tuple[Any, int, int]] = deque()
        self._prev: tuple[int, int] | None = None  # last timestamp read, its duration
        self._last: tuple[int, int] | None = None  # last timestamp given, its duration

    def push(self, item: Any, pts: int | None, duration: int | None) -> list[tuple[Any, int, int]]:
        """Add a frame (in decoding output order); returns the ``(item, pts, duration)`` now ready."""
        duration = int(duration) if duration else self.step
        if pts is None:
            pts = self._prev[0] + self._prev[1] if self._prev else 0
        self._prev = (pts, duration)
        heapq.heappush(self._heap, pts)
        self._held.append((item, pts, duration))
        return [self._pop()] if len(self._held) > self.window else []

    def flush(self) -> list[tuple[Any, int, int]]:
        """The frames still held, at the end of the stream."""
        return [self._pop() for _ in range(len(self._held))]

    def _pop(self) -> tuple[Any, int, int]:
        item, own, duration = self._held.popleft()
        pts = heapq.heappop(self._heap)
        if self._last is not None and pts <= self._last[0]:
            pts = self._last[0] + max(1, self._last[1])
        self.retimed += pts != own
        self._last = (pts, duration)
        return item, pts, duration
