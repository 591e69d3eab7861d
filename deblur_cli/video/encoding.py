"""Writing a video: which container, codec, pixel format and quality, and which of the input's other
streams (audio, subtitles) the output can carry.

Pure choices here (testable without encoding anything); :mod:`deblur_cli.video.pipeline` opens the
streams with them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deblur_cli.errors import DeblurError
from deblur_cli.video.streams import VideoInfo

#: Output extension -> FFmpeg muxer.
CONTAINERS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


@dataclass(frozen=True)
class CodecSpec:
    """One ``--codec`` choice.

    Attributes:
        encoder: FFmpeg encoder name.
        crf: default constant-rate factor (quality; lower is better and larger).
        crf_max: largest CRF the encoder takes.
        options: encoder options besides the CRF.
        odd_sizes: whether the encoder takes odd widths/heights in subsampled chroma formats.
    """

    encoder: str
    crf: int
    crf_max: int
    options: dict[str, str] = field(default_factory=dict)
    odd_sizes: bool = True


#: ``--codec`` choices. The default CRFs keep the detail the network restores (x264's 18 is close to
#: visually lossless); the others are those encoders' usual equivalents.
CODECS: dict[str, CodecSpec] = {
    "h264": CodecSpec("libx264", 18, 51, {"preset": "medium"}, odd_sizes=False),
    "hevc": CodecSpec("libx265", 20, 51, {"preset": "medium", "x265-params": "log-level=error"}, odd_sizes=False),
    "av1": CodecSpec("libsvtav1", 30, 63, {"preset": "8"}),
    "vp9": CodecSpec("libvpx-vp9", 31, 63, {"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
}
#: Codecs each container holds, the default first.
CONTAINER_CODECS: dict[str, tuple[str, ...]] = {
    "mp4": ("h264", "hevc", "av1", "vp9"),
    "mov": ("h264", "hevc", "av1", "vp9"),
    "matroska": ("h264", "hevc", "av1", "vp9"),
    "webm": ("vp9", "av1"),
}
#: ``--audio`` choices: keep the packets, re-encode to AAC or Opus, or drop the audio.
AUDIO_MODES = ("copy", "aac", "opus", "none")
AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus"}


def container_for(dst: str | os.PathLike[str]) -> str:
    """The muxer for an output path, from its extension.

    Raises:
        DeblurError: an extension that is not a video container we write.
    """
    ext = Path(dst).suffix.lower()
    if ext not in CONTAINERS:
        raise DeblurError(f"{dst}: cannot write {ext or 'files without an extension'} videos; "
                          f"use one of {', '.join(sorted(CONTAINERS))}")  # fmt: skip
    return CONTAINERS[ext]


def default_video_output(src: str | os.PathLike[str]) -> Path:
    """``IN_deblurred.EXT`` beside ``IN``: the input's container when we write it, else ``.mp4``."""
    src = Path(src)
    ext = src.suffix.lower() if src.suffix.lower() in CONTAINERS else ".mp4"
    return src.with_name(f"{src.stem}_deblurred{ext}")


def choose_codec(container: str, codec: str | None) -> str:
    """The ``--codec`` to use in ``container`` (``None``: its default).

    Raises:
        DeblurError: an unknown codec, or one the container cannot hold.
    """
    allowed = CONTAINER_CODECS[container]
    if codec is None:
        return allowed[0]
    codec = codec.lower()
    if codec not in CODECS:
        raise DeblurError(f"--codec must be one of {', '.join(CODECS)}, got {codec!r}")
    if codec not in allowed:
        ext = "webm" if container == "webm" else container
        raise DeblurError(f"a .{ext} file cannot hold {codec}; use --codec {' or '.join(allowed)}, or .mp4/.mkv")
    return codec


def check_crf(codec: str, crf: int | None) -> int:
    """``crf``, or the codec's default; checked against the encoder's range.

    Raises:
        DeblurError: out of range.
    """
    spec = CODECS[codec]
    if crf is None:
        return spec.crf
    if not 0 <= crf <= spec.crf_max:
        raise DeblurError(f"--crf for {codec} must be 0 to {spec.crf_max}, got {crf}")
    return crf


