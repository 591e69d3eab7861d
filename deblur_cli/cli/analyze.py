"""``deblur analyze psf``: the paper's PSF-direction experiment (Sec. 4.4).

The body only calls :mod:`deblur_cli.eval.psf`, imported inside it (no torch/numpy at import
time).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app
from deblur_cli.errors import DeblurError

analyze_app = typer.Typer(
    name="analyze",
    help="Reproduce the paper's analyses of what the network learned.",
    no_args_is_help=True,
)
app.add_typer(analyze_app, name="analyze")

EXPERIMENT_PANEL = "Experiment"

#: Files written into ``--out``.
PLOT_NAME = "psf_polar.png"
JSON_NAME = "psf_results.json"


def _deg(v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:+.1f}°" if signed else f"{v:.1f}°"


@analyze_app.command("psf")
def psf(
    images: Annotated[
        Optional[Path],
        typer.Option("--images", help="Folder of sharp photographs. Default: scikit-image's sample photographs.",
                     show_default=False, rich_help_panel=EXPERIMENT_PANEL),
    ] = None,
    angles: Annotated[
        str, typer.Option("--angles", help="PSF angles in degrees, counter-clockwise from +x.",
                          rich_help_panel=EXPERIMENT_PANEL),
    ] = "0,45,90,135",
    length: Annotated[
        float,
        typer.Option("--length", help="PSF length in pixels (after --max-side).", rich_help_panel=EXPERIMENT_PANEL),
    ] = 15.0,
    max_images: Annotated[
        int, typer.Option("--max-images", min=1, help="Use at most this many images (the paper used 25).",
                          rich_help_panel=EXPERIMENT_PANEL),
    ] = 25,
    max_side: Annotated[
        int, typer.Option("--max-side", min=16, help="Shrink images so their longest side is at most this.",
                          rich_help_panel=EXPERIMENT_PANEL),
    ] = 256,
    modules: Annotated[
        str,
        typer.Option("--modules", help="PDF modules whose offsets are pooled: 'all' or comma-separated "
                     "levelL[.encoder|.decoder[.blockB]].", rich_help_panel=EXPERIMENT_PANEL),
    ] = "level1.decoder",
    model: opt.Model = None,
    weights: opt.Weights = None,
    device: opt.Device = "auto",
    out: Annotated[
        Path, typer.Option("--out", "-o", help=f"Folder for {PLOT_NAME} and {JSON_NAME}.",
                           rich_help_panel=opt.OUTPUT_PANEL),
    ] = Path("psf-analysis"),
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print the results as JSON instead of a table.", rich_help_panel=opt.OUTPUT_PANEL),
    ] = False,
    overwrite: opt.Overwrite = False,
) -> None:
    """Blur sharp images with linear PSFs at several angles and report the dominant direction
    of the filter offsets the network predicts (paper: 0, 45, 90, 135 -> 11, 50, 81, 126 deg)."""
    import io

    from PIL import Image
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deblur_cli.backends.torch_backend import TorchBackend
    from deblur_cli.eval import psf as an
    from deblur_cli.io.images import atomic_write_bytes

    angle_list = an.parse_angles(angles)
    an.parse_modules(modules)  # syntax now; block numbers once the model is known
    plot_path, json_path = out / PLOT_NAME, out / JSON_NAME
    if out.exists() and not out.is_dir():
        raise DeblurError(f"{out}: exists and is not a folder")
    if not overwrite:
        for p in (plot_path, json_path):
            if p.exists():
                raise DeblurError(f"{p}: already exists (use --overwrite to replace it)")
    files = an.image_files(images)[:max_images]
    sharp = [(f.stem, an.load_sharp(f, max_side)) for f in files]
    backend = TorchBackend(model, weights, device)
    if getattr(backend.model, "config", None) is None:
        raise DeblurError("deblur analyze psf needs a SAPHN model (the offsets come from the torch model)")
    name = str(backend.info.get("name") or "model")
    err = Console(stderr=True)
    typer.echo(f"deblur: running on {backend.device_description}; model {name}; {len(sharp)} image(s)", err=True)
    with Progress(
        TextColumn("blur + deblur"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task("psf", total=len(sharp) * len(angle_list))
        report = an.run_psf_analysis(
            backend.model, sharp, angle_list, length, modules, device=backend.device,
            progress=lambda done, total: progress.update(task, completed=done), model_name=name,
        )  # fmt: skip

    data = report.to_dict()
    buf = io.BytesIO()
    Image.fromarray(an.polar_plot(report)).save(buf, format="PNG")
    atomic_write_bytes(plot_path, buf.getvalue(), overwrite=True)
    atomic_write_bytes(json_path, (json.dumps(data, indent=2) + "\n").encode(), overwrite=True)
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    _print_table(report, data)
    typer.echo(f"wrote {plot_path} and {json_path}")


def _print_table(report: Any, data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from deblur_cli.eval.psf import axial_difference

    table = Table(
        title="Dominant direction of the PDF filter offsets (SAPHN Sec. 4.4)",
        title_justify="left",
        caption=f"{data['model']}; {len(report.images)} image(s); PSF length {report.length:g} px; "
        f"modules {', '.join(data['modules'])}; spread = axial circular std over images",
        caption_justify="left",
    )
    for col in ("PSF angle", "ours", "spread", "ours - PSF", "paper", "paper - PSF", "elongation"):
        table.add_column(col, justify="right")
    for a in report.angles:
        paper_err = None if a.paper is None else axial_difference(a.paper, a.angle)
        table.add_row(
            _deg(a.angle), _deg(a.mean), _deg(a.spread), _deg(a.error, True), _deg(a.paper),
            _deg(paper_err, True), f"{a.elongation_px:.2f} px" if math.isfinite(a.elongation_px) else "-",
        )  # fmt: skip
    Console(width=max(100, Console().width)).print(table)
    if any(not math.isfinite(a.mean) for a in report.angles):
        typer.echo("note: no tap moved (all offsets zero): the direction is undefined for this model", err=True)
