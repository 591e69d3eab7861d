"""Where a distributed job's files live: local or shared folders, or object-store URIs.

A :class:`Location` is a folder on one filesystem. Local paths (including NFS or other
mounts every worker sees) stay plain paths, so the engine reads and writes them exactly as
``deblur folder`` does. URIs (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ...) get a
pyarrow filesystem (``pyarrow.fs.FileSystem.from_uri``), or an fsspec one for schemes pyarrow
does not know; credentials and endpoints come from the usual environment of each node (for
S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, an IAM role, ...),
so they never travel with the job.

Writes are atomic everywhere: local files through :func:`deblur_cli.io.images.atomic_write_bytes`
(temporary file + rename), object-store objects by one upload that becomes visible only when
it completes, other remote filesystems through a temporary name and ``move``.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deblur_cli.errors import DeblurError

#: Schemes whose filesystems publish an object only when its upload completes (no rename needed).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"})
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):(?P<slashes>/+)(?P<rest>.*)$")


@dataclass(frozen=True)
class Location:
    """A folder on a filesystem.

    Attributes:
        path: a local path, or the filesystem's own path of the folder (``bucket/prefix``).
        uri: the folder as users wrote it, without query or credentials (for messages).
        fs: the ``pyarrow.fs.FileSystem``; ``None`` for the local filesystem.
        scheme: the URI scheme (``""`` for local paths).
    """

    path: str
    uri: str
    fs: Any = None
    scheme: str = ""

    @property
    def local(self) -> bool:
        return self.fs is None

    @property
    def object_store(self) -> bool:
        return self.scheme in OBJECT_STORES

    def join(self, rel: str) -> str:
        """The path of ``rel`` (POSIX, relative to this folder) on this filesystem."""
        if self.local:
            return os.path.join(self.path, *rel.split("/"))
        return f"{self.path.rstrip('/')}/{rel}"

    def show(self, rel: str = "") -> str:
        """``rel`` as users would write it: a local path or a URI."""
        if not rel:
            return self.uri
        return os.path.join(self.uri, *rel.split("/")) if self.local else f"{self.uri.rstrip('/')}/{rel}"


def repair_uri(text: str) -> str:
    """``s3:/bucket/key`` -> ``s3://bucket/key``: a URI that went through :class:`pathlib.Path`
    (as CLI arguments do) lost one slash; put it back. Other text is returned unchanged."""
    m = _URI.match(text)
    if m and len(m["scheme"]) > 1 and m["slashes"] == "/":
        return f"{m['scheme']}://{m['rest']}"
    return text


def _public(uri: str) -> str:
    """``uri`` without a query string or ``user:password@`` (they may hold credentials)."""
    uri = uri.split("?", 1)[0]
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]+://)[^/@]*@", r"\1", uri)


def resolve(where: str | os.PathLike[str], filesystem: Any = None) -> Location:
    """The :class:`Location` of a folder given as a local path or a URI.

    Args:
        where: ``/data/photos``, ``s3://bucket/photos``, ``gs://bucket/photos``, ...
        filesystem: a ``pyarrow.fs.FileSystem`` to use instead of the one the URI names (for
            example an ``S3FileSystem`` built with explicit options); ``where`` is then its path.

    Raises:
        DeblurError: a URI whose filesystem cannot be opened.
    """
    text = repair_uri(os.fspath(where))
    m = _URI.match(text)
    scheme = m["scheme"].lower() if m and len(m["scheme"]) > 1 and m["slashes"].startswith("//") else ""
    if filesystem is not None:
        path = text.split("://", 1)[1] if scheme else text
        return Location(path=path.split("?", 1)[0].rstrip("/"), uri=_public(text), fs=filesystem, scheme=scheme)
    if scheme in ("", "file", "local"):
        path = (text.split("://", 1)[1] if scheme else text) or "."
        # Workers do not share the driver's working directory: they get absolute paths.
        return Location(path=os.path.abspath(path), uri=path)
    try:
        from pyarrow import fs as pafs

        fs, path = pafs.FileSystem.from_uri(_single_put(text, scheme))
    except (ValueError, OSError, ImportError) as exc:
        fs, path = _fsspec(text, exc)
    return Location(path=path.rstrip("/"), uri=_public(text).rstrip("/"), fs=fs, scheme=scheme)


def _single_put(uri: str, scheme: str) -> str:
    """``uri`` with ``allow_delayed_open=true`` for S3, unless the user chose otherwise or
    pyarrow is older than 21 (which refuses the option in a URI).

    Without it pyarrow uploads every object, however small, as a multipart upload: three
    requests (create, part, complete) where one ``PutObject`` does, and the completion step
    is where S3-compatible servers differ most (moto 5.2.1 answers it with an unreadable body).
    With it, objects under one upload part (10 MiB) go up in a single atomic ``PutObject``;
    larger ones are still multipart. The cost is that errors such as a missing bucket surface
    when the stream closes, which :func:`_put` reports the same way.
    """
    if scheme != "s3" or re.search(r"[?&]allow_delayed_open=", uri) or _pyarrow_major() < 21:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}allow_delayed_open=true"


def _pyarrow_major() -> int:
    import pyarrow

    return int(pyarrow.__version__.split(".", 1)[0])


def _fsspec(uri: str, first: Exception) -> tuple[Any, str]:
    """pyarrow does not know the scheme: an fsspec filesystem wrapped for pyarrow."""
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError, OSError) as exc:
        raise DeblurError(f"{_public(uri)}: cannot open this location ({first}; fsspec: {exc})") from None
    return PyFileSystem(FSSpecHandler(fs)), path


# ------------------------------------------------------------------------------- listing


@contextmanager
def _remote(loc: Location) -> Iterator[None]:
    """pyarrow's ``OSError`` (store unreachable, no credentials, access denied) as one line naming ``loc``."""
    try:
        yield
    except OSError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise DeblurError(f"{loc.uri}: cannot reach this location ({first})") from None


