"""The blur-extent network, the blur gate in the engine, and ``deblur estimate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from deblur_cli.errors import DeblurError
from deblur_cli.gate.decision import DEFAULT_GATE, GateDecision, apply_gate, gate_weight, parse_gate
from deblur_cli.gate.meter import BlurExtentNet, BlurMeter, load_blur_extent, textured_tiles
from deblur_cli.gate.regions import TILE
from deblur_cli.gate.weights import checked_bundled_path, save_blur_extent
from deblur_cli.inference import Deblurrer


class FixedMeter:
    """Stands in for :class:`BlurMeter`: reports a blur chosen per image by its mean value."""

    def __init__(self, extent_of):
        self.extent_of = extent_of
        self.calls = 0

    def estimate(self, rgb):
        from deblur_cli.gate.meter import BlurEstimate

        self.calls += 1
        return BlurEstimate(extent=self.extent_of(rgb), tiles=1)


@pytest.fixture
def small_meter_file(tmp_path):
    torch.manual_seed(0)
    net = BlurExtentNet(width=2)
    path = tmp_path / "be.safetensors"
    save_blur_extent(net, path)
    return path


def test_net_shapes_and_pooling():
    net = BlurExtentNet(width=2).eval()
    x = torch.rand(3, 1, 96, 64)
    pred, logit = net(x)
    assert pred.shape == logit.shape == (3, 1, 12, 8)
    pooled = net.pooled(x)
    assert pooled.shape == (3,)
    # the pooled value is a convex combination of the per-position estimates
    assert torch.all(pooled <= pred.flatten(1).max(1).values + 1e-6)
    assert torch.all(pooled >= pred.flatten(1).min(1).values - 1e-6)


def test_net_is_invariant_to_exposure_and_contrast():
    net = BlurExtentNet(width=4).eval()
    x = torch.rand(1, 1, 96, 96) * 0.5 + 0.25
    a = net.pooled(x)
    b = net.pooled((x - 0.5) * 0.9 + 0.55)  # other brightness and contrast
    assert torch.allclose(a, b, atol=0.05)


def test_textured_tiles_picks_the_textured_part():
    rng = np.random.default_rng(0)
    luma = np.full((200, 300), 0.5, np.float32)
    luma[:96, 200:296] = rng.random((96, 96))  # the only textured tile of a 2x3 grid (offset 2, 6)
    tiles = textured_tiles(luma, tiles=1)
    assert tiles.shape == (1, TILE, TILE)
    assert tiles[0].std() > 0.2
    assert textured_tiles(luma, tiles=10).shape == (6, TILE, TILE)  # 2 x 3 tiles in all


def test_textured_tiles_small_image_is_padded():
    tiles = textured_tiles(np.random.default_rng(0).random((30, 50)).astype(np.float32), tiles=4)
    assert tiles.shape == (1, TILE, TILE)


def test_gate_weight_and_apply():
    assert gate_weight(1.0, 4, 7) == 0.0
    assert gate_weight(4.0, 4, 7) == 0.0
    assert gate_weight(5.5, 4, 7) == pytest.approx(0.5)
    assert gate_weight(30, 4, 7) == 1.0
    assert gate_weight(5, 5, 5) == 1.0 and gate_weight(4.9, 5, 5) == 0.0
    with pytest.raises(ValueError):
        gate_weight(1, 7, 4)
    a, b = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    assert apply_gate(a, b, 0.0) is a
    assert apply_gate(a, b, 1.0) is b
    np.testing.assert_allclose(apply_gate(a, b, 0.25), 0.25)


@pytest.mark.parametrize(
    "text, expected",
    [("off", None), ("auto", DEFAULT_GATE), ("AUTO", DEFAULT_GATE), ("3,6", (3.0, 6.0)), (" 2.5 , 2.5 ", (2.5, 2.5))],
)
def test_parse_gate(text, expected):
    assert parse_gate(text) == expected


@pytest.mark.parametrize("text", ["on", "3", "6,3", "-1,2", "a,b", "nan,3", "1,2,3"])
def test_parse_gate_rejects(text):
    with pytest.raises(DeblurError, match="--gate"):
        parse_gate(text)


def test_save_load_roundtrip_and_refusals(small_meter_file, tmp_path, tiny_weights):
    net = load_blur_extent(small_meter_file)
    assert net.width == 2 and not net.training
    with pytest.raises(DeblurError, match="not blur-extent"):
        load_blur_extent(tiny_weights)  # a SAPHN file
    pickle = tmp_path / "x.safetensors"
    pickle.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DeblurError):
        load_blur_extent(pickle)


def test_meter_estimate_any_size(small_meter_file):
    meter = BlurMeter(small_meter_file, tiles=4)
    rng = np.random.default_rng(0)
    for shape in [(40, 50, 3), (300, 500, 3)]:
        est = meter.estimate(rng.random(shape).astype(np.float32))
        assert math.isfinite(est.extent) and est.extent >= 0
        assert 1 <= est.tiles <= 4


def test_bundled_weights_match_their_record():
    path = checked_bundled_path()
    record = json.loads(path.with_name("blur-extent.json").read_text())
    assert record["filename"] == path.name
    BlurMeter()  # loads


def test_bundled_weights_found_in_a_checkout_without_the_installed_package(monkeypatch):
    """CI installs the project non-editable, then runs pytest from the checkout: ``deblur_cli`` is
    imported from the working tree, where no ``deblur_cli.weights`` package exists."""
    import importlib.resources

    import deblur_cli.hub.registry as registry

    def no_package(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(registry, "files", no_package)
    monkeypatch.setattr(importlib.resources, "files", no_package)
    path = checked_bundled_path()
    assert path.parent == Path(registry.__file__).resolve().parents[2] / "weights"
    BlurMeter()  # loads from there


def test_bundled_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    import deblur_cli.gate.weights as be

    fake = tmp_path / be.BUNDLED_FILE
    fake.write_bytes(checked_bundled_path().read_bytes() + b" ")
    (tmp_path / be.BUNDLED_RECORD).write_text(checked_bundled_path().with_name(be.BUNDLED_RECORD).read_text())
    monkeypatch.setattr(be, "bundled_path", lambda: fake)
    with pytest.raises(DeblurError, match="sha256"):
        be.checked_bundled_path()


def _texture(seed: int = 0, size: int = 256) -> np.ndarray:
    """A sharp synthetic picture: overlapping anti-aliased discs (edges in every direction), 8-bit."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 0.5, np.float32)
    for _ in range(150):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in rng.random(3))
        cv2.circle(img, centre, int(rng.integers(3, 30)), colour, -1, lineType=cv2.LINE_AA)
    return np.round(img * 255) / 255


