"""Training recipes as data: one TOML file per run (``configs/train/*.toml``).

A recipe names everything a run needs, so that a change of recipe is a diff of settings::

    # Nearly sharp samples in 15 % of the batch.
    # Starts from: saphn-s.bokeh's final weights.
    out = "runs/saphn-s.nearsharp"         # run folder
    synthetic = "data/photos/train"        # sharp photos (or data = "..." for GoPro-layout pairs)
    val = "data/photos/val-pairs"          # validation pairs (optional)
    init_weights = "saphn-s.bokeh:final"

    [train]                                # every TrainConfig field
    model = "saphn-s"
    ...
    [train.blur]                           # BlurSettings fields that differ from their defaults
    defocus_prob = 0.3

Top-level keys (all but ``out`` optional):

``out``, ``synthetic`` | ``data``, ``val``
    Folders, relative to the directory ``deblur train`` runs in (the repository root).
``init_weights``
    A weights file (``*.safetensors``), or ``"NAME:OUTPUT"``: an output (``best``, ``final`` or
    ``snapshots/step-NNNNNN``) of the recipe ``NAME.toml`` in the same folder, so that chains of
    runs are explicit.
``grow``
    ``true``: the init weights belong to a smaller variant and are grown into ``train.model``
    first (:func:`deblur_cli.training.grow.grow_weights`, written to ``OUT/init.safetensors``).
``exclude``
    File names in ``synthetic`` that this run does not train on.
``stop_at``
    Stop at this step (checkpointed and resumable) although the schedule runs to ``train.steps``.
``[[reschedule]]`` (``at``, ``steps``)
    From step ``at`` on, the run's total steps (the length of its cosine) is ``steps``: what
    ``deblur train --resume --steps N`` does by hand.

Unknown keys are errors, named with the file they are in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deblur_cli.data.datasets import list_images
from deblur_cli.data.synthetic import BlurSettings
from deblur_cli.errors import DeblurError
from deblur_cli.models import list_variants
from deblur_cli.training.accel import Accel
from deblur_cli.training.trainer import LOSSES, RunState, TrainConfig, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, packaged for Python 3.10
    import tomli as tomllib

#: Keys of a recipe outside its ``[train]`` table.
RUN_KEYS = ("out", "synthetic", "data", "val", "init_weights", "grow", "exclude", "stop_at", "reschedule")
#: An ``init_weights`` value naming another recipe's output.
_REFERENCE = re.compile(r"^(?P<name>[A-Za-z0-9][\w.\-]*):(?P<output>best|final|snapshots/step-\d{6})$")


@dataclass(frozen=True)
class Reschedule:
    """From step ``at`` on, the run's total number of steps is ``steps``."""

    at: int
    steps: int


@dataclass
class Recipe:
    """One training run: its :class:`TrainConfig` and the data, weights and folders around it."""

    config: TrainConfig
    out: Path | None = None
    synthetic: Path | None = None
    data: Path | None = None
    val: Path | None = None
    init_weights: str | None = None
    grow: bool = False
    exclude: tuple[str, ...] = ()
    stop_at: int | None = None
    reschedule: tuple[Reschedule, ...] = ()
    path: Path | None = None  # the file it was read from (None: built from options)
    name: str = field(default="", compare=False)

    def override(self, run: dict | None = None, train: dict | None = None) -> Recipe:
        """A copy with ``run`` keys (:data:`RUN_KEYS`) and ``train`` fields replaced.

        Giving ``data`` or ``synthetic`` replaces both (a run has exactly one training source)."""
        run = dict(run or {})
        if "data" in run or "synthetic" in run:
            run = {"data": None, "synthetic": None, **run}
        cfg = dataclasses.replace(self.config, **(train or {}))
        return dataclasses.replace(self, config=cfg, **run)


def _err(where: str | None, message: str) -> DeblurError:
    return DeblurError(message if where is None else f"{where}: {message}")


def _check_value(where: str | None, key: str, value: object, kind: object) -> object:
    """``value`` converted to the annotated ``kind`` of a dataclass field, or a one-line error."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in (a for a in args if a is not type(None)):
            try:
                return _check_value(where, key, value, option)
            except DeblurError:
                continue
        raise _err(where, f"{key} = {value!r} is not {kind}")
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        n = len(args) if args and args[-1] is not Ellipsis else None
        if isinstance(value, list) and (n is None or len(value) == n):
            item = args[0] if args else object
            return tuple(_check_value(where, key, v, item) for v in value)
    elif origin is dict or kind is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    name = getattr(kind, "__name__", str(kind))
    raise _err(where, f"{key} = {value!r}: expected {name}")


def train_config(table: dict, where: str | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a ``[train]`` table: every key a field of the right type, the
    schedule, loss and architecture known, ``blur`` keys fields of :class:`BlurSettings`."""
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for key, value in table.items():
        if key not in hints:
            raise _err(where, f"unknown key {key!r} in [train]")
        values[key] = _check_value(where, f"train.{key}", value, hints[key])
    blur_hints = typing.get_type_hints(BlurSettings)
    for key, value in values.get("blur", {}).items():
        if key not in blur_hints:
            raise _err(where, f"unknown key {key!r} in [train.blur]")
        _check_value(where, f"train.blur.{key}", value, blur_hints[key])
    cfg = TrainConfig(**values)
    check_config(cfg, where)
    return cfg


