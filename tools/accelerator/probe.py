"""Measure, on the accelerator, which training settings are fastest (run it in the smoke call).

``PYTHONPATH=. python3 tools/accelerator/probe.py --out $OUT [--model saphn-s --crop 256 --batch 64] [--compile]``
(``tools/accelerator/smoke.sh`` runs it after a one-minute window)

Times training steps (forward, backward, Adam; fixed random batch, so data is not in it) of
``--model`` for each setting: float32 (TF32 products), bf16 autocast, bf16 + channels-last,
and with ``--compile`` bf16 + ``torch.compile`` (in a child process under a time limit, since
compiling can take minutes; the compile time is reported). Also the time to synthesise one
batch on the device and the peak GPU memory of each setting. Each setting: 3 warm-up steps,
then the median of 10 timed ones. ``--device cpu`` rehearses the same code.

The result is merged into ``$OUT/summary.json`` under ``"probe"`` (else ``$OUT/probe.json``):
the next window's ``--amp``, ``--channels-last`` and ``--compile`` follow it
(docs/accelerator.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deblur_cli.models import create_model
from deblur_cli.training.accel import autocast, setup_device
from deblur_cli.training.trainer import psnr_loss
from deblur_cli.training.window import merge_into_summary

ROOT = Path(__file__).resolve().parents[2]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(model_name: str, crop: int, batch: int, dev: torch.device, amp: str, channels_last: bool,
               compile_model: bool, warmup: int = 3, timed: int = 10) -> dict:  # fmt: skip
    """Median seconds per training step of one setting, and its peak GPU memory."""
    torch.manual_seed(0)
    model = create_model(model_name).to(dev).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop, device=dev)
    y = torch.rand(batch, 3, crop, crop, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(model) if compile_model else model
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, t_first = [], time.perf_counter()
    for i in range(warmup + timed):
        _sync(dev)
        t = time.perf_counter()
        with autocast(dev, amp):
            levels: list[torch.Tensor] = []
            fn(x, levels=levels)
        loss = sum(w * psnr_loss(lv.float(), y) for w, lv in zip((0.25, 0.5, 1.0), levels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if i == 0:
            first = time.perf_counter() - t_first
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step = float(np.median(times))
    out = {"s_per_step": round(step, 5), "samples_per_s": round(batch / step, 1), "first_step_s": round(first, 2)}
    if dev.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def time_synthesis(photos: Path, crop: int, batch: int, dev: torch.device) -> dict:
    """Seconds to make one batch of pairs on the device (median of 5 after 2)."""
    from deblur_cli.data.gpu_pairs import TorchSyntheticPairs
    from deblur_cli.data.synthetic import BlurSettings

    src = TorchSyntheticPairs(
        photos, crop, BlurSettings(defocus_prob=0.3, sharp_prob=0.2, identity_prob=0.1), device=dev
    )
    times = []
    for i in range(7):
        _sync(dev)
        t = time.perf_counter()
        src.batch(batch)
        _sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return {"s_per_batch": round(float(np.median(times)), 5)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--model", default="saphn-s")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--photos", type=Path, default=ROOT / "data" / "carry" / "photos" / "train")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (child process, time limit)")
    ap.add_argument("--compile-limit", type=float, default=150.0, help="seconds allowed for the compiled setting")
    ap.add_argument("--only-compile", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    dev = torch.device(args.device)
    setup_device(dev)
    bf16 = "bf16" if dev.type == "cuda" else "off"  # CPU autocast is not what the window uses there
    if args.only_compile:
        print(json.dumps(time_steps(args.model, args.crop, args.batch, dev, bf16, False, True)))
        return 0
    report: dict = {"model": args.model, "crop": args.crop, "batch": args.batch, "device": str(dev)}

    def keep() -> None:  # after each setting: a probe stopped by its caller's time limit keeps the rest
        if args.out is not None:
            merge_into_summary(args.out, "probe", report)

    for name, amp, cl in (("fp32_tf32", "off", False), ("bf16", bf16, False), ("bf16_channels_last", bf16, True)):
        try:
            report[name] = time_steps(args.model, args.crop, args.batch, dev, amp, cl, False)
        except torch.OutOfMemoryError:
            report[name] = {"error": "out of memory"}
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        print(f"{name}: {report[name]}", flush=True)
        keep()
    if args.compile:
        cmd = [sys.executable, __file__, "--only-compile", "--model", args.model, "--crop", str(args.crop),
               "--batch", str(args.batch), "--device", args.device]  # fmt: skip
        t = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_limit, check=False)
            lines = proc.stdout.strip().splitlines()
            report["bf16_compile"] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}  # fmt: skip
        except subprocess.TimeoutExpired:
            report["bf16_compile"] = {"error": f"not compiled within {args.compile_limit:.0f} s"}
        report["bf16_compile"]["wall_s"] = round(time.time() - t, 1)
        print(f"bf16_compile: {report['bf16_compile']}", flush=True)
        keep()
    if args.photos.is_dir():
        report["synthesis"] = time_synthesis(args.photos, args.crop, args.batch, dev)
        print(f"synthesis: {report['synthesis']}", flush=True)
    timed = {k: v["s_per_step"] for k, v in report.items() if isinstance(v, dict) and "s_per_step" in v}
    report["fastest"] = min(timed, key=timed.get) if timed else None
    keep()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
