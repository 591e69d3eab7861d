"""The inference engine: any image in, deblurred image out, at any size.

* :func:`tile_process` is a pure function that runs a network over overlapping tiles and
  blends them with smooth (raised-cosine) weights, so tiled output has no seams.
* :class:`Deblurrer` is the public API (``from deblur_cli import Deblurrer``): it owns a
  backend (:mod:`deblur_cli.backends.base`), converts any supported array to the network's
  ``(3, H, W)`` float RGB and back (alpha untouched, gray stays gray, dtype kept), picks
  tile and batch sizes from free memory, and reads/writes files through
  :mod:`deblur_cli.io.images`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    from torch import nn

    from deblur_cli.backends.base import Backend

#: Default overlap of neighbouring tiles, in pixels.
DEFAULT_TILE_OVERLAP = 32
#: Smallest side the network is given: smaller images are padded (replicate) to it and
#: cropped back, so exported ONNX models never see degenerate shapes.
MIN_SIDE = 16
#: Smallest tile ``--tile`` accepts.
MIN_TILE = 32
#: Largest number of images (or tiles) run in one batch when sizes are chosen automatically.
MAX_AUTO_BATCH = 16
#: Share of the free memory that the network's activations may use.
MEMORY_FRACTION_CPU = 0.4
MEMORY_FRACTION_CUDA = 0.7
#: Assumed free memory where it cannot be measured.
FALLBACK_MEMORY = 4 << 30
#: Cap on the activations' budget on the CPU, so that a 24-megapixel photo stays within about
#: 4 GiB of resident memory whatever the machine (tiles beyond ~1 MP buy no speed on a CPU).
#: ``DEBLUR_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix) replaces it.
CPU_ACTIVATION_CAP = 2 << 30

A = TypeVar("A")


# --------------------------------------------------------------------------------------- tiling


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)``.

    Neighbouring tiles overlap by at least ``overlap``; the last tile ends exactly at
    ``size`` (so every tile has the same length). ``tile >= size`` gives ``[0]``.
    """
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def tile_weights(length: int, overlap: int, ramp_start: bool, ramp_end: bool, margin: int = 0) -> np.ndarray:
    """1-D blending weights of a tile along one axis.

    At an end with a neighbouring tile (``ramp_start``/``ramp_end``) the first ``overlap``
    pixels are: ``margin`` pixels of weight 0 (their output lacks context; Real-ESRGAN's
    ``tile_pad`` drops them the same way), then a raised-cosine ramp
    ``sin^2(pi (i + 1/2) / (2 n))`` over ``n = overlap - 2 margin`` pixels, then 1. Mirrored
    at the far end. Where two tiles overlap by exactly ``overlap`` their weights sum to 1
    (Hann window halves); since ``margin < overlap / 2`` every pixel has a positive weight
    in some tile, so normalising by the sum is always defined.
    """
    w = np.ones(length, dtype=np.float32)
    overlap = min(overlap, length // 2)
    margin = max(0, min(margin, (overlap - 1) // 2))
    n = overlap - 2 * margin
    if n > 0:
        ramp = np.concatenate(
            [np.zeros(margin), np.sin(np.pi * (np.arange(n) + 0.5) / (2 * n)) ** 2, np.ones(margin)]
        ).astype(np.float32)
        if ramp_start:
            w[:overlap] = ramp
        if ramp_end:
            w[length - overlap :] = np.minimum(w[length - overlap :], ramp[::-1])
    return w


def tile_process(
    run: Callable[[A], A],
    image: A,
    tile: int,
    overlap: int = DEFAULT_TILE_OVERLAP,
    batch_size: int = 1,
    margin: int | None = None,
) -> A:
    """Run ``run`` over overlapping tiles of ``image`` and blend the results without seams.

    Pure: all state is local, nothing is swallowed (an exception in ``run`` propagates).

    Args:
        run: maps a ``(B, C, h, w)`` batch to ``(B, C_out, h, w)`` (numpy or torch, the same
            kind as ``image``).
        image: ``(C, H, W)`` float numpy array or torch tensor.
        tile: tile side; ``0`` or a tile covering the whole image runs ``image`` at once.
            Along a side shorter than ``tile`` the tile is that side.
        overlap: pixels shared by neighbouring tiles, blended with :func:`tile_weights`.
        batch_size: tiles per call of ``run`` (all tiles have the same size).
        margin: pixels at each inner tile edge that get weight 0 (the network saw no context
            beyond them); default ``overlap // 4``. Must be less than ``overlap / 2``.

    Returns:
        ``(C_out, H, W)``, same kind and dtype as ``image``: the weighted average of every
        tile's output, weights normalised by their sum at each pixel.
    """
    _, h, w = image.shape  # type: ignore[attr-defined]
    if tile <= 0 or (tile >= h and tile >= w):
        return run(image[None])[0]  # type: ignore[index]
    if overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"overlap must be in [0, tile / 2), got overlap={overlap}, tile={tile}")
    if margin is None:
        margin = overlap // 4
    elif overlap and not 0 <= 2 * margin < overlap:
        raise ValueError(f"margin must be in [0, overlap / 2), got margin={margin}, overlap={overlap}")
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, x) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]

    dtype = image.dtype  # type: ignore[attr-defined]
    if isinstance(image, np.ndarray):
        stack: Callable[[list[Any]], Any] = np.stack

        def zeros(*shape: int) -> Any:
            return np.zeros(shape, dtype)

        def as_array(a: np.ndarray) -> Any:
            return a.astype(dtype)
    else:
        import torch

        stack = torch.stack
        device = image.device  # type: ignore[attr-defined]

        def zeros(*shape: int) -> Any:
            return torch.zeros(shape, dtype=dtype, device=device)

        def as_array(a: np.ndarray) -> Any:
            return torch.from_numpy(a).to(device=device, dtype=dtype)

    out: Any = None
    norm = zeros(h, w)
    step = max(1, batch_size)
    for i in range(0, len(boxes), step):
        chunk = boxes[i : i + step]
        result = run(stack([image[:, y : y + th, x : x + tw] for y, x in chunk]))  # type: ignore[index]
        if out is None:
            out = zeros(result.shape[1], h, w)
        for (y, x), t in zip(chunk, result, strict=True):
            wy = tile_weights(th, overlap, y > 0, y + th < h, margin)
            wx = tile_weights(tw, overlap, x > 0, x + tw < w, margin)
            weight = as_array(np.outer(wy, wx))
            out[:, y : y + th, x : x + tw] += t * weight
            norm[y : y + th, x : x + tw] += weight
    return out / norm[None]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------- memory


