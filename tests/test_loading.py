"""save_weights / load_model: safetensors only, strict, registry, bundled default without network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from hub_server import FakeHub, entry, fake_hub_fixture, tiny_weights, use_registry, write_registry  # noqa: F401
from safetensors.torch import save_file

from deblur_cli.errors import DeblurError
from deblur_cli.hub.loading import load_model, read_weights, save_weights
from deblur_cli.models import SAPHN, get_config
from deblur_cli.hub.registry import load_registry, sha256_file


def test_save_load_roundtrip(tiny_model: SAPHN, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    sha = save_weights(tiny_model, path, "saphn-tiny", extra_metadata={"step": 12, "data": "synthetic"})
    assert sha == sha256_file(path)
    _, meta = read_weights(path)
    assert meta["arch"] == "saphn-tiny" and meta["step"] == "12" and meta["data"] == "synthetic"
    assert json.loads(meta["config"]) == get_config("saphn-tiny").to_dict()

    model, info = load_model(weights=str(path))
    assert info["source"] == "file" and info["sha256"] == sha and info["arch"] == "saphn-tiny"
    assert info["path"] == str(path.resolve()) and info["name"] == str(path)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    x = torch.rand(1, 3, 13, 18)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tiny_model(x), rtol=0, atol=0)


def test_save_weights_rejects_reserved_metadata(tiny_model: SAPHN, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="arch"):
        save_weights(tiny_model, tmp_path / "w.safetensors", "saphn-tiny", extra_metadata={"arch": "x"})


def _rewrite(src: Path, dst: Path, edit) -> Path:
    state, meta = read_weights(src)
    edit(state, meta)
    save_file(state, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda s, m: s.pop(min(s)), ["missing keys:"]),
        (lambda s, m: s.update(extra=torch.zeros(2)), ["unexpected keys: extra"]),
        (
            lambda s, m: s.update({k: torch.zeros(3, *v.shape[1:]) for k, v in list(s.items())[:1]}),
            ["shape mismatches (file vs model):", "(3,"],
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_strict_loading_names_the_problem(tmp_path: Path, edit, needles: list[str]) -> None:
    src, _ = tiny_weights(tmp_path / "w.safetensors")
    bad = _rewrite(src, tmp_path / "bad.safetensors", edit)
    with pytest.raises(DeblurError) as exc:
        load_model(weights=str(bad))
    msg = str(exc.value)
    assert "\n" not in msg and "do not match the architecture" in msg
    for needle in needles:
        assert needle in msg


def test_metadata_required(tmp_path: Path) -> None:
    src, _ = tiny_weights(tmp_path / "w.safetensors")
    bad = _rewrite(src, tmp_path / "bad.safetensors", lambda s, m: m.pop("config"))
    with pytest.raises(DeblurError, match="no 'arch'/'config' metadata"):
        load_model(weights=str(bad))
    bad = _rewrite(src, tmp_path / "bad2.safetensors", lambda s, m: m.update(config='{"nope": 1}'))
    with pytest.raises(DeblurError, match="invalid 'config' metadata"):
        load_model(weights=str(bad))


def test_pickles_are_refused(tmp_path: Path, tiny_model: SAPHN) -> None:
    pth = tmp_path / "w.pth"
    torch.save(tiny_model.state_dict(), pth)
    with pytest.raises(DeblurError, match="not a safetensors file"):
        load_model(weights=str(pth))


def test_missing_file_and_bad_device(tmp_path: Path) -> None:
    with pytest.raises(DeblurError, match="weights file not found"):
        load_model(weights=str(tmp_path / "nope.safetensors"))
    src, _ = tiny_weights(tmp_path / "w.safetensors")
    with pytest.raises(DeblurError, match="device"):
        load_model(weights=str(src), device="warp-drive")


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(DeblurError) as exc:
        load_model("saphn-s.nope")
    msg = str(exc.value)
    assert "\n" not in msg and "saphn-s.nope" in msg and "saphn-s.synth" in msg and "saphn.synth" in msg


def test_default_model_is_bundled_and_makes_no_network_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("the default model touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model, info = load_model()
    reg = load_registry()
    default = reg.get()
    assert info["name"] == default.name == "saphn-s.synth" and info["source"] == "bundled"
    assert info["arch"] == "saphn-s" and info["sha256"] == default.sha256
    assert Path(info["path"]) == reg.bundled_path(default)
    assert not model.training
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    if "untrained placeholder" in json.dumps(default.metrics):  # until trained weights replace it
        torch.testing.assert_close(y, x, rtol=0, atol=1e-6)


def test_shipped_entries_have_known_architectures() -> None:
    from deblur_cli.models import list_variants

    reg = load_registry()
    for e in reg.entries.values():
        assert e.arch in list_variants()
    assert reg.bundled_path(reg.get()) is not None


def test_unpublished_entry_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", lambda *a: (_ for _ in ()).throw(AssertionError("network")))
    with pytest.raises(DeblurError, match="saphn.synth is not published on the Hub yet"):
        load_model("saphn.synth")


def test_bundled_file_must_match_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, sha = tiny_weights(tmp_path / "saphn-tiny.b.safetensors")
    reg = write_registry(tmp_path, [entry("saphn-tiny.b", sha256="0" * 64, bundled=path.name)])
    use_registry(monkeypatch, reg)
    with pytest.raises(DeblurError, match="do not match the registry sha256") as exc:
        load_model()
    assert "deblur weights register" in str(exc.value)
    write_registry(tmp_path, [entry("saphn-tiny.b", sha256=sha, bundled=path.name)])
    assert load_model("saphn-tiny.b")[1]["source"] == "bundled"
    path.unlink()
    with pytest.raises(DeblurError, match="missing from the installation"):
        load_model()


def test_weights_must_fit_the_named_model(tmp_path: Path) -> None:
    src, _ = tiny_weights(tmp_path / "w.safetensors")
    with pytest.raises(DeblurError, match="arch 'saphn-tiny', but 'saphn-s.synth' needs 'saphn-s'"):
        load_model("saphn-s.synth", weights=str(src))
    assert load_model("saphn-tiny", weights=str(src))[1]["arch"] == "saphn-tiny"
    with pytest.raises(DeblurError, match="arch 'saphn-tiny', but 'saphn-s' needs 'saphn-s'"):
        load_model("saphn-s", weights=str(src))
    assert load_model("saphn-s")[1]["name"] == "saphn-s.synth"  # bare arch: its first entry


def test_registry_entry_and_hf_uri_from_the_hub(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sha = tiny_weights(tmp_path / "w.safetensors", seed=1)
    commit = fake_hub.add_file("deblur-test/tiny", "saphn-tiny.hub.safetensors", path.read_bytes())
    reg = write_registry(
        tmp_path / "reg",
        [
            entry(
                "saphn-tiny.hub",
                repo_id="deblur-test/tiny",
                revision=commit,
                sha256=sha,
                size=path.stat().st_size,
                published=True,
            )
        ],
    )
    use_registry(monkeypatch, reg)
    _, info = load_model("saphn-tiny.hub")
    assert info["source"] == "download" and info["sha256"] == sha and info["revision"] == commit
    _, info = load_model("saphn-tiny.hub")
    assert info["source"] == "cache"

    uri = f"hf://deblur-test/tiny/saphn-tiny.hub.safetensors@{commit}"
    _, info = load_model(weights=uri)
    assert info["name"] == uri and info["source"] == "cache" and info["entry"] == "saphn-tiny.hub"
