"""How much of this machine's arithmetic peak each model uses: counted FLOPs / measured time / matmul peak.

* **FLOPs** per image are *counted* by ``torch.utils.flop_counter.FlopCounterMode`` on the meta
  device (convolutions, transposed convolutions, matrix products; 2 FLOPs per multiply-add), as
  in ``benchmarks/model_cost.py``. Element-wise work (the filtering module's bilinear sampling,
  activations, softmax) is not counted, so "achieved GFLOP/s" is a lower bound on the work done.
* **Peak**: the best of ``--peak-runs`` products of two 2048x2048 matrices with ``--threads``
  threads, in float32 and in bfloat16, through ``torch.mm`` (MKL) and through oneDNN (a 1x1
  convolution), whichever is faster on this CPU (:func:`gemm_rates`).
* **Time**: median seconds per image, measured here exactly as ``benchmarks/latency.py`` does
  (torch fp32 and torch bf16 autocast, interleaved, warm), or read from its ``--json`` output
  with ``--latency-json`` (no model is run then).

The target for the paper-width ``saphn``: at least 60 % of the measured fp32 peak.

Usage::

    python -m benchmarks.efficiency                                   # 1280x720, 2 threads
    python -m benchmarks.latency --json lat.json && python -m benchmarks.efficiency --latency-json lat.json
    python -m benchmarks.efficiency --size 320x180 --runs 1 --variants saphn-s   # quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.dmphn import BASELINES
from benchmarks.latency import DEFAULT_VARIANTS, build_models, cpu_name, measure, parse_size, torch_runner
from deblur_cli.inference.allocator import keep_freed_memory
from deblur_cli.models import list_variants


def counted_flops(model: nn.Module, height: int, width: int) -> int:
    """FLOPs of one forward pass on a ``(1, 3, height, width)`` input, counted on the meta device."""
    import copy

    meta = copy.deepcopy(model).to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, 3, height, width, device="meta"))
    return int(counter.get_total_flops())


def gemm_rates(threads: int, dtype: torch.dtype = torch.float32, n: int = 2048, runs: int = 10) -> dict[str, float]:
    """Best GFLOP/s of the same ``n x n @ n x n`` product through ``torch.mm`` (MKL) and through
    oneDNN (as a channels-last 1x1 convolution of ``n`` pixels).

    Why both: the two libraries differ by up to 2.4x on some CPUs (on an AMD EPYC, MKL's fp32
    GEMM ran at ~200 GFLOP/s and oneDNN's at ~450), and the models use both (convolutions go
    through oneDNN, and so may the filtering module's product). A "peak" from
    the slower one would put plain convolutions above 100 %.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        out = torch.empty(n, n, dtype=dtype)
        image = a.view(1, 1, n, n).permute(0, 3, 1, 2)  # (1, n channels, 1, n pixels), channels-last
        kernel = b.t().contiguous().view(n, n, 1, 1)
        ops = {"mm": lambda: torch.mm(a, b, out=out), "onednn": lambda: torch.nn.functional.conv2d(image, kernel)}
        rates = {}
        for name, op in ops.items():
            for _ in range(3):
                op()
            best = float("inf")
            for _ in range(runs):
                start = time.perf_counter()
                op()
                best = min(best, time.perf_counter() - start)
            rates[name] = 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(old)
    return rates


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=(1280, 720), help="WxH (default 1280x720)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per model (default 3)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--peak-runs", type=int, default=10, help="matmul repetitions for the peak (default 10)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--baselines", default=",".join(BASELINES))
    ap.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 columns")
    ap.add_argument("--latency-json", type=Path, help="take the times from latency.py --json instead of measuring")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as the deblur command does (DEBLUR_MALLOC=system: glibc defaults)

    variants = [v for v in args.variants.split(",") if v]
    baselines = [b for b in args.baselines.split(",") if b]
    bad = [v for v in variants if v not in list_variants()] + [b for b in baselines if b not in BASELINES]
    if bad:
        ap.error(f"unknown model(s) {bad}")
    w, h = args.size
    threads = args.threads
    models = build_models(variants, baselines)
    backends = ["torch fp32"] + ([] if args.no_bf16 else ["torch bf16"])

    if args.latency_json:
        record = json.loads(args.latency_json.read_text())
        w, h = record["size"]
        threads = record["threads"]
        times = {(t["model"], t["backend"]): t["seconds"] for t in record["times"] if t["backend"] in backends}
        models = {label: m for label, m in models.items() if any(label == k[0] for k in times)}
    else:
        torch.set_num_threads(threads)
        runners = {(label, b): torch_runner(m, bf16=b == "torch bf16") for label, m in models.items() for b in backends}
        times = measure(runners, torch.rand(1, 3, h, w).numpy(), args.warmup, args.runs)

    print(f"# efficiency: {w}x{h}, {threads} threads, {cpu_name()}, torch {torch.__version__}", file=sys.stderr)
    rates = {"torch fp32": gemm_rates(threads, torch.float32, runs=args.peak_runs)}
    if "torch bf16" in backends:
        rates["torch bf16"] = gemm_rates(threads, torch.bfloat16, runs=args.peak_runs)
    peak = {b: max(r.values()) for b, r in rates.items()}
    print(
        "Measured matmul peak (2048x2048, "
        + f"{threads} threads; the better of torch.mm and oneDNN): "
        + ", ".join(
            f"{b.split()[-1]} {peak[b]:.0f} GFLOP/s (mm {r['mm']:.0f}, oneDNN {r['onednn']:.0f})" for b, r in rates.items()
        )
    )
    print()
    head = ["model", "counted GFLOPs"]
    for b in backends:
        head += [f"{b} s", "GFLOP/s", f"% of {b.split()[-1]} peak"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, model in models.items():
        flops = counted_flops(model, h, w)
        row = [f"`{label}`" if label in list_variants() else label, f"{flops / 1e9:.1f}"]
        for b in backends:
            secs = times.get((label, b))
            if not secs:
                row += ["-", "-", "-"]
                continue
            t = statistics.median(secs)
            rate = flops / t / 1e9
            row += [f"{t:.2f}", f"{rate:.0f}", f"{100 * rate / peak[b]:.0f} %"]
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"FLOPs per {w}x{h} image counted by torch's FlopCounterMode (element-wise work such as the bilinear "
        "sampling is not counted); time = median of warm runs."
    )


if __name__ == "__main__":
    main()