def test_bundled_meter_tells_sharp_from_blurred():
    """The shipped weights on pictures unlike any training photograph: sharp discs must read as
    below the gate's lower end, the same blurred by 15 px (linear) as above its upper end.
    (Axis-aligned rectangles did not work: a linear blur leaves the edges along it sharp, and
    the estimate read 15 px as 0.4-3 px. Photographs of such scenes are under-read too.)"""
    from deblur_cli.data.synthetic import BlurSettings, degrade, quantize

    meter = BlurMeter()
    for seed in (0, 1):
        sharp = _texture(seed)
        blurred = quantize(degrade(sharp, np.random.default_rng(seed), BlurSettings(), kind="linear", extent=15.0))
        e_sharp, e_blur = meter.estimate(sharp).extent, meter.estimate(blurred).extent
        assert e_sharp < DEFAULT_GATE[0] < DEFAULT_GATE[1] < e_blur, (seed, e_sharp, e_blur)


# ------------------------------------------------------------------------------ engine gate


def _mean_meter():
    # mean > 0.5: "blurred" (20 px); mean < 0.3: "sharp" (1 px); between: 5.5 px (half way of 4-7)
    return FixedMeter(lambda rgb: 20.0 if rgb.mean() > 0.5 else (1.0 if rgb.mean() < 0.3 else 5.5))


def test_gate_leaves_sharp_images_untouched_without_running_the_network(tiny_model):
    meter = _mean_meter()
    d = Deblurrer(tiny_model, device="cpu", tile=0, gate=(4.0, 7.0), blur_meter=meter)
    calls = []
    run = d.backend.run
    d.backend.run = lambda batch, **kw: calls.append(len(batch)) or run(batch, **kw)
    rng = np.random.default_rng(0)
    dark = (rng.random((40, 48, 3)) * 0.4).astype(np.float32)  # mean ~0.2: "sharp"
    out = d.deblur(dark)
    assert np.array_equal(out, dark) and out is not dark
    assert calls == []  # the network never ran
    assert d.last_decisions == [GateDecision(extent=1.0, weight=0.0)]
    u8 = (dark * 255).astype(np.uint8)
    assert np.array_equal(d.deblur(u8), u8)  # bit-exact for 8-bit images


def test_gate_deblurs_blurred_and_blends_between(tiny_model):
    plain = Deblurrer(tiny_model, device="cpu", tile=0)
    gated = Deblurrer(tiny_model, device="cpu", tile=0, gate=(4.0, 7.0), blur_meter=_mean_meter())
    rng = np.random.default_rng(0)
    bright = (0.6 + rng.random((40, 48, 3)) * 0.4).astype(np.float32)  # "20 px"
    np.testing.assert_allclose(gated.deblur(bright), plain.deblur(bright), atol=1e-6)
    assert gated.last_decisions[0].weight == 1.0
    mid = (0.3 + rng.random((40, 48, 3)) * 0.2).astype(np.float32)  # mean 0.4: "5.5 px", weight 0.5
    np.testing.assert_allclose(gated.deblur(mid), 0.5 * (mid + plain.deblur(mid)), atol=1e-5)
    assert gated.last_decisions[0].weight == pytest.approx(0.5)


