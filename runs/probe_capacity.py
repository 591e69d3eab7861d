"""Session 13: can the bundled ``saphn-s`` even fit a few blurred crops far beyond +1 dB?

Why: every run since run 5 levels off near +0.78 dB on the validation pairs, and session 10
found the bundled weights gain as little on training photographs (+0.84 dB) as on held-out ones
(+0.86): not over-fitting but under-fitting. This probe asks how far the network gets when the
task is made as easy as it can be: 64 fixed 128 px crops of training photographs, blurred by
12-18 px (linear or shake; no noise, JPEG, defocus or nearly sharp samples), trained on over and
over (Adam 5e-4, batches of 8 drawn from the 64, the PSNR loss at level weights 0.25/0.5/1,
gradient clipping at 1), starting from the bundled weights. "fit set" is the mean PSNR gain
on the 64 crops (per-crop PSNR, as the loss); "fresh crops" on 32 other crops from the same
photographs.

Result (session 13, AMD EPYC, 2 threads, 603-612 s; the same figures from this script and from
its first draft)::

    step 0:   fit set +0.88 dB, fresh crops +1.50
    step 100: fit set +1.12 dB, fresh crops +0.92
    step 200: fit set +1.71 dB, fresh crops +0.87
    step 300: fit set +1.72 dB, fresh crops +0.68
    step 400: fit set +1.93 dB, fresh crops +0.93
    step 500: fit set +2.46 dB, fresh crops +0.63
    step 600: fit set +2.58 dB, fresh crops +0.38

After 75 passes over 64 crops the network is at +2.6 dB on the very crops it trains on, while
it gets worse on others: the 0.59 M-parameter network cannot, in minutes of CPU, even memorise
a +3 dB answer for 64 crops. The bar of issue 6 (+3 dB on unseen photographs) asks far more of
it than this.

Run from the repository root: ``python runs/probe_capacity.py [LR]``.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from deblur_cli.data.datasets import SyntheticPairs
from deblur_cli.data.synthetic import BlurSettings
from deblur_cli.loading import load_model
from deblur_cli.training.trainer import TrainConfig, restoration_loss


def mean_gain(model: torch.nn.Module, blurred: torch.Tensor, sharp: torch.Tensor) -> float:
    """Mean over crops of PSNR(out) - PSNR(in), in dB; ``(N, 3, H, W)`` in [0, 1]."""
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(blurred[i : i + 8]) for i in range(0, len(blurred), 8)]).clamp(0, 1)
    model.train()

    def psnr(a: torch.Tensor) -> float:
        return (-10 * torch.log10(((a - sharp) ** 2).mean(dim=(1, 2, 3)))).mean().item()

    return psnr(out) - psnr(blurred)


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    settings = BlurSettings(length=(12.0, 18.0), sharp_prob=0.0, noise_prob=0.0, jpeg_prob=0.0)
    fit_b, fit_s = map(torch.from_numpy, SyntheticPairs(Path("data/photos/train"), 128, settings, seed=5).batch(64))
    new_b, new_s = map(torch.from_numpy, SyntheticPairs(Path("data/photos/train"), 128, settings, seed=6).batch(32))
    model, _ = load_model(weights="weights/saphn-s.synth.safetensors")
    model.train()
    cfg = TrainConfig(model="saphn-s", loss="psnr", level_weights=(0.25, 0.5, 1.0))
    opt = torch.optim.Adam(model.parameters(), float(sys.argv[1]) if len(sys.argv) > 1 else 5e-4)
    print(
        f"step 0: fit set {mean_gain(model, fit_b, fit_s):+.2f} dB, fresh crops {mean_gain(model, new_b, new_s):+.2f}"
    )
    rng, t = np.random.default_rng(0), time.time()
    for step in range(1, 601):
        idx = torch.from_numpy(rng.choice(64, 8, replace=False))
        levels: list[torch.Tensor] = []
        model(fit_b[idx], levels=levels)
        loss = restoration_loss(cfg, levels, fit_s[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            fit, new = mean_gain(model, fit_b, fit_s), mean_gain(model, new_b, new_s)
            print(f"step {step}: fit set {fit:+.2f} dB, fresh crops {new:+.2f} ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