def check_config(cfg: TrainConfig, where: str | None = None) -> None:
    """One-line errors for an unknown architecture, schedule or loss, or a size below 1."""
    if cfg.model not in list_variants():
        raise _err(where, f"unknown architecture {cfg.model!r}; known: {', '.join(sorted(list_variants()))}")
    if cfg.schedule not in ("step", "cosine"):
        raise _err(where, f"schedule is step or cosine, not {cfg.schedule!r}")
    if cfg.loss not in LOSSES:
        raise _err(where, f"loss is one of {', '.join(LOSSES)}, not {cfg.loss!r}")
    for key in ("crop", "batch", "steps", "val_every"):
        if getattr(cfg, key) < 1:
            raise _err(where, f"train.{key} must be at least 1")


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and check the recipe file ``path`` (TOML); any problem is a one-line :class:`DeblurError`."""
    path = Path(path)
    where = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _err(where, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _err(where, f"cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise _err(where, f"not valid TOML ({exc})") from None
    for key in doc:
        if key != "train" and key not in RUN_KEYS:
            raise _err(where, f"unknown key {key!r}")
    if not isinstance(doc.get("train", {}), dict):
        raise _err(where, "train must be a table ([train])")
    cfg = train_config(doc.get("train", {}), where)
    run: dict = {}
    for key in ("out", "synthetic", "data", "val"):
        if key in doc:
            run[key] = Path(_check_value(where, key, doc[key], str))
    if "init_weights" in doc:
        run["init_weights"] = _check_value(where, "init_weights", doc["init_weights"], str)
    if "grow" in doc:
        run["grow"] = _check_value(where, "grow", doc["grow"], bool)
    if "exclude" in doc:
        run["exclude"] = _check_value(where, "exclude", doc["exclude"], tuple[str, ...])
    if "stop_at" in doc:
        run["stop_at"] = _check_value(where, "stop_at", doc["stop_at"], int)
    if "reschedule" in doc:
        items = doc["reschedule"]
        if not isinstance(items, list) or not all(isinstance(r, dict) and set(r) == {"at", "steps"} for r in items):
            raise _err(where, "reschedule is a list of tables with keys at and steps ([[reschedule]])")
        run["reschedule"] = tuple(
            Reschedule(*(_check_value(where, f"reschedule.{k}", r[k], int) for k in ("at", "steps")))
            for r in sorted(items, key=lambda r: r["at"])
        )
    if "out" not in run:
        raise _err(where, "no out (the run folder)")
    recipe = Recipe(config=cfg, path=path, name=path.stem, **run)
    check(recipe, where)
    return recipe


def check(recipe: Recipe, where: str | None = None) -> None:
    """Checks that need no file on disk: one training source, sensible stops, a readable init."""
    if (recipe.data is None) == (recipe.synthetic is None):
        raise _err(where, "give exactly one of data (real pairs) or synthetic (sharp photos)")
    if recipe.exclude and recipe.synthetic is None:
        raise _err(where, "exclude applies to synthetic photos only")
    total = recipe.reschedule[-1].steps if recipe.reschedule else recipe.config.steps
    if recipe.stop_at is not None and not 0 < recipe.stop_at <= total:
        raise _err(where, f"stop_at {recipe.stop_at} is not within the run's 1-{total} steps")
    last = 0
    for r in recipe.reschedule:
        if r.at <= last or r.steps <= r.at:
            raise _err(where, f"reschedule at {r.at} to {r.steps} steps: 'at' must increase and steps exceed it")
        last = r.at
    if recipe.grow and recipe.init_weights is None:
        raise _err(where, "grow needs init_weights")
    init = recipe.init_weights
    if init is not None and _REFERENCE.match(init) is None and not init.endswith(".safetensors"):
        raise _err(where, f"init_weights {init!r} is neither a .safetensors file nor NAME:OUTPUT")


def resolve_init(recipe: Recipe) -> Path | None:
    """The file ``init_weights`` names: a path as given, or ``NAME:OUTPUT`` as that recipe's
    ``OUT/OUTPUT.safetensors`` (the recipe ``NAME.toml`` beside this one)."""
    if recipe.init_weights is None:
        return None
    m = _REFERENCE.match(recipe.init_weights)
    if m is None:
        return Path(recipe.init_weights)
    if recipe.path is None:
        raise DeblurError(f"init weights {recipe.init_weights!r} name a recipe: give --config, or a weights file")
    parent = load_recipe(recipe.path.with_name(f"{m['name']}.toml"))
    return parent.out / f"{m['output']}.safetensors"


def chain(recipe: Recipe) -> list[Recipe]:
    """The recipes whose outputs lead to ``recipe``, first to last (``recipe`` included)."""
    runs = [recipe]
    while runs[0].init_weights is not None and (m := _REFERENCE.match(runs[0].init_weights)) is not None:
        if len(runs) > 100 or runs[0].path is None:
            raise DeblurError(f"{recipe.path}: the init_weights chain does not end")
        runs.insert(0, load_recipe(runs[0].path.with_name(f"{m['name']}.toml")))
    return runs


@contextmanager
def photo_folder(recipe: Recipe) -> Iterator[Path | None]:
    """``recipe.synthetic``, or with ``exclude``: a temporary folder of links to the other photos
    (same names, so the same sorted order as a folder that never held the excluded ones)."""
    if recipe.synthetic is None or not recipe.exclude:
        yield recipe.synthetic
        return
    photos = list_images(recipe.synthetic)
    missing = sorted(set(recipe.exclude) - {p.name for p in photos})
    if missing:
        raise DeblurError(f"exclude names {missing[0]}, which is not a photo in {recipe.synthetic}")
    with tempfile.TemporaryDirectory(prefix="deblur-photos-") as tmp:
        for p in photos:
            if p.name not in recipe.exclude:
                try:
                    os.symlink(p.resolve(), Path(tmp) / p.name)
                except OSError:  # no symlinks (e.g. Windows without the privilege): copy
                    shutil.copy2(p, Path(tmp) / p.name)
        yield Path(tmp)


def _saved_step(out: Path) -> int:
    return int(json.loads((out / "state.json").read_text())["run"]["step"])


def run_recipe(
    recipe: Recipe,
    resume: bool = False,
    max_minutes: float | None = None,
    steps: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    on_step: Callable[[int, float, float], None] | None = None,
    accel: Accel | None = None,
) -> RunState:
    """Train ``recipe`` into ``recipe.out`` (see :func:`deblur_cli.training.trainer.train`).

    ``accel`` holds the device settings (autocast, compile, channels-last, where pairs are
    synthesised, data workers); ``None`` decides them all from the device.

    ``stop_at`` and ``[[reschedule]]`` are applied by stopping at each of their steps and
    resuming with the new total, as they would be by hand; ``steps`` (on ``resume``) replaces
    the run's total and any pending reschedule.
    """
    out = Path(recipe.out)
    for p in (recipe.data, recipe.synthetic, recipe.val):
        if p is not None and not Path(p).is_dir():
            raise DeblurError(f"{p}: not a folder")
    if not resume and (out / "state.json").exists():
        raise DeblurError(f"{out} already holds a run: use --resume to continue it, or another --out")
    init = None
    if not resume:
        init = resolve_init(recipe)
        if init is not None and not init.is_file():
            m = _REFERENCE.match(recipe.init_weights or "")
            made_by = f" (an output of {m['name']}.toml: train it first)" if m else ""
            raise DeblurError(f"init weights {init} not found{made_by}")
        if recipe.grow and init is not None:
            from deblur_cli.training.grow import grow_weights

            out.mkdir(parents=True, exist_ok=True)
            grow_weights(init, recipe.config.model, out / "init.safetensors")
            init = out / "init.safetensors"
    plan = () if steps is not None else recipe.reschedule
    t0 = time.time()
    with photo_folder(recipe) as photos:
        step = _saved_step(out) if resume else 0
        while True:
            # On resume the saved total stands unless --steps or a reschedule already reached says otherwise.
            total = steps if steps is not None else next((r.steps for r in reversed(plan) if r.at <= step), None)
            stop_at = next((r.at for r in plan if r.at > step), recipe.stop_at)
            left = None if max_minutes is None else max(0.0, max_minutes - (time.time() - t0) / 60)
            st = train(out, recipe.config, synthetic=photos, data=recipe.data, val=recipe.val, resume=resume,
                       init_weights=init, max_minutes=left, steps=total if resume else None, stop_at=stop_at,
                       device=device, log=log, on_step=on_step, accel=accel)  # fmt: skip
            if stop_at is None or stop_at == recipe.stop_at or st.step < stop_at:
                return st
            step, resume = st.step, True
            for r in (r for r in plan if r.at == step):
                log(f"from step {step} the run has {r.steps} steps in all (reschedule)")
