"""Which inputs a distributed job has, where their outputs go, and which of them still need work.

:func:`plan` gives the same pairs as ``deblur folder``: local folders go through
:func:`deblur_cli.inference.plan_folder` itself; remote folders follow the same rules on a
listing of the bucket (mirrored tree, ``--suffix``, ``--ext``, hidden files skipped, outputs
never replacing inputs). :func:`triage` then applies ``--skip-existing``/``--overwrite`` and the
manifest of an earlier run (:mod:`deblur_cli.distributed.manifest`), so that a rerun does only
the work that is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deblur_cli.distributed.storage import Location, list_files
from deblur_cli.errors import DeblurError


@dataclass(frozen=True)
class Task:
    """One input: ``rel`` (relative to the input folder) and ``out_rel`` (relative to the output
    folder), both POSIX."""

    rel: str
    out_rel: str


def default_output(src: Location) -> str:
    """``deblur folder``'s default output folder, ``<IN_DIR>_deblurred`` beside the input."""
    if src.local:
        from deblur_cli.inference import folder_output_root

        return str(folder_output_root(src.path, None))
    return src.uri.rstrip("/") + "_deblurred"


def plan(src: Location, dst: Location, *, recursive: bool = False, suffix: str | None = None,
         ext: str | None = None) -> list[Task]:  # fmt: skip
    """Every input (image or video) under ``src`` with its output under ``dst``, in sorted order.

    Raises:
        DeblurError: as :func:`deblur_cli.inference.media.plan_media` (no images or videos, an output that
            would replace an input, two inputs with one output, unknown ``ext``), or an input
            and an output on different kinds of storage that are the same folder.
    """
    if src.local and dst.local:
        from deblur_cli.inference.media import plan_media

        images, videos = plan_media(src.uri, dst.uri, recursive=recursive, suffix=suffix, ext=ext)
        jobs = sorted(images + videos)
        return [Task(s.relative_to(src.uri).as_posix(), d.relative_to(dst.uri).as_posix()) for s, d in jobs]
    if src.local:
        names = _local_listing(Path(src.uri), recursive)
    else:
        names = list_files(src, recursive)
    same = not src.local and not dst.local and src.fs.type_name == dst.fs.type_name and src.path == dst.path
    inside = ""
    if not src.local and not dst.local and not same and dst.path.startswith(src.path.rstrip("/") + "/"):
        inside = dst.path[len(src.path.rstrip("/")) + 1 :]
    return plan_names(names, src.uri, same=same, inside=inside, recursive=recursive, suffix=suffix, ext=ext)


def _local_listing(root: Path, recursive: bool) -> list[str]:
    if not root.exists():
        raise DeblurError(f"{root}: no such folder")
    if not root.is_dir():
        raise DeblurError(f"{root}: is a file, not a folder (use `deblur image` for one image)")
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(p.relative_to(root).as_posix() for p in found if p.is_file())