def list_files(loc: Location, recursive: bool) -> list[str]:
    """Paths of the files under ``loc`` relative to it (POSIX), sorted.

    Raises:
        DeblurError: ``loc`` does not exist, is a file, or cannot be reached.
    """
    from pyarrow import fs as pafs

    with _remote(loc):
        info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.NotFound:
        raise DeblurError(f"{loc.uri}: no such folder")
    if info.type == pafs.FileType.File:
        raise DeblurError(f"{loc.uri}: is a file, not a folder (use `deblur image` for one image)")
    selector = pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True)
    base = loc.path.rstrip("/") + "/"
    with _remote(loc):
        infos = loc.fs.get_file_info(selector)
    return sorted(i.path[len(base) :] for i in infos if i.type == pafs.FileType.File and i.path.startswith(base))


def existing(loc: Location, rels: list[str]) -> set[str]:
    """The members of ``rels`` (paths relative to ``loc``) that exist as files.

    A remote folder is listed once instead of asking about every file; a local one is asked
    file by file, as ``deblur folder`` does."""
    if loc.local:
        return {r for r in rels if os.path.exists(loc.join(r))}
    from pyarrow import fs as pafs

    with _remote(loc):
        info = loc.fs.get_file_info(loc.path)
    if info.type != pafs.FileType.Directory:
        return set()
    present = set(list_files(loc, recursive=True))
    return {r for r in rels if r in present}


def exists(loc: Location, rel: str) -> bool:
    """Whether ``rel`` exists under ``loc``.

    Raises:
        DeblurError: a remote ``loc`` cannot be reached.
    """
    if loc.local:
        return os.path.exists(loc.join(rel))
    from pyarrow import fs as pafs

    with _remote(loc):
        return bool(loc.fs.get_file_info(loc.join(rel)).type != pafs.FileType.NotFound)


def remove_partials(loc: Location, rels: list[str]) -> int:
    """Delete the temporary files that an interrupted atomic write left beside the outputs
    ``rels`` (``.<name>.<random>.part``, from :func:`~deblur_cli.io.images.atomic_write_bytes`
    or :func:`publish`); returns how many. Object stores keep no partial objects."""
    if loc.object_store:
        return 0
    by_dir: dict[str, set[str]] = {}
    for rel in rels:
        folder, _, name = rel.rpartition("/")
        by_dir.setdefault(folder, set()).add(name)
    removed = 0
    for folder, names in by_dir.items():
        for entry in _entries(loc, folder):
            if entry.startswith(".") and entry.endswith(".part") and entry[1:].rsplit(".", 2)[0] in names:
                try:
                    _delete(loc, f"{folder}/{entry}" if folder else entry)
                    removed += 1
                except OSError:
                    pass  # gone already, or another run's
    return removed


