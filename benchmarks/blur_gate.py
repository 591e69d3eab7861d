"""The blur gate (``deblur image --gate``): what it does to PSNR, for a grid of thresholds.

For each pair of each ``--data`` folder the deblurring network runs once and the blur-extent
network estimates the blur of the blurred image; every gate ``(lo, hi)`` of the grid is then
scored from those (gated output = ``blurred + w * (deblurred - blurred)``, ``w`` from
:func:`deblur_cli.gate.decision.gate_weight`). Per gate and folder: mean gain, pairs more than
0.05 dB worse than their input. Also prints the estimated extent of every pair.

How the default gate was chosen (rule written before running it): on the two
validation folders (``val-pairs``: 38 motion-blurred pairs, 9-21 px; ``val-nearsharp-pairs``: 38
pairs at 2-3 px), among the gates whose mean gain on the motion-blurred pairs is at most 0.05 dB
below the ungated network's and which make no more of them worse, take the one with the highest
mean gain over all 76 pairs. The held-out pairs and ``benchmarks/blur_sweep.py --gate`` report
the chosen gate afterwards.

``--scopes`` also scores the regional gate (``--gate-scope region``): ``region:SIGMA`` applies
each gate per pixel to :meth:`deblur_cli.gate.meter.BlurMeter.extent_map` with a window of
SIGMA px; its rows are keyed ``LO,HI@region:SIGMA``. The rule for choosing it is in
``docs/experiments/runs/region-gate/RULE.md``.

Usage::

    python -m benchmarks.blur_gate                                  # bundled weights, validation folders
    python -m benchmarks.blur_gate --data data/photos/heldout-pairs --gates 4,7
    python -m benchmarks.blur_gate --gates 4,6 --scopes image,region:96,region:192,region:384
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA = "data/photos/val-pairs,data/photos/val-nearsharp-pairs"
DEFAULT_GATES = "2,4 2,6 3,5 3,6 3,8 4,6 4,7 4,8 5,7 5,8 5,10 6,8 6,10 8,12"
TOLERANCE_DB = 0.05


def score_gates(
    items: list[tuple[Any, ...]], gates: list[tuple[float, float]], scopes: tuple[str, ...] = ("image",)
) -> dict[str, dict[str, float]]:
    """``items``: ``(extent, blurred, deblurred, sharp)`` per pair, ``(H, W, 3)`` arrays, or
    ``(extent, maps, blurred, deblurred, sharp)`` with ``maps`` a dict of
    :class:`~deblur_cli.gate.regions.BlurMap` by scope (``"region:192"``). Per gate and scope
    (and ``off``): mean ``gain`` and ``worse`` (pairs more than :data:`TOLERANCE_DB` below their
    input). Keys: ``off``, ``LO,HI`` (whole image), ``LO,HI@SCOPE`` (regional)."""
    from deblur_cli.eval.pairs import psnr
    from deblur_cli.gate.decision import apply_gate, gate_weight

    rows = [it if len(it) == 5 else (it[0], {}, *it[1:]) for it in items]
    out: dict[str, dict[str, float]] = {}
    for gate, scope in [(None, "image"), *((g, sc) for g in gates for sc in scopes)]:
        gains = []
        for extent, maps, b, d, s in rows:
            if gate is None:
                gated = d
            elif scope == "image":
                gated = apply_gate(b, d, gate_weight(extent, *gate))
            else:  # HWC arrays: the (H, W) map goes over the channels
                w = maps[scope].weights(*gate)[..., None]
                gated = b + w * (d - b)
            gains.append(psnr(gated, s) - psnr(b, s))
        key = "off" if gate is None else f"{gate[0]:g},{gate[1]:g}" + ("" if scope == "image" else f"@{scope}")
        out[key] = {"gain": float(np.mean(gains)), "worse": int(sum(g < -TOLERANCE_DB for g in gains))}
    return out


def _scopes(text: str) -> list[str]:
    """``--scopes``: ``image`` and/or ``region:SIGMA`` (SIGMA in px, > 0)."""
    import math

    out: list[str] = []
    for sc in (t.strip() for t in text.split(",")):
        kind, colon, sigma = sc.partition(":")
        try:
            ok = sc == "image" or (kind == "region" and bool(colon) and math.isfinite(float(sigma)) and float(sigma) > 0)
        except ValueError:
            ok = False
        if not ok:
            raise argparse.ArgumentTypeError(f"{sc!r}: expected 'image' or 'region:SIGMA' (px, e.g. region:192)")
        if sc not in out:
            out.append(sc)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="deblurring weights (default: bundled)")
    ap.add_argument("--meter", default=None, help="blur-extent weights (default: bundled)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="comma-separated pair folders")
    ap.add_argument("--gates", default=DEFAULT_GATES, help="space-separated LO,HI pairs in pixels")
    ap.add_argument("--scopes", default="image", type=_scopes, help="comma-separated: image, region:SIGMA_PX")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from deblur_cli import Deblurrer
    from deblur_cli.data.datasets import find_pairs, read_rgb
    from deblur_cli.gate.meter import BlurMeter
    from deblur_cli.gate.regions import blur_map_from_readings

    torch.set_num_threads(args.threads)
    gates = [tuple(float(v) for v in g.split(",")) for g in args.gates.split()]
    scopes = tuple(args.scopes)
    sigmas = {sc: float(sc.split(":")[1]) for sc in scopes if sc != "image"}
    d = Deblurrer(None, weights=args.weights, device="cpu")
    meter = BlurMeter(args.meter)
    print(f"{d.model_info.get('name')} ({str(d.model_info.get('sha256', ''))[:12]}); gates {args.gates}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    extents: dict[str, dict[str, float]] = {}
    for folder in args.data.split(","):
        items = []
        extents[folder] = {}
        for pair in find_pairs(Path(folder)):
            b, s = read_rgb(pair.blur), read_rgb(pair.sharp)
            e = meter.estimate(b).extent
            extents[folder][pair.name] = round(e, 2)
            maps = {}
            if sigmas:
                est, texture = meter.tile_readings(b)  # once; pooled per window
                for sc, sigma in sigmas.items():
                    maps[sc] = blur_map_from_readings(est, texture, (b.shape[0], b.shape[1]), sigma)
            items.append((e, maps, b, d.deblur(b), s))
        results[folder] = score_gates(items, gates, scopes)
        ex = np.array(list(extents[folder].values()))
        print(f"{folder}: {len(items)} pairs, estimated blur median {np.median(ex):.1f} px "
              f"(min {ex.min():.1f}, max {ex.max():.1f})")  # fmt: skip
    folders = list(results)
    head = " ".join(f"{Path(f).name + ' gain':>24s} {'worse':>5s}" for f in folders)
    print(f"{'gate':>16s} {head} {'all':>6s}")
    for key in results[folders[0]]:
        cells = " ".join(f"{results[f][key]['gain']:+24.2f} {results[f][key]['worse']:5d}" for f in folders)
        n = [len(extents[f]) for f in folders]
        overall = sum(results[f][key]["gain"] * k for f, k in zip(folders, n)) / sum(n)
        print(f"{key:>16s} {cells} {overall:+6.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": d.model_info, "results": results, "extents": extents}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
