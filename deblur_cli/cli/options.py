"""Shared ``Annotated`` parameter types of the CLI commands (one definition, one help text).

Light on purpose: importing this module imports only typer, never torch.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

MODEL_PANEL = "Model and device"
MAPS_PANEL = "Maps (none given: fusion, attention, offsets and kernels)"
WHERE_PANEL = "Which module (maps)"
TILING_PANEL = "Tiling"
OUTPUT_PANEL = "Output"


class BackendName(str, Enum):
    """Inference backends (``deblur_cli.backends.base``)."""

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
Bf16 = Annotated[
    bool,
    typer.Option(
        "--bf16",
        help="bfloat16 autocast with the torch backend: about 1.4x faster on CPUs with AVX512-BF16/AMX "
        "(an error where it would be emulated); mean PSNR within 0.002 dB of fp32 on our held-out set.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Gate = Annotated[
    str,
    typer.Option(
        "--gate",
        help="Blur gate: estimate each image's motion blur first and leave nearly sharp images untouched "
        "(the network adds false detail to them). 'auto' (untouched below 4 px, fully deblurred from 6 px, "
        "blended between), 'off' (always deblur), or 'LO,HI' in pixels.",
        rich_help_panel=MODEL_PANEL,
    ),
]
#: Default of ``--gate`` in ``deblur image`` / ``deblur folder``.
DEFAULT_GATE = "auto"


class GateScopeName(str, Enum):
    """Where the blur gate reads the blur (``deblur_cli.gate.decision.GATE_SCOPES``)."""

    image = "image"
    region = "region"


GateScope = Annotated[
    GateScopeName,
    typer.Option(
        "--gate-scope",
        help="Where the blur gate reads the blur: 'image' (one estimate per photograph) or 'region' "
        "(every 96 px tile read, the gate applied pixel by pixel: for shake that blurs one part of a frame more "
        "than another, or a sharp subject before a blurred background; costs about 0.3 s per 720p image more).",
        rich_help_panel=MODEL_PANEL,
    ),
]
DEFAULT_GATE_SCOPE = GateScopeName.image


def gate_describe(blur_px: float | None, weight: float | None, blur_range: tuple[float, float] | None = None) -> str:
    """One phrase for a gate decision, e.g. ``"blur 2.1 px: left as it was"``, or with the
    regional gate ``"blur 1.2-9.8 px by region: 40% deblurred"``."""
    if blur_px is None or weight is None:
        return ""
    blur = f"blur {blur_px:.1f} px" if blur_range is None else f"blur {blur_range[0]:.1f}-{blur_range[1]:.1f} px by region"
    if weight <= 0:
        return f"{blur}: left as it was"
    if weight >= 1:
        return f"{blur}: deblurred"
    return f"{blur}: {weight:.0%} deblurred"


SelfEnsemble = Annotated[
    int,
    typer.Option(
        "--self-ensemble",
        help="Average the output over N flips/transposes of the input (1, 2, 4 or 8): N times slower, "
        "a little sharper (+0.18 dB mean on our validation pairs with 8).",
        rich_help_panel=MODEL_PANEL,
    ),
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

#: Same value as ``deblur_cli.inference.tiling.DEFAULT_TILE_OVERLAP`` (not imported: it pulls numpy in).
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
        if info.get("structure"):
            text += f"; {info['structure']}"
    return text


# ---- the network's maps: `deblur viz`, and `--viz DIR` of `deblur image` / `deblur folder` ----
VizDir = Annotated[
    Optional[Path],
    typer.Option(
        "--viz",
        help="Also write the network's maps (fusion, attention, offsets, kernels; see `deblur viz`) for each "
        "image into this folder, from the same pass. Needs the torch backend and an untiled pass; "
        "images the blur gate leaves as they were still run the network, for their maps.",
        show_default=False,
        rich_help_panel=MAPS_PANEL,
    ),
]
MapFusion = Annotated[
    bool, typer.Option("--fusion", help="Fusion mask Mfus (1 = attention branch, 0 = filtering branch).",
                       rich_help_panel=MAPS_PANEL),
]  # fmt: skip
MapAttention = Annotated[
    bool, typer.Option("--attention", help="Spatial mask M1 and the most structured attention map q_i.",
                       rich_help_panel=MAPS_PANEL),
]  # fmt: skip
MapOffsets = Annotated[
    bool, typer.Option("--offsets", help="Filter offsets: direction/elongation colour wheel and horizontal spread.",
                       rich_help_panel=MAPS_PANEL),
]  # fmt: skip
MapKernels = Annotated[
    bool, typer.Option("--kernels", help="Variance of the predicted per-pixel kernels V.", rich_help_panel=MAPS_PANEL)
]
MapAll = Annotated[
    bool, typer.Option("--all", help="Every map: all q_i, cross-attention, cross-level attention, mean dx.",
                       rich_help_panel=MAPS_PANEL),
]  # fmt: skip
MapLevel = Annotated[
    int, typer.Option("--level", help="Level 1 (finest, the output) to 3.", rich_help_panel=WHERE_PANEL)
]
MapBlock = Annotated[
    Optional[int],
    typer.Option("--block", help="Block 1..N of the encoder/decoder. Default: the last.", show_default=False,
                 rich_help_panel=WHERE_PANEL),
]  # fmt: skip
MapDecoder = Annotated[
    bool, typer.Option("--decoder/--encoder", help="Decoder or encoder block.", rich_help_panel=WHERE_PANEL)
]
MapRaw = Annotated[
    bool, typer.Option("--raw", help="Also write each map's values as .npy (float32, input size).",
                       rich_help_panel=MAPS_PANEL),
]  # fmt: skip


def map_selection(
    fusion: bool, attention: bool, offsets: bool, kernels: bool, all_maps: bool, level: int, block: int | None,
    decoder: bool,
) -> object:  # fmt: skip
    """The :class:`deblur_cli.viz.recording.MapSelection` for the map flags (imports numpy lazily)."""
    from deblur_cli.viz.recording import LEVELS, MapSelection

    if not 1 <= level <= LEVELS:
        from deblur_cli.errors import DeblurError

        raise DeblurError(f"--level must be 1 (finest) to {LEVELS}, got {level}")
    return MapSelection.from_flags(fusion=fusion, attention=attention, offsets=offsets, kernels=kernels,
                                   all_maps=all_maps, level=level, block=block, decoder=decoder)  # fmt: skip


def viz_request(
    viz: Path | None, fusion: bool, attention: bool, offsets: bool, kernels: bool, all_maps: bool, level: int,
    block: int | None, decoder: bool, raw: bool, overwrite: bool, mirror_from: Path | None = None,
) -> object | None:  # fmt: skip
    """The engine's :class:`deblur_cli.viz.request.VizRequest` for ``--viz DIR`` and the map flags
    (``None`` without ``--viz``; map flags without it are an error)."""
    from deblur_cli.errors import DeblurError

    if viz is None:
        if fusion or attention or offsets or kernels or all_maps or raw or block is not None or level != 1 or not decoder:
            raise DeblurError("the map options (--fusion, --attention, --offsets, --kernels, --all, --raw, --level, "
                              "--block, --encoder) need --viz DIR")  # fmt: skip
        return None
    if viz.exists() and not viz.is_dir():
        raise DeblurError(f"--viz {viz}: exists and is not a folder")
    from deblur_cli.viz.request import VizRequest

    selection = map_selection(fusion, attention, offsets, kernels, all_maps, level, block, decoder)
    return VizRequest(selection, viz, mirror_from=mirror_from, raw=raw, overwrite=overwrite)
