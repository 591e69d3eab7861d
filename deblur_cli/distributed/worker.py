"""The Ray Data worker: one :class:`~deblur_cli.inference.Deblurrer` per actor, a batch of files per call.

Ray Data creates :class:`DeblurWorker` once per actor of the pool and calls it with batches of
rows ``{"rel": [...], "out_rel": [...]}`` (paths relative to the input and output folders). Each
call runs :meth:`Deblurrer.deblur_files` on its images and
:func:`~deblur_cli.inference.media.run_videos` on its videos, exactly as ``deblur folder`` does
(same reading, gate, batching of same-size images, metadata and atomic writes), and returns one
result row per file. Files on object stores are copied to a scratch folder first and their
outputs uploaded afterwards (:func:`deblur_cli.distributed.storage.publish`), each upload
visible only once complete.

Outputs that exist when a file's turn comes are kept, not replaced (unless ``overwrite``): when
Ray retries a batch on a restarted actor, the files the killed actor had finished are not
done again.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from deblur_cli.distributed.storage import Location, download, exists, publish
from deblur_cli.errors import DeblurError

#: Columns of a result row.
RESULT_COLUMNS = ("rel", "out_rel", "status", "message", "seconds", "pixels", "blur_px", "gate", "worker", "device",
                  "fatal")  # fmt: skip
#: Files fetched from an object store at the same time, per worker.
FETCH_THREADS = 8


class DeblurWorker:
    """Callable class for ``Dataset.map_batches``.

    Args:
        src, dst: input and output folders.
        deblurrer: keyword arguments of :class:`~deblur_cli.inference.Deblurrer`.
        threads: torch CPU threads of this worker (``None``: leave torch's default).
        batch_size: the network's batch of images (``None``: from free memory), as ``deblur folder --batch-size``.
        video_batch_size: frames per network call for videos (``None``: from free memory, at most 8).
        quality, overwrite: as ``deblur folder``.
        viz: a :class:`~deblur_cli.viz.request.VizRequest` with absolute paths: each image's maps
            are written too (local or shared output folders only).

    A model that cannot be loaded (or options it refuses) does not kill the actor (Ray would
    start it again and again): every row of every call then carries the error with ``fatal``
    set, and the driver stops the job with that message.
    """

    def __init__(self, src: Location, dst: Location, deblurrer: dict[str, Any], threads: int | None = None,
                 batch_size: int | None = 1, video_batch_size: int | None = None, quality: int | None = None,
                 overwrite: bool = False, viz: Any = None) -> None:  # fmt: skip
        self.src, self.dst = src, dst
        self.batch_size, self.video_batch_size = batch_size, video_batch_size
        self.quality, self.overwrite, self.viz = quality, overwrite, viz
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.error = ""
        self.device = ""
        if threads:
            import torch

            torch.set_num_threads(threads)
        try:
            from deblur_cli.inference import Deblurrer

            self.deblurrer = Deblurrer(**deblurrer)
            self.device = self.deblurrer.device_description
        except DeblurError as exc:
            self.error = str(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rels = [str(r) for r in batch["rel"]]
        outs = [str(r) for r in batch["out_rel"]]
        if self.error:
            rows = [self._row(r, o, "failed", self.error, fatal=True) for r, o in zip(rels, outs, strict=True)]
        elif self.src.local and self.dst.local:
            jobs = [(self.src.join(r), self.dst.join(o)) for r, o in zip(rels, outs, strict=True)]
            shown = {self.src.join(r): self.src.show(r) for r in rels} | {self.dst.join(o): self.dst.show(o) for o in outs}
            rows = self._run(jobs, rels, outs, shown)
        else:
            rows = self._run_staged(rels, outs)
        return {c: np.array([row[c] for row in rows], dtype=object if c in ("blur_px", "gate") else None)
                for c in RESULT_COLUMNS}  # fmt: skip

    def _row(self, rel: str, out_rel: str, status: str, message: str = "", seconds: float = 0.0, pixels: int = 0,
             blur_px: float | None = None, gate: float | None = None, fatal: bool = False) -> dict[str, Any]:  # fmt: skip
        return {"rel": rel, "out_rel": out_rel, "status": status, "message": message, "seconds": float(seconds),
                "pixels": int(pixels), "blur_px": math.nan if blur_px is None else float(blur_px),
                "gate": math.nan if gate is None else float(gate), "worker": self.name, "device": self.device,
                "fatal": fatal}  # fmt: skip

    def _run(self, jobs: list[tuple[str, str]], rels: list[str], outs: list[str],
             rename: dict[str, str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Local paths through ``deblur folder``'s own code: images by ``deblur_files``, videos one
        by one by :func:`~deblur_cli.inference.media.run_videos`; rows in the order of ``jobs``.
        ``rename`` maps scratch paths to what users know them as, for messages."""
        from deblur_cli.inference.media import run_videos
        from deblur_cli.video.formats import is_video_path

        by_src = {os.path.normpath(s): i for i, (s, _) in enumerate(jobs)}
        rows: list[dict[str, Any] | None] = [None] * len(jobs)
        images = [(s, d) for s, d in jobs if not is_video_path(s)]
        videos = [(Path(s), Path(d)) for s, d in jobs if is_video_path(s)]
        results = itertools.chain(
            self.deblurrer.deblur_files(
                images, batch_size=self.batch_size, quality=self.quality, overwrite=self.overwrite,
                skip_existing=not self.overwrite, viz=self.viz,
            ) if images else [],
            run_videos(self.deblurrer, videos, batch_size=self.video_batch_size, overwrite=self.overwrite,
                       skip_existing=not self.overwrite),
        )  # fmt: skip
        for r in results:
            i = by_src[os.path.normpath(str(r.src))]
            message = r.message
            for old, new in (rename or {}).items():
                message = message.replace(old, new)
            rows[i] = self._row(rels[i], outs[i], r.status, message, r.seconds, r.pixels, r.blur_px, r.gate)
        return [row if row is not None else self._row(rels[i], outs[i], "failed", "no result") for i, row in enumerate(rows)]

    def _run_staged(self, rels: list[str], outs: list[str]) -> list[dict[str, Any]]:
        """Remote input or output: through a scratch folder of this actor."""
        import time

        scratch = Path(tempfile.mkdtemp(prefix="deblur-ray-"))
        try:
            start = time.perf_counter()
            rows: list[dict[str, Any] | None] = [None] * len(rels)
            jobs: list[tuple[str, str]] = []
            index: list[int] = []
            rename: dict[str, str] = {}
            fetched = self._fetch(rels, scratch) if not self.src.local else [None] * len(rels)
            for i, (rel, out) in enumerate(zip(rels, outs, strict=True)):
                if isinstance(fetched[i], DeblurError):
                    rows[i] = self._row(rel, out, "failed", str(fetched[i]))
                    continue
                try:
                    present = not self.dst.local and not self.overwrite and exists(self.dst, out)
                except DeblurError as exc:  # the store did not answer: this file fails, the batch goes on
                    rows[i] = self._row(rel, out, "failed", str(exc))
                    continue
                if present:
                    rows[i] = self._row(rel, out, "skipped", "output exists")
                    continue
                src_path = str(fetched[i]) if fetched[i] is not None else self.src.join(rel)
                dst_path = self.dst.join(out) if self.dst.local else str(scratch / "out" / str(i) / out.rpartition("/")[2])
                rename[src_path] = self.src.show(rel)
                rename[dst_path] = self.dst.show(out)
                jobs.append((src_path, dst_path))
                index.append(i)
            fetch_share = (time.perf_counter() - start) / max(1, len(rels))
            if jobs:
                done = self._run(jobs, [rels[i] for i in index], [outs[i] for i in index], rename)
                for i, (_, dst_path), row in zip(index, jobs, done, strict=True):
                    row["seconds"] += fetch_share
                    if row["status"] == "done" and not self.dst.local:
                        t0 = time.perf_counter()
                        try:
                            publish(dst_path, self.dst, outs[i])
                        except DeblurError as exc:
                            row.update(status="failed", message=str(exc), pixels=0)
                        row["seconds"] += time.perf_counter() - t0
                    rows[i] = row
            return [r for r in rows if r is not None]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _fetch(self, rels: list[str], scratch: Path) -> list[Path | DeblurError]:
        """Copy the inputs to ``scratch/in/<i>/<name>`` (several at once: object stores have
        high latency; streamed: a video may not fit in memory); a file that cannot be read
        gives its error instead."""

        def one(i: int) -> Path | DeblurError:
            path = scratch / "in" / str(i) / rels[i].rpartition("/")[2]
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                download(self.src, rels[i], path)
            except DeblurError as exc:
                return exc
            return path

        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, max(1, len(rels)))) as pool:
            return list(pool.map(one, range(len(rels))))
