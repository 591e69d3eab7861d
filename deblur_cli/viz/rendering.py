"""The recorded maps of one content-aware module as named pictures, and their files.

:func:`render_maps` turns maps recorded in one forward pass (:mod:`deblur_cli.viz.recording`)
into RGB images at the input's size plus a contact sheet; :func:`write_maps` writes them.

Maps (``NAME`` is the middle part of the file names, ``STEM.NAME.png``):

* ``fusion``: fusion mask ``M_fus`` (Eq. 12), 1 = attention, 0 = filtering; blue-white-red.
* ``sa_m1``: spatial mask ``M1`` of the self-attention (Eq. 2), 0-1; viridis.
* ``sa_q{i}``: attention map ``q_i`` (Eq. 4) divided by its mean over the image (1 = uniform
  attention); magma. By default only the most structured one (highest spatial std).
* ``offsets``: principal direction (hue) and elongation (saturation) of the filter taps, in
  image pixels; axial colour wheel (saturation = elongation / the map's 99th percentile).
* ``offsets_hspread``: horizontal spread of the taps (Fig. 7, row 3), image pixels; diverging.
* ``offsets_hshift``: mean horizontal offset over the taps, image pixels; diverging (``extra``).
* ``kernel_var``: variance of the ``K*K`` predicted kernel values ``V`` (Fig. 7, row 4); inferno.
* ``ca_m1``, ``ca_q{i}``, ``cla_m1``, ``cla_q{i}``: the same for the cross-attention (decoder
  blocks) and the cross-level attention (levels 1-2) (``extra``).

The measures behind them are in :mod:`deblur_cli.viz.geometry` (offsets in image pixels: the
quarter-resolution measures times 4), the colours and legends in :mod:`deblur_cli.viz.drawing`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deblur_cli.errors import DeblurError
from deblur_cli.viz.drawing import (
    as_rgb8,
    axial_wheel,
    colorbar,
    colorize,
    contact_sheet,
    overlay,
    panel_size,
    robust_max,
    short_number,
    wheel_legend,
)
from deblur_cli.viz.geometry import (
    FEATURE_STRIDE,
    horizontal_shift,
    horizontal_spread,
    kernel_variance,
    principal_axis,
    tap_covariance,
    upsample,
)
from deblur_cli.viz.recording import MapSelection, as_float_array, blocks_in, check_selection


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



def _batch0(value: np.ndarray, index: int) -> np.ndarray:
    a = as_float_array(value)
    return a[index] if a.ndim == 4 else a



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
            hi = robust_max(v)
            ticks = ((0, "0"), (hi, f"{short_number(hi)}x"), (1, "1 = mean"))
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
    """Turn recorded maps into named images (no network, no files).

    Contract for callers that deblur and visualise in one pass (``deblur image --viz``)::

        sel = MapSelection.from_flags(...)                   # or MapSelection()
        rec = map_recorder(sel, model.config.blocks)         # raises DeblurError on bad level/block
        with rec.attach(model):
            y = model(x)                                     # the ordinary forward, untiled
        r = render_maps(rec, image_rgb8, output_rgb8, sel, index=i)
        write_maps(r, out_dir, stem, raw=raw, overwrite=overwrite)

    The maps must come from one forward pass over the whole image: tiles have their own
    attention (``q`` sums to 1 per tile), so tiled maps would not be comparable.

    Args:
        maps: keys as recorded by a :class:`~deblur_cli.viz.recording.MapRecorder`, values
            arrays (or torch tensors) ``(B, C, ceil(H/4), ceil(W/4))`` or
            ``(C, ceil(H/4), ceil(W/4))``.
        image: the network's input, ``(H, W[, C])`` uint8/uint16/float or ``(3, H, W)`` float;
            sets the output size. If the network saw it padded at the bottom/right (e.g. the
            Deblurrer's minimum size), the maps are cropped to ``ceil(H/4) x ceil(W/4)``.
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
    blocks = blocks_in(maps, sel.level, sel.part)
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
            level_get = lambda suffix: get(suffix, f"level{sel.level}.")
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
            top = robust_max(elong)
            wheel = axial_wheel(angle, elong, top)
            raw = np.stack([angle, elong], axis=-1)
            out.append(_Map("offsets", "offset direction", wheel, lambda hh, t=top: wheel_legend(hh, t), raw))
            v = upsample(horizontal_spread(off) * s, h, w)
            m = robust_max(np.abs(v))
            ticks = ((m, f"+{short_number(m)} wider"), (-m, f"-{short_number(m)} narrower"), (0, "0 grid"))
            out.append(_scalar("offsets_hspread", "horizontal spread (px)", v, "diverging", -m, m, *ticks))
            if sel.extra:
                v = upsample(horizontal_shift(off) * s, h, w)
                m = robust_max(np.abs(v))
                ticks = ((m, f"+{short_number(m)} right"), (-m, f"-{short_number(m)} left"), (0, "0"))
                out.append(_scalar("offsets_hshift", "mean dx (px)", v, "diverging", -m, m, *ticks))
    if sel.kernels:
        ker = get("pdf.kernels")
        if ker is None:
            notes.append(f"kernel variance: not predicted by this model at {where} (fixed kernels)")
        else:
            v = upsample(kernel_variance(ker), h, w)
            hi = robust_max(v)
            out.append(_scalar("kernel_var", "kernel variance V", v, "inferno", 0, hi, (hi, short_number(hi)), (0, "0")))

    result = RenderedMaps(notes=notes, block=prefix)
    panel_h = panel_size(h, w)[0]
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
            result.notes.append(f"{m.name}: constant ({short_number(float(m.raw.flat[0]))}) at {where}")
        panels.append((m.title + (" (constant)" if constant else ""), m.color, legend))
    header = " - ".join(t for t in (caption, where) if t)
    result.images["sheet"] = contact_sheet(panels, header)
    return result



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

