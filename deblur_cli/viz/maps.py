"""Pictures of what SAPHN did: the maps of Fig. 6-7 (Sec. 4.4) as images and arrays.

Pipeline: one forward pass records the maps of one content-aware module
(:func:`map_recorder` / :func:`collect_maps`), :func:`render_maps` turns them into named RGB
images at the input's size plus a contact sheet, :func:`write_maps` writes them. Everything
after the forward pass is numpy + OpenCV + Pillow (no matplotlib).

Maps (``NAME`` is the middle part of the file names, ``STEM.NAME.png``):

* ``fusion``: fusion mask ``M_fus`` (Eq. 12), 1 = attention, 0 = filtering; blue-white-red.
* ``sa_m1``: spatial mask ``M1`` of the self-attention (Eq. 2), 0-1; viridis.
* ``sa_q{i}``: attention map ``q_i`` (Eq. 4) divided by its mean over the image (1 = uniform
  attention); magma. By default only the most structured one (highest spatial std).
* ``offsets``: principal direction (hue) and elongation (saturation) of the filter taps, in
  image pixels; axial colour wheel.
* ``offsets_hspread``: horizontal spread of the taps (Fig. 7, row 3), image pixels; diverging.
* ``offsets_hshift``: mean horizontal offset over the taps, image pixels; diverging (``extra``).
* ``kernel_var``: variance of the ``K*K`` predicted kernel values ``V`` (Fig. 7, row 4); inferno.
* ``ca_m1``, ``ca_q{i}``, ``cla_m1``, ``cla_q{i}``: the same for the cross-attention (decoder
  blocks) and the cross-level attention (levels 1-2) (``extra``).

**Offsets.** Tap ``k`` of a pixel sits at ``p_k = j_k + delta_k`` (base grid plus offset, in
quarter-resolution pixels, Eq. 11). The 2x2 covariance of the ``K*K`` positions gives the
filter's principal axis (its direction, counter-clockwise from +x with the image's y axis
pointing down, in ``[0, 180)``: a spread is *axial*, 0 == 180 degrees) and its elongation
``sqrt(l1) - sqrt(l2)`` (difference of the standard deviations along the two axes; 0 for the
regular grid and for any isotropic spread), converted to image pixels (x4). The wheel is a
hand-written *axial* version of the Middlebury flow colour wheel: hue = 2 x direction (so
opposite directions share a colour), saturation = elongation / the map's 99th percentile,
white = isotropic. The legend is the wheel itself.

**Horizontal offsets (Fig. 7).** A filter that spreads along a horizontal motion moves its left
taps left and its right taps right, so the *mean* dx is ~0 there. The default
``offsets_hspread`` therefore shows the horizontal *spread*: the standard deviation of the
taps' x positions minus that of the regular grid (image px; > 0 = wider than the grid).
``offsets_hshift`` (with ``--all``) is the mean dx, a shift of the filter's centre.

**Colour maps.** OpenCV's viridis/magma/inferno, and a hand-written blue-white-red diverging
map (Moreland's cool-warm end points) for the signed maps and for ``M_fus``, where white
(0.5) is "both branches equally".

Upsampling: maps are at ``ceil(H/4) x ceil(W/4)``; they are resized bilinearly by 4 and cropped
to ``H x W`` (the offsets' covariance is upsampled before the direction is taken, since angles
cannot be interpolated).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deblur_cli.errors import DeblurError

#: Resolution of the maps relative to the input (``deblur_cli.models.saphn.FEATURE_STRIDE``;
#: not imported: that module imports torch).
FEATURE_STRIDE = 4
#: Number of levels of the hierarchy.
LEVELS = 3
#: Longest side of one panel of the contact sheet.
SHEET_PANEL = 320
#: Width of a legend (colour bar or wheel) in pixels.
LEGEND_WIDTH = 112
#: Opacity of a map blended over the (gray) input.
OVERLAY_ALPHA = 0.5

# ------------------------------------------------------------------------------------ selection


@dataclass(frozen=True)
class MapSelection:
    """Which maps of which content-aware module to render.

    Attributes:
        fusion: ``M_fus``.
        attention: ``M1`` and ``q_maps`` of the attention maps ``q_i``.
        offsets: direction wheel and horizontal spread (and shift if ``extra``).
        kernels: kernel variance.
        level: 1 (finest, the output's level) to 3.
        block: 1-based block index; ``None`` = the last block.
        decoder: decoder (True) or encoder block.
        q_maps: how many ``q_i`` to show, most structured (highest spatial variance) first;
            ``None`` = all ``C2``.
        extra: also cross-attention (``ca_*``), cross-level attention (``cla_*``) and the
            mean horizontal offset.
    """

    fusion: bool = True
    attention: bool = True
    offsets: bool = True
    kernels: bool = True
    level: int = 1
    block: int | None = None
    decoder: bool = True
    q_maps: int | None = 1
    extra: bool = False

    @classmethod
    def from_flags(
        cls,
        *,
        fusion: bool = False,
        attention: bool = False,
        offsets: bool = False,
        kernels: bool = False,
        all_maps: bool = False,
        level: int = 1,
        block: int | None = None,
        decoder: bool = True,
    ) -> MapSelection:
        """The CLI's flags: none of the four groups = the default set (all four groups, one
        ``q_i``); some = only those; ``all_maps`` = every map, every ``q_i``, cross-attention."""
        where = dict(level=level, block=block, decoder=decoder)
        if all_maps:
            return cls(q_maps=None, extra=True, **where)
        if not (fusion or attention or offsets or kernels):
            return cls(**where)
        return cls(fusion=fusion, attention=attention, offsets=offsets, kernels=kernels, **where)

    @property
    def part(self) -> str:
        """``"decoder"`` or ``"encoder"``."""
        return "decoder" if self.decoder else "encoder"

    def prefix(self, blocks: int) -> str:
        """Key prefix of the chosen block, e.g. ``"level1.decoder.block2."``."""
        return f"level{self.level}.{self.part}.block{self.block or blocks}."

    def describe(self, blocks: int | None = None) -> str:
        """E.g. ``"level 1, decoder block 2"``."""
        b = self.block or blocks
        return f"level {self.level}, {self.part} block {b if b is not None else 'last'}"


def check_selection(selection: MapSelection, blocks: int) -> MapSelection:
    """Validate ``level``/``block`` against a model with ``blocks`` blocks per encoder/decoder.

    Returns:
        the selection with ``block`` filled in (the last block if it was ``None``).

    Raises:
        DeblurError: level outside 1-3 or block outside 1-``blocks``.
    """
    if not 1 <= selection.level <= LEVELS:
        raise DeblurError(f"--level must be 1 (finest) to {LEVELS}, got {selection.level}")
    block = selection.block if selection.block is not None else blocks
    if not 1 <= block <= blocks:
        raise DeblurError(
            f"--block must be 1 to {blocks} (this model has {blocks} block(s) per {selection.part}), got {block}"
        )
    return replace(selection, block=block)


def _blocks_in(maps: Iterable[str], level: int, part: str) -> int:
    """Highest block index among ``maps``' keys for ``level``/``part`` (0 if none)."""
    pat = re.compile(rf"^level{level}\.{part}\.block(\d+)\.")
    return max((int(m.group(1)) for k in maps if (m := pat.match(k))), default=0)