def test_gate_in_batches_keeps_input_order(tiny_model):
    plain = Deblurrer(tiny_model, device="cpu", tile=0)
    gated = Deblurrer(tiny_model, device="cpu", tile=0, gate=(4.0, 7.0), blur_meter=_mean_meter())
    rng = np.random.default_rng(1)
    imgs = [(rng.random((32, 40, 3)) * 0.4).astype(np.float32), (0.6 + rng.random((32, 40, 3)) * 0.4).astype(np.float32),
            (rng.random((24, 40, 3)) * 0.4).astype(np.float32), (0.6 + rng.random((24, 40, 3)) * 0.4).astype(np.float32)]  # fmt: skip
    outs = gated.deblur_batch(imgs, batch_size=4)
    assert [d.weight for d in gated.last_decisions] == [0.0, 1.0, 0.0, 1.0]
    assert np.array_equal(outs[0], imgs[0]) and np.array_equal(outs[2], imgs[2])
    np.testing.assert_allclose(outs[1], plain.deblur(imgs[1]), atol=1e-6)
    np.testing.assert_allclose(outs[3], plain.deblur(imgs[3]), atol=1e-6)


def test_gate_results_reach_file_results(tiny_model, tmp_path):
    gated = Deblurrer(tiny_model, device="cpu", tile=0, gate=(4.0, 7.0), blur_meter=_mean_meter())
    rng = np.random.default_rng(2)
    jobs = []
    for name, lo in [("a.png", 0.0), ("b.png", 0.6)]:
        Image.fromarray((255 * (lo + rng.random((30, 30, 3)) * 0.4)).astype(np.uint8)).save(tmp_path / name)
        jobs.append((tmp_path / name, tmp_path / f"out_{name}"))
    res = {r.src.name: r for r in gated.deblur_files(jobs, batch_size=2)}
    assert res["a.png"].gate == 0.0 and res["a.png"].blur_px == 1.0
    assert res["b.png"].gate == 1.0 and res["b.png"].blur_px == 20.0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out_a.png")), np.asarray(Image.open(tmp_path / "a.png")))
    plain = list(Deblurrer(tiny_model, device="cpu", tile=0).deblur_files([(tmp_path / "a.png", tmp_path / "p.png")]))
    assert plain[0].gate is None and plain[0].blur_px is None


def test_bad_gate_is_refused(tiny_model):
    for gate in [(5.0, 2.0), (-1.0, 2.0), (0.0, math.inf), (math.nan, 3.0)]:
        with pytest.raises(DeblurError, match="gate"):
            Deblurrer(tiny_model, device="cpu", gate=gate)


class ShapeMeter(FixedMeter):
    """A :class:`FixedMeter` that also records the shape of every image it measured."""

    def __init__(self, extent):
        super().__init__(lambda rgb: extent)
        self.shapes = []

    def estimate(self, rgb):
        self.shapes.append(rgb.shape)
        return super().estimate(rgb)


def test_gate_measures_the_whole_image_when_tiled(tiny_model):
    """The decision comes from the whole picture, not from each tile."""
    meter = ShapeMeter(5.5)
    tiled = Deblurrer(tiny_model, device="cpu", tile=32, tile_overlap=4, gate=(4.0, 7.0), blur_meter=meter)
    img = np.random.default_rng(3).random((70, 90, 3)).astype(np.float32)
    out = tiled.deblur(img)
    assert meter.shapes == [(70, 90, 3)] and tiled.last_decisions[0].weight == pytest.approx(0.5)
    plain = Deblurrer(tiny_model, device="cpu", tile=32, tile_overlap=4).deblur(img)
    np.testing.assert_allclose(out, 0.5 * (img + plain), atol=1e-5)


def test_gate_blends_the_self_ensemble_mean(tiny_model):
    meter = ShapeMeter(5.5)
    img = np.random.default_rng(4).random((40, 48, 3)).astype(np.float32)
    gated = Deblurrer(tiny_model, device="cpu", tile=0, self_ensemble=4, gate=(4.0, 7.0), blur_meter=meter)
    plain = Deblurrer(tiny_model, device="cpu", tile=0, self_ensemble=4).deblur(img)
    np.testing.assert_allclose(gated.deblur(img), 0.5 * (img + plain), atol=1e-5)
    assert len(meter.shapes) == 1  # measured once, not once per flipped copy


