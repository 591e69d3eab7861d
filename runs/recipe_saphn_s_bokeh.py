"""Session 3 run: continue ``runs/saphn-s.defocus-ft/final.safetensors`` on the larger photo set
(70 training photos: the wallpapers add natural shallow depth of field), defocus in 30 % of the
targets, a new 12k-step cosine cycle, validated on ``data/photos/val-pairs`` (wallpapers kept
aside) so that the held-out pairs stay untouched until the report. Run from the repository
root: ``python runs/recipe_saphn_s_bokeh.py [--minutes M]``; resumes when its state exists.
"""

import dataclasses
from pathlib import Path

from recipe_saphn_s import RECIPE, main

BOKEH = dataclasses.replace(
    RECIPE,
    steps=12_000,
    lr=3e-4,
    warmup=200,
    blur={"defocus_prob": 0.3},
    val_every=1000,
    val_crop=512,
    checkpoint_minutes=10.0,
)

if __name__ == "__main__":
    main(
        Path("runs/saphn-s.bokeh"),
        BOKEH,
        init_weights=Path("runs/saphn-s.defocus-ft/final.safetensors"),
        val=Path("data/photos/val-pairs"),
    )