# ------------------------------------------------------------------------------- recording maps


class MapRecorder(dict):  # type: ignore[type-arg]
    """A dict to pass as ``maps=`` to ``SAPHN.forward`` that keeps only some keys.

    Each kept tensor is copied to a float32 numpy array ``(B, C, h, w)`` on arrival, so the
    model's own tensors are freed level by level: only the chosen block's maps stay in memory,
    not the maps of every block of every level.

    Args:
        keep: predicate on the key (e.g. ``"level1.decoder.block2.fusion"``).
    """

    def __init__(self, keep: Callable[[str], bool]) -> None:
        super().__init__()
        self._keep = keep

    def __setitem__(self, key: str, value: Any) -> None:
        if self._keep(key):
            super().__setitem__(key, _to_numpy(value))


def map_recorder(selection: MapSelection, blocks: int) -> MapRecorder:
    """A :class:`MapRecorder` for ``selection`` (the chosen block, plus the level's
    cross-level attention when ``selection.extra``)."""
    sel = check_selection(selection, blocks)
    prefixes = [sel.prefix(blocks)]
    if sel.extra:
        prefixes.append(f"level{sel.level}.cla.")
    return MapRecorder(lambda key: key.startswith(tuple(prefixes)))


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device/dtype) or array -> float32 numpy."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def collect_maps(
    model: Any, rgb: np.ndarray, selection: MapSelection, device: Any = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Deblur one image with ``model`` and record the selected maps in the same pass.

    Args:
        model: an eval-mode SAPHN (``torch.nn.Module`` with a ``config``).
        rgb: ``(3, H, W)`` float32 RGB in ``[0, 1]``.
        selection: which block's maps (validated against ``model.config.blocks``).
        device: where to run (default: the model's device).

    Returns:
        ``(output, maps)``: the deblurred ``(3, H, W)`` float32 in ``[0, 1]`` and the recorded
        maps, ``(1, C, ceil(H/4), ceil(W/4))`` float32 each.
    """
    import torch

    blocks = int(model.config.blocks)
    recorder = map_recorder(selection, blocks)
    if device is None:
        device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))[None].to(device)
    with torch.inference_mode():
        y = model(x, maps=recorder)
    out = np.clip(y[0].float().cpu().numpy(), 0.0, 1.0)
    return out, dict(recorder)


# -------------------------------------------------------------------------- measures (pure numpy)


def tap_grid(kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Base positions ``(y, x)`` of the ``K*K`` taps, row-major over the window, ``(K*K,)`` each."""
    r = (kernel_size - 1) // 2
    t = np.arange(kernel_size, dtype=np.float32) - r
    return np.repeat(t, kernel_size), np.tile(t, kernel_size)


def _kernel_size(channels: int) -> int:
    k = int(round(math.sqrt(channels / 2)))
    if 2 * k * k != channels:
        raise ValueError(f"offsets need 2*K*K channels, got {channels}")
    return k


def tap_positions(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tap positions relative to each pixel: base grid plus offsets.

    Args:
        offsets: ``(2*K*K, h, w)``, ``(dy, dx)`` of tap ``k`` at channels ``2k, 2k+1``.

    Returns:
        ``(y, x)``, each ``(K*K, h, w)``, in the offsets' pixels (image y down).
    """
    k = _kernel_size(offsets.shape[0])
    by, bx = tap_grid(k)
    off = offsets.reshape(k * k, 2, *offsets.shape[1:])
    return by[:, None, None] + off[:, 0], bx[:, None, None] + off[:, 1]


def tap_covariance(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel 2x2 covariance ``(sxx, sxy, syy)`` of the tap positions (image x right, y down).

    Args:
        offsets: ``(2*K*K, h, w)`` as in :func:`tap_positions`.

    Returns:
        three ``(h, w)`` arrays in squared pixels of the offsets.
    """
    y, x = tap_positions(offsets)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return (x * x).mean(axis=0), (x * y).mean(axis=0), (y * y).mean(axis=0)


def principal_axis(sxx: np.ndarray, sxy: np.ndarray, syy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direction and elongation of a spread from its covariance (image y down).

    Returns:
        ``(angle_deg, elongation)``: the major axis counter-clockwise from +x as seen on
        screen, in ``[0, 180)`` (a displacement ``(dx, dy)`` has angle ``atan2(-dy, dx)``), and
        ``sqrt(l1) - sqrt(l2)`` (>= 0) in the covariance's units of length.
    """
    # With y pointing up the cross term changes sign.
    angle = 0.5 * np.degrees(np.arctan2(-2.0 * sxy, sxx - syy))
    half = 0.5 * (sxx + syy)
    root = np.sqrt(np.maximum(0.25 * (sxx - syy) ** 2 + sxy**2, 0.0))
    l1, l2 = half + root, np.maximum(half - root, 0.0)
    return np.mod(angle, 180.0).astype(np.float32), (np.sqrt(l1) - np.sqrt(l2)).astype(np.float32)


def offset_directions(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel principal direction (degrees, ``[0, 180)``) and elongation (offset pixels)
    of the filter taps; see :func:`tap_covariance` and :func:`principal_axis`."""
    return principal_axis(*tap_covariance(offsets))


def horizontal_spread(offsets: np.ndarray) -> np.ndarray:
    """Std of the taps' x positions minus the regular grid's (offset pixels), ``(h, w)``."""
    _, bx = tap_grid(_kernel_size(offsets.shape[0]))
    sxx = tap_covariance(offsets)[0]
    return (np.sqrt(sxx) - float(np.sqrt((bx**2).mean()))).astype(np.float32)


def horizontal_shift(offsets: np.ndarray) -> np.ndarray:
    """Mean dx over the taps (offset pixels), ``(h, w)``."""
    k2 = offsets.shape[0] // 2
    return offsets.reshape(k2, 2, *offsets.shape[1:])[:, 1].mean(axis=0).astype(np.float32)


def kernel_variance(kernels: np.ndarray) -> np.ndarray:
    """Variance over the ``K*K`` kernel values ``V`` ``(K*K, h, w)`` -> ``(h, w)``."""
    return kernels.var(axis=0).astype(np.float32)


def upsample(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a quarter-resolution ``(h, w)`` or ``(h, w, c)`` map bilinearly by
    :data:`FEATURE_STRIDE` and crop it to ``(height, width)``."""
    h, w = values.shape[:2]
    big = cv2.resize(
        np.ascontiguousarray(values, dtype=np.float32),
        (w * FEATURE_STRIDE, h * FEATURE_STRIDE),
        interpolation=cv2.INTER_LINEAR,
    )
    if big.shape[0] < height or big.shape[1] < width:
        raise ValueError(f"map of {h}x{w} is too small for an image of {height}x{width}")
    return big[:height, :width]


# ------------------------------------------------------------------------------------ colouring


def _lut_from_stops(stops: list[tuple[int, int, int]]) -> np.ndarray:
    xs = np.linspace(0.0, 1.0, len(stops))
    t = np.linspace(0.0, 1.0, 256)
    arr = np.array(stops, np.float32)
    return np.stack([np.interp(t, xs, arr[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


#: Hand-written diverging map: Moreland's cool-warm end points through near-white.
DIVERGING_LUT = _lut_from_stops([(59, 76, 192), (141, 176, 254), (242, 242, 242), (244, 154, 123), (180, 4, 38)])
_CV_MAPS = {"viridis": cv2.COLORMAP_VIRIDIS, "magma": cv2.COLORMAP_MAGMA, "inferno": cv2.COLORMAP_INFERNO}


def colormap_lut(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 RGB lookup table: ``"viridis"``, ``"magma"``, ``"inferno"`` (OpenCV)
    or ``"diverging"`` (:data:`DIVERGING_LUT`)."""
    if name == "diverging":
        return DIVERGING_LUT
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, _CV_MAPS[name])[:, 0, ::-1].copy()


def colorize(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """Scalar ``(H, W)`` -> ``(H, W, 3)`` uint8 RGB, ``vmin``/``vmax`` at the ends of ``cmap``."""
    span = vmax - vmin
    t = (values - vmin) / span if span > 0 else np.full_like(values, 0.5)
    idx = np.clip(np.nan_to_num(t, nan=0.5) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[idx]


def axial_wheel(angle_deg: np.ndarray, magnitude: np.ndarray, max_magnitude: float) -> np.ndarray:
    """Axial flow-style colours: hue = 2 x direction, saturation = magnitude / max (white = 0).

    Args:
        angle_deg: ``(H, W)`` directions in ``[0, 180)``.
        magnitude: ``(H, W)`` >= 0.
        max_magnitude: magnitude shown fully saturated.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    # OpenCV's 8-bit hue runs 0..179 for 0..358 degrees of hue: an axial angle maps to it 1:1.
    hue = np.mod(np.round(angle_deg), 180).astype(np.uint8)
    sat = np.clip(magnitude / max(max_magnitude, 1e-12) * 255.0, 0, 255).astype(np.uint8)
    hsv = np.stack([hue, sat, np.full_like(hue, 255)], axis=-1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _robust_max(values: np.ndarray, q: float = 99.0) -> float:
    v = float(np.percentile(values, q)) if values.size else 0.0
    if v <= 0:
        v = float(values.max()) if values.size else 0.0
    return v if v > 0 else 1e-6


# ------------------------------------------------------------------------------------ text/legends


def _font(size: int = 13) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def draw_text(
    img: np.ndarray, xy: tuple[int, int], text: str, size: int = 13, color: tuple[int, int, int] = (20, 20, 20),
    anchor: str = "la",
) -> np.ndarray:
    """``img`` (``(H, W, 3)`` uint8) with ``text`` drawn by Pillow (its default FreeType font) at
    ``xy`` with a Pillow ``anchor`` (e.g. ``"lm"``: left, middle)."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text(xy, text, fill=color, font=_font(size), anchor=anchor)
    return np.asarray(pil).copy()


def colorbar(height: int, cmap: str, ticks: list[tuple[float, str]], width: int = LEGEND_WIDTH) -> np.ndarray:
    """A vertical colour bar (bottom = the map's ``vmin``, top = ``vmax``) with labelled ticks.

    Args:
        height: pixel height (at least 60).
        cmap: colour map name (:func:`colormap_lut`).
        ticks: ``(position, label)``, position 0 = bottom, 1 = top; a tick too close to one
            already drawn is skipped (the first ones in the list win).
        width: pixel width.

    Returns:
        ``(height, width, 3)`` uint8 RGB on white.
    """
    height = max(height, 60)
    out = np.full((height, width, 3), 255, np.uint8)
    pad, bar_w = 8, 14
    ramp = np.linspace(255, 0, height - 2 * pad).round().astype(np.uint8)
    out[pad : height - pad, 4 : 4 + bar_w] = colormap_lut(cmap)[ramp][:, None, :]
    out[pad - 1, 3 : 5 + bar_w] = out[height - pad, 3 : 5 + bar_w] = 90
    out[pad - 1 : height - pad + 1, 3] = out[pad - 1 : height - pad + 1, 4 + bar_w] = 90
    drawn: list[int] = []
    for pos, text in ticks:
        if not 0.0 <= pos <= 1.0:
            continue
        y = round(height - pad - pos * (height - 2 * pad - 1))
        if any(abs(y - d) < 13 for d in drawn):
            continue
        drawn.append(y)
        out[y, 4 + bar_w : 8 + bar_w] = 90
        out = draw_text(out, (10 + bar_w, y), text, 11, anchor="lm")
    return out


def wheel_legend(height: int, max_magnitude: float, width: int = LEGEND_WIDTH) -> np.ndarray:
    """The axial colour wheel as a legend: angle on the disc = direction (0 deg right, 90 deg
    up), distance from the centre = elongation up to ``max_magnitude`` image pixels.

    Returns:
        ``(height, width, 3)`` uint8 RGB on white.
    """
    height = max(height, 120)
    out = np.full((height, width, 3), 255, np.uint8)
    d = min(width - 40, height - 54)
    r = d / 2.0
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32)
    dx, dy = xx - (d - 1) / 2.0, yy - (d - 1) / 2.0
    ang = np.mod(np.degrees(np.arctan2(-dy, dx)), 180.0)
    rad = np.hypot(dx, dy)
    disc = axial_wheel(ang, rad, r)
    inside = rad <= r
    top = 18
    left = (width - d) // 2
    region = out[top : top + d, left : left + d]
    region[inside] = disc[inside]
    cx, cy = left + d // 2, top + d // 2
    out = draw_text(out, (left + d + 2, cy), "0", 10, anchor="lm")
    out = draw_text(out, (cx, top - 2), "90", 10, anchor="mb")
    out = draw_text(out, (left - 2, cy), "0", 10, anchor="rm")
    out = draw_text(out, (cx, top + d + 2), "90", 10, anchor="mt")
    out = draw_text(out, (width // 2, top + d + 16), "deg, axial", 10, anchor="mt")
    out = draw_text(out, (width // 2, top + d + 29), f"rim {_fmt(max_magnitude)} px", 10, anchor="mt")
    return out


# ----------------------------------------------------------------------------------- rendering


@dataclass
class _Map:
    """One map ready to draw."""

    name: str
    title: str
    color: np.ndarray  # (H, W, 3) uint8
    legend: Callable[[int], np.ndarray]
    raw: np.ndarray


@dataclass
class RenderedMaps:
    """What :func:`render_maps` produces.

    Attributes:
        images: file-name part -> ``(h, w, 3)`` uint8 RGB. For every map ``NAME``: ``NAME`` (the
            map at the input's size), ``NAME.overlay`` (blended over the input, same size) and
            ``NAME.legend`` (its colour bar or wheel); plus ``sheet``, the contact sheet.
        raw: map name -> float32 values at the input's size, in the units the PNG shows:
            ``(H, W)`` for scalar maps, ``(H, W, 2)`` = (direction deg, elongation px) for
            ``offsets``.
        titles: map name -> title used on the sheet.
        notes: maps that were asked for but the model does not have, one line each.
        block: the key prefix the maps came from, e.g. ``"level1.decoder.block2."``.
    """

    images: dict[str, np.ndarray] = field(default_factory=dict)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    block: str = ""

    @property
    def names(self) -> list[str]:
        """The rendered map names, in sheet order."""
        return list(self.raw)


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image array -> ``(H, W, 3)`` uint8 RGB.

    Accepts ``(H, W)``, ``(H, W, 1-4)`` (alpha dropped, gray replicated) or ``(3, H, W)``
    channel-first float, dtype uint8, uint16 or float in ``[0, 1]``.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3 and a.dtype.kind == "f":
        a = np.moveaxis(a, 0, 2)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {a.shape}")
    if a.shape[2] in (2, 4):
        a = a[..., :-1]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return np.ascontiguousarray((a.astype(np.float32) / 257.0 + 0.5).astype(np.uint8))
    return np.ascontiguousarray((np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1) * 255.0 + 0.5).astype(np.uint8))


def overlay(image: np.ndarray, colors: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend ``colors`` over the gray version of ``image`` (both ``(H, W, 3)`` uint8)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
    out = (1.0 - alpha) * gray + alpha * colors.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _batch0(value: np.ndarray, index: int) -> np.ndarray:
    a = _to_numpy(value)
    return a[index] if a.ndim == 4 else a


def _fmt(v: float) -> str:
    """Short number for a label: 3 significant digits, ``0`` for tiny values."""
    return "0" if abs(v) < 1e-5 else f"{v:.3g}"


def _bar(cmap: str, vmin: float, vmax: float, *ticks: tuple[float, str]) -> Callable[[int], np.ndarray]:
    """Legend factory for a scalar map shown from ``vmin`` to ``vmax``; ticks at values."""
    span = (vmax - vmin) or 1.0
    return lambda h: colorbar(h, cmap, [((v - vmin) / span, t) for v, t in ticks])


def _scalar(
    name: str, title: str, v: np.ndarray, cmap: str, vmin: float, vmax: float, *ticks: tuple[float, str]
) -> _Map:
    """A scalar map coloured from ``vmin`` to ``vmax`` with a colour-bar legend."""
    return _Map(name, title, colorize(v, cmap, vmin, vmax), _bar(cmap, vmin, vmax, *ticks), v)


def _attention_maps(
    get: Callable[[str], np.ndarray | None], branch: str, label: str, hw: tuple[int, int], q_maps: int | None
) -> list[_Map]:
    """``M1`` and the chosen ``q_i`` of one attention module (``branch`` = ``sa``/``ca``/``cla``);
    empty if the model has no such module there."""
    h, w = hw
    maps: list[_Map] = []
    m1 = get(f"{branch}.m1")
    if m1 is None:
        return maps
    v = upsample(m1[0], h, w)
    ticks = ((1, "1 keep"), (0, "0 suppress"), (0.5, "0.5"))
    maps.append(_scalar(f"{branch}_m1", f"{label} mask M1", v, "viridis", 0, 1, *ticks))
    q = get(f"{branch}.q")
    if q is not None:
        # Relative to the mean (1 = uniform attention; the maps are cropped from the padded
        # input, so q itself sums to slightly less than 1 over the image).
        rel = q / np.maximum(q.mean(axis=(1, 2), keepdims=True), 1e-30)
        order = np.argsort(-rel.reshape(rel.shape[0], -1).std(axis=1), kind="stable")
        for i in order[: q_maps if q_maps is not None else len(order)]:
            v = upsample(rel[i], h, w)
            hi = _robust_max(v)
            ticks = ((0, "0"), (hi, f"{_fmt(hi)}x"), (1, "1 = mean"))
            maps.append(_scalar(f"{branch}_q{i + 1}", f"{label} q{i + 1} (x mean)", v, "magma", 0, hi, *ticks))
    return maps


def render_maps(
    maps: Mapping[str, Any],
    image: np.ndarray,
    output: np.ndarray | None = None,
    selection: MapSelection | None = None,
    *,
    index: int = 0,
    caption: str = "",
) -> RenderedMaps:
    """Turn recorded maps into named images (the engine's hook; no network, no files).

    Contract for callers that deblur and visualise in one pass (``deblur image --viz``)::

        sel = MapSelection.from_flags(...)                   # or MapSelection()
        rec = map_recorder(sel, model.config.blocks)         # raises DeblurError on bad level/block
        y = model(x, maps=rec)                               # the ordinary forward, untiled
        r = render_maps(rec, image_rgb8, output_rgb8, sel, index=i)
        write_maps(r, out_dir, stem, raw=raw, overwrite=overwrite)

    The maps must come from one forward pass over the whole image: tiles have their own
    attention (``q`` sums to 1 per tile), so tiled maps would not be comparable.

    Args:
        maps: keys as in ``SAPHN.forward``'s ``maps`` (a :class:`MapRecorder` or the full
            dict), values torch tensors or arrays ``(B, C, ceil(H/4), ceil(W/4))`` or
            ``(C, ceil(H/4), ceil(W/4))``.
        image: the network's input, ``(H, W[, C])`` uint8/uint16/float or ``(3, H, W)`` float;
            sets the output size. If the network saw it padded at the bottom/right (e.g. the
            engine's minimum size), the maps are cropped to ``ceil(H/4) x ceil(W/4)``.
        output: the deblurred image, same forms (shown on the sheet; optional).
        selection: what to render (default :class:`MapSelection`()).
        index: batch element to render when the maps hold a batch.
        caption: text for the sheet's header line (e.g. the file and model names).

    Returns:
        :class:`RenderedMaps`. Maps the model does not have (``saphn-a`` has no offsets; an
        ablation without self-attention has no ``sa_*``) are skipped with a note.

    Raises:
        DeblurError: the chosen level/block is not in ``maps``.
    """
    sel = selection or MapSelection()
    img = as_rgb8(image)
    h, w = img.shape[:2]
    blocks = _blocks_in(maps, sel.level, sel.part)
    if blocks == 0:
        recorded = ", ".join(sorted(maps))[:200] or "none"
        raise DeblurError(f"no maps for level {sel.level} {sel.part} (recorded: {recorded})")
    sel = check_selection(sel, blocks)
    prefix = sel.prefix(blocks)
    where = sel.describe()

    hq, wq = math.ceil(h / FEATURE_STRIDE), math.ceil(w / FEATURE_STRIDE)

    def get(suffix: str, pre: str = prefix) -> np.ndarray | None:
        v = maps.get(pre + suffix)
        if v is None:
            return None
        a = _batch0(v, index)
        if a.shape[-2] < hq or a.shape[-1] < wq:
            size = f"{a.shape[-2]}x{a.shape[-1]}"
            raise ValueError(f"map {pre + suffix} is {size}, less than {hq}x{wq} for a {h}x{w} image")
        return a[..., :hq, :wq]  # an input padded at the bottom/right gives larger maps

    out: list[_Map] = []
    notes: list[str] = []
    if sel.fusion:
        fus = get("fusion")
        if fus is None:
            notes.append(f"fusion mask: not in this model at {where} (no attention branch)")
        else:
            v = upsample(fus[0], h, w)
            ticks = ((1, "1 attention"), (0, "0 filtering"), (0.5, "0.5 equal"))
            out.append(_scalar("fusion", "fusion Mfus", v, "diverging", 0, 1, *ticks))
    if sel.attention:
        # Self-attention; cross-attention too with ``extra``, or instead when there is no SA.
        branches = [("sa", "self-attn")]
        if sel.extra or get("sa.m1") is None:
            branches.append(("ca", "cross-attn"))
        found = False
        for branch, label in branches:
            m = _attention_maps(get, branch, label, (h, w), sel.q_maps)
            out += m
            found = found or bool(m)
        if not found:
            notes.append(f"attention maps: not in this model at {where} (no attention branch)")
        if sel.extra and sel.level in (1, 2):
            level_get = lambda suffix: get(suffix, f"level{sel.level}.")  # noqa: E731
            m = _attention_maps(level_get, "cla", "cross-level", (h, w), sel.q_maps)
            out += m
            if not m:
                notes.append(f"cross-level attention: not in this model at level {sel.level}")
    if sel.offsets:
        off = get("pdf.offsets")
        if off is None:
            notes.append(f"offsets: not predicted by this model at {where} (no learnable offsets, e.g. saphn-a)")
        else:
            s = FEATURE_STRIDE
            cov = np.stack(tap_covariance(off), axis=-1) * (s * s)
            angle, elong = principal_axis(*np.moveaxis(upsample(cov, h, w), -1, 0))
            top = _robust_max(elong)
            wheel = axial_wheel(angle, elong, top)
            raw = np.stack([angle, elong], axis=-1)
            out.append(_Map("offsets", "offset direction", wheel, lambda hh, t=top: wheel_legend(hh, t), raw))
            v = upsample(horizontal_spread(off) * s, h, w)
            m = _robust_max(np.abs(v))
            ticks = ((m, f"+{_fmt(m)} wider"), (-m, f"-{_fmt(m)} narrower"), (0, "0 grid"))
            out.append(_scalar("offsets_hspread", "horizontal spread (px)", v, "diverging", -m, m, *ticks))
            if sel.extra:
                v = upsample(horizontal_shift(off) * s, h, w)
                m = _robust_max(np.abs(v))
                ticks = ((m, f"+{_fmt(m)} right"), (-m, f"-{_fmt(m)} left"), (0, "0"))
                out.append(_scalar("offsets_hshift", "mean dx (px)", v, "diverging", -m, m, *ticks))
    if sel.kernels:
        ker = get("pdf.kernels")
        if ker is None:
            notes.append(f"kernel variance: not predicted by this model at {where} (fixed kernels)")
        else:
            v = upsample(kernel_variance(ker), h, w)
            hi = _robust_max(v)
            out.append(_scalar("kernel_var", "kernel variance V", v, "inferno", 0, hi, (hi, _fmt(hi)), (0, "0")))

    result = RenderedMaps(notes=notes, block=prefix)
    panel_h = _panel_size(h, w)[0]
    panels: list[tuple[str, np.ndarray, np.ndarray | None]] = [("input", img, None)]
    if output is not None:
        panels.append(("deblurred", as_rgb8(output), None))
    for m in out:
        legend = m.legend(panel_h)
        result.images[m.name] = m.color
        result.images[f"{m.name}.overlay"] = overlay(img, m.color)
        result.images[f"{m.name}.legend"] = legend
        result.raw[m.name] = m.raw.astype(np.float32)
        result.titles[m.name] = m.title
        constant = float(np.ptp(m.raw)) < 1e-6
        if constant:  # e.g. an untrained meta-layer: V = 1 and offsets 0 everywhere
            result.notes.append(f"{m.name}: constant ({_fmt(float(m.raw.flat[0]))}) at {where}")
        panels.append((m.title + (" (constant)" if constant else ""), m.color, legend))
    header = " - ".join(t for t in (caption, where) if t)
    result.images["sheet"] = contact_sheet(panels, header)
    return result


def _panel_size(h: int, w: int, side: int = SHEET_PANEL) -> tuple[int, int]:
    s = side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def contact_sheet(
    panels: list[tuple[str, np.ndarray, np.ndarray | None]], header: str = "", columns: int | None = None
) -> np.ndarray:
    """Panels side by side in a grid, each with its title above and its legend to the right.

    Args:
        panels: ``(title, image (H, W, 3) uint8, legend or None)``; all images the same size
            (scaled so the longest side is :data:`SHEET_PANEL`).
        header: a line of text above the grid.
        columns: panels per row (default: up to 4, fewer for tall grids of wide images).

    Returns:
        ``(H', W', 3)`` uint8 RGB on white.
    """
    h0, w0 = panels[0][1].shape[:2]
    ph, pw = _panel_size(h0, w0)
    legend_w = max((lg.shape[1] for _, _, lg in panels if lg is not None), default=0)
    title_h, gap = 22, 10
    cell_w = pw + legend_w + gap
    cell_h = title_h + max(ph, max((lg.shape[0] for _, _, lg in panels if lg is not None), default=0)) + gap
    n = len(panels)
    if columns is None:
        columns = max(1, min(4, math.ceil(math.sqrt(n * cell_h / cell_w))))
    rows = math.ceil(n / columns)
    head_h = 26 if header else 0
    sheet = np.full((head_h + rows * cell_h + gap, columns * cell_w + gap, 3), 255, np.uint8)
    for i, (title, im, lg) in enumerate(panels):
        r, c = divmod(i, columns)
        x, y = gap + c * cell_w, head_h + gap + r * cell_h
        if im.shape[:2] != (ph, pw):
            interp = cv2.INTER_AREA if im.shape[0] > ph else cv2.INTER_LINEAR
            im = cv2.resize(im, (pw, ph), interpolation=interp)
        sheet[y + title_h - 1 : y + title_h + ph + 1, x - 1 : x + pw + 1] = 160  # thin frame
        sheet[y + title_h : y + title_h + ph, x : x + pw] = im
        if lg is not None:
            lh = min(lg.shape[0], sheet.shape[0] - (y + title_h))
            sheet[y + title_h : y + title_h + lh, x + pw : x + pw + lg.shape[1]] = lg[:lh]
        sheet = draw_text(sheet, (x, y + title_h - 5), title, 13, anchor="lb")
    if header:
        sheet = draw_text(sheet, (gap, 18), header, 14, anchor="lb")
    return sheet


def blur_map_panel(
    image: np.ndarray, extent_px: np.ndarray, weights: np.ndarray | None = None, vmax: float = 20.0
) -> np.ndarray:
    """The regional blur estimate over a photograph: ``image`` ``(H, W, 3)`` (any dtype
    :func:`as_rgb8` takes), ``extent_px`` ``(H, W)`` float (pixels of motion blur, e.g.
    :meth:`deblur_cli.gate.meter.BlurMap.extent_px` upsampled), colours from 0 to ``vmax`` px
    (magma). With ``weights``, the regional gate per pixel (:meth:`BlurMap.weights`), the lines
    show what it does: white where it starts to deblur (outside, left as it was), black where it
    deblurs fully (inside). Returns an ``(H, W + legend, 3)`` uint8 RGB panel."""
    rgb = as_rgb8(image)
    h, w = rgb.shape[:2]
    for name, a in (("blur map", extent_px), ("gate weights", weights)):
        if a is not None and a.shape != (h, w):
            raise ValueError(f"{name} {a.shape} does not match the image {(h, w)}")
    out = overlay(rgb, colorize(extent_px.astype(np.float32), "magma", 0.0, vmax))
    if weights is not None:
        thick = max(1, round(max(h, w) / 400))
        for mask, colour in (((weights > 0), (255, 255, 255)), ((weights >= 1), (0, 0, 0))):
            # padded by the line's width and shifted back: the image's own edges are not drawn
            pad = thick + 1
            m = cv2.copyMakeBorder(mask.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE, offset=(-pad, -pad))
            cv2.drawContours(out, contours, -1, colour, thick)
    legend = colorbar(h, "magma", [(0.0, "0 px"), (0.25, f"{vmax / 4:g} px"), (0.5, f"{vmax / 2:g} px"), (1.0, f"{vmax:g} px")])
    if legend.shape[0] > h:  # a short image: pad it to the legend's height
        out = np.concatenate([out, np.full((legend.shape[0] - h, w, 3), 255, np.uint8)])
    return np.concatenate([out, legend], axis=1)


# -------------------------------------------------------------------------------------- writing


def map_paths(rendered: RenderedMaps, out_dir: str | Path, stem: str, raw: bool = False) -> list[Path]:
    """The files :func:`write_maps` writes: ``STEM.NAME.png`` for every image, and
    ``STEM.NAME.npy`` for every map when ``raw``."""
    d = Path(out_dir)
    paths = [d / f"{stem}.{key}.png" for key in rendered.images]
    if raw:
        paths += [d / f"{stem}.{key}.npy" for key in rendered.raw]
    return paths


def write_maps(
    rendered: RenderedMaps, out_dir: str | Path, stem: str, *, raw: bool = False, overwrite: bool = False
) -> list[Path]:
    """Write the rendered maps as PNG files (and ``.npy`` arrays with ``raw``) into ``out_dir``.

    Nothing is written if any target exists and ``overwrite`` is false. Each file is written
    atomically (temporary file + rename).

    Returns:
        the paths written, as :func:`map_paths`.

    Raises:
        DeblurError: an existing file without ``overwrite``, or a write failure.
    """
    from PIL import Image

    from deblur_cli.io.images import atomic_write_bytes

    paths = map_paths(rendered, out_dir, stem, raw)
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more of the files to write)" if len(existing) > 1 else ""
            raise DeblurError(f"{existing[0]}: already exists{more}; use --overwrite to replace")
    d = Path(out_dir)
    for key, img in rendered.images.items():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        atomic_write_bytes(d / f"{stem}.{key}.png", buf.getvalue(), overwrite=True)
    if raw:
        for key, arr in rendered.raw.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(d / f"{stem}.{key}.npy", buf.getvalue(), overwrite=True)
    return paths


def fit_for_viz(pixels: np.ndarray, config: Any, device: Any = None, max_side: int | None = None) -> np.ndarray:
    """Shrink an image for one untiled visualisation pass, and check that the pass fits in memory.

    Args:
        pixels: ``(H, W[, C])`` image array (any dtype :func:`as_rgb8` accepts).
        config: the model's ``SAPHNConfig`` (for the memory estimate).
        device: the device that will run.
        max_side: if given, the image is resized (area interpolation) so that its longest
            side is at most this.

    Raises:
        DeblurError: the image would need more memory than is free (the message suggests a
            ``--max-side`` that fits).
    """
    from deblur_cli.inference.engine import available_memory, estimate_bytes_per_pixel

    h, w = pixels.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        pixels = cv2.resize(pixels, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        h, w = pixels.shape[:2]
    budget = available_memory(device)
    need = estimate_bytes_per_pixel(config) * h * w
    if need > budget:
        fit = int(max(h, w) * math.sqrt(budget / need)) // 8 * 8
        raise DeblurError(
            f"a {w}x{h} image needs about {need / 2**30:.1f} GiB for the untiled pass that the maps need, "
            f"{budget / 2**30:.1f} GiB are free: use --max-side {max(fit, 16)}"
        )
    return pixels


def visualize(
    model: Any, image: np.ndarray, selection: MapSelection | None = None, *, device: Any = None, caption: str = ""
) -> tuple[np.ndarray, RenderedMaps]:
    """Deblur ``image`` with ``model`` and render the selected maps from the same pass.

    Args:
        model: an eval-mode SAPHN ``nn.Module`` (e.g. from ``deblur_cli.hub.loading.load_model``).
        image: ``(H, W[, C])`` uint8/uint16/float image (alpha ignored).
        selection: what to render (default :class:`MapSelection`()).
        device: where to run (default: the model's device).
        caption: header text for the contact sheet.

    Returns:
        ``(output, rendered)``: the deblurred ``(H, W, 3)`` uint8 RGB and :class:`RenderedMaps`.
    """
    from deblur_cli.inference.engine import split_image

    sel = check_selection(selection or MapSelection(), int(model.config.blocks))
    rgb, _, _ = split_image(np.asarray(image))
    out, maps = collect_maps(model, rgb, sel, device)
    rgb8 = as_rgb8(np.moveaxis(rgb, 0, 2))
    out8 = as_rgb8(np.moveaxis(out, 0, 2))
    return out8, render_maps(maps, rgb8, out8, sel, caption=caption)
