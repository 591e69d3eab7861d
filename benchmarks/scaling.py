"""Time versus image size, 0.25 to 24 megapixels, through the tiled engine; writes a PNG plot.

Every size is a synthetic 3:2 ``uint8`` RGB image deblurred by one :class:`deblur_cli.Deblurrer`
(``Deblurrer.deblur``: conversion, tiling, blending included), ``--runs`` times after one warm-up
run on the smallest size; the median is reported. Once images are tiled, time should grow
linearly with the pixel count: the table gives seconds per megapixel, the plot seconds against
megapixels with the least-squares line through the tiled sizes.

``--tile auto`` (the default) is the engine's own choice from free memory (whole image while it
fits); a number fixes the tile so every size is tiled the same way.

Usage::

    python -m benchmarks.scaling                                   # saphn-s, 0.25-24 MP, plot to benchmarks/scaling.png
    python -m benchmarks.scaling --sizes 0.05,0.1,0.2 --tile 128 --plot /tmp/s.png   # quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.memory import _model, _synthetic

DEFAULT_SIZES = "0.25,0.5,1,2,4,8,12,16,24"
DEFAULT_PLOT = Path(__file__).resolve().parent / "scaling.png"


def dims(megapixels: float, aspect: float = 1.5) -> tuple[int, int]:
    """``(width, height)`` of a 3:2 image of about ``megapixels``, both multiples of 8."""
    h = (megapixels * 1e6 / aspect) ** 0.5
    w = h * aspect
    return max(8, round(w / 8) * 8), max(8, round(h / 8) * 8)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a x + b``."""
    a, b = np.polyfit(np.asarray(xs), np.asarray(ys), 1)
    return float(a), float(b)


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    """Seconds against megapixels, tiled and untiled sizes marked, with the line through the tiled ones."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'deblur-cli[bench]'): no plot written", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for tiled, marker, label in ((False, "o", "whole image"), (True, "s", "tiled")):
        pts = [(r["mp"], r["seconds"]) for r in rows if bool(r["tile"]) == tiled]
        if pts:
            ax.plot(*zip(*pts), marker, label=label)
    tiled_pts = [(float(r["mp"]), float(r["seconds"])) for r in rows if r["tile"]]  # type: ignore[arg-type]
    if len(tiled_pts) >= 2:
        a, b = fit_line(*map(list, zip(*tiled_pts)))
        xs = np.linspace(0, max(float(r["mp"]) for r in rows), 50)  # type: ignore[arg-type]
        ax.plot(xs, a * xs + b, "--", color="gray", label=f"fit (tiled): {a:.2f} s/MP")
    ax.set_xlabel("megapixels")
    ax.set_ylabel("seconds per image")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="saphn-s", help="architecture (random weights) or registry name")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"megapixels, comma-separated (default {DEFAULT_SIZES})")
    ap.add_argument("--tile", default="auto", help="'auto' (engine's choice) or a tile side in pixels")
    ap.add_argument("--runs", type=int, default=1, help="timed runs per size, median reported (default 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"PNG to write (default {DEFAULT_PLOT})")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    from deblur_cli.inference.allocator import keep_freed_memory

    keep_freed_memory()  # as the deblur command does (DEBLUR_MALLOC=system: glibc defaults)

    import torch

    from deblur_cli import Deblurrer

    torch.set_num_threads(args.threads)
    sizes = sorted(float(s) for s in args.sizes.split(","))
    deblurrer = Deblurrer(
        _model(args.model), device="cpu", backend=args.backend, tile=None if args.tile == "auto" else int(args.tile)
    )
    rng = np.random.default_rng(0)
    w0, h0 = dims(sizes[0])
    deblurrer.deblur(_synthetic(h0, w0, rng))  # warm-up
    rows: list[dict[str, object]] = []
    print(f"| MP | image | tile | seconds | s/MP |  model {args.model}, {deblurrer.device_description} |")
    print("|---|---|---|---|---|---|")
    for mp in sizes:
        w, h = dims(mp)
        image = _synthetic(h, w, rng)
        tile = deblurrer.tile_for(h, w)
        tile = tile if tile and (tile < h or tile < w) else 0
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            deblurrer.deblur(image)
            times.append(time.perf_counter() - start)
        secs = statistics.median(times)
        real_mp = w * h / 1e6
        rows.append({"mp": real_mp, "width": w, "height": h, "tile": tile, "seconds": secs})
        print(f"| {real_mp:.2f} | {w}x{h} | {tile or '-'} | {secs:.2f} | {secs / real_mp:.2f} | |", flush=True)
        del image
    title = f"{args.model}, {deblurrer.device_description}, tile {args.tile}"
    plot(rows, args.plot, title)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
