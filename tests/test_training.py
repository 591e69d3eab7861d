"""Synthetic blur, the training loop, checkpoints and resume, evaluation metrics and commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deblur_cli.cli import main as cli_main
from deblur_cli.data.datasets import SyntheticPairs, find_pairs, make_heldout_set
from deblur_cli.data.synthetic import BlurSettings, defocus, degrade, disk_psf, linear_psf, shake_warps
from deblur_cli.eval.pairs import oracle_unsharp_mask, psnr, ssim
from deblur_cli.models import create_model
from deblur_cli.training.trainer import PSNR_LOSS_FLOOR, TrainConfig, learning_rate, psnr_loss, restoration_loss, train

runner = CliRunner()
cli_main._register()


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 4, w // 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    img[..., 0] = 0.5 + 0.4 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    return np.clip(img, 0, 1)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"p{i}.png"), (_textured(120, 140, i) * 255).astype(np.uint8))
    return d


# --- synthetic blur ----------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 135.0])
def test_linear_psf_points_along_its_angle(angle):
    k = linear_psf(15, angle)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    ys, xs = np.nonzero(k > k.max() * 0.5)
    c = (k.shape[0] - 1) / 2
    # principal axis of the kernel's support, with image y pointing down -> angle = atan2(-dy, dx)
    cov = np.cov(np.stack([xs - c, -(ys - c)]))
    evals, evecs = np.linalg.eigh(cov)
    v = evecs[:, 1]
    est = math.degrees(math.atan2(v[1], v[0])) % 180
    assert min(abs(est - angle), 180 - abs(est - angle)) < 3


def test_shake_middle_frame_is_identity_and_extent_is_respected():
    rng = np.random.default_rng(0)
    warps = shake_warps(rng, (100, 120), extent=12.0, frames=9)
    np.testing.assert_allclose(warps[4], [[1, 0, 0], [0, 1, 0]], atol=1e-5)
    corners = np.array([[0, 0, 1], [120, 0, 1], [0, 100, 1], [120, 100, 1]], np.float64).T
    disp = max(np.abs(m.astype(np.float64) @ corners - corners[:2]).max() for m in warps)
    assert 4.0 < disp < 14.0


def test_degrade_blurs_and_tiny_extent_barely_changes():
    img = _textured(96, 96, 0)
    rng = np.random.default_rng(0)
    strong = degrade(img, rng, BlurSettings(), kind="linear", extent=15)
    weak = degrade(img, rng, BlurSettings(), kind="linear", extent=1)
    shaken = degrade(img, rng, BlurSettings(), kind="shake", extent=15)
    assert psnr(strong, img) < 25 and psnr(shaken, img) < 30
    assert psnr(weak, img) > 40


def test_synthetic_pairs_shapes_and_determinism(photos):
    a = SyntheticPairs(photos, crop=32, seed=3).batch(4)
    b = SyntheticPairs(photos, crop=32, seed=3).batch(4)
    assert a[0].shape == (4, 3, 32, 32) and a[1].shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], a[1])  # blurred differs from sharp


@pytest.mark.parametrize("radius", [1.0, 2.5, 6.0])
def test_disk_psf_is_a_centred_disk(radius):
    k = disk_psf(radius)
    n = k.shape[0]
    assert n % 2 == 1 and abs(k.sum() - 1) < 1e-5
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    assert abs((k * yy).sum()) < 1e-4 and abs((k * xx).sum()) < 1e-4  # no shift
    assert k[np.hypot(yy, xx) > radius + 1].sum() == 0  # nothing outside the disk
    assert k[n // 2, n // 2] > 0


def test_defocus_softens_whole_or_one_side():
    rng = np.random.default_rng(0)
    img = rng.random((64, 80, 3), dtype=np.float32)
    settings = BlurSettings(defocus_radius=(3.0, 3.0))
    whole = part = 0
    for seed in range(12):
        out = defocus(img, np.random.default_rng(seed), settings)
        assert out.shape == img.shape and out.dtype == np.float32
        changed = np.abs(out - img).mean(axis=2) > 0.02
        frac = changed.mean()
        whole += frac > 0.9
        part += 0.05 < frac < 0.9  # a region: one side of a line
    assert whole > 0 and part > 0


def test_defocus_prob_zero_keeps_the_data_stream(photos):
    """Runs that predate defocus (defocus_prob = 0) see exactly the same crops."""
    a = SyntheticPairs(photos, crop=32, seed=5).batch(3)
    b = SyntheticPairs(photos, crop=32, settings=BlurSettings(defocus_prob=0.0), seed=5).batch(3)
    c = SyntheticPairs(photos, crop=32, settings=BlurSettings(defocus_prob=1.0), seed=5).batch(3)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])  # targets now contain defocus


def test_identity_samples_are_the_sharp_crop_and_off_keeps_the_data_stream(photos):
    """identity_prob = 1: input == target (no noise/JPEG asked); = 0: the old stream exactly."""
    quiet = dict(noise_prob=0.0, jpeg_prob=0.0)
    same = SyntheticPairs(photos, crop=32, settings=BlurSettings(identity_prob=1.0, **quiet), seed=2).batch(3)
    np.testing.assert_array_equal(same[0], same[1])
    a = SyntheticPairs(photos, crop=32, seed=5).batch(3)
    b = SyntheticPairs(photos, crop=32, settings=BlurSettings(identity_prob=0.0), seed=5).batch(3)
    np.testing.assert_array_equal(a[0], b[0])
    # Some, not all, of a batch are identity samples at 0.5.
    half = SyntheticPairs(photos, crop=32, settings=BlurSettings(identity_prob=0.5, **quiet), seed=1).batch(16)
    n_same = sum(np.array_equal(x, y) for x, y in zip(*half))
    assert 0 < n_same < 16


def test_heldout_set_has_both_blur_kinds(photos, tmp_path):
    pairs = make_heldout_set(photos, tmp_path / "held", max_side=64)
    names = sorted(p.name for p in pairs)
    assert len(pairs) == 6 and any("linear" in n for n in names) and any("shake" in n for n in names)


def test_find_pairs_gopro_layout(tmp_path):
    for scene in ("GOPR0001", "GOPR0002"):
        for sub in ("blur", "sharp"):
            (tmp_path / "test" / scene / sub).mkdir(parents=True)
            cv2.imwrite(str(tmp_path / "test" / scene / sub / "000001.png"), np.zeros((8, 8, 3), np.uint8))
    pairs = find_pairs(tmp_path)
    assert [p.name for p in pairs] == ["GOPR0001/000001.png", "GOPR0002/000001.png"]
    with pytest.raises(ValueError, match="no blur/sharp pairs"):
        find_pairs(tmp_path / "test" / "GOPR0001" / "blur")


# --- training ----------------------------------------------------------------------------


def test_learning_rate_schedules():
    paper = TrainConfig()
    assert learning_rate(paper, 0) == pytest.approx(1e-4)
    assert learning_rate(paper, 200_000) == pytest.approx(5e-5)
    assert learning_rate(paper, 400_001) == pytest.approx(2.5e-5)
    cos = TrainConfig(lr=1e-3, schedule="cosine", warmup=10, steps=110, lr_min=0.0)
    assert learning_rate(cos, 0) == pytest.approx(1e-4)
    assert learning_rate(cos, 10) == pytest.approx(1e-3)
    assert learning_rate(cos, 60) == pytest.approx(5e-4)
    assert learning_rate(cos, 110) == pytest.approx(0.0, abs=1e-12)


def _fit_fixed_batch(photos, loss: str, steps: int = 60) -> tuple[list[float], list[float]]:
    """Train ``saphn-tiny`` from the identity on one batch of 4 synthetic pairs (32 px) with
    ``loss`` on all three levels; returns the loss and the level-1 PSNR (dB) at every step."""
    torch.manual_seed(0)
    model = create_model("saphn-tiny")
    blur, sharp = (torch.from_numpy(x) for x in SyntheticPairs(photos, crop=32, seed=0).batch(4))
    cfg = TrainConfig(loss=loss, level_weights=(0.25, 0.5, 1.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, psnrs = [], []
    for _ in range(steps):
        levels: list[torch.Tensor] = []
        model(blur, levels=levels)
        loss_value = restoration_loss(cfg, levels, sharp)
        opt.zero_grad()
        loss_value.backward()
        opt.step()
        losses.append(loss_value.item())
        psnrs.append(-psnr_loss(levels[-1].detach(), sharp).item())
    return losses, psnrs


def test_loss_goes_down_on_a_fixed_batch(photos):
    losses, _ = _fit_fixed_batch(photos, "l1+fft")
    # From the identity (zero heads) the tiny model fits a single batch steadily: >10 % in 60 steps.
    assert losses[-1] < 0.9 * losses[0]
    assert losses[-1] < min(losses[:10])


def test_psnr_loss_is_minus_the_mean_psnr_in_db():
    torch.manual_seed(0)
    target = torch.rand(3, 3, 8, 9)
    noise = torch.tensor([0.01, 0.05, 0.2]).reshape(3, 1, 1, 1)
    pred = target + noise * torch.randn_like(target)
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    want = -(10 * torch.log10(1 / (mse + PSNR_LOSS_FLOOR))).mean()  # -mean PSNR, peak 1
    assert psnr_loss(pred, target).item() == pytest.approx(want.item(), rel=1e-6)
    # Each image counts the same in dB: the mean of the PSNRs, not the PSNR of the mean error.
    assert psnr_loss(pred, target).item() < (10 * torch.log10(mse.mean())).item()
    # Identical images: finite, at the 8-bit quantisation floor (about -59 dB).
    assert psnr_loss(target, target).item() == pytest.approx(10 * math.log10(PSNR_LOSS_FLOOR))


def test_psnr_loss_trains_a_fixed_batch(photos):
    _, psnrs = _fit_fixed_batch(photos, "psnr")
    assert psnrs[-1] > psnrs[0] + 0.5  # dB on the batch it trains on


def _tiny_cfg(**kw) -> TrainConfig:
    base = dict(model="saphn-tiny", crop=32, batch=2, steps=6, lr=1e-3, val_every=3, val_crop=32, loss="l1+fft")
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_exactly(photos, tmp_path):
    """6 steps at once == 3 steps, checkpoint, resume for 3 more (same weights bit for bit)."""
    held = tmp_path / "held"
    make_heldout_set(photos, held, max_side=48)
    straight = train(tmp_path / "a", _tiny_cfg(), synthetic=photos, val=held, log=lambda s: None)
    train(tmp_path / "b", _tiny_cfg(steps=3), synthetic=photos, val=held, log=lambda s: None)
    resumed = train(tmp_path / "b", _tiny_cfg(), synthetic=photos, val=held, resume=True, steps=6, log=lambda s: None)
    assert straight.step == resumed.step == 6
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "final.safetensors"))
    b = load_file(str(tmp_path / "b" / "final.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["run"]["step"] == 6 and len(state["run"]["history"]) == 2
    entry = json.loads((tmp_path / "b" / "final.entry.json").read_text())
    assert entry["arch"] == "saphn-tiny" and len(entry["sha256"]) == 64


def test_keep_val_weights_exports_every_validation(photos, tmp_path):
    held = tmp_path / "held"
    make_heldout_set(photos, held, max_side=48)
    cfg = _tiny_cfg()
    cfg.keep_val_weights = True
    train(tmp_path / "r", cfg, synthetic=photos, val=held, log=lambda s: None)
    snaps = sorted(p.name for p in (tmp_path / "r" / "snapshots").glob("*.safetensors"))
    assert snaps == ["step-000003.safetensors", "step-000006.safetensors"]
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / "r" / "snapshots" / n)) for n in snaps)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # taken at different steps
    final = load_file(str(tmp_path / "r" / "final.safetensors"))
    assert all(torch.equal(final[k], b[k]) for k in final)  # the last one is the final weights
    entry = json.loads((tmp_path / "r" / "snapshots" / "step-000003.entry.json").read_text())
    assert entry["train_steps"] == 3


def test_max_minutes_stops_with_a_checkpoint(photos, tmp_path):
    st = train(tmp_path / "r", _tiny_cfg(steps=1000), synthetic=photos, max_minutes=0.0, log=lambda s: None)
    assert st.step == 1
    assert (tmp_path / "r" / "checkpoint.safetensors").exists()


# --- evaluation ---------------------------------------------------------------------------


def test_metrics_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    a = _textured(40, 52, 1)
    b = np.clip(a + np.random.default_rng(0).normal(0, 0.05, a.shape), 0, 1)
    A, B = np.round(a * 255), np.round(b * 255)
    ref_ssim = metrics.structural_similarity(A, B, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                             data_range=255, channel_axis=-1)  # fmt: skip
    assert ssim(b, a) == pytest.approx(ref_ssim, abs=1e-6)
    assert psnr(b, a) == pytest.approx(metrics.peak_signal_noise_ratio(A, B, data_range=255), abs=1e-6)


def test_oracle_usm_never_worse_than_input():
    img = _textured(64, 64, 2)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.5)
    best, sigma, amount = oracle_unsharp_mask(blurred, img)
    assert best > psnr(blurred, img) and sigma > 0 and amount > 0


def test_cli_eval_and_json(photos, tmp_path, tiny_weights):
    held = tmp_path / "held"
    make_heldout_set(photos, held, max_side=40)
    out = tmp_path / "r.json"
    res = runner.invoke(cli_main.app, ["eval", "--data", str(held), "--weights", str(tiny_weights), "--device", "cpu",
                                       "--json", str(out), "--usm", "--ci"])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["summary"]["count"] == 6 and len(data["rows"]) == 6
    ci = data["gain_interval"]  # 3 photographs, each blurred twice: 3 clusters, not 6
    assert ci["clusters"] == 3 and ci["low"] <= data["summary"]["gain"] <= ci["high"] and ci["low"] < ci["high"]
    assert "bootstrap over 3 scenes" in res.output
    assert data["summary"]["psnr_usm"] >= data["summary"]["psnr_in"]
    assert "PSNR out" in res.output
    again = runner.invoke(cli_main.app, ["eval", "--data", str(held), "--weights", str(tiny_weights), "--json", str(out)])
    assert again.exit_code != 0 and "exists" in str(again.exception)
    ens = tmp_path / "ens.json"
    res = runner.invoke(cli_main.app, ["eval", "--data", str(held), "--weights", str(tiny_weights), "--device", "cpu",
                                       "--json", str(ens), "--self-ensemble", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    data2 = json.loads(ens.read_text())
    assert "self-ensemble x2" in data2["device"]
    assert data2["summary"]["psnr_out"] != data["summary"]["psnr_out"]  # a different estimate, same pairs
    assert data2["summary"]["psnr_in"] == data["summary"]["psnr_in"]


def test_cli_eval_ci_without_scenes_and_with_identical_images(tmp_path, tiny_weights):
    for sub in ("blur", "sharp"):
        (tmp_path / sub).mkdir()
    for i in range(4):
        sharp = (_textured(24, 32, i) * 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "sharp" / f"{i}.png"), sharp)
        cv2.imwrite(str(tmp_path / "blur" / f"{i}.png"), cv2.GaussianBlur(sharp, (0, 0), 1.5))
    out = tmp_path / "r.json"
    args = ["eval", "--data", str(tmp_path), "--weights", str(tiny_weights), "--device", "cpu", "--ci"]
    res = runner.invoke(cli_main.app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "bootstrap over 4 pairs (no scene or photograph" in res.output  # named 0.png..3.png: no clusters
    assert json.loads(out.read_text())["gain_interval"]["clusters"] == 4
    # A blurred image identical to its sharp one has an infinite input PSNR: the table and the
    # JSON stand, the interval is refused in one line.
    cv2.imwrite(str(tmp_path / "blur" / "0.png"), cv2.imread(str(tmp_path / "sharp" / "0.png")))
    res = runner.invoke(cli_main.app, [*args, "--json", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "no interval: 0.png: value is not finite" in res.output
    assert "gain_interval" not in json.loads(out.read_text())


def test_cli_eval_bad_data(tmp_path):
    res = runner.invoke(cli_main.app, ["eval", "--data", str(tmp_path / "nope")])
    assert res.exit_code != 0
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(cli_main.app, ["eval", "--data", str(empty)])
    assert res.exit_code != 0 and "no blur/sharp pairs" in str(res.exception or res.output)


def test_cli_train_and_resume(photos, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--synthetic", str(photos), "--model", "saphn-tiny", "--out", str(out), "--steps", "3",
            "--batch", "2", "--crop", "32", "--device", "cpu", "--loss", "l1+fft", "--level-weights", "0.25,0.5,1"]  # fmt: skip
    res = runner.invoke(cli_main.app, args)
    assert res.exit_code == 0, res.output
    assert (out / "final.safetensors").exists()
    again = runner.invoke(cli_main.app, args)
    assert again.exit_code != 0  # refuses to start over an existing run
    res = runner.invoke(cli_main.app, ["train", "--synthetic", str(photos), "--model", "saphn-tiny", "--out", str(out),
                                       "--resume", "--steps", "5", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "state.json").read_text())["run"]["step"] == 5


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "saphn-tiny"],  # neither --data nor --synthetic
        ["--model", "nope", "--synthetic", "."],
        ["--model", "saphn-tiny", "--synthetic", "/nonexistent"],
        ["--model", "saphn-tiny", "--synthetic", ".", "--level-weights", "1,2"],
    ],
)
def test_cli_train_bad_arguments(tmp_path, args):
    res = runner.invoke(cli_main.app, ["train", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code != 0
    assert "Traceback" not in res.output


def test_sigterm_checkpoints_and_stops(photos, tmp_path):
    """A SIGTERM (or Ctrl-C) mid-run finishes the step, writes the checkpoint and returns."""
    import os
    import signal

    calls = []

    def on_step(step, loss, lr):
        calls.append(step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    st = train(tmp_path / "r", _tiny_cfg(steps=50), synthetic=photos, log=lambda s: None, on_step=on_step)
    assert st.step == 2 and calls == [1, 2]
    assert json.loads((tmp_path / "r" / "state.json").read_text())["run"]["step"] == 2
    assert signal.getsignal(signal.SIGTERM) == before
