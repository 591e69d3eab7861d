"""Hub download, verification, errors and publishing, against the local fake Hub (no internet)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from hub_server import FakeHub, fake_hub_fixture, go_offline, point_hf_at, tiny_weights  # noqa: F401

from deblur_cli.hub import download as hub
from deblur_cli.errors import DeblurError
from deblur_cli.hub.download import HfRef, parse_hf_uri
from deblur_cli.hub.registry import Registry, WeightsEntry

REPO = "deblur-test/tiny"


def _one_line(exc: pytest.ExceptionInfo[DeblurError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def tiny_file(tmp_path: Path) -> tuple[bytes, str]:
    path, sha = tiny_weights(tmp_path / "w.safetensors")
    return path.read_bytes(), sha


def _entry(commit: str, sha: str, size: int, **kw) -> WeightsEntry:
    return WeightsEntry(
        name="saphn-tiny.test",
        arch="saphn-tiny",
        filename="saphn-tiny.test.safetensors",
        repo_id=REPO,
        revision=commit,
        sha256=sha,
        size=size,
        published=True,
        **kw,
    )


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("hf://o/r/w.safetensors", HfRef("o/r", "w.safetensors", None)),
        ("hf://o/r/w.safetensors@main", HfRef("o/r", "w.safetensors", "main")),
        ("hf://o/r/sub/w.safetensors@" + "a" * 40, HfRef("o/r", "sub/w.safetensors", "a" * 40)),
        ("hf://o/r@v1.0/w.safetensors", HfRef("o/r", "w.safetensors", "v1.0")),
        ("hf://models/o/r/w.safetensors", HfRef("o/r", "w.safetensors", None)),
    ],
)
def test_parse_hf_uri(uri: str, ref: HfRef) -> None:
    assert parse_hf_uri(uri) == ref
    assert parse_hf_uri(str(ref)) == ref


@pytest.mark.parametrize("uri", ["hf://o/w.safetensors", "hf://datasets/o/r/f", "hf://o/r/../x", "o/r/f", "hf://o/r/"])
def test_parse_hf_uri_rejects(uri: str) -> None:
    with pytest.raises(DeblurError):
        parse_hf_uri(uri)


def test_download_fills_cache_then_works_with_server_stopped(fake_hub: FakeHub, tiny_file) -> None:
    data, sha = tiny_file
    commit = fake_hub.add_file(REPO, "saphn-tiny.test.safetensors", data, lfs=True)
    entry = _entry(commit, sha, len(data))

    first = hub.fetch_entry(entry)
    assert first.source == "download" and first.sha256 == sha and first.commit == commit
    assert Path(first.path).read_bytes() == data
    assert Path(hub.cache_dir()) in Path(first.path).parents
    # The LFS flow: HEAD on the hub answered by a 302 to the CDN, then GET on the CDN.
    seen = [(r.server, r.method) for r in fake_hub.resolve_requests()]
    assert ("hub", "HEAD") in seen and ("cdn", "GET") in seen
    assert "authorization" not in next(r for r in fake_hub.requests if r.server == "cdn").headers

    fake_hub.stop()
    fake_hub.requests.clear()
    second = hub.fetch_entry(entry)  # pinned commit in the cache: no network at all
    assert second.source == "cache" and second.path == first.path and second.sha256 == sha
    assert fake_hub.requests == []
    assert hub.entry_status(Registry("x", {entry.name: entry}), entry) == "cached"


def test_unpinned_small_file_checked_against_git_hash(
    fake_hub: FakeHub, tiny_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, sha = tiny_file
    fake_hub.add_file(REPO, "w.safetensors", data, lfs=False)  # served directly, ETag = git blob hash
    got = hub.download(parse_hf_uri(f"hf://{REPO}/w.safetensors"))
    assert got.source == "download" and got.sha256 == sha
    again = hub.download(parse_hf_uri(f"hf://{REPO}/w.safetensors"))  # unpinned: asks the hub, reuses the cache
    assert again.source == "cache" and again.path == got.path

    blob = os.path.realpath(got.path)
    Path(blob).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    fake_hub.stop()
    go_offline(monkeypatch)
    with pytest.raises(DeblurError, match="git blob hash mismatch") as exc:
        hub.download(parse_hf_uri(f"hf://{REPO}/w.safetensors"))
    _one_line(exc)
    assert not os.path.exists(got.path) and not os.path.exists(blob)


def test_corrupted_download_rejected_and_deleted(fake_hub: FakeHub, tiny_file) -> None:
    data, sha = tiny_file
    commit = fake_hub.add_file(REPO, "saphn-tiny.test.safetensors", data)
    entry = _entry(commit, sha, len(data))
    fake_hub.tamper[sha] = bytes(len(data))  # same size, wrong bytes (bad CDN / man in the middle)
    with pytest.raises(DeblurError, match="sha256 mismatch") as exc:
        hub.fetch_entry(entry)
    _one_line(exc)
    assert hub.cached_file(HfRef(REPO, entry.filename, commit)) is None
    blobs = Path(hub.cache_dir()) / "models--deblur-test--tiny" / "blobs"
    assert not any(p.is_file() for p in blobs.iterdir())

    fake_hub.tamper.clear()  # the next attempt downloads a good copy
    assert hub.fetch_entry(entry).source == "download"


def test_corrupted_cache_rejected_then_redownloaded(fake_hub: FakeHub, tiny_file) -> None:
    data, sha = tiny_file
    commit = fake_hub.add_file(REPO, "saphn-tiny.test.safetensors", data)
    entry = _entry(commit, sha, len(data))
    path = hub.fetch_entry(entry).path
    blob = Path(os.path.realpath(path))
    raw = bytearray(blob.read_bytes())
    raw[-5] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises(DeblurError, match="sha256 mismatch"):
        hub.fetch_entry(entry)
    assert not os.path.exists(path) and not blob.exists()
    again = hub.fetch_entry(entry)
    assert again.source == "download" and Path(again.path).read_bytes() == data


def test_registry_sha256_is_authoritative(fake_hub: FakeHub, tiny_file) -> None:
    """The Hub's own digest matches, but the file is not the one the registry pinned."""
    data, _ = tiny_file
    commit = fake_hub.add_file(REPO, "saphn-tiny.test.safetensors", data)
    with pytest.raises(DeblurError, match="sha256 mismatch"):
        hub.fetch_entry(_entry(commit, "0" * 64, len(data)))


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("hf://nobody/nothing/w.safetensors", "repository nobody/nothing not found"),
        (f"hf://{REPO}/missing.safetensors", "missing.safetensors not found in deblur-test/tiny at revision main"),
        (f"hf://{REPO}/w.safetensors@v9", "revision v9 not found"),
    ],
)
def test_404_messages(fake_hub: FakeHub, tiny_file, uri: str, needle: str) -> None:
    fake_hub.add_file(REPO, "w.safetensors", tiny_file[0])
    with pytest.raises(DeblurError) as exc:
        hub.download(parse_hf_uri(uri))
    msg = _one_line(exc)
    assert needle in msg and "404" in msg


