"""Session 8 run: ``saphn-sd``, the bundled ``saphn-s`` weights grown by decoder detail blocks.

Why: runs 5-7 (128, 192 and 256 px crops, 5.5 h between them) all level off at +0.74 to +0.78
dB mean gain on the 38 motion-blurred validation pairs, and on the held-out set the bundled
weights gain least on fine texture (baboon +0.13, rocket +0.07/+0.35, fruits +0.26/+0.21 dB).
Past its two transposed convolutions ``saphn-s``'s decoder has no layer with a non-linearity at
full resolution: every detail of the residual must be drawn from quarter-resolution features.
``saphn-sd`` adds one plain residual block at half and one at full resolution to each of the
three decoders (+69 k parameters; measured 1.2x the time of ``saphn-s`` at 720p). The blocks
start as the identity, so the run starts exactly from the bundled weights
(``deblur_cli.training.grow``) and tests whether capacity there lifts the plateau.

Settings as run 6 (192 px crops, batch 4, defocus in 30 % of the targets, 20 % sharp or nearly
sharp, 15 % identity, L1 + 0.1 FFT on all three levels), Adam 1.5e-4, 200 warm-up steps,
cosine over 6,000 steps (what fits in this session after the blur meter), validation every
1,000 steps on the 38 motion pairs at 512 px, weights exported each time (``snapshots/``).

Selection rule, fixed before the run. Candidates: B (the bundled weights) and every snapshot
and the final weights of this run. Each measured as ``deblur image`` runs by default: behind
the blur gate at 4,6 px, read by the meter that the meter rule of
``runs/blur-extent-v2/RULE.md`` leaves in place (v2 if adopted, else the bundled meter),
with ``deblur eval``'s scoring on ``data/photos/val-pairs`` (G, W with a 0.05 dB tolerance)
and ``data/photos/val-nearsharp-pairs`` (S). Eligible: W <= W(B) and G >= G(B) - 0.1 dB.
Score (G + S) / 2. The best eligible candidate replaces B if it beats B's score by at least
0.1 dB **and** ``saphn-sd`` takes at most 1 s per 1280x720 image on this machine
(``benchmarks/latency.py``, torch fp32, 2 threads). The held-out pairs are read only to
report the result. ``python runs/select_weights.py --run runs/saphn-sd.grown --gate 4,6
[--meter runs/blur-extent-v2/blur-extent.safetensors] runs/saphn-sd.grown/snapshots/*.safetensors
runs/saphn-sd.grown/final.safetensors``.

Run from the repository root: ``PYTHONPATH=runs python runs/recipe_saphn_sd.py [--minutes M]``;
resumes when its state exists.
"""

import dataclasses
from pathlib import Path

from recipe_saphn_s import main
from recipe_saphn_s_crop192 import CROP192

from deblur_cli.training.grow import grow_weights

RUN = Path("runs/saphn-sd.grown")
GROWN = dataclasses.replace(CROP192, model="saphn-sd", steps=6_000, lr=1.5e-4, seed=8)
BUNDLED = Path("weights/saphn-s.synth.safetensors")
INIT = RUN / "init.safetensors"  # the bundled weights grown into saphn-sd (same output)

if __name__ == "__main__":
    if not (RUN / "state.json").exists():
        grow_weights(BUNDLED, "saphn-sd", INIT)
    main(RUN, GROWN, init_weights=INIT, val=Path("data/photos/val-pairs"))
