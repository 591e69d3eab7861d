"""``deblur folder``: deblur every image of a folder (tree), mirroring it in an output folder."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import click
import typer
from typer.core import TyperCommand

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app
from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    from deblur_cli.inference import FileResult

BATCH_PANEL = "Folder"
RAY_PANEL = "Ray cluster (--ray)"
#: What ``--ray`` takes as its value: auto, local, HOST:PORT ([v6]:PORT too) or ray://HOST:PORT.
_RAY_VALUE = re.compile(r"^(auto|local|ray://\S+|\[[0-9A-Fa-f:.]+\]:\d+|[\w.-]+:\d+)$")


def ray_default_value(args: list[str]) -> list[str]:
    """``args`` with ``auto`` put after a bare ``--ray``, so that ``--ray`` alone means ``--ray auto``.

    Click (and so Typer) has no option with an optional value. The token after ``--ray`` is its
    value only if it reads as one (``auto``, ``local``, ``HOST:PORT``, ``ray://...``); anything
    else (an option, a folder, an ``s3://`` URI, nothing) is left for the other parameters.
    """
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            return out + args[i + 1 :]
        if arg == "--ray" and not (i + 1 < len(args) and _RAY_VALUE.match(args[i + 1])):
            out.append("auto")
    return out


class _FolderCommand(TyperCommand):
    """``deblur folder``'s command: a bare ``--ray`` becomes ``--ray auto`` before parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, ray_default_value(args))


@app.command("folder", cls=_FolderCommand)
def folder(
    input_dir: opt.InputDir,
    output_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Output folder (created; the input tree is mirrored). Default: IN_DIR_deblurred beside IN_DIR. "
            "May be IN_DIR itself: outputs then get the --suffix.",
            show_default=False,
            rich_help_panel=BATCH_PANEL,
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Include sub-folders.", rich_help_panel=BATCH_PANEL)
    ] = False,
    suffix: Annotated[
        Optional[str],
        typer.Option(
            "--suffix",
            help="Appended to output file names (default: none, or _deblurred when writing into IN_DIR).",
            show_default=False,
            rich_help_panel=BATCH_PANEL,
        ),
    ] = None,
    ext: Annotated[
        Optional[str],
        typer.Option(
            "--ext",
            help="Output format for every file: png, jpg, webp or tiff. Default: the input's (png for others).",
            show_default=False,
            rich_help_panel=BATCH_PANEL,
        ),
    ] = None,
    batch: Annotated[
        bool,
        typer.Option("--batch", help="Run same-size images through the network together.", rich_help_panel=BATCH_PANEL),
    ] = False,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per batch (implies --batch). Default with --batch: from free memory.",
            show_default=False,
            rich_help_panel=BATCH_PANEL,
        ),
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option("--skip-existing", help="Leave existing outputs alone.", rich_help_panel=opt.OUTPUT_PANEL),
    ] = False,
    overwrite: opt.Overwrite = False,
    quality: opt.Quality = None,
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
    viz: opt.VizDir = None,
    fusion: opt.MapFusion = False,
    attention: opt.MapAttention = False,
    offsets: opt.MapOffsets = False,
    kernels: opt.MapKernels = False,
    all_maps: opt.MapAll = False,
    level: opt.MapLevel = 1,
    block: opt.MapBlock = None,
    decoder: opt.MapDecoder = True,
    raw: opt.MapRaw = False,
    ray: Annotated[Optional[str], typer.Option("--ray", metavar="[auto|local|ADDRESS]", help="Run on a Ray cluster: auto (the default when --ray has no value: RAY_ADDRESS or a running one, else local), local, or HOST:PORT. IN_DIR and -o may then be s3:// or gs:// URIs; a manifest in the output folder makes reruns resume.", rich_help_panel=RAY_PANEL)] = None,  # fmt: skip
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Ray workers, each holding one model (default: one per GPU, else as many as the CPUs allow).", show_default=False, rich_help_panel=RAY_PANEL)] = None,  # fmt: skip
    worker_threads: Annotated[Optional[int], typer.Option("--worker-threads", min=1, help="torch CPU threads per Ray worker (default: up to 4).", show_default=False, rich_help_panel=RAY_PANEL)] = None,  # fmt: skip
    worker_gpus: Annotated[Optional[float], typer.Option("--worker-gpus", min=0, help="GPUs per Ray worker (default 1; 0.5 = two workers per GPU; 0 = CPU workers).", show_default=False, rich_help_panel=RAY_PANEL)] = None,  # fmt: skip
) -> None:
    """Deblur all images in a folder; goes on past bad files, lists them, exits 1 if any failed."""
    from deblur_cli.gate.decision import parse_gate
    from deblur_cli.inference import Deblurrer, folder_output_root
    from deblur_cli.inference.media import plan_media, run_videos  # videos among the images (deblur_cli.video)

    gate_px = parse_gate(gate)
    if overwrite and skip_existing:
        raise DeblurError("--overwrite and --skip-existing exclude each other")
    if ray is not None:  # the same job on a Ray cluster (deblur_cli.distributed)
        from deblur_cli.distributed.progress import run_folder
        from deblur_cli.video.formats import is_video_path

        # The maps' tree mirrors the output folder, which deblur_dataset resolves (it may be a URI).
        maps = opt.viz_request(viz, fusion, attention, offsets, kernels, all_maps, level, block, decoder, raw, overwrite)
        report = run_folder(
            ray, input_dir, output_dir, viz=maps, recursive=recursive, suffix=suffix, ext=ext, skip_existing=skip_existing,
            overwrite=overwrite, quality=quality, model=model, weights=weights, device=device, backend=backend.value,
            tile=tile, tile_overlap=tile_overlap, fp16=fp16, bf16=bf16, self_ensemble=self_ensemble, gate=gate_px,
            gate_scope=gate_scope.value, batch_size=batch_size if batch_size is not None else (None if batch else 1),
            video_batch_size=batch_size,
            workers=workers, threads=worker_threads, gpus_per_worker=worker_gpus,
        )  # fmt: skip
        failed = _print_summary(report.results, report.input_root, report.device_description, gate_scope.value == "region")
        if failed:
            kind = "file(s)" if any(is_video_path(r.src) for r in report.results) else "image(s)"
            raise DeblurError(f"{failed} of {len(report.results)} {kind} failed (listed above)", exit_code=1)
        return
    jobs, videos = plan_media(input_dir, output_dir, recursive=recursive, suffix=suffix, ext=ext)
    maps = opt.viz_request(viz, fusion, attention, offsets, kernels, all_maps, level, block, decoder, raw, overwrite,
                           mirror_from=folder_output_root(input_dir, output_dir))  # fmt: skip
    if not overwrite and not skip_existing:
        existing = [dst for _, dst in jobs + videos if dst.exists()]
        if existing:
            raise DeblurError(
                f"{len(existing)} output file(s) already exist (first: {existing[0]}); "
                "use --skip-existing to keep them or --overwrite to replace them"
            )
    deblurrer = Deblurrer(
        model, weights=weights, device=device, backend=backend.value, tile=tile, tile_overlap=tile_overlap, fp16=fp16, bf16=bf16,
        self_ensemble=self_ensemble, gate=gate_px, gate_scope=gate_scope.value,
    )
    typer.echo(f"deblur: {opt.describe_run(deblurrer)}", err=True)
    size: int | None = batch_size if batch_size is not None else (None if batch else 1)
    results = _run_with_progress(
        itertools.chain(
            deblurrer.deblur_files(
                jobs, batch_size=size, quality=quality, overwrite=overwrite, skip_existing=skip_existing, viz=maps
            ),
            run_videos(deblurrer, videos, batch_size=batch_size, overwrite=overwrite, skip_existing=skip_existing),
        ),
        total=len(jobs) + len(videos),
    )
    failed = _print_summary(results, input_dir, deblurrer.device_description, deblurrer.gate_scope == "region")
    if failed:
        kind = "file(s)" if videos else "image(s)"
        raise DeblurError(f"{failed} of {len(jobs) + len(videos)} {kind} failed (listed above)", exit_code=1)


