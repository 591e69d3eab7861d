"""``deblur_cli.eval.psf`` and ``deblur analyze psf``: axial statistics, the direction estimator,
the blur, the experiment on the tiny config, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from deblur_cli.eval import psf as an
from deblur_cli.errors import DeblurError
from deblur_cli.viz.geometry import tap_grid


def stretched_offsets(angle_deg: float, stretch: float, k: int = 5, hw: tuple[int, int] = (4, 6)) -> np.ndarray:
    """Offsets stretching the K x K grid by ``stretch`` along ``angle_deg`` (counter-clockwise
    from +x, image y down), ``(2*K*K, h, w)``; the same helper as in ``test_viz.py``."""
    by, bx = tap_grid(k)
    a = math.radians(angle_deg)
    ux, uy = math.cos(a), -math.sin(a)
    proj = bx * ux + by * uy
    off = np.stack([proj * (stretch - 1) * uy, proj * (stretch - 1) * ux], axis=1).reshape(2 * k * k, 1, 1)
    return np.broadcast_to(off.astype(np.float32), (2 * k * k, *hw)).copy()


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A textured uint8 RGB image."""
    rng = np.random.default_rng(seed)
    img = np.kron(rng.random((h // 2 + 1, w // 2 + 1, 3)), np.ones((2, 2, 1)))[:h, :w]
    img[:, w // 3 : w // 3 + 3] = 1.0
    return (img * 255).astype(np.uint8)

# ---------------------------------------------------------------------------------- statistics


def test_axial_mean_wraps_at_180():
    assert an.axial_mean([10.0, 190.0]).mean == pytest.approx(10.0)
    m = an.axial_mean([170.0, 10.0]).mean
    assert min(m, 180.0 - m) == pytest.approx(0.0, abs=1e-9)
    st = an.axial_mean([20.0, 40.0], [3.0, 1.0])
    assert 20.0 < st.mean < 30.0 and st.spread > 0 and 0 < st.resultant < 1
    same = an.axial_mean([33.0, 33.0, 213.0])
    assert same.mean == pytest.approx(33.0) and same.spread == pytest.approx(0.0, abs=1e-6)


def test_axial_mean_undefined():
    assert math.isnan(an.axial_mean([0.0, 90.0]).mean)  # opposite axes cancel
    assert math.isnan(an.axial_mean([10.0], [0.0]).mean)
    assert math.isnan(an.axial_mean([]).mean)


def test_axial_difference():
    assert an.axial_difference(170.0, 10.0) == pytest.approx(-20.0)
    assert an.axial_difference(11.0, 0.0) == pytest.approx(11.0)


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 90.0, 135.0, 179.0])
def test_dominant_direction_of_stretched_field(angle):
    st = an.dominant_direction([stretched_offsets(angle, 1.7), stretched_offsets(angle, 1.3, k=3)])
    assert abs(an.axial_difference(st.mean, angle)) < 1.0
    assert st.resultant > 0.99


def test_dominant_direction_weights_by_elongation():
    strong = stretched_offsets(30.0, 2.0, hw=(4, 4))
    weak = stretched_offsets(100.0, 1.1, hw=(4, 4))
    st = an.dominant_direction([np.concatenate([strong, weak], axis=2)])
    assert abs(an.axial_difference(st.mean, 30.0)) < 5.0
    assert math.isnan(an.dominant_direction([np.zeros((18, 3, 3), np.float32)]).mean)


# -------------------------------------------------------------------------------------- blur


def test_blur_follows_the_psf_angle():
    stripes = np.zeros((32, 32, 3), np.float32)
    stripes[::4] = 1.0  # horizontal lines
    horizontal = an.blur_linear(stripes, 7, 0.0)
    vertical = an.blur_linear(stripes, 7, 90.0)
    assert horizontal.shape == stripes.shape and horizontal.dtype == np.float32
    np.testing.assert_allclose(horizontal[4:-4, 4:-4], stripes[4:-4, 4:-4], atol=1e-6)  # blur along the lines
    assert np.abs(vertical - stripes).max() > 0.2


def test_parse_angles_and_modules():
    assert an.parse_angles("0, 45,90") == [0.0, 45.0, 90.0]
    with pytest.raises(DeblurError):
        an.parse_angles("a,b")
    assert an.parse_modules("level1.decoder") == ["level1.decoder."]
    assert an.parse_modules("all") == ["level1.", "level2.", "level3."]
    assert an.parse_modules("level2.encoder.block1,level3", blocks=1) == ["level2.encoder.block1.", "level3."]
    for bad in ("level4", "decoder", "level1.decoder.block3"):
        with pytest.raises(DeblurError, match="--modules"):
            an.parse_modules(bad, blocks=2)


# -------------------------------------------------------------------------------- experiment


def small_images(n: int = 2) -> list[tuple[str, np.ndarray]]:
    return [(f"img{i}", textured(48, 48, seed=i).astype(np.float32) / 255.0) for i in range(n)]


def test_psf_analysis_on_tiny_model(tiny_model):
    report = an.run_psf_analysis(tiny_model, small_images(), length=5, model_name="tiny")
    assert [a.angle for a in report.angles] == [0.0, 45.0, 90.0, 135.0]
    assert [a.paper for a in report.angles] == [11.0, 50.0, 81.0, 126.0]
    for a in report.angles:
        assert len(a.images) == 2 and math.isfinite(a.mean) and 0.0 <= a.mean < 180.0
        assert a.elongation_px > 0
    data = json.loads(json.dumps(report.to_dict()))
    assert data["modules"] == ["level1.decoder"] and data["images"] == ["img0", "img1"]
    plot = an.polar_plot(report)
    assert plot.dtype == np.uint8 and plot.ndim == 3 and len(np.unique(plot.reshape(-1, 3), axis=0)) > 5


def test_psf_analysis_other_modules_and_angles(tiny_model):
    calls = []
    report = an.run_psf_analysis(
        tiny_model, small_images(1), angles=[10.0], length=3, modules="all", progress=lambda d, t: calls.append((d, t))
    )
    assert report.angles[0].paper is None and calls == [(1, 1)]
    assert len(report.modules) == 3


def test_psf_analysis_needs_offsets():
    from deblur_cli.models import create_model

    with pytest.raises(DeblurError, match="no learnable offsets"):
        an.run_psf_analysis(create_model("saphn-tiny", adaptive_offset=False).eval(), small_images(1), length=5)


def test_untrained_offsets_give_an_undefined_direction():
    from deblur_cli.models import create_model

    report = an.run_psf_analysis(create_model("saphn-tiny").eval(), small_images(1), angles=[0.0], length=5)
    assert math.isnan(report.angles[0].mean)
    assert report.to_dict()["angles"][0]["mean"] is None
    an.polar_plot(report)  # still draws


def test_default_images_need_scikit_image(monkeypatch):
    import deblur_cli.data.photos as photos

    def missing():
        raise ModuleNotFoundError("No module named 'skimage'", name="skimage")

    monkeypatch.setattr(photos, "skimage_data_dir", missing)
    with pytest.raises(DeblurError, match="scikit-image"):
        an.image_files(None)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DeblurError, match="no such folder"):
        an.image_files(tmp_path / "nope")
    with pytest.raises(DeblurError, match="no images"):
        an.image_files(tmp_path)


def test_load_sharp_shrinks(tmp_path):
    Image.fromarray(np.zeros((40, 100), np.uint8)).save(tmp_path / "g.png")
    img = an.load_sharp(tmp_path / "g.png", max_side=50)
    assert img.shape == (20, 50, 3) and img.dtype == np.float32


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def setup(tiny_model, tmp_path):
    from deblur_cli.hub.loading import save_weights

    weights = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, weights, arch="saphn-tiny")
    images = tmp_path / "sharp"
    images.mkdir()
    for i in range(2):
        Image.fromarray(textured(48, 48, seed=i)).save(images / f"s{i}.png")
    return weights, images, tmp_path / "out"


