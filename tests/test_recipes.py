"""Training recipes as data (configs/train/*.toml), `deblur train --config`, and the tree's size."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deblur_cli.data.datasets import list_images
from deblur_cli.data.photos import OPENCV_TRAIN, SKIMAGE_TRAIN, WALLPAPER_TRAIN, _name
from deblur_cli.errors import DeblurError
from deblur_cli.training.config import chain, load_recipe, photo_folder, resolve_init, run_recipe
from deblur_cli.training.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "train").glob("*.toml"))
#: The runs that made weights/saphn-s.synth.safetensors, first to last.
SHIPPED_CHAIN = ["saphn-s.synth", "saphn-s.defocus-ft", "saphn-s.bokeh", "saphn-s.nearsharp", "saphn-s.identity"]


def test_there_are_recipes_for_the_chain_and_both_widths():
    names = {p.stem for p in CONFIGS}
    assert set(SHIPPED_CHAIN) | {"saphn-s", "saphn"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_parses_into_a_valid_train_config(path):
    recipe = load_recipe(path)
    assert isinstance(recipe.config, TrainConfig)
    assert recipe.out is not None and recipe.out.parts[0] == "runs"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and any(line.startswith("# Starts from: ") for line in lines)
    for parent in chain(recipe)[:-1]:  # every recipe it starts from exists and parses
        assert parent.path.is_file() and parent.out != recipe.out
    init = resolve_init(recipe)
    if init is not None and init.parts[0] == "weights":
        assert (ROOT / init).is_file()  # a shipped file, present in every checkout


def test_the_shipped_default_chain_is_explicit():
    identity = load_recipe(ROOT / "configs/train/saphn-s.identity.toml")
    assert [r.name for r in chain(identity)] == SHIPPED_CHAIN
    outputs = [resolve_init(r) for r in chain(identity)]
    assert outputs[0] is None  # from scratch
    assert outputs[1:] == [
        Path("runs/saphn-s.synth/snapshots/step-004000.safetensors"),
        Path("runs/saphn-s.defocus-ft/final.safetensors"),
        Path("runs/saphn-s.bokeh/final.safetensors"),
        Path("runs/saphn-s.nearsharp/snapshots/step-004000.safetensors"),
    ]
    # The snapshots named above are written only where a recipe keeps them.
    assert load_recipe(ROOT / "configs/train/saphn-s.synth.toml").config.keep_val_weights
    assert load_recipe(ROOT / "configs/train/saphn-s.nearsharp.toml").config.keep_val_weights
    assert identity.config.keep_val_weights and identity.stop_at >= 3000
    sha = json.loads((ROOT / "weights/registry.json").read_text())["entries"][0]["sha256"]
    assert sha[:8] in (ROOT / "configs/train/saphn-s.identity.toml").read_text()


def test_the_first_two_runs_leave_out_exactly_the_wallpapers():
    walls = {_name(p) for ps in WALLPAPER_TRAIN.values() for p in ps}
    for name in SHIPPED_CHAIN[:2]:
        assert set(load_recipe(ROOT / f"configs/train/{name}.toml").exclude) == walls
    assert len(SKIMAGE_TRAIN) + len(OPENCV_TRAIN) == 54


def test_the_paper_recipe_is_the_paper_settings():
    cfg = load_recipe(ROOT / "configs/train/saphn.toml").config
    paper = ("saphn", 1e-4, 6, 256, "step", 200_000, "mse")
    assert (cfg.model, cfg.lr, cfg.batch, cfg.crop, cfg.schedule, cfg.lr_step, cfg.loss) == paper


# --- errors ---------------------------------------------------------------------------------

_TINY = """\
# A few steps of saphn-tiny.
out = "{out}"
synthetic = "{photos}"
{extra}
[train]
model = "saphn-tiny"
crop = 32
batch = 2
steps = 6
lr = 0.001
loss = "l1+fft"
{train_extra}
"""


def _write(tmp_path: Path, name: str = "tiny", extra: str = "", train_extra: str = "") -> Path:
    """A recipe ``tmp_path/NAME.toml`` training into ``tmp_path/NAME`` on ``tmp_path/photos``."""
    path = tmp_path / f"{name}.toml"
    out, photos = (tmp_path / name).as_posix(), (tmp_path / "photos").as_posix()
    text = _TINY.format(out=out, photos=photos, extra=extra, train_extra=train_extra)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("extra", "train_extra", "message"),
    [
        ("bacth = 4", "", "unknown key 'bacth'"),
        ("", "bacth = 4", "unknown key 'bacth' in [train]"),
        ("", "[train.blur]\ndefocus = 0.3", "unknown key 'defocus' in [train.blur]"),
        ("", 'schedule = "linear"', "schedule is step or cosine"),
        ("", 'seed = "8"', "train.seed = '8': expected int"),
        ("", "level_weights = [1, 2]", "train.level_weights"),
        ('data = "x"', "", "exactly one of data"),
        ('init_weights = "nope"', "", "neither a .safetensors file nor NAME:OUTPUT"),
        ("stop_at = 9", "", "stop_at 9 is not within"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, extra, train_extra, message):
    path = _write(tmp_path, extra=extra, train_extra=train_extra)
    with pytest.raises(DeblurError) as exc:
        load_recipe(path)
    assert message in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_cli_names_the_unknown_key(cli, tmp_path):
    res = cli("train", "--config", _write(tmp_path, train_extra="lerning_rate = 1e-3"))
    assert res.exit_code != 0
    assert "unknown key 'lerning_rate' in [train]" in str(res.exception) and "Traceback" not in res.output


def test_init_from_a_recipe_that_has_not_run(tmp_path, photos):
    _write(tmp_path, name="first")
    second = _write(tmp_path, name="second", extra='init_weights = "first:final"')
    assert resolve_init(load_recipe(second)) == tmp_path / "first" / "final.safetensors"
    with pytest.raises(DeblurError, match="first.toml: train it first"):
        run_recipe(load_recipe(second), log=lambda s: None)


# --- running ---------------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three small textured photos in ``tmp_path/photos``."""
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = cv2.resize(rng.random((24, 28, 3)).astype(np.float32), (112, 96), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(d / f"p{i}.png"), (img * 255).astype(np.uint8))
    return d


