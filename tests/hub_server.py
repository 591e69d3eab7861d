"""A tiny stand-in for the Hugging Face Hub on 127.0.0.1, so the Hub tests need no internet.

Two ``http.server`` threads on free ports: the *hub* and a *CDN* (a different origin, as on
the real Hub). The hub answers what huggingface_hub 2.x sends (read from its
``file_download.py``, ``utils/_http.py``, ``hf_api.py`` and ``_commit_api.py``):

* ``HEAD``/``GET /{owner}/{name}/resolve/{revision}/{path}``:
  - an LFS file: ``302`` to ``{cdn}/cdn/{sha256}`` with ``Location``, ``X-Repo-Commit``,
    ``X-Linked-Etag`` (quoted sha256) and ``X-Linked-Size``; the CDN then serves the bytes;
  - a small (non-LFS) file: ``200`` with ``ETag`` (quoted git blob hash), ``X-Repo-Commit``,
    ``Content-Length``;
  - ``404`` with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``, ``401`` +
    ``RepoNotFound`` for a private repo without its token, or ``fail_status`` (e.g. 500) for all.
* the upload API used by ``HfApi.create_repo`` / ``create_branch`` / ``upload_file``:
  ``POST /api/repos/create``, ``/api/models/{repo}/branch/{b}``, ``/preupload/{rev}``
  (everything "regular"), ``/commit/{rev}`` (ndjson) and ``/api/validate-yaml``.
* ``GET /api/agent-harnesses``: 404 (huggingface_hub asks for it when telemetry is on).

Every request is recorded in :attr:`FakeHub.requests`. HTTP/1.0 (one request per connection),
so a stopped server really is unreachable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a blob (the ETag the Hub gives non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Request:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Repo:
    private: bool = False
    token: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, tuple[bytes, bool]]] = field(default_factory=dict)


class FakeHub:
    """The fake Hub. Add files with :meth:`add_file`; point ``HF_ENDPOINT`` at :attr:`url`."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> bytes served by the CDN
        self.requests: list[Request] = []
        self.fail_status: int | None = None  # answer every resolve request with this status
        self.tamper: dict[str, bytes] = {}  # sha256 -> other bytes the CDN sends instead
        self._servers: list[ThreadingHTTPServer] = []
        self._counter = 0
        self._lock = threading.Lock()
        self.url = ""
        self.cdn_url = ""

    # -- content ---------------------------------------------------------------------------
    def create_repo(self, repo_id: str, *, private: bool = False, token: str | None = None) -> Repo:
        repo = self.repos.setdefault(repo_id, Repo(private=private, token=token))
        if not repo.branches:
            repo.branches["main"] = self._commit(repo, {})
        return repo

    def add_file(
        self, repo_id: str, path: str, data: bytes, *, lfs: bool = True, branch: str = "main", **repo_kw: Any
    ) -> str:
        """Commit ``data`` at ``path`` on ``branch``; returns the new 40-hex commit."""
        repo = self.create_repo(repo_id, **repo_kw)
        parent = repo.commits[repo.branches.get(branch, repo.branches["main"])]
        files = {**parent, path: (data, lfs)}
        commit = self._commit(repo, files)
        repo.branches[branch] = commit
        return commit

    def _commit(self, repo: Repo, files: dict[str, tuple[bytes, bool]]) -> str:
        with self._lock:
            self._counter += 1
            commit = hashlib.sha1(f"commit {self._counter} {id(repo)}".encode()).hexdigest()
        repo.commits[commit] = files
        for data, lfs in files.values():
            if lfs:
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def resolve_requests(self) -> list[Request]:
        return [r for r in self.requests if "/resolve/" in r.path or r.server == "cdn"]

    # -- servers ---------------------------------------------------------------------------
    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self, role))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()


