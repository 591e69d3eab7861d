"""A folder of images and videos (``deblur folder``): plan both, and deblur the videos one by one with
the same :class:`~deblur_cli.inference.Deblurrer`, reporting each as a
:class:`~deblur_cli.inference.FileResult`.

It lives in ``inference`` (which calls into :mod:`deblur_cli.video`), not in ``video``, so that the
video package never imports the inference package. Light on purpose: planning imports neither
PyAV nor torch, so a folder of images works without the ``video`` extra; only a folder that holds
videos needs it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deblur_cli.errors import DeblurError
from deblur_cli.video.formats import VIDEO_EXTENSIONS

#: Containers a video keeps in ``deblur folder`` (others, e.g. .avi, become .mp4).
_KEPT = {".mp4", ".m4v", ".mov", ".mkv", ".webm"}


#: What to do when two videos would get one output name (only their containers differ).
VIDEO_CLASH_HINT = "rename one of them (videos are written under their own names, .avi and the like as .mp4)"


def video_output_suffix(src_suffix: str) -> str:
    """The extension of a video's output in ``deblur folder``: its own container where we write
    that (:data:`_KEPT`), else ``.mp4``. Local and remote (``--ray``) planning both use it."""
    return src_suffix.lower() if src_suffix.lower() in _KEPT else ".mp4"


def plan_media(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    *,
    recursive: bool = False,
    suffix: str | None = None,
    ext: str | None = None,
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """``(image_jobs, video_jobs)`` of a folder: the images as ``deblur_cli.inference.plan_folder``
    plans them (``ext`` applies to images only), and the videos (:data:`VIDEO_EXTENSIONS`) mirrored the
    same way, each keeping its container (``.avi`` and others become ``.mp4``).

    Raises:
        DeblurError: as ``plan_folder`` (an empty folder says that it looked for videos too), or a
            video output that would replace an input or another output.
    """
    from deblur_cli.inference.planning import check_folder_options, plan_folder, scan_folder
    from deblur_cli.io.images import INPUT_EXTENSIONS

    in_dir = Path(input_dir)
    out_dir, sfx, _ = check_folder_options(in_dir, output_dir, suffix, ext)
    videos = scan_folder(in_dir, out_dir, recursive=recursive, suffix=sfx, extensions=VIDEO_EXTENSIONS)
    if not videos or scan_folder(in_dir, out_dir, recursive=recursive, suffix=sfx, extensions=INPUT_EXTENSIONS):
        try:
            images = plan_folder(in_dir, output_dir, recursive=recursive, suffix=suffix, ext=ext)
        except DeblurError as exc:
            if videos or not str(exc).startswith("no images"):
                raise
            raise DeblurError(f"{exc}, or videos ({', '.join(sorted(VIDEO_EXTENSIONS))})") from None
    else:
        images = []  # a folder of videos only: check_folder_options made plan_folder's checks
    jobs = []
    for src in videos:
        rel = src.relative_to(in_dir)
        jobs.append((src, out_dir / rel.parent / f"{src.stem}{sfx}{video_output_suffix(src.suffix)}"))
    taken = {d.resolve(): s for s, d in images}
    inputs = {s.resolve() for s, _ in images} | {s.resolve() for s, _ in jobs}
    for src, dst in jobs:
        key = dst.resolve()
        if key in inputs:
            raise DeblurError(f"{dst}: output would replace an input; use another --suffix or output folder")
        if key in taken:
            raise DeblurError(f"{taken[key]} and {src} would both be written to {dst}; {VIDEO_CLASH_HINT}")
        taken[key] = src
    return images, jobs


def run_videos(
    deblurrer: Any,
    jobs: list[tuple[Path, Path]],
    *,
    batch_size: int | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    on_frames: Callable[[Path, Any], None] | None = None,
) -> Iterator[Any]:
    """Deblur each video of ``jobs`` (:func:`deblur_cli.video.deblur_video`), yielding one
    ``FileResult`` per video as it finishes: ``"failed"`` with the reason for a bad video, and
    processing goes on. ``pixels`` is the frame size times the frames; ``gate`` the mean weight.
    ``on_frames(src, progress)`` is called after every batch (for a progress display)."""
    from deblur_cli.inference.files import FileResult

    if not jobs:
        return
    try:
        from deblur_cli.video.formats import require_av

        require_av()
    except DeblurError as exc:
        for src, dst in jobs:
            yield FileResult(src, dst, "failed", str(exc))
        return
    from deblur_cli.video.pipeline import deblur_video

    for src, dst in jobs:
        if skip_existing and dst.exists():
            yield FileResult(src, dst, "skipped", "output exists")
            continue
        start = time.perf_counter()
        report = None if on_frames is None else (lambda p, s=src: on_frames(s, p))
        try:
            r = deblur_video(deblurrer, src, dst, batch_size=batch_size, overwrite=overwrite, progress=report)
        except DeblurError as exc:
            yield FileResult(src, dst, "failed", str(exc), time.perf_counter() - start)
            continue
        gate = sum(r.weights) / len(r.weights) if r.weights else None
        extent = sum(r.extents) / len(r.extents) if r.extents else None
        pixels = r.width * r.height * r.frames
        yield FileResult(src, dst, "done", "", time.perf_counter() - start, pixels, extent, gate)
