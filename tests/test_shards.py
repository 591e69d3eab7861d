"""Sharded safetensors weights: the Hub's file convention, size limits, digests, and loading
them through ``load_model``, the registry, ``deblur weights register|info`` and the Hub."""

from __future__ import annotations

import json

import pytest
import torch
from hub_server import FakeHub, entry, fake_hub_fixture, use_registry, write_registry  # noqa: F401

from deblur_cli.errors import DeblurError
from deblur_cli.hub.loading import load_model, save_weights, save_weights_sharded
from deblur_cli.hub.registry import load_registry, sha256_file, update_entry
from deblur_cli.hub.shards import INDEX_NAME, MAX_SHARD_BYTES, read_sharded, save_sharded, set_size, shard_files
from deblur_cli.models import create_model, randomize_zero_layers


@pytest.fixture
def tiny() -> torch.nn.Module:
    torch.manual_seed(1)
    return randomize_zero_layers(create_model("saphn-tiny"))


def _out(model: torch.nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


def test_small_limit_gives_hub_named_shards_under_the_limit(tiny, tmp_path):
    limit = 300 * 1024  # _HEADER_ROOM (256 KiB) leaves 44 KiB of tensors a shard: several shards
    state = {k: torch.cat([v.flatten()] * 8) for k, v in tiny.state_dict().items() if v.is_floating_point()}
    index = save_sharded(state, tmp_path / "w", {"arch": "x"}, max_shard_bytes=limit)
    assert index.name == INDEX_NAME
    files = shard_files(index)
    n = len(files)
    assert n > 1 and [f.name for f in files] == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert all(f.stat().st_size <= limit for f in files)
    doc = json.loads(index.read_text())
    assert set(doc["weight_map"]) == set(state)
    assert doc["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in state.values())
    assert doc["metadata"]["sha256"] == {f.name: sha256_file(f) for f in files}
    back, meta = read_sharded(tmp_path / "w")  # the folder works as well as the index
    assert meta["arch"] == "x" and all(torch.equal(back[k], state[k]) for k in state)
    # Saving again with fewer shards leaves no stale shard behind.
    save_sharded(state, tmp_path / "w", {"arch": "x"})
    assert [f.name for f in (tmp_path / "w").glob("*.safetensors")] == ["model-00001-of-00001.safetensors"]


def test_one_tensor_over_the_limit_is_an_error(tmp_path):
    with pytest.raises(DeblurError, match="over the"):
        save_sharded({"big": torch.zeros(200_000)}, tmp_path, max_shard_bytes=300 * 1024)


def test_paper_width_model_fits_15_mib_shards(tmp_path):
    """saphn (about 63 MB in float32) splits into shards of at most 15 MiB that load back exactly."""
    model = create_model("saphn")
    index = save_weights_sharded(model, tmp_path / "saphn", "saphn")
    files = shard_files(index)
    assert len(files) >= 5 and all(f.stat().st_size <= MAX_SHARD_BYTES for f in files)
    assert set_size(index) == index.stat().st_size + sum(f.stat().st_size for f in files)
    loaded, info = load_model(weights=str(tmp_path / "saphn"))
    assert info["arch"] == "saphn" and info["sha256"] == sha256_file(index) and info["path"] == str(index.resolve())
    want = model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())


def test_load_model_reads_shards_like_the_single_file(tiny, tmp_path):
    single = tmp_path / "one.safetensors"
    save_weights(tiny, single, "saphn-tiny")
    index = save_weights_sharded(tiny, tmp_path / "set", "saphn-tiny", {"train_steps": 7}, max_shard_bytes=290 * 1024)
    a, _ = load_model(weights=str(single))
    b, info = load_model(weights=str(index))
    assert info["metadata"]["train_steps"] == "7"
    torch.testing.assert_close(_out(a), _out(b), rtol=0, atol=0)
    # bfloat16 storage (half the bytes) loads into a float32 model, close to the original.
    half = save_weights_sharded(tiny, tmp_path / "bf16", "saphn-tiny", dtype=torch.bfloat16)
    c, _ = load_model(weights=str(half))
    assert next(c.parameters()).dtype == torch.float32
    assert set_size(half) < 0.7 * set_size(index)
    torch.testing.assert_close(_out(c), _out(a), rtol=0, atol=0.02)


def test_damaged_or_missing_shard_is_refused(tiny, tmp_path):
    index = save_weights_sharded(tiny, tmp_path / "set", "saphn-tiny")
    shard = shard_files(index)[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DeblurError, match="does not match the sha256"):
        load_model(weights=str(index))
    shard.unlink()
    with pytest.raises(DeblurError, match="missing"):
        load_model(weights=str(index))
    with pytest.raises(DeblurError, match="not found"):
        load_model(weights=str(tmp_path / "nothing" / INDEX_NAME))


def test_registry_records_and_bundles_a_sharded_set(tiny, tmp_path, monkeypatch):
    reg_path = write_registry(tmp_path / "weights", [entry("saphn-tiny.base")])
    index = save_weights_sharded(tiny, tmp_path / "run", "saphn-tiny")
    e = update_entry("saphn-tiny.gpu", tmp_path / "run", path=reg_path, bundled="saphn-tiny.gpu")
    assert e.filename == INDEX_NAME and e.sha256 == sha256_file(index) and e.size == set_size(index)
    copy = tmp_path / "weights" / "saphn-tiny.gpu"
    assert sorted(p.name for p in copy.iterdir()) == sorted([INDEX_NAME, *(f.name for f in shard_files(index))])
    use_registry(monkeypatch, reg_path)
    reg = load_registry()
    assert reg.bundled_path(reg.get("saphn-tiny.gpu")) == copy / INDEX_NAME
    model, info = load_model("saphn-tiny.gpu")
    assert info["source"] == "bundled"
    torch.testing.assert_close(_out(model), _out(tiny), rtol=0, atol=0)
    with pytest.raises(DeblurError, match="arch"):
        update_entry("saphn-s.gpu", index, path=reg_path)


def test_cli_register_and_info_take_a_sharded_folder(cli, tiny, tmp_path):
    reg_path = write_registry(tmp_path / "weights", [entry("saphn-tiny.base")])
    index = save_weights_sharded(tiny, tmp_path / "run", "saphn-tiny")
    res = cli("weights", "register", tmp_path / "run", "--name", "saphn-tiny.gpu", "--bundle", "--registry", reg_path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "weights" / "saphn-tiny.gpu" / INDEX_NAME).is_file()
    doc = json.loads(reg_path.read_text())
    gpu = next(e for e in doc["entries"] if e["name"] == "saphn-tiny.gpu")
    assert gpu["bundled"] == "saphn-tiny.gpu" and gpu["sha256"] == sha256_file(index)
    res = cli("weights", "info", index, "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["metadata"]["arch"] == "saphn-tiny" and info["size"] == set_size(index)


def test_published_sharded_entry_downloads_every_shard(fake_hub: FakeHub, tiny, tmp_path, monkeypatch):
    index = save_weights_sharded(tiny, tmp_path / "set", "saphn-tiny", max_shard_bytes=290 * 1024)
    shards = shard_files(index)
    assert len(shards) >= 2
    for f in [*shards, index]:
        commit = fake_hub.add_file("deblur-test/tiny", f.name, f.read_bytes(), lfs=f.suffix == ".safetensors")
    reg_path = write_registry(tmp_path / "weights", [entry("saphn-tiny.hub", filename=INDEX_NAME,
        repo_id="deblur-test/tiny", revision=commit, sha256=sha256_file(index), published=True)])  # fmt: skip
    use_registry(monkeypatch, reg_path)
    model, info = load_model("saphn-tiny.hub")
    assert info["source"] == "download"
    fetched = {r.path.rsplit("/", 1)[-1] for r in fake_hub.resolve_requests()}
    assert {f.name for f in shards} <= fetched
    torch.testing.assert_close(_out(model), _out(tiny), rtol=0, atol=0)


def test_register_refuses_a_damaged_shard(tiny, tmp_path):
    """The registry records the index's sha256, which pins every shard: a shard that no longer
    matches it must not be recorded (or bundled) under that digest."""
    reg_path = write_registry(tmp_path / "weights", [entry("saphn-tiny.base")])
    index = save_weights_sharded(tiny, tmp_path / "run", "saphn-tiny", max_shard_bytes=290 * 1024)
    last = shard_files(index)[-1]
    last.write_bytes(last.read_bytes()[:-1] + b"\0")
    with pytest.raises(DeblurError, match="does not match the sha256"):
        update_entry("saphn-tiny.gpu", index, path=reg_path, bundled="saphn-tiny.gpu")
    last.unlink()
    with pytest.raises(DeblurError, match="is missing"):
        update_entry("saphn-tiny.gpu", index, path=reg_path)
    assert "saphn-tiny.gpu" not in load_registry(reg_path).entries
    assert not (tmp_path / "weights" / "saphn-tiny.gpu").exists()


def test_cli_publishes_a_sharded_set_in_one_commit(cli, fake_hub: FakeHub, tiny, tmp_path, monkeypatch):
    """``deblur weights publish --file SET --record`` uploads the index and every shard in one
    commit under the Hub's index name, records that commit, and the entry then downloads and
    loads from the Hub like any other."""
    index = save_weights_sharded(tiny, tmp_path / "run", "saphn-tiny", max_shard_bytes=290 * 1024)
    shards = shard_files(index)
    assert len(shards) >= 2
    reg_path = write_registry(tmp_path / "weights", [entry("saphn-tiny.pub", repo_id=None)])
    use_registry(monkeypatch, reg_path)
    res = cli("weights", "publish", "saphn-tiny.pub", "--repo", "deblur-test/sharded", "--file", tmp_path / "run",
              "--token", "hf_w", "--record")  # fmt: skip
    assert res.exit_code == 0, res.output
    commit = res.output.split("commit: ", 1)[1].split()[0]
    repo = fake_hub.repos["deblur-test/sharded"]
    assert repo.branches["main"] == commit
    assert set(repo.commits[commit]) == {INDEX_NAME, *(f.name for f in shards)}
    assert len(repo.commits) == 2  # the empty initial commit and ours: one commit for the whole set
    e = load_registry(reg_path).get("saphn-tiny.pub")
    assert (e.filename, e.revision, e.sha256, e.published) == (INDEX_NAME, commit, sha256_file(index), True)
    model, info = load_model("saphn-tiny.pub")
    assert info["source"] == "download"
    torch.testing.assert_close(_out(model), _out(tiny), rtol=0, atol=0)


def test_publish_refuses_a_damaged_set_before_uploading(cli, fake_hub: FakeHub, tiny, tmp_path, monkeypatch):
    index = save_weights_sharded(tiny, tmp_path / "run", "saphn-tiny", max_shard_bytes=290 * 1024)
    first = shard_files(index)[0]
    first.write_bytes(b"\0" + first.read_bytes()[1:])
    use_registry(monkeypatch, write_registry(tmp_path / "weights", [entry("saphn-tiny.pub", repo_id=None)]))
    res = cli("weights", "publish", "saphn-tiny.pub", "--repo", "deblur-test/bad", "--file", index, "--token", "hf_w")
    assert isinstance(res.exception, DeblurError) and "does not match the sha256" in str(res.exception)
    assert "deblur-test/bad" not in fake_hub.repos and [r for r in fake_hub.requests if r.method == "POST"] == []


def test_publish_puts_card_and_shards_in_one_commit_and_keeps_the_folder(fake_hub: FakeHub, tiny, tmp_path):
    from deblur_cli.hub import download as hub

    index = save_weights_sharded(tiny, tmp_path / "run", "saphn-tiny", max_shard_bytes=290 * 1024)
    shards = shard_files(index)
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: mit\n---\n# card\n")
    result = hub.publish(tmp_path / "run", "deblur-test/set", filename=f"v2/{INDEX_NAME}", arch="saphn-tiny",
                         token="hf_w", card=card)  # fmt: skip
    files = fake_hub.repos["deblur-test/set"].commits[result.commit]
    assert set(files) == {"README.md", f"v2/{INDEX_NAME}", *(f"v2/{f.name}" for f in shards)}
    assert result.sha256 == sha256_file(index) and result.size == set_size(index)
    with pytest.raises(DeblurError, match="must end in .index.json"):
        hub.publish(index, "deblur-test/set", filename="v2/model.safetensors")
    single = tmp_path / "single.safetensors"
    save_weights(tiny, single, "saphn-tiny")
    with pytest.raises(DeblurError, match="cannot be an index"):
        hub.publish(single, "deblur-test/set", filename=f"v2/{INDEX_NAME}")


def test_hub_filename_follows_the_kind_of_weights(tiny, tmp_path):
    from deblur_cli.hub.registry import hub_filename

    assert hub_filename("saphn-tiny.x.safetensors", "saphn-tiny.x", sharded=True) == INDEX_NAME
    assert hub_filename(f"v2/{INDEX_NAME}", "saphn-tiny.x", sharded=False) == "v2/saphn-tiny.x.safetensors"
    assert hub_filename("v2/w.safetensors", "saphn-tiny.x", sharded=False) == "v2/w.safetensors"
    assert hub_filename("v2/a.index.json", "saphn-tiny.x", sharded=True) == "v2/a.index.json"
    # Registering a single file for an entry that was sharded names it as a single file again.
    reg_path = write_registry(tmp_path / "weights", [entry("saphn-tiny.base")])
    update_entry("saphn-tiny.gpu", save_weights_sharded(tiny, tmp_path / "run", "saphn-tiny"), path=reg_path)
    save_weights(tiny, tmp_path / "one.safetensors", "saphn-tiny")
    e = update_entry("saphn-tiny.gpu", tmp_path / "one.safetensors", path=reg_path)
    assert e.filename == "saphn-tiny.gpu.safetensors" and e.sha256 == sha256_file(tmp_path / "one.safetensors")
