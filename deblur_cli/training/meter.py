"""Training the blur-extent network (:mod:`deblur_cli.gate.meter`) on synthetic blur.

Each sample is a luma crop with a known label: a random patch of a sharp photograph
(:meth:`SyntheticPairs.random_patch`: rescaled, flipped, rotated), sometimes defocused (the label
stays 0: defocus is not motion blur), then either left sharp (``zero_prob``) or blurred by
:func:`~deblur_cli.data.synthetic.degrade` with an extent drawn log-uniformly from ``extent``
(linear PSF or camera shake, half each), then noise and JPEG as for SAPHN's training data.
Target: ``log(1 + extent)``. The crops are generated once (generation, not the small network,
dominates the cost on a CPU) and the network is trained on them with L1 on the pooled estimate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deblur_cli.data.datasets import SyntheticPairs
from deblur_cli.data.synthetic import BlurSettings, add_noise_jpeg, defocus, degrade, quantize
from deblur_cli.gate.meter import TILE, BlurExtentNet, to_luma


@dataclass
class ExtentConfig:
    """A blur-extent training run."""

    samples: int = 20_000
    crop: int = TILE
    zero_prob: float = 0.3  # sharp samples (label 0)
    extent: tuple[float, float] = (0.7, 32.0)  # log-uniform range of blurred samples, px
    defocus_prob: float = 0.3
    candidates: int = 4  # random patches drawn per sample; the most textured is kept
    width: int = 16
    batch: int = 64
    steps: int = 4_000
    lr: float = 1e-3
    seed: int = 0
    blur: dict = field(default_factory=dict)  # more BlurSettings overrides (noise, JPEG)

    def settings(self) -> BlurSettings:
        return BlurSettings(length=(1.0, self.extent[1]), defocus_prob=self.defocus_prob, **self.blur)


def make_samples(
    folder: Path, cfg: ExtentConfig, n: int | None = None, seed: int | None = None, log: Callable[[str], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled crops from the photographs in ``folder``.

    Returns:
        ``(luma, extent)``: ``(n, crop, crop)`` float16 luma of the 8-bit degraded crop, and
        ``(n,)`` float32 extents in pixels (0 = sharp).
    """
    n = cfg.samples if n is None else n
    settings = cfg.settings()
    pairs = SyntheticPairs(folder, crop=cfg.crop, settings=settings, seed=cfg.seed if seed is None else seed)
    rng = pairs.rng
    m, c = pairs.margin, cfg.crop
    lo, hi = math.log(cfg.extent[0]), math.log(cfg.extent[1])
    luma = np.empty((n, c, c), np.float16)
    extent = np.zeros(n, np.float32)
    t0 = time.perf_counter()
    for i in range(n):
        # The most textured of a few random patches: at inference the estimate is taken on the
        # most textured tiles of a photograph, and a flat patch says nothing about blur.
        candidates = [pairs.random_patch() for _ in range(cfg.candidates)]
        patch = max(candidates, key=lambda p: _texture(p[m : m + c, m : m + c]))
        if rng.random() < cfg.defocus_prob:
            patch = defocus(patch, rng, settings)
        if rng.random() >= cfg.zero_prob:
            extent[i] = math.exp(rng.uniform(lo, hi))
            kind = "linear" if rng.random() < 0.5 else "shake"
            patch = degrade(patch, rng, settings, kind=kind, extent=float(extent[i]))
        img = quantize(add_noise_jpeg(patch[m : m + c, m : m + c], rng, settings))
        luma[i] = to_luma(img)
        if log and (i + 1) % 5000 == 0:
            log(f"generated {i + 1}/{n} crops ({time.perf_counter() - t0:.0f} s)")
    return luma, extent


def _texture(rgb: np.ndarray) -> float:
    """Mean absolute Laplacian of the luma (what :func:`~deblur_cli.gate.meter.textured_tiles` ranks by)."""
    import cv2

    return float(np.abs(cv2.Laplacian(to_luma(rgb), cv2.CV_32F)).mean())


def train_extent(
    luma: np.ndarray,
    extent: np.ndarray,
    cfg: ExtentConfig,
    log: Callable[[str], None] | None = None,
) -> tuple[BlurExtentNet, list[float]]:
    """Train a :class:`BlurExtentNet` on labelled crops (Adam, cosine decay, L1 on ``log(1 + extent)``).

    Returns:
        the network (eval mode) and the mean training loss of every 100 steps.
    """
    torch.manual_seed(cfg.seed)
    gen = np.random.default_rng(cfg.seed)
    net = BlurExtentNet(width=cfg.width)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 0.01)
    target_all = torch.from_numpy(np.log1p(extent).astype(np.float32))
    history: list[float] = []
    running = []
    net.train()
    for step in range(1, cfg.steps + 1):
        idx = gen.integers(0, len(luma), cfg.batch)
        x = torch.from_numpy(luma[idx].astype(np.float32))[:, None]
        pred = net.pooled(x)
        loss = (pred - target_all[idx]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % 100 == 0:
            history.append(float(np.mean(running)))
            running = []
            if log:
                log(f"step {step} loss {history[-1]:.4f}")
    return net.eval(), history


@torch.inference_mode()
def predict_crops(net: BlurExtentNet, luma: np.ndarray, batch: int = 256) -> np.ndarray:
    """Extent in px of each crop: ``(n, crop, crop)`` -> ``(n,)``."""
    out = []
    for i in range(0, len(luma), batch):
        x = torch.from_numpy(luma[i : i + batch].astype(np.float32))[:, None]
        out.append(torch.expm1(net.pooled(x)).clamp_min(0).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
