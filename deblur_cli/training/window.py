"""One training window on a lent accelerator: train for N minutes, validate, pack the result.

``python -m deblur_cli.training.window --config configs/train/gpu-saphn-s.toml --out $OUT``
(what ``tools/accelerator/train.sh`` runs) does, inside one call of at most 10 minutes:

1. starts the recipe's run, or continues the one carried in ``--resume-from`` (a folder that an
   earlier window returned, see :mod:`deblur_cli.training.carry`);
2. trains for ``--minutes`` on the device (bf16 autocast and TF32 on CUDA, pairs made on the
   GPU; :mod:`deblur_cli.training.accel`), logging throughput and the data-wait share;
3. validates the final weights on the validation pairs (float32, full images);
4. writes into ``--out`` the weights as shards of at most 15 MiB, ``state.json``, Adam's state
   where it fits, and ``summary.json``: steps, samples/s, achieved TFLOP/s, GPU memory,
   data-wait share, validation PSNR in and out.

On a CPU (``--device cpu``) the same code is the rehearsal that CI runs with a tiny model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from deblur_cli.data.datasets import find_pairs
from deblur_cli.hub.loading import load_model
from deblur_cli.training.accel import (
    AMP,
    SWITCH,
    SYNTHESIS,
    Accel,
    StepMeter,
    UtilisationSampler,
    gpu_memory,
    train_flops_per_sample,
)
from deblur_cli.training.carry import MAX_FILES, pack_run, unpack_run
from deblur_cli.training.config import load_recipe, resolve_init
from deblur_cli.training.trainer import RunState, TrainConfig, train, validate

#: File names a window writes besides the packed run.
SUMMARY = "summary.json"
LOG = "train.log"


def merge_into_summary(out: Path, key: str, report: dict) -> Path:
    """Add ``report`` to the window's ``out/summary.json`` under ``key``, or write it to
    ``out/<key>.json`` where no window wrote a summary (the return path takes few files, so a
    report joins the summary rather than adding one). Returns the file written."""
    out.mkdir(parents=True, exist_ok=True)
    summary = out / SUMMARY
    if summary.is_file():
        doc = json.loads(summary.read_text())
        doc[key] = report
        summary.write_text(json.dumps(doc, indent=1) + "\n")
        return summary
    alone = out / f"{key}.json"
    alone.write_text(json.dumps(report, indent=1) + "\n")
    return alone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m deblur_cli.training.window", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="recipe (configs/train/*.toml)")
    ap.add_argument("--out", type=Path, required=True, help="where the result goes ($OUT on the device)")
    ap.add_argument("--resume-from", type=Path, help="a folder an earlier window returned: continue that run")
    ap.add_argument("--photos", type=Path, help="carried photo folder: uses its train/ and val-pairs/")
    ap.add_argument("--minutes", type=float, default=6.0, help="training time (default 6: fits a 10-minute call)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--work", type=Path, default=Path("/tmp/deblur-window"), help="scratch run folder")
    ap.add_argument("--model", help="replace the recipe's architecture (rehearsals: saphn-tiny)")
    ap.add_argument("--batch", type=int, help="replace the recipe's batch size")
    ap.add_argument("--crop", type=int, help="replace the recipe's crop size")
    ap.add_argument("--steps", type=int, help="replace the run's total steps (the schedule's length)")
    ap.add_argument("--val-limit", type=int, default=0, help="validate on the first N pairs only (0: all)")
    ap.add_argument("--val-crop", type=int, help="validate on centre crops of this size (default: the recipe's)")
    ap.add_argument("--reserve-files", type=int, default=1, help="returned files left for other scripts (1: summary)")
    ap.add_argument("--amp", choices=AMP, default="auto")
    ap.add_argument("--compile", choices=SWITCH, default="auto")
    ap.add_argument("--channels-last", choices=SWITCH, default="auto")
    ap.add_argument("--synthesis", choices=SYNTHESIS, default="auto")
    ap.add_argument("--workers", type=int, default=0, help="threads preparing numpy batches")
    ap.add_argument("--carry-bf16", action="store_true", help="return the weights in bfloat16 (half the bytes)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return ap.parse_args(argv)


class _Log:
    """Prints and keeps every line (the log travels back in ``train.log`` where room is left)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.t0 = time.time()

    def __call__(self, line: str) -> None:
        line = f"[{time.time() - self.t0:6.1f}s] {line}"
        self.lines.append(line)
        print(line, flush=True)


