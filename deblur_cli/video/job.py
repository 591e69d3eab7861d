"""A ``deblur video`` job: its checks before any model loads, and what a run reports."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import av

from deblur_cli.errors import DeblurError
from deblur_cli.video.encoding import check_crf, choose_codec, container_for, default_video_output, plan_streams
from deblur_cli.video.streams import open_input


@dataclass
class VideoProgress:
    """Where a :func:`deblur_video` run stands (given to its ``progress`` callback after each batch).

    Attributes:
        frames: frames done.
        total: frames expected (from the header or the duration), or ``None``.
        seconds: wall time so far.
        deblurred, blended, untouched: frames the gate sent fully, partly or not through the network
            (without a gate, every frame is deblurred).
    """

    frames: int = 0
    total: int | None = None
    seconds: float = 0.0
    deblurred: int = 0
    blended: int = 0
    untouched: int = 0

    @property
    def fps(self) -> float:
        """Frames per second so far."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed, or ``None`` when the total or the speed is unknown."""
        if self.total is None or self.fps <= 0:
            return None
        return max(0.0, (self.total - self.frames) / self.fps)


@dataclass
class VideoResult(VideoProgress):
    """What :func:`deblur_video` did.

    Attributes:
        src: input; dst: the video written (``None`` with frames only); frames_dir: where the frames
            went (``None`` unless asked).
        width, height: the frame size (before the display rotation).
        codec, pix_fmt: what the video stream was encoded with (``""`` with frames only).
        weights: the gate weight applied to each frame (0: left as it was, 1: fully deblurred);
            raw_weights: each frame's own, before smoothing over time; extents: each frame's
            estimated blur in pixels. Empty without a gate.
        decode_seconds, deblur_seconds, encode_seconds: busy time of each stage (the stages overlap,
            so these add up to more than ``seconds``).
        warnings: what could not be kept as it was.
    """

    src: Path = Path()
    dst: Path | None = None
    frames_dir: Path | None = None
    width: int = 0
    height: int = 0
    codec: str = ""
    pix_fmt: str = ""
    weights: list[float] = field(default_factory=list)
    raw_weights: list[float] = field(default_factory=list)
    extents: list[float] = field(default_factory=list)
    decode_seconds: float = 0.0
    deblur_seconds: float = 0.0
    encode_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VideoJob:
    """A checked ``deblur video`` job (:func:`check_video_job`)."""

    src: Path
    dst: Path | None
    frames_dir: Path | None
    container: str | None
    codec: str | None
    crf: int | None


def check_video_job(
    src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, *, frames_dir: str | os.PathLike[str] | None = None,
    codec: str | None = None, crf: int | None = None, audio: str = "copy", overwrite: bool = False,
) -> VideoJob:  # fmt: skip
    """Cheap checks before any model is loaded: the input opens and has video, the output's container,
    codec, quality and audio fit together, and nothing would be overwritten without ``overwrite``.

    ``dst`` defaults to ``IN_deblurred.EXT`` beside the input unless only ``frames_dir`` is asked for.

    Raises:
        DeblurError: the first problem found.
    """
    src = Path(src)
    container_in = open_input(src)
    try:
        out: Path | None = None if (dst is None and frames_dir is not None) else Path(dst or default_video_output(src))
        fmt = name = None
        level: int | None = None
        if out is not None:
            fmt = container_for(out)
            name = choose_codec(fmt, codec)
            level = check_crf(name, crf)
            if out.is_dir():
                raise DeblurError(f"{out}: is a directory; give an output file name")
            if out.exists() and not overwrite:
                raise DeblurError(f"{out}: already exists (use --overwrite to replace it)")
            probe = av.open(os.devnull, "w", format=fmt)
            try:
                supported = set(probe.supported_codecs)
            finally:
                probe.close()
            others = [s for s in container_in.streams if s.index != container_in.streams.video[0].index]
            plan_streams(src, others, fmt, supported, audio)
        elif codec is not None or crf is not None:
            raise DeblurError("--codec and --crf need a video output (-o); --frames alone writes images")
        frames = Path(frames_dir) if frames_dir is not None else None
        if frames is not None:
            if frames.exists() and not frames.is_dir():
                raise DeblurError(f"--frames {frames}: exists and is not a folder")
            if frames.is_dir() and not overwrite and any(frames.glob("frame_*.png")):
                raise DeblurError(
                    f"--frames {frames}: already holds frame_*.png files (use --overwrite to replace them)"
                )
        return VideoJob(src, out, frames, fmt, name, level)
    finally:
        container_in.close()
