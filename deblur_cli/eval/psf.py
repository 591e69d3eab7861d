"""The paper's PSF-direction experiment (Sec. 4.4, "PDF Module").

The paper blurs 25 sharp images with linear PSFs at 0, 45, 90 and 135 degrees, runs the
network and records "the dominant direction of filter offsets estimated by our PDF module":
11, 50, 81 and 126 degrees. We do the same:

1. **Blur.** Each sharp photo (sRGB) is decoded to linear light, convolved with
   :func:`deblur_cli.data.synthetic.linear_psf` (``length`` px, the given angle,
   counter-clockwise from +x with the image's y axis pointing down), encoded back to sRGB
   and rounded to 8 bits, exactly as :func:`deblur_cli.data.synthetic.degrade` does for its
   linear PSFs (which draws the angle at random, hence not called directly).
2. **Per pixel.** In every chosen PDF module, the ``K*K`` tap positions (base grid plus
   offsets) give a principal direction ``theta`` in ``[0, 180)`` and an elongation ``e``
   (:func:`deblur_cli.viz.geometry.offset_directions`).
3. **Per image.** The dominant direction is the *axial* circular mean of ``theta`` over all
   pixels of all chosen modules, weighted by ``e``: ``0.5 * atan2(sum e sin 2theta,
   sum e cos 2theta)``. Doubling the angle makes 0 and 180 degrees the same direction
   (a filter's spread has no sign). Its spread is the axial circular standard deviation
   ``0.5 * sqrt(-2 ln R)`` (``R`` = mean resultant length), in degrees.
4. **Per angle.** The axial mean (and spread) of the per-image directions.

If no tap moves (``e == 0`` everywhere: a model without learnable offsets, or an untrained
meta-layer) the direction is undefined and reported as ``NaN``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deblur_cli.errors import DeblurError
from deblur_cli.viz.geometry import FEATURE_STRIDE, offset_directions
from deblur_cli.viz.recording import MapRecorder

#: The paper's PSF angles and the dominant offset directions it reports (Sec. 4.4).
PAPER_REFERENCE: dict[float, float] = {0.0: 11.0, 45.0: 50.0, 90.0: 81.0, 135.0: 126.0}
#: Default PSF angles (degrees).
DEFAULT_ANGLES: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
#: Default blur length in pixels (the paper does not give one; mid-range of our training data).
DEFAULT_LENGTH = 15.0
#: Default number of images (the paper used 25).
DEFAULT_MAX_IMAGES = 25
#: Default longest side images are reduced to (keeps a CPU run to seconds per image).
DEFAULT_MAX_SIDE = 256
#: Default PDF modules: every decoder block of the finest level.
DEFAULT_MODULES = "level1.decoder"

_MODULE = re.compile(r"^level[123](\.(encoder|decoder)(\.block\d+)?)?$")


# --------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class AxialStats:
    """Axial (0 == 180 degrees) circular statistics.

    Attributes:
        mean: mean direction in ``[0, 180)`` degrees, ``NaN`` if undefined (no weight).
        spread: circular standard deviation in degrees (``NaN`` if undefined).
        resultant: mean resultant length ``R`` of the doubled angles, in ``[0, 1]``
            (1 = all equal, 0 = no preferred direction).
        weight: total weight.
    """

    mean: float
    spread: float
    resultant: float
    weight: float


def axial_mean(
    angles_deg: np.ndarray | Sequence[float], weights: np.ndarray | Sequence[float] | None = None
) -> AxialStats:
    """Weighted axial circular mean and spread of directions in degrees (period 180).

    Args:
        angles_deg: any shape.
        weights: same shape, >= 0 (default: all 1). NaN angles are ignored.
    """
    a = np.asarray(angles_deg, dtype=np.float64).ravel()
    w = np.ones_like(a) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(w)
    a, w = a[ok], np.maximum(w[ok], 0.0)
    total = float(w.sum())
    if total <= 0.0:
        return AxialStats(math.nan, math.nan, 0.0, 0.0)
    c = float((w * np.cos(np.radians(2.0 * a))).sum()) / total
    s = float((w * np.sin(np.radians(2.0 * a))).sum()) / total
    r = min(1.0, math.hypot(c, s))
    if r < 1e-12:
        return AxialStats(math.nan, math.nan, 0.0, total)
    mean = (0.5 * math.degrees(math.atan2(s, c))) % 180.0
    spread = 0.5 * math.degrees(math.sqrt(-2.0 * math.log(r))) if r < 1.0 else 0.0
    return AxialStats(mean, spread, r, total)


def axial_difference(a: float, b: float) -> float:
    """Signed ``a - b`` for directions in degrees, wrapped to ``[-90, 90)``."""
    return (a - b + 90.0) % 180.0 - 90.0


def dominant_direction(offsets: Sequence[np.ndarray]) -> AxialStats:
    """Dominant direction of one image's filter offsets: the elongation-weighted axial mean of
    the per-pixel principal directions, pooled over modules.

    Args:
        offsets: one ``(2*K*K, h, w)`` array per PDF module (``(dy, dx)`` per tap).
    """
    return axial_mean(*_pooled_directions(offsets))


def _pooled_directions(offsets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel directions and elongations of all modules, flattened and concatenated."""
    if not offsets:
        raise ValueError("no offsets given")
    angles, elongations = zip(*(offset_directions(o) for o in offsets))
    return np.concatenate([a.ravel() for a in angles]), np.concatenate([e.ravel() for e in elongations])