def estimate_bytes_per_pixel(config: Any | None) -> float:
    """Peak inference memory of the network per input pixel (fp32, batch 1), in bytes.

    A fit of measured peak RSS growth per pixel on CPU (256^2 -> 512^2 inputs, torch 2.13,
    2026-11-22, after the filtering module went tap by tap): ``saphn-tiny`` ~350 B,
    ``saphn-s`` ~890 B, ``saphn`` ~2.0 kB, matched by ``4 B x (44 + 7.6 c0 + 1.75 c2)`` floats
    (``c0``/``c2``: full/quarter-resolution widths; the full-resolution features of the three
    levels dominate; the filter size no longer matters since the taps are gathered one at a
    time). A 1.5x margin is added. Without a config (e.g. an ONNX file) the paper's
    configuration is assumed.
    """
    if config is None:
        from deblur_cli.models.saphn import SAPHNConfig

        config = SAPHNConfig()
    c0, _, c2 = config.widths
    floats = 44 + 7.6 * c0 + 1.75 * c2
    return 1.5 * 4 * floats


def available_memory(device: Any | None = None) -> int:
    """Bytes the engine may use for activations on ``device`` (a :class:`torch.device` or None).

    CUDA: ``MEMORY_FRACTION_CUDA`` of ``torch.cuda.mem_get_info``'s free memory. Otherwise
    ``MEMORY_FRACTION_CPU`` of the host's available memory (``MemAvailable`` from
    ``/proc/meminfo``, psutil if installed, else :data:`FALLBACK_MEMORY`), at most
    :func:`memory_cap`.
    """
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_FRACTION_CUDA)
    return int(min(_host_available_memory() * MEMORY_FRACTION_CPU, memory_cap()))


def memory_cap() -> int:
    """The CPU activation cap: ``DEBLUR_MEMORY_LIMIT`` if set (e.g. ``8G``), else
    :data:`CPU_ACTIVATION_CAP`.

    Raises:
        DeblurError: an unreadable ``DEBLUR_MEMORY_LIMIT``.
    """
    raw = os.environ.get("DEBLUR_MEMORY_LIMIT", "").strip()
    if not raw:
        return CPU_ACTIVATION_CAP
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        scale = units.get(raw[-1].upper(), 1)
        value = float(raw[:-1] if raw[-1].upper() in units else raw) * scale
    except ValueError:
        raise DeblurError(f"DEBLUR_MEMORY_LIMIT={raw!r}: give bytes or a number with K/M/G, e.g. 4G") from None
    if value <= 0:
        raise DeblurError(f"DEBLUR_MEMORY_LIMIT={raw!r} must be positive")
    return int(value)


def _host_available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().available)
    except ImportError:
        return FALLBACK_MEMORY


def choose_tile(height: int, width: int, max_pixels: float) -> int:
    """Tile side for an image when ``max_pixels`` fit in memory at once; 0 = no tiling.

    The whole image is preferred when it fits (the network's attention is global, so an
    untiled run is the reference); otherwise the largest square multiple of 8 that fits,
    at least 64.
    """
    if height * width <= max_pixels:
        return 0
    side = int(math.sqrt(max(max_pixels, 0.0))) // 8 * 8
    return max(side, 64)


# ------------------------------------------------------------------------------ array layouts


@dataclass(frozen=True)
class _Layout:
    """How to turn the network's RGB back into the caller's array."""

    dtype: np.dtype[Any]
    gray: bool
    shape: tuple[int, ...]


