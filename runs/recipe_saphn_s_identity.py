"""Session 5 run: teach the network to leave sharp photographs alone.

Why: on the new validation split (19 photographs never trained on, session 5; see
``deblur_cli/data/photos.py``) the bundled weights make 30 of the 38 nearly sharp pairs
(2-3 px of blur, ``data/photos/val-nearsharp-pairs``) worse, by -3.18 dB on average. Run 4 raised
nearly sharp samples from 5 % to 15 % and helped, but still sharpened sharp photographs.

What changes from run 4: 10 % of the samples are exactly sharp (``identity_prob``: input =
target, before noise and JPEG) and 20 % nearly sharp (1-3 px), so about 30 % in all; a gentler
fine-tune (Adam peak 1.5e-4, 200 warm-up steps, cosine over 8,000 steps); validation every
1,000 steps on the 38 motion-blurred validation pairs at 512 px, with the weights exported at
every validation (``snapshots/``). Everything else as in runs 3-4 (defocus in 30 % of the
targets, crops 128, batch 8, L1 + 0.1 FFT on all three levels).

Starting point: whichever of the bundled weights (B) and run 4's step 4,000
(``runs/saphn-s.nearsharp/best.safetensors``, N4) scores higher under the rule below on the
new validation split (measured before this run started: see ``INIT`` below).

Selection rule, fixed before the run. Candidates: B, N4 and every snapshot of this run. Measure
each with ``deblur eval`` (full images) on ``data/photos/val-pairs`` (G = mean gain, W = images
made worse) and on ``data/photos/val-nearsharp-pairs`` (S = mean gain). A candidate is eligible
if W <= W(B) and G >= G(B) - 0.1 dB. The score is (G + S) / 2, the mean gain over all 76
validation pairs. The eligible candidate with the highest score replaces B if its score beats
B's by at least 0.1 dB. The held-out pairs are only used to report the chosen weights.

Run from the repository root: ``python runs/recipe_saphn_s_identity.py [--minutes M]``;
resumes when its state exists.
"""

import dataclasses
from pathlib import Path

from recipe_saphn_s import RECIPE, main

IDENTITY = dataclasses.replace(
    RECIPE,
    steps=8_000,
    lr=1.5e-4,
    warmup=200,
    blur={"defocus_prob": 0.3, "sharp_prob": 0.2, "identity_prob": 0.1},
    val_every=1000,
    val_crop=512,
    keep_val_weights=True,
    checkpoint_minutes=10.0,
    seed=5,
)
#: Measured before the run (full images, `deblur eval`): B: G +0.73, W 1, S -3.18, score -1.23;
#: N4: G +0.72, W 2, S -2.33, score -0.80. N4 scores higher, so the run starts from it (N4 itself
#: is not eligible to ship: W 2 > 1).
INIT = Path("runs/saphn-s.nearsharp/best.safetensors")

if __name__ == "__main__":
    main(Path("runs/saphn-s.identity"), IDENTITY, init_weights=INIT, val=Path("data/photos/val-pairs"))