def _entries(loc: Location, folder: str) -> list[str]:
    if loc.local:
        try:
            return os.listdir(loc.join(folder) if folder else loc.path)
        except OSError:
            return []
    from pyarrow import fs as pafs

    selector = pafs.FileSelector(loc.join(folder) if folder else loc.path, allow_not_found=True)
    with _remote(loc):
        return [i.base_name for i in loc.fs.get_file_info(selector)]


def _delete(loc: Location, rel: str) -> None:
    if loc.local:
        os.unlink(loc.join(rel))
    else:
        loc.fs.delete_file(loc.join(rel))


# --------------------------------------------------------------------------- reading, writing


def read_bytes(loc: Location, rel: str) -> bytes:
    """The bytes of ``rel`` under ``loc``.

    Raises:
        DeblurError: missing or unreadable, naming the file as users wrote it.
    """
    try:
        if loc.local:
            return Path(loc.join(rel)).read_bytes()
        with loc.fs.open_input_stream(loc.join(rel)) as f:
            return bytes(f.readall())
    except FileNotFoundError:
        raise DeblurError(f"{loc.show(rel)}: no such file") from None
    except OSError as exc:
        raise DeblurError(f"{loc.show(rel)}: cannot read ({exc})") from None


def download(loc: Location, rel: str, local_file: str | os.PathLike[str]) -> None:
    """Copy ``rel`` under ``loc`` to ``local_file``, streamed (a video may not fit in memory).

    Raises:
        DeblurError: missing or unreadable, naming the file as users wrote it.
    """
    try:
        if loc.local:
            source = open(loc.join(rel), "rb")  # noqa: SIM115 - closed by the with below
        else:
            source = loc.fs.open_input_stream(loc.join(rel))
    except FileNotFoundError:
        raise DeblurError(f"{loc.show(rel)}: no such file") from None
    except OSError as exc:
        raise DeblurError(f"{loc.show(rel)}: cannot read ({exc})") from None
    with source:
        try:
            out = open(local_file, "wb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise DeblurError(f"{local_file}: cannot write a local copy of {loc.show(rel)} ({exc.strerror or exc})") from None
        with out:
            while True:
                try:
                    block = source.read(8 << 20)
                except OSError as exc:
                    raise DeblurError(f"{loc.show(rel)}: cannot read ({exc})") from None
                if not block:
                    return
                try:
                    out.write(block)
                except OSError as exc:  # a full scratch disk is ours, not the store's
                    raise DeblurError(
                        f"{local_file}: cannot write a local copy of {loc.show(rel)} ({exc.strerror or exc})"
                    ) from None


def write_bytes(loc: Location, rel: str, data: bytes) -> None:
    """Write ``data`` to ``rel`` under ``loc`` atomically, replacing what is there.

    Raises:
        DeblurError: the location cannot be written.
    """
    if loc.local:
        from deblur_cli.io.images import atomic_write_bytes

        atomic_write_bytes(loc.join(rel), data, overwrite=True)
        return
    try:
        _put(loc, rel, lambda out: out.write(data))
    except OSError as exc:
        raise DeblurError(f"{loc.show(rel)}: cannot write ({exc})") from None


def publish(local_file: str | os.PathLike[str], loc: Location, rel: str) -> None:
    """Copy a finished local file to ``rel`` under a remote ``loc``, atomically.

    Raises:
        DeblurError: the upload failed (nothing is left at ``rel``).
    """

    def copy(out: Any) -> None:
        with open(local_file, "rb") as f:
            shutil.copyfileobj(f, out, 8 << 20)

    try:
        _put(loc, rel, copy)
    except OSError as exc:
        raise DeblurError(f"{loc.show(rel)}: cannot write ({exc})") from None


def _put(loc: Location, rel: str, fill: Any) -> None:
    """Object stores: one upload, visible only once complete. Other filesystems: a hidden
    temporary name beside ``rel``, then ``move``."""
    target = loc.join(rel)
    parent = target.rpartition("/")[0]
    if loc.object_store:
        with loc.fs.open_output_stream(target) as out:
            fill(out)
        return
    if parent:
        loc.fs.create_dir(parent, recursive=True)
    name = target.rpartition("/")[2]
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.part" if parent else f".{name}.{uuid.uuid4().hex[:8]}.part"
    try:
        with loc.fs.open_output_stream(tmp) as out:
            fill(out)
        loc.fs.move(tmp, target)
    except BaseException:
        try:
            loc.fs.delete_file(tmp)
        except OSError:
            pass
        raise
