"""Before/after latency of a code change: two source trees, timed in alternating processes.

A speed change of a few percent is smaller than the drift of a shared 2-core machine between
two runs of ``latency.py`` (+-20 % measured on identical code), so the two versions
are timed in turns: ``--pairs`` times, one process with the *before* tree, then one with the
*after* tree, each building the same seeded random model as ``latency.py`` (channels-last,
allocator tuned as the ``deblur`` command tunes it), running one 1280x720 image ``--warmup``
times untimed and ``--runs`` times timed. It prints each pair, the medians, the median of the
per-pair ratios (after / before: < 1 is faster) and the largest output difference between the
trees. Separate processes, because two versions of ``deblur_cli`` cannot share one.

The *before* tree is usually an export of a commit::

    mkdir -p /tmp/before && git archive HEAD deblur_cli benchmarks | tar -x -C /tmp/before
    python -m benchmarks.compare_trees --before /tmp/before --after . --variant saphn-s --pairs 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(root: Path, variant: str, size: tuple[int, int], runs: int, warmup: int, threads: int, out: Path) -> None:
    """In a fresh process started by :func:`main` (whose ``PYTHONPATH`` puts the tree ``root`` first):
    time ``variant`` from that tree; print JSON, save the output."""
    import numpy as np
    import torch

    import deblur_cli

    if not Path(deblur_cli.__file__).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"deblur_cli was imported from {deblur_cli.__file__}, not from {root}")
    from benchmarks import latency

    if not Path(latency.__file__).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"benchmarks.latency was imported from {latency.__file__}, not from {root}")

    from deblur_cli.inference.allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(threads)
    run = latency.torch_runner(latency.build_models([variant], [])[variant], bf16=False)
    w, h = size
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    # The timing loop is written out here, not imported (backends.seconds is the same loop):
    # only latency.py's model builder is taken from the tree under test, so that the loop is
    # the same code for both trees and older trees need nothing else.
    for _ in range(warmup):
        y = run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        y = run(x)
        times.append(time.perf_counter() - t)
    final = y[-1] if isinstance(y, (list, tuple)) else y  # the level-1 (full) estimate
    np.save(out, final.float().numpy())
    print(json.dumps({"median": statistics.median(times)}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="source tree holding deblur_cli/ and benchmarks/")
    ap.add_argument("--after", type=Path, default=Path("."), help="source tree (default: this one)")
    ap.add_argument("--variant", default="saphn-s")
    ap.add_argument("--size", default="1280x720", help="WxH")
    ap.add_argument("--pairs", type=int, default=8, help="before/after process pairs")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per process")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size must be WxH, got {args.size!r}")
    if args.worker:
        worker(Path(args.worker[0]), args.variant, (w, h), args.runs, args.warmup, args.threads, Path(args.worker[1]))
        return
    if args.before is None:
        ap.error("--before DIR is required")
    for tree in (args.before, args.after):
        if not (tree / "deblur_cli" / "__init__.py").is_file() or not (tree / "benchmarks" / "latency.py").is_file():
            ap.error(f"{tree} has no deblur_cli/ and benchmarks/latency.py")
    import numpy as np

    medians: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: Path(tmp) / f"{k}.npy" for k in medians}
        for i in range(args.pairs):
            for key, tree in (("before", args.before), ("after", args.after)):
                # -P: not this script's folder first. The tree under test comes first instead, so that
                # its deblur_cli and benchmarks are the ones imported; its benchmarks/ folder too, for
                # trees whose latency.py imports dmphn by bare name.
                root = tree.resolve()
                cmd = [sys.executable, "-P", __file__, "--worker", str(root), str(outs[key]), "--variant",
                       args.variant, "--size", args.size, "--runs", str(args.runs), "--warmup", str(args.warmup),
                       "--threads", str(args.threads)]  # fmt: skip
                path = os.pathsep.join([str(root), str(root / "benchmarks")])
                done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": path})
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    raise SystemExit(f"{key} tree failed: {last}")
                medians[key].append(json.loads(done.stdout.strip().splitlines()[-1])["median"])
            print(f"pair {i + 1}: before {medians['before'][-1]:.3f} s, after {medians['after'][-1]:.3f} s", flush=True)
        diff = float(np.abs(np.load(outs["before"]) - np.load(outs["after"])).max())
    ratios = [a / b for a, b in zip(medians["after"], medians["before"], strict=True)]
    print(
        f"{args.variant} {args.size}, {args.threads} threads: median before {statistics.median(medians['before']):.3f} s, "
        f"after {statistics.median(medians['after']):.3f} s; median after/before {statistics.median(ratios):.3f}; "
        f"max abs output difference {diff:.2e}"
    )


if __name__ == "__main__":
    main()
