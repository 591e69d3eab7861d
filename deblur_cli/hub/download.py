"""Hugging Face Hub access: ``hf://`` references, verified downloads and publishing.

Downloads go through :func:`huggingface_hub.hf_hub_download` and its cache, so the usual
environment applies: ``HF_HOME``/``HF_HUB_CACHE`` (where), ``HF_ENDPOINT`` (which server),
``HF_TOKEN`` or a stored login (private repos; ``--token`` overrides), ``HF_HUB_OFFLINE=1`` (never
touch the network). Every file is checked before use: against the registry's sha256 for a
registry entry, otherwise against the digest the Hub stores the file under (the sha256 of an
LFS file, the git blob hash of a small one). A file that fails the check is deleted from the
cache and never loaded.

A file already cached at a pinned 40-hex revision is used without any network call.
huggingface_hub is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deblur_cli.errors import DeblurError
from deblur_cli.hub.registry import Registry, WeightsEntry, read_safetensors_metadata, sha256_file
from deblur_cli.hub.shards import index_metadata, index_path, is_sharded, set_size, verify_shards

HF_SCHEME = "hf://"
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# hf://OWNER/NAME/PATH[@REV]   (this project's form)
_URI_PATH_REV = re.compile(rf"(?:models/)?({_REPO_PART}/{_REPO_PART})/([^@]+?)(?:@([^@/]+(?:/[^@/]+)*))?")
# hf://OWNER/NAME@REV/PATH     (huggingface_hub's HF-URI form)
_URI_REV_PATH = re.compile(rf"(?:models/)?({_REPO_PART}/{_REPO_PART})@([^/@]+)/([^@]+)")


@dataclass(frozen=True)
class HfRef:
    """A file on the Hub.

    Attributes:
        repo_id: ``owner/name`` of a model repository.
        filename: path of the file inside the repository.
        revision: branch, tag or commit; ``None`` means ``main``.
    """

    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether the revision is a full commit hash (then a cached copy is final)."""
        return self.revision is not None and _HEX40.fullmatch(self.revision) is not None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}/{self.filename}{rev}"


@dataclass(frozen=True)
class Fetched:
    """A verified local copy of a Hub file.

    Attributes:
        path: the file in the Hugging Face cache.
        source: ``"cache"`` (already there) or ``"download"`` (fetched now).
        sha256: hex digest of the file.
        commit: commit hash of the cached snapshot, if known.
    """

    path: str
    source: str
    sha256: str
    commit: str | None


@dataclass(frozen=True)
class Published:
    """Result of :func:`publish`: record ``commit`` as the entry's ``revision``."""

    repo_id: str
    filename: str
    commit: str
    url: str
    sha256: str
    size: int


def is_hf_uri(text: str) -> bool:
    """Whether ``text`` is an ``hf://`` reference."""
    return text.startswith(HF_SCHEME)


def parse_hf_uri(uri: str) -> HfRef:
    """Parse ``hf://OWNER/NAME/FILE[@REVISION]`` (also ``hf://OWNER/NAME@REVISION/FILE``).

    Raises:
        DeblurError: not of that form (datasets and spaces are not model repositories).
    """
    if not is_hf_uri(uri):
        raise DeblurError(f"not an hf:// reference: {uri!r}")
    rest = uri[len(HF_SCHEME) :]
    first = rest.split("/", 1)[0]
    if first in ("datasets", "spaces", "buckets", "kernels"):
        raise DeblurError(f"{uri}: weights must come from a model repository, not {first}")
    m = _URI_REV_PATH.fullmatch(rest)
    if m:
        repo_id, revision, filename = m.group(1), m.group(2), m.group(3)
    elif m := _URI_PATH_REV.fullmatch(rest):
        repo_id, filename, revision = m.group(1), m.group(2), m.group(3)
    else:
        raise DeblurError(f"cannot parse {uri!r}: expected hf://OWNER/REPO/FILE[@REVISION]")
    if filename.endswith("/") or "//" in filename or ".." in filename.split("/"):
        raise DeblurError(f"{uri}: bad file path {filename!r}")
    return HfRef(repo_id=repo_id, filename=filename, revision=revision)


def is_offline() -> bool:
    """Offline mode: ``HF_HUB_OFFLINE`` now in the environment, or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or env.upper() in constants.ENV_VARS_TRUE_VALUES


def endpoint() -> str:
    """The Hub server: ``HF_ENDPOINT`` (read now), else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cache_dir() -> str:
    """huggingface_hub's cache folder (``HF_HUB_CACHE``, by default ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_file(ref: HfRef) -> str | None:
    """The cached copy of ``ref`` (following a cached branch ref), or ``None``; no network, no check."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, ref.filename, revision=ref.revision)
    return found if isinstance(found, str) and os.path.isfile(found) else None


def how_to_get(label: str) -> str:
    """The advice appended to errors when a file cannot be had here."""
    return f"on a connected machine run `deblur weights download {label}`, or pass --weights PATH to a local .safetensors file"


