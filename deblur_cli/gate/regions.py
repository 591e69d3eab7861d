"""Blur per region: per-tile readings of the blur-extent network pooled into a map.

For camera shake about an off-centre point, or a sharp subject before a blurred background,
one number per photograph is the wrong question.
:meth:`~deblur_cli.gate.meter.BlurMeter.tile_readings` reads *every* 96 px tile on its own;
:func:`pool_regions` pools the readings under a Gaussian window, weighted by their texture;
:class:`BlurMap` holds the result and turns it into a per-pixel gate (:meth:`BlurMap.weights`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Side of the tiles the blur is read on (the blur-extent network's training crop size).
TILE = 96
#: Gaussian window (px, standard deviation) of the regional estimate: the best of 96, 192 and
#: 384 px on the validation photographs, half-blurred ones included (``docs/experiments/runs/region-gate/RULE.md``).
REGION_SIGMA = 192.0
#: How strongly a region leans on the photograph's own estimate: a region whose texture weight is
#: the photograph's average keeps 1 / (1 + REGION_PRIOR) of its own reading (80 %); a flat one
#: (a clear sky) little of it.
REGION_PRIOR = 0.25


@dataclass(frozen=True)
class BlurMap:
    """Per-region motion-blur estimate of one photograph
    (:meth:`~deblur_cli.gate.meter.BlurMeter.extent_map`).

    ``log_extent`` is ``(ceil(H / 96), ceil(W / 96))`` float32, ``log(1 + extent)`` per 96 px
    tile of the ``(H, W)`` photograph (tile ``(i, j)`` covers rows ``96 i ...``), after
    pooling; ``extent`` is the whole photograph's (px), on which flat regions lean.
    """

    log_extent: np.ndarray
    size: tuple[int, int]
    extent: float

    def extent_px(self) -> np.ndarray:
        """``(ceil(H / 96), ceil(W / 96))`` float32 extent in pixels."""
        return np.maximum(np.expm1(self.log_extent), 0.0).astype(np.float32)

    def weights(self, lo: float, hi: float) -> np.ndarray:
        """The gate per pixel, :func:`~deblur_cli.gate.decision.gate_weight` of each tile's extent, bilinearly
        interpolated between tile centres: ``(H, W)`` float32 in ``[0, 1]``."""
        import cv2

        if not 0 <= lo <= hi:
            raise ValueError(f"gate needs 0 <= lo <= hi, got {lo}, {hi}")
        e = self.extent_px()
        w = (e >= hi).astype(np.float32) if hi == lo else np.clip((e - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        h, wd = self.size
        up = cv2.resize(w, (w.shape[1] * TILE, w.shape[0] * TILE), interpolation=cv2.INTER_LINEAR)
        return np.clip(up[:h, :wd], 0.0, 1.0)


def pool_regions(
    estimates: np.ndarray,
    texture: np.ndarray,
    sigma_tiles: float,
    prior: float = REGION_PRIOR,
    share: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Texture-weighted Gaussian pooling of per-tile estimates.

    ``estimates``: ``(ny, nx)`` per-tile ``log(1 + extent)``; ``texture``: ``(ny, nx)``
    non-negative per-tile texture; ``share``: the part of each tile inside the photograph (1 by
    default; see :func:`tile_shares`). Returns ``(pooled, global)``: ``(ny, nx)`` float32, and
    the weighted mean over all tiles. The weights are ``r = share * texture / (texture + m)``,
    ``m`` the median texture, or a quarter of the mean texture when that is larger (most tiles
    flat: a clipped sky, a synthetic frame; faint noise should not weigh as much as real
    texture): 0 for a flat tile, 1/2 for a typical one. With ``G`` the Gaussian window,
    ``pooled = (G * (r e) + k global) / (G * r + k)``, ``k = prior * mean(r)``: a region
    without texture falls back to the photograph's own estimate. ``sigma_tiles <= 0``: no
    pooling, the raw readings are returned (the weights then only shape ``global``).

    Why not the net's confidence logits, as the whole-photograph estimate uses: they are only
    comparable *within* a softmax, and a sharp edge is far more confident (logits about 10 above)
    than blurred ones; under a window, a sharp half of a photograph outweighs the blurred half
    next to it (measured on half-blurred photographs).
    """
    import cv2

    t = texture.astype(np.float64)
    r = t / (t + max(float(np.median(t)), 0.25 * float(t.mean()), 1e-6))
    if share is not None:
        r = r * share
    e = estimates.astype(np.float64)
    # A photograph without texture anywhere (a flat frame) has no evidence: plain mean, and the
    # prior alone decides each region.
    g = float((r * e).sum() / r.sum()) if r.sum() > 0 else float(e.mean())
    if sigma_tiles <= 0:
        return e.astype(np.float32), g

    def window(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (0, 0), sigmaX=sigma_tiles, sigmaY=sigma_tiles, borderType=cv2.BORDER_REFLECT)

    k = prior * max(float(r.mean()), 1e-6)
    pooled = (window(r * e) + k * g) / (window(r) + k)
    return pooled.astype(np.float32), g


def tile_shares(height: int, width: int) -> np.ndarray:
    """``(ceil(H / 96), ceil(W / 96))`` float64: the part of each 96 px tile of an ``(H, W)``
    photograph that lies inside it (the last row and column are partly mirrored padding)."""
    ny, nx = -(-height // TILE), -(-width // TILE)
    sy = np.minimum(TILE, height - TILE * np.arange(ny)) / TILE
    sx = np.minimum(TILE, width - TILE * np.arange(nx)) / TILE
    return np.outer(sy, sx)


def blur_map_from_readings(estimates: np.ndarray, texture: np.ndarray, size: tuple[int, int], sigma: float) -> BlurMap:
    """The :class:`BlurMap` of an ``(H, W)`` photograph from its
    :meth:`~deblur_cli.gate.meter.BlurMeter.tile_readings` (read once, pooled under several
    windows by ``benchmarks/blur_gate.py``)."""
    pooled, g = pool_regions(estimates, texture, sigma / TILE, share=tile_shares(*size))
    return BlurMap(log_extent=pooled, size=size, extent=max(0.0, math.expm1(g)))

