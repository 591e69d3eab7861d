"""Drawing with numpy, OpenCV and Pillow (no matplotlib): colour maps, legends, text, overlays
and the contact sheet.

**Colour maps.** OpenCV's viridis/magma/inferno, and a hand-written blue-white-red diverging
map (Moreland's cool-warm end points) for signed maps and for the fusion mask, where white
(0.5) is "both branches equally". Directions use a hand-written *axial* version of the
Middlebury flow colour wheel (:func:`axial_wheel`): hue = 2 x direction (so opposite
directions share a colour), saturation = magnitude / its maximum, white = none; its legend is
the wheel itself (:func:`wheel_legend`).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

#: Longest side of one panel of the contact sheet.
SHEET_PANEL = 320
#: Width of a legend (colour bar or wheel) in pixels.
LEGEND_WIDTH = 112
#: Opacity of a map blended over the (gray) input.
OVERLAY_ALPHA = 0.5


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


def robust_max(values: np.ndarray, q: float = 99.0) -> float:
    """The ``q``-th percentile of ``values`` (else their maximum) as the top of a colour scale;
    a tiny positive number for an all-zero map, so that a scale never has zero width."""
    v = float(np.percentile(values, q)) if values.size else 0.0
    if v <= 0:
        v = float(values.max()) if values.size else 0.0
    return v if v > 0 else 1e-6


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
    out = draw_text(out, (width // 2, top + d + 29), f"rim {short_number(max_magnitude)} px", 10, anchor="mt")
    return out


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


def short_number(v: float) -> str:
    """Short number for a label: 3 significant digits, ``0`` for tiny values."""
    return "0" if abs(v) < 1e-5 else f"{v:.3g}"


def panel_size(h: int, w: int, side: int = SHEET_PANEL) -> tuple[int, int]:
    """``(height, width)`` of an ``h x w`` image scaled so its longest side is ``side``."""
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
    ph, pw = panel_size(h0, w0)
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

