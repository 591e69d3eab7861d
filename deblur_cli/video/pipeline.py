"""``deblur video``: decode -> batch -> deblur -> encode as a pipeline with bounded queues.

Three threads share the work so that decoding and encoding hide behind the network::

    decoder thread ──frames (bounded)──> this thread: blur gate, network ──frames (bounded)──> writer thread
          └──────────── audio / subtitle packets ──────────────────────────────────────────────┘

At most a few batches of frames are in memory at a time whatever the clip's length. The output is
written to a temporary file beside the destination and renamed into place at the end; an error or
Ctrl-C deletes the temporary file, so there is never a half-written video.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from deblur_cli.errors import DeblurError
from deblur_cli.io.images import write_image
from deblur_cli.video.encoding import plan_streams
from deblur_cli.video.job import VideoJob, VideoProgress, VideoResult, check_video_job
from deblur_cli.video.output import VideoWriter, temp_path
from deblur_cli.video.streams import Timestamps, VideoInfo, describe, display_oriented, frame_to_rgb, open_input
from deblur_cli.video.temporal import DEFAULT_SMOOTHING, FrameGate, TemporalGate

#: Most frames a batch holds when its size is chosen from free memory.
MAX_VIDEO_BATCH = 8
#: Default of ``gate_interval``: the blur is measured at most 10 times a second.
DEFAULT_GATE_INTERVAL = 0.1
#: Memory the frames waiting in the queues may take (bytes, both queues together, at least 2 frames each).
QUEUE_BYTES = 512 << 20
_POLL = 0.1  # seconds between checks for a stop request while a queue is full or empty
_END = object()


def deblur_video(
    deblurrer: Any,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    frames_dir: str | os.PathLike[str] | None = None,
    codec: str | None = None,
    crf: int | None = None,
    audio: str = "copy",
    batch_size: int | None = None,
    gate_smoothing: float = DEFAULT_SMOOTHING,
    gate_interval: float = DEFAULT_GATE_INTERVAL,
    overwrite: bool = False,
    progress: Callable[[VideoProgress], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> VideoResult:
    """Deblur every frame of a video and write a video with the input's timing, audio and tags.

    Args:
        deblurrer: a :class:`deblur_cli.inference.Deblurrer`; its device, backend, precision, tiling
            and blur gate are used. With a gate, each frame's decision is smoothed over time
            (:class:`~deblur_cli.video.temporal.TemporalGate`) so the clip does not flicker.
        src: any file FFmpeg reads (mp4, mov, mkv, webm, avi, ...).
        dst: ``.mp4``/``.m4v``/``.mov``/``.mkv``/``.webm``. Default: ``IN_deblurred.EXT`` beside the
            input, unless ``frames_dir`` alone is asked for.
        frames_dir: also (or only) write each deblurred frame as ``frame_000001.png`` ... here,
            turned upright by the display rotation; 16-bit PNG for deeper than 8-bit input.
        codec: ``h264``, ``hevc``, ``av1`` or ``vp9`` (default: h264, vp9 for .webm).
        crf: quality (default per codec, :data:`~deblur_cli.video.encoding.CODECS`).
        audio: ``copy`` (default: packets unchanged), ``aac`` or ``opus`` (re-encode), ``none``.
        batch_size: frames per network call (``None``: from free memory, at most 8).
        gate_smoothing: time constant of the gate's moving average in seconds (0: each frame alone).
        gate_interval: measure the blur at most this often (seconds; frames between reuse the last
            reading): the blur meter runs a small network on each measured frame; 0 measures every frame.
        overwrite: replace an existing output (and frames).
        progress: called with a :class:`VideoProgress` after every batch.
        notify: called with each warning (what cannot be kept as it was) as soon as it is known.

    Returns:
        A :class:`VideoResult`.

    Raises:
        DeblurError: unreadable input, an output that exists (without ``overwrite``), a codec or
            audio the container cannot hold, or a failure while decoding or encoding.
        KeyboardInterrupt: passed on after the temporary file is deleted.
    """
    job = check_video_job(src, dst, frames_dir=frames_dir, codec=codec, crf=crf, audio=audio, overwrite=overwrite)
    if not (gate_interval >= 0 and gate_interval < float("inf")):
        raise DeblurError(f"--gate-interval must be a finite number of seconds >= 0, got {gate_interval}")
    if not (gate_smoothing >= 0 and gate_smoothing < float("inf")):
        raise DeblurError(f"--gate-smoothing must be a finite number of seconds >= 0, got {gate_smoothing}")
    run = _Run(deblurrer, job, audio, batch_size, (gate_smoothing, gate_interval), overwrite, progress, notify)
    return run.run()


class _Stopped(Exception):
    """Another stage failed or the run was interrupted: this stage stops quietly."""


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_POLL)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event, errors: list[BaseException]) -> Any:
    while True:
        if errors:
            raise errors[0]
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=_POLL)
        except queue.Empty:
            continue


class _Run:
    """One :func:`deblur_video` call: owns the threads, the queues and the temporary file."""

    def __init__(self, deblurrer: Any, job: VideoJob, audio: str, batch_size: int | None, gate: tuple[float, float],
                 overwrite: bool, progress: Callable[[VideoProgress], None] | None,
                 notify: Callable[[str], None] | None) -> None:  # fmt: skip
        self.deblurrer, self.job, self.audio, self.overwrite = deblurrer, job, audio, overwrite
        self.batch_size = batch_size
        self.smoothing, self.interval = gate
        self.progress, self.notify = progress, notify
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.result = VideoResult(src=job.src, dst=job.dst, frames_dir=job.frames_dir)
        self._decoded = self._encoded = 0  # frames through each stage, for error messages
        self._damaged = 0  # video packets the decoder refused

    def _warn(self, text: str) -> None:
        self.result.warnings.append(text)
        if self.notify is not None:
            self.notify(text)

    def run(self) -> VideoResult:
        job = self.job
        start = time.perf_counter()
        source = open_input(job.src)
        tmp: Path | None = None
        writer: VideoWriter | None = None
        threads: list[threading.Thread] = []
        try:
            vin = source.streams.video[0]
            vin.thread_type = "AUTO"  # frame-threaded decoding
            others = [s for s in source.streams if s.index != vin.index]
            plans = []
            if job.dst is not None:
                probe_supported = self._supported(job.container)  # type: ignore[arg-type]
                plans = plan_streams(job.src, others, job.container, probe_supported, self.audio)  # type: ignore[arg-type]
            keep = [source.streams[p.index] for p in plans if p.action != "drop"]
            packets = source.demux(vin, *keep)
            pending: list[Any] = []
            first = self._first_frames(packets, vin, pending)
            info = describe(vin, first[0])
            self.result.total = info.frames
            self.result.width, self.result.height = info.width, info.height
            if job.dst is not None:
                tmp = temp_path(job.dst)
                writer = VideoWriter(tmp, job.container, job.codec, job.crf, info, source, plans)  # type: ignore[arg-type]
                self.result.codec, self.result.pix_fmt = job.codec or "", writer.pix_fmt
                for w in writer.warnings:
                    self._warn(w)
            if job.frames_dir is not None:
                job.frames_dir.mkdir(parents=True, exist_ok=True)
            h, w = info.height, info.width
            batch = self._batch_size(h, w)
            depth = max(2, min(2 * batch, QUEUE_BYTES // (2 * h * w * 3 * (2 if info.deep else 1))))
            decoded: queue.Queue = queue.Queue(maxsize=depth)
            encoded: queue.Queue = queue.Queue(maxsize=depth)
            side: queue.Queue = queue.Queue()  # audio/subtitles: paced by the bounded video queue
            for p in pending:
                side.put(p)
            threads = [
                threading.Thread(target=self._guard, args=("decoding", self._decode, packets, vin, info, first, decoded, side),
                                 name="deblur-video-decode", daemon=True),
                threading.Thread(target=self._guard, args=("encoding", self._encode, writer, info, encoded, side),
                                 name="deblur-video-encode", daemon=True),
            ]  # fmt: skip
            for t in threads:
                t.start()
            self._deblur(info, batch, decoded, encoded, start)
            _put(encoded, _END, self.stop)
            threads[1].join()
            if self.errors:
                raise self.errors[0]
            threads[0].join()
            if self.errors:
                raise self.errors[0]
            if writer is not None and tmp is not None and job.dst is not None:
                if job.dst.exists() and not self.overwrite:  # appeared while this ran
                    raise DeblurError(f"{job.dst}: already exists (use --overwrite to replace it)")
                os.replace(tmp, job.dst)
                tmp = None
            if job.frames_dir is not None and self.overwrite:
                _remove_stale_frames(job.frames_dir, self.result.frames)
        except _Stopped:
            raise (self.errors[0] if self.errors else DeblurError(f"{job.src}: stopped")) from None
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=10)
            if tmp is not None:
                if writer is not None:
                    writer.abort()
                tmp.unlink(missing_ok=True)
            source.close()
        self.result.seconds = time.perf_counter() - start
        return self.result

    @staticmethod
    def _supported(container: str) -> set[str]:
        probe = av.open(os.devnull, "w", format=container)
        try:
            return set(probe.supported_codecs)
        finally:
            probe.close()

    def _batch_size(self, h: int, w: int) -> int:
        if self.batch_size is not None:
            return max(1, int(self.batch_size))
        return int(max(1, min(MAX_VIDEO_BATCH, self.deblurrer.batch_size_for(h, w))))

    def _first_frames(self, packets: Iterator[Any], vin: Any, pending: list[Any]) -> list[Any]:
        """Demux until the first video frames decode (one packet may give several, e.g. when the decoder is
        flushed); other streams' packets wait in ``pending``."""
        for packet in packets:
            if packet.stream.index != vin.index:
                pending.append(packet)
                continue
            frames = self._decode_packet(packet)
            if frames:
                return frames
        raise DeblurError(f"{self.job.src}: no video frame could be decoded")

    def _decode_packet(self, packet: Any) -> list[Any]:
        try:
            return list(packet.decode())
        except av.InvalidDataError:  # a damaged packet: skip it as ffmpeg does, and say so at the end
            self._damaged += 1
            return []

    def _guard(self, stage: str, target: Callable[..., None], *args: Any) -> None:
        """Run a stage; its exception stops the others and is raised in the calling thread."""
        try:
            target(*args)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if isinstance(exc, (av.FFmpegError, OSError)):
                where = self.job.src if stage == "decoding" else (self.job.dst or self.job.frames_dir)
                reason = getattr(exc, "strerror", None) or str(exc)
                exc = DeblurError(f"{where}: {stage} failed at frame {self._frame_no(stage)} ({reason})")
            self.errors.append(exc)
            self.stop.set()

    def _frame_no(self, stage: str) -> int:
        return (self._decoded if stage == "decoding" else self._encoded) + (stage == "decoding")

    # ------------------------------------------------------------------------------ stages

    def _decode(self, packets: Iterator[Any], vin: Any, info: VideoInfo, first: list[Any], out: queue.Queue,
                side: queue.Queue) -> None:  # fmt: skip
        busy = 0.0
        index = 0
        timing = Timestamps(_frame_step(info))

        def emit(ready: list[tuple[np.ndarray, int, int]]) -> None:
            nonlocal index
            for rgb, pts, duration in ready:
                _put(out, (index, rgb, pts, duration), self.stop)
                index += 1
                self._decoded = index

        def push(frame: Any) -> None:
            nonlocal busy
            if (frame.width, frame.height) != (info.width, info.height):
                raise DeblurError(
                    f"{self.job.src}: the frame size changes from {info.width}x{info.height} to "
                    f"{frame.width}x{frame.height} at frame {index + 1}; such streams are not supported"
                )
            t0 = time.perf_counter()
            rgb = frame_to_rgb(frame, info)
            busy += time.perf_counter() - t0
            emit(timing.push(rgb, frame.pts, frame.duration))

        for frame in first:
            push(frame)
        for packet in packets:
            if packet.stream.index != vin.index:
                side.put(packet)
                continue
            t0 = time.perf_counter()
            frames = self._decode_packet(packet)
            busy += time.perf_counter() - t0
            for frame in frames:
                push(frame)
        emit(timing.flush())
        if self._damaged:
            self._warn(f"{self._damaged} damaged video packet(s) skipped")
        if timing.retimed:
            self._warn(
                f"{timing.retimed} frame timestamp(s) out of display order in the input (as AVI files with "
                "B-frames have them): put in order"
            )
        self.result.decode_seconds = busy
        _put(out, _END, self.stop)

    def _encode(self, writer: VideoWriter | None, info: VideoInfo, frames: queue.Queue, side: queue.Queue) -> None:
        busy = 0.0
        frames_dir = self.job.frames_dir
        while True:
            item = _get(frames, self.stop, [])
            t0 = time.perf_counter()
            if item is _END:
                break
            index, rgb, pts, duration = item
            self._encoded = index + 1
            if writer is not None:
                while not side.empty():
                    writer.write_packet(side.get_nowait())
                writer.write_frame(rgb, pts, duration)
            if frames_dir is not None:
                write_image(frames_dir / f"frame_{index + 1:06d}.png", display_oriented(rgb, info.rotation),
                            overwrite=self.overwrite)  # fmt: skip
            busy += time.perf_counter() - t0
        t0 = time.perf_counter()
        if writer is not None:
            # the decoder has finished (its end marker came through): every packet is in `side`
            while not side.empty():
                writer.write_packet(side.get_nowait())
            writer.finish()
        self.result.encode_seconds = busy + time.perf_counter() - t0

    def _deblur(self, info: VideoInfo, batch: int, frames: queue.Queue, out: queue.Queue, start: float) -> None:
        """This thread's stage: the gate's decisions, smoothed over time, and the network."""
        d = self.deblurrer
        gate = TemporalGate(self.smoothing) if d.gate is not None else None
        net = d if d.gate is None else _network_only(d)
        scale = np.float32(65535 if info.deep else 255)
        res = self.result
        reading: tuple[float, float, float, np.ndarray | None] | None = None  # time, weight, extent, map
        done = False
        while not done:
            items: list[tuple[int, np.ndarray, int, int]] = []
            while len(items) < batch:
                item = _get(frames, self.stop, self.errors)
                if item is _END:
                    done = True
                    break
                items.append(item)
            if not items:
                break
            t0 = time.perf_counter()
            floats = [rgb.astype(np.float32) / scale for _, rgb, _, _ in items]
            gates: list[FrameGate | None] = [None] * len(items)
            if gate is not None:
                for k, (f, (_, _, pts, _)) in enumerate(zip(floats, items, strict=True)):
                    t = float(pts * info.time_base)
                    if reading is None or not 0 <= t - reading[0] < self.interval - 1e-9:
                        decision = d.decide(f.transpose(2, 0, 1))
                        reading = (t, decision.weight, decision.extent, decision.pixel_weights())
                    g = gate.update(t, *reading[1:])
                    gates[k] = g
                    res.weights.append(g.weight)
                    res.raw_weights.append(g.raw)
                    res.extents.append(g.extent)
            run = [k for k, g in enumerate(gates) if g is None or g.weight > 0]
            outs = net.deblur_batch([floats[k] for k in run], batch) if run else []
            results = [rgb for _, rgb, _, _ in items]  # untouched frames: the decoded pixels, bit for bit
            for k, o in zip(run, outs, strict=True):
                g = gates[k]
                if g is not None and g.weight < 1:
                    o = _blend(floats[k], o, g)
                results[k] = np.rint(np.clip(o, 0.0, 1.0) * scale).astype(items[k][1].dtype)
            res.deblur_seconds += time.perf_counter() - t0
            for (index, _, pts, duration), rgb in zip(items, results, strict=True):
                _put(out, (index, rgb, pts, duration), self.stop)
            for g in gates:
                w = 1.0 if g is None else g.weight
                res.deblurred += w >= 1
                res.blended += 0 < w < 1
                res.untouched += w <= 0
            res.frames += len(items)
            if self.progress is not None:
                res.seconds = time.perf_counter() - start
                self.progress(res)


