"""``deblur eval``: PSNR/SSIM on blurred/sharp pairs, the paper's Table 1 protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app


@app.command("eval")
def evaluate_cmd(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="GoPro layout (<scene>/blur + <scene>/sharp, optionally under test/) or a folder with blur/ and sharp/.",
            show_default=False,
        ),
    ],
    model: opt.Model = None,
    weights: opt.Weights = None,
    device: opt.Device = "auto",
    backend: opt.Backend = opt.BackendName.torch,
    tile: opt.Tile = None,
    tile_overlap: opt.TileOverlap = opt.DEFAULT_TILE_OVERLAP,
    fp16: opt.Fp16 = False,
    bf16: opt.Bf16 = False,
    self_ensemble: opt.SelfEnsemble = 1,
    gate: Annotated[
        str,
        typer.Option("--gate", help="Blur gate as in `deblur image` (auto, off or LO,HI). Default off: "
                     "the network alone, the paper's protocol.", rich_help_panel=opt.MODEL_PANEL),
    ] = "off",
    gate_scope: opt.GateScope = opt.DEFAULT_GATE_SCOPE,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Also write per-image rows and the summary as JSON here.")
    ] = None,
    usm: Annotated[
        bool,
        typer.Option("--usm/--no-usm", help="Also score unsharp masking tuned per image with the sharp image as oracle."),
    ] = False,
    ci: Annotated[
        bool,
        typer.Option("--ci/--no-ci", help="Also give a 95 % bootstrap interval of the mean gain, resampling scenes "
                     "(GoPro layout) or photographs (our <photo>_linear/_shake sets), not single pairs."),
    ] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N pairs.")] = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Score a model: input PSNR, output PSNR, gain, SSIM and seconds per image (RGB, 8-bit, full image)."""
    from rich.console import Console
    from rich.table import Table

    from deblur_cli.data.datasets import find_pairs
    from deblur_cli.errors import DeblurError
    from deblur_cli.eval.pairs import evaluate
    from deblur_cli.gate.decision import parse_gate
    from deblur_cli.inference import Deblurrer

    if not data.is_dir():
        raise DeblurError(f"--data {data}: not a folder")
    if json_out is not None and json_out.exists() and not overwrite:
        raise DeblurError(f"{json_out} exists (use --overwrite)")
    try:
        pairs = find_pairs(data)
    except ValueError as exc:
        raise DeblurError(str(exc)) from None
    pairs = pairs[:limit] if limit else pairs
    d = Deblurrer(model, weights=weights, device=device, backend=backend.value, tile=tile,
                  tile_overlap=tile_overlap, fp16=fp16, bf16=bf16, self_ensemble=self_ensemble,
                  gate=parse_gate(gate), gate_scope=gate_scope.value)  # fmt: skip
    err = Console(stderr=True)
    err.print(f"deblur: {opt.describe_run(d)}; {len(pairs)} pairs")

    table = Table(title=f"{d.model_info.get('name', model or 'model')} on {data}")
    for col in ("image", "PSNR in", "PSNR out", "gain", "SSIM in", "SSIM out", "s/img") + (("USM oracle",) if usm else ()):
        table.add_column(col, justify="left" if col == "image" else "right")
    with err.status("evaluating") as status:
        def on_row(r):
            status.update(f"evaluating: {r.name} {r.psnr_in:.2f} -> {r.psnr_out:.2f} dB")

        try:
            rows, s = evaluate(d.deblur, pairs, usm_baseline=usm, on_row=on_row)
        except ValueError as exc:
            raise DeblurError(str(exc)) from None
    for r in rows:
        cells = [r.name, f"{r.psnr_in:.2f}", f"{r.psnr_out:.2f}", f"{r.gain:+.2f}", f"{r.ssim_in:.4f}",
                 f"{r.ssim_out:.4f}", f"{r.seconds:.2f}"]  # fmt: skip
        if usm:
            cells.append(f"{r.psnr_usm:.2f}")
        table.add_row(*cells)
    cells = ["mean", f"{s.psnr_in:.2f}", f"{s.psnr_out:.2f}", f"{s.gain:+.2f}", f"{s.ssim_in:.4f}", f"{s.ssim_out:.4f}",
             f"{s.seconds:.2f}"]  # fmt: skip
    if usm:
        cells.append(f"{s.psnr_usm:.2f}")
    table.add_section()
    table.add_row(*cells, style="bold")
    Console().print(table)
    line = f"{s.count} images: {s.psnr_in:.2f} -> {s.psnr_out:.2f} dB ({s.gain:+.2f}), {s.worse} got worse"
    if usm:
        line += f"; beats oracle unsharp masking on {s.beats_usm}/{s.count}"
    Console().print(line)
    payload = {"model": d.model_info, "device": d.device_description, "data": str(data),
               "summary": s.to_dict(), "rows": [dict(vars(r), gain=r.gain) for r in rows]}  # fmt: skip
    if ci:
        from deblur_cli.eval.bootstrap import BOOTSTRAP_RESAMPLES, cluster_of, mean_interval

        clusters = len({cluster_of(r.name) for r in rows})
        unit = "scenes" if clusters < len(rows) else "pairs (no scene or photograph found in the names)"
        try:
            lo, hi = mean_interval({r.name: r.gain for r in rows}, level=0.95)
        except ValueError as exc:  # an infinite PSNR (identical images): the table stands, no interval
            Console(stderr=True).print(f"deblur: --ci: no interval: {exc}")
        else:
            Console().print(f"mean gain {s.gain:+.2f} dB, 95 % interval {lo:+.2f} to {hi:+.2f} dB "
                            f"(bootstrap over {clusters} {unit})", soft_wrap=True)  # fmt: skip
            if clusters < 5:
                Console(stderr=True).print(f"deblur: note: only {clusters} clusters; the interval is rough")
            payload["gain_interval"] = {"level": 0.95, "low": lo, "high": hi, "clusters": clusters,
                                        "resamples": BOOTSTRAP_RESAMPLES, "seed": 0}  # fmt: skip
    if json_out is not None:
        json_out.write_text(json.dumps(payload, indent=1, default=str))
        Console(stderr=True).print(f"wrote {json_out}")
