"""The :class:`Deblurrer`: any image in, deblurred image out, at any size.

It is the public API (``from deblur_cli import Deblurrer``): it owns a backend
(:mod:`deblur_cli.backends`), converts any supported array to the network's ``(3, H, W)`` float
RGB and back (:mod:`~deblur_cli.inference.layout`: alpha untouched, gray stays gray, dtype
kept), picks tile and batch sizes from free memory (:mod:`~deblur_cli.inference.memory`,
:mod:`~deblur_cli.inference.tiling`), applies the blur gate (:mod:`deblur_cli.gate`) and the
self-ensemble (:mod:`~deblur_cli.inference.ensemble`). Reading and writing files is in
:mod:`~deblur_cli.inference.files`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from deblur_cli.errors import DeblurError
from deblur_cli.inference.files import FileMethods
from deblur_cli.inference.layout import MIN_SIDE, merge_image, split_image
from deblur_cli.inference.memory import available_memory, estimate_bytes_per_pixel
from deblur_cli.inference.tiling import DEFAULT_TILE_OVERLAP, choose_tile, tile_process

if TYPE_CHECKING:
    from torch import nn

    from deblur_cli.backends.base import Backend

#: Smallest tile ``--tile`` accepts.
MIN_TILE = 32
#: Largest number of images (or tiles) run in one batch when sizes are chosen automatically.
MAX_AUTO_BATCH = 16


class Deblurrer(FileMethods):
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

    Files are read and written by :meth:`deblur_file` and :meth:`deblur_files`
    (:class:`~deblur_cli.inference.files.FileMethods`).

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
        from deblur_cli.gate.decision import GATE_SCOPES

        if gate_scope not in GATE_SCOPES:
            raise DeblurError(f"--gate-scope must be one of {', '.join(GATE_SCOPES)}, got {gate_scope!r}")
        if gate is None and gate_scope != "image":
            raise DeblurError(f"--gate-scope {gate_scope} needs a blur gate (it is off: give --gate auto or LO,HI)")
        if gate is not None:
            from deblur_cli.gate.decision import check_gate
            from deblur_cli.gate.meter import BlurMeter

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
        """The gate's :class:`~deblur_cli.gate.decision.GateDecision` for a ``(3, H, W)`` image."""
        from deblur_cli.gate.decision import decide_gate

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
        from deblur_cli.gate.decision import apply_gate

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

        With ``recorder`` (a factory of ``maps`` dicts, see :class:`~deblur_cli.viz.request.VizRequest`), every batch
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
