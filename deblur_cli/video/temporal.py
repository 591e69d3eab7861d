"""The blur gate over time: one decision per frame, smoothed so that a clip does not flicker.

The image gate (:mod:`deblur_cli.gate.meter`) decides each photograph on its own: untouched below
``lo`` px of estimated blur, fully deblurred from ``hi`` px, blended between. Applied frame by frame,
the estimate's noise (a reading of 3.9 px, then 4.3, then 3.8) turns the network on and off on
consecutive frames, and the eye sees it as flicker: detail that appears and vanishes.
:class:`TemporalGate` removes it in two steps:

1. **Hysteresis.** The gate switches on only when a frame's own weight reaches ``on_level``
   (by default a quarter of the way from ``lo`` to ``hi``) and off only when it falls back to 0,
   so readings that hover about ``lo`` leave the clip untouched instead of toggling.
2. **Exponential moving average** of the weight over time, with a time constant in seconds
   (read from the frame timestamps, so variable frame rates are handled):
   ``w_t = w_{t-1} + a (target_t - w_{t-1})``, ``a = 1 - exp(-dt / tau)``. The strength of the
   deblurring then glides between frames. Weights within ``snap`` of 0 or 1 are snapped, so
   that frames the gate leaves alone skip the network and come out bit for bit.

With the regional gate, each frame's ``(H, W)`` map of weights is smoothed the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Default time constant of the moving average, seconds.
DEFAULT_SMOOTHING = 0.3
#: Default share of the way from the gate's ``lo`` to ``hi`` a frame must reach to switch the gate on.
DEFAULT_ON_LEVEL = 0.25
#: Smoothed weights closer than this to 0 (gate off) or 1 (target 1) are snapped.
SNAP = 0.02


@dataclass(frozen=True)
class FrameGate:
    """The gate for one frame.

    Attributes:
        raw: the frame's own gate weight (the image gate's decision, 0..1; the mean of the map
            with the regional gate).
        weight: the smoothed weight actually applied (the mean of ``pixel_weights`` when set).
        extent: the frame's estimated blur in pixels.
        pixel_weights: the smoothed ``(H, W)`` float32 weights of the regional gate, else ``None``.
    """

    raw: float
    weight: float
    extent: float
    pixel_weights: np.ndarray | None = None


class TemporalGate:
    """Smooths a stream of per-frame gate weights (see the module docstring).

    Args:
        smoothing: time constant ``tau`` of the moving average in seconds; 0 applies each
            frame's own weight (no smoothing, no hysteresis).
        on_level: a frame's own weight that switches the gate on (0..1).
        snap: smoothed weights within this of 0 (while off) or of the target 1 are snapped.
    """

    def __init__(self, smoothing: float = DEFAULT_SMOOTHING, on_level: float = DEFAULT_ON_LEVEL, snap: float = SNAP):
        if not (math.isfinite(smoothing) and smoothing >= 0):
            raise ValueError(f"smoothing must be a finite number of seconds >= 0, got {smoothing}")
        if not 0.0 <= on_level <= 1.0:
            raise ValueError(f"on_level must be in [0, 1], got {on_level}")
        self.smoothing = float(smoothing)
        self.on_level = float(on_level)
        self.snap = float(snap)
        self.on = False
        self._weight: float | None = None
        self._map: np.ndarray | None = None
        self._time: float | None = None

    def alpha(self, dt: float) -> float:
        """Share of the step towards the target taken after ``dt`` seconds."""
        if self.smoothing == 0:
            return 1.0
        return 1.0 - math.exp(-max(dt, 0.0) / self.smoothing)

    def update(
        self, time_s: float, raw: float, extent: float = 0.0, pixel_weights: np.ndarray | None = None
    ) -> FrameGate:
        """Feed the next frame (in presentation order): its time in seconds, its own gate weight
        ``raw`` (and, with the regional gate, its ``(H, W)`` weights); returns what to apply."""
        if self.smoothing == 0:
            return FrameGate(raw, raw, extent, pixel_weights)
        if self.on and raw <= 0.0:
            self.on = False
        elif not self.on and raw >= self.on_level and raw > 0.0:
            self.on = True
        target = raw if self.on else 0.0
        first = self._weight is None
        a = 1.0 if first or self._time is None else self.alpha(time_s - self._time)
        self._time = time_s
        if pixel_weights is None:
            w = target if first else self._weight + a * (target - self._weight)  # type: ignore[operator]
            self._weight = self._snapped(w, target)
            return FrameGate(raw, self._weight, extent)
        goal = pixel_weights if self.on else np.zeros_like(pixel_weights)
        if first or self._map is None or self._map.shape != goal.shape:
            m = goal.astype(np.float32, copy=True)
        else:
            m = self._map + np.float32(a) * (goal - self._map)
        mean = float(m.mean(dtype=np.float64))
        if not self.on and mean < self.snap:
            m = np.zeros_like(m)
            mean = 0.0
        self._map = m.astype(np.float32, copy=False)
        self._weight = mean
        return FrameGate(raw, mean, extent, self._map)

    def _snapped(self, w: float, target: float) -> float:
        if not self.on and w < self.snap:
            return 0.0
        if target >= 1.0 and w > 1.0 - self.snap:
            return 1.0
        return float(min(1.0, max(0.0, w)))


def flicker(weights: list[float] | np.ndarray) -> float:
    """How far a sequence of per-frame weights travels beyond the net change from its first value to its
    last: ``sum |w[t+1] - w[t]| - |w[-1] - w[0]|``. Zero for a monotone ramp; every back-and-forth
    between deblurred and untouched frames adds twice its height."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) < 2:
        return 0.0
    return float(np.abs(np.diff(w)).sum() - abs(w[-1] - w[0]))