def _max_value(dtype: np.dtype[Any]) -> float:
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def split_image(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, _Layout]:
    """``(H, W)``, ``(H, W, 1|2|3|4)`` uint8/uint16/float array -> ``(3, H, W)`` float32 RGB in
    ``[0, 1]``, the alpha plane (untouched) or None, and the layout to restore.

    Gray is replicated to three channels for the network.

    Raises:
        DeblurError: other shapes or dtypes.
    """
    if not isinstance(pixels, np.ndarray):
        raise DeblurError(f"expected a numpy array or a path, got {type(pixels).__name__}")
    dtype = pixels.dtype
    if dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise DeblurError(f"unsupported dtype {dtype}: use uint8, uint16 or float in [0, 1]")
    if pixels.ndim == 2:
        color, alpha = pixels[..., None], None
    elif pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4):
        c = pixels.shape[2]
        color, alpha = (pixels[..., :-1], pixels[..., -1]) if c in (2, 4) else (pixels, None)
    else:
        raise DeblurError(f"unsupported image shape {pixels.shape}: use (H, W) or (H, W, C) with C in 1-4")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise DeblurError(f"empty image of shape {pixels.shape}")
    gray = color.shape[2] == 1
    rgb = np.moveaxis(color, 2, 0).astype(np.float32) / np.float32(_max_value(dtype))
    if dtype.kind == "f":
        rgb = np.nan_to_num(np.clip(rgb, 0.0, 1.0))
    if gray:
        rgb = np.repeat(rgb, 3, axis=0)
    return np.ascontiguousarray(rgb), alpha, _Layout(dtype=dtype, gray=gray, shape=pixels.shape)


