"""Seconds per 1280x720 image for every SAPHN variant beside DMPHN, measured in the same run.

The SAPHN paper's speed claim (Table 1: 0.34 s / 0.77 s against Stack(4)-DMPHN's 0.98 s per
1280x720 image on a Titan Xp) is a *ratio* to DMPHN, so the baselines run here too, in the same
process, on the same input, with the same threads: DMPHN(1-2-4) and Stack(4)-DMPHN from
``benchmarks/dmphn.py``.

For every model and every backend (``torch`` fp32; ``torch`` with bfloat16 autocast, which this
CPU accelerates (AVX-512 BF16/AMX) but which changes outputs by ~1e-3; ``onnxruntime`` fp32 with
all graph optimizations) the script makes ``--warmup`` untimed runs, then ``--runs`` timed runs
*interleaved* across all models of a backend (round-robin, so a disturbance hits every model
alike), and prints the median. The torch rounds all come before the onnxruntime ones: once an
onnxruntime session has run in a process, torch runs in it are slower and erratic for the rest
of the process (measured on ``saphn-s`` with glibc's malloc defaults: 1.42-1.46 s before,
2.0-3.4 s after, even after 3 s idle), while onnxruntime is not slowed by torch. ``--threads``
sets torch's intra-op threads and onnxruntime's. The allocator is tuned as the ``deblur``
command tunes it (:mod:`deblur_cli.inference.allocator`; ``DEBLUR_MALLOC=system`` for glibc's defaults).
Weights are random (speed does not depend on them); zero-initialised heads and meta-layers are
made non-zero so the filtering module samples at real offsets. The network is timed directly on
one ``(1, 3, H, W)`` batch: no image IO, no tiling. Every torch model runs channels-last (NHWC),
as the ``deblur`` CPU backend runs SAPHN; DMPHN gains from it too (DMPHN(1-2-4): 6.14 s NCHW,
5.01 s NHWC), so the ratio compares both at their best.

``--compare-reference`` adds, for every variant, a row that runs the same weights with the
straightforward filtering module (``deblur_cli.ops.pixel_filter.pixel_dependent_filter_reference``,
all taps at once), interleaved with the rest: the before/after of the speed work on this machine.
``--grid-sample-only`` and ``--no-onednn-products``/``--onednn-products`` choose other forms of
the CPU fast paths for the whole run (``deblur_cli.ops.pixel_filter.implementation`` and
``deblur_cli.ops.cpu.onednn_products``).

ONNX models are exported once per run with :func:`deblur_cli.backends.onnx_export.export_onnx` (checked
against torch); pass ``--onnx-dir`` to keep them and reuse them on the next run (the file name
holds a digest of the weights, so a stale file is never used). Exporting ``saphn`` takes minutes.

Usage::

    python -m benchmarks.latency                                  # the full table (quiet machine!)
    python -m benchmarks.latency --size 320x180 --runs 3 --variants saphn-s --no-onnx   # quick check
    python -m benchmarks.latency --json latency.json             # raw timings, for efficiency.py
    python -m benchmarks.latency --variants saphn-s --baselines '' --compare-reference   # before/after
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.dmphn import BASELINES
from deblur_cli.inference.allocator import keep_freed_memory
from deblur_cli.models import create_model, list_variants, randomize_zero_layers
from deblur_cli.ops import pixel_filter
from deblur_cli.ops.cpu import onednn_products

#: Variants benchmarked by default (``saphn-tiny`` is a test configuration).
DEFAULT_VARIANTS = ("saphn", "saphn-a", "saphn-s")
#: The baseline every ratio is taken against.
REFERENCE = "Stack(4)-DMPHN"
BACKENDS = ("torch fp32", "torch bf16", "onnxruntime fp32")
#: Suffix of the rows that run the reference (straightforward) filtering module.
REFERENCE_PDF = " (reference PDF)"


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)`` (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return w, h


def cpu_name() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode, and zero-initialised tensors (decoder heads, meta-layers) made non-zero."""
    return randomize_zero_layers(model, seed=seed)


