"""``deblur export onnx``: write the network as a verified ONNX file.

The body only calls :func:`deblur_cli.backends.onnx_export.export_model`, imported inside it, so
``deblur --help`` never imports torch or onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app

export_app = typer.Typer(
    name="export",
    help="Export the network to other runtimes (ONNX).",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")

#: Same values as deblur_cli.backends.onnx_export.DEFAULT_OPSET/MIN_OPSET (repeated to keep --help import-free).
_DEFAULT_OPSET = 18
_MIN_OPSET = 16


@export_app.command("onnx")
def onnx_(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The .onnx file to write.", show_default=False, rich_help_panel=opt.OUTPUT_PANEL
        ),
    ],
    model: opt.Model = None,
    weights: opt.Weights = None,
    opset: Annotated[
        int,
        typer.Option("--opset", help=f"ONNX opset: {_MIN_OPSET} (GridSample) up to the newest torch's exporter supports (20 in torch 2.13)."),
    ] = _DEFAULT_OPSET,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16",
            help="Float16 weights and compute (input and output stay float32); for GPU runtimes. "
            "Checked on the CPU to 1e-2 instead of 1e-3.",
        ),
    ] = False,
    overwrite: opt.Overwrite = False,
) -> None:
    """Export a model to ONNX (input `blurred`, output `deblurred`, dynamic batch/height/width), then
    check it: onnx.checker, and onnxruntime vs torch on a random 67x91 input."""
    from deblur_cli.backends.onnx_export import VERIFY_SHAPE, check_destination, check_opset, export_model

    check_destination(output, overwrite)
    check_opset(opset)
    typer.echo(f"deblur: exporting to {output} (opset {opset}, {'fp16' if fp16 else 'fp32'})...", err=True)
    result, info = export_model(output, model, weights, opset=opset, fp16=fp16, overwrite=overwrite)
    size = result.path.stat().st_size / 2**20
    shape = "x".join(map(str, VERIFY_SHAPE))
    typer.echo(
        f"onnxruntime vs torch on a random {shape} input: max abs difference {result.max_abs_diff:.3g} "
        f"(tolerance {result.tolerance:g})"
    )
    typer.echo(
        f"wrote {result.path} ({info.get('name')}, arch {info.get('arch')}, sha256 {str(info.get('sha256'))[:12]}, "
        f"opset {result.opset}, {result.precision}, {size:.1f} MB) in {result.seconds:.1f} s"
    )
