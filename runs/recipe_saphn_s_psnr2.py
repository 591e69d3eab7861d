"""Session 12 run 11: run 10 continued, a second cosine cycle of the PSNR loss.

Why: run 10 (``recipe_saphn_s_psnr.py``) is the first of runs 6-10 whose motion-blur gain rose
without the nearly sharp pairs paying for it. Behind the 4,6 gate, its snapshots at steps
1,000-4,000 scored G +0.37/+0.56/+0.61/+0.64 with S -0.55/-0.36/-0.42/-0.34, against the
bundled B's +0.55 and -0.33: score +0.15 at step 4,000, short of B's +0.11 + 0.1. G was still
climbing at the end of its cosine. This run restarts the schedule from run 10's final weights
(a warm restart: Adam 1e-4, 100 warm-up steps, cosine over 3,000 steps, fresh optimiser state),
everything else as run 10 (PSNR loss, batch 8 of 128 px crops, identity 0, nearly sharp 20 %,
defocus 30 %, level weights 0.25/0.5/1, gradient clipping at 1), seed 12.

Selection rule, fixed before the run (runs 9-10's, against the bundled B, not against run 10):
behind the 4,6 gate read by the bundled meter, G = mean gain on ``data/photos/val-pairs``,
W = pairs below -0.05 dB, S = mean gain on ``data/photos/val-nearsharp-pairs``. Eligible:
W <= W(B) and G >= G(B) - 0.1 dB. Score (G + S) / 2. The best eligible candidate (this run's
snapshots and run 10's) replaces B if its score beats B's by at least 0.1 dB. Held-out pairs are
read only to report the chosen weights.
``python runs/select_weights.py --run runs/saphn-s.psnr2 --worse-tol 0.05 --gate 4,6 <candidates>``.

Run from the repository root: ``PYTHONPATH=runs nice -n 10 python runs/recipe_saphn_s_psnr2.py
[--minutes M] [--steps N]``; resumes when its state exists.
"""

import dataclasses
from pathlib import Path

from recipe_saphn_s import main
from recipe_saphn_s_psnr import PSNR

PSNR2 = dataclasses.replace(PSNR, steps=3_000, lr=1e-4, warmup=100, seed=12)
INIT = Path("runs/saphn-s.psnr/final.safetensors")

if __name__ == "__main__":
    main(Path("runs/saphn-s.psnr2"), PSNR2, init_weights=INIT, val=Path("data/photos/val-pairs"))
