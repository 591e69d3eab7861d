"""Experiment (session 2): fine-tune ``runs/saphn-s.synth/best.safetensors`` with defocus in the
targets (``BlurSettings.defocus_prob = 0.3``), to test whether the network then leaves defocused
backgrounds alone (messi5, squirrel_cls). Run from the repository root:
``python runs/recipe_saphn_s_defocus.py [--minutes M]``; resumes when its state exists.
"""

import dataclasses
from pathlib import Path

from recipe_saphn_s import RECIPE, main

FINETUNE = dataclasses.replace(
    RECIPE, steps=1_800, lr=2e-4, warmup=100, blur={"defocus_prob": 0.3}, val_every=300, checkpoint_minutes=5.0
)

if __name__ == "__main__":
    main(Path("runs/saphn-s.defocus-ft"), FINETUNE, init_weights=Path("runs/saphn-s.synth/best.safetensors"))
