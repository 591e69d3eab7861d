"""The CUDA inference paths, checked on the accelerator machine in about a minute.

``python3 tools/accelerator/infer_check.py --out $OUT [--budget 120]`` (``train.sh`` runs it after
training). For a 1280x720 image:

1. ``deblur image`` through the CLI on CUDA in fp32, fp16 and bf16, and with ``--backend onnx``
   where onnxruntime has its CUDA provider: each output against the CPU output of the same
   command (PSNR and largest difference in 8-bit levels);
2. forward latency of the default model and of the paper-width ``saphn`` (random weights: the
   time does not depend on them) with torch on CUDA in fp32, fp16 and bf16 autocast: median of
   5 timed runs after 2 warm-ups, the device synchronised around each; the default model's
   CPU time beside them (one run after one warm-up).

The results are merged into ``$OUT/summary.json`` under ``"inference"`` (the return path takes
at most 8 files, so this adds none), or written to ``$OUT/inference.json`` if there is no summary.
Every step is skipped, with the reason recorded, once the time budget is spent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from deblur_cli.training.window import merge_into_summary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "licenseplate_motion.jpg"


def _image_720p(path: Path) -> None:
    """The README's example photo, resized to fill 1280x720 (a real motion-blurred input)."""
    img = cv2.imread(str(EXAMPLE), cv2.IMREAD_COLOR)
    cv2.imwrite(str(path), cv2.resize(img, (1280, 720), interpolation=cv2.INTER_CUBIC))


def _compare(a_path: Path, b_path: Path) -> dict:
    a = cv2.imread(str(a_path), cv2.IMREAD_COLOR).astype(np.float64)
    b = cv2.imread(str(b_path), cv2.IMREAD_COLOR).astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return {
        "psnr_vs_cpu": round(psnr, 2) if math.isfinite(psnr) else "identical",
        "max_diff_levels": int(np.abs(a - b).max()),
    }


def cli_paths(src: Path, tmp: Path, deadline: float, device: str = "cuda") -> dict:
    """``deblur image`` on CPU and on ``device`` in each precision and backend; outputs compared with the CPU's."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    runs: dict[str, list[str] | None] = {
        "cpu_fp32": ["--device", "cpu"],
        f"{device}_fp32": ["--device", device],
        f"{device}_fp16": ["--device", device, "--fp16"] if device == "cuda" else None,
        f"{device}_bf16": ["--device", device, "--bf16"],
    }
    try:
        import onnxruntime as ort

        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        runs[f"onnx_{device}_fp32"] = ["--device", device, "--backend", "onnx"] if has_cuda or device == "cpu" else None
    except ImportError:
        runs[f"onnx_{device}_fp32"] = None
    results: dict = {}
    for name, extra in runs.items():
        if extra is None:
            results[name] = {"skipped": "not available here (fp16 needs CUDA; ONNX needs onnxruntime's CUDA provider)"}
            continue
        left = deadline - time.time()
        if left < 10:
            results[name] = {"skipped": "time budget spent"}
            continue
        out = tmp / f"{name}.png"
        cmd = [
            sys.executable,
            "-m",
            "deblur_cli",
            "image",
            str(src),
            "-o",
            str(out),
            "--gate",
            "off",
            "--overwrite",
            *extra,
        ]
        t = time.time()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=left, check=False)
        except subprocess.TimeoutExpired:
            results[name] = {"skipped": f"timed out after {left:.0f} s"}
            continue
        entry: dict = {"exit": proc.returncode, "seconds_with_startup": round(time.time() - t, 2)}
        if proc.returncode != 0:
            entry["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        elif name != "cpu_fp32" and (tmp / "cpu_fp32.png").is_file():
            entry.update(_compare(tmp / "cpu_fp32.png", out))
        results[name] = entry
        print(f"deblur image {name}: {entry}", flush=True)
    return results


def _time(fn, device: torch.device, repeat: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def latency(deadline: float, device: str = "cuda") -> dict:
    """Median forward time at 1280x720 of the default model and of saphn, per device and precision."""
    from deblur_cli.hub.loading import load_model
    from deblur_cli.models import create_model, randomize_zero_layers

    default, info = load_model()
    models = {info["name"]: default, "saphn (random weights)": randomize_zero_layers(create_model("saphn"), seed=0)}
    x = torch.rand(1, 3, 720, 1280, generator=torch.Generator().manual_seed(0))
    results: dict = {}
    for name, model in models.items():
        results[name] = {}
        for dev_name, mode in (("cpu", "fp32"), (device, "fp32"), (device, "fp16"), (device, "bf16")):
            key = f"{dev_name}_{mode}"
            # saphn on the CPU takes many seconds a 720p image: its CPU time is not part of the check.
            slow = dev_name == "cpu" and name != info["name"]
            if time.time() > deadline or (mode == "fp16" and dev_name != "cuda") or key in results[name] or slow:
                results[name][key] = results[name].get(key) or {"skipped": "time budget spent or not on this device"}
                continue
            dev = torch.device(dev_name)
            net = model.to(dev).eval()
            inp = x.to(dev)
            # As the torch backend runs --fp16 and --bf16: autocast over float32 weights (a
            # wholly half model is not a path `deblur image` has).
            low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
            ctx = torch.autocast(dev.type, dtype=low) if low is not None else torch.no_grad()
            # A CPU run of saphn at 720p takes seconds: one warm-up and one timed run there.
            cpu = dev_name == "cpu"
            with torch.no_grad(), ctx:
                seconds = _time(lambda net=net, inp=inp: net(inp), dev, repeat=1 if cpu else 5, warmup=1 if cpu else 2)
                y = net(inp).float().cpu()
            results[name][key] = {"seconds": round(seconds, 4), "finite": bool(torch.isfinite(y).all())}
            print(f"latency {name} {key}: {results[name][key]}", flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds for all checks")
    ap.add_argument("--device", default="cuda", help="cpu: rehearse the same steps without a GPU")
    args = ap.parse_args()
    deadline = time.time() + args.budget
    report: dict = {"device": args.device, "cuda": torch.cuda.is_available(), "torch": torch.__version__}
    if args.device == "cuda" and not torch.cuda.is_available():
        report["skipped"] = "no CUDA device"
    else:
        report["gpu"] = torch.cuda.get_device_name(0) if args.device == "cuda" else None
        if args.device == "cuda":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "licenseplate_720p.png"
            _image_720p(src)
            report["cli"] = cli_paths(src, Path(tmp), deadline - 45, args.device)  # ~45 s kept for latency
        report["latency_720p"] = latency(deadline, args.device)
    merge_into_summary(args.out, "inference", report)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
