"""Files: read images, deblur them and write the results with their metadata.

:class:`FileMethods` gives :class:`~deblur_cli.inference.deblurrer.Deblurrer` its file methods:
:meth:`~FileMethods.deblur_file` for one image, :meth:`~FileMethods.deblur_files` for many
(a bad file is reported as a :class:`FileResult` and the batch goes on; a batch that fails,
e.g. out of memory, is retried one image at a time). Outputs are written atomically, never
over an existing file unless asked. With a :class:`~deblur_cli.viz.request.VizRequest` the network's internal maps of
the same pass are written beside each result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deblur_cli.errors import DeblurError
from deblur_cli.inference.layout import MIN_SIDE
from deblur_cli.inference.memory import is_out_of_memory
from deblur_cli.inference.planning import check_output, default_output

if TYPE_CHECKING:
    from deblur_cli.viz.request import VizRequest


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


class FileMethods:
    """The file methods of :class:`~deblur_cli.inference.deblurrer.Deblurrer` (a mixin).

    They run images through the class's ``deblur_batch`` and size batches with its
    ``batch_size_for``.
    """

    backend: Any
    device_description: str
    model_info: dict[str, Any]
    last_decisions: list[Any]

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
        check_output(dst, overwrite)
        data = read_image(src)
        _check_encodable(data.pixels, dst)
        recorder = self._recorder(viz)
        maps: list[tuple[dict, int]] = []
        try:
            out = self.deblur_batch([data.pixels], 1, recorder, maps)[0]
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            raise DeblurError(
                f"{src}: out of memory on {self.device_description}; try a smaller --tile (e.g. 512)"
            ) from None
        decision = self.last_decisions[0] if self.last_decisions else None
        written = _write(dst, out, data, quality, overwrite, src, decision)
        if viz is not None:
            self._write_maps(viz, maps[0], data.pixels, out, src, dst)
        return written

    def deblur_video(
        self, src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None, **options: Any
    ) -> Any:
        """Deblur a video frame by frame, keeping its timing, audio, rotation and colour tags.

        A thin door to :func:`deblur_cli.video.pipeline.deblur_video` (needs PyAV:
        ``pip install 'deblur-cli[video]'``); ``options`` are its keyword arguments
        (``frames_dir``, ``codec``, ``crf``, ``audio``, ``batch_size``, ``gate_smoothing``,
        ``gate_interval``, ``overwrite``, ``progress``, ``notify``).

        Returns:
            A :class:`deblur_cli.video.job.VideoResult`.
        """
        from deblur_cli.video.formats import require_av

        require_av()
        from deblur_cli.video.pipeline import deblur_video

        return deblur_video(self, src, dst, **options)

    def _recorder(self, viz: VizRequest | None) -> Callable[[], dict] | None:
        """A factory of map recorders for ``viz`` (checked against the model), or ``None``."""
        if viz is None:
            return None
        config = getattr(self.backend, "config", None) if hasattr(self.backend, "model") else None
        return viz.recorder(config)

    def _write_maps(
        self, viz: VizRequest, maps: tuple[dict, int], image: np.ndarray, out: np.ndarray, src: Path, dst: Path
    ) -> list[Path]:
        """Write the maps recorded for one image beside its result (see :meth:`VizRequest.write`)."""
        return viz.write(maps, image, out, src, dst, self.model_info.get("name") or "model")

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
                check_output(dst, overwrite)
                from deblur_cli.io.images import read_image

                data = read_image(src)
                _check_encodable(data.pixels, dst)
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
                _write(dst, out, data, quality, overwrite, src, d)
                if viz is not None:
                    self._write_maps(viz, maps[k], data.pixels, out, src, dst)
            except DeblurError as exc:
                yield FileResult(src, dst, "failed", str(exc), share + time.perf_counter() - t0)
                continue
            h, w = out.shape[:2]
            yield FileResult(src, dst, "done", "", share + time.perf_counter() - t0, h * w,
                             d.extent if d else None, d.weight if d else None)  # fmt: skip



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



def _check_encodable(pixels: np.ndarray, dst: Path) -> None:
    """Refuse an alpha channel for a JPEG output (it cannot store one)."""
    from deblur_cli.io.images import output_format

    if output_format(dst) == "JPEG" and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        raise DeblurError(f"{dst}: the image has an alpha channel, which JPEG cannot store; use .png/.webp/.tiff")


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
    return write_image(dst, pixels, icc_profile=data.icc_profile, exif=data.exif, quality=quality, overwrite=overwrite)