def test_cli_trains_a_few_steps_from_a_config_and_options_override_it(cli, tmp_path, photos):
    path = _write(tmp_path)
    res = cli("train", "--config", path, "--steps", "3", "--device", "cpu")
    assert res.exit_code == 0, res.output
    state = json.loads((tmp_path / "tiny" / "state.json").read_text())
    assert state["run"]["step"] == 3  # --steps given: it overrides the file's 6
    assert state["config"]["model"] == "saphn-tiny" and state["config"]["lr"] == 1e-3  # the rest from the file
    assert state["config"]["batch"] == 2  # --batch not given: its default (6) does not override
    assert (tmp_path / "tiny" / "final.safetensors").is_file()
    again = cli("train", "--config", path, "--device", "cpu")
    assert again.exit_code != 0 and "already holds a run" in str(again.exception)
    res = cli("train", "--config", path, "--resume", "--steps", "4", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "tiny" / "state.json").read_text())["run"]["step"] == 4


def test_cli_device_and_pipeline_options_reach_the_trainer(cli, tmp_path, photos, monkeypatch):
    """--synthesis/--workers/--amp/--channels-last are the trainer's, as the log line says; bad values are one line."""
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps the log at the terminal's width
    path = _write(tmp_path)
    res = cli("train", "--config", path, "--steps", "2", "--device", "cpu", "--synthesis", "torch", "--workers", "1",
              "--amp", "off", "--channels-last", "off")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "autocast off, compile off, channels-last off, synthesis torch, data workers 1" in " ".join(res.output.split())
    bad = cli("train", "--config", path, "--device", "cpu", "--synthesis", "gpu")
    assert bad.exit_code != 0 and "--synthesis is one of auto, torch, numpy" in str(bad.exception)


def test_exclude_reschedule_and_stop_at_equal_the_same_run_by_hand(tmp_path, photos):
    """A recipe that leaves out a photo, shortens its schedule at step 2 and stops at step 3
    gives the weights of: 2 steps on a folder without that photo, then a resume with the new
    total, stopped at step 3."""
    extra = 'exclude = ["p1.png"]\nstop_at = 3\n[[reschedule]]\nat = 2\nsteps = 5\n'
    recipe = load_recipe(_write(tmp_path, extra=extra))
    with photo_folder(recipe) as folder:
        assert [p.name for p in list_images(folder)] == ["p0.png", "p2.png"]
    st = run_recipe(recipe, log=lambda s: None)
    assert st.step == 3
    assert json.loads((tmp_path / "tiny" / "state.json").read_text())["config"]["steps"] == 5

    two = tmp_path / "two"
    two.mkdir()
    for name in ("p0.png", "p2.png"):
        shutil.copy(photos / name, two / name)
    by_hand = tmp_path / "by-hand"
    cfg = recipe.config
    train(by_hand, cfg, synthetic=two, stop_at=2, log=lambda s: None)
    train(by_hand, cfg, synthetic=two, resume=True, steps=5, stop_at=3, log=lambda s: None)
    a = load_file(str(tmp_path / "tiny" / "final.safetensors"))
    b = load_file(str(by_hand / "final.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the tree -----------------------------------------------------------------------------------

#: Git tracks code, tests, docs, configs and the package's shipped weights: at most this much.
TRACKED_LIMIT = 20 * 2**20
#: The resumable state of at most one active run may be tracked, at most this much (docs/recipes.md).
RUN_STATE_LIMIT = 16 * 2**20


def test_tracked_files_stay_small():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / name for name in out.decode().split("\0") if name]
    total = sum(p.stat().st_size for p in files if p.is_file())
    biggest = max(files, key=lambda p: p.stat().st_size if p.is_file() else 0)
    assert total < TRACKED_LIMIT, f"git tracks {total / 2**20:.1f} MiB (largest: {biggest.relative_to(ROOT)})"
    run_dirs = {p.parent for p in files if p.name == "checkpoint.safetensors"}
    assert len(run_dirs) <= 1, f"resumable state of {len(run_dirs)} runs tracked: {sorted(map(str, run_dirs))}"
    for run in run_dirs:
        size = sum(p.stat().st_size for p in files if run in p.parents and p.is_file())
        assert size <= RUN_STATE_LIMIT, f"{run.relative_to(ROOT)}: {size / 2**20:.1f} MiB tracked"
