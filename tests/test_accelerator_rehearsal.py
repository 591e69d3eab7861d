"""The accelerator window rehearsed on the CPU: ``tools/accelerator/train.sh --device cpu`` end to
end with a tiny model, resuming through the size-limited return path (with and without Adam's
state), the return path's limits, the probe's and inference check's reports, worker threads, the compile
fallback and the travel check."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deblur_cli.data.datasets import make_heldout_set
from deblur_cli.hub.loading import load_model
from deblur_cli.hub.shards import INDEX_NAME, MAX_SHARD_BYTES, shard_files
from deblur_cli.training.accel import Accel, CompileFallback, StepMeter
from deblur_cli.training.carry import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, OPTIMIZER_INDEX, pack_run, unpack_run
from deblur_cli.training.trainer import RunState, TrainConfig, save_checkpoint, train
from deblur_cli.training.window import merge_into_summary

ROOT = Path(__file__).resolve().parents[1]


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 6, w // 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    img[..., 2] = 0.5 + 0.4 * np.sin(xx / 3.0 + yy / 9.0)
    return np.clip(img, 0, 1)


@pytest.fixture
def carried(tmp_path: Path) -> Path:
    """A carried photo folder in miniature: ``train/`` and ``val-pairs/``."""
    root = tmp_path / "photos"
    for split, n, seed in (("train", 3, 0), ("val", 2, 10)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / split / f"p{i}.png"), (_photo(100, 120, seed + i) * 255).astype(np.uint8))
    make_heldout_set(root / "val", root / "val-pairs", max_side=48)
    return root


def _tiny_cfg(**kw) -> TrainConfig:
    base = {
        "model": "saphn-tiny",
        "crop": 32,
        "batch": 2,
        "steps": 6,
        "lr": 1e-3,
        "schedule": "cosine",
        "warmup": 2,
        "loss": "l1+fft",
        "level_weights": (0.25, 0.5, 1.0),
        "val_every": 1000,
        "checkpoint_minutes": 100.0,
    }
    base.update(kw)
    return TrainConfig(**base)


def test_train_sh_on_cpu_end_to_end(carried, tmp_path):
    """The device script as it is, on the CPU with saphn-tiny for about 12 s of training."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    cmd = ["bash", str(ROOT / "tools/accelerator/train.sh"), "--device", "cpu", "--model", "saphn-tiny",
           "--batch", "2", "--crop", "32", "--minutes", "0.2", "--threads", "1", "--synthesis", "torch",
           "--photos", str(carried), "--work", str(tmp_path / "work"), "--no-infer-check"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert {INDEX_NAME, "model-00001-of-00001.safetensors", "state.json", "summary.json", OPTIMIZER_INDEX} <= set(files)
    assert len(files) <= MAX_FILES and all((out / f).stat().st_size <= MAX_FILE_BYTES for f in files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "saphn-tiny" and summary["settings"]["synthesis"] == "torch"
    assert summary["steps_this_call"] >= 2 and summary["steps_total"] == summary["steps_this_call"]
    assert summary["samples_this_call"] == 2 * summary["steps_this_call"]
    assert summary["samples_per_s"] > 0 and summary["gflop_per_sample"] > 0 and summary["achieved_tflops"] >= 0
    assert 0.0 <= summary["data_wait_share"] < 1.0
    val = summary["validation"]
    assert val["pairs"] == 4 and math.isfinite(val["psnr_in"]) and math.isfinite(val["psnr_out"])
    assert summary["returned"]["optimizer"] is True
    # The returned shards load as weights and hold the run's final state.
    _, info = load_model(weights=str(out))
    assert info["arch"] == "saphn-tiny" and info["metadata"]["train_steps"] == str(summary["steps_total"])
    state = json.loads((out / "state.json").read_text())
    assert state["run"]["step"] == summary["steps_total"]
    assert state["run"]["history"][-1]["val_out"] == val["psnr_out"]


def test_train_sh_still_runs_the_inference_check_after_a_failed_window(tmp_path):
    """A window that fails (here: its recipe is missing) leaves the call its inference check,
    and the script exits with the window's failure."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    cmd = ["bash", str(ROOT / "tools/accelerator/train.sh"), "--config", str(tmp_path / "missing.toml"),
           "--device", "cpu", "--work", str(tmp_path / "work")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and "missing.toml" in proc.stderr
    report = json.loads((out / "inference.json").read_text())
    assert report["device"] == "cuda" and ("skipped" in report or "latency_720p" in report)


def test_smoke_sh_gives_the_compile_probe_less_time_than_the_probe_has():
    """``probe.py --compile`` times compilation in a child under ``--compile-limit``; a limit past
    the probe's own ``timeout`` would lose the probe's report with it."""
    text = (ROOT / "tools/accelerator/smoke.sh").read_text()
    m = re.search(r"timeout (\d+) .*probe\.py.*--compile-limit (\d+)", text)
    assert m is not None and int(m[2]) < int(m[1])


def _run(tmp: Path, name: str, steps: int, photos: Path, **kw) -> RunState:
    return train(tmp / name, _tiny_cfg(), synthetic=photos / "train", steps=steps, log=lambda s: None, **kw)


def test_resume_through_the_return_path_is_exact_with_optimizer_state(carried, tmp_path):
    straight = train(tmp_path / "a", _tiny_cfg(), synthetic=carried / "train", log=lambda s: None)
    train(tmp_path / "b", _tiny_cfg(steps=3), synthetic=carried / "train", log=lambda s: None)
    packed = pack_run(tmp_path / "b", tmp_path / "returned")
    assert packed["optimizer"] is True
    assert unpack_run(tmp_path / "returned", tmp_path / "c") == {"step": 3, "optimizer": True}
    resumed = train(tmp_path / "c", _tiny_cfg(), synthetic=carried / "train", resume=True, steps=6, log=lambda s: None)
    assert straight.step == resumed.step == 6
    a, _ = load_model(weights=str(tmp_path / "a" / "final.safetensors"))
    c, _ = load_model(weights=str(tmp_path / "c" / "final.safetensors"))
    for (k, v), w in zip(a.state_dict().items(), c.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)


def test_resume_from_weights_alone_warms_the_learning_rate_up(carried, tmp_path):
    train(tmp_path / "b", _tiny_cfg(steps=3), synthetic=carried / "train", log=lambda s: None)
    pack_run(tmp_path / "b", tmp_path / "returned", weights_dtype=torch.bfloat16)
    for f in (tmp_path / "returned").glob("optimizer*"):
        f.unlink()  # as when Adam's state did not fit the return path
    assert unpack_run(tmp_path / "returned", tmp_path / "c") == {"step": 3, "optimizer": False}
    lrs, lines = [], []
    st = train(tmp_path / "c", _tiny_cfg(), synthetic=carried / "train", resume=True, steps=8, resume_warmup=4,
               log=lines.append, on_step=lambda step, loss, lr: lrs.append(lr))  # fmt: skip
    assert st.step == 8 and any("Adam starts afresh" in line for line in lines)
    from deblur_cli.training.trainer import learning_rate

    cfg = _tiny_cfg(steps=8)
    want = [learning_rate(cfg, s) * min(1.0, (s - 3 + 1) / 4) for s in range(3, 8)]
    assert lrs == pytest.approx(want)
    assert lrs[0] == pytest.approx(learning_rate(cfg, 3) / 4)
    model, _ = load_model(weights=str(tmp_path / "c" / "final.safetensors"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_adam_state_reloads_in_the_layout_of_channels_last_parameters():
    """Fused Adam (the trainer's on CUDA) resumed from a checkpoint's contiguous moments onto
    channels-last parameters continues exactly as the optimizer that never stopped."""
    from deblur_cli.training.trainer import _load_optimizer, _optimizer_tensors

    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(1))

    def conv() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)

    def steps(net: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            opt.step()

    a = conv()
    try:
        opt_a = torch.optim.Adam(a.parameters(), lr=1e-2, fused=True)
    except RuntimeError:
        pytest.skip("this torch has no fused Adam on the CPU")
    steps(a, opt_a, 2)
    b = conv()
    b.load_state_dict(a.state_dict())
    tensors, meta = _optimizer_tensors(opt_a)  # contiguous, as save_checkpoint stores them
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2, fused=True)
    _load_optimizer(opt_b, {k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(meta)))
    steps(a, opt_a, 3)
    steps(b, opt_b, 3)
    torch.testing.assert_close(b.weight, a.weight, rtol=0, atol=0)


def test_paper_width_run_fits_the_return_path_without_adam(tmp_path):
    """saphn: its weights come back in 15 MiB shards (float32 if they fit, else bfloat16),
    Adam's moments (twice the float32 weights) do not."""
    from deblur_cli.models import create_model

    model = create_model("saphn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # creates Adam's moments
    cfg = TrainConfig(model="saphn")
    save_checkpoint(tmp_path / "run", model, opt, cfg, RunState(step=7), {"host": [], "device": []})
    packed = pack_run(tmp_path / "run", tmp_path / "out", reserve_files=1)
    files = [tmp_path / "out" / f for f in packed["files"]]
    assert packed["optimizer"] is False and packed["optimizer_bytes"] > 100 * 2**20
    assert len(files) + 1 <= MAX_FILES and packed["bytes"] <= MAX_TOTAL_BYTES
    assert all(f.stat().st_size <= MAX_SHARD_BYTES for f in shard_files(tmp_path / "out" / INDEX_NAME))
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert packed["weights_dtype"] == ("float32" if fp32_bytes + 2**21 < MAX_TOTAL_BYTES else "bfloat16")
    half = pack_run(tmp_path / "run", tmp_path / "half", weights_dtype=torch.bfloat16)
    assert half["weights_dtype"] == "bfloat16" and half["bytes"] < 0.55 * fp32_bytes
    assert unpack_run(tmp_path / "half", tmp_path / "back")["optimizer"] is False
    back, _ = load_model(weights=str(tmp_path / "out"))
    for v, w in zip(back.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=2**-7, atol=0)  # bfloat16 keeps 8 bits of mantissa


def test_worker_threads_give_the_same_stream_straight_and_resumed(carried, tmp_path):
    accel = Accel(workers=2)
    straight = train(tmp_path / "a", _tiny_cfg(), synthetic=carried / "train", accel=accel, log=lambda s: None)
    train(tmp_path / "b", _tiny_cfg(steps=3), synthetic=carried / "train", accel=accel, log=lambda s: None)
    train(
        tmp_path / "b", _tiny_cfg(), synthetic=carried / "train", accel=accel, resume=True, steps=6, log=lambda s: None
    )
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["data_rng"]["workers"] == 2 and straight.step == 6
    a, _ = load_model(weights=str(tmp_path / "a" / "final.safetensors"))
    b, _ = load_model(weights=str(tmp_path / "b" / "final.safetensors"))
    for v, w in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=0)


def test_compile_failure_falls_back_to_eager_once():
    lines = []
    eager = torch.nn.Linear(2, 2)

    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler\nmore")

    fn = CompileFallback(eager, broken, lines.append)
    x = torch.ones(1, 2)
    torch.testing.assert_close(fn(x), eager(x))
    fn(x)
    assert len(lines) == 1 and "continuing eager" in lines[0] and "no C compiler" in lines[0]


def test_reports_join_the_window_summary_or_stand_alone(tmp_path):
    """The probe's and the inference check's reports: under their key in a window's summary.json
    (no extra file on the size-limited return path), else in ``<key>.json`` of a new folder."""
    out = tmp_path / "out"
    alone = merge_into_summary(out, "probe", {"fastest": "bf16"})
    assert alone == out / "probe.json" and json.loads(alone.read_text()) == {"fastest": "bf16"}
    (out / "summary.json").write_text(json.dumps({"steps_this_call": 3}))
    merged = merge_into_summary(out, "inference", {"latency_720p": {}})
    assert merged == out / "summary.json" and not (out / "inference.json").exists()
    assert json.loads(merged.read_text()) == {"steps_this_call": 3, "inference": {"latency_720p": {}}}


def test_step_meter_splits_data_wait_from_the_step():
    import time

    meter = StepMeter(torch.device("cpu"), skip=1)
    for _ in range(3):
        meter.start()
        with meter.data():
            time.sleep(0.02)
        time.sleep(0.02)
        meter.end(4)
    assert 0.3 < meter.data_share < 0.7 and meter.samples_per_s > 0  # read: the pending steps are counted
    assert meter.counted == 2 and meter.samples == 8


def test_accel_auto_settings_follow_the_device():
    assert Accel().resolved(torch.device("cpu")) == {
        "amp": "off", "compile": False, "channels_last": True, "synthesis": "numpy", "workers": 0}  # fmt: skip
    cuda = Accel().resolved(torch.device("cuda"))
    assert cuda["amp"] == "bf16" and cuda["synthesis"] == "torch" and cuda["channels_last"] is False
    with pytest.raises(ValueError, match="amp"):
        Accel(amp="fp8")


def test_check_travel_size_counts_clone_and_carried_folders(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.bin").write_bytes(b"x" * 3 * 2**20)
    subprocess.run([*git, "add", "a.bin"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    carry = repo / "data" / "carry"
    carry.mkdir(parents=True)
    (carry / "p.bin").write_bytes(b"y" * 2 * 2**20)
    tool = [sys.executable, str(ROOT / "tools/check_travel_size.py"), "--repo", str(repo), "--carry", "data/carry"]
    ok = subprocess.run([*tool, "--limit-mib", "6"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "clone + carried:    5.0 MiB" in ok.stdout
    over = subprocess.run([*tool, "--limit-mib", "4"], capture_output=True, text=True, check=False)
    assert over.returncode == 1


def test_carry_tool_repacks_for_the_next_call_and_as_one_file(carried, tmp_path):
    from deblur_cli.training import carry

    train(tmp_path / "run", _tiny_cfg(steps=2), synthetic=carried / "train", log=lambda s: None)
    pack_run(tmp_path / "run", tmp_path / "returned")
    assert carry.main(["to-carry", str(tmp_path / "returned"), str(tmp_path / "next"), "--bf16"]) == 0
    weights = shard_files(tmp_path / "next" / INDEX_NAME)
    assert sum(f.stat().st_size for f in weights) < 0.6 * sum(
        f.stat().st_size for f in shard_files(tmp_path / "returned" / INDEX_NAME)
    )
    assert (tmp_path / "next" / OPTIMIZER_INDEX).is_file()  # Adam's state still travels
    assert carry.main(["to-file", str(tmp_path / "returned"), str(tmp_path / "w.safetensors")]) == 0
    a, _ = load_model(weights=str(tmp_path / "w.safetensors"))
    b, _ = load_model(weights=str(tmp_path / "run" / "final.safetensors"))
    for v, w in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(v, w)