def test_server_error_message(fake_hub: FakeHub, tiny_file, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub retries 5xx with backoff
    commit = fake_hub.add_file(REPO, "saphn-tiny.test.safetensors", tiny_file[0])
    fake_hub.fail_status = 500
    with pytest.raises(DeblurError) as exc:
        hub.fetch_entry(_entry(commit, tiny_file[1], len(tiny_file[0])))
    msg = _one_line(exc)
    assert "HTTP 500" in msg and "server error" in msg and "saphn-tiny.test" in msg


def test_unreachable_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_hf_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "hf")
    with pytest.raises(DeblurError) as exc:
        hub.download(parse_hf_uri(f"hf://{REPO}/w.safetensors"))
    msg = _one_line(exc)
    assert "cannot download" in msg and "deblur weights download" in msg and "--weights PATH" in msg


def test_offline_never_touches_the_network(
    fake_hub: FakeHub, tiny_file, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(tiny_file[0])
    commit = fake_hub.add_file(REPO, "saphn-tiny.test.safetensors", tiny_file[0])
    entry = _entry(commit, tiny_file[1], len(tiny_file[0]))
    go_offline(monkeypatch)

    def no_connect(*args, **kwargs):
        raise AssertionError("network call in offline mode")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(DeblurError) as exc:
        hub.fetch_entry(entry)
    msg = _one_line(exc)
    assert "offline" in msg and "deblur weights download saphn-tiny.test" in msg and "--weights PATH" in msg
    with pytest.raises(DeblurError, match="offline"):
        hub.download(parse_hf_uri(f"hf://{REPO}/w.safetensors"))  # unpinned too
    with pytest.raises(DeblurError, match="offline"):
        hub.publish(weights, REPO, filename="x.safetensors")
    assert fake_hub.requests == []


def test_offline_uses_the_cache(fake_hub: FakeHub, tiny_file, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.add_file(REPO, "w.safetensors", tiny_file[0])
    ref = parse_hf_uri(f"hf://{REPO}/w.safetensors")  # a branch, cached through refs/main
    hub.download(ref)
    fake_hub.requests.clear()
    go_offline(monkeypatch)
    got = hub.download(ref)
    assert got.source == "cache" and got.sha256 == tiny_file[1]
    assert fake_hub.requests == []


def test_private_repo_needs_token(fake_hub: FakeHub, tiny_file, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.add_file(REPO, "w.safetensors", tiny_file[0], private=True, token="hf_secret")
    ref = parse_hf_uri(f"hf://{REPO}/w.safetensors")
    with pytest.raises(DeblurError, match="pass a token") as exc:
        hub.download(ref)
    _one_line(exc)
    assert hub.download(ref, token="hf_secret").sha256 == tiny_file[1]
    monkeypatch.setenv("HF_TOKEN", "hf_secret")  # the environment works as well
    assert hub.download(ref, force=True).source == "download"


def test_publish_then_download(fake_hub: FakeHub, tmp_path: Path) -> None:
    path, sha = tiny_weights(tmp_path / "trained.safetensors", seed=3)
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: mit\n---\n# card\n")
    result = hub.publish(
        path, "deblur-test/new", filename="saphn-tiny.x.safetensors", arch="saphn-tiny", token="hf_w", card=card
    )
    assert len(result.commit) == 40 and result.sha256 == sha and result.size == path.stat().st_size
    assert all(r.headers.get("authorization") == "Bearer hf_w" for r in fake_hub.requests if r.method == "POST")
    files = fake_hub.repos["deblur-test/new"].commits[result.commit]
    assert set(files) == {"README.md", "saphn-tiny.x.safetensors"}
    got = hub.download(HfRef("deblur-test/new", "saphn-tiny.x.safetensors", result.commit), sha256=sha)
    assert got.source == "download" and got.commit == result.commit

    branch = hub.publish(path, "deblur-test/new", filename="b.safetensors", revision="exp")
    assert fake_hub.repos["deblur-test/new"].branches["exp"] == branch.commit


def test_publish_checks_the_file(fake_hub: FakeHub, tmp_path: Path) -> None:
    path, _ = tiny_weights(tmp_path / "w.safetensors")
    with pytest.raises(DeblurError, match="arch 'saphn-tiny', expected 'saphn'"):
        hub.publish(path, REPO, filename="w.safetensors", arch="saphn")
    pickle = tmp_path / "w.pth"
    pickle.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DeblurError, match="not a safetensors file"):
        hub.publish(pickle, REPO, filename="w.safetensors")
    assert [r for r in fake_hub.requests if r.method == "POST"] == []


def test_entry_status(tmp_path: Path, fake_hub: FakeHub) -> None:
    (tmp_path / "b.safetensors").write_bytes(b"x")
    bundled = WeightsEntry("saphn-tiny.b", "saphn-tiny", "b.safetensors", sha256="0" * 64, bundled="b.safetensors")
    remote = _entry("1" * 40, "0" * 64, 1)
    never = WeightsEntry("saphn-tiny.n", "saphn-tiny", "n.safetensors", repo_id=REPO)
    reg = Registry("saphn-tiny.b", {e.name: e for e in (bundled, remote, never)}, tmp_path / "registry.json")
    assert [hub.entry_status(reg, e) for e in (bundled, remote, never)] == ["bundled", "remote", "unavailable"]
    assert fake_hub.requests == []
