"""``deblur video``: deblur a video clip, keeping its timing, audio, rotation and colour tags."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app

if TYPE_CHECKING:
    from deblur_cli.video.job import VideoProgress, VideoResult

VIDEO_PANEL = "Video"


class CodecName(str, Enum):
    """``--codec`` (``deblur_cli.video.encoding.CODECS``)."""

    h264 = "h264"
    hevc = "hevc"
    av1 = "av1"
    vp9 = "vp9"


class AudioMode(str, Enum):
    """``--audio`` (``deblur_cli.video.encoding.AUDIO_MODES``)."""

    copy = "copy"
    aac = "aac"
    opus = "opus"
    none = "none"


@app.command("video")
def video(
    input: Annotated[
        Path,
        typer.Argument(
            metavar="IN", help="Input video: any file FFmpeg reads (mp4, mov, mkv, webm, avi, ...).", show_default=False
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output video: .mp4, .m4v, .mov, .mkv or .webm. Default: IN_deblurred beside the input, in the "
            "input's container (.mp4 for others), unless --frames alone is given.",
            show_default=False,
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ] = None,
    frames: Annotated[
        Path | None,
        typer.Option(
            "--frames",
            help="Write the deblurred frames as frame_000001.png ... into this folder (upright, 16-bit PNG for "
            "deeper than 8-bit video); with -o as well as the video.",
            show_default=False,
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ] = None,
    codec: Annotated[
        CodecName | None,
        typer.Option(
            "--codec",
            help="Video codec. Default: h264 (vp9 for .webm).",
            show_default=False,
            rich_help_panel=VIDEO_PANEL,
        ),
    ] = None,
    crf: Annotated[
        int | None,
        typer.Option(
            "--crf",
            min=0,
            help="Constant rate factor: lower is better and larger. Default: h264 18, hevc 20, av1 30, vp9 31; "
            "h264 with 0 is lossless.",
            show_default=False,
            rich_help_panel=VIDEO_PANEL,
        ),
    ] = None,
    audio: Annotated[
        AudioMode,
        typer.Option(
            "--audio",
            help="Audio: copy the packets unchanged, re-encode to aac or opus, or none.",
            rich_help_panel=VIDEO_PANEL,
        ),
    ] = AudioMode.copy,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Frames per network call. Default: from free memory (at most 8).",
            show_default=False,
            rich_help_panel=VIDEO_PANEL,
        ),
    ] = None,
    gate_smoothing: Annotated[
        float,
        typer.Option(
            "--gate-smoothing",
            min=0.0,
            help="Time constant (seconds) over which the blur gate's strength follows the blur, so that "
            "frames do not flicker between deblurred and untouched; 0 decides every frame alone.",
            rich_help_panel=VIDEO_PANEL,
        ),
    ] = 0.3,
    gate_interval: Annotated[
        float,
        typer.Option(
            "--gate-interval",
            min=0.0,
            help="Measure the blur at most this often (seconds); frames between reuse the last reading. "
            "0 measures every frame (each reading runs the blur meter's small network).",
            rich_help_panel=VIDEO_PANEL,
        ),
    ] = 0.1,
    model: opt.Model = None,
    weights: opt.Weights = None,
    device: opt.Device = "auto",
    backend: opt.Backend = opt.BackendName.torch,
    tile: opt.Tile = None,
    tile_overlap: opt.TileOverlap = opt.DEFAULT_TILE_OVERLAP,
    fp16: opt.Fp16 = False,
    bf16: opt.Bf16 = False,
    self_ensemble: opt.SelfEnsemble = 1,
    gate: opt.Gate = opt.DEFAULT_GATE,
    gate_scope: opt.GateScope = opt.DEFAULT_GATE_SCOPE,
    overwrite: opt.Overwrite = False,
) -> None:
    """Deblur a video; frame timing, audio, subtitles, rotation and colour tags are kept."""
    from deblur_cli.video.formats import require_av

    require_av()
    from deblur_cli.gate.decision import parse_gate
    from deblur_cli.inference import Deblurrer
    from deblur_cli.video.job import check_video_job
    from deblur_cli.video.pipeline import deblur_video

    c = codec.value if codec is not None else None
    job = check_video_job(input, output, frames_dir=frames, codec=c, crf=crf, audio=audio.value, overwrite=overwrite)
    deblurrer = Deblurrer(
        model, weights=weights, device=device, backend=backend.value, tile=tile, tile_overlap=tile_overlap, fp16=fp16,
        bf16=bf16, self_ensemble=self_ensemble, gate=parse_gate(gate), gate_scope=gate_scope.value,
    )  # fmt: skip
    typer.echo(f"deblur: {opt.describe_run(deblurrer)}", err=True)
    result = _with_progress(
        lambda progress, notify: deblur_video(
            deblurrer, input, job.dst, frames_dir=frames, codec=c, crf=crf, audio=audio.value, batch_size=batch_size,
            gate_smoothing=gate_smoothing, gate_interval=gate_interval, overwrite=overwrite, progress=progress, notify=notify,
        )
    )  # fmt: skip
    typer.echo(_summary(result))


def gate_share(p: VideoProgress) -> str:
    """``"deblurred 80%, blended 5%, untouched 15%"`` for the frames so far."""
    if not p.frames:
        return ""
    parts = [("deblurred", p.deblurred), ("blended", p.blended), ("untouched", p.untouched)]
    return ", ".join(f"{name} {n / p.frames:.0%}" for name, n in parts if n)


def _with_progress(run):  # type: ignore[no-untyped-def]
    """Run ``run(progress, notify)`` under a rich progress bar on stderr: frames, frames/s, ETA and the
    share of frames deblurred or left as they were."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[share]}"))  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("video", total=None, rate="", share="")

        def progress(p: VideoProgress) -> None:
            bar.update(task, completed=p.frames, total=max(p.total, p.frames) if p.total else None,
                       rate=f"{p.fps:.2f} fps", share=gate_share(p))  # fmt: skip

        def notify(text: str) -> None:
            bar.console.print(f"deblur: warning: {text}")

        return run(progress, notify)


def _summary(r: VideoResult) -> str:
    where = " and ".join(str(p) for p in (r.dst, r.frames_dir) if p is not None)
    share = gate_share(r)
    codec = f"{r.codec} {r.pix_fmt}, " if r.codec else ""
    text = (f"wrote {where} ({r.frames} frames, {codec}{r.seconds:.1f} s, {r.fps:.2f} fps"
            f"{'; ' + share if share else ''})")  # fmt: skip
    if r.weights and r.untouched == r.frames:
        top = max(r.extents) if r.extents else 0.0
        text += (f"\nthe blur gate found no frame blurred enough to deblur (most blur read: {top:.1f} px); "
                 "--gate off deblurs every frame")  # fmt: skip
    return text
