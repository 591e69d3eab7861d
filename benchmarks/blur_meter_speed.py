"""Seconds the blur gate adds per image: the whole-image estimate (48 most textured tiles) and
the regional map (every 96 px tile, ``--gate-scope region``), at 1280x720 and 24 megapixels.

The photograph is a synthetic texture (random discs; the cost does not depend on the content).
Median of ``--runs`` warm runs, ``--threads`` intra-op threads.

Usage::

    python -m benchmarks.blur_meter_speed
    python -m benchmarks.blur_meter_speed --sizes 1280x720,4000x3000 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(height, width, 3)`` float32: random anti-aliased discs on gray."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 0.5, np.float32)
    for _ in range(max(50, height * width // 2000)):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, centre, int(rng.integers(3, 40)), tuple(float(v) for v in rng.random(3)), -1, lineType=cv2.LINE_AA)
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1280x720,6000x4000", help="comma-separated WxH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    from deblur_cli.gate.meter import BlurMeter

    torch.set_num_threads(args.threads)
    meter = BlurMeter()
    print(f"{'size':>11s} {'MP':>6s} {'whole image (s)':>16s} {'by region (s)':>14s}")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        img = texture(h, w)
        times = {}
        for name, fn in (("image", meter.estimate), ("region", meter.extent_map)):
            fn(img)  # warm
            ts = []
            for _ in range(args.runs):
                t = time.perf_counter()
                fn(img)
                ts.append(time.perf_counter() - t)
            times[name] = statistics.median(ts)
        print(f"{size:>11s} {w * h / 1e6:6.2f} {times['image']:16.3f} {times['region']:14.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
