"""The manifest of a distributed job: one JSON line per input, beside the outputs.

``<OUT>/deblur-manifest.jsonl`` has one row per input with the fields of :data:`FIELDS`:

* ``path``, ``output``: input and output, relative to the input and output folders;
* ``status``: ``pending`` (handed to a worker, no result yet), ``done``, ``skipped`` or ``failed``;
* ``blur_px``: the blur gate's estimate in pixels (``null`` without a gate);
* ``action``: what happened to the image (``deblurred``, ``blended``, ``left as it was``, ...);
* ``seconds``, ``worker`` (``host:pid``), ``error``, ``pixels``;
* ``job``: a fingerprint of the options that change outputs (model, weights, gate, tiling, ...).

Before any input is handed to a worker, its row is written as ``pending``; results replace it
as they arrive. On a local or shared filesystem each row is appended (and flushed) the moment
it is known, so a killed driver loses at most the rows it had not yet received; at the end the
file is rewritten with the latest row per input. On an object store (no appends) the whole
manifest is uploaded every ``interval`` seconds and at the end. A rerun reads it back
(:func:`read_manifest`) and does only what is left (:func:`deblur_cli.distributed.plan.triage`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import IO, Any

from deblur_cli.distributed.storage import Location, exists, read_bytes, write_bytes
from deblur_cli.errors import DeblurError

#: File name of the manifest in the output folder.
MANIFEST_NAME = "deblur-manifest.jsonl"
#: Fields of a row, in the order they are written.
FIELDS = ("path", "output", "status", "blur_px", "action", "seconds", "worker", "error", "pixels", "job")


def job_fingerprint(options: dict[str, Any]) -> str:
    """16 hex digits identifying the options that change the outputs (``options`` as JSON)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def action_of(status: str, weight: float | None, regional: bool) -> str:
    """What happened to an image, from its status and the gate's weight (``None``: no gate)."""
    if status != "done":
        return {"skipped": "kept existing output", "failed": "none", "pending": "queued"}.get(status, status)
    if weight is None or weight >= 1:
        return "deblurred"
    if weight <= 0:
        return "left as it was"
    return "deblurred in places" if regional else "blended"


def make_row(path: str, output: str, status: str, job: str, **fields: Any) -> dict[str, Any]:
    """A manifest row with every field of :data:`FIELDS` (missing ones empty)."""
    row: dict[str, Any] = {"path": path, "output": output, "status": status, "blur_px": None, "action": "",
                           "seconds": 0.0, "worker": "", "error": "", "pixels": 0, "job": job}  # fmt: skip
    row.update(fields)
    return row


def parse(text: str) -> dict[str, dict[str, Any]]:
    """The latest row per input (``path`` -> row) of a manifest's text.

    Lines that are not complete JSON objects (the last line of a file whose writer was killed
    mid-line) are ignored."""
    rows: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("path"), str) and isinstance(row.get("status"), str):
            rows[row["path"]] = row
    return rows


def read_manifest(loc: Location, name: str = MANIFEST_NAME) -> dict[str, dict[str, Any]]:
    """The manifest in the folder ``loc`` (``path`` -> latest row); empty if there is none."""
    if not exists(loc, name):
        return {}
    return parse(read_bytes(loc, name).decode("utf-8", errors="replace"))


def dumps(rows: dict[str, dict[str, Any]]) -> bytes:
    """JSON lines, one per row, in input order."""
    return "".join(json.dumps(rows[k], ensure_ascii=False) + "\n" for k in sorted(rows)).encode()


class ManifestWriter:
    """Records rows as results arrive (see the module docstring for when they reach storage).

    Args:
        loc: the output folder.
        rows: the rows to start from (the earlier manifest plus this run's ``pending`` and
            kept rows); written out before any input is handed to a worker.
        name: file name in ``loc``.
        interval: seconds between uploads on an object store.
        sync_every: seconds between ``fsync`` of the appended file on other filesystems.
    """

    def __init__(self, loc: Location, rows: dict[str, dict[str, Any]], name: str = MANIFEST_NAME,
                 interval: float = 30.0, sync_every: float = 2.0) -> None:  # fmt: skip
        self.loc, self.name, self.interval, self.sync_every = loc, name, interval, sync_every
        self.rows = dict(rows)
        self._file: IO[str] | None = None
        self._last = time.monotonic()
        self._dirty = False
        self._rewrite()
        if loc.local:
            try:
                self._file = open(loc.join(name), "a", encoding="utf-8")
            except OSError as exc:
                raise DeblurError(f"{loc.show(name)}: cannot write the manifest ({exc.strerror or exc})") from None

    @property
    def where(self) -> str:
        return self.loc.show(self.name)

    def record(self, row: dict[str, Any]) -> None:
        """Add or replace the row of ``row["path"]``."""
        self.rows[row["path"]] = row
        now = time.monotonic()
        if self._file is not None:
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._file.flush()
            if now - self._last >= self.sync_every:
                os.fsync(self._file.fileno())
                self._last = now
        else:
            self._dirty = True
            if now - self._last >= self.interval:
                self._rewrite()

    def close(self) -> None:
        """Write the latest row per input, replacing the file atomically."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._rewrite()

    def _rewrite(self) -> None:
        write_bytes(self.loc, self.name, dumps(self.rows))
        self._last = time.monotonic()
        self._dirty = False

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
