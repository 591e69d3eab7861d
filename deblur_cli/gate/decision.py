"""The gate's rule: how much of the deblurred image to keep, from the measured blur.

:func:`gate_weight` is ``w = clip((extent - lo) / (hi - lo), 0, 1)``; the output is
``input + w * (deblurred - input)`` (:func:`apply_gate`): untouched below ``lo`` px, fully
deblurred from ``hi`` px, a blend between. :func:`decide_gate` reads the blur with a
:class:`~deblur_cli.gate.meter.BlurMeter`, per photograph or per region
(:class:`~deblur_cli.gate.regions.BlurMap`), and returns a :class:`GateDecision`.
:func:`parse_gate` and :func:`check_gate` read the ``--gate`` option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    from deblur_cli.gate.meter import BlurMeter
    from deblur_cli.gate.regions import BlurMap

#: Default gate: untouched below ``lo`` px, fully deblurred from ``hi`` px. Chosen on the
#: validation photographs (see weights/MODEL_CARD.md, "Blur gate").
DEFAULT_GATE: tuple[float, float] = (4.0, 6.0)


@dataclass(frozen=True)
class GateDecision:
    """What the gate did with one image: its estimated blur and the share of the deblurred
    image kept (0: returned untouched, without running the deblurring network).

    With the regional gate, ``blur_map`` is the photograph's
    :class:`~deblur_cli.gate.regions.BlurMap` and ``gate`` the thresholds, :meth:`pixel_weights`
    the ``(H, W)`` per-pixel gate (computed when needed, not kept: 96 MB for 24 megapixels),
    ``weight`` its mean and ``extent_range`` the least and most blurred regions' estimates (px).
    ``extent`` is the whole-photograph estimate in both scopes."""

    extent: float
    weight: float
    blur_map: BlurMap | None = field(default=None, compare=False, repr=False)
    gate: tuple[float, float] | None = None
    extent_range: tuple[float, float] | None = None

    def pixel_weights(self) -> np.ndarray | None:
        """The per-pixel gate ``(H, W)`` float32 of the regional gate, or ``None``."""
        if self.blur_map is None or self.gate is None:
            return None
        return self.blur_map.weights(*self.gate)


#: Where the gate reads the blur: one estimate per photograph, or one per region.
GATE_SCOPES = ("image", "region")


def decide_gate(
    meter: BlurMeter, rgb: np.ndarray, lo: float, hi: float, scope: str = "image", blur_map: BlurMap | None = None
) -> GateDecision:
    """The gate's decision for an ``(H, W, 3)`` float RGB image in ``[0, 1]``.

    ``scope="image"``: one :meth:`BlurMeter.estimate` and :func:`gate_weight`. ``"region"``:
    the same estimate (reported as ``extent``), and :meth:`BlurMeter.extent_map` (window
    :data:`~deblur_cli.gate.regions.REGION_SIGMA`; or ``blur_map`` when already computed) gated per pixel by
    :meth:`BlurMap.weights`.
    """
    if scope not in GATE_SCOPES:
        raise ValueError(f"gate scope must be one of {', '.join(GATE_SCOPES)}, got {scope!r}")
    extent = meter.estimate(rgb).extent
    if scope == "image":
        return GateDecision(extent=extent, weight=gate_weight(extent, lo, hi))
    bm = meter.extent_map(rgb) if blur_map is None else blur_map
    px = bm.extent_px()
    weight = float(bm.weights(lo, hi).mean(dtype=np.float64))
    return GateDecision(extent=extent, weight=weight, blur_map=bm, gate=(lo, hi), extent_range=(float(px.min()), float(px.max())))


def gate_weight(extent: float, lo: float, hi: float) -> float:
    """How much of the deblurred image to keep: 0 below ``lo`` px, 1 from ``hi`` px, linear between."""
    if not 0 <= lo <= hi:
        raise ValueError(f"gate needs 0 <= lo <= hi, got {lo}, {hi}")
    if hi == lo:
        return 1.0 if extent >= hi else 0.0
    return float(min(1.0, max(0.0, (extent - lo) / (hi - lo))))


def apply_gate(
    blurred: np.ndarray, deblurred: np.ndarray, weight: float | np.ndarray, inplace: bool = False
) -> np.ndarray:
    """``blurred + weight * (deblurred - blurred)``, for two float arrays of the same shape (e.g.
    ``(3, H, W)`` float32 in ``[0, 1]``); ``weight`` a number or a per-pixel ``(H, W)`` map
    (:meth:`BlurMap.weights`). Returns ``blurred`` itself (no copy) where the weight is 0
    everywhere and ``deblurred`` itself where it is 1 everywhere. With a map, the result is
    exactly ``blurred`` where the map is 0 and ``deblurred`` where it is 1. ``inplace`` writes
    the result into ``deblurred`` (unless the two share memory): a 24-megapixel blend then
    needs two ``(H, W)`` buffers beside the map instead of image-sized temporaries."""
    if blurred.shape != deblurred.shape:
        raise ValueError(f"blurred {blurred.shape} and deblurred {deblurred.shape} differ")
    if deblurred.dtype.kind != "f" or blurred.dtype.kind != "f":
        raise ValueError(f"apply_gate blends float arrays, got {blurred.dtype} and {deblurred.dtype}")
    if np.ndim(weight) == 0:
        w0 = float(weight)
        if w0 <= 0.0:
            return blurred
        if w0 >= 1.0:
            return deblurred
        w = np.full(blurred.shape[-2:], w0, np.float32)
    else:
        w = np.asarray(weight, dtype=np.float32)
        if w.shape != blurred.shape[-2:]:
            raise ValueError(f"weight map {w.shape} does not match the image {blurred.shape}")
        if not w.any():
            return blurred
        if (w >= 1.0).all():
            return deblurred
    keep = 1.0 - w
    own = inplace and not np.may_share_memory(blurred, deblurred)
    out = deblurred if own else np.empty_like(deblurred)
    tmp = np.empty(w.shape, deblurred.dtype)
    # w d + (1 - w) b, not b + w (d - b): exactly b where w is 0 and d where it is 1
    for idx in np.ndindex(blurred.shape[:-2]):  # one (H, W) plane at a time
        np.multiply(blurred[idx], keep, out=tmp)
        np.multiply(deblurred[idx], w, out=out[idx])
        out[idx] += tmp
    return out


def parse_gate(text: str) -> tuple[float, float] | None:
    """``"off"`` -> None; ``"auto"`` -> :data:`DEFAULT_GATE`; ``"LO,HI"`` (px) -> ``(LO, HI)``."""
    t = text.strip().lower()
    if t == "off":
        return None
    if t == "auto":
        return DEFAULT_GATE
    try:
        lo, hi = (float(v) for v in t.split(","))
    except ValueError:
        raise DeblurError(f"--gate must be 'auto', 'off' or 'LO,HI' in pixels, got {text!r}") from None
    return check_gate(lo, hi)


def check_gate(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` if they are gate thresholds (finite pixels, ``0 <= lo <= hi``).

    Raises:
        DeblurError: they are not.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise DeblurError(f"--gate LO,HI needs finite 0 <= LO <= HI pixels, got {lo:g},{hi:g}")
    return lo, hi
