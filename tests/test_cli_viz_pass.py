"""``--viz DIR`` of ``deblur image`` / ``deblur folder``: the maps come from the same pass."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deblur_cli.cli.main import _register, app

_register()


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _photo(path, seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_image_viz_writes_maps_from_the_same_pass(tmp_path, tiny_weights, monkeypatch):
    from deblur_cli.models.saphn import SAPHN

    calls = []
    forward = SAPHN.forward
    monkeypatch.setattr(SAPHN, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    src = _photo(tmp_path / "in.png")
    res = invoke("image", src, "-o", tmp_path / "out.png", "--weights", tiny_weights, "--device", "cpu",
                 "--viz", tmp_path / "maps", "--raw")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(calls) == 1  # one network pass for the image and its maps
    sheet = tmp_path / "maps" / "out.sheet.png"
    assert sheet.exists() and Image.open(sheet).size[0] > 0
    fusion = np.asarray(Image.open(tmp_path / "maps" / "out.fusion.png"))
    assert fusion.shape[:2] == (40, 48) and fusion.std() > 0
    assert (tmp_path / "maps" / "out.fusion.npy").exists()
    # the deblurred output equals a run without --viz
    res = invoke("image", src, "-o", tmp_path / "plain.png", "--weights", tiny_weights, "--device", "cpu")
    assert res.exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(tmp_path / "plain.png")))


def test_folder_viz_batched_mirrors_the_tree(tmp_path, tiny_weights):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        _photo(src / f"a{i}.png", seed=i)
    _photo(src / "sub" / "b.png", seed=9, size=(24, 32))
    res = invoke("folder", src, "-o", tmp_path / "out", "--recursive", "--batch", "--batch-size", "2",
                 "--weights", tiny_weights, "--device", "cpu", "--viz", tmp_path / "maps", "--fusion")  # fmt: skip
    assert res.exit_code == 0, res.output
    for rel in ("a0", "a1", "a2"):
        assert (tmp_path / "maps" / f"{rel}.fusion.png").exists()
    assert (tmp_path / "maps" / "sub" / "b.fusion.png").exists()
    assert not (tmp_path / "maps" / "a0.offsets.png").exists()  # only the chosen group
    # different images give different maps (batch index respected)
    m0 = np.asarray(Image.open(tmp_path / "maps" / "a0.fusion.png"))
    m1 = np.asarray(Image.open(tmp_path / "maps" / "a1.fusion.png"))
    assert not np.array_equal(m0, m1)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fusion"], "need --viz"),
        (["--viz", "MAPS", "--level", "4"], "--level"),
        (["--viz", "MAPS", "--block", "7"], "--block"),
        (["--viz", "MAPS", "--backend", "onnx"], "torch backend"),
    ],
)
def test_image_viz_bad_options(tmp_path, tiny_weights, extra, message):
    pytest.importorskip("onnxruntime")
    src = _photo(tmp_path / "in.png")
    extra = [str(tmp_path / "maps") if e == "MAPS" else e for e in extra]
    res = invoke("image", src, "-o", tmp_path / "o.png", "--weights", tiny_weights, "--device", "cpu", *extra)
    assert res.exit_code != 0
    assert message in str(res.exception)
    assert not (tmp_path / "o.png").exists() or "--backend" not in extra