def plan_names(names: list[str], where: str, *, same: bool = False, inside: str = "", recursive: bool = False,
               suffix: str | None = None, ext: str | None = None) -> list[Task]:  # fmt: skip
    """:func:`deblur_cli.inference.media.plan_media`'s rules on a listing: images as
    :func:`deblur_cli.inference.plan_folder` plans them, videos beside them (``ext`` applies to
    images only; a video keeps its container where it can, :func:`video_output_suffix`).

    Args:
        names: files relative to the input folder (POSIX), as listed.
        where: the input folder, for messages.
        same: the output folder is the input folder (outputs then need a suffix).
        inside: the output folder lies inside the input folder at this relative path (its
            files are not inputs).
        recursive, suffix, ext: as ``deblur folder``'s options.
    """
    from deblur_cli.io.images import INPUT_EXTENSIONS, OUTPUT_FORMATS
    from deblur_cli.inference.media import VIDEO_CLASH_HINT, video_output_suffix
    from deblur_cli.video.formats import VIDEO_EXTENSIONS, is_video_path

    if suffix is None:
        suffix = "_deblurred" if same else ""
    if same and not suffix:
        raise DeblurError("the output folder is the input folder: give a non-empty --suffix so inputs are never replaced")
    if ext is not None:
        ext = "." + ext.lower().lstrip(".")
        if ext not in OUTPUT_FORMATS:
            raise DeblurError(f"cannot write {ext} files; use one of {', '.join(sorted(OUTPUT_FORMATS))}")
    tasks: list[Task] = []
    for rel in sorted(names):
        parts = rel.split("/")
        if not recursive and len(parts) > 1:
            continue
        name = parts[-1]
        stem, dot, tail = name.rpartition(".")
        src_ext = f".{tail.lower()}" if dot else ""
        if not dot:
            stem = name
        video = src_ext in VIDEO_EXTENSIONS
        if any(p.startswith(".") for p in parts) or not (video or src_ext in INPUT_EXTENSIONS):
            continue
        if inside and (rel + "/").startswith(inside.rstrip("/") + "/"):
            continue
        if same and stem.endswith(suffix):
            continue  # an output of an earlier run
        if video:
            out_ext = video_output_suffix(src_ext)
        else:
            out_ext = ext or (src_ext if src_ext in OUTPUT_FORMATS else ".png")
        folder = "/".join(parts[:-1])
        out = f"{folder}/{stem}{suffix}{out_ext}" if folder else f"{stem}{suffix}{out_ext}"
        tasks.append(Task(rel, out))
    if not tasks:
        raise DeblurError(
            f"no images {'under' if recursive else 'in'} {where} (looked for {', '.join(sorted(INPUT_EXTENSIONS))}), "
            f"or videos ({', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    inputs = {t.rel for t in tasks} if same else set()
    seen: dict[str, str] = {}
    for t in tasks:
        if t.out_rel in inputs:
            raise DeblurError(f"{t.out_rel}: output would replace an input; use another --suffix or output folder")
        if t.out_rel in seen:
            hint = VIDEO_CLASH_HINT if is_video_path(t.rel) else "use --ext or --suffix"
            raise DeblurError(f"{seen[t.out_rel]} and {t.rel} would both be written to {t.out_rel}; {hint}")
        seen[t.out_rel] = t.rel
    return tasks


@dataclass
class Triage:
    """What a run does with each planned input.

    Attributes:
        run: inputs to deblur.
        kept: ``(task, reason)`` for inputs left alone: done by an earlier run of this job, or
            an existing output kept (``--skip-existing``, or written by an interrupted run).
        found: the subset of ``kept`` whose outputs an interrupted run of this job wrote
            without recording them: the manifest gets their row now.
        conflicts: outputs that exist although nothing allows keeping or replacing them.
    """

    run: list[Task] = field(default_factory=list)
    kept: list[tuple[Task, str]] = field(default_factory=list)
    found: list[Task] = field(default_factory=list)
    conflicts: list[Task] = field(default_factory=list)


def triage(tasks: list[Task], present: set[str], rows: dict[str, dict], job: str, *, skip_existing: bool,
           overwrite: bool) -> Triage:  # fmt: skip
    """Split ``tasks`` by what exists and what the manifest of an earlier run says.

    Args:
        tasks: the plan.
        present: ``out_rel`` of the outputs that exist now.
        rows: the earlier manifest, latest row per input (``rel`` -> row).
        job: this job's fingerprint (:func:`~deblur_cli.distributed.manifest.job_fingerprint`);
            rows of another job count as absent.
        skip_existing, overwrite: ``deblur folder``'s rules for existing outputs.

    A row is written as ``pending`` before an input is handed to a worker, and only for an
    output that did not exist (or was to be replaced): so an existing output whose row is
    ``pending`` (or ``failed``) was written by this job, before the run stopped, and is kept.
    A ``done`` row whose output has gone since is run again: nothing is lost.
    """
    out = Triage()
    for t in tasks:
        row = rows.get(t.rel)
        mine = row is not None and row.get("job") == job and row.get("output") == t.out_rel
        if overwrite or t.out_rel not in present:
            out.run.append(t)
        elif mine and row["status"] in ("done", "skipped"):  # type: ignore[index]
            out.kept.append((t, "done by an earlier run (manifest)"))
        elif mine:
            out.kept.append((t, "written before the run was interrupted (manifest)"))
            out.found.append(t)
        elif skip_existing:
            out.kept.append((t, "output exists"))
        else:
            out.conflicts.append(t)
    return out
