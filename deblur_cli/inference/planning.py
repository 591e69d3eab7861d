"""Planning: where outputs go and whether they may be written, checked before any model loads.

:func:`default_output` names one image's output, :func:`check_job` checks one ``deblur image``
job, :func:`plan_folder` maps every image under a folder to its output (mirroring the tree) and
refuses plans that would replace an input or write two files to one path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from deblur_cli.errors import DeblurError


def default_output(src: str | os.PathLike[str]) -> Path:
    """``IN_deblurred.png`` beside ``IN``."""
    src = Path(src)
    return src.with_name(f"{src.stem}_deblurred.png")


def check_output(dst: Path, overwrite: bool) -> None:
    """``dst`` can be written: a known output format, not a directory, and not an existing file
    unless ``overwrite``.

    Raises:
        DeblurError: the first problem found.
    """
    from deblur_cli.io.images import output_format

    output_format(dst)
    if dst.is_dir():
        raise DeblurError(f"{dst}: is a directory; give an output file name")
    if dst.exists() and not overwrite:
        raise DeblurError(f"{dst}: already exists (use --overwrite to replace it)")


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
    check_output(out, overwrite)
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
    out_dir, suffix, ext = check_folder_options(in_dir, output_dir, suffix, ext)
    jobs: list[tuple[Path, Path]] = []
    for src in scan_folder(in_dir, out_dir, recursive=recursive, suffix=suffix, extensions=INPUT_EXTENSIONS):
        rel = src.relative_to(in_dir)
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


def check_folder_options(
    in_dir: Path, output_dir: str | os.PathLike[str] | None, suffix: str | None, ext: str | None
) -> tuple[Path, str, str | None]:
    """What :func:`plan_folder` checks before it looks for files (also used for videos).

    Returns:
        ``(output folder, suffix, ext)``: the suffix decided (``"_deblurred"`` when writing
        into ``in_dir``), ``ext`` as ``".png"`` or ``None``.

    Raises:
        DeblurError: missing input folder, a file given as the folder, writing into the input
            folder with an empty suffix, an unknown ``ext``.
    """
    from deblur_cli.io.images import OUTPUT_FORMATS

    if not in_dir.exists():
        raise DeblurError(f"{in_dir}: no such folder")
    if not in_dir.is_dir():
        raise DeblurError(f"{in_dir}: is a file, not a folder (use `deblur image` for one image)")
    out_dir = folder_output_root(in_dir, output_dir)
    same = in_dir.resolve() == out_dir.resolve()
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
    return out_dir, suffix, ext


def scan_folder(
    in_dir: Path, out_dir: Path, *, recursive: bool, suffix: str, extensions: Iterable[str]
) -> list[Path]:
    """Input files under ``in_dir`` with one of ``extensions`` (lower case), sorted: no hidden files
    or folders, nothing inside the output folder, and, when writing into ``in_dir``, no earlier
    outputs (names ending in ``suffix``)."""
    in_res, out_res = in_dir.resolve(), out_dir.resolve()
    same = in_res == out_res
    out_inside = not same and out_res.is_relative_to(in_res)
    wanted = frozenset(extensions)
    found = []
    for src in sorted(in_dir.rglob("*") if recursive else in_dir.iterdir()):
        rel = src.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts) or src.suffix.lower() not in wanted:
            continue
        if not src.is_file() or (out_inside and src.resolve().is_relative_to(out_res)):
            continue
        if same and src.stem.endswith(suffix):
            continue  # an output of an earlier run
        found.append(src)
    return found
