"""``deblur image``: deblur one image file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app


@app.command("image")
def image(
    input: opt.InputFile,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Output file; its extension picks the format (png, jpg/jpeg, webp, tif/tiff). "
            "Default: IN_deblurred.png beside the input.",
            show_default=False,
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ] = None,
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
    quality: opt.Quality = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Deblur one image; EXIF orientation, alpha, 16 bits, grayscale, ICC and EXIF are kept."""
    import time

    from deblur_cli.gate.decision import parse_gate
    from deblur_cli.inference import Deblurrer, check_job

    dst = check_job(input, output, overwrite)  # before the (possibly slow) model load
    gate_px = parse_gate(gate)
    maps = opt.viz_request(viz, fusion, attention, offsets, kernels, all_maps, level, block, decoder, raw, overwrite)
    deblurrer = Deblurrer(
        model,
        weights=weights,
        device=device,
        backend=backend.value,
        tile=tile,
        tile_overlap=tile_overlap,
        fp16=fp16,
        bf16=bf16,
        self_ensemble=self_ensemble,
        gate=gate_px,
        gate_scope=gate_scope.value,
    )
    typer.echo(f"deblur: {opt.describe_run(deblurrer)}", err=True)
    start = time.perf_counter()
    written = deblurrer.deblur_file(input, dst, quality=quality, overwrite=overwrite, viz=maps)  # type: ignore[arg-type]
    decided = deblurrer.last_decisions[0] if deblurrer.last_decisions else None
    note = opt.gate_describe(decided.extent, decided.weight, decided.extent_range) if decided else ""
    typer.echo(f"wrote {written} ({time.perf_counter() - start:.1f} s{'; ' + note if note else ''})")
    if viz is not None:
        typer.echo(f"wrote the maps to {viz} (contact sheet: {viz / (written.stem + '.sheet.png')})")
