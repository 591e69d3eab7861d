"""``deblur estimate``: how much motion blur each photograph has (without deblurring it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app
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
        typer.Option("--maps", help="Also write a map of the blur per region of each image into this folder "
                     "(STEM.blur.png): colour = estimated blur; with a gate, a white line where the regional gate "
                     "starts to deblur and a black one where it deblurs fully.", show_default=False),
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

    from deblur_cli.gate.decision import decide_gate, gate_weight, parse_gate
    from deblur_cli.gate.meter import BlurMeter
    from deblur_cli.gate.regions import TILE
    from deblur_cli.inference import split_image
    from deblur_cli.io.images import INPUT_EXTENSIONS, atomic_write_bytes, read_image

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
    region = gate_scope.value == "region"
    if region and gate_px is None:
        raise DeblurError("--gate-scope region needs a blur gate (it is off: give --gate auto or LO,HI)")
    files = list(dict.fromkeys(files))  # a file given twice (a folder and a file in it) is read once
    map_files: dict[Path, Path] = {}
    if maps is not None:
        if maps.exists() and not maps.is_dir():
            raise DeblurError(f"--maps {maps}: not a folder")
        writers: dict[str, Path] = {}  # lower-cased: a case-insensitive file system sees one name
        for f in files:
            m = maps / f"{f.stem}.blur.png"
            if str(m).lower() in writers:
                raise DeblurError(f"--maps: {writers[str(m).lower()]} and {f} would both write {m}; estimate them separately")
            writers[str(m).lower()] = f
            map_files[f] = m
        taken = [m for m in map_files.values() if m.exists()]
        if taken and not overwrite:
            raise DeblurError(f"{len(taken)} map file(s) already exist (first: {taken[0]}); use --overwrite to replace them")
    meter = BlurMeter()
    if maps is not None:  # after the meter loaded: damaged weights leave no empty folder behind
        try:
            maps.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeblurError(f"--maps {maps}: cannot create the folder ({exc.strerror or exc})") from None
    rows: list[dict[str, object]] = []
    failed: list[tuple[Path, str]] = []
    for f in files:
        try:
            rgb = split_image(read_image(f).pixels)[0].transpose(1, 2, 0)
        except (DeblurError, ValueError) as exc:
            failed.append((f, str(exc)))
            continue
        row: dict[str, object] = {"file": str(f)}
        bm = meter.extent_map(rgb) if region or maps is not None else None  # once per image
        if region:
            d = decide_gate(meter, rgb, *gate_px, scope="region", blur_map=bm)  # type: ignore[misc]
            blur, weight = d.extent, d.weight
        else:
            blur = meter.estimate(rgb).extent
            weight = gate_weight(blur, *gate_px) if gate_px else 1.0
        if bm is not None:
            px = bm.extent_px()
            row["blur_range_px"] = [round(float(px.min()), 2), round(float(px.max()), 2)]
            if maps is not None:
                from deblur_cli.viz.drawing import blur_map_panel

                full = cv2.resize(px, (px.shape[1] * TILE, px.shape[0] * TILE), interpolation=cv2.INTER_LINEAR)
                weights = bm.weights(*gate_px) if gate_px else None
                panel = blur_map_panel(rgb, full[: rgb.shape[0], : rgb.shape[1]], weights)
                _, png = cv2.imencode(".png", np.ascontiguousarray(panel[:, :, ::-1]))
                atomic_write_bytes(map_files[f], png.tobytes(), overwrite=overwrite)
        partly = f"deblur in places ({weight:.0%})" if region else f"blend {weight:.0%}"
        action = "deblur" if weight >= 1 else ("leave as is" if weight <= 0 else partly)
        row.update({"blur_px": round(blur, 2), "gate": round(weight, 3), "action": action})
        rows.append(row)
    if sort:
        rows.sort(key=lambda r: -float(r["blur_px"]))  # type: ignore[arg-type]
    table = Table(title="estimated motion blur" + (f" (gate {gate_px[0]:g}-{gate_px[1]:g} px)" if gate_px else ""))
    table.add_column("file", overflow="fold")
    table.add_column("blur (px)", justify="right")
    ranged = any("blur_range_px" in r for r in rows)
    if ranged:
        table.add_column("by region (px)", justify="right")
    table.add_column("deblur image would", justify="left")
    for r in rows:
        span = r.get("blur_range_px")
        cells = [str(r["file"]), f"{r['blur_px']:.1f}"]
        if ranged:
            cells.append(f"{span[0]:.1f}-{span[1]:.1f}" if span else "")  # type: ignore[index]
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
