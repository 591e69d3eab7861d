"""What Ray costs: ``deblur folder`` run locally against the same job on Ray with 1 and 2 workers.

Makes two folders of synthetic photographs (``--images`` gives their sizes, 8 and 32 by
default), then times every configuration on both, in one process on this machine:

* **local**: what ``deblur folder`` runs: a :class:`~deblur_cli.inference.Deblurrer` (model
  load included) and its ``deblur_files`` over the folder, with ``--threads`` torch threads;
* **ray xN**: :func:`deblur_cli.distributed.deblur_dataset` with N workers of ``--threads``
  threads each, on a local Ray cluster started once beforehand (its start is printed apart).

From the two sizes: the **per-image** time (the slope, ``(T(big) - T(small)) / (big - small)``)
and the **fixed** cost (``T(small) - small x per-image``: model load, and for Ray the actors'
start). "local" against "ray x1" is the same computation on the same threads, so their
difference per image is what Ray adds to every image. Configurations run ``--repeat`` times,
interleaved, and the fastest run of each is used (the machine may be shared). The blur gate is
off, so the network runs on every image.

    python -m benchmarks.ray_overhead                          # 8 and 32 images of 320x240, default model
    python -m benchmarks.ray_overhead --images 16,64 --workers 1,2,4 --threads 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def make_images(folder: Path, count: int, width: int, height: int) -> None:
    """``count`` smooth random photographs with a horizontal motion blur, as PNG."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    kernel = np.full((1, 9), 1.0 / 9, np.float32)
    for i in range(count):
        pixels = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2.0)
        cv2.imwrite(str(folder / f"img{i:04d}.png"), cv2.filter2D(pixels, -1, kernel))


def run_local(src: Path, dst: Path, model: str | None) -> tuple[float, int]:
    """``(wall s, images done)`` of the local command's work, model load included."""
    from deblur_cli.inference import Deblurrer, plan_folder

    start = time.perf_counter()
    done = sum(r.status == "done" for r in Deblurrer(model).deblur_files(plan_folder(src, dst)))
    return time.perf_counter() - start, done


def run_ray(src: Path, dst: Path, model: str | None, workers: int, threads: int) -> tuple[float, int]:
    """The same through :func:`deblur_dataset`: ``workers`` workers of ``threads`` threads."""
    from deblur_cli.distributed import deblur_dataset

    start = time.perf_counter()
    report = deblur_dataset(src, dst, model=model, workers=workers, threads=threads)
    return time.perf_counter() - start, sum(r.status == "done" for r in report.results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="8,32", help="the two folder sizes, SMALL,BIG")
    parser.add_argument("--size", default="320x240", help="WxH of the synthetic images")
    parser.add_argument("--model", default=None, help="model name (default: the bundled default)")
    parser.add_argument("--workers", default="1,2", help="Ray pool sizes to time, comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repeats; the fastest of each is used")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the local run and of each Ray worker (1: on a busy machine, "
                        "several threads per process lose far more to contention than they gain)")  # fmt: skip
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    small, big = (int(v) for v in args.images.split(","))
    pools = [int(v) for v in args.workers.split(",")]

    import ray
    import torch

    torch.set_num_threads(args.threads)
    print(f"{small} and {big} images of {width}x{height}, model {args.model or 'default'}, gate off, "
          f"{args.threads} thread(s) per process; {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}")  # fmt: skip
    walls: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (small, big):
            make_images(Path(tmp) / f"in{n}", n, width, height)
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        print(f"ray.init (local cluster, {ray.cluster_resources().get('CPU', 0):g} CPUs): {time.perf_counter() - t0:.1f} s")
        try:
            # Interleaved, so that a busy spell of the machine hits every configuration alike.
            for rep in range(args.repeat):
                for n in (small, big):
                    src, out = Path(tmp) / f"in{n}", Path(tmp) / f"rep{rep}-{n}"
                    for w in [0, *pools]:  # 0: local
                        name = f"ray x{w}" if w else "local"
                        if w:
                            wall, done = run_ray(src, out / f"ray{w}", args.model, w, args.threads)
                        else:
                            wall, done = run_local(src, out / "local", args.model)
                        assert done == n, f"{name}: {done} of {n} images done"
                        walls.setdefault((name, n), []).append(wall)
        finally:
            ray.shutdown()
    print("walls (s): " + "; ".join(f"{name} x{n} img: " + ", ".join(f"{w:.1f}" for w in ws)
                                    for (name, n), ws in walls.items()))  # fmt: skip
    names = ["local"] + [f"ray x{w}" for w in pools]
    slope = {k: (min(walls[(k, big)]) - min(walls[(k, small)])) / (big - small) for k in names}
    print(f"\n| run | {small} images, s | {big} images, s | per image, ms | fixed, s | per image vs local, ms | "
          f"{big} images vs local, per image, ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for k in names:
        t_small, t_big = min(walls[(k, small)]), min(walls[(k, big)])
        fixed = t_small - small * slope[k]
        extra = (slope[k] - slope["local"]) * 1000
        whole = (t_big - min(walls[("local", big)])) / big * 1000
        print(f"| {k} | {t_small:.1f} | {t_big:.1f} | {slope[k] * 1000:.0f} | {fixed:.1f} | {extra:+.0f} | {whole:+.0f} |")


if __name__ == "__main__":
    main()