@pytest.mark.slow
def test_gate_with_the_onnx_backend(tiny_weights, tmp_path, monkeypatch):
    """The gate sits in front of any backend: same decisions and blend with onnxruntime."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("DEBLUR_CACHE", str(tmp_path / "cache"))
    plain = Deblurrer(None, weights=str(tiny_weights), backend="onnx", device="cpu", tile=0)
    gated = Deblurrer(None, weights=str(tiny_weights), backend="onnx", device="cpu", tile=0,
                      gate=(4.0, 7.0), blur_meter=_mean_meter())  # fmt: skip
    rng = np.random.default_rng(6)
    dark = (rng.random((40, 48, 3)) * 0.4).astype(np.float32)  # "1 px": left as it was
    mid = (0.3 + rng.random((40, 48, 3)) * 0.2).astype(np.float32)  # "5.5 px": half blended
    outs = gated.deblur_batch([dark, mid], batch_size=2)
    assert [d.weight for d in gated.last_decisions] == [0.0, pytest.approx(0.5)]
    assert np.array_equal(outs[0], dark)
    np.testing.assert_allclose(outs[1], 0.5 * (mid + plain.deblur(mid)), atol=1e-5)


def test_gate_left_as_it_was_copies_the_input_file(tiny_model, tmp_path):
    """A JPEG left as it was is copied, not compressed a second time; in another format the
    pixel values are kept."""
    rng = np.random.default_rng(5)
    src = tmp_path / "a.jpg"
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(src, quality=80)
    gated = Deblurrer(tiny_model, device="cpu", tile=0, gate=(4.0, 7.0), blur_meter=ShapeMeter(1.0))
    gated.deblur_file(src, tmp_path / "b.jpg")
    assert (tmp_path / "b.jpg").read_bytes() == src.read_bytes()
    gated.deblur_file(src, tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.asarray(Image.open(src)))
    res = list(gated.deblur_files([(src, tmp_path / "c.jpg"), (src, tmp_path / "b.jpg")], batch_size=2))
    assert {r.dst.name: r.status for r in res} == {"c.jpg": "done", "b.jpg": "failed"}  # b.jpg exists: kept
    assert (tmp_path / "c.jpg").read_bytes() == src.read_bytes()
    blurred = Deblurrer(tiny_model, device="cpu", tile=0, gate=(4.0, 7.0), blur_meter=ShapeMeter(20.0))
    blurred.deblur_file(src, tmp_path / "d.jpg")
    assert (tmp_path / "d.jpg").read_bytes() != src.read_bytes()


@pytest.fixture
def damaged_meter(tmp_path, monkeypatch):
    """The bundled meter weights replaced by a truncated copy (its record unchanged)."""
    import deblur_cli.gate.weights as be

    good = checked_bundled_path()
    folder = tmp_path / "bundled"
    folder.mkdir()
    (folder / be.BUNDLED_FILE).write_bytes(good.read_bytes()[:1000])
    (folder / be.BUNDLED_RECORD).write_text(good.with_name(be.BUNDLED_RECORD).read_text())
    monkeypatch.setattr(be, "bundled_path", lambda: folder / be.BUNDLED_FILE)
    return folder


def test_damaged_meter_weights_are_one_error_before_any_file(damaged_meter, tiny_model):
    with pytest.raises(DeblurError, match="sha256"):
        Deblurrer(tiny_model, device="cpu", gate=DEFAULT_GATE)
    (damaged_meter / "blur-extent.json").write_text('{"sha256": 5}')
    with pytest.raises(DeblurError, match="record"):
        Deblurrer(tiny_model, device="cpu", gate=DEFAULT_GATE)
    (damaged_meter / "blur-extent.json").unlink()
    with pytest.raises(DeblurError, match="record"):
        Deblurrer(tiny_model, device="cpu", gate=DEFAULT_GATE)
    Deblurrer(tiny_model, device="cpu", gate=None)  # without the gate the meter is not needed


# ---------------------------------------------------------------------------- the commands


def _invoke(*args):
    from deblur_cli.cli.main import _register, app

    _register()
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def shoot(tmp_path) -> Path:
    """A folder with a sharp and a 15 px blurred version of the synthetic texture, and a bad file."""
    from deblur_cli.data.synthetic import BlurSettings, degrade, quantize

    folder = tmp_path / "shoot"
    folder.mkdir()
    sharp = _texture(0)
    blurred = quantize(degrade(sharp, np.random.default_rng(0), BlurSettings(), kind="linear", extent=15.0))
    Image.fromarray((sharp * 255).astype(np.uint8)).save(folder / "sharp.png")
    Image.fromarray((blurred * 255 + 0.5).astype(np.uint8)).save(folder / "blurred.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_estimate_command_lists_and_reports_bad_files(shoot, tmp_path):
    out = tmp_path / "blur.json"
    r = _invoke("estimate", shoot, "--sort", "--json", out)
    assert r.exit_code == 1  # the broken file
    assert "1 of 3 file(s) could not be read" in str(r.exception)
    data = json.loads(out.read_text())
    names = [Path(i["file"]).name for i in data["images"]]
    assert names == ["blurred.png", "sharp.png"]  # most blurred first
    by = {Path(i["file"]).name: i for i in data["images"]}
    assert by["sharp.png"]["action"] == "leave as is" and by["blurred.png"]["action"] == "deblur"
    assert data["failed"][0]["file"].endswith("broken.jpg")
    r2 = _invoke("estimate", shoot / "sharp.png", "--json", out)
    assert r2.exit_code != 0 and "already exists" in str(r2.exception)


def test_estimate_command_json_destinations(shoot, tmp_path):
    (shoot / "broken.jpg").unlink()
    nested = tmp_path / "new" / "dir" / "blur.json"
    r = _invoke("estimate", shoot, "--json", nested)
    assert r.exit_code == 0, r.output
    first = json.loads(nested.read_text())
    r = _invoke("estimate", shoot / "sharp.png", "--json", nested, "--overwrite", "--gate", "off")
    assert r.exit_code == 0, r.output
    again = json.loads(nested.read_text())
    assert len(first["images"]) == 2 and len(again["images"]) == 1 and again["gate_px"] is None
    assert again["images"][0]["action"] == "deblur"  # no gate: every image would be deblurred
    r = _invoke("estimate", shoot, "--json", tmp_path)
    assert r.exit_code != 0 and "is a directory" in str(r.exception)
    r = _invoke("estimate", shoot, "--gate", "3")
    assert r.exit_code != 0 and "--gate" in str(r.exception)


def test_folder_with_damaged_meter_is_one_error(shoot, tiny_weights, tmp_path, damaged_meter):
    r = _invoke("folder", shoot, "-o", tmp_path / "out", "--weights", tiny_weights)
    assert r.exit_code != 0 and "sha256" in str(r.exception)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    r = _invoke("folder", shoot, "-o", tmp_path / "out2", "--weights", tiny_weights, "--gate", "off")
    assert r.exit_code == 1 and (tmp_path / "out2" / "sharp.png").exists()  # broken.jpg fails, the rest runs


def test_estimate_command_missing_path():
    r = _invoke("estimate", "/nonexistent/x.png")
    assert r.exit_code != 0 and "no such file" in str(r.exception)


def test_image_command_reports_the_gate(shoot, tiny_weights, tmp_path):
    r = _invoke("image", shoot / "sharp.png", "-o", tmp_path / "s.png", "--weights", tiny_weights)
    assert r.exit_code == 0, r.output
    assert "left as it was" in r.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), np.asarray(Image.open(shoot / "sharp.png")))
    r = _invoke("image", shoot / "sharp.png", "-o", tmp_path / "s2.png", "--weights", tiny_weights, "--gate", "off")
    assert r.exit_code == 0 and "left as it was" not in r.output
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "s2.png")), np.asarray(Image.open(shoot / "sharp.png")))
    r = _invoke("image", shoot / "sharp.png", "-o", tmp_path / "s3.png", "--gate", "9,1")
    assert r.exit_code != 0 and "--gate" in str(r.exception)


def test_folder_command_counts_gated_images(shoot, tiny_weights, tmp_path):
    (shoot / "broken.jpg").unlink()
    r = _invoke("folder", shoot, "-o", tmp_path / "out", "--weights", tiny_weights)
    assert r.exit_code == 0, r.output
    assert "left as they were" in r.output
    assert (tmp_path / "out" / "sharp.png").exists() and (tmp_path / "out" / "blurred.png").exists()


# ------------------------------------------------------------------------------ regional gate


def test_pool_regions_keeps_regions_apart_and_fills_flat_ones():
    from deblur_cli.gate.regions import pool_regions

    est = np.zeros((6, 12), np.float32)
    est[:, 6:] = math.log1p(20.0)  # right half: 20 px
    texture = np.ones((6, 12), np.float32)
    pooled, g = pool_regions(est, texture, sigma_tiles=1.0)
    px = np.expm1(pooled)
    assert px[:, :3].max() < 2.0 and px[:, 9:].min() > 12.0  # far from the seam each side keeps its own
    assert g == pytest.approx(math.log1p(20.0) / 2, rel=1e-6)
    raw, _ = pool_regions(est, texture, sigma_tiles=0.0)
    np.testing.assert_array_equal(raw, est)
    texture[:, 6:] = 0.0  # the blurred half is flat: no evidence there, it leans on its neighbours / the whole
    pooled, g = pool_regions(est, texture, sigma_tiles=1.0)
    assert g == pytest.approx(0.0, abs=1e-9) and np.expm1(pooled).max() < 1e-6


def test_blur_map_weights_per_pixel():
    from deblur_cli.gate.regions import BlurMap

    log_e = np.log1p(np.array([[0.0, 0.0, 20.0, 20.0]], np.float32))
    bm = BlurMap(log_extent=log_e, size=(90, 4 * TILE - 10), extent=5.0)
    w = bm.weights(4.0, 6.0)
    assert w.shape == (90, 4 * TILE - 10) and w.dtype == np.float32
    assert w.min() == 0.0 and w.max() == 1.0
    assert (w[:, : TILE + TILE // 2] == 0).all() and (w[:, 2 * TILE + TILE // 2 :] == 1).all()
    mid = w[0, TILE + TILE // 2 : 2 * TILE + TILE // 2]
    assert (np.diff(mid) >= 0).all()  # a ramp between the tile centres
    np.testing.assert_array_equal(bm.weights(5.0, 5.0), w)  # tiles at 0 or 20 px: any gate between gives 0/1 per tile
    np.testing.assert_array_equal(bm.weights(30.0, 40.0), np.zeros_like(w))
    with pytest.raises(ValueError):
        bm.weights(6.0, 4.0)


def test_apply_gate_with_a_map():
    rng = np.random.default_rng(0)
    b, d = rng.random((3, 5, 7)).astype(np.float32), rng.random((3, 5, 7)).astype(np.float32)
    assert apply_gate(b, d, np.zeros((5, 7), np.float32)) is b
    assert apply_gate(b, d, np.ones((5, 7), np.float32)) is d
    w = np.zeros((5, 7), np.float32)
    w[:, 4:] = 1.0
    w[:, 3] = 0.25
    out = apply_gate(b, d, w)
    np.testing.assert_array_equal(out[:, :, :3], b[:, :, :3])
    np.testing.assert_array_equal(out[:, :, 4:], d[:, :, 4:])
    np.testing.assert_allclose(out[:, :, 3], b[:, :, 3] + 0.25 * (d[:, :, 3] - b[:, :, 3]), rtol=1e-6)
    with pytest.raises(ValueError, match="weight map"):
        apply_gate(b, d, np.ones((7, 5), np.float32))


def test_tile_readings_cover_any_size(small_meter_file):
    meter = BlurMeter(small_meter_file)
    for h, w in [(100, 250), (96, 96), (20, 300), (1, 1)]:
        est, texture = meter.tile_readings(np.random.default_rng(0).random((h, w, 3)).astype(np.float32))
        assert est.shape == texture.shape == (-(-h // TILE), -(-w // TILE))
        assert np.isfinite(est).all() and (texture >= 0).all()
        bm = meter.extent_map(np.zeros((h, w, 3), np.float32))  # flat: no texture anywhere
        assert bm.weights(4.0, 6.0).shape == (h, w) and np.isfinite(bm.log_extent).all()


def test_bundled_meter_maps_a_half_blurred_picture():
    """The regional estimate of a picture blurred on its right half only: the right reads above
    the gate, the left below it (the whole-picture estimate can only say one of the two)."""
    from deblur_cli.data.synthetic import BlurSettings, degrade, quantize

    sharp = np.concatenate([_texture(0, size=384), _texture(1, size=384)], axis=1)  # 384 x 768: 4 x 8 tiles
    blurred = quantize(degrade(sharp, np.random.default_rng(0), BlurSettings(), kind="linear", extent=15.0))
    half = sharp.copy()
    half[:, 384:] = blurred[:, 384:]
    meter = BlurMeter()
    raw = np.expm1(meter.tile_readings(half)[0])
    assert raw[:, :4].max() < DEFAULT_GATE[0] and raw[:, 4:].min() > DEFAULT_GATE[1], raw  # each tile on its own
    bm = meter.extent_map(half)  # pooled under the window: the step is smoothed, the sides stay apart
    px = bm.extent_px()
    assert px.shape == (4, 8)
    assert px[:, :2].max() < DEFAULT_GATE[0] and px[:, -2:].min() > DEFAULT_GATE[1], px
    w = bm.weights(*DEFAULT_GATE)
    assert w[:, :96].max() == 0.0 and w[:, -96:].min() == 1.0


class MapMeter(FixedMeter):
    """A stand-in meter whose regional map says: left half sharp (0 px), right half 20 px."""

    def __init__(self):
        super().__init__(lambda rgb: 1.0)
        self.maps = 0

    def extent_map(self, rgb):
        from deblur_cli.gate.regions import BlurMap

        self.maps += 1
        ny, nx = -(-rgb.shape[0] // TILE), -(-rgb.shape[1] // TILE)
        log_e = np.zeros((ny, nx), np.float32)
        log_e[:, nx // 2 :] = math.log1p(20.0)
        return BlurMap(log_extent=log_e, size=rgb.shape[:2], extent=3.0)


def test_regional_gate_in_the_engine(tiny_model):
    meter = MapMeter()
    gated = Deblurrer(tiny_model, device="cpu", tile=0, gate=(4.0, 6.0), gate_scope="region", blur_meter=meter)
    assert "by region" in gated.device_description
    plain = Deblurrer(tiny_model, device="cpu", tile=0)
    img = np.random.default_rng(5).random((100, 4 * TILE, 3)).astype(np.float32)
    out, ref = gated.deblur(img), plain.deblur(img)
    assert meter.maps == 1 and meter.calls == 1  # the map gates; the whole-image estimate is what is reported
    d = gated.last_decisions[0]
    w = d.pixel_weights()
    assert w is not None and w.shape == (100, 4 * TILE)
    assert d.extent == 1.0 and d.extent_range == (0.0, pytest.approx(20.0))
    assert 0.0 < d.weight < 1.0 and d.weight == pytest.approx(float(w.mean()))
    np.testing.assert_array_equal(out[:, : TILE + TILE // 2], img[:, : TILE + TILE // 2])  # sharp side untouched
    np.testing.assert_allclose(out[:, -TILE:], ref[:, -TILE:], atol=1e-6)  # blurred side deblurred
    with pytest.raises(DeblurError, match="gate-scope"):
        Deblurrer(tiny_model, device="cpu", gate=(4.0, 6.0), gate_scope="tile")
    with pytest.raises(DeblurError, match="needs a blur gate"):
        Deblurrer(tiny_model, device="cpu", gate=None, gate_scope="region")


def test_regional_gate_with_tiles_batches_and_alpha(tiny_model):
    """The map is of the whole image (not of each tile), images of a batch keep their own maps,
    and an alpha channel passes through untouched."""
    meter = MapMeter()
    kw = {"device": "cpu", "tile": 64, "tile_overlap": 8}
    gated = Deblurrer(tiny_model, gate=(4.0, 6.0), gate_scope="region", blur_meter=meter, **kw)
    plain = Deblurrer(tiny_model, **kw)
    rng = np.random.default_rng(6)
    a = rng.random((90, 4 * TILE, 3)).astype(np.float32)
    b = rng.random((90, 2 * TILE, 4)).astype(np.float32)  # RGBA
    outs = gated.deblur_batch([a, b], batch_size=2)
    assert meter.maps == 2
    for img, out in zip((a, b), outs):
        ref = plain.deblur(img)
        half = img.shape[1] // 2
        np.testing.assert_array_equal(out[:, : half - TILE // 2, :3], img[:, : half - TILE // 2, :3])
        np.testing.assert_allclose(out[:, -TILE // 2 :, :3], ref[:, -TILE // 2 :, :3], atol=1e-6)
    np.testing.assert_array_equal(outs[1][..., 3], b[..., 3])


def test_apply_gate_in_place():
    rng = np.random.default_rng(7)
    b, d = rng.random((3, 4, 6)).astype(np.float32), rng.random((3, 4, 6)).astype(np.float32)
    w = np.tile(np.linspace(0, 1, 6, dtype=np.float32), (4, 1))
    expected = apply_gate(b, d, w)
    assert expected is not d
    d2 = d.copy()
    got = apply_gate(b, d2, w, inplace=True)
    assert got is d2
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[..., 0], b[..., 0])
    np.testing.assert_array_equal(got[..., -1], d[..., -1])


def test_apply_gate_aliasing_and_dtypes():
    rng = np.random.default_rng(8)
    b = rng.random((3, 4, 6)).astype(np.float32)
    w = np.full((4, 6), 0.5, np.float32)
    np.testing.assert_allclose(apply_gate(b, b, w, inplace=True), b, rtol=1e-6)  # same array: still b
    with pytest.raises(ValueError, match="float"):
        apply_gate((b * 255).astype(np.uint8), (b * 255).astype(np.uint8), w)
    with pytest.raises(ValueError, match="differ"):
        apply_gate(b, b[:2], w)


def test_tile_readings_texture_is_the_whole_image_laplacian(small_meter_file):
    """Read a row of tiles at a time, the texture is still that of the whole (padded) image."""
    import cv2

    from deblur_cli.gate.meter import to_luma

    rgb = np.random.default_rng(9).random((300, 250, 3)).astype(np.float32)
    _, texture = BlurMeter(small_meter_file).tile_readings(rgb)
    padded = np.pad(to_luma(rgb), ((0, 4 * TILE - 300), (0, 3 * TILE - 250)), mode="symmetric")
    lap = np.abs(cv2.Laplacian(padded, cv2.CV_32F)).reshape(4, TILE, 3, TILE).mean(axis=(1, 3))
    np.testing.assert_allclose(texture, lap, rtol=1e-5)
    wide = BlurMeter(small_meter_file).tile_readings(np.random.default_rng(9).random((96, 70 * TILE, 3)).astype(np.float32))
    assert wide[0].shape == (1, 70) and np.isfinite(wide[0]).all()  # more tiles in a row than one pass takes


def test_tile_shares():
    from deblur_cli.gate.regions import tile_shares

    s = tile_shares(100, 2 * TILE + 24)
    assert s.shape == (2, 3)
    np.testing.assert_allclose(s[0], [1.0, 1.0, 0.25])
    np.testing.assert_allclose(s[1], np.array([1.0, 1.0, 0.25]) * 4 / TILE)


def test_pool_regions_mostly_flat_photograph():
    """When most tiles are flat, faint noise in one does not weigh as much as real texture."""
    from deblur_cli.gate.regions import pool_regions

    est = np.zeros((4, 4), np.float32)
    texture = np.zeros((4, 4), np.float32)
    texture[0, 0], est[0, 0] = 1.0, math.log1p(10.0)  # real texture, 10 px
    texture[3, 3], est[3, 3] = 1e-3, 0.0  # faint noise, 0 px
    _, g = pool_regions(est, texture, 1.0)
    assert np.expm1(g) > 8.0


def test_image_command_regional_gate(shoot, tiny_weights, tmp_path):
    r = _invoke("image", shoot / "blurred.png", "-o", tmp_path / "b.png", "--weights", tiny_weights, "--gate-scope", "region")
    assert r.exit_code == 0, r.output
    assert "px by region" in r.output
    r = _invoke("image", shoot / "blurred.png", "-o", tmp_path / "c.png", "--gate-scope", "everywhere")
    assert r.exit_code != 0 and not (tmp_path / "c.png").exists()


def test_half_blurred_set(tmp_path):
    from deblur_cli.data.datasets import make_half_blurred_set, read_rgb

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray((_texture(1, size=128) * 255).astype(np.uint8)).save(photos / "discs.png")
    pairs = make_half_blurred_set(photos, tmp_path / "half", max_side=128)
    assert sorted(p.name for p in pairs) == ["discs_halflinear.png", "discs_halfshake.png"]
    for p in pairs:
        b, s = read_rgb(p.blur), read_rgb(p.sharp)
        assert np.abs(b[:, :40] - s[:, :40]).max() <= 1 / 255 + 1e-6  # left: sharp
        assert np.abs(b[:, -40:] - s[:, -40:]).mean() > 0.02  # right: blurred


def test_estimate_command_by_region_with_maps(shoot, tmp_path):
    (shoot / "broken.jpg").unlink()
    out, maps = tmp_path / "blur.json", tmp_path / "maps"
    r = _invoke("estimate", shoot, "--gate-scope", "region", "--maps", maps, "--json", out)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    by = {Path(i["file"]).name: i for i in data["images"]}
    lo, hi = by["blurred.png"]["blur_range_px"]
    assert DEFAULT_GATE[1] < lo <= hi and by["blurred.png"]["action"] == "deblur"
    assert by["sharp.png"]["action"] == "leave as is"
    panel = np.asarray(Image.open(maps / "blurred.blur.png"))
    assert panel.shape[0] == 256 and panel.shape[1] > 256  # the picture and its colour bar
    r = _invoke("estimate", shoot, "--maps", maps)
    assert r.exit_code != 0 and "already exist" in str(r.exception)
    r = _invoke("estimate", shoot, "--maps", maps, "--overwrite", "--json", tmp_path / "image.json")
    assert r.exit_code == 0, r.output
    r = _invoke("estimate", shoot, "--json", tmp_path / "plain.json")
    assert r.exit_code == 0, r.output
    with_maps, plain = (json.loads((tmp_path / n).read_text())["images"] for n in ("image.json", "plain.json"))
    for a, b in zip(with_maps, plain, strict=True):  # --maps draws, it does not change the figures
        assert (a["file"], a["blur_px"], a["action"]) == (b["file"], b["blur_px"], b["action"])
    r = _invoke("estimate", shoot, "--gate", "off", "--gate-scope", "region")
    assert r.exit_code != 0 and "needs a blur gate" in str(r.exception)
    (shoot / "sub").mkdir()
    Image.open(shoot / "sharp.png").save(shoot / "sub" / "sharp.png")
    r = _invoke("estimate", shoot, "-r", "--maps", tmp_path / "maps2")
    assert r.exit_code != 0 and "would both write" in str(r.exception) and not (tmp_path / "maps2").exists()
    r = _invoke("estimate", shoot / "sharp.png", shoot / "sharp.png", "--maps", tmp_path / "maps3", "--json", tmp_path / "twice.json")
    assert r.exit_code == 0, r.output  # the same file twice is read once
    assert len(json.loads((tmp_path / "twice.json").read_text())["images"]) == 1
    (tmp_path / "afile").write_text("x")
    r = _invoke("estimate", shoot / "sharp.png", "--maps", tmp_path / "afile")
    assert r.exit_code != 0 and "not a folder" in str(r.exception)


def test_blur_map_panel_draws_the_gate_lines():
    from deblur_cli.viz.drawing import blur_map_panel

    img = np.full((120, 200, 3), 0.5, np.float32)
    px = np.tile(np.linspace(0.0, 19.9, 200, dtype=np.float32), (120, 1))  # 4 px at column 40, 6 px at 60
    weights = np.clip((px - 4.0) / 2.0, 0.0, 1.0)
    panel = blur_map_panel(img, px, weights)
    assert panel.shape[0] == 120 and panel.shape[1] > 200
    inner = panel[5:-5, :200]
    white, black = (inner == 255).all(axis=2), (inner == 0).all(axis=2)
    assert white[:, 36:45].any(axis=1).all() and black[:, 56:65].any(axis=1).all()  # the two gate lines
    assert not white[:, 45:].any() and not black[:, 65:].any()  # and no line along the image's own edges
    plain = blur_map_panel(img, px)
    assert not (plain[5:-5, 5:195] == 255).all(axis=2).any()
    with pytest.raises(ValueError, match="does not match"):
        blur_map_panel(img, px[:, :10])
    # a large picture draws thick lines: still none along its edges
    big = np.full((900, 2400, 3), 0.5, np.float32)
    wb = np.zeros((900, 2400), np.float32)
    wb[:, 1200:] = 1.0
    panel = blur_map_panel(big, wb * 15.0, wb)[:, :2400]
    lines = (panel == 255).all(axis=2) | (panel == 0).all(axis=2)
    assert lines[:, 1150:1250].any() and not lines[:, :1100].any() and not lines[:, 1300:].any()