def merge_image(rgb: np.ndarray, alpha: np.ndarray | None, layout: _Layout) -> np.ndarray:
    """Inverse of :func:`split_image`: clamp to ``[0, 1]``, back to the input's dtype and
    channels. Gray output is the mean of the three channels (the exact inverse of the
    replication on the way in)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    color = rgb.mean(axis=0, keepdims=True) if layout.gray else rgb
    color = np.moveaxis(color, 0, 2)
    if layout.dtype.kind == "u":
        color = np.rint(color * _max_value(layout.dtype))
    color = color.astype(layout.dtype)
    if alpha is not None:
        color = np.concatenate([color, alpha[..., None].astype(layout.dtype)], axis=2)
    return color.reshape(layout.shape)


# ------------------------------------------------------------------------------------ the API


@dataclass
class FileResult:
    """Outcome of one file in :meth:`Deblurrer.deblur_files`.

    Attributes:
        src, dst: input and output paths.
        status: ``"done"``, ``"skipped"`` (output existed, ``skip_existing``) or ``"failed"``.
        message: the error for ``"failed"``.
        seconds: wall time spent on this file (its share of a batch).
        pixels: ``H * W`` of the image (0 unless done).
        blur_px: with a blur gate, the estimated motion blur in pixels (else ``None``).
        gate: with a blur gate, the share of the deblurred image kept (0: left as it was).
    """

    src: Path
    dst: Path
    status: str
    message: str = ""
    seconds: float = 0.0
    pixels: int = 0
    blur_px: float | None = None
    gate: float | None = None


@dataclass(frozen=True)
class VizRequest:
    """Write the network's internal maps (:mod:`deblur_cli.viz.maps`) next to each result, from the
    same forward pass (``deblur image/folder --viz DIR``).

    Attributes:
        selection: a :class:`deblur_cli.viz.maps.MapSelection`.
        out_dir: folder for the map files; with ``mirror_from``, the root of a mirrored tree.
        mirror_from: output root of a folder run: the maps of ``OUT/a/b.png`` go to
            ``out_dir/a/``.
        raw: also write ``.npy`` arrays.
        overwrite: replace existing map files.
    """

    selection: Any
    out_dir: Path
    mirror_from: Path | None = None
    raw: bool = False
    overwrite: bool = False

    def folder_for(self, dst: Path) -> Path:
        """Where the maps of the result ``dst`` go."""
        if self.mirror_from is None:
            return self.out_dir
        return self.out_dir / dst.parent.relative_to(self.mirror_from)


class Deblurrer:
    """Deblur images with SAPHN.

    Args:
        model: registry or architecture name (``None``: the default model), or an
            already-built ``nn.Module`` (used as is: moved to the device, set to eval mode).
        weights: local weights file or ``hf://repo/file@rev`` (see ``deblur_cli.hub.loading``).
        device: ``auto`` (CUDA if torch sees it, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        backend: ``"torch"``, ``"onnx"`` (``deblur_cli.backends.ort``), or a ready
            :class:`~deblur_cli.backends.base.Backend` instance.
        tile: tile side; ``None`` chooses it from free memory (whole image when it fits),
            ``0`` never tiles.
        tile_overlap: overlap of neighbouring tiles in pixels (smoothly blended).
        fp16: half precision, CUDA only.
        bf16: bfloat16 autocast, torch backend, on a CPU with native bf16 or on CUDA.
        self_ensemble: average over this many flips/transposes of the input (1, 2, 4 or 8;
            :mod:`deblur_cli.inference.ensemble`): a little sharper, ``self_ensemble`` times slower.
        gate: ``(lo, hi)`` in pixels: first estimate each image's motion blur
            (:mod:`deblur_cli.gate.meter`); below ``lo`` px return it untouched (the network
            does not even run), from ``hi`` px deblur fully, blend in between. ``None``: always
            deblur.
        gate_scope: ``"image"`` (one estimate per image) or ``"region"`` (per region, the
            gate applied per pixel: :meth:`~deblur_cli.gate.meter.BlurMeter.extent_map`).
        blur_meter: the :class:`~deblur_cli.gate.meter.BlurMeter` for ``gate`` (default: the
            bundled one, loaded and checked here, so that damaged weights fail before any file).

    Attributes:
        backend: the backend that runs the network.
        device_description: what actually runs, e.g. ``"cpu (2 threads), torch fp32"``.
        model_info: the loader's info dict (``name``, ``source``, ``sha256``).
        last_decisions: the gate's decisions for the images of the last call (input order;
            empty without a gate).

    Example::

        from deblur_cli import Deblurrer
        sharp = Deblurrer().deblur("blurry.jpg")      # numpy uint8 (H, W, 3), RGB
        Deblurrer(device="cuda").deblur_file("in.png", "out.png")
    """

    def __init__(
        self,
        model: str | nn.Module | None = None,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        backend: str | Backend = "torch",
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        fp16: bool = False,
        bf16: bool = False,
        self_ensemble: int = 1,
        gate: tuple[float, float] | None = None,
        gate_scope: str = "image",
        blur_meter: Any | None = None,
    ) -> None:
        from deblur_cli.backends.base import create_backend
        from deblur_cli.inference.ensemble import check_size

        if tile is not None and tile != 0 and tile < MIN_TILE:
            raise DeblurError(f"--tile must be 0 (no tiling) or at least {MIN_TILE}, got {tile}")
        if tile_overlap < 0:
            raise DeblurError(f"--tile-overlap must be >= 0, got {tile_overlap}")
        if tile and 2 * tile_overlap >= tile:
            raise DeblurError(f"--tile-overlap ({tile_overlap}) must be less than half of --tile ({tile})")
        try:
            self.self_ensemble = check_size(self_ensemble)
        except ValueError as exc:
            raise DeblurError(str(exc)) from None
        from deblur_cli.gate.meter import GATE_SCOPES

        if gate_scope not in GATE_SCOPES:
            raise DeblurError(f"--gate-scope must be one of {', '.join(GATE_SCOPES)}, got {gate_scope!r}")
        if gate is None and gate_scope != "image":
            raise DeblurError(f"--gate-scope {gate_scope} needs a blur gate (it is off: give --gate auto or LO,HI)")
        if gate is not None:
            from deblur_cli.gate.meter import BlurMeter, check_gate

            gate = check_gate(*gate)
            if blur_meter is None:
                blur_meter = BlurMeter()  # now, so that missing or damaged meter weights fail before any file is read
        self.gate = gate
        self.gate_scope = gate_scope
        self.blur_meter = blur_meter
        self.last_decisions: list[Any] = []
        self.tile = tile
        self.tile_overlap = tile_overlap
        if isinstance(backend, str):
            w = os.fspath(weights) if weights is not None else None
            self.backend = create_backend(backend, model, w, device, fp16, bf16)
        else:
            self.backend = backend
        self.device_description: str = self.backend.device_description
        if self.self_ensemble > 1:
            self.device_description += f", self-ensemble x{self.self_ensemble}"
        if self.gate is not None:
            self.device_description += f", blur gate {self.gate[0]:g}-{self.gate[1]:g} px" + (
                " by region" if gate_scope == "region" else ""
            )
        self.model_info: dict[str, Any] = dict(getattr(self.backend, "info", {}) or {})
        self.bytes_per_pixel = estimate_bytes_per_pixel(getattr(self.backend, "config", None))

    # ---------------------------------------------------------------------- sizes from memory

    def max_pixels(self) -> float:
        """Input pixels (summed over a batch) that fit in free memory right now."""
        return available_memory(getattr(self.backend, "device", None)) / self.bytes_per_pixel

    def tile_for(self, height: int, width: int) -> int:
        """The tile side used for an image of this size (0 = untiled)."""
        if self.tile is not None:
            return self.tile
        tile = choose_tile(height, width, self.max_pixels())
        return max(tile, 4 * self.tile_overlap) if tile else 0

    def batch_size_for(self, height: int, width: int) -> int:
        """How many ``height x width`` images (or tiles) to run at once, from free memory."""
        return int(max(1, min(MAX_AUTO_BATCH, self.max_pixels() // max(1, height * width))))

    # ------------------------------------------------------------------------------ arrays

    def deblur_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """The core: ``(3, H, W)`` float32 RGB in ``[0, 1]`` -> same, clamped to ``[0, 1]``.

        Tiny images are padded (replicate) to :data:`MIN_SIDE` and cropped back; large ones
        are tiled per :meth:`tile_for`.
        """
        outs, self.last_decisions = self._gated([rgb])
        return outs[0]

    # ---------------------------------------------------------------------------- blur gate

    def decide(self, rgb: np.ndarray) -> Any:
        """The gate's :class:`~deblur_cli.gate.meter.GateDecision` for a ``(3, H, W)`` image."""
        from deblur_cli.gate.meter import decide_gate

        if self.gate is None:
            raise DeblurError("no gate set")
        return decide_gate(self.blur_meter, rgb.transpose(1, 2, 0), *self.gate, scope=self.gate_scope)

    def _gated(
        self,
        rgbs: Sequence[np.ndarray],
        batch_size: int | None = 1,
        recorder: Callable[[], dict] | None = None,
        maps_out: list[tuple[dict, int]] | None = None,
    ) -> tuple[list[np.ndarray], list[Any]]:
        """:meth:`_run_same_size` behind the blur gate: ``(outputs, decisions)``, one ``(3, H, W)``
        float32 output (a new array) and one decision per ``(3, H, W)`` input, in input order.

        Images the gate leaves untouched skip the network, unless maps are recorded (then every
        image runs, so that each has its maps, and the gate still decides the output)."""
        if self.gate is None:
            return self._run_same_size(rgbs, batch_size, recorder, maps_out), []
        from deblur_cli.gate.meter import apply_gate

        decisions = [self.decide(x) for x in rgbs]
        run = [i for i, d in enumerate(decisions) if d.weight > 0 or recorder is not None]
        outs: list[np.ndarray] = [np.array(x, dtype=np.float32) for x in rgbs]  # a copy: never hand back the input
        if run:
            ran = self._run_same_size([rgbs[i] for i in run], batch_size, recorder, maps_out)
            for i, o in zip(run, ran, strict=True):
                d = decisions[i]
                per_pixel = d.pixel_weights()
                # o is this call's own output: blending into it saves two image-sized buffers
                outs[i] = apply_gate(outs[i], o, d.weight if per_pixel is None else per_pixel, inplace=True)
        return outs, decisions

    def _run_same_size(
        self,
        rgbs: Sequence[np.ndarray],
        batch_size: int | None = 1,
        recorder: Callable[[], dict] | None = None,
        maps_out: list[tuple[dict, int]] | None = None,
    ) -> list[np.ndarray]:
        """:meth:`_run_once`, or with ``self_ensemble > 1`` the mean of that many passes over
        flipped/transposed copies (:mod:`deblur_cli.inference.ensemble`), each transformed back. Maps
        (``recorder``) come from the untransformed pass."""
        if self.self_ensemble == 1:
            return self._run_once(rgbs, batch_size, recorder, maps_out)
        from deblur_cli.inference.ensemble import inverse, transform

        total: list[np.ndarray] = []
        for i in range(self.self_ensemble):
            outs = self._run_once(
                [transform(x, i) for x in rgbs], batch_size, recorder if i == 0 else None, maps_out if i == 0 else None
            )
            if i == 0:
                total = [o.astype(np.float32, copy=True) for o in outs]
            else:
                for t, o in zip(total, outs):
                    t += inverse(o, i)
        return [t / np.float32(self.self_ensemble) for t in total]

    def _run_once(
        self,
        rgbs: Sequence[np.ndarray],
        batch_size: int | None = 1,
        recorder: Callable[[], dict] | None = None,
        maps_out: list[tuple[dict, int]] | None = None,
    ) -> list[np.ndarray]:
        """Deblur ``(3, H, W)`` images that all have the same size, ``batch_size`` at a time
        (``None``: from memory); images that need tiling run one by one.

        With ``recorder`` (a factory of ``maps`` dicts, see :class:`VizRequest`), every batch
        records the network's maps in a fresh dict, and ``maps_out`` receives, per image,
        ``(maps, index in its batch)``. Maps need one untiled pass over each image."""
        _, h, w = rgbs[0].shape
        ph, pw = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
        hp, wp = h + ph, w + pw
        tile = self.tile_for(hp, wp)
        if recorder is not None:
            if tile and (tile < hp or tile < wp):
                raise DeblurError(
                    f"a {w}x{h} image needs tiling here, but the maps of --viz need one untiled pass; "
                    "use `deblur viz --max-side N` for the maps, or --tile 0 if memory allows"
                )
            if not hasattr(self.backend, "model"):
                raise DeblurError("--viz needs the torch backend (the maps come from the torch model)")
            bs = self.batch_size_for(hp, wp) if batch_size is None else max(1, batch_size)
            outs = []
            for i in range(0, len(rgbs), bs):
                batch = np.stack([self._pad(x, ph, pw) for x in rgbs[i : i + bs]])
                maps = recorder()
                outs.extend(self.backend.run(batch, maps=maps))  # type: ignore[call-arg]
                if maps_out is not None:
                    maps_out.extend((maps, j) for j in range(len(batch)))
        elif tile and (tile < hp or tile < wp):
            bs_tiles = self.batch_size_for(min(tile, hp), min(tile, wp))
            outs = [
                tile_process(self.backend.run, self._pad(x, ph, pw), tile, self.tile_overlap, bs_tiles) for x in rgbs
            ]
        else:
            bs = self.batch_size_for(hp, wp) if batch_size is None else max(1, batch_size)
            outs = []
            for i in range(0, len(rgbs), bs):
                batch = np.stack([self._pad(x, ph, pw) for x in rgbs[i : i + bs]])
                outs.extend(self.backend.run(batch))
        return [np.clip(o[:, :h, :w], 0.0, 1.0).astype(np.float32, copy=False) for o in outs]

    @staticmethod
    def _pad(rgb: np.ndarray, ph: int, pw: int) -> np.ndarray:
        if ph or pw:
            rgb = np.pad(rgb, ((0, 0), (0, ph), (0, pw)), mode="edge")
        return np.ascontiguousarray(rgb, dtype=np.float32)

    def deblur(self, image: np.ndarray | str | os.PathLike[str]) -> np.ndarray:
        """Deblur one image.

        Args:
            image: a path (read with EXIF orientation applied) or an array ``(H, W)`` gray,
                ``(H, W, 1|2|3|4)`` gray/gray+alpha/RGB/RGBA, dtype uint8, uint16 or float
                in ``[0, 1]``; channel order RGB (not OpenCV's BGR).

        Returns:
            An array of the same shape and dtype (for a path: as read), alpha untouched.
        """
        if not isinstance(image, np.ndarray):
            from deblur_cli.io.images import read_image

            image = read_image(image).pixels
        rgb, alpha, layout = split_image(image)
        return merge_image(self.deblur_rgb(rgb), alpha, layout)

    def deblur_batch(
        self,
        images: Sequence[np.ndarray],
        batch_size: int | None = None,
        recorder: Callable[[], dict] | None = None,
        maps_out: list[tuple[dict, int]] | None = None,
    ) -> list[np.ndarray]:
        """Deblur several arrays; images of the same size run through the network together
        (``batch_size`` at a time, ``None``: from free memory). Results are in input order.

        ``recorder``/``maps_out``: record the network's maps from the same pass, see
        :meth:`_run_same_size`; ``maps_out`` is filled in input order."""
        split = [split_image(im) for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, (rgb, _, _) in enumerate(split):
            by_size.setdefault(rgb.shape[1:], []).append(i)  # type: ignore[arg-type]
        results: list[np.ndarray | None] = [None] * len(images)
        maps: list[tuple[dict, int] | None] = [None] * len(images)
        decisions: list[Any] = [None] * len(images)
        for idx in by_size.values():
            got: list[tuple[dict, int]] = []
            outs, decided = self._gated([split[i][0] for i in idx], batch_size, recorder, got)
            for k, (i, out) in enumerate(zip(idx, outs, strict=True)):
                results[i] = merge_image(out, split[i][1], split[i][2])
                if recorder is not None:
                    maps[i] = got[k]
                if decided:
                    decisions[i] = decided[k]
        self.last_decisions = [d for d in decisions if d is not None]
        if maps_out is not None:
            maps_out.extend(m for m in maps if m is not None)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------------------- files

    def deblur_file(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str] | None = None,
        *,
        quality: int | None = None,
        overwrite: bool = False,
        viz: VizRequest | None = None,
    ) -> Path:
        """Read ``src``, deblur it and write ``dst`` with the input's metadata (atomically).

        Args:
            src: input image.
            dst: output; its extension picks the format. Default: ``<src stem>_deblurred.png``
                beside ``src``.
            quality: JPEG/WebP quality (1-100).
            overwrite: replace an existing ``dst`` (including ``src`` itself).
            viz: also write the network's maps from the same pass (:class:`VizRequest`).

        Returns:
            The path written.

        Raises:
            DeblurError: bad input, existing output without ``overwrite``, unwritable output.
        """
        from deblur_cli.io.images import read_image

        src, dst = Path(src), default_output(src) if dst is None else Path(dst)
        self._check_output(dst, overwrite)
        data = read_image(src)
        self._check_encodable(data.pixels, dst)
        recorder = self._recorder(viz)
        maps: list[tuple[dict, int]] = []
        try:
            out = self.deblur_batch([data.pixels], 1, recorder, maps)[0]
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            raise DeblurError(
                f"{src}: out of memory on {self.device_description}; try a smaller --tile (e.g. 512)"
            ) from None
        decision = self.last_decisions[0] if self.last_decisions else None
        written = self._write(dst, out, data, quality, overwrite, src, decision)
        if viz is not None:
            self._write_maps(viz, maps[0], data.pixels, out, src, dst)
        return written

    def _recorder(self, viz: VizRequest | None) -> Callable[[], dict] | None:
        """A factory of map recorders for ``viz`` (validated against the model), or ``None``."""
        if viz is None:
            return None
        from deblur_cli.viz.maps import check_selection, map_recorder

        config = getattr(self.backend, "config", None)
        if config is None or not hasattr(self.backend, "model"):
            raise DeblurError("--viz needs the torch backend and a SAPHN model (the maps come from the torch model)")
        blocks = int(config.blocks)
        check_selection(viz.selection, blocks)
        return lambda: map_recorder(viz.selection, blocks)

    def _write_maps(
        self, viz: VizRequest, maps: tuple[dict, int], image: np.ndarray, out: np.ndarray, src: Path, dst: Path
    ) -> list[Path]:
        """Render the maps recorded for one image and write them as ``<dst stem>.<map>.png``."""
        from deblur_cli.viz.maps import as_rgb8, render_maps, write_maps

        rec, index = maps
        name = self.model_info.get("name") or "model"
        rendered = render_maps(rec, as_rgb8(image), as_rgb8(out), viz.selection, index=index,
                               caption=f"{src.name} - {name}")  # fmt: skip
        folder = viz.folder_for(dst)
        return write_maps(rendered, folder, dst.stem, raw=viz.raw, overwrite=viz.overwrite)

    @staticmethod
    def _check_output(dst: Path, overwrite: bool) -> None:
        from deblur_cli.io.images import output_format

        output_format(dst)
        if dst.is_dir():
            raise DeblurError(f"{dst}: is a directory; give an output file name")
        if dst.exists() and not overwrite:
            raise DeblurError(f"{dst}: already exists (use --overwrite to replace it)")

    @staticmethod
    def _check_encodable(pixels: np.ndarray, dst: Path) -> None:
        from deblur_cli.io.images import output_format

        if output_format(dst) == "JPEG" and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
            raise DeblurError(f"{dst}: the image has an alpha channel, which JPEG cannot store; use .png/.webp/.tiff")

    @staticmethod
    def _write(
        dst: Path,
        pixels: np.ndarray,
        data: Any,
        quality: int | None,
        overwrite: bool,
        src: Path | None = None,
        decision: Any = None,
    ) -> Path:
        """Encode ``pixels`` to ``dst`` with ``data``'s metadata; an image the gate left as it was
        (``decision.weight == 0``) is copied from ``src`` byte for byte when ``dst`` has the
        input's format, so that a JPEG is not compressed a second time."""
        from deblur_cli.io.images import atomic_write_bytes, output_format, write_image

        if src is not None and decision is not None and decision.weight <= 0 and data.source_format == output_format(dst):
            try:
                raw = src.read_bytes()
            except OSError:
                pass  # gone since it was read: encode the decoded pixels instead
            else:
                return atomic_write_bytes(dst, raw, overwrite=overwrite)
        return write_image(
            dst, pixels, icc_profile=data.icc_profile, exif=data.exif, quality=quality, overwrite=overwrite
        )

    def deblur_files(
        self,
        jobs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
        *,
        batch_size: int | None = 1,
        quality: int | None = None,
        overwrite: bool = False,
        skip_existing: bool = False,
        viz: VizRequest | None = None,
    ) -> Iterator[FileResult]:
        """Deblur many files, yielding one :class:`FileResult` per file as it finishes.

        A bad file (unreadable, corrupt, unwritable output, ...) gives a ``"failed"`` result
        and processing goes on. With ``batch_size != 1`` files are ordered by image size and
        same-size images run through the network together (``None``: batch size from free
        memory); results then come in that order. ``viz`` writes each image's maps from the
        same pass (:class:`VizRequest`).
        """
        recorder = self._recorder(viz)
        flush = lambda g, n, t=None: self._flush(g, n, quality, overwrite, t, viz, recorder)  # noqa: E731
        pending = [(Path(s), Path(d)) for s, d in jobs]
        if batch_size != 1:
            pending = _sort_by_size(pending)
        group: list[tuple[Path, Path, Any]] = []
        limit = 1
        for src, dst in pending:
            if skip_existing and dst.exists():
                yield FileResult(src, dst, "skipped", "output exists")
                continue
            start = time.perf_counter()
            try:
                self._check_output(dst, overwrite)
                from deblur_cli.io.images import read_image

                data = read_image(src)
                self._check_encodable(data.pixels, dst)
            except DeblurError as exc:
                yield FileResult(src, dst, "failed", str(exc), time.perf_counter() - start)
                continue
            if batch_size == 1:
                yield from flush([(src, dst, data)], 1, start)
                continue
            if group and group[0][2].pixels.shape[:2] != data.pixels.shape[:2]:
                yield from flush(group, limit)
                group = []
            if not group:
                h, w = data.pixels.shape[:2]
                limit = self.batch_size_for(max(h, MIN_SIDE), max(w, MIN_SIDE)) if batch_size is None else batch_size
            group.append((src, dst, data))
            if len(group) >= limit:
                yield from flush(group, limit)
                group = []
        if group:
            yield from flush(group, limit)

    def _flush(
        self,
        group: list[tuple[Path, Path, Any]],
        batch_size: int,
        quality: int | None,
        overwrite: bool,
        start: float | None = None,
        viz: VizRequest | None = None,
        recorder: Callable[[], dict] | None = None,
    ) -> Iterator[FileResult]:
        """Run a group of same-size decoded images, write them (and their maps), report each."""
        start = time.perf_counter() if start is None else start
        maps: list[tuple[dict, int]] = []
        try:
            outs = self.deblur_batch([d.pixels for _, _, d in group], batch_size, recorder, maps)
        except (RuntimeError, MemoryError, DeblurError) as exc:
            if len(group) == 1:
                src, dst, _ = group[0]
                reason = str(exc) if isinstance(exc, DeblurError) else f"{src}: inference failed ({exc})"
                yield FileResult(src, dst, "failed", reason, time.perf_counter() - start)
                return
            for item in group:  # e.g. out of memory with a batch: retry one by one
                yield from self._flush([item], 1, quality, overwrite, None, viz, recorder)
            return
        decided = self.last_decisions
        share = (time.perf_counter() - start) / len(group)
        for k, ((src, dst, data), out) in enumerate(zip(group, outs, strict=True)):
            t0 = time.perf_counter()
            d = decided[k] if decided else None
            try:
                self._write(dst, out, data, quality, overwrite, src, d)
                if viz is not None:
                    self._write_maps(viz, maps[k], data.pixels, out, src, dst)
            except DeblurError as exc:
                yield FileResult(src, dst, "failed", str(exc), share + time.perf_counter() - t0)
                continue
            h, w = out.shape[:2]
            yield FileResult(src, dst, "done", "", share + time.perf_counter() - t0, h * w,
                             d.extent if d else None, d.weight if d else None)  # fmt: skip


