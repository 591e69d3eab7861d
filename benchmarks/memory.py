"""Peak resident memory of deblurring a 720p and a 24-megapixel image through the engine.

Each case runs in its own process: a small *measuring* process (no torch) starts the *worker*
(which builds a :class:`deblur_cli.Deblurrer`, deblurs one synthetic ``uint8`` RGB image of the
given size and exits), waits for it and reads ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``:
with exactly one child that is the worker's peak resident set size, everything included
(Python, torch, weights, the image, the tiles, the output). A ``baseline`` case that only loads
the model shows the fixed part.

The 24 MP image (6000x4000) goes through the engine's tiling: ``--tile auto`` lets the engine pick
the tile from the free memory it sees (so the figure depends on the machine), a number fixes it.
The target: at most 4 GiB for 24 MP.

Usage::

    python -m benchmarks.memory                                  # saphn-s: baseline, 720p, 24 MP auto and 1024
    python -m benchmarks.memory --model saphn --tiles 512         # another model / tile
    python -m benchmarks.memory --cases baseline:64x64,small:640x360 --tiles 256   # quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

#: Default cases: name -> WxH (the baseline deblurs nothing).
DEFAULT_CASES = "baseline:0x0,720p:1280x720,24MP:6000x4000"
#: Images at or above this many pixels are run once per tile setting in ``--tiles``.
TILED_FROM = 4_000_000


def worker(model: str, size: str, tile: str, backend: str, threads: int) -> None:
    """Deblur one synthetic image (or, for ``0x0``, only load the model) and print a JSON line."""
    import numpy as np
    import torch

    from deblur_cli import Deblurrer
    from deblur_cli.inference.allocator import keep_freed_memory

    keep_freed_memory()  # as the deblur command does (DEBLUR_MALLOC=system: glibc defaults)
    torch.set_num_threads(threads)
    w, h = (int(v) for v in size.lower().split("x"))
    start = time.perf_counter()
    deblurrer = Deblurrer(_model(model), device="cpu", backend=backend, tile=None if tile == "auto" else int(tile))
    result: dict[str, object] = {"load_s": round(time.perf_counter() - start, 2)}
    if w and h:
        image = _synthetic(h, w, np.random.default_rng(0))
        result["tile"] = deblurrer.tile_for(h, w)
        start = time.perf_counter()
        out = deblurrer.deblur(image)
        result["deblur_s"] = round(time.perf_counter() - start, 2)
        assert out.shape == image.shape
    print(json.dumps(result))


def _model(name: str) -> object:
    """A registered architecture name -> that network with random weights (memory does not depend
    on them); anything else (a weights-registry name) is passed to the engine as is."""
    from deblur_cli.models import create_model, list_variants

    if name in list_variants():
        return create_model(name).eval()
    return name


def _synthetic(h: int, w: int, rng: object) -> object:
    """A ``uint8`` RGB test image: smooth gradients plus noise (built in strips to stay small)."""
    import numpy as np

    out = np.empty((h, w, 3), dtype=np.uint8)
    xs = np.linspace(0, 1, w, dtype=np.float32)
    for y0 in range(0, h, 512):
        y1 = min(h, y0 + 512)
        ys = np.linspace(y0 / h, y1 / h, y1 - y0, dtype=np.float32)[:, None]
        base = np.stack([ys * xs, ys + 0 * xs, 1 - xs + 0 * ys], axis=-1) * 200
        out[y0:y1] = np.clip(base + rng.integers(0, 55, (y1 - y0, w, 3)), 0, 255)  # type: ignore[attr-defined]
    return out


def measure(cmd: list[str]) -> None:
    """Run ``cmd`` (the worker) as the only child and print its JSON plus its peak RSS."""
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    if proc.returncode != 0:
        print(json.dumps({"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}))
        return
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(peak_kib / 1024, 1)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="saphn-s", help="architecture (random weights) or registry name")
    ap.add_argument("--cases", default=DEFAULT_CASES, help=f"name:WxH,... (default {DEFAULT_CASES})")
    ap.add_argument("--tiles", default="auto,1024", help="tile settings for large images (default auto,1024)")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("SIZE", "TILE"), help=argparse.SUPPRESS)
    ap.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.model, args.worker[0], args.worker[1], args.backend, args.threads)
        return
    if args.measure:
        measure(args.measure)
        return

    me = str(Path(__file__).resolve())
    print(f"Model {args.model}, {args.backend} backend, {args.threads} threads.\n")
    print("| case | image | tile | peak RSS (MiB) | deblur s |")
    print("|---|---|---|---|---|")
    for case in args.cases.split(","):
        name, size = case.split(":")
        w, h = (int(v) for v in size.lower().split("x"))
        tiles = args.tiles.split(",") if w * h >= TILED_FROM else ["auto"]
        for tile in tiles:
            worker_cmd = [sys.executable, me, "--model", args.model, "--backend", args.backend]
            worker_cmd += ["--threads", str(args.threads), "--worker", size, tile]
            cmd = [sys.executable, me, "--measure", *worker_cmd]
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"error": proc.stderr}
            if "error" in res:
                print(f"| {name} | {size} | {tile} | failed: {res['error']} | |")
                continue
            used = res.get("tile")
            tile_text = "-" if not w else (f"{tile} -> {used or 'none'}" if tile == "auto" else str(used))
            mp = f"{w}x{h} ({w * h / 1e6:.1f} MP)" if w else "model only"
            rss, secs = res["peak_rss_mib"], res.get("deblur_s", "-")
            print(f"| {name} | {mp} | {tile_text} | {rss:.0f} | {secs} |", flush=True)


if __name__ == "__main__":
    main()
