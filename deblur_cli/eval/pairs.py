"""Evaluation as in the paper's Table 1: PSNR and SSIM on RGB, 8-bit, over the full image.

PSNR is computed on the 8-bit-quantised images. SSIM is Wang et al. (2004) with an 11x11
Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03 on the 0-255 range, computed per RGB
channel and averaged: the same definition as ``skimage.metrics.structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
channel_axis=-1)``, hand-written here with OpenCV filters so that scikit-image is not a
runtime dependency (``tests/test_training.py`` checks the two agree).

The unsharp-mask baseline is tuned per image *with the sharp image as oracle*: the best
(sigma, amount) of a grid by PSNR against the ground truth, an upper bound for any tuning of
that classic sharpener.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from deblur_cli.data.datasets import Pair, read_rgb

USM_SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
USM_AMOUNTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def to_u8(img: np.ndarray) -> np.ndarray:
    """Float ``[0, 1]`` -> rounded 8-bit levels as float64 (0..255)."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.float64)


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB between two float images in ``[0, 1]``, after 8-bit quantisation."""
    mse = float(np.mean((to_u8(pred) - to_u8(target)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM over RGB channels of two ``(H, W, 3)`` float images in ``[0, 1]`` (8-bit quantised)."""
    a, b = to_u8(pred), to_u8(target)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    vals = []
    for ch in range(a.shape[2] if a.ndim == 3 else 1):
        x = a[..., ch] if a.ndim == 3 else a
        y = b[..., ch] if b.ndim == 3 else b
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        # skimage crops (win_size - 1) / 2 pixels on every side before averaging.
        vals.append(float(s[5:-5, 5:-5].mean()) if min(s.shape) > 10 else float(s.mean()))
    return float(np.mean(vals))


def unsharp_mask(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """Classic unsharp masking: ``img + amount * (img - gaussian(img, sigma))``, clipped."""
    low = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return np.clip(img + amount * (img - low), 0.0, 1.0)


def oracle_unsharp_mask(blurred: np.ndarray, sharp: np.ndarray) -> tuple[float, float, float]:
    """Best ``(psnr, sigma, amount)`` of unsharp masking on a grid, judged against ``sharp``."""
    best = (psnr(blurred, sharp), 0.0, 0.0)
    for s in USM_SIGMAS:
        for a in USM_AMOUNTS:
            p = psnr(unsharp_mask(blurred, s, a), sharp)
            if p > best[0]:
                best = (p, s, a)
    return best


@dataclass
class Row:
    """Metrics of one image."""

    name: str
    psnr_in: float
    psnr_out: float
    ssim_in: float
    ssim_out: float
    seconds: float
    psnr_usm: float | None = None

    @property
    def gain(self) -> float:
        return self.psnr_out - self.psnr_in


@dataclass
class Summary:
    """Means over a set, and how many images got worse."""

    count: int
    psnr_in: float
    psnr_out: float
    gain: float
    ssim_in: float
    ssim_out: float
    seconds: float
    worse: int
    psnr_usm: float | None = None
    beats_usm: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    deblur: Callable[[np.ndarray], np.ndarray],
    pairs: Iterable[Pair],
    usm_baseline: bool = False,
    on_row: Callable[[Row], None] | None = None,
) -> tuple[list[Row], Summary]:
    """Run ``deblur`` (``(H, W, 3)`` float RGB in [0, 1] -> same) over pairs and score it.

    Args:
        deblur: the method under test.
        pairs: blurred/sharp pairs.
        usm_baseline: also score oracle-tuned unsharp masking.
        on_row: called after each image (progress display).

    Returns:
        per-image rows and their summary.
    """
    rows = []
    for pair in pairs:
        b, s = read_rgb(pair.blur), read_rgb(pair.sharp)
        if b.shape != s.shape:
            raise ValueError(f"{pair.name}: blurred {b.shape[:2]} and sharp {s.shape[:2]} sizes differ")
        t = time.perf_counter()
        out = deblur(b)
        dt = time.perf_counter() - t
        row = Row(pair.name, psnr(b, s), psnr(out, s), ssim(b, s), ssim(out, s), dt)
        if usm_baseline:
            row.psnr_usm = oracle_unsharp_mask(b, s)[0]
        rows.append(row)
        if on_row is not None:
            on_row(row)
    if not rows:
        raise ValueError("no pairs to evaluate")
    return rows, summarize(rows)


def summarize(rows: list[Row]) -> Summary:
    """Means of the rows (PSNR averaged in dB, as the paper's tables do)."""

    def mean(xs: list[float]) -> float:
        return float(np.mean(xs))

    s = Summary(
        count=len(rows),
        psnr_in=mean([r.psnr_in for r in rows]),
        psnr_out=mean([r.psnr_out for r in rows]),
        gain=mean([r.gain for r in rows]),
        ssim_in=mean([r.ssim_in for r in rows]),
        ssim_out=mean([r.ssim_out for r in rows]),
        seconds=mean([r.seconds for r in rows]),
        worse=sum(r.psnr_out < r.psnr_in for r in rows),
    )
    if all(r.psnr_usm is not None for r in rows):
        s.psnr_usm = mean([r.psnr_usm for r in rows])  # type: ignore[misc]
        s.beats_usm = sum(r.psnr_out > r.psnr_usm for r in rows)  # type: ignore[operator]
    return s
