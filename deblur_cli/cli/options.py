"""Shared ``Annotated`` parameter types of the CLI commands (one definition, one help text).

Light on purpose: importing this module imports only typer, never torch.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

MODEL_PANEL = "Model and device"
TILING_PANEL = "Tiling"
OUTPUT_PANEL = "Output"


class BackendName(str, Enum):
    """Inference backends (``deblur_cli.backends``)."""

    torch = "torch"
    onnx = "onnx"


Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Model name from the weights registry (e.g. saphn-s.synth) or an architecture name. "
        "Default: the bundled default model.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Weights = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        "-w",
        help="Weights file (.safetensors) or hf://repo/file@revision; overrides the registry's weights.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        "-d",
        help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N. Asking for CUDA without one is an error.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Backend = Annotated[
    BackendName,
    typer.Option("--backend", help="Run the network with PyTorch or ONNX Runtime.", rich_help_panel=MODEL_PANEL),
]
Fp16 = Annotated[
    bool,
    typer.Option("--fp16/--fp32", help="Half precision (CUDA only; an error on CPU).", rich_help_panel=MODEL_PANEL),
]
Tile = Annotated[
    Optional[int],
    typer.Option(
        "--tile",
        min=0,
        help="Tile side in pixels for large images; 0 = never tile. Default: chosen from free memory "
        "(whole image when it fits).",
        rich_help_panel=TILING_PANEL,
    ),
]
TileOverlap = Annotated[
    int,
    typer.Option(
        "--tile-overlap", min=0, help="Overlap of neighbouring tiles, blended smoothly.", rich_help_panel=TILING_PANEL
    ),
]
Quality = Annotated[
    Optional[int],
    typer.Option(
        "--quality",
        "-q",
        min=1,
        max=100,
        help="JPEG/WebP quality (default 95; WebP 100 = lossless).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace existing output files.", rich_help_panel=OUTPUT_PANEL),
]
InputFile = Annotated[
    Path,
    typer.Argument(metavar="IN", help="Input image (PNG, JPEG, WebP, TIFF, BMP, ...).", show_default=False),
]
InputDir = Annotated[Path, typer.Argument(metavar="IN_DIR", help="Folder of input images.", show_default=False)]

#: Same value as ``deblur_cli.engine.DEFAULT_TILE_OVERLAP`` (not imported: it pulls numpy in).
DEFAULT_TILE_OVERLAP = 32


def describe_run(deblurrer: object) -> str:
    """One line saying what runs: device/backend/precision and the model, e.g.
    ``cpu (2 threads), torch fp32; model saphn-s.synth (sha256 1a2b3c4d)``."""
    info = getattr(deblurrer, "model_info", {}) or {}
    text = f"running on {getattr(deblurrer, 'device_description', '?')}"
    name = info.get("name")
    if name:
        text += f"; model {name}"
        sha = info.get("sha256")
        if sha:
            text += f" (sha256 {str(sha)[:12]})"
    return text