# ----------------------------------------------------------------------------------- blurring


def blur_linear(sharp: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    """Blur an sRGB image with a linear PSF in linear light, rounded to 8-bit levels.

    Args:
        sharp: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.
        length: PSF length in pixels.
        angle_deg: PSF direction, counter-clockwise from +x (image y down).

    Returns:
        ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.
    """
    from deblur_cli.data.synthetic import linear_psf, linear_to_srgb, quantize, srgb_to_linear

    psf = linear_psf(length, angle_deg)
    lin = cv2.filter2D(srgb_to_linear(sharp), -1, psf, borderType=cv2.BORDER_REFLECT)
    return quantize(linear_to_srgb(lin))


# ------------------------------------------------------------------------------------- images


def default_image_dir() -> Path:
    """scikit-image's bundled photographs (``skimage/data``).

    Raises:
        DeblurError: scikit-image is not installed.
    """
    try:
        from deblur_cli.data.photos import skimage_data_dir

        folder = skimage_data_dir()
    except ModuleNotFoundError:
        raise DeblurError(
            "no --images folder given and scikit-image (whose sample photos are the default) is not "
            "installed: pass --images DIR with sharp photographs, or `pip install scikit-image`"
        ) from None
    return folder


def default_image_files() -> list[Path]:
    """The textured photographs of ``skimage/data`` (held-out ones first), as the training
    set lists them (``deblur_cli.data.photos``): no logos, charts or already-blurred photos."""
    from deblur_cli.data.photos import HELDOUT, SKIMAGE_TRAIN

    folder = default_image_dir()
    files = [folder / n for n in [*HELDOUT["skimage"], *SKIMAGE_TRAIN] if (folder / n).is_file()]
    if not files:
        raise DeblurError(f"no sample photographs found in {folder}: pass --images DIR")
    return files


def image_files(folder: str | Path | None) -> list[Path]:
    """Image files directly in ``folder`` (sorted), or the default photographs if ``None``.

    Raises:
        DeblurError: the folder does not exist or holds no images.
    """
    if folder is None:
        return default_image_files()
    from deblur_cli.io.images import INPUT_EXTENSIONS

    d = Path(folder)
    if not d.is_dir():
        raise DeblurError(f"{d}: no such folder")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in INPUT_EXTENSIONS)
    if not files:
        raise DeblurError(f"{d}: no images (looked for {', '.join(sorted(INPUT_EXTENSIONS))})")
    return files


