"""The weights registry: which trained weights exist, where they live and how to check them.

The registry is ``weights/registry.json`` in the repository, shipped inside the installed package
as ``deblur_cli.weights`` (found with :func:`importlib.resources.files`), so the default model
works offline after a plain ``pip install``. Each entry is named ``arch.tag`` (timm's
convention): ``arch`` is a registered variant of :mod:`deblur_cli.models.variants`, ``tag`` names
the training run. An entry records the Hugging Face Hub location (``repo_id``, ``filename`` and a
pinned 40-hex ``revision``), the file's ``sha256`` and size, licence, training data and reported
metrics, and, for weights that ship with the package, the ``bundled`` file name inside
``weights/``.

This module imports neither torch nor huggingface_hub (``deblur weights list`` stays instant);
downloading is :mod:`deblur_cli.hub.download`, building models is :mod:`deblur_cli.hub.loading`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from deblur_cli.errors import DeblurError
from deblur_cli.hub.shards import (
    INDEX_NAME,
    index_metadata,
    index_path,
    is_sharded,
    set_size,
    sha256_file,
    shard_files,
    verify_shards,
)

#: Package that holds the shipped weights folder (the repository's top-level ``weights/``).
WEIGHTS_PACKAGE = "deblur_cli.weights"


def weights_dir() -> Path:
    """The folder of the shipped weights: the installed ``deblur_cli.weights`` package, or
    ``weights/`` beside the package in a source checkout (where ``deblur_cli`` is imported
    from the working tree, e.g. ``python -m pytest`` in a clone, and the package-dir mapping of
    an installation does not apply)."""
    try:
        return Path(str(files(WEIGHTS_PACKAGE)))
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "weights"
        if (checkout / REGISTRY_FILE).is_file():
            return checkout
        raise
#: File name of the registry inside that package.
REGISTRY_FILE = "registry.json"
#: Version of the registry file layout.
REGISTRY_FORMAT = 1

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\.[A-Za-z0-9][A-Za-z0-9_-]*")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class WeightsEntry:
    """One released set of weights (a ``registry.json`` entry).

    Attributes:
        name: ``arch.tag``, e.g. ``saphn-s.synth``.
        arch: registered variant name the weights were trained for (the file's metadata holds
            the exact config).
        filename: file name in the Hub repository.
        repo_id: Hugging Face Hub repository, ``owner/name``; ``None`` if it has none.
        revision: pinned 40-hex commit of ``repo_id`` holding the file; ``None`` until published.
        sha256: hex digest of the file; every copy is checked against it before use.
        size: file size in bytes.
        license: licence of the weights.
        training_data: what the weights were trained on.
        metrics: reported results, e.g. ``{"gopro_psnr": 30.1}`` or a note.
        bundled: name inside ``weights/`` when the weights ship with the package, else ``None``:
            a file, or for sharded weights a folder holding the index and its shards.
        published: ``True`` once ``revision`` points at a Hub commit that has the file.
        description: one line for ``deblur weights list``.
    """

    name: str
    arch: str
    filename: str
    repo_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None
    license: str = ""
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict, hash=False)
    bundled: str | None = None
    published: bool = False
    description: str = ""

    @property
    def tag(self) -> str:
        """The part of the name after the architecture, e.g. ``synth``."""
        return self.name.split(".", 1)[1]

    @property
    def hf_uri(self) -> str | None:
        """``hf://REPO_ID/FILENAME@REVISION`` of the published file, or ``None``."""
        if not (self.repo_id and self.revision):
            return None
        return f"hf://{self.repo_id}/{self.filename}@{self.revision}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (field order as in the dataclass)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsEntry:
        """Parse and validate one entry.

        Raises:
            DeblurError: missing or unknown keys, malformed name, revision or sha256.
        """
        known = {f.name for f in fields(cls)}
        label = d.get("name", "?")
        if unknown := sorted(set(d) - known):
            raise DeblurError(f"registry entry {label!r}: unknown keys {', '.join(unknown)}")
        if missing := [k for k in ("name", "arch", "filename") if k not in d]:
            raise DeblurError(f"registry entry {label!r}: missing keys {', '.join(missing)}")
        entry = cls(**d)
        entry.validate()
        return entry

    def validate(self) -> None:
        """Check the invariants; raises :class:`DeblurError` naming the entry."""
        where = f"registry entry {self.name!r}"
        if not _NAME.fullmatch(self.name) or self.name.split(".", 1)[0] != self.arch:
            raise DeblurError(f"{where}: the name must be '<arch>.<tag>' with arch {self.arch!r}")
        if self.revision is not None and not _HEX40.fullmatch(self.revision):
            raise DeblurError(f"{where}: revision must be a 40-hex commit, got {self.revision!r}")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256):
            raise DeblurError(f"{where}: sha256 must be 64 lowercase hex digits")
        if self.bundled is not None and ("/" in self.bundled or "\\" in self.bundled):
            raise DeblurError(f"{where}: bundled must be a plain file name inside weights/")
        if self.published and not (self.repo_id and self.revision and self.sha256):
            raise DeblurError(f"{where}: a published entry needs repo_id, revision and sha256")
        if self.bundled and not self.sha256:
            raise DeblurError(f"{where}: a bundled entry needs sha256")


