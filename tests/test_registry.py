"""The weights registry: the shipped file, validation, and rewriting entries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hub_server import entry, tiny_weights, write_registry

from deblur_cli.errors import DeblurError
from deblur_cli.hub.registry import (
    Registry,
    WeightsEntry,
    load_registry,
    read_safetensors_metadata,
    save_registry,
    sha256_file,
    update_entry,
)


def test_shipped_registry() -> None:
    from deblur_cli.hub.registry import weights_dir

    folder = weights_dir()
    assert (folder / "registry.json").is_file() and (folder / "MODEL_CARD.md").is_file()
    reg = load_registry()
    assert reg.default == "saphn-s.synth"
    default = reg.get()
    assert default.bundled == "saphn-s.synth.safetensors" and default.arch == "saphn-s"
    bundled = reg.bundled_path(default)
    assert bundled is not None and bundled.stat().st_size == default.size
    assert read_safetensors_metadata(bundled)["arch"] == "saphn-s"
    paper = reg.get("saphn.synth")
    assert paper.arch == "saphn" and not paper.published and paper.bundled is None
    assert paper.repo_id and "NOT YET PUBLISHED" in paper.description


def test_unknown_name_is_one_line_listing_names() -> None:
    reg = load_registry()
    for name in ("saphn.nope", "saphn-tiny", "foo"):
        with pytest.raises(DeblurError) as exc:
            reg.get(name)
        assert str(exc.value) == f"unknown weights {name!r}; known: saphn-s.synth, saphn.synth"


def test_bare_architecture_means_its_first_entry() -> None:
    reg = load_registry()
    assert reg.get("saphn-s") is reg.get("saphn-s.synth") and reg.get("saphn") is reg.get("saphn.synth")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"name": "saphn-s"}, "'<arch>.<tag>'"),
        ({"name": "saphn.x", "arch": "saphn-s"}, "'<arch>.<tag>'"),
        ({"revision": "main"}, "40-hex commit"),
        ({"sha256": "abc"}, "64 lowercase hex"),
        ({"published": True, "sha256": "0" * 64}, "needs repo_id, revision and sha256"),
        ({"bundled": "x.safetensors"}, "bundled entry needs sha256"),
        ({"bundled": "../x.safetensors", "sha256": "0" * 64}, "plain file name"),
        ({"colour": "red"}, "unknown keys colour"),
    ],
)
def test_entry_validation(changes: dict, needle: str) -> None:
    d = entry("saphn-s.t")
    d.update(changes)
    with pytest.raises(DeblurError, match=re.escape(needle)):
        WeightsEntry.from_dict(d)


def test_registry_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DeblurError, match="not found"):
        load_registry(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DeblurError, match="cannot read"):
        load_registry(tmp_path / "bad.json")
    p = write_registry(tmp_path, [entry("saphn-s.a"), entry("saphn-s.a")])
    with pytest.raises(DeblurError, match="listed twice"):
        load_registry(p)
    p = write_registry(tmp_path, [entry("saphn-s.a")], default="saphn-s.b")
    with pytest.raises(DeblurError, match="default 'saphn-s.b' is not an entry"):
        load_registry(p)


def test_roundtrip_and_find(tmp_path: Path) -> None:
    e = entry("saphn.x", repo_id="o/r", revision="a" * 40, sha256="b" * 64, published=True, metrics={"psnr": 30.5})
    p = write_registry(tmp_path, [e])
    reg = load_registry(p)
    assert reg.get("saphn.x").hf_uri == f"hf://o/r/saphn.x.safetensors@{'a' * 40}"
    assert reg.find("o/r", "saphn.x.safetensors") is reg.get("saphn.x")
    assert reg.find("o/r", "saphn.x.safetensors", "c" * 40) is None
    out = save_registry(reg, tmp_path / "copy.json")
    assert load_registry(out) == Registry(reg.default, reg.entries, out)
    assert json.loads(out.read_text())["entries"][0]["metrics"] == {"psnr": 30.5}


def test_update_entry_refreshes_bundled_file(tmp_path: Path) -> None:
    old, old_sha = tiny_weights(tmp_path / "old.safetensors", seed=0)
    reg_dir = tmp_path / "weights"
    reg_dir.mkdir()
    (reg_dir / "saphn-tiny.b.safetensors").write_bytes(old.read_bytes())
    other = entry("saphn.other")
    p = write_registry(reg_dir, [entry("saphn-tiny.b", sha256=old_sha, bundled="saphn-tiny.b.safetensors"), other])

    new, new_sha = tiny_weights(tmp_path / "new.safetensors", seed=1)
    assert new_sha != old_sha
    e = update_entry("saphn-tiny.b", new, path=p, metrics={"psnr": 28.0})
    assert e.sha256 == new_sha and e.size == new.stat().st_size and e.metrics == {"psnr": 28.0}
    assert sha256_file(reg_dir / "saphn-tiny.b.safetensors") == new_sha
    reg = load_registry(p)
    assert reg.get("saphn-tiny.b") == e and reg.get("saphn.other") == WeightsEntry.from_dict(other)

    created = update_entry("saphn-tiny.c", new, path=p, revision="d" * 40, repo_id="o/r", published=True)
    assert created.filename == "saphn-tiny.c.safetensors" and created.bundled is None
    assert load_registry(p).names() == ["saphn-tiny.b", "saphn.other", "saphn-tiny.c"]


def test_update_entry_checks_arch_and_fields(tmp_path: Path) -> None:
    w, _ = tiny_weights(tmp_path / "w.safetensors")
    p = write_registry(tmp_path / "r", [entry("saphn.x")])
    with pytest.raises(DeblurError, match="arch 'saphn-tiny', but 'saphn.x' is a 'saphn' entry"):
        update_entry("saphn.x", w, path=p)
    with pytest.raises(DeblurError, match="unknown registry fields: colour"):
        update_entry("saphn.x", path=p, colour="red")
    with pytest.raises(DeblurError, match="40-hex"):
        update_entry("saphn.x", path=p, revision="main")
    assert load_registry(p).get("saphn.x").revision is None  # nothing written on error


def test_safetensors_header_reader(tmp_path: Path) -> None:
    for name, data in [("short", b"abc"), ("zip", b"PK\x03\x04" + bytes(60)), ("json", b"\x02" + bytes(7) + b"[]")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DeblurError, match="not a safetensors file"):
            read_safetensors_metadata(tmp_path / name)
    with pytest.raises(DeblurError, match="not found"):
        read_safetensors_metadata(tmp_path / "nope")


@pytest.mark.slow
def test_wheel_ships_the_weights(tmp_path) -> None:
    """A built wheel carries registry, model card and bundled weights as deblur_cli/weights/."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)  # fmt: skip
    wheel = next(tmp_path.glob("deblur_cli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    reg = load_registry()
    for needed in ("registry.json", "MODEL_CARD.md", reg.get().bundled):
        assert f"deblur_cli/weights/{needed}" in names, needed
    assert not any(n.startswith("runs/") or n.startswith("tests/") for n in names)
