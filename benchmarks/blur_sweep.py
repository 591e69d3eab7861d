"""Where the weights help and where they hurt: PSNR gain against blur extent, per blur kind.

The held-out table of ``deblur eval`` mixes blur lengths of 9, 15 and 21 px. A user's photo may
be nearly sharp, or blurred further than training ever went; this sweep blurs the same sharp
photographs at a range of extents, (a) linear PSF and (b) camera shake as in
``deblur_cli.data.synthetic``, without noise, and prints for each extent the mean input PSNR,
the mean gain and the worst gain over the photographs. Extent 0 is the sharp photograph itself:
an ideal deblurrer returns it untouched, so that row gives the output PSNR against it (higher
is better, ``inf`` = unchanged) instead of a gain.

Usage::

    python -m benchmarks.blur_sweep                                   # bundled default weights
    python -m benchmarks.blur_sweep --weights runs/x/final.safetensors --json sweep.json
    python -m benchmarks.blur_sweep --extents 0,2,4,8 --side 256 --self-ensemble 8
    python -m benchmarks.blur_sweep --gate auto        # with the blur gate of `deblur image`
    python -m benchmarks.blur_sweep --gate auto --gate-scope region

``--photos`` defaults to the held-out photographs (``data/photos/heldout``, made by
``python -m deblur_cli.data.photos data/photos``); each is centre-cropped to ``--side``. The
random angles and trajectories come from ``--seed``, so runs are comparable across weights.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

DEFAULT_EXTENTS = "0,1,2,4,8,12,16,20,25,32"


def sweep(
    deblur,  # (H, W, 3) float [0, 1] -> same
    photos: list[np.ndarray],
    extents: list[float],
    kinds: tuple[str, ...] = ("linear", "shake"),
    seed: int = 7,
) -> list[dict[str, object]]:
    """One row per (kind, extent): ``psnr_in``, ``psnr_out``, ``gain``, ``worst_gain``, ``worse``.

    ``photos`` are ``(H, W, 3)`` float32 sharp images (already 8-bit levels). Extent 0 runs the
    sharp photographs (for each kind, so both tables start from the same reference row)."""
    from deblur_cli.data.synthetic import BlurSettings, degrade, quantize
    from deblur_cli.eval.pairs import psnr

    rng = np.random.default_rng(seed)
    settings = BlurSettings()
    rows: list[dict[str, object]] = []
    for kind in kinds:
        for extent in extents:
            pin, pout = [], []
            for sharp in photos:
                blurred = sharp if extent == 0 else quantize(degrade(sharp, rng, settings, kind=kind, extent=extent))
                pin.append(psnr(blurred, sharp))
                pout.append(psnr(deblur(blurred), sharp))
            gains = [o - i for i, o in zip(pin, pout) if math.isfinite(i)]
            rows.append({
                "kind": kind, "extent": extent,
                "psnr_in": _mean(pin), "psnr_out": _mean(pout),
                "gain": _mean(gains) if gains else None,
                "worst_gain": min(gains) if gains else None,
                "worse": sum(g < 0 for g in gains) if gains else None,
                "count": len(photos),
            })  # fmt: skip
    return rows


def _mean(xs: list[float]) -> float:
    """Mean, ``inf`` if any value is (an unchanged image)."""
    return float("inf") if any(math.isinf(x) for x in xs) else float(np.mean(xs))


def load_photos(folder: Path, side: int) -> list[np.ndarray]:
    """The photographs of ``folder``, centre-cropped to at most ``side`` pixels, 8-bit levels."""
    from deblur_cli.data.datasets import centre_crop, list_images, read_rgb
    from deblur_cli.data.synthetic import quantize

    return [quantize(centre_crop(read_rgb(path), side)) for path in list_images(folder)]


def _fmt(v: object, sign: bool = False) -> str:
    if v is None:
        return "-"
    v = float(v)  # type: ignore[arg-type]
    if math.isinf(v):
        return "inf"
    return f"{v:+.2f}" if sign else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="registry or architecture name (default: the bundled model)")
    ap.add_argument("--weights", default=None, help="weights file (.safetensors)")
    ap.add_argument("--photos", type=Path, default=Path("data/photos/heldout"))
    ap.add_argument("--side", type=int, default=320, help="centre crop side in pixels")
    ap.add_argument("--extents", default=DEFAULT_EXTENTS, help="comma-separated blur extents in pixels (0 = sharp)")
    ap.add_argument("--kinds", default="linear,shake")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--self-ensemble", type=int, default=1)
    ap.add_argument("--gate", default="off", help="blur gate: off (default: the network alone), auto or LO,HI")
    ap.add_argument("--gate-scope", default="image", choices=("image", "region"), help="as `deblur image --gate-scope`")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    import torch

    from deblur_cli import Deblurrer
    from deblur_cli.gate.decision import parse_gate
    from deblur_cli.inference.allocator import keep_freed_memory

    if not args.photos.is_dir():
        print(f"--photos {args.photos}: not a folder (python -m deblur_cli.data.photos data/photos)", file=sys.stderr)
        return 2
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    d = Deblurrer(
        args.model, weights=args.weights, device="cpu", self_ensemble=args.self_ensemble,
        gate=parse_gate(args.gate), gate_scope=args.gate_scope,
    )  # fmt: skip
    photos = load_photos(args.photos, args.side)
    extents = [float(e) for e in args.extents.split(",")]
    print(f"{d.model_info.get('name', args.model)} ({str(d.model_info.get('sha256', ''))[:12]}), "
          f"{d.device_description}; {len(photos)} photographs from {args.photos}, {args.side} px")  # fmt: skip
    rows = sweep(d.deblur, photos, extents, tuple(args.kinds.split(",")), args.seed)
    print(f"{'kind':7s} {'extent':>6s} {'PSNR in':>8s} {'PSNR out':>8s} {'gain':>6s} {'worst':>6s} {'worse':>5s}")
    for r in rows:
        worse = "-" if r["worse"] is None else f"{r['worse']}/{r['count']}"
        print(f"{r['kind']:7s} {r['extent']:6g} {_fmt(r['psnr_in']):>8s} {_fmt(r['psnr_out']):>8s} "
              f"{_fmt(r['gain'], True):>6s} {_fmt(r['worst_gain'], True):>6s} {worse:>5s}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps({"model": d.model_info, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