def test_cli_psf_table_json_and_plot(cli, setup):
    weights, images, out = setup
    common = ["analyze", "psf", "--images", images, "--length", "5", "--weights", weights, "--out", out]
    res = cli(*common)
    assert res.exit_code == 0, res.output
    assert "paper" in res.stdout and "126.0°" in res.stdout and "PSF angle" in res.stdout
    with Image.open(out / "psf_polar.png") as im:
        im.load()
    assert json.loads((out / "psf_results.json").read_text())["length"] == 5.0
    res = cli(*common)  # results exist
    assert isinstance(res.exception, DeblurError) and "--overwrite" in str(res.exception)
    res = cli(*common, "--json", "--overwrite", "--angles", "0,90", "--max-images", "1", "--modules", "level1")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [a["angle"] for a in data["angles"]] == [0.0, 90.0] and data["images"] == ["s0"]
    assert data["modules"] == ["level1"] and data["angles"][1]["paper"] == 81.0


@pytest.mark.parametrize(
    "args,match",
    [(["--angles", "x"], "--angles"), (["--modules", "level9"], "--modules"), (["--length", "1"], "--length")],
)
def test_cli_psf_bad_arguments(cli, setup, args, match):
    weights, images, out = setup
    res = cli("analyze", "psf", "--images", images, "--weights", weights, "--out", out, *args)
    assert isinstance(res.exception, DeblurError) and match in str(res.exception)


def test_cli_psf_missing_folder(cli, tmp_path):
    res = cli("analyze", "psf", "--images", tmp_path / "none", "--out", tmp_path / "o")
    assert isinstance(res.exception, DeblurError) and "no such folder" in str(res.exception)