def _is_out_of_memory(exc: BaseException) -> bool:
    """``MemoryError`` or torch's ``OutOfMemoryError`` (CUDA) / allocator failure (CPU)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "failed to allocate" in text


def default_output(src: str | os.PathLike[str]) -> Path:
    """``IN_deblurred.png`` beside ``IN``."""
    src = Path(src)
    return src.with_name(f"{src.stem}_deblurred.png")


def _sort_by_size(jobs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Order jobs so that images of the same (header) size are adjacent; unreadable files
    keep their place at the end and fail when they are read."""
    from deblur_cli.io.images import probe_size

    def key(job: tuple[Path, Path]) -> tuple[int, int, int]:
        try:
            w, h = probe_size(job[0])
            return (0, h, w)
        except DeblurError:
            return (1, 0, 0)

    return sorted(jobs, key=key)


def check_job(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Path:
    """Cheap checks before any model is loaded: ``src`` is an existing file, ``dst`` has a
    writable format, is not a directory and does not exist (unless ``overwrite``).

    Returns:
        ``dst``, or :func:`default_output` of ``src`` when ``dst`` is None.

    Raises:
        DeblurError: the first problem found.
    """
    src = Path(src)
    if not src.exists():
        raise DeblurError(f"{src}: no such file")
    if src.is_dir():
        raise DeblurError(f"{src}: is a directory, not an image (use `deblur folder` for directories)")
    out = default_output(src) if dst is None else Path(dst)
    Deblurrer._check_output(out, overwrite)
    return out


def folder_output_root(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None) -> Path:
    """The output folder of ``deblur folder``: ``output_dir``, or ``<input_dir>_deblurred`` beside it."""
    in_dir = Path(input_dir)
    return Path(output_dir) if output_dir is not None else in_dir.resolve().parent / f"{in_dir.resolve().name}_deblurred"


def plan_folder(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    *,
    recursive: bool = False,
    suffix: str | None = None,
    ext: str | None = None,
) -> list[tuple[Path, Path]]:
    """Map every image under ``input_dir`` to its output path, mirroring the tree.

    Args:
        input_dir: folder to scan; files with an extension in
            :data:`~deblur_cli.io.images.INPUT_EXTENSIONS` (any case) are inputs, hidden files
            and other files are ignored.
        output_dir: default ``<input_dir>_deblurred`` beside it. It may be ``input_dir``
            itself (outputs then need a suffix, ``_deblurred`` by default, and files whose
            name already ends with it are not taken as inputs) or lie inside it (it is then
            excluded from the scan).
        recursive: descend into sub-folders (the output mirrors them).
        suffix: appended to each output's stem; default ``""`` (``"_deblurred"`` when writing
            into ``input_dir``).
        ext: output format for all files (``png``, ``jpg``, ...); default: the input's
            extension when it is writable, else ``.png``.

    Returns:
        ``(input, output)`` pairs in sorted order.

    Raises:
        DeblurError: missing input folder, outputs that would replace an input or collide
            with each other, an unknown ``ext``, or no images found.
    """
    from deblur_cli.io.images import INPUT_EXTENSIONS, OUTPUT_FORMATS

    in_dir = Path(input_dir)
    if not in_dir.exists():
        raise DeblurError(f"{in_dir}: no such folder")
    if not in_dir.is_dir():
        raise DeblurError(f"{in_dir}: is a file, not a folder (use `deblur image` for one image)")
    out_dir = folder_output_root(in_dir, output_dir)
    in_res, out_res = in_dir.resolve(), out_dir.resolve()
    same = in_res == out_res
    if suffix is None:
        suffix = "_deblurred" if same else ""
    if same and not suffix:
        raise DeblurError(
            "the output folder is the input folder: give a non-empty --suffix so inputs are never replaced"
        )
    if ext is not None:
        ext = "." + ext.lower().lstrip(".")
        if ext not in OUTPUT_FORMATS:
            raise DeblurError(f"cannot write {ext} files; use one of {', '.join(sorted(OUTPUT_FORMATS))}")
    out_inside = not same and out_res.is_relative_to(in_res)

    candidates = in_dir.rglob("*") if recursive else in_dir.iterdir()
    jobs: list[tuple[Path, Path]] = []
    for src in sorted(candidates):
        rel = src.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts) or src.suffix.lower() not in INPUT_EXTENSIONS:
            continue
        if not src.is_file() or (out_inside and src.resolve().is_relative_to(out_res)):
            continue
        if same and src.stem.endswith(suffix):
            continue  # an output of an earlier run
        out_ext = ext or (src.suffix.lower() if src.suffix.lower() in OUTPUT_FORMATS else ".png")
        jobs.append((src, out_dir / rel.parent / f"{src.stem}{suffix}{out_ext}"))
    if not jobs:
        where = "under" if recursive else "in"
        raise DeblurError(f"no images {where} {in_dir} (looked for {', '.join(sorted(INPUT_EXTENSIONS))})")
    inputs = {s.resolve() for s, _ in jobs}
    seen: dict[Path, Path] = {}
    for src, dst in jobs:
        key = dst.resolve()
        if key in inputs:
            raise DeblurError(f"{dst}: output would replace an input; use another --suffix or output folder")
        if key in seen:
            raise DeblurError(f"{seen[key]} and {src} would both be written to {dst}; use --ext or --suffix")
        seen[key] = src
    return jobs
