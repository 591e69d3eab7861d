"""`deblur weights list|info|download|register|publish` through Typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FakeHub, entry, fake_hub_fixture, go_offline, tiny_weights, use_registry, write_registry  # noqa: F401
from typer.testing import CliRunner

from deblur_cli.cli.main import _register, app
from deblur_cli.errors import DeblurError
from deblur_cli.hub.registry import load_registry, sha256_file

_register()
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["weights", *args])


def test_list_shows_status() -> None:
    result = run("list")
    assert result.exit_code == 0, result.output
    assert "saphn-s.synth (default)" in result.output and "bundled" in result.output
    assert "saphn.synth" in result.output and "unavailable" in result.output
    rows = {r["name"]: r for r in json.loads(run("list", "--json").output)}
    assert rows["saphn-s.synth"]["status"] == "bundled" and rows["saphn-s.synth"]["default"]
    assert rows["saphn.synth"]["status"] == "unavailable" and not rows["saphn.synth"]["published"]


def test_info_entry_and_file() -> None:
    result = run("info", "saphn-s.synth")
    assert result.exit_code == 0, result.output
    assert "saphn-s.synth.safetensors" in result.output and "local_sha256_ok: True" in result.output
    data = json.loads(run("info", "saphn.synth", "--json").output)
    assert data["status"] == "unavailable" and data["hf_uri"] is None
    bundled = load_registry().bundled_path(load_registry().get())
    result = run("info", str(bundled))
    assert "meta.arch: saphn-s" in result.output and sha256_file(bundled) in result.output


def test_unknown_name_is_a_deblur_error() -> None:
    result = run("info", "saphn.nope")
    assert isinstance(result.exception, DeblurError) and "known: saphn-s.synth, saphn.synth" in str(result.exception)


def test_download_messages(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, sha = tiny_weights(tmp_path / "w.safetensors")
    commit = fake_hub.add_file("deblur-test/tiny", "saphn-tiny.hub.safetensors", path.read_bytes())
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "saphn-tiny.b.safetensors").write_bytes(path.read_bytes())
    reg = write_registry(
        tmp_path / "r",
        [
            entry("saphn-tiny.b", sha256=sha, bundled="saphn-tiny.b.safetensors"),
            entry("saphn-tiny.hub", repo_id="deblur-test/tiny", revision=commit, sha256=sha, published=True),
            entry("saphn-tiny.never", repo_id="deblur-test/tiny"),
        ],
    )
    use_registry(monkeypatch, reg)
    assert "nothing to download" in run("download", "saphn-tiny.b").output
    result = run("download", "--all")
    assert result.exit_code == 0, result.output
    assert f"saphn-tiny.hub: downloaded, sha256 {sha} verified" in result.output
    assert "already cached" in run("download", "saphn-tiny.hub").output
    uri = f"hf://deblur-test/tiny/saphn-tiny.hub.safetensors@{commit}"
    assert "already cached" in run("download", uri).output
    rows = {r["name"]: r["status"] for r in json.loads(run("list", "--json").output)}
    assert rows == {"saphn-tiny.b": "bundled", "saphn-tiny.hub": "cached", "saphn-tiny.never": "unavailable"}

    result = run("download", "saphn-tiny.never")
    assert isinstance(result.exception, DeblurError) and "not published" in str(result.exception)
    assert isinstance(run("download").exception, DeblurError)
    go_offline(monkeypatch)
    result = run("download", "--force", "saphn-tiny.hub")
    assert isinstance(result.exception, DeblurError) and "offline" in str(result.exception)


def test_register_replaces_bundled_weights(tmp_path: Path) -> None:
    old, old_sha = tiny_weights(tmp_path / "old.safetensors", seed=0)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "saphn-tiny.b.safetensors").write_bytes(old.read_bytes())
    reg = write_registry(folder, [entry("saphn-tiny.b", sha256=old_sha, bundled="saphn-tiny.b.safetensors")])
    new, new_sha = tiny_weights(tmp_path / "new.safetensors", seed=5)
    result = run("register", str(new), "--name", "saphn-tiny.b", "--metrics", '{"psnr": 27.5}', "--registry", str(reg))
    assert result.exit_code == 0, result.output
    assert new_sha in result.output and "bundled as weights/saphn-tiny.b.safetensors" in result.output
    e = load_registry(reg).get("saphn-tiny.b")
    assert e.sha256 == new_sha and e.metrics == {"psnr": 27.5}
    assert sha256_file(folder / "saphn-tiny.b.safetensors") == new_sha
    bad = run("register", str(new), "--name", "saphn-tiny.b", "--metrics", "[1]", "--registry", str(reg))
    assert isinstance(bad.exception, DeblurError)


def test_publish_records_and_round_trips(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, sha = tiny_weights(tmp_path / "trained.safetensors", seed=2)
    folder = tmp_path / "weights"
    reg = write_registry(folder, [entry("saphn-tiny.pub", repo_id=None)])
    (folder / "MODEL_CARD.md").write_text("---\nlicense: mit\n---\n# test\n")
    use_registry(monkeypatch, reg)
    result = run(
        "publish", "saphn-tiny.pub", "--repo", "deblur-test/pub", "--file", str(path), "--token", "hf_w",
        "--card", "--record",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    commit = result.output.split("commit: ", 1)[1].split()[0]
    assert fake_hub.repos["deblur-test/pub"].branches["main"] == commit
    e = load_registry(reg).get("saphn-tiny.pub")
    assert (e.repo_id, e.revision, e.sha256, e.published) == ("deblur-test/pub", commit, sha, True)
    assert run("download", "saphn-tiny.pub").exit_code == 0
    from deblur_cli.hub.loading import load_model

    _, info = load_model("saphn-tiny.pub")
    assert info["source"] == "cache" and info["sha256"] == sha and info["revision"] == commit


def test_publish_argument_handling(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny_weights(tmp_path / "w.safetensors")
    reg = write_registry(tmp_path / "r", [entry("saphn-tiny.x"), entry("saphn.y")])
    use_registry(monkeypatch, reg)
    assert run("publish", "saphn-tiny.x").exit_code == 2  # --repo is required
    result = run("publish", "saphn-tiny.x", "--repo", "o/r")
    assert isinstance(result.exception, DeblurError) and "--file" in str(result.exception)
    result = run("publish", "saphn.y", "--repo", "o/r", "--file", str(path))
    assert isinstance(result.exception, DeblurError) and "expected 'saphn'" in str(result.exception)
    result = run("publish", "saphn-tiny.x", "--repo", "o/r", "--file", str(path))  # no --record
    assert result.exit_code == 0 and "pin it: deblur weights register" in result.output
    assert load_registry(reg).get("saphn-tiny.x").revision is None
    assert next(r.path for r in fake_hub.requests if r.method == "POST") == "/api/repos/create"


def test_command_module_does_not_import_torch() -> None:
    code = (
        "import sys; import deblur_cli.cli.weights;"
        "bad = [x for x in ('torch', 'huggingface_hub') if x in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
