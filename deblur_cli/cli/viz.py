"""``deblur viz``: pictures of the network's internals (Sec. 4.4, Fig. 6-7) for one image.

The body only calls :mod:`deblur_cli.viz`, imported inside it (no torch/numpy at import time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app
from deblur_cli.errors import DeblurError


@app.command("viz")
def viz(
    input: opt.InputFile,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the PNG files (created if missing).", show_default=False,
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    model: opt.Model = None,
    weights: opt.Weights = None,
    device: opt.Device = "auto",
    fusion: opt.MapFusion = False,
    attention: opt.MapAttention = False,
    offsets: opt.MapOffsets = False,
    kernels: opt.MapKernels = False,
    all_maps: opt.MapAll = False,
    level: opt.MapLevel = 1,
    block: opt.MapBlock = None,
    decoder: opt.MapDecoder = True,
    raw: opt.MapRaw = False,
    max_side: Annotated[
        Optional[int],
        typer.Option("--max-side", min=16, help="Shrink the input so its longest side is at most this (the maps "
                     "need one untiled pass).", show_default=False, rich_help_panel=opt.OUTPUT_PANEL),
    ] = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Show what the network did: fusion mask, attention maps, filter offsets, kernel variance.

    For IN = photo.jpg, OUT receives:
    photo.NAME.png (each map at the input's size), photo.NAME.overlay.png
    (blended over the input), photo.NAME.legend.png, photo.sheet.png (all
    side by side with titles) and, with --raw, photo.NAME.npy.
    """
    import time

    from deblur_cli.backends.base import TorchBackend
    from deblur_cli.io.images import read_image
    from deblur_cli.viz.pipeline import fit_for_viz, visualize
    from deblur_cli.viz.recording import check_selection
    from deblur_cli.viz.rendering import write_maps

    if out_dir.exists() and not out_dir.is_dir():
        raise DeblurError(f"{out_dir}: exists and is not a folder")
    selection = opt.map_selection(fusion, attention, offsets, kernels, all_maps, level, block, decoder)
    pixels = read_image(input).pixels  # before the model load: a missing file fails fast
    backend = TorchBackend(model, weights, device)
    config = getattr(backend.model, "config", None)
    if config is None:
        raise DeblurError("deblur viz needs a SAPHN model (its maps come from the torch model)")
    selection = check_selection(selection, int(config.blocks))
    pixels = fit_for_viz(pixels, config, backend.device, max_side)
    name = backend.info.get("name") or "model"
    typer.echo(f"deblur: running on {backend.device_description}; model {name}", err=True)
    start = time.perf_counter()
    _, rendered = visualize(backend.model, pixels, selection, device=backend.device, caption=f"{input.name} - {name}")
    paths = write_maps(rendered, out_dir, input.stem, raw=raw, overwrite=overwrite)
    for note in rendered.notes:
        typer.echo(f"note: {note}", err=True)
    sheet = out_dir / f"{input.stem}.sheet.png"
    typer.echo(
        f"wrote {len(paths)} files for {selection.describe()} to {out_dir} "
        f"({time.perf_counter() - start:.1f} s); contact sheet: {sheet}"
    )
