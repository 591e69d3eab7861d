"""``deblur folder``: tree mirroring, bad files in the middle, existing outputs, batching."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deblur_cli.cli.main import _register, app, main
from deblur_cli.errors import DeblurError
from deblur_cli.inference import plan_folder

_register()


@pytest.fixture
def weights(tiny_weights) -> str:
    """conftest's ``saphn-tiny`` weights file, as a string."""
    return str(tiny_weights)


def _save(path, shape=(20, 24, 3), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """in/a.png, in/b.jpg, in/bad.png (text), in/notes.txt, in/.hidden.png, in/sub/c.png, in/sub/deep/d.webp"""
    root = tmp_path / "in"
    _save(root / "a.png")
    _save(root / "b.jpg", seed=1)
    (root / "bad.png").write_text("not an image")
    (root / "notes.txt").write_text("ignored")
    _save(root / ".hidden.png")
    _save(root / "sub" / "c.png", shape=(16, 16, 4), seed=2)
    _save(root / "sub" / "deep" / "d.webp", shape=(20, 24, 3), seed=3)
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- planning -----------------------------------------------------------------------------


def test_plan_mirrors_the_tree(tree, tmp_path):
    jobs = plan_folder(tree, tmp_path / "out", recursive=True)
    rel = [(str(s.relative_to(tree)), str(d.relative_to(tmp_path / "out"))) for s, d in jobs]
    assert rel == [
        ("a.png", "a.png"), ("b.jpg", "b.jpg"), ("bad.png", "bad.png"),
        ("sub/c.png", "sub/c.png"), ("sub/deep/d.webp", "sub/deep/d.webp"),
    ]  # fmt: skip
    flat = plan_folder(tree, tmp_path / "out")
    assert [s.name for s, _ in flat] == ["a.png", "b.jpg", "bad.png"]


def test_plan_suffix_and_ext(tree, tmp_path):
    jobs = plan_folder(tree, tmp_path / "out", suffix="_sharp", ext="TIFF")
    assert [d.name for _, d in jobs] == ["a_sharp.tiff", "b_sharp.tiff", "bad_sharp.tiff"]
    with pytest.raises(DeblurError, match="cannot write .gif"):
        plan_folder(tree, tmp_path / "out", ext="gif")


def test_plan_into_the_input_folder(tree):
    jobs = plan_folder(tree, tree)
    assert [d.name for _, d in jobs] == ["a_deblurred.png", "b_deblurred.jpg", "bad_deblurred.png"]
    (tree / "a_deblurred.png").write_bytes(b"an earlier output")
    assert [s.name for s, _ in plan_folder(tree, tree)] == ["a.png", "b.jpg", "bad.png"]  # not taken as input
    with pytest.raises(DeblurError, match="--suffix"):
        plan_folder(tree, tree, suffix="")


def test_plan_output_inside_input_is_not_scanned(tree):
    _save(tree / "out" / "old.png")
    jobs = plan_folder(tree, tree / "out", recursive=True)
    assert not any("out" in s.relative_to(tree).parts for s, _ in jobs)


def test_plan_collisions_and_bad_folders(tmp_path):
    _save(tmp_path / "in" / "x.png")
    _save(tmp_path / "in" / "x.jpg")
    with pytest.raises(DeblurError, match="both be written"):
        plan_folder(tmp_path / "in", tmp_path / "out", ext="png")
    with pytest.raises(DeblurError, match="no such folder"):
        plan_folder(tmp_path / "nope")
    with pytest.raises(DeblurError, match="is a file"):
        plan_folder(tmp_path / "in" / "x.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeblurError, match="no images"):
        plan_folder(tmp_path / "empty")


def test_default_output_folder(tree):
    jobs = plan_folder(tree)
    assert jobs[0][1].parent == tree.parent / "in_deblurred"


# --- the command ------------------------------------------------------------------------------


def test_folder_goes_on_past_a_bad_file(tree, tmp_path, weights):
    out = tmp_path / "out"
    result = invoke("folder", tree, "-o", out, "-r", "--weights", weights)
    assert result.exit_code != 0  # exit code says some failed (main() maps it to 1)
    assert type(result.exception).__name__ == "DeblurError" and result.exception.exit_code == 1
    assert "1 of 5 image(s) failed" in str(result.exception)
    assert files(out) == ["a.png", "b.jpg", "sub/c.png", "sub/deep/d.webp"]  # all but the bad one, no temp files
    assert "bad.png" in result.stdout and "not an image" in result.stdout  # listed at the end
    assert "deblurred" in result.stdout and "running on cpu" in result.stderr
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "sub" / "c.png"))[..., 3], np.asarray(Image.open(tree / "sub" / "c.png"))[..., 3]
    )