def download(
    ref: HfRef,
    *,
    sha256: str | None = None,
    token: str | None = None,
    force: bool = False,
    label: str | None = None,
) -> Fetched:
    """Make a verified copy of ``ref`` available in the Hugging Face cache.

    A copy cached at a pinned commit (or any cached copy when offline) is used without a network
    call; otherwise ``hf_hub_download`` fetches the file (with its progress bar) or confirms the
    cached one is current.

    Args:
        ref: the file.
        sha256: expected digest; ``None`` checks against the Hub's own digest of the blob.
        token: Hub token; ``None`` uses ``HF_TOKEN`` or the stored login.
        force: download again even if cached.
        label: how to name the file in messages (e.g. the registry entry name).

    Raises:
        DeblurError: offline without a cached copy, not found, access denied, server or connection
            error, or a digest mismatch (the bad file is deleted from the cache).
    """
    label = label or str(ref)
    offline = is_offline()
    cached = None if force else cached_file(ref)
    if cached is not None and (ref.pinned or offline):
        digest = verify_cached(cached, sha256, label)
        return Fetched(cached, "cache", digest, _snapshot_commit(cached))
    if offline:
        raise DeblurError(
            f"{label} is not in the Hugging Face cache ({cache_dir()}) and offline mode is on (HF_HUB_OFFLINE); "
            + how_to_get(label)
        )
    from huggingface_hub import hf_hub_download

    from deblur_cli._version import __version__

    try:
        path = hf_hub_download(
            ref.repo_id,
            ref.filename,
            revision=ref.revision,
            token=token or None,
            endpoint=endpoint(),
            force_download=force,
            library_name="deblur-cli",
            library_version=__version__,
        )
    except Exception as exc:  # every failure becomes one readable line
        raise _translate(exc, ref, label) from exc
    source = "cache" if cached is not None and os.path.realpath(cached) == os.path.realpath(path) else "download"
    digest = verify_cached(path, sha256, label)
    return Fetched(path, source, digest, _snapshot_commit(path))


def fetch_entry(entry: WeightsEntry, *, token: str | None = None, force: bool = False) -> Fetched:
    """Download (or find in the cache) a registry entry's published file, checked against its sha256.

    Raises:
        DeblurError: the entry is not published, or as :func:`download`.
    """
    if not entry.published or not (entry.repo_id and entry.revision and entry.sha256):
        raise DeblurError(
            f"{entry.name} is not published on the Hub yet (no pinned revision in the registry); "
            "pass --weights PATH to a local .safetensors file"
        )
    ref = HfRef(entry.repo_id, entry.filename, entry.revision)
    return download(ref, sha256=entry.sha256, token=token, force=force, label=entry.name)


def entry_status(registry: Registry, entry: WeightsEntry) -> str:
    """``bundled`` (ships with the package), ``cached``, ``remote`` (not downloaded) or ``unavailable``."""
    if registry.bundled_path(entry) is not None:
        return "bundled"
    if not entry.published or not (entry.repo_id and entry.revision):
        return "unavailable"
    if cached_file(HfRef(entry.repo_id, entry.filename, entry.revision)) is not None:
        return "cached"
    return "remote"


def verify_cached(path: str, sha256: str | None, label: str) -> str:
    """Check a cached file; on mismatch delete it (snapshot link and blob) and raise.

    With ``sha256`` the file must have that digest. Without it, the blob's name in the cache is the
    digest the Hub advertised (its ETag): a 64-hex name is the file's sha256 (LFS files), a 40-hex
    name its git blob hash (small files); the file must match that.

    Returns:
        The file's sha256.
    """
    digest, git_sha1 = _digests(path)
    expected, actual, kind = sha256, digest, "sha256"
    if expected is None:
        blob = os.path.basename(os.path.realpath(path))
        if _HEX64.fullmatch(blob):
            expected = blob
        elif _HEX40.fullmatch(blob):
            expected, actual, kind = blob, git_sha1, "git blob hash"
    if expected is not None and actual != expected:
        _evict(path)
        raise DeblurError(
            f"{label}: {kind} mismatch (expected {expected[:16]}..., got {actual[:16]}...); "
            "the corrupted download was deleted from the cache, run the command again to re-download"
        )
    return digest