def build_models(variants: list[str], baselines: list[str]) -> dict[str, nn.Module]:
    """Randomly initialised SAPHN variants and DMPHN baselines, by label."""
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {name: randomize(create_model(name)) for name in variants}
    for label in baselines:
        models[label] = randomize(BASELINES[label]())
    return models


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torch_runner(
    model: nn.Module,
    bf16: bool,
    reference: bool = False,
    grid_sample_only: bool = False,
    onednn: bool | None = None,
) -> Callable[[np.ndarray], object]:
    """``x -> model(x)`` under inference mode, channels-last as ``deblur``'s CPU backend runs it
    (every model, DMPHN too: both gain from it), and CPU bfloat16 autocast if ``bf16``; with the
    reference filtering module if ``reference``, with ``grid_sample`` instead of the row gather
    if ``grid_sample_only``, and the CPU products through oneDNN (``True``) or torch.mm/bmm
    (``False``) if ``onednn`` is given."""
    model.to(memory_format=torch.channels_last)
    impl = "reference" if reference else "grid_sample" if grid_sample_only else "auto"

    def run(x: np.ndarray) -> object:
        amp = torch.autocast("cpu", torch.bfloat16) if bf16 else nullcontext()
        with torch.inference_mode(), amp, pixel_filter.implementation(impl), onednn_products(onednn):
            return model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

    return run


def onnx_runner(
    model: nn.Module, label: str, onnx_dir: Path, threads: int, reference: bool = False
) -> Callable[[np.ndarray], object]:
    """Export ``model`` (or reuse an export of the same weights) and return an onnxruntime runner
    (exported with the reference filtering module if ``reference``)."""
    from deblur_cli.backends.onnx_export import INPUT_NAME, OUTPUT_NAME, cpu_session, export_onnx, state_digest

    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
    path = onnx_dir / f"{safe}-{state_digest(model)[:16]}.onnx"
    if not path.exists():
        start = time.perf_counter()
        print(f"  exporting {label} to ONNX ...", file=sys.stderr, flush=True)
        with pixel_filter.implementation("reference") if reference else nullcontext():
            result = export_onnx(model, path)
        print(
            f"  exported {label} in {time.perf_counter() - start:.0f} s (max |onnx - torch| {result.max_abs_diff:.1e})",
            file=sys.stderr,
            flush=True,
        )
    session = cpu_session(path, threads)

    def run(x: np.ndarray) -> object:
        return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    return run


def measure(
    runners: dict[tuple[str, str], Callable[[np.ndarray], object]], x: np.ndarray, warmup: int, runs: int
) -> dict[tuple[str, str], list[float]]:
    """Per backend family (torch first, then onnxruntime; see the module docstring), warm every
    runner up, then time ``runs`` rounds of its runners in turn (interleaved)."""
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for family in ("torch", "onnxruntime"):
        group = {key: run for key, run in runners.items() if key[1].startswith(family)}
        for key, run in group.items():
            for _ in range(warmup):
                run(x)
            print(f"  warmed up {key[0]} / {key[1]}", file=sys.stderr, flush=True)
        for r in range(runs if group else 0):
            for key, run in group.items():
                start = time.perf_counter()
                run(x)
                times[key].append(time.perf_counter() - start)
            print(f"  {family} round {r + 1}/{runs} done", file=sys.stderr, flush=True)
    return times


