"""The recipe that trains the shipped default ``saphn-s.synth`` (see weights/MODEL_CARD.md).

Run from the repository root: ``python runs/recipe_saphn_s.py [--minutes M]``; it resumes
automatically when runs/saphn-s.synth/state.json exists. The same run through the CLI::

    deblur train --model saphn-s --synthetic data/photos/train --val data/photos/heldout-pairs \
        --out runs/saphn-s.synth --crop 128 --batch 8 --steps 10000 --lr 4e-4 --schedule cosine \
        --warmup 300 --loss l1+fft --level-weights 0.25,0.5,1 --grad-clip 1 --threads 2

(``--resume`` to continue it). ``data/photos`` comes from ``python -m deblur_cli.data.photos data/photos``.
"""

import argparse
from pathlib import Path

from deblur_cli.training.trainer import TrainConfig, train

RECIPE = TrainConfig(
    model="saphn-s",
    crop=128,
    batch=8,
    steps=10_000,
    lr=4e-4,
    schedule="cosine",
    warmup=300,
    lr_min=1e-6,
    loss="l1+fft",
    fft_weight=0.1,
    level_weights=(0.25, 0.5, 1.0),
    grad_clip=1.0,
    val_every=500,
    val_crop=256,
    checkpoint_minutes=10.0,
    seed=0,
    threads=2,
)


def main(
    run: Path, cfg: TrainConfig, init_weights: Path | None = None, val: Path = Path("data/photos/heldout-pairs")
) -> None:
    """Train ``cfg`` into ``run`` on the photos of ``data/photos``, validating on ``val``, resuming
    when its state exists; ``--minutes`` and ``--steps`` from the command line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None, help="on resume: change the run's total steps")
    args = ap.parse_args()
    train(
        run,
        cfg,
        synthetic=Path("data/photos/train"),
        val=val,
        resume=(run / "state.json").exists(),
        init_weights=init_weights,
        max_minutes=args.minutes,
        steps=args.steps,
        log=lambda s: print(s, flush=True),
    )


if __name__ == "__main__":
    main(Path("runs/saphn-s.synth"), RECIPE)
