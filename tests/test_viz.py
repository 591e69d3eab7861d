"""``deblur_cli.viz`` and ``deblur viz``: measures on synthetic offset fields, recording, rendering, files, CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deblur_cli.errors import DeblurError
from deblur_cli.viz import drawing, geometry, pipeline, recording, rendering
from deblur_cli.viz.recording import MapRecorder, MapSelection


def stretched_offsets(angle_deg: float, stretch: float, k: int = 5, hw: tuple[int, int] = (4, 6)) -> np.ndarray:
    """``(2*K*K, h, w)`` offsets that stretch the K x K grid by ``stretch`` along ``angle_deg``
    (counter-clockwise from +x, image y down): tap displacement along the unit vector
    ``u = (cos a, -sin a)`` in image (x, y)."""
    by, bx = geometry.tap_grid(k)
    a = math.radians(angle_deg)
    ux, uy = math.cos(a), -math.sin(a)
    proj = bx * ux + by * uy
    dx, dy = proj * (stretch - 1) * ux, proj * (stretch - 1) * uy
    off = np.stack([dy, dx], axis=1).reshape(2 * k * k, 1, 1).astype(np.float32)
    return np.broadcast_to(off, (2 * k * k, *hw)).copy()


def textured(h: int = 38, w: int = 50, seed: int = 0) -> np.ndarray:
    """A textured uint8 RGB image (smooth noise plus edges)."""
    rng = np.random.default_rng(seed)
    img = rng.random((h // 2 + 1, w // 2 + 1, 3))
    img = np.kron(img, np.ones((2, 2, 1)))[:h, :w]
    img[:, w // 3 : w // 3 + 3] = 1.0
    return (img * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------- measures


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 90.0, 120.0, 165.0])
def test_direction_of_stretched_taps(angle):
    ang, elong = geometry.offset_directions(stretched_offsets(angle, 1.8))
    err = (ang - angle + 90.0) % 180.0 - 90.0
    assert np.abs(err).max() < 1.0
    assert (elong > 0.5).all()


def test_direction_is_axial():
    a1, e1 = geometry.offset_directions(stretched_offsets(30.0, 1.6))
    a2, e2 = geometry.offset_directions(stretched_offsets(210.0, 1.6))
    np.testing.assert_allclose(a1, a2, atol=1e-3)
    np.testing.assert_allclose(e1, e2, atol=1e-5)


def test_image_y_points_down():
    # Taps pushed along the image displacement (dx, dy) = (1, -1), i.e. up and to the right on
    # screen, point at 45 degrees; (1, 1), down-right, at 135 degrees.
    k = 3
    by, bx = geometry.tap_grid(k)
    for (ux, uy), expected in (((1, -1), 45.0), ((1, 1), 135.0)):
        proj = (bx * ux + by * uy) / 2
        off = np.stack([proj * uy, proj * ux], axis=1).reshape(2 * k * k, 1, 1)
        ang, _ = geometry.offset_directions(off)
        assert abs(float(ang[0, 0]) - expected) < 1e-3


def test_regular_grid_is_isotropic():
    ang, elong = geometry.offset_directions(np.zeros((50, 3, 3), np.float32))
    assert np.allclose(elong, 0.0, atol=1e-6)
    assert np.allclose(geometry.horizontal_spread(np.zeros((18, 2, 2), np.float32)), 0.0, atol=1e-6)


def test_horizontal_spread_and_shift():
    assert (geometry.horizontal_spread(stretched_offsets(0.0, 1.5)) > 0.5).all()
    assert np.allclose(geometry.horizontal_spread(stretched_offsets(90.0, 1.5)), 0.0, atol=1e-5)
    shifted = np.zeros((18, 2, 2), np.float32)
    shifted[1::2] = 0.75  # every tap's dx
    np.testing.assert_allclose(geometry.horizontal_shift(shifted), 0.75)
    np.testing.assert_allclose(geometry.horizontal_spread(shifted), 0.0, atol=1e-6)


def test_kernel_variance_and_upsample():
    v = np.ones((9, 3, 4), np.float32)
    v[0] = 2.0
    np.testing.assert_allclose(geometry.kernel_variance(v), np.var([2.0] + [1.0] * 8), rtol=1e-5)
    assert geometry.upsample(np.zeros((3, 4), np.float32), 10, 13).shape == (10, 13)
    assert geometry.upsample(np.zeros((3, 4, 3), np.float32), 12, 16).shape == (12, 16, 3)


def test_axial_wheel_colours():
    c = drawing.axial_wheel(np.array([[0.0, 179.6, 90.0, 45.0]]), np.array([[1.0, 1.0, 1.0, 0.0]]), 1.0)
    assert (c[0, 0] == c[0, 1]).all()  # 0 == 180 degrees
    assert not (c[0, 0] == c[0, 2]).all()
    assert (c[0, 3] == 255).all()  # no elongation: white
    legend = drawing.wheel_legend(100, 2.0)
    assert legend.shape[1] == drawing.LEGEND_WIDTH and legend.ndim == 3


# --------------------------------------------------------------------------------- selection


def test_selection_from_flags():
    default = MapSelection.from_flags()
    assert default.fusion and default.attention and default.offsets and default.kernels and default.q_maps == 1
    only = MapSelection.from_flags(offsets=True)
    assert only.offsets and not (only.fusion or only.attention or only.kernels)
    every = MapSelection.from_flags(all_maps=True, level=2, block=1, decoder=False)
    assert every.q_maps is None and every.extra and every.prefix(3) == "level2.encoder.block1."
    assert MapSelection().prefix(2) == "level1.decoder.block2."


@pytest.mark.parametrize("level,block", [(0, None), (4, None), (1, 0), (1, 3)])
def test_bad_level_or_block(level, block):
    with pytest.raises(DeblurError, match="--level|--block"):
        recording.check_selection(MapSelection(level=level, block=block), blocks=2)


def test_recorder_keeps_only_the_chosen_block(tiny_model):
    import torch

    rec = recording.map_recorder(MapSelection(), blocks=1)
    with rec.attach(tiny_model):
        tiny_model(torch.rand(1, 3, 24, 20))
    assert rec and all(k.startswith("level1.decoder.block1.") for k in rec)
    assert all(isinstance(v, np.ndarray) and v.shape[-2:] == (6, 5) for v in rec.values())
    names = ("fusion", "sa.m1", "sa.q", "ca.m1", "ca.q", "pdf.kernels", "pdf.offsets")
    assert set(rec) == {f"level1.decoder.block1.{n}" for n in names}


def test_recorder_needs_a_saphn():
    import torch

    with pytest.raises(TypeError, match="no internal maps"), MapRecorder().attach(torch.nn.Conv2d(3, 3, 1)):
        pass


def test_package_exports_the_pipeline():
    from deblur_cli.viz import MapSelection as exported
    from deblur_cli.viz import visualize, write_maps

    assert exported is MapSelection and visualize is pipeline.visualize and write_maps is rendering.write_maps


# --------------------------------------------------------------------------------- rendering


def test_every_map_written_at_input_size(tiny_model, tmp_path):
    img = textured()  # 38 x 50: not a multiple of 4 or 8
    out, rendered = pipeline.visualize(tiny_model, img, MapSelection(), caption="test")
    assert out.shape == img.shape and out.dtype == np.uint8
    names = rendered.names
    assert names == ["fusion", "sa_m1", rendered.names[2], "offsets", "offsets_hspread", "kernel_var"]
    assert rendered.names[2].startswith("sa_q")
    paths = rendering.write_maps(rendered, tmp_path, "tex", raw=True)
    assert all(p.is_file() for p in paths)
    for name in names:
        for suffix in ("", ".overlay"):
            with Image.open(tmp_path / f"tex.{name}{suffix}.png") as im:
                assert im.size == (50, 38) and im.mode == "RGB"
                a = np.asarray(im)
            assert len(np.unique(a.reshape(-1, 3), axis=0)) > 1, f"{name}{suffix} is constant"
        assert (tmp_path / f"tex.{name}.legend.png").is_file()
        raw = np.load(tmp_path / f"tex.{name}.npy")
        assert raw.shape[:2] == (38, 50) and raw.dtype == np.float32 and np.ptp(raw) > 0
    assert np.load(tmp_path / "tex.offsets.npy").shape == (38, 50, 2)
    with Image.open(tmp_path / "tex.sheet.png") as sheet:
        sheet.load()
        assert sheet.width > 2 * drawing.SHEET_PANEL  # input, output and maps side by side


def test_all_maps_and_other_blocks(tiny_model):
    img = textured(32, 40)
    _, every = pipeline.visualize(tiny_model, img, MapSelection.from_flags(all_maps=True))
    c2 = tiny_model.config.attn_maps
    for prefix in ("sa", "ca", "cla"):
        assert f"{prefix}_m1" in every.names
        assert sum(n.startswith(f"{prefix}_q") for n in every.names) == c2
    assert "offsets_hshift" in every.names and not every.notes
    _, enc = pipeline.visualize(tiny_model, img, MapSelection(level=3, decoder=False))
    assert enc.block == "level3.encoder.block1." and "fusion" in enc.names


def test_model_without_offsets_is_skipped_with_a_note():

    from deblur_cli.models import create_model, randomize_zero_layers

    model = randomize_zero_layers(create_model("saphn-tiny", adaptive_offset=False))  # like saphn-a
    _, r = pipeline.visualize(model, textured(24, 24), MapSelection.from_flags(offsets=True, kernels=True))
    assert r.names == ["kernel_var"]
    assert any("offsets" in n and "saphn-a" in n for n in r.notes)


def test_render_maps_rejects_missing_block(tiny_model):
    import torch

    maps = MapRecorder()
    with maps.attach(tiny_model):
        tiny_model(torch.rand(1, 3, 16, 16))
    with pytest.raises(DeblurError, match="--block"):
        rendering.render_maps(maps, np.zeros((16, 16, 3), np.uint8), selection=MapSelection(block=2))
    r = rendering.render_maps(maps, np.zeros((16, 16, 3), np.uint8), selection=MapSelection(kernels=False))
    assert "kernel_var" not in r.names and "sheet" in r.images


def test_write_maps_refuses_to_overwrite(tiny_model, tmp_path):
    _, r = pipeline.visualize(tiny_model, textured(16, 16), MapSelection.from_flags(fusion=True))
    rendering.write_maps(r, tmp_path, "x")
    with pytest.raises(DeblurError, match="already exists"):
        rendering.write_maps(r, tmp_path, "x")
    assert rendering.write_maps(r, tmp_path, "x", overwrite=True)


def test_fit_for_viz_shrinks_and_checks_memory(tiny_model, monkeypatch):
    img = np.zeros((100, 60, 3), np.uint16)
    assert pipeline.fit_for_viz(img, tiny_model.config, max_side=50).shape == (50, 30, 3)
    monkeypatch.setattr(pipeline, "available_memory", lambda device=None: 1000)
    with pytest.raises(DeblurError, match="--max-side"):
        pipeline.fit_for_viz(img, tiny_model.config)


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(textured(30, 42)).save(path)
    return path


def test_cli_viz_writes_maps(cli, tiny_weights, image_file, tmp_path):
    out = tmp_path / "maps"
    res = cli("viz", image_file, "-o", out, "--weights", tiny_weights, "--device", "cpu", "--raw")
    assert res.exit_code == 0, res.output
    assert "contact sheet" in res.stdout
    with Image.open(out / "photo.sheet.png") as im:
        im.load()
    for name in ("fusion", "sa_m1", "offsets", "offsets_hspread", "kernel_var"):
        with Image.open(out / f"photo.{name}.png") as im:
            assert im.size == (42, 30)
        assert (out / f"photo.{name}.npy").is_file()
    # Existing files: an error, then --overwrite; a flag selects a subset, --encoder another block.
    res = cli("viz", image_file, "-o", out, "--weights", tiny_weights)
    assert isinstance(res.exception, DeblurError)
    res = cli("viz", image_file, "-o", out, "--weights", tiny_weights, "--kernels", "--encoder", "--level", 2, "--overwrite")
    assert res.exit_code == 0, res.output
    assert "level 2, encoder block 1" in res.stdout


@pytest.mark.parametrize("args,match", [(["--level", "4"], "--level"), (["--block", "2"], "--block")])
def test_cli_viz_bad_level_or_block(cli, tiny_weights, image_file, tmp_path, args, match):
    res = cli("viz", image_file, "-o", tmp_path / "o", "--weights", tiny_weights, *args)
    assert res.exit_code != 0 and isinstance(res.exception, DeblurError)
    assert match in str(res.exception)
    assert not (tmp_path / "o").exists()


def test_cli_viz_missing_input(cli, tmp_path):
    res = cli("viz", tmp_path / "missing.png", "-o", tmp_path / "o")
    assert isinstance(res.exception, DeblurError) and "no such file" in str(res.exception)


def test_cli_viz_error_is_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "deblur_cli.cli.main", "viz", str(tmp_path / "missing.png"), "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0
    assert res.stderr.strip().count("\n") == 0 and "no such file" in res.stderr and "Traceback" not in res.stderr


def test_command_modules_do_not_import_heavy_stack():
    code = (
        "import sys; import deblur_cli.cli.viz, deblur_cli.cli.analyze; "
        "print(sorted({'torch', 'numpy', 'cv2'} & set(sys.modules)))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_maps_of_a_padded_input_are_cropped(tiny_model):
    import torch

    maps = MapRecorder()
    with maps.attach(tiny_model):
        tiny_model(torch.rand(1, 3, 16, 16))  # e.g. a 10 x 12 image padded to 16 x 16
    r = rendering.render_maps(maps, np.zeros((10, 12, 3), np.uint8), selection=MapSelection(attention=False))
    assert all(r.images[n].shape == (10, 12, 3) for n in r.names)
    with pytest.raises(ValueError, match="less than"):
        rendering.render_maps(maps, np.zeros((20, 12, 3), np.uint8))