def table(
    models: dict[str, nn.Module], backends: list[str], times: dict[tuple[str, str], list[float]], size: tuple[int, int]
) -> str:
    """Markdown table: median seconds and speed-up against :data:`REFERENCE` per backend."""
    med = {key: statistics.median(v) for key, v in times.items()}
    head = ["model", "params"]
    for b in backends:
        head += [f"{b} (s)", "x vs S4"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, model in models.items():
        row = [f"`{label}`" if label in list_variants() else label, f"{parameters(model) / 1e6:.2f} M"]
        for b in backends:
            t = med.get((label, b))
            ref = med.get((REFERENCE, b))
            row.append("-" if t is None else f"{t:.2f}")
            row.append("-" if t is None or ref is None else f"{ref / t:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    w, h = size
    lines.append("")
    lines.append(
        f"Seconds per {w}x{h} image (median); 'x vs S4' = Stack(4)-DMPHN's time / the model's time on the "
        "same backend (> 1: faster than Stack(4)-DMPHN)."
    )
    return "\n".join(lines)


def speedups(variants: list[str], backends: list[str], times: dict[tuple[str, str], list[float]]) -> str:
    """Markdown table: reference-filtering time / optimised time per variant and backend."""
    lines = ["| variant | " + " | ".join(f"{b}: reference / optimised" for b in backends) + " |"]
    lines.append("|" + "---|" * (len(backends) + 1))
    for v in variants:
        cells = []
        for b in backends:
            new, old = times.get((v, b)), times.get((v + REFERENCE_PDF, b))
            cells.append("-" if not new or not old else f"{statistics.median(old) / statistics.median(new):.2f}x")
        lines.append(f"| `{v}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=(1280, 720), help="WxH (default 1280x720)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per model and backend (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated SAPHN variants")
    ap.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated baselines ('' for none)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime column")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 autocast column")
    ap.add_argument("--onnx-dir", type=Path, help="keep ONNX exports here and reuse them (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="write the raw timings here")
    ap.add_argument(
        "--compare-reference", action="store_true", help="add rows with the reference (unoptimised) filtering module"
    )
    ap.add_argument(
        "--grid-sample-only",
        action="store_true",
        help="filtering module gathers with grid_sample at every width (no embedding_bag row gather): the before",
    )
    ap.add_argument(
        "--no-onednn-products",
        action="store_true",
        help="filtering-module and attention products through torch.mm/bmm on every CPU (not oneDNN; by "
        "default the filtering module's product is torch.mm on Intel CPUs only)",
    )
    ap.add_argument(
        "--onednn-products",
        action="store_true",
        help="the filtering module's product through oneDNN on every CPU (by default: on CPUs other than Intel's)",
    )
    args = ap.parse_args(argv)
    keep_freed_memory()  # as the deblur command does (DEBLUR_MALLOC=system: glibc defaults)
    if args.onednn_products and args.no_onednn_products:
        ap.error("--onednn-products and --no-onednn-products exclude each other")
    onednn = True if args.onednn_products else False if args.no_onednn_products else None
    fast_paths = {"grid_sample_only": args.grid_sample_only, "onednn": onednn}
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--runs and --threads must be >= 1, --warmup >= 0")

    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in list_variants()]
    baselines = [b for b in args.baselines.split(",") if b]
    unknown += [b for b in baselines if b not in BASELINES]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; variants: {sorted(list_variants())}, baselines: {list(BASELINES)}")
    torch.set_num_threads(args.threads)
    backends = ["torch fp32"] + ([] if args.no_bf16 else ["torch bf16"])
    backends += [] if args.no_onnx else ["onnxruntime fp32"]
    w, h = args.size
    print(f"# latency: {w}x{h}, {args.threads} threads, {cpu_name()}, torch {torch.__version__}", file=sys.stderr)

    models = build_models(variants, baselines)
    if args.compare_reference:  # the same weights again, placed right after each variant
        models = {
            lab: m
            for label, model in models.items()
            for lab, m in [(label, model)] + ([(label + REFERENCE_PDF, model)] if label in variants else [])
        }
    tmp = None if args.onnx_dir else tempfile.TemporaryDirectory(prefix="deblur-bench-onnx-")
    onnx_dir = args.onnx_dir or Path(tmp.name)  # type: ignore[union-attr]
    onnx_dir.mkdir(parents=True, exist_ok=True)
    try:
        runners: dict[tuple[str, str], Callable[[np.ndarray], object]] = {}
        for label, model in models.items():
            ref = label.endswith(REFERENCE_PDF)
            runners[(label, "torch fp32")] = torch_runner(model, bf16=False, reference=ref, **fast_paths)
            if "torch bf16" in backends:
                runners[(label, "torch bf16")] = torch_runner(model, bf16=True, reference=ref, **fast_paths)
            if "onnxruntime fp32" in backends:
                runners[(label, "onnxruntime fp32")] = onnx_runner(model, label, onnx_dir, args.threads, ref)
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        times = measure(runners, x, args.warmup, args.runs)
    finally:
        if tmp is not None:
            tmp.cleanup()

    print(table(models, backends, times, args.size))
    if args.compare_reference:
        print()
        print(speedups(variants, backends, times))
    if args.json:
        record = {
            "size": [w, h],
            "threads": args.threads,
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "times": [{"model": m, "backend": b, "seconds": v} for (m, b), v in times.items()],
        }
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
