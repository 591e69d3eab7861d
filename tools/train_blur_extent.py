"""Train the blur-extent network of the blur gate (the bundled ``weights/blur-extent.safetensors``).

40,000 labelled 96 px crops from the training photographs (``data/photos/train``), 2,000 from
the validation photographs (``data/photos/val``, never trained on) to report its error; width
16, batch 64, 8,000 steps of Adam 1e-3 with cosine decay. Writes the weights and
``blur-extent.json`` (sha256, settings, validation error per extent range) into ``--out``; the
defaults are the bundled meter's settings (``weights/blur-extent.json``). Run from the
repository root: ``python tools/train_blur_extent.py --out runs/blur-extent-new``, then compare
it with the bundled meter with ``tools/compare_meters.py``.
"""

import argparse
import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from deblur_cli.gate.weights import BUNDLED_FILE, BUNDLED_RECORD, save_blur_extent
from deblur_cli.training.meter import ExtentConfig, make_samples, predict_crops, train_extent

#: The bundled meter's settings.
CFG = ExtentConfig(samples=40_000, batch=64, steps=8_000, lr=1e-3, seed=0)
BINS = [(0, 0), (0.7, 2), (2, 4), (4, 6), (6, 8), (8, 12), (12, 20), (20, 32)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True, help="output folder (weights/ replaces the bundled meter)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=CFG.samples)
    ap.add_argument("--batch", type=int, default=CFG.batch)
    ap.add_argument("--steps", type=int, default=CFG.steps)
    ap.add_argument("--width", type=int, default=CFG.width)
    ap.add_argument("--seed", type=int, default=CFG.seed)
    ap.add_argument("--overwrite", action="store_true", help="replace a meter already in --out")
    args = ap.parse_args()
    if (args.out / BUNDLED_FILE).exists() and not args.overwrite:
        ap.error(f"{args.out / BUNDLED_FILE} exists: give --overwrite to replace it, or another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(
        CFG, samples=args.samples, batch=args.batch, steps=args.steps, width=args.width, seed=args.seed
    )
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    log = lambda s: print(s, flush=True)
    luma, ext = make_samples(Path("data/photos/train"), cfg, log=log)
    vluma, vext = make_samples(Path("data/photos/val"), cfg, n=2_000, seed=1234)
    log(f"data: {time.perf_counter() - t0:.0f} s")
    net, history = train_extent(luma, ext, cfg, log=log)
    pred = predict_crops(net, vluma)
    rows = []
    for lo, hi in BINS:
        sel = (vext == 0) if hi == 0 else (vext >= lo) & (vext < hi)
        p, t = pred[sel], vext[sel]
        rows.append(
            {
                "range_px": [lo, hi],
                "n": int(sel.sum()),
                "median_pred": round(float(np.median(p)), 2),
                "p10": round(float(np.percentile(p, 10)), 2),
                "p90": round(float(np.percentile(p, 90)), 2),
                "mae_log": round(float(np.abs(np.log1p(p) - np.log1p(t)).mean()), 3),
            }
        )
        log(
            f"val {lo:>4}-{hi:<4} n={rows[-1]['n']:4d} pred median {rows[-1]['median_pred']:6.2f} "
            f"(p10 {rows[-1]['p10']:.2f}, p90 {rows[-1]['p90']:.2f}) |log err| {rows[-1]['mae_log']:.3f}"
        )
    minutes = (time.perf_counter() - t0) / 60
    sha = save_blur_extent(net, args.out / BUNDLED_FILE, {"trained_on": "data/photos/train (synthetic blur)"})
    record = {
        "filename": BUNDLED_FILE,
        "sha256": sha,
        "config": asdict(cfg),
        "minutes": round(minutes, 1),
        "train_loss_per_100_steps": [round(h, 4) for h in history],
        "val_crops": rows,
    }
    (args.out / BUNDLED_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {args.out / BUNDLED_FILE} (sha256 {sha[:12]}...) in {minutes:.1f} min")


if __name__ == "__main__":
    main()
