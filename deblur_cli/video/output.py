"""The output side of ``deblur video``: a temporary file in the destination folder, renamed into place at
the end, holding the deblurred video stream and the input's audio and subtitle streams.

:class:`VideoWriter` opens the container and writes its header at once (so that an audio codec the
container refuses fails before any frame is deblurred), then encodes frames and muxes the other
streams' packets in whatever thread calls it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np

from deblur_cli.errors import DeblurError
from deblur_cli.video.encoding import AUDIO_ENCODERS, CODECS, StreamPlan, choose_pix_fmt, encoder_options
from deblur_cli.video.streams import VideoInfo, rgb_to_frame

# Container tags that describe the file FFmpeg wrote, not the content: never copied.
_FILE_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "creation_tool"}
_STREAM_FILE_TAGS = {"encoder", "duration", "vendor_id", "_statistics_tags", "_statistics_writing_app",
                     "_statistics_writing_date_utc", "number_of_frames", "number_of_bytes", "bps"}  # fmt: skip


def temp_path(dst: Path) -> Path:
    """A new, empty temporary file beside ``dst`` (hidden, ``.part``), with the permissions an output
    file gets (0666 minus the umask)."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    except OSError as exc:
        raise DeblurError(f"{dst}: cannot write there ({exc.strerror or exc})") from None
    mask = os.umask(0o022)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    os.close(fd)
    return Path(name)


class VideoWriter:
    """Encode deblurred frames and copy (or re-encode) the other streams into ``path``.

    Args:
        path: the file to write (a temporary file; the caller renames it).
        container: FFmpeg muxer name (``mp4``, ``mov``, ``matroska``, ``webm``).
        codec: ``--codec`` name (:data:`~deblur_cli.video.encoding.CODECS`).
        crf: quality.
        info: the input's video stream.
        source: the input container (its streams are the templates of copied streams).
        plans: what to do with each non-video input stream.
        rate: the input's frame rate, if known.

    Attributes:
        pix_fmt: the pixel format encoded.
        warnings: what could not be kept as it was.
    """

    def __init__(self, path: Path, container: str, codec: str, crf: int, info: VideoInfo, source: Any,
                 plans: list[StreamPlan]) -> None:  # fmt: skip
        spec = CODECS[codec]
        self.info = info
        self.warnings: list[str] = []
        try:
            self.out = av.open(str(path), "w", format=container)
        except (av.FFmpegError, OSError) as exc:
            raise DeblurError(f"{path.parent}: cannot write there ({exc})") from None
        try:
            self._setup(spec.encoder, codec, crf, info, source, plans)
        except BaseException:
            self.out.close()
            raise

    def _setup(self, encoder: str, codec: str, crf: int, info: VideoInfo, source: Any, plans: list[StreamPlan]) -> None:
        out = self.out
        out.metadata.update({k: v for k, v in source.metadata.items() if k.lower() not in _FILE_TAGS})
        vin = source.streams.video[0]
        supported = av.Codec(encoder, "w").video_formats or ()
        self.pix_fmt, note = choose_pix_fmt(codec, info, [f.name for f in supported])
        if note:
            self.warnings.append(note)
        if encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner unless told errors only
        v = out.add_stream(encoder, options=encoder_options(codec, crf))
        v.width, v.height, v.pix_fmt = info.width, info.height, self.pix_fmt
        v.time_base = info.time_base
        cc = v.codec_context
        cc.time_base = info.time_base
        if info.rate:
            cc.framerate = info.rate
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        cc.color_primaries, cc.color_trc = info.color.primaries, info.color.transfer
        cc.colorspace, cc.color_range = info.color.matrix, info.color.range
        if info.display_matrix is not None:
            v.set_display_matrix(list(info.display_matrix))
        _copy_tags(vin, v)
        self.video = v
        # other streams: input index -> (output stream, plan, resampler for re-encoding)
        self.routes: dict[int, tuple[Any, StreamPlan, Any]] = {}
        for plan in plans:
            if plan.action == "drop":
                if plan.note:
                    self.warnings.append(plan.note)
                continue
            s_in = source.streams[plan.index]
            if plan.action == "copy":
                s_out = out.add_stream_from_template(s_in)
                resampler = None
            else:
                ctx = s_in.codec_context
                rate = 48000 if plan.action == "opus" else (ctx.sample_rate or 48000)
                s_out = out.add_stream(AUDIO_ENCODERS[plan.action], rate=rate)
                if ctx.layout is not None and ctx.layout.nb_channels:
                    s_out.layout = ctx.layout.name
                resampler = av.AudioResampler(format=s_out.format.name, layout=s_out.layout.name, rate=rate)
            _copy_tags(s_in, s_out)
            s_out.disposition = s_in.disposition
            self.routes[plan.index] = (s_out, plan, resampler)
        chapters = source.chapters() if callable(getattr(source, "chapters", None)) else None
        if chapters:
            out.set_chapters(chapters)
        try:
            out.start_encoding()  # writes the header: a refused stream fails here, before any frame
        except (av.FFmpegError, ValueError) as exc:
            kinds = ", ".join(f"{p.kind} {p.codec}" for p in plans if p.action == "copy") or "video"
            raise DeblurError(f"cannot write a {out.format.name} file with {kinds} ({exc}); "
                              "try --audio aac or an .mkv output")  # fmt: skip

    # ---------------------------------------------------------------------------- writing

    def write_frame(self, rgb: np.ndarray, pts: int, duration: int | None) -> None:
        """Encode one ``(H, W, 3)`` uint8/uint16 RGB frame at ``pts`` (in the input's time base)."""
        frame = rgb_to_frame(rgb, self.pix_fmt, self.info)
        frame.pts = pts
        frame.time_base = self.info.time_base
        if duration:
            frame.duration = duration
        for packet in self.video.encode(frame):
            self.out.mux(packet)

    def write_packet(self, packet: Any) -> None:
        """Copy or re-encode one packet of another input stream (an empty packet flushes its decoder)."""
        route = self.routes.get(packet.stream.index)
        if route is None:
            return
        s_out, plan, resampler = route
        if plan.action == "copy":
            if packet.dts is None and packet.pts is None:
                return  # the demuxer's end-of-stream marker: nothing to copy
            packet.stream = s_out
            self.out.mux(packet)
            return
        for frame in packet.decode():  # the demuxer's last, empty packet flushes the decoder
            for res in resampler.resample(frame):
                for p in s_out.encode(res):
                    self.out.mux(p)

    def finish(self) -> None:
        """Flush the video encoder and re-encoded audio, write the trailer and close the file."""
        for packet in self.video.encode(None):
            self.out.mux(packet)
        for s_out, _, resampler in self.routes.values():
            if resampler is not None:  # re-encoded audio: what the resampler and the encoder still hold
                for res in resampler.resample(None):
                    for p in s_out.encode(res):
                        self.out.mux(p)
                for p in s_out.encode(None):
                    self.out.mux(p)
        self.out.close()

    def abort(self) -> None:
        """Close the file without finishing it (the caller deletes it)."""
        with contextlib.suppress(Exception):  # the file is being thrown away; its trailer may fail to write
            self.out.close()


def _copy_tags(s_in: Any, s_out: Any) -> None:
    """Stream tags (language, title, handler name) that describe the content."""
    tags = {k: v for k, v in s_in.metadata.items() if k.lower() not in _STREAM_FILE_TAGS and not k.startswith("_")}
    s_out.metadata.update(tags)