def _remove_stale_frames(frames_dir: Path, count: int) -> None:
    """Delete ``frame_N.png`` with ``N > count``: an earlier, longer clip's frames replaced with
    ``overwrite`` would otherwise follow this clip's in the folder."""
    for p in frames_dir.glob("frame_*.png"):
        number = p.stem[len("frame_") :]
        if number.isdigit() and int(number) > count:
            p.unlink(missing_ok=True)


def _blend(blurred: np.ndarray, deblurred: np.ndarray, gate: FrameGate) -> np.ndarray:
    """``w * deblurred + (1 - w) * blurred`` for ``(H, W, 3)`` float frames; ``w`` the smoothed weight,
    per pixel with the regional gate (exactly ``blurred`` where it is 0, as the image gate)."""
    w: Any = np.float32(gate.weight) if gate.pixel_weights is None else gate.pixel_weights[..., None]
    return deblurred * w + blurred * (np.float32(1) - w)


def _network_only(deblurrer: Any) -> Any:
    """A gate-less deblurrer of the same class sharing ``deblurrer``'s backend and settings: the video
    pipeline applies its own, smoothed, gate. (Built through ``type()`` so this package needs no import
    of :mod:`deblur_cli.inference`, whose ``Deblurrer.deblur_video`` calls it.)"""
    return type(deblurrer)(backend=deblurrer.backend, tile=deblurrer.tile, tile_overlap=deblurrer.tile_overlap,
                           self_ensemble=deblurrer.self_ensemble)  # fmt: skip


def _frame_step(info: VideoInfo) -> int:
    """One frame's duration in time-base units (from the frame rate; 1 when unknown)."""
    if info.rate:
        return max(1, round(1 / (info.rate * info.time_base)))
    return 1
