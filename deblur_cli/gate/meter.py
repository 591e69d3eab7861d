"""How much motion blur is in a photograph, in pixels, and how much deblurring to apply.

Not in the paper. The deblurring network only pays off from a few pixels of blur: on nearly
sharp photographs it adds detail that was never there (``benchmarks/blur_sweep.py``: the
bundled weights lose about 3 dB at 2 px of linear blur and gain from about 8 px). A
photographer who runs ``deblur folder`` over a shoot, most of it sharp, wants the sharp frames
left alone. So before deblurring we *measure* the blur:

1. **Blur-extent network** (:class:`BlurExtentNet`): a small convolutional regressor on luma,
   trained on the same synthetic blur as SAPHN (``deblur_cli/training/blur_extent.py``) to
   predict ``log(1 + extent)``, extent being the PSF length (linear blur) or the largest
   displacement of the camera-shake trajectory, 0 for a sharp patch. Defocus is labelled 0:
   it is the photograph's depth of field, which the deblurrer is trained to keep. The network
   outputs, per position (stride 8), an estimate and a confidence logit; a patch's estimate is
   the confidence-weighted mean (a flat sky says nothing about blur, an edge does).
2. **Per photograph** (:func:`estimate_extent`): the net runs at the photograph's own
   resolution (the extent is in its pixels; downscaling would shrink it) on the ``tiles``
   most textured 96x96 tiles, and pools them the same way. Cost is bounded whatever the size.
3. **Gate** (:func:`gate_weight`): ``w = clip((extent - lo) / (hi - lo), 0, 1)``; the output
   is ``input + w * (deblurred - input)``: untouched below ``lo`` px, fully deblurred from
   ``hi`` px, a blend between.
4. **Per region** (:meth:`BlurMeter.extent_map`, session 10): the net reads *every* 96 px
   tile on its own, and the tiles' readings are pooled under a Gaussian window, weighted by
   their texture (:func:`pool_regions`); :meth:`BlurMap.weights` turns the map into a per-pixel
   gate. For camera
   shake about an off-centre point, or a sharp subject before a blurred background, one number
   per photograph is the wrong question.

Hand-made measures (edge widths along four directions, re-blur ratios) were tried first; on the
training photographs they separated 0-3 px from 8-12 px of camera shake with an AUC of only about
0.7, because natural edge widths vary from scene to scene as much as blur changes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deblur_cli.errors import DeblurError

#: Side of the tiles the estimate is computed on (the training crop size).
TILE = 96
#: Bundled weights of the blur-extent network (``weights/blur-extent.safetensors``).
BUNDLED_FILE = "blur-extent.safetensors"
#: Its record: sha256, training data and figures (written by ``runs/train_blur_extent.py``).
BUNDLED_RECORD = "blur-extent.json"
#: Default gate: untouched below ``lo`` px, fully deblurred from ``hi`` px. Chosen on the
#: validation photographs (see weights/MODEL_CARD.md, "Blur gate").
DEFAULT_GATE: tuple[float, float] = (4.0, 6.0)

# ITU-R BT.601 luma, as OpenCV's RGB2GRAY.
_LUMA = (0.299, 0.587, 0.114)


class BlurExtentNet(nn.Module):
    """Motion-blur extent regressor on luma.

    ``forward``: ``(B, 1, H, W)`` luma in ``[0, 1]`` (``H``, ``W`` multiples of 8) ->
    ``(pred, logit)``, each ``(B, 1, H/8, W/8)``: ``pred`` estimates ``log(1 + extent)`` and
    ``logit`` its confidence. :meth:`pooled` gives one value per image.

    Each input is first normalised by its own mean and standard deviation, so that the
    estimate does not depend on exposure or contrast. Receptive field: 45 px, enough to see
    the blur it must tell apart (0-10 px) and to measure longer blur as long.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        chans = [(1, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 3 * w, 2), (3 * w, 3 * w, 1), (3 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride in chans:
            # BatchNorm: without it this plain stack learnt several times slower (a few hundred
            # steps at batch 32 barely moved off the constant prediction).
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(4 * w, 2, 1)
        self.width = width

    def forward(self, luma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = luma.mean(dim=(2, 3), keepdim=True)
        std = luma.std(dim=(2, 3), keepdim=True)
        x = (luma - mean) / (std + 0.02)  # 0.02: a flat, noisy patch is not blown up to unit contrast
        out = self.head(self.features(x))
        return out[:, :1], out[:, 1:]

    @staticmethod
    def pool(pred: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """Confidence-weighted mean over positions *and* over the batch: ``pred`` and ``logit``
        ``(B, 1, h, w)`` (the output of :meth:`forward`) -> ``()`` scalar."""
        w = torch.softmax(logit.flatten(), dim=0)
        return (w * pred.flatten()).sum()

    def pooled(self, luma: torch.Tensor) -> torch.Tensor:
        """One ``log(1 + extent)`` per image: ``(B,)``."""
        pred, logit = self(luma)
        w = torch.softmax(logit.flatten(1), dim=1)
        return (w * pred.flatten(1)).sum(dim=1)


def to_luma(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float RGB in ``[0, 1]`` -> ``(H, W)`` float32 luma."""
    r, g, b = _LUMA
    return (rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b).astype(np.float32)


def textured_tiles(luma: np.ndarray, tiles: int, tile: int = TILE) -> np.ndarray:
    """The ``tiles`` most textured non-overlapping ``tile`` x ``tile`` tiles of ``luma``.

    Texture is the mean absolute Laplacian; the image is padded by reflection when smaller than
    one tile. Returns ``(n, tile, tile)`` float32, ``n = min(tiles, tiles in the image)``."""
    import cv2

    h, w = luma.shape
    if h < tile or w < tile:
        luma = cv2.copyMakeBorder(luma, 0, max(0, tile - h), 0, max(0, tile - w), cv2.BORDER_REFLECT_101)
        h, w = luma.shape
    ny, nx = h // tile, w // tile
    oy, ox = (h - ny * tile) // 2, (w - nx * tile) // 2  # centre the grid
    grid = luma[oy : oy + ny * tile, ox : ox + nx * tile].reshape(ny, tile, nx, tile).swapaxes(1, 2).reshape(-1, tile, tile)
    lap = np.abs(cv2.Laplacian(luma, cv2.CV_32F))[oy : oy + ny * tile, ox : ox + nx * tile]
    score = lap.reshape(ny, tile, nx, tile).mean(axis=(1, 3)).ravel()
    keep = np.argsort(-score, kind="stable")[:tiles]
    return np.ascontiguousarray(grid[np.sort(keep)])


#: Gaussian window (px, standard deviation) of the regional estimate: the best of 96, 192 and
#: 384 px on the validation photographs, half-blurred ones included (``runs/region-gate/RULE.md``).
REGION_SIGMA = 192.0
#: How strongly a region leans on the photograph's own estimate: a region whose texture weight is
#: the photograph's average keeps 1 / (1 + REGION_PRIOR) of its own reading (80 %); a flat one
#: (a clear sky) little of it.
REGION_PRIOR = 0.25
#: Tiles per forward pass of the meter when mapping a whole photograph (bounds its memory).
_MAP_CHUNK = 64


@dataclass(frozen=True)
class BlurMap:
    """Per-region motion-blur estimate of one photograph (:meth:`BlurMeter.extent_map`).

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
        """The gate per pixel, :func:`gate_weight` of each tile's extent, bilinearly
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
    next to it (measured on half-blurred photographs, session 10).
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


@dataclass(frozen=True)
class BlurEstimate:
    """Estimated motion-blur extent of one photograph."""

    extent: float  # pixels (PSF length or largest shake displacement)
    tiles: int  # how many tiles it was measured on


class BlurMeter:
    """Loaded blur-extent network; :meth:`estimate` measures photographs.

    Args:
        weights: a safetensors file; ``None`` loads the bundled one, checked against the
            sha256 recorded beside it (``weights/blur-extent.json``).
        tiles: most textured tiles measured per photograph (bounds the cost: 48 tiles of 96 px
            are 0.44 MP whatever the photograph's size).
        device: torch device.
    """

    def __init__(self, weights: str | Path | None = None, tiles: int = 48, device: str | torch.device = "cpu") -> None:
        path = Path(weights) if weights is not None else checked_bundled_path()
        self.net = load_blur_extent(path, device=device)
        self.tiles = tiles
        self.device = torch.device(device)

    @torch.inference_mode()
    def estimate(self, rgb: np.ndarray) -> BlurEstimate:
        """Blur extent of an ``(H, W, 3)`` float RGB image in ``[0, 1]``."""
        batch = textured_tiles(to_luma(rgb), self.tiles)
        x = torch.from_numpy(batch)[:, None].to(self.device)
        pred, logit = self.net(x)
        value = float(self.net.pool(pred, logit))
        return BlurEstimate(extent=max(0.0, math.expm1(value)), tiles=len(batch))

    @torch.inference_mode()
    def tile_readings(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every 96 px tile of an ``(H, W, 3)`` photograph read on its own: ``(estimates,
        texture)``, each ``(ceil(H / 96), ceil(W / 96))`` float32: ``log(1 + extent)`` pooled
        over the tile's positions by their confidences (what the net was trained to give per
        crop), and the tile's mean absolute Laplacian. The photograph is padded (mirrored) to
        whole tiles (:func:`tile_shares` says how much of each is real).

        Goes one row of tiles at a time (memory: the photograph's luma twice, whatever its
        size), with up to 64 tiles per forward pass; cost grows with the pixel count (about
        7 kMAC per pixel)."""
        import cv2

        h, w = rgb.shape[:2]
        ny, nx = -(-h // TILE), -(-w // TILE)
        padded = np.pad(to_luma(rgb), ((0, ny * TILE - h), (0, nx * TILE - w)), mode="symmetric")
        estimates = np.empty(ny * nx, np.float32)
        texture = np.empty((ny, nx), np.float32)
        pending: list[np.ndarray] = []
        done = 0

        def flush() -> None:
            nonlocal done
            x = torch.from_numpy(np.concatenate(pending))[:, None].to(self.device)
            pred, logit = self.net(x)
            weights = torch.softmax(logit.flatten(1), dim=1)
            estimates[done : done + len(x)] = (weights * pred.flatten(1)).sum(dim=1).float().cpu().numpy()
            done += len(x)
            pending.clear()

        for by in range(ny):
            y0 = by * TILE
            top = max(0, y0 - 1)  # a row of context each side, so the Laplacian is the whole image's
            lap = np.abs(cv2.Laplacian(padded[top : y0 + TILE + 1], cv2.CV_32F))[y0 - top :][:TILE]
            texture[by] = lap.reshape(TILE, nx, TILE).mean(axis=(0, 2))
            band = padded[y0 : y0 + TILE].reshape(TILE, nx, TILE).swapaxes(0, 1)
            for i in range(0, nx, _MAP_CHUNK):
                pending.append(np.ascontiguousarray(band[i : i + _MAP_CHUNK]))
                if sum(len(t) for t in pending) >= _MAP_CHUNK:
                    flush()
        if pending:
            flush()
        return estimates.reshape(ny, nx), texture

    def extent_map(self, rgb: np.ndarray, sigma: float = REGION_SIGMA) -> BlurMap:
        """Per-region blur of an ``(H, W, 3)`` float RGB image in ``[0, 1]``: the per-tile
        readings pooled under a Gaussian window of ``sigma`` px (see :func:`pool_regions`)."""
        est, texture = self.tile_readings(rgb)
        return blur_map_from_readings(est, texture, (rgb.shape[0], rgb.shape[1]), sigma)


def blur_map_from_readings(estimates: np.ndarray, texture: np.ndarray, size: tuple[int, int], sigma: float) -> BlurMap:
    """The :class:`BlurMap` of an ``(H, W)`` photograph from its :meth:`BlurMeter.tile_readings`
    (read once, pooled under several windows by ``benchmarks/blur_gate.py``)."""
    pooled, g = pool_regions(estimates, texture, sigma / TILE, share=tile_shares(*size))
    return BlurMap(log_extent=pooled, size=size, extent=max(0.0, math.expm1(g)))


@dataclass(frozen=True)
class GateDecision:
    """What the gate did with one image: its estimated blur and the share of the deblurred
    image kept (0: returned untouched, without running the deblurring network).

    With the regional gate, ``blur_map`` is the photograph's :class:`BlurMap` and ``gate`` the
    thresholds, :meth:`pixel_weights` the ``(H, W)`` per-pixel gate (computed when needed, not
    kept: 96 MB for 24 megapixels), ``weight`` its mean and ``extent_range`` the least and most
    blurred regions' estimates (px). ``extent`` is the whole-photograph estimate in both scopes."""

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
    :data:`REGION_SIGMA`; or ``blur_map`` when already computed) gated per pixel by
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


def bundled_path() -> Path:
    """The bundled blur-extent weights: in the installed package, or in ``weights/`` of a
    source checkout (the same lookup as the SAPHN registry, :func:`deblur_cli.hub.registry.weights_dir`)."""
    from deblur_cli.hub.registry import weights_dir

    return weights_dir() / BUNDLED_FILE


def checked_bundled_path() -> Path:
    """:func:`bundled_path`, after checking its sha256 against ``blur-extent.json`` beside it.

    Raises:
        DeblurError: the file or its record is missing or unreadable, or the checksum differs.
    """
    import json

    from deblur_cli.hub.registry import sha256_file

    try:
        path = bundled_path()
    except ModuleNotFoundError as exc:
        raise DeblurError(f"bundled weights folder not found ({exc}); reinstall deblur-cli") from None
    record = path.with_name(BUNDLED_RECORD)
    try:
        expected = json.loads(record.read_text())["sha256"]
        if not isinstance(expected, str):
            raise TypeError(f"sha256 is {type(expected).__name__}, not a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeblurError(f"blur-extent weights record {record} unreadable: {exc}") from None
    if not path.is_file():
        raise DeblurError(f"bundled blur-extent weights missing: {path}")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise DeblurError(f"bundled blur-extent weights {path}: cannot read ({exc.strerror or exc})") from None
    if actual != expected:
        raise DeblurError(f"bundled blur-extent weights {path}: sha256 {actual[:12]}... differs from the recorded {expected[:12]}...")
    return path


def save_blur_extent(net: BlurExtentNet, path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write ``net`` as safetensors (metadata ``arch=blur-extent``, ``width``); returns its sha256."""
    from safetensors.torch import save_file

    from deblur_cli.hub.registry import sha256_file

    meta = {"arch": "blur-extent", "width": str(net.width), **(metadata or {})}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest), metadata=meta)
    return sha256_file(dest)


def load_blur_extent(path: str | Path, device: str | torch.device = "cpu") -> BlurExtentNet:
    """Load blur-extent weights (safetensors only, strict keys).

    Raises:
        DeblurError: missing/unreadable file, or not blur-extent weights.
    """
    from deblur_cli.hub.loading import read_weights

    state, meta = read_weights(path)
    if meta.get("arch") != "blur-extent":
        raise DeblurError(f"{path} is not blur-extent weights (arch {meta.get('arch')!r})")
    try:
        net = BlurExtentNet(width=int(meta.get("width", "16")))
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise DeblurError(f"{path}: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval()