def _make_handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _record(self) -> None:
            hub.requests.append(Request(role, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

        def _send(
            self, status: int, headers: dict[str, str] | None = None, body: bytes = b"", *, length: int | None = None
        ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode())

        def _error(self, status: int, code: str | None = None, extra: dict[str, str] | None = None) -> None:
            headers = {"X-Error-Code": code, "X-Error-Message": code} if code else {}
            self._json(status, {"error": code or "error"}, {**headers, **(extra or {})})

        # -- CDN --------------------------------------------------------------------------
        def _cdn(self) -> None:
            sha = urlsplit(self.path).path.rsplit("/", 1)[-1]
            if not self.path.startswith("/cdn/") or sha not in hub.blobs:
                return self._error(404)
            data = hub.tamper.get(sha, hub.blobs[sha])
            self._send(200, {"Content-Type": "application/octet-stream", "ETag": f'"{sha}"'}, data)

        # -- hub: resolve -------------------------------------------------------------------
        def _resolve(self, parts: list[str]) -> None:
            if hub.fail_status is not None:
                return self._error(hub.fail_status)
            repo_id, revision, path = f"{parts[0]}/{parts[1]}", unquote(parts[3]), "/".join(parts[4:])
            repo = hub.repos.get(repo_id)
            auth = self.headers.get("Authorization", "")
            if repo is None:
                return self._error(404, "RepoNotFound")
            if repo.private and auth != f"Bearer {repo.token}":
                return self._error(401, "RepoNotFound")
            commit = repo.branches.get(revision, revision if revision in repo.commits else None)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            if path not in repo.commits[commit]:
                return self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
            data, lfs = repo.commits[commit][path]
            if lfs:
                sha = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
                return self._send(
                    302,
                    {
                        "Location": f"{hub.cdn_url}/cdn/{sha}?X-Amz-Signature=fake",
                        "X-Repo-Commit": commit,
                        "X-Linked-Etag": f'"{sha}"',
                        "X-Linked-Size": str(len(data)),
                        "ETag": f'"{git_blob_sha1(pointer)}"',
                    },
                )
            self._send(200, {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"'}, data)

        # -- hub: upload API ------------------------------------------------------------------
        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _api_post(self, parts: list[str]) -> None:
            body = self._body()
            if parts[:3] == ["api", "repos", "create"]:
                payload = json.loads(body)
                repo_id = (
                    f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
                )
                if repo_id in hub.repos:  # the real Hub's 409 also carries the url
                    return self._json(
                        409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    )
                hub.create_repo(repo_id, private=payload.get("visibility") == "private")
                return self._json(200, {"url": f"{hub.url}/{repo_id}"})
            if parts[:2] == ["api", "validate-yaml"]:
                return self._json(200, {"errors": [], "warnings": []})
            if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                repo_id, action, rev = f"{parts[2]}/{parts[3]}", parts[4], unquote("/".join(parts[5:]))
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound")
                if action == "branch":
                    if rev in repo.branches:
                        return self._error(409, None)
                    repo.branches[rev] = repo.branches["main"]
                    return self._json(200, {})
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                for f in files
                            ]
                        },
                    )
                if action == "commit":
                    if rev not in repo.branches:
                        return self._error(404, "RevisionNotFound")
                    files = dict(repo.commits[repo.branches[rev]])
                    for line in body.splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            data = base64.b64decode(value["content"])
                            files[value["path"]] = (data, value["path"].endswith(".safetensors"))
                    commit = hub._commit(repo, files)
                    repo.branches[rev] = commit
                    return self._json(
                        200, {"commitOid": commit, "commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "success": True}
                    )
            self._error(404)

        # -- dispatch -----------------------------------------------------------------------
        def _dispatch(self) -> None:
            self._record()
            if role == "cdn":
                return self._cdn()
            parts = [p for p in urlsplit(self.path).path.split("/") if p]
            if self.command in ("HEAD", "GET") and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(parts)
            if self.command == "POST":
                return self._api_post(parts)
            self._error(404)

        do_GET = do_HEAD = do_POST = _dispatch

    return Handler


# -- pytest fixtures and helpers ------------------------------------------------------------------


def _only_loopback(real_connect: Any) -> Any:
    def connect(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test tried to reach the network: {address}")
        return real_connect(sock, address)

    return connect


def point_hf_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Point huggingface_hub at ``endpoint`` with its cache and token files under ``home``.

    Sets the environment and the module constants huggingface_hub read at import time.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    patches = {
        "HF_HUB_OFFLINE": False,
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / "agent_harnesses.json"),
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
    }
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(socket.socket, "connect", _only_loopback(socket.socket.connect))
    _http.close_session()  # no pooled connections from an earlier test


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HF_HUB_OFFLINE=1`` in the environment and in huggingface_hub's constants."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running :class:`FakeHub`, with huggingface_hub pointed at it and a fresh cache."""
    from huggingface_hub.utils import _http

    hub = FakeHub().start()
    point_hf_at(monkeypatch, hub.url, tmp_path / "hf")
    yield hub
    hub.stop()
    _http.close_session()


def tiny_weights(path: Path, seed: int = 0, arch: str = "saphn-tiny") -> tuple[Path, str]:
    """Write ``saphn-tiny`` weights with non-zero heads; returns (path, sha256)."""
    import torch

    from deblur_cli.hub.loading import save_weights
    from deblur_cli.models import create_model, randomize_zero_layers

    torch.manual_seed(seed)
    model = randomize_zero_layers(create_model("saphn-tiny"))
    return path, save_weights(model, path, arch)


def write_registry(folder: Path, entries: list[dict[str, Any]], default: str | None = None) -> Path:
    """A registry.json in ``folder`` (bundled files are looked up next to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.json"
    doc = {"format": 1, "default": default or entries[0]["name"], "entries": entries}
    path.write_text(json.dumps(doc, indent=2))
    return path


def use_registry(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make ``deblur_cli.hub.registry.load_registry()`` read ``path``."""
    from deblur_cli.hub import registry

    monkeypatch.setattr(registry, "default_registry_path", lambda: path)


def entry(name: str, **kw: Any) -> dict[str, Any]:
    """A registry entry dict for ``saphn-tiny`` weights."""
    d: dict[str, Any] = {
        "name": name,
        "arch": name.split(".", 1)[0],
        "filename": f"{name}.safetensors",
        "license": "MIT",
        "training_data": "none (test)",
        "metrics": {},
        "description": "test weights",
    }
    d.update(kw)
    return d


__all__ = [
    "FakeHub",
    "entry",
    "fake_hub_fixture",
    "git_blob_sha1",
    "go_offline",
    "point_hf_at",
    "tiny_weights",
    "use_registry",
    "write_registry",
]