def run_window(args: argparse.Namespace) -> dict:
    """Do one window (see the module docstring); returns the summary written to ``--out``."""
    log = _Log()
    t_start = time.time()
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.config)
    synthetic, val = recipe.synthetic, recipe.val
    if args.photos is not None:
        synthetic, val = args.photos / "train", args.photos / "val-pairs"
    run_dir = args.work / "run"
    resume = args.resume_from is not None
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = dataclasses.replace(recipe.config)
    overrides = {k: v for k, v in (("model", args.model), ("batch", args.batch), ("crop", args.crop)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides, val_every=10**9, checkpoint_minutes=10**6)
    if args.steps is not None:
        cfg.steps = args.steps
    init = None
    if resume:
        carried = unpack_run(args.resume_from, run_dir)
        log(f"continuing the carried run at step {carried['step']} (optimizer state: {carried['optimizer']})")
        # The schedule and recipe stay the run's own; only the per-call settings follow this call.
        state = json.loads((run_dir / "state.json").read_text())
        run_cfg = dataclasses.replace(TrainConfig.from_dict(state["config"]), val_every=10**9, checkpoint_minutes=10**6)
        state["config"] = dataclasses.asdict(run_cfg)
        (run_dir / "state.json").write_text(json.dumps(state, indent=1))
    else:
        run_cfg = cfg
        init = (
            resolve_init(recipe) if args.model is None else None
        )  # another architecture: the recipe's weights do not fit
    accel = Accel(amp=args.amp, compile=args.compile, channels_last=args.channels_last,
                  synthesis=args.synthesis, workers=args.workers)  # fmt: skip
    use = accel.resolved(dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    log(f"device {dev} ({name}), torch {torch.__version__}, settings {use}")
    flops = _flops(run_cfg.model, run_cfg.crop, dev, str(use["amp"]))
    log(f"{run_cfg.model}: {flops / 1e9:.1f} GFLOP per {run_cfg.crop} px training sample (convolutions and products)")
    meter = StepMeter(dev, skip=5 if dev.type == "cuda" else 1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sampler = UtilisationSampler(dev)
    while True:
        try:
            with sampler:
                st: RunState = train(run_dir, cfg, synthetic=synthetic, data=recipe.data, val=None, resume=resume,
                                     init_weights=init, max_minutes=args.minutes, steps=args.steps if resume else None,
                                     device=str(dev), log=log, accel=accel, meter=meter)  # fmt: skip
            break
        except torch.OutOfMemoryError:
            # A fresh run whose batch does not fit: half the batch, the learning rate scaled by
            # sqrt(1/2) as the recipes scale it, rather than a lost window.
            if resume or cfg.batch < 2:
                raise
            cfg = dataclasses.replace(cfg, batch=cfg.batch // 2, lr=cfg.lr / 2**0.5)
            run_cfg = cfg
            log(f"out of GPU memory: starting again at batch {cfg.batch}, learning rate {cfg.lr:.2e}")
            torch.cuda.empty_cache()
            shutil.rmtree(run_dir, ignore_errors=True)
            meter = StepMeter(dev, skip=5 if dev.type == "cuda" else 1)
            sampler = UtilisationSampler(dev)
    memory = gpu_memory(dev)
    val_result = _validate(run_dir, val, dev, args.val_limit, args.val_crop or run_cfg.val_crop, log)
    if val_result:  # the window's validation joins the run's history (it travels in state.json)
        state = json.loads((run_dir / "state.json").read_text())
        state["run"]["history"].append({"step": st.step, "val_in": val_result["psnr_in"],
                                        "val_out": val_result["psnr_out"], "pairs": val_result["pairs"]})  # fmt: skip
        (run_dir / "state.json").write_text(json.dumps(state, indent=1))
    summary = {
        "config": str(args.config),
        "model": run_cfg.model,
        "device": memory.get("name") or str(dev),
        "torch": torch.__version__,
        "settings": use,
        "batch": run_cfg.batch,
        "crop": run_cfg.crop,
        "steps_total": st.step,
        "steps_this_call": meter.steps,
        "samples_this_call": meter.steps * run_cfg.batch,
        "train_seconds_this_call": round(meter.seconds, 1),
        "samples_per_s": round(meter.samples_per_s, 2),
        "gflop_per_sample": round(flops / 1e9, 3),
        "achieved_tflops": round(flops * meter.samples_per_s / 1e12, 3),
        "data_wait_share": round(meter.data_share, 4),
        "gpu_memory": memory,
        "gpu_utilisation_pct": sampler.mean,
        "validation": val_result,
    }
    bf16 = torch.bfloat16 if args.carry_bf16 else None
    packed = pack_run(run_dir, args.out, reserve_files=max(1, args.reserve_files), weights_dtype=bf16)
    summary["returned"] = packed
    summary["wall_seconds"] = round(time.time() - t_start, 1)
    (args.out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    log(f"summary: {json.dumps({k: summary[k] for k in ('steps_this_call', 'samples_per_s', 'achieved_tflops', 'data_wait_share')})}; "
        f"validation {val_result}")  # fmt: skip
    if len(packed["files"]) + 1 + max(1, args.reserve_files) <= MAX_FILES:  # the log only where a file is left
        (args.out / LOG).write_text("\n".join(log.lines) + "\n")
    return summary


def _flops(model_name: str, crop: int, dev: torch.device, amp: str) -> float:
    from deblur_cli.models import create_model

    return train_flops_per_sample(create_model(model_name).to(dev), crop, dev, amp)


def _validate(run_dir: Path, val: Path | None, dev: torch.device, limit: int, crop: int, log: _Log) -> dict:
    """Mean PSNR in and out over the validation pairs (float32 on ``dev``), of the final weights."""
    if val is None or not Path(val).is_dir():
        log("no validation pairs")
        return {}
    pairs = find_pairs(Path(val))
    if limit:
        pairs = pairs[:limit]
    model, _ = load_model(weights=str(run_dir / "final.safetensors"), device=dev)
    t = time.time()
    pin, pout = validate(model, pairs, crop)
    log(
        f"validation on {len(pairs)} pairs: input {pin:.3f} dB -> output {pout:.3f} dB ({pout - pin:+.3f}), {time.time() - t:.1f} s"
    )
    return {"pairs": len(pairs), "psnr_in": round(pin, 4), "psnr_out": round(pout, 4), "gain_db": round(pout - pin, 4)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_window(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