def load_sharp(path: str | Path, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` float32 sRGB in ``[0, 1]`` (EXIF orientation applied,
    gray replicated, alpha dropped), reduced so that its longest side is at most ``max_side``."""
    from deblur_cli.inference.layout import split_image
    from deblur_cli.io.images import read_image

    rgb, _, _ = split_image(read_image(path).pixels)
    img = np.ascontiguousarray(np.moveaxis(rgb, 0, 2))
    h, w = img.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return img


# ------------------------------------------------------------------------------- the experiment


def parse_angles(text: str) -> list[float]:
    """``"0,45,90,135"`` -> ``[0.0, 45.0, 90.0, 135.0]``.

    Raises:
        DeblurError: empty or not numbers.
    """
    try:
        angles = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise DeblurError(
            f"--angles must be comma-separated numbers in degrees, e.g. 0,45,90,135; got {text!r}"
        ) from None
    if not angles:
        raise DeblurError("--angles is empty")
    return angles


def parse_modules(text: str, blocks: int | None = None) -> list[str]:
    """Module selector -> key prefixes of the PDF modules to pool.

    ``text`` is ``"all"`` or comma-separated ``levelL``, ``levelL.encoder|decoder`` or
    ``levelL.encoder|decoder.blockB`` (``L`` in 1-3, ``B`` in 1-``blocks``; not checked
    when ``blocks`` is ``None``).

    Raises:
        DeblurError: a malformed selector or a block out of range.
    """
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise DeblurError("--modules is empty")
    if parts == ["all"]:
        return [f"level{i}." for i in (1, 2, 3)]
    for p in parts:
        if not _MODULE.match(p):
            raise DeblurError(
                f"--modules: {p!r} is not 'all' or levelL[.encoder|.decoder[.blockB]] (e.g. level1.decoder)"
            )
        m = re.search(r"block(\d+)$", p)
        if m and blocks is not None and not 1 <= int(m.group(1)) <= blocks:
            raise DeblurError(f"--modules: {p!r}: this model has blocks 1 to {blocks}")
    return [p + "." for p in parts]


@dataclass
class ImageEstimate:
    """One blurred image's estimate."""

    image: str
    direction: float
    spread: float
    resultant: float
    elongation_px: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (NaN becomes ``None``)."""
        return {k: _json_num(v) for k, v in self.__dict__.items()}


@dataclass
class AngleResult:
    """All images blurred at one PSF angle.

    Attributes:
        angle: the PSF angle.
        paper: the paper's reported direction for this angle, if it reports one.
        mean: axial mean of the per-image directions (NaN if none defined).
        spread: axial circular std of the per-image directions, degrees.
        images: per-image estimates.
    """

    angle: float
    paper: float | None
    mean: float
    spread: float
    images: list[ImageEstimate] = field(default_factory=list)

    @property
    def error(self) -> float:
        """``mean - angle``, wrapped to ``[-90, 90)`` (NaN if undefined)."""
        return axial_difference(self.mean, self.angle) if math.isfinite(self.mean) else math.nan

    @property
    def elongation_px(self) -> float:
        """Mean over images of the mean per-pixel elongation, image pixels."""
        return float(np.mean([e.elongation_px for e in self.images])) if self.images else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (NaN becomes ``None``)."""
        return {
            "angle": self.angle,
            "paper": self.paper,
            "mean": _json_num(self.mean),
            "spread": _json_num(self.spread),
            "error": _json_num(self.error),
            "elongation_px": _json_num(self.elongation_px),
            "images": [e.to_dict() for e in self.images],
        }


@dataclass
class PsfReport:
    """Result of :func:`run_psf_analysis`."""

    length: float
    modules: list[str]
    images: list[str]
    angles: list[AngleResult]
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "experiment": "psf-direction (SAPHN Sec. 4.4)",
            "model": self.model,
            "length": self.length,
            "modules": [m.rstrip(".") for m in self.modules],
            "images": self.images,
            "angles": [a.to_dict() for a in self.angles],
        }


def _json_num(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def run_psf_analysis(
    model: Any,
    images: Sequence[tuple[str, np.ndarray]],
    angles: Sequence[float] = DEFAULT_ANGLES,
    length: float = DEFAULT_LENGTH,
    modules: str = DEFAULT_MODULES,
    *,
    device: Any = None,
    progress: Callable[[int, int], None] | None = None,
    model_name: str = "",
) -> PsfReport:
    """Blur every image at every angle, run ``model`` and estimate the dominant offset direction.

    Args:
        model: eval-mode SAPHN ``nn.Module`` with a ``config``.
        images: ``(name, (H, W, 3) float32 sRGB in [0, 1])`` sharp images.
        angles: PSF angles in degrees (counter-clockwise from +x, image y down).
        length: PSF length in pixels (> 1).
        modules: PDF modules to pool (:func:`parse_modules`); default all level-1 decoder blocks.
        device: where to run (default: the model's device).
        progress: called with ``(done, total)`` after each forward pass.
        model_name: recorded in the report.

    Raises:
        DeblurError: no images, bad length/modules, or no offsets in the chosen modules
            (e.g. ``saphn-a``, which has no learnable offsets).
    """
    import torch

    if not images:
        raise DeblurError("no images to analyse")
    if not length > 1.0:
        raise DeblurError(f"--length must be more than 1 pixel, got {length}")
    prefixes = parse_modules(modules, int(model.config.blocks))
    if not getattr(model.config, "adaptive_offset", True):
        raise DeblurError("this model has no learnable offsets (e.g. saphn-a): nothing to analyse")
    if device is None:
        device = next(model.parameters()).device
    total, done = len(images) * len(angles), 0

    def keep(key: str) -> bool:
        return key.startswith(tuple(prefixes)) and key.endswith(".pdf.offsets")

    results = []
    for angle in angles:
        estimates = []
        for name, sharp in images:
            blurred = blur_linear(sharp, length, angle)
            rec = MapRecorder(keep)
            x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(blurred, 2, 0)))[None].to(device)
            with torch.inference_mode(), rec.attach(model):
                model(x)
            if not rec:
                raise DeblurError(f"no PDF offsets recorded for --modules {modules!r}")
            angle_px, elong = _pooled_directions([v[0] for v in rec.values()])
            st = axial_mean(angle_px, elong)
            elong_px = float(elong.mean()) * FEATURE_STRIDE
            estimates.append(ImageEstimate(name, st.mean, st.spread, st.resultant, elong_px))
            done += 1
            if progress is not None:
                progress(done, total)
        agg = axial_mean([e.direction for e in estimates])
        results.append(AngleResult(float(angle), _paper(angle), agg.mean, agg.spread, estimates))
    return PsfReport(float(length), prefixes, [n for n, _ in images], results, model_name)


def _paper(angle: float) -> float | None:
    for a, v in PAPER_REFERENCE.items():
        if abs(axial_difference(angle, a)) < 1e-6:
            return v
    return None


# ---------------------------------------------------------------------------------- polar plot

#: Colours of the angle groups (RGB), cycled.
_COLORS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]


def polar_plot(report: PsfReport, size: int = 560) -> np.ndarray:
    """A half-disc polar plot of the estimated directions (axial data: 0-180 degrees).

    Each PSF angle has a colour and a ring: its per-image estimates are dots on the ring, the
    mean is a line from the centre to the outer circle, the PSF angle a triangle outside the
    circle and the paper's value (if any) a hollow circle on the ring. Drawn with OpenCV,
    text with Pillow.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    from deblur_cli.viz.drawing import draw_text

    w = size
    legend_h = 24 * len(report.angles) + 70
    h = w // 2 + 70 + legend_h
    img = np.full((h, w, 3), 255, np.uint8)
    cx, cy = w // 2, w // 2 + 40
    radius = w // 2 - 70
    n = len(report.angles)

    def pt(r: float, deg: float) -> tuple[int, int]:
        t = math.radians(deg)
        return round(cx + r * math.cos(t)), round(cy - r * math.sin(t))

    grid = (200, 200, 200)
    for k in range(1, n + 1):
        cv2.ellipse(img, (cx, cy), (round(radius * k / n),) * 2, 0, 180, 360, grid, 1, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy), (radius, radius), 0, 180, 360, (120, 120, 120), 1, cv2.LINE_AA)
    cv2.line(img, (cx - radius, cy), (cx + radius, cy), (120, 120, 120), 1, cv2.LINE_AA)
    labels = []
    for deg in range(0, 181, 15):
        cv2.line(img, pt(radius, deg), pt(radius + (8 if deg % 45 == 0 else 4), deg), (120, 120, 120), 1, cv2.LINE_AA)
        if deg % 45 == 0:
            labels.append((pt(radius + 40, deg), f"{deg}°"))
    for k, a in enumerate(report.angles):
        col = _COLORS[k % len(_COLORS)]
        ring = radius * (k + 1) / n
        cv2.drawMarker(img, pt(radius + 18, a.angle), col, cv2.MARKER_TRIANGLE_UP, 10, 2, cv2.LINE_AA)
        if math.isfinite(a.mean):
            cv2.line(img, (cx, cy), pt(radius, a.mean), col, 2, cv2.LINE_AA)
        for e in a.images:
            if math.isfinite(e.direction):
                cv2.circle(img, pt(ring, e.direction), 3, col, -1, cv2.LINE_AA)
        if a.paper is not None:
            cv2.circle(img, pt(ring, a.paper), 7, col, 2, cv2.LINE_AA)
    for xy, text in labels:
        img = draw_text(img, xy, text, 13, anchor="mm")
    img = draw_text(img, (12, 8), f"PDF offset direction vs PSF angle (length {report.length:g} px)", 15)
    y = cy + 24
    img = draw_text(
        img, (12, y), "line = our mean, dots = images, triangle = PSF angle, hollow = paper", 12, (90, 90, 90)
    )
    for k, a in enumerate(report.angles):
        col = _COLORS[k % len(_COLORS)]
        yy = y + 26 + 24 * k
        cv2.rectangle(img, (14, yy + 3), (30, yy + 15), col, -1)
        paper = f"{a.paper:g}°" if a.paper is not None else "-"
        ours = f"{a.mean:.0f}° ± {a.spread:.0f}°" if math.isfinite(a.mean) else "undefined (no offsets)"
        img = draw_text(img, (38, yy), f"PSF {a.angle:g}°:  ours {ours}   paper {paper}", 13)
    img = draw_text(img, (12, h - 22), f"modules: {', '.join(m.rstrip('.') for m in report.modules)}; "
                     f"{len(report.images)} image(s); {report.model}", 11, (90, 90, 90))  # fmt: skip
    return img