def choose_pix_fmt(codec: str, info: VideoInfo, supported: list[str] | tuple[str, ...]) -> tuple[str, str | None]:
    """The encoder's pixel format for ``info``'s frames and a warning (or ``None``).

    Kept where possible: the chroma subsampling (4:2:0, 4:2:2, 4:4:4) and more than 8 bits as
    10 bits. Fallbacks, each with a warning: 4:4:4 for odd frame sizes where the encoder takes
    no odd sizes in subsampled chroma (x264/x265; the frame size is kept), 4:2:0 where the
    encoder has no other, 8 bits where the encoder has no 10-bit format.
    """
    sub_w, sub_h = info.chroma
    chroma = {(0, 0): "444", (1, 0): "422"}.get((sub_w, sub_h), "420")
    notes: list[str] = []
    if chroma != "444" and not CODECS[codec].odd_sizes and (info.width % 2 or (chroma == "420" and info.height % 2)):
        chroma = "444"
        notes.append(f"{codec} takes no odd frame size ({info.width}x{info.height}) with subsampled colour: "
                     "writing 4:4:4 (fewer players show it; try --codec vp9 or av1)")  # fmt: skip
    depth = "10le" if info.deep else ""
    for c in (chroma, "420"):
        for d in (depth, ""):
            fmt = f"yuv{c}p{d}"
            if fmt in supported:
                if d != depth:
                    notes.append(f"the input has {info.bits} bits per sample; {codec} here writes 8 bits only "
                                 "(use --codec h264, hevc or av1 to keep 10 bits)")  # fmt: skip
                if c != chroma:
                    notes.append(f"{codec} writes 4:2:0 colour here, the input has 4:{chroma[1]}:{chroma[2]}")
                return fmt, "; ".join(notes) or None
    raise DeblurError(f"the {codec} encoder here takes none of yuv420p/yuv422p/yuv444p")  # pragma: no cover


def encoder_options(codec: str, crf: int) -> dict[str, str]:
    """Options of the encoder for ``codec`` at ``crf`` (quality, speed preset, quiet logs). The colour
    tags reach every encoder through its codec context."""
    return {**CODECS[codec].options, "crf": str(crf)}


@dataclass(frozen=True)
class StreamPlan:
    """What happens to one non-video input stream.

    Attributes:
        index: the input stream's index.
        kind: ``"audio"``, ``"subtitle"`` or another stream type.
        codec: its codec name.
        action: ``"copy"``, ``"aac"``/``"opus"`` (re-encode) or ``"drop"``.
        note: why a stream is dropped (shown as a warning), or ``""``.
    """

    index: int
    kind: str
    codec: str
    action: str
    note: str = ""


def plan_streams(src: Path, streams: list[Any], container: str, supported: set[str], audio: str) -> list[StreamPlan]:
    """Decide, for each non-video stream of the input, whether the output copies, re-encodes or drops it.

    Audio follows ``audio`` (:data:`AUDIO_MODES`); subtitles are copied where the container holds
    their codec and dropped with a note otherwise; data streams (timecodes, telemetry) are dropped
    with a note.

    Raises:
        DeblurError: ``audio="copy"`` and an audio codec the container cannot hold, or a re-encoding
            codec the container cannot hold, or an unknown ``audio``.
    """
    if audio not in AUDIO_MODES:
        raise DeblurError(f"--audio must be one of {', '.join(AUDIO_MODES)}, got {audio!r}")
    ext = {"matroska": "mkv"}.get(container, container)
    plans: list[StreamPlan] = []
    for s in streams:
        kind = s.type
        codec = s.codec_context.name if s.codec_context is not None else (getattr(s, "codec", None) and s.codec.name)
        codec = codec or "unknown"
        if kind == "video":
            plans.append(StreamPlan(s.index, kind, codec, "drop", f"extra video stream #{s.index} ({codec}) not kept"))
        elif kind == "audio":
            if audio == "none":
                plans.append(StreamPlan(s.index, kind, codec, "drop"))
            elif audio == "copy":
                if codec not in supported:
                    hint = "opus" if container == "webm" else "aac"
                    raise DeblurError(f"{src}: its audio ({codec}) cannot go into a .{ext} file; use --audio {hint} "
                                      "to re-encode it, --audio none to drop it, or an .mkv output")  # fmt: skip
                plans.append(StreamPlan(s.index, kind, codec, "copy"))
            else:
                if audio not in supported:
                    raise DeblurError(f"a .{ext} file cannot hold {audio} audio; use --audio "
                                      f"{'opus' if container == 'webm' else 'aac'}")  # fmt: skip
                plans.append(StreamPlan(s.index, kind, codec, audio))
        elif kind == "subtitle":
            if codec in supported:
                plans.append(StreamPlan(s.index, kind, codec, "copy"))
            else:
                plans.append(StreamPlan(s.index, kind, codec, "drop",
                                        f"subtitle stream #{s.index} ({codec}) dropped: a .{ext} file cannot hold it"))  # fmt: skip
        else:
            plans.append(StreamPlan(s.index, kind, codec, "drop", f"{kind} stream #{s.index} ({codec}) not kept"))
    return plans
