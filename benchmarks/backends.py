"""Seconds per 1280x720 image with the torch and the onnxruntime backend, per registered variant (CPU).

For each variant: random weights (zero-initialised heads and meta-layers made non-zero, so the
filtering module samples at real offsets), exported once to ONNX (verified against torch, cached
in ``--cache-dir``: reuse it to skip exports on a second run), then both backends run the same
one-image batch: ``--warmup`` untimed runs, then ``--runs`` timed runs, of which the median is
printed. Both use ``--threads`` threads (``torch.set_num_threads``; onnxruntime's intra-op
threads, graph optimizations ``ORT_ENABLE_ALL``). The backends are timed directly, on the whole
image as one batch: the engine's image IO and tiling come on top, the same for both.

Run it on a quiet machine: the paper-sized ``saphn`` needs about 3 GB and a minute or more per
run at 1280x720 on 2 cores, and its export takes minutes.

Usage::

    python -m benchmarks.backends                                   # every variant, 1280x720
    python -m benchmarks.backends --variants saphn-s,saphn-tiny --size 320x180 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.latency import cpu_name  # one definition for the benchmark scripts
from benchmarks.latency import parse_size as latency_parse_size
from deblur_cli.backends.ort import OnnxBackend
from deblur_cli.backends.torch_backend import TorchBackend
from deblur_cli.errors import DeblurError
from deblur_cli.inference.allocator import keep_freed_memory
from deblur_cli.models import create_model, list_variants, randomize_zero_layers


def random_model(name: str) -> torch.nn.Module:
    """Variant ``name`` with every path live (fixed values, so exports are cached once)."""
    return randomize_zero_layers(create_model(name), seed=0)


def seconds(run, x: np.ndarray, warmup: int, runs: int) -> tuple[float, np.ndarray]:
    """Median wall-clock seconds of ``run(x)`` over ``runs`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        out = run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = run(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def parse_size(text: str) -> tuple[int, int]:
    """``latency.parse_size``, at least 16x16 (the engine's smallest network input)."""
    w, h = latency_parse_size(text)
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError("size must be at least 16x16")
    return w, h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(list_variants()), help="comma-separated (default: all registered)")
    ap.add_argument("--size", type=parse_size, default=(1280, 720), help="WIDTHxHEIGHT (default 1280x720)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per backend; the median is reported (>= 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache (default: a temporary folder)")
    args = ap.parse_args()
    keep_freed_memory()  # as the deblur command does (DEBLUR_MALLOC=system: glibc defaults)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(list_variants()))
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(list_variants())}")
    if args.runs < 3:
        ap.error("--runs must be at least 3 (the median of fewer runs is not a figure)")

    torch.set_num_threads(args.threads)
    w, h = args.size
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        print(
            f"{cpu_name()}, {args.threads} threads; torch {torch.__version__}, onnxruntime {ort.__version__}; "
            f"{w}x{h}, median of {args.runs} runs after {args.warmup} warm-up"
        )
        print()
        print("| variant | torch s/image | onnxruntime s/image | onnxruntime / torch | export s | max abs diff |")
        print("|---|---|---|---|---|---|")
        for name in variants:
            model = random_model(name)
            torch_backend = TorchBackend(model, device="cpu")
            t_torch, y_torch = seconds(torch_backend.run, x, args.warmup, args.runs)
            start = time.perf_counter()
            try:
                onnx_backend = OnnxBackend(model, device="cpu", threads=args.threads, cache_dir=cache)
            except DeblurError as exc:  # report the variant and go on with the others
                print(f"| `{name}` | {t_torch:.3f} | export failed: {exc} | | | |", flush=True)
                continue
            export = "cached" if onnx_backend.cache_hit else f"{time.perf_counter() - start:.0f}"
            t_onnx, y_onnx = seconds(onnx_backend.run, x, args.warmup, args.runs)
            diff = float(np.abs(y_torch - y_onnx).max())
            print(
                f"| `{name}` | {t_torch:.3f} | {t_onnx:.3f} | {t_onnx / t_torch:.2g} | {export} | {diff:.1e} |",
                flush=True,
            )
            del onnx_backend


if __name__ == "__main__":
    main()
