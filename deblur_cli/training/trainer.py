"""Training: the loop, its losses, schedules, validation and resumable checkpoints.

Defaults follow the paper (Sec. 4.1): Adam at 1e-4 halved every 2e5 iterations, batch 6 of
256x256 crops, loss on the final output only (MSE, as DMPHN). Every choice is a field of
:class:`TrainConfig`, so the CPU recipe we ship (``weights/MODEL_CARD.md``) is the same code
with other values: L1 + 0.1 * FFT-L1, per-level supervision, cosine decay, 128 crops.

Checkpoints hold everything needed to resume bit-for-bit where practical (model, Adam moments,
step, schedule, RNG states, history) in ``RUN_DIR/checkpoint.safetensors`` +
``RUN_DIR/state.json``; no pickle anywhere.

How a call uses its device (bf16 autocast and TF32 on CUDA, channels-last, ``torch.compile``,
pairs made on the GPU or by CPU worker threads) is :mod:`deblur_cli.training.accel`; where the
batches come from is :mod:`deblur_cli.training.pairs`. Neither is saved with the run, so a run
moves between a CPU and a GPU; one carried between machines without Adam's state resumes with
a learning-rate warm-up (:mod:`deblur_cli.training.carry`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from deblur_cli.data.datasets import Pair, find_pairs, read_rgb
from deblur_cli.data.synthetic import BlurSettings
from deblur_cli.eval.pairs import psnr
from deblur_cli.models import SAPHN, create_model
from deblur_cli.training.accel import Accel, CompileFallback, StepMeter, autocast, compiled, setup_device
from deblur_cli.training.pairs import GoProPairs, Prefetcher, data_state, make_source, set_data_state  # noqa: F401


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in ``state.json``)."""

    model: str = "saphn"
    crop: int = 256
    batch: int = 6
    steps: int = 600_000
    lr: float = 1e-4
    schedule: str = "step"  # "step": halve every lr_step; "cosine": warm-up then cosine to lr_min
    lr_step: int = 200_000
    lr_min: float = 1e-6
    warmup: int = 0
    loss: str = "mse"  # one of LOSSES
    fft_weight: float = 0.1
    level_weights: tuple[float, float, float] = (0.0, 0.0, 1.0)  # loss weights of y3, y2, y1
    grad_clip: float = 0.0
    val_every: int = 500
    val_crop: int = 256
    keep_val_weights: bool = False  # also export weights at every validation, to snapshots/step-NNNNNN
    checkpoint_minutes: float = 10.0
    seed: int = 0
    threads: int = 0  # torch threads; 0 keeps torch's default
    blur: dict = field(default_factory=dict)  # BlurSettings overrides (synthetic data only)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "level_weights" in d:
            d["level_weights"] = tuple(d["level_weights"])
        return cls(**d)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate at ``step`` (0-based) under ``cfg``'s schedule."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "step":
        return cfg.lr * 0.5 ** (step // cfg.lr_step)
    if cfg.schedule == "cosine":
        t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def fft_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the 2-D spectra (real and imaginary parts)."""
    a = torch.fft.rfft2(pred.float(), norm="ortho")
    b = torch.fft.rfft2(target.float(), norm="ortho")
    return (torch.view_as_real(a) - torch.view_as_real(b)).abs().mean()


#: The training losses: the paper's MSE (as DMPHN); L1 plus 0.1 x the L1 of the spectra; and the
#: PSNR loss (as NAFNet trains), the mean over the batch of each sample's -PSNR in dB.
LOSSES = ("mse", "l1+fft", "psnr")

#: The mean squared error of 8-bit quantisation, (1/255)^2 / 12, added to every sample's error in
#: the PSNR loss: differences below it are not measurable on 8-bit images (it caps a sample at
#: about 59 dB), and it keeps the logarithm finite where input and target are the same picture.
PSNR_LOSS_FLOOR = (1.0 / 255.0) ** 2 / 12.0


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``10 log10(MSE_i + floor)``: each sample's negative PSNR (peak 1)
    in dB, so every image weighs the same in decibels, the unit the evaluation averages.

    Why: a mean L1 or MSE over the batch lets the largest errors (the most blurred crops) set
    the gradient, while the evaluation scores each image's PSNR gain; the gradient of the log
    weights each sample by ``1 / MSE_i``, so a crop that is already nearly right counts as much
    per decibel as a heavily blurred one.

    Args:
        pred, target: ``(B, 3, H, W)``.

    Returns:
        a scalar (lower is better; ``-PSNR`` averaged over the batch).
    """
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(mse + PSNR_LOSS_FLOOR).mean()


def restoration_loss(cfg: TrainConfig, levels: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Weighted sum over the level estimates ``[y3, y2, y1]`` of the configured loss."""
    total = target.new_zeros(())
    for w, pred in zip(cfg.level_weights, levels):
        if w == 0:
            continue
        if cfg.loss == "mse":
            term = F.mse_loss(pred, target)
        elif cfg.loss == "l1+fft":
            term = F.l1_loss(pred, target) + cfg.fft_weight * fft_l1(pred, target)
        elif cfg.loss == "psnr":
            term = psnr_loss(pred, target)
        else:
            raise ValueError(f"unknown loss {cfg.loss!r}")
        total = total + w * term
    return total


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into named tensors (safetensors) and JSON metadata."""
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = []
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().to("cpu").contiguous()
                meta["state"][str(idx)].append(k)
    return tensors, meta


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state = {int(i): {k: tensors[f"optim.{i}.{k}"] for k in keys} for i, keys in meta["state"].items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # The moments are saved contiguous; a channels-last parameter needs them in its own layout:
    # fused Adam reads parameter and moments as flat memory (on CUDA it refuses differing
    # strides, on the CPU it mixes up the elements).
    for p, st in opt.state.items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


@dataclass
class RunState:
    """Mutable progress of a run, saved as ``state.json``."""

    step: int = 0
    seconds: float = 0.0
    best_psnr: float = -1.0
    history: list = field(default_factory=list)


def save_checkpoint(run_dir: Path, model: SAPHN, opt: torch.optim.Optimizer, cfg: TrainConfig, st: RunState, data_rng: dict) -> None:
    """Write ``checkpoint.safetensors`` + ``state.json`` atomically (temp files then rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    opt_t, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = run_dir / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(run_dir / "checkpoint.safetensors")
    state = {
        "config": asdict(cfg),
        "model_config": model.config.to_dict(),
        "run": asdict(st),
        "optimizer": opt_meta,
        "data_rng": data_rng,
    }
    tmp = run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(run_dir / "state.json")


def export_weights(run_dir: Path, model: SAPHN, cfg: TrainConfig, st: RunState, name: str = "final") -> Path:
    """Write inference weights ``RUN_DIR/{name}.safetensors`` (the registry's format) and an entry."""
    from deblur_cli.hub.loading import save_weights

    path = run_dir / f"{name}.safetensors"
    sha = save_weights(model, path, cfg.model, {"train_steps": str(st.step)})
    entry = {
        "arch": cfg.model,
        "file": path.name,
        "sha256": sha,
        "size": path.stat().st_size,
        "train_steps": st.step,
        "train_seconds": round(st.seconds),
        "best_val_psnr": st.best_psnr,
    }
    (run_dir / f"{name}.entry.json").write_text(json.dumps(entry, indent=1))
    return path


def validate(model: SAPHN, pairs: list[Pair], crop: int) -> tuple[float, float]:
    """Mean input and output PSNR over centre crops of ``pairs`` (eval mode, no grad, float32,
    on the model's device)."""
    model.eval()
    dev = next(model.parameters()).device
    pin, pout = [], []
    with torch.no_grad():
        for pair in pairs:
            b, s = read_rgb(pair.blur), read_rgb(pair.sharp)
            h, w = b.shape[:2]
            c = min(crop, h, w)
            y, x = (h - c) // 2, (w - c) // 2
            b, s = b[y : y + c, x : x + c], s[y : y + c, x : x + c]
            x_t = torch.from_numpy(np.ascontiguousarray(b.transpose(2, 0, 1)))[None].to(dev)
            out = model(x_t)[0].float().cpu().numpy().transpose(1, 2, 0)
            pin.append(psnr(b, s))
            pout.append(psnr(out, s))
    model.train()
    return float(np.mean(pin)), float(np.mean(pout))


def train(
    run_dir: Path,
    cfg: TrainConfig,
    synthetic: Path | None = None,
    data: Path | None = None,
    val: Path | None = None,
    resume: bool = False,
    init_weights: Path | None = None,
    max_minutes: float | None = None,
    steps: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    on_step: Callable[[int, float, float], None] | None = None,
    stop_at: int | None = None,
    accel: Accel | None = None,
    meter: StepMeter | None = None,
    resume_warmup: int = 200,
) -> RunState:
    """Train until ``cfg.steps`` (or ``max_minutes``), checkpointing every ``checkpoint_minutes``.

    Args:
        run_dir: output folder (checkpoint, state, final weights, log).
        cfg: the run's settings; on ``resume`` the saved config is used instead.
        synthetic: folder of sharp photos to make pairs from (``--synthetic``).
        data: GoPro-layout folder of real pairs (``--data``).
        val: folder of validation pairs (``blur/`` + ``sharp/``); none: no validation.
        resume: continue from ``run_dir``'s checkpoint.
        init_weights: start from these inference weights (fine-tuning).
        max_minutes: stop (with a checkpoint) after this much wall time in this call.
        steps: on ``resume``, replaces the saved total number of steps.
        device: torch device string.
        log: where progress lines go.
        on_step: callback ``(step, loss, lr)`` after every step (progress bars).
        stop_at: stop (with a checkpoint, resumable) once this step is reached.
        accel: device settings (precision, layout, compilation, where pairs are made); they
            do not change what is learnt and are not saved with the run.
        meter: receives step and data-wait times (a fresh one by default); the share of step
            time spent waiting for data is logged every 50 steps.
        resume_warmup: when a resumed checkpoint holds no optimizer state (weights carried
            without Adam's moments), the learning rate ramps up linearly over this many steps,
            so that the first steps of a fresh Adam (about ``lr`` per weight whatever the
            gradient) cannot undo what was learnt.

    Returns:
        the final :class:`RunState`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.json"
    st = RunState()
    saved = None
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume in {run_dir} (no state.json)")
        saved = json.loads(state_path.read_text())
        cfg = TrainConfig.from_dict(saved["config"])
        if steps is not None:  # a resumed run may be extended (or shortened)
            cfg.steps = steps
        st = RunState(**saved["run"])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dev = torch.device(device)
    setup_device(dev)
    use = (accel or Accel()).resolved(dev)
    log(f"device {dev}: autocast {use['amp']}, compile {'on' if use['compile'] else 'off'}, channels-last "
        f"{'on' if use['channels_last'] else 'off'}, synthesis {use['synthesis']}, data workers {use['workers']}")
    model = create_model(cfg.model).to(dev)
    if init_weights is not None and not resume:
        from deblur_cli.hub.loading import load_model

        loaded, _ = load_model(weights=str(init_weights))
        model.load_state_dict(loaded.state_dict())
    # On the CPU, channels-last (NHWC) activations and weights: measured 0.60 vs 0.65 s per
    # saphn-s step (batch 8, 128x128, 2 threads). Checkpoints and exports are stored contiguous.
    channels_last = bool(use["channels_last"])
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # On CUDA, Adam's fused kernel (one launch for all parameters; the same state as the default).
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=dev.type == "cuda" or None)
    settings = BlurSettings(**_blur_overrides(cfg.blur))
    source = make_source(synthetic, data, cfg.crop, settings, cfg.seed, dev, str(use["synthesis"]))
    warm_from, data_rng = None, None
    if saved is not None:
        tensors = load_file(str(run_dir / "checkpoint.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if any(k.startswith("optim.") for k in tensors):
            _load_optimizer(opt, tensors, saved["optimizer"])
        else:
            warm_from = st.step
            log(f"no optimizer state saved: Adam starts afresh, learning rate warmed up over {resume_warmup} steps")
        torch.set_rng_state(tensors["rng.torch"])
        data_rng = saved.get("data_rng")
        log(f"resumed at step {st.step} ({st.seconds / 3600:.2f} h trained)")
    prefetch = None
    if use["workers"] and use["synthesis"] != "torch":
        prefetch = Prefetcher(source, cfg.batch, int(use["workers"]), cfg.seed, state=data_rng)  # type: ignore[arg-type]
    elif data_rng is not None:
        try:
            set_data_state(source, data_rng)
        except (KeyError, TypeError, ValueError, RuntimeError):
            log("the saved data stream is of another kind (pairs made elsewhere): it restarts from the seed")
    loader = prefetch or source
    current_data_state = prefetch.state if prefetch is not None else (lambda: data_state(source))
    val_pairs = find_pairs(Path(val)) if val is not None else []
    meter = meter or StepMeter(dev, skip=5 if dev.type == "cuda" else 1)
    step_fn = CompileFallback(model, compiled(model, log), log) if use["compile"] else model
    stop = _StopRequest()
    model.train()
    t_start = time.time()
    last_ckpt = time.time()
    window: list = []
    last_loss = math.nan
    while st.step < cfg.steps and (stop_at is None or st.step < stop_at):
        t0 = time.time()
        meter.start()
        lr = learning_rate(cfg, st.step)
        if warm_from is not None and st.step - warm_from < resume_warmup:
            lr *= (st.step - warm_from + 1) / resume_warmup
        for g in opt.param_groups:
            g["lr"] = lr
        with meter.data():
            blur_t, sharp_t = _on_device(loader.batch(cfg.batch), dev, channels_last)
        with autocast(dev, str(use["amp"])):
            levels: list[torch.Tensor] = []
            step_fn(blur_t, levels=levels)
        loss = restoration_loss(cfg, [lv.float() for lv in levels], sharp_t)  # float32 loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        st.step += 1
        meter.end(cfg.batch)
        st.seconds += time.time() - t0
        # On CUDA the loss is read every 50 steps only: reading it waits for the GPU, and the
        # host should be preparing the next step meanwhile.
        window.append(loss.detach() if dev.type == "cuda" else loss.item())
        if on_step is not None:
            on_step(st.step, float(window[-1]) if dev.type != "cuda" else last_loss, lr)
        if st.step % 50 == 0:
            last_loss = float(np.mean([float(v) for v in window]))
            log(f"step {st.step} loss {last_loss:.5f} lr {lr:.2e} {st.seconds / st.step:.2f} s/step, "
                f"{meter.samples_per_s:.1f} samples/s, data wait {meter.data_share:.1%}")  # fmt: skip
            window.clear()
        if val_pairs and (st.step % cfg.val_every == 0 or st.step == cfg.steps):
            pin, pout = validate(model, val_pairs, cfg.val_crop)
            st.history.append({"step": st.step, "val_in": round(pin, 3), "val_out": round(pout, 3)})
            log(f"validation at step {st.step}: input {pin:.2f} dB -> output {pout:.2f} dB ({pout - pin:+.2f})")
            if pout > st.best_psnr:
                st.best_psnr = pout
                export_weights(run_dir, model, cfg, st, "best")
            if cfg.keep_val_weights:
                # A selection rule may weigh more than the mean PSNR ``best`` is chosen by.
                (run_dir / "snapshots").mkdir(exist_ok=True)
                export_weights(run_dir, model, cfg, st, f"snapshots/step-{st.step:06d}")
        out_of_time = max_minutes is not None and time.time() - t_start > max_minutes * 60
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60 or st.step == cfg.steps or out_of_time:
            save_checkpoint(run_dir, model, opt, cfg, st, current_data_state())
            last_ckpt = time.time()
        if out_of_time or stop.requested or st.step == stop_at:
            why = f"after {max_minutes} minutes" if out_of_time else f"on {stop.requested}"
            why = why if out_of_time or stop.requested else "as planned (stop_at)"
            log(f"stopping {why} at step {st.step}; resume with --resume")
            break
    stop.restore()
    if prefetch is not None:
        prefetch.close()
    save_checkpoint(run_dir, model, opt, cfg, st, current_data_state())
    export_weights(run_dir, model, cfg, st, "final")
    return st


def _on_device(pair: tuple, dev: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(blurred, sharp)`` batch (numpy or tensors) as float32 tensors on ``dev``."""
    blur, sharp = (torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in pair)
    blur, sharp = blur.to(dev, non_blocking=True), sharp.to(dev, non_blocking=True)
    if channels_last:
        blur = blur.contiguous(memory_format=torch.channels_last)
    return blur, sharp


class _StopRequest:
    """Turns SIGINT (Ctrl-C) and SIGTERM into "finish this step, checkpoint, stop" while
    training runs in the main thread; the previous handlers are restored at the end."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested: str | None = None
        self._old: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        import signal

        if self.requested is not None:  # a second signal: stop at once
            self.restore()
            signal.raise_signal(signum)
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old.clear()


def _blur_overrides(d: dict) -> dict:
    out = dict(d)
    for k in ("length", "noise_sigma", "shot_noise", "jpeg_quality", "defocus_radius"):
        if k in out:
            out[k] = tuple(out[k])
    return out