def publish(
    file: str | os.PathLike[str],
    repo_id: str,
    *,
    filename: str,
    arch: str | None = None,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    card: str | os.PathLike[str] | None = None,
) -> Published:
    """Upload weights (and optionally a model card as ``README.md``) to a Hub model repo, in one commit.

    ``file`` is a safetensors file, or a sharded set (its index or folder,
    :mod:`deblur_cli.hub.shards`): then the index goes up as ``filename`` (which must end in
    ``.index.json``) and every shard beside it, each checked against the index first. The
    repository is created if needed (``private`` applies only then); ``revision`` is a branch
    (created from ``main`` if missing), default ``main``.

    Returns:
        The commit that holds the files: record it as the registry entry's ``revision``. For a
        sharded set, ``sha256`` and ``size`` are the index's digest and the whole set's bytes.

    Raises:
        DeblurError: not a safetensors file or set, a damaged shard, wrong architecture,
            offline, or a Hub error.
    """
    src = Path(file)
    sharded = is_sharded(src)
    if sharded:
        src = index_path(src)
        if not filename.endswith(".index.json"):
            raise DeblurError(f"{src} is a sharded set: its name in the repo must end in .index.json, not {filename!r}")
        meta = index_metadata(src)
    else:
        if filename.endswith(".index.json"):
            raise DeblurError(f"{src} is a single weights file: its name in the repo cannot be an index ({filename!r})")
        meta = read_safetensors_metadata(src)
    if arch is not None and meta.get("arch") != arch:
        raise DeblurError(f"{src} holds weights for arch {meta.get('arch')!r}, expected {arch!r}")
    if "config" not in meta:
        raise DeblurError(f"{src} has no 'config' metadata: save it with deblur_cli.hub.loading.save_weights")
    if is_offline():
        raise DeblurError("cannot publish while offline mode is on (unset HF_HUB_OFFLINE)")
    uploads = [(filename, src)]
    if sharded:
        folder = filename.rsplit("/", 1)[0] + "/" if "/" in filename else ""
        uploads += [(folder + s.name, s) for s in verify_shards(src)]  # hashes the set: after the cheap checks
    size = set_size(src) if sharded else src.stat().st_size
    digest = sha256_file(src)
    if card is not None:
        uploads.append(("README.md", Path(card)))
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint(), token=token or None, library_name="deblur-cli")
    ref = HfRef(repo_id, filename, revision)
    shards = f" and {len(uploads) - 1 - (card is not None)} shards" if len(uploads) - (card is not None) > 1 else ""
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        # One commit for weights, shards and card: a pinned revision then holds a complete set.
        info = api.create_commit(
            repo_id,
            operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(p)) for name, p in uploads],
            revision=revision,
            commit_message=commit_message or f"Upload {filename}{shards} (sha256 {digest[:12]})",
        )
    except DeblurError:
        raise
    except Exception as exc:  # one readable line, as for downloads
        raise _translate(exc, ref, str(ref), action="publish") from exc
    return Published(repo_id, filename, info.oid, info.commit_url, digest, size)


def _digests(path: str) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file in one pass."""
    size = os.path.getsize(path)
    sha = hashlib.sha256()
    git = hashlib.sha1(f"blob {size}\0".encode())  # git's object id, not for security
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            git.update(block)
    return sha.hexdigest(), git.hexdigest()


def _evict(path: str) -> None:
    """Delete a cached file: its snapshot entry and the blob it points to."""
    p = Path(path)
    blob = Path(os.path.realpath(p))
    for q in (p, blob):
        try:
            q.unlink(missing_ok=True)
        except OSError:
            pass


def _snapshot_commit(path: str) -> str | None:
    parts = Path(path).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts) and _HEX40.fullmatch(parts[i + 1]):
            return parts[i + 1]
    return None


def _status(exc: Any) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _translate(exc: BaseException, ref: HfRef, label: str, action: str = "download") -> DeblurError:
    """Turn a huggingface_hub / network exception into a one-line :class:`DeblurError`."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ep = endpoint()
    rev = ref.revision or "main"
    token_hint = "pass a token (--token or HF_TOKEN)"
    if isinstance(exc, GatedRepoError):
        return DeblurError(f"{ref.repo_id} on {ep} is gated: accept its terms on the Hub, then {token_hint}")
    if isinstance(exc, RepositoryNotFoundError):
        return DeblurError(f"repository {ref.repo_id} not found on {ep} (HTTP 404); if it is private, {token_hint}")
    if isinstance(exc, RevisionNotFoundError):
        return DeblurError(f"revision {rev} not found in {ref.repo_id} on {ep} (HTTP 404)")
    if isinstance(exc, RemoteEntryNotFoundError):
        return DeblurError(f"{ref.filename} not found in {ref.repo_id} at revision {rev} on {ep} (HTTP 404)")
    cause: BaseException | None = exc
    if isinstance(exc, LocalEntryNotFoundError):
        cause = exc.__cause__
        if cause is None or isinstance(cause, OfflineModeIsEnabled):
            return DeblurError(
                f"{label} is not in the Hugging Face cache and the Hub is not reachable; {how_to_get(label)}"
            )
    code = _status(cause) if isinstance(cause, HfHubHTTPError) else None
    if code in (401, 403):
        return DeblurError(
            f"{ep} refused access to {ref.repo_id} (HTTP {code}); {token_hint} with the right permissions"
        )
    if code == 404:
        return DeblurError(f"{label} not found on {ep} (HTTP 404)")
    if code is not None and code >= 500:
        return DeblurError(f"{ep} answered HTTP {code} (server error) to the {action} of {label}; try again later")
    if code is not None:
        return DeblurError(f"{ep} answered HTTP {code} to the {action} of {label}")
    err = cause or exc
    text = str(err).strip()
    reason = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
    if action == "download":
        return DeblurError(
            f"cannot download {label} from {ep} ({reason}); check the connection and HF_ENDPOINT, or {how_to_get(label)}"
        )
    return DeblurError(f"cannot {action} {label} to {ep} ({reason})")