def test_main_exit_code_when_some_failed(tree, tmp_path, weights, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["folder", str(tree), "-o", str(tmp_path / "out"), "--weights", weights])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("deblur: error:") == 1 and "Traceback" not in err


def test_folder_all_good_exits_0(tmp_path, weights):
    for i in range(3):
        _save(tmp_path / "in" / f"{i}.png", seed=i)
    result = invoke("folder", tmp_path / "in", "-o", tmp_path / "out", "--weights", weights, "--ext", "webp")
    assert result.exit_code == 0, result.output
    assert files(tmp_path / "out") == ["0.webp", "1.webp", "2.webp"]


def test_existing_outputs_need_a_decision(tmp_path, weights):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "b.png", seed=1)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.png").write_bytes(b"keep me")
    result = invoke("folder", tmp_path / "in", "-o", out, "--weights", weights)
    assert result.exit_code != 0 and "already exist" in str(result.exception)
    assert files(out) == ["a.png"]  # nothing was processed

    result = invoke("folder", tmp_path / "in", "-o", out, "--weights", weights, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert (out / "a.png").read_bytes() == b"keep me" and (out / "b.png").exists()
    assert "skipped" in result.stdout

    result = invoke("folder", tmp_path / "in", "-o", out, "--weights", weights, "--overwrite")
    assert result.exit_code == 0, result.output
    assert Image.open(out / "a.png").size == (24, 20)

    result = invoke("folder", tmp_path / "in", "-o", out, "--overwrite", "--skip-existing")
    assert result.exit_code != 0 and "exclude each other" in str(result.exception)


def test_output_folder_is_input_folder(tmp_path, weights):
    src = _save(tmp_path / "in" / "a.png")
    before = src.read_bytes()
    result = invoke("folder", tmp_path / "in", "-o", tmp_path / "in", "--weights", weights)
    assert result.exit_code == 0, result.output
    assert src.read_bytes() == before
    assert files(tmp_path / "in") == ["a.png", "a_deblurred.png"]
    # a second run does not deblur the outputs of the first
    result = invoke("folder", tmp_path / "in", "-o", tmp_path / "in", "--weights", weights, "--skip-existing")
    assert result.exit_code == 0 and files(tmp_path / "in") == ["a.png", "a_deblurred.png"]


@pytest.mark.parametrize("flags", [["--batch"], ["--batch-size", "2"], ["--batch", "--batch-size", "3"]])
def test_batched_run_matches_unbatched(tmp_path, weights, flags):
    for i in range(3):
        _save(tmp_path / "in" / f"s{i}.png", seed=i)  # same size: batched together
    _save(tmp_path / "in" / "other.png", shape=(18, 30, 3), seed=9)
    _save(tmp_path / "in" / "gray.png", shape=(20, 24), seed=5)  # same size, different channels
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert invoke("folder", tmp_path / "in", "-o", tmp_path / "one", "--weights", weights).exit_code != 0
    result = invoke("folder", tmp_path / "in", "-o", tmp_path / "many", "--weights", weights, *flags)
    assert "1 of 6" in str(result.exception)
    assert (
        files(tmp_path / "many") == files(tmp_path / "one") == ["gray.png", "other.png", "s0.png", "s1.png", "s2.png"]
    )
    for name in files(tmp_path / "one"):
        a = np.asarray(Image.open(tmp_path / "one" / name), dtype=int)
        b = np.asarray(Image.open(tmp_path / "many" / name), dtype=int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1


def test_bad_folder_arguments(tmp_path, weights):
    _save(tmp_path / "x.png")
    for args, message in [
        ([tmp_path / "nope"], "no such folder"),
        ([tmp_path / "x.png"], "is a file"),
        ([tmp_path, "-o", tmp_path, "--suffix", ""], "--suffix"),
        ([tmp_path, "--ext", "bmp"], "cannot write .bmp"),
    ]:
        result = invoke("folder", *args, "--weights", weights)
        assert result.exit_code != 0 and message in str(result.exception), (args, result.output)
    assert invoke("folder", tmp_path, "--batch-size", "0").exit_code == 2  # usage error


def test_interrupted_write_leaves_no_partial_file(tmp_path, weights, monkeypatch):
    _save(tmp_path / "in" / "a.png")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    result = invoke("folder", tmp_path / "in", "-o", tmp_path / "out", "--weights", weights)
    assert isinstance(result.exception, KeyboardInterrupt) or result.exit_code != 0
    assert files(tmp_path / "out") == []


def test_folder_self_ensemble(tree, tmp_path, weights):
    """``--self-ensemble`` reaches the engine of ``deblur folder`` too (bad files still reported)."""
    out = tmp_path / "ens"
    result = invoke("folder", tree, "-o", out, "--weights", weights, "--device", "cpu", "--self-ensemble", "2")
    assert "self-ensemble x2" in result.stderr
    assert (out / "a.png").exists() and "bad.png" in result.output + result.stderr