def _run_with_progress(results: Iterable[FileResult], total: int) -> list[FileResult]:
    """Consume the engine's results under a rich progress bar (images, throughput, ETA) on stderr."""
    import time

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    done: list[FileResult] = []
    start = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("deblurring", total=total, rate="")
        for result in results:
            done.append(result)
            elapsed = max(time.perf_counter() - start, 1e-9)
            megapixels = sum(r.pixels for r in done) / 1e6
            rate = f"{len(done) / elapsed:.2f} img/s, {megapixels / elapsed:.3g} MP/s"
            progress.update(task, advance=1, rate=rate, description=result.src.name)
    return done


def _print_summary(results: list[FileResult], input_dir: Path, device: str, regional: bool = False) -> int:
    """Summary table and the list of failures on stdout; returns the number of failures.
    ``regional``: the regional gate ran (partly gated images were deblurred in places, not blended)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    by_status: dict[str, list[FileResult]] = {"done": [], "skipped": [], "failed": []}
    for r in results:
        by_status[r.status].append(r)
    seconds = sum(r.seconds for r in results)
    megapixels = sum(r.pixels for r in by_status["done"]) / 1e6
    n_done = len(by_status["done"])
    table = Table(title="deblur folder", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("images", str(len(results)))
    gated = [r for r in by_status["done"] if r.gate is not None]
    if gated:
        untouched = sum(r.gate <= 0 for r in gated)  # type: ignore[operator]
        blended = sum(0 < r.gate < 1 for r in gated)  # type: ignore[operator]
        table.add_row("deblurred", str(n_done - untouched - blended))
        partly = "deblurred in places (regional gate)" if regional else "blended (blur gate)"
        table.add_row(partly, str(blended))
        table.add_row("left as they were (nearly sharp)", str(untouched))
    else:
        table.add_row("deblurred", str(n_done))
    table.add_row("skipped (existing)", str(len(by_status["skipped"])))
    table.add_row("failed", str(len(by_status["failed"])))
    table.add_row("time", f"{seconds:.1f} s")
    if n_done and seconds > 0:
        table.add_row("throughput", f"{n_done / seconds:.2f} img/s, {megapixels / seconds:.3g} MP/s")
    table.add_row("device", device)
    console.print(table)
    failures = by_status["failed"]
    if failures:
        ft = Table(title="failed", show_lines=False)
        ft.add_column("file", overflow="fold")
        ft.add_column("reason", overflow="fold")
        for r in failures:
            src = r.src
            name = str(src.relative_to(input_dir)) if src.is_relative_to(input_dir) else str(src)
            ft.add_row(name, r.message)
        console.print(ft)
    return len(failures)
