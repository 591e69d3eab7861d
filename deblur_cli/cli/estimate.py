"""``deblur estimate``: how much motion blur each photograph has (without deblurring it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.main import app
from deblur_cli.errors import DeblurError


@app.command("estimate")
def estimate(
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="PATH...", help="Image files and/or folders of images.", show_default=False),
    ],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include sub-folders of folders.")] = False,
    gate: opt.Gate = opt.DEFAULT_GATE,
    gate_scope: opt.GateScope = opt.DEFAULT_GATE_SCOPE,
    maps: Annotated[
        Path | None,
        typer.Option("--maps", help="Also write a map of the blur per region of each image here (STEM.blur.png): "
                     "colour = estimated blur, lines at the gate's thresholds.", show_default=False),
    ] = None,
    sort: Annotated[bool, typer.Option("--sort", help="Most blurred first.")] = False,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the figures to this JSON file.", show_default=False)
    ] = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Estimate each image's motion blur in pixels and what `deblur image` would do with it.

    Cheap (a small network on at most 48 tiles of 96 px per image, whatever its size): use it to
    find the blurred frames of a shoot. With --gate-scope region or --maps every tile of 96 px is
    read (cost grows with the image). Unreadable files are listed at the end (exit code 1).
    """
    import json

    import cv2
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from deblur_cli.blur_extent import DEFAULT_GATE, TILE, BlurMeter, decide_gate, gate_weight, parse_gate
    from deblur_cli.engine import split_image
    from deblur_cli.imageio import INPUT_EXTENSIONS, atomic_write_bytes, read_image

    gate_px = parse_gate(gate)
    if json_out is not None and json_out.is_dir():
        raise DeblurError(f"{json_out}: is a directory; give a file name for --json")
    if json_out is not None and json_out.exists() and not overwrite:
        raise DeblurError(f"{json_out}: already exists (use --overwrite to replace it)")
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(
                f for f in (p.rglob("*") if recursive else p.iterdir())
                if f.is_file() and f.suffix.lower() in INPUT_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )  # fmt: skip
            if not found:
                raise DeblurError(f"no images in {p} (looked for {', '.join(sorted(INPUT_EXTENSIONS))})")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DeblurError(f"{p}: no such file or folder")
    if maps is not None:
        if maps.exists() and not maps.is_dir():
            raise DeblurError(f"--maps {maps}: not a folder")
        taken = [m for f in files if (m := maps / f"{f.stem}.blur.png").exists()]
        if taken and not overwrite:
            raise DeblurError(f"{len(taken)} map file(s) already exist (first: {taken[0]}); use --overwrite to replace them")
    meter = BlurMeter()
    rows: list[dict[str, object]] = []
    failed: list[tuple[Path, str]] = []
    for f in files:
        try:
            rgb = split_image(read_image(f).pixels)[0].transpose(1, 2, 0)
        except (DeblurError, ValueError) as exc:
            failed.append((f, str(exc)))
            continue
        row: dict[str, object] = {"file": str(f)}
        if gate_scope.value == "region" or maps is not None:
            d = decide_gate(meter, rgb, *(gate_px or DEFAULT_GATE), scope="region")
            blur = d.extent
            lo, hi = d.extent_range or (blur, blur)
            row["blur_range_px"] = [round(lo, 2), round(hi, 2)]
            if maps is not None:
                from deblur_cli.viz import blur_map_panel

                bm = meter.extent_map(rgb)
                px = cv2.resize(bm.extent_px(), (bm.log_extent.shape[1] * TILE, bm.log_extent.shape[0] * TILE),
                                interpolation=cv2.INTER_LINEAR)[: rgb.shape[0], : rgb.shape[1]]  # fmt: skip
                panel = blur_map_panel(rgb, px, gate_px)
                maps.mkdir(parents=True, exist_ok=True)
                _, png = cv2.imencode(".png", np.ascontiguousarray(panel[:, :, ::-1]))
                atomic_write_bytes(maps / f"{f.stem}.blur.png", png.tobytes(), overwrite=overwrite)
        else:
            blur = meter.estimate(rgb).extent
        if gate_scope.value == "region" and gate_px:
            weight = d.weight
        else:
            weight = gate_weight(blur, *gate_px) if gate_px else 1.0
        by = " by region" if gate_scope.value == "region" and gate_px else ""
        row.update({"blur_px": round(blur, 2), "gate": round(weight, 3),
                    "action": ("deblur" if weight >= 1 else ("leave as is" if weight <= 0 else f"blend {weight:.0%}")) + by})  # fmt: skip
        rows.append(row)
    if sort:
        rows.sort(key=lambda r: -float(r["blur_px"]))  # type: ignore[arg-type]
    table = Table(title="estimated motion blur" + (f" (gate {gate_px[0]:g}-{gate_px[1]:g} px)" if gate_px else ""))
    table.add_column("file", overflow="fold")
    table.add_column("blur (px)", justify="right")
    if any("blur_range_px" in r for r in rows):
        table.add_column("by region (px)", justify="right")
    table.add_column("deblur image would", justify="left")
    for r in rows:
        span = r.get("blur_range_px")
        cells = [str(r["file"]), f"{r['blur_px']:.1f}"] + ([f"{span[0]:.1f}-{span[1]:.1f}" if span else ""] if any("blur_range_px" in x for x in rows) else [])  # type: ignore[index]
        table.add_row(*cells, str(r["action"]))
    console = Console()
    console.print(table)
    if json_out is not None:
        payload = {"gate_px": list(gate_px) if gate_px else None, "images": rows,
                   "failed": [{"file": str(f), "error": e} for f, e in failed]}  # fmt: skip
        atomic_write_bytes(json_out, (json.dumps(payload, indent=1) + "\n").encode(), overwrite=overwrite)
        typer.echo(f"wrote {json_out}")
    if failed:
        ft = Table(title="failed")
        ft.add_column("file", overflow="fold")
        ft.add_column("reason", overflow="fold")
        for f, e in failed:
            ft.add_row(str(f), e)
        console.print(ft)
        raise DeblurError(f"{len(failed)} of {len(files)} file(s) could not be read (listed above)", exit_code=1)