@dataclass(frozen=True)
class Registry:
    """All entries of one ``registry.json``.

    Attributes:
        default: name of the entry used when no model is given.
        entries: entries by name, in file order.
        path: the file it was read from; bundled files are looked up next to it.
    """

    default: str
    entries: dict[str, WeightsEntry]
    path: Path | None = None

    def names(self) -> list[str]:
        """Entry names in file order."""
        return list(self.entries)

    def get(self, name: str | None = None) -> WeightsEntry:
        """The entry ``name``, or the default entry for ``None``.

        A bare architecture name (``saphn``) means that architecture's first entry, as timm
        resolves a model name without a tag to its default weights.

        Raises:
            DeblurError: unknown name (the one-line message lists the known ones).
        """
        key = self.default if name is None else name
        if key in self.entries:
            return self.entries[key]
        if "." not in key:
            for entry in self.entries.values():
                if entry.arch == key:
                    return entry
        raise DeblurError(f"unknown weights {key!r}; known: {', '.join(self.names())}")

    def find(self, repo_id: str, filename: str, revision: str | None = None) -> WeightsEntry | None:
        """The entry published as ``repo_id``/``filename`` (at ``revision`` if given), if any."""
        for entry in self.entries.values():
            if (entry.repo_id, entry.filename) == (repo_id, filename) and revision in (None, entry.revision):
                return entry
        return None

    def bundled_path(self, entry: WeightsEntry) -> Path | None:
        """Path of ``entry``'s bundled file (for sharded weights: their index) if it is present
        in the installed package."""
        if not entry.bundled:
            return None
        folder = self.path.parent if self.path is not None else weights_dir()
        p = folder / entry.bundled
        if is_sharded(p):
            return index_path(p)
        return p if p.is_file() else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the file."""
        return {
            "format": REGISTRY_FORMAT,
            "default": self.default,
            "entries": [e.to_dict() for e in self.entries.values()],
        }


def default_registry_path() -> Path:
    """``registry.json`` of the installed package (the repo's ``weights/`` in an editable install)."""
    return weights_dir() / REGISTRY_FILE


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate a registry file (the shipped one by default).

    Raises:
        DeblurError: missing or malformed file, duplicate names, unknown default.
    """
    p = Path(path) if path is not None else default_registry_path()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeblurError(f"weights registry not found at {p} (broken installation?)") from None
    except (OSError, ValueError) as exc:
        raise DeblurError(f"cannot read weights registry {p}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != REGISTRY_FORMAT:
        raise DeblurError(f'weights registry {p}: expected an object with "format": {REGISTRY_FORMAT}')
    entries: dict[str, WeightsEntry] = {}
    for d in raw.get("entries", []):
        entry = WeightsEntry.from_dict(d)
        if entry.name in entries:
            raise DeblurError(f"weights registry {p}: entry {entry.name!r} listed twice")
        entries[entry.name] = entry
    default = raw.get("default")
    if default not in entries:
        raise DeblurError(f"weights registry {p}: default {default!r} is not an entry")
    return Registry(default=default, entries=entries, path=p)


def save_registry(registry: Registry, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``registry`` as JSON (atomically) to ``path`` or to the file it was read from."""
    p = Path(path) if path is not None else (registry.path or default_registry_path())
    text = json.dumps(registry.to_dict(), indent=2, ensure_ascii=False) + "\n"
    _atomic_write(p, text.encode("utf-8"))
    return p


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, parsed from its header without torch.

    Raises:
        DeblurError: not a safetensors file (e.g. a pickled ``.pth``).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", head)
            if n > _SAFETENSORS_MAX_HEADER:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise DeblurError(f"weights file not found: {path}") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DeblurError(
            f"{path} is not a safetensors file ({exc}); only .safetensors weights are accepted (never pickles)"
        ) from None
    if not isinstance(header, dict):
        raise DeblurError(f"{path} is not a safetensors file (header is not an object)")
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def hub_filename(current: str, name: str, sharded: bool) -> str:
    """The name in the Hub repository of entry ``name``'s weights, sharded or a single file:
    ``current`` (the entry's ``filename``) when it already fits, else in the same folder
    :data:`~deblur_cli.hub.shards.INDEX_NAME` (a sharded set) or ``<name>.safetensors``."""
    folder, _, base = current.rpartition("/")
    if sharded == base.endswith(".index.json"):
        return current
    base = INDEX_NAME if sharded else f"{name}.safetensors"
    return f"{folder}/{base}" if folder else base


def uses_registry(model: str | None, weights: str | os.PathLike[str] | None) -> bool:
    """Whether loading ``model`` with ``weights`` looks ``model`` up in the registry
    (:func:`deblur_cli.hub.loading.resolve_weights`): no weights given (the entry's file is
    used), or a weights name (``arch.tag``) given beside a file (its architecture is checked
    against the entry's)."""
    return weights is None or (model is not None and "." in model)


def update_entry(
    name: str,
    file: str | os.PathLike[str] | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    **changes: Any,
) -> WeightsEntry:
    """Record new weights for entry ``name`` (created if missing) and rewrite the registry.

    With ``file``: its safetensors metadata must name the entry's architecture; ``sha256`` and
    ``size`` are recomputed from it, and for a bundled entry the file is copied into the weights
    folder (next to the registry) under the entry's ``bundled`` name. ``file`` may be a sharded
    set (an index or its folder): then ``sha256`` is the index's (it records each shard's),
    ``size`` the whole set's, ``filename`` becomes the Hub's index name, and a bundled copy is a
    folder with the index and shards. ``changes`` replace other
    fields (e.g. ``metrics``, ``revision``, ``published``, ``repo_id``, ``bundled``). This is how a
    maintainer swaps in newly trained weights (``deblur weights register FILE --name NAME``) or
    records a Hub commit after ``deblur weights publish``.

    Returns:
        The updated entry.

    Raises:
        DeblurError: unknown field, architecture mismatch, invalid result.
    """
    reg = load_registry(path)
    known = {f.name for f in fields(WeightsEntry)} - {"name"}
    if unknown := sorted(set(changes) - known):
        raise DeblurError(f"cannot set unknown registry fields: {', '.join(unknown)}")
    arch = name.split(".", 1)[0]
    entry = reg.entries.get(name) or WeightsEntry(name=name, arch=arch, filename=f"{name}.safetensors")
    entry = replace(entry, **changes)
    if file is not None and is_sharded(file):
        src = index_path(file)
        verify_shards(src)  # the recorded index digest pins these shards: they must match it now
        meta = index_metadata(src)
        if meta.get("arch") != entry.arch:
            raise DeblurError(
                f"{src} holds weights for arch {meta.get('arch')!r}, but {name!r} is a {entry.arch!r} entry"
            )
        filename = hub_filename(entry.filename, name, sharded=True)
        entry = replace(entry, sha256=sha256_file(src), size=set_size(src), filename=filename)
        if entry.bundled:
            assert reg.path is not None
            _copy_set(src, reg.path.parent / entry.bundled)
    elif file is not None:
        src = Path(file)
        meta = read_safetensors_metadata(src)
        if meta.get("arch") != entry.arch:
            raise DeblurError(
                f"{src} holds weights for arch {meta.get('arch')!r}, but {name!r} is a {entry.arch!r} entry"
            )
        filename = hub_filename(entry.filename, name, sharded=False)
        entry = replace(entry, sha256=sha256_file(src), size=src.stat().st_size, filename=filename)
        if entry.bundled:
            assert reg.path is not None
            dest = reg.path.parent / entry.bundled
            if not dest.exists() or not os.path.samefile(src, dest):
                tmp = dest.with_name(dest.name + ".tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
    entry.validate()
    entries = dict(reg.entries)
    entries[name] = entry
    save_registry(replace(reg, entries=entries))
    return entry


def _copy_set(index: Path, dest: Path) -> None:
    """Copy a sharded set (index and shards) into folder ``dest``, replacing an older set there."""
    if dest.exists() and index.parent.resolve() == dest.resolve():
        return
    if dest.is_file():
        raise DeblurError(f"{dest} is a file; a sharded entry is bundled as a folder")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + "."))
    try:
        for f in [index, *shard_files(index)]:
            shutil.copyfile(f, tmp / f.name)
            os.chmod(tmp / f.name, 0o644)
        os.chmod(tmp, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
