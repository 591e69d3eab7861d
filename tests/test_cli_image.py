"""``deblur image``: every option that matters and every bad input, through Typer's CliRunner."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deblur_cli.cli.main import _register, app, main

_register()


@pytest.fixture
def weights(tiny_weights) -> str:
    """conftest's ``saphn-tiny`` weights file, as a string."""
    return str(tiny_weights)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_error(result, message: str) -> None:
    """A DeblurError reached the top (``main()`` turns it into one line and exit code 2;
    CliRunner, which bypasses ``main()``, reports exit code 1)."""
    assert result.exit_code != 0, result.output
    assert type(result.exception).__name__ == "DeblurError", result.exception
    assert message in str(result.exception)


def test_image_writes_default_output_and_says_what_ran(photo, weights):
    result = invoke("image", photo, "--weights", weights, "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = photo.with_name("photo_deblurred.png")
    assert out.exists() and f"wrote {out}" in result.stdout
    assert "running on cpu" in result.stderr and "torch fp32" in result.stderr
    assert Image.open(out).size == (24, 20)


@pytest.mark.parametrize(
    "ext, fmt", [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP"), ("tif", "TIFF")]
)
def test_output_extension_picks_format(photo, weights, tmp_path, ext, fmt):
    out = tmp_path / "sub" / f"out.{ext}"
    result = invoke("image", photo, "-o", out, "--weights", weights, "--quality", "90")
    assert result.exit_code == 0, result.output
    assert Image.open(out).format == fmt


def test_tiling_options(tmp_path, weights):
    src = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 100, 3), dtype=np.uint8)).save(src)
    result = invoke("image", src, "-o", tmp_path / "o.png", "--weights", weights, "--tile", "48", "--tile-overlap", "8")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o.png").size == (100, 90)


def test_fidelity_through_the_command(tmp_path, weights):
    """16-bit RGBA with ICC and EXIF in; 16-bit RGBA, same alpha, ICC and EXIF out."""
    from PIL import ImageCms

    from deblur_cli.io import images as dio

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    pixels = np.random.default_rng(0).integers(0, 65536, (20, 24, 4), dtype=np.uint16)
    src = tmp_path / "deep.png"
    dio.write_image(src, pixels, icc_profile=icc, exif=exif.tobytes())
    out = tmp_path / "deep_out.tiff"
    assert invoke("image", src, "-o", out, "--weights", weights).exit_code == 0
    data = dio.read_image(out)
    assert data.pixels.dtype == np.uint16 and data.pixels.shape == (20, 24, 4)
    np.testing.assert_array_equal(data.pixels[..., 3], pixels[..., 3])
    assert data.icc_profile == icc


# --- never overwrite without being asked ----------------------------------------------------


def test_existing_output_needs_overwrite(photo, weights, tmp_path):
    out = tmp_path / "o.png"
    out.write_bytes(b"precious")
    result = invoke("image", photo, "-o", out, "--weights", weights)
    assert_error(result, "already exists")
    assert out.read_bytes() == b"precious"
    assert invoke("image", photo, "-o", out, "--weights", weights, "--overwrite").exit_code == 0
    assert Image.open(out).format == "PNG"


def test_input_is_not_overwritten(tmp_path, weights):
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(src)
    before = src.read_bytes()
    result = invoke("image", src, "-o", src, "--weights", weights)
    assert_error(result, "already exists")
    assert src.read_bytes() == before


def test_no_temporary_files_left(photo, weights, tmp_path):
    out_dir = tmp_path / "out"
    assert invoke("image", photo, "-o", out_dir / "o.webp", "--weights", weights).exit_code == 0
    assert [p.name for p in out_dir.iterdir()] == ["o.webp"]


# --- bad inputs: one line, non-zero exit, no traceback ---------------------------------------


def _bad_inputs(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    buf = tmp_path / "full.jpg"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(buf)
    (tmp_path / "cut.jpg").write_bytes(buf.read_bytes()[:200])
    (tmp_path / "blocker").write_text("a file")
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((20, 24, 4), np.uint8)).save(rgba)
    return {
        "missing": ([tmp_path / "nope.jpg"], "no such file"),
        "directory": ([tmp_path], "is a directory"),
        "non-image": ([tmp_path / "notes.png"], "not an image"),
        "truncated": ([tmp_path / "cut.jpg"], "corrupt"),
        "unwritable": ([buf, "-o", tmp_path / "blocker" / "o.png"], "cannot write"),
        "bad extension": ([buf, "-o", tmp_path / "o.gif"], "cannot write .gif"),
        "alpha to jpeg": ([rgba, "-o", tmp_path / "o.jpg"], "alpha"),
        "unknown model": ([buf, "-o", tmp_path / "o2.png", "--model", "no-such-model"], "no-such-model"),
        "cuda without cuda": ([buf, "-o", tmp_path / "o3.png", "--device", "cuda"], "CUDA"),
        "fp16 on cpu": ([buf, "-o", tmp_path / "o4.png", "--device", "cpu", "--fp16"], "--fp16"),
        "bad device": ([buf, "-o", tmp_path / "o5.png", "--device", "gpu"], "unknown device"),
    }


CASES = [
    "missing", "directory", "non-image", "truncated", "unwritable", "bad extension",
    "alpha to jpeg", "unknown model", "cuda without cuda", "fp16 on cpu", "bad device",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_error(tmp_path, weights, monkeypatch, case):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args, message = _bad_inputs(tmp_path)[case]
    wargs = [] if case == "unknown model" else ["--weights", weights]
    result = invoke("image", *args, *wargs)
    assert_error(result, message)


@pytest.mark.parametrize("case", ["missing", "truncated", "unknown model"])
def test_main_prints_one_line_and_exits_non_zero(tmp_path, weights, capsys, case):
    args, message = _bad_inputs(tmp_path)[case]
    wargs = [] if case == "unknown model" else ["--weights", weights]
    with pytest.raises(SystemExit) as exc:
        main(["image", *map(str, args), *wargs])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("deblur: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not any("Traceback" in line for line in err)


def test_onnx_backend_missing_is_clear(photo, weights, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "deblur_cli.backends.ort", None)
    result = invoke("image", photo, "-o", tmp_path / "o.png", "--backend", "onnx", "--weights", weights)
    assert_error(result, "ONNX backend is not available")


def test_usage_errors_are_exit_2(photo):
    assert invoke("image", photo, "--tile", "-5").exit_code == 2
    assert invoke("image", photo, "--quality", "101").exit_code == 2
    assert invoke("image", photo, "--backend", "tensorrt").exit_code == 2


def test_help_does_not_import_the_heavy_stack():
    code = (
        "import sys; import deblur_cli.cli.image, deblur_cli.cli.folder, deblur_cli.cli.options; "
        "heavy = [m for m in ('torch', 'numpy', 'cv2', 'PIL') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "--tile-overlap" in invoke("image", "--help").stdout


def test_image_bf16_on_a_cpu_with_native_bf16(photo, weights, tmp_path, monkeypatch):
    from deblur_cli.backends import device as device_mod

    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    out = tmp_path / "bf16.png"
    result = invoke("image", photo, "-o", out, "--weights", weights, "--device", "cpu", "--bf16")
    assert result.exit_code == 0, result.output
    assert "torch bf16" in result.stderr and out.exists()
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    assert_error(invoke("image", photo, "-o", tmp_path / "x.png", "--weights", weights, "--bf16"), "--bf16 needs")
    assert_error(
        invoke("image", photo, "-o", tmp_path / "y.png", "--weights", weights, "--backend", "onnx", "--bf16"),
        "--bf16",
    )


def test_image_self_ensemble(photo, weights, tmp_path):
    """``--self-ensemble 4`` averages four flipped passes: a different, valid image of the same
    size; a size outside 1/2/4/8 is one clear error."""
    plain, ens = tmp_path / "plain.png", tmp_path / "ens.png"
    # --gate off: the random-noise photo reads as sharp, and the gate would return it untouched
    assert invoke("image", photo, "-o", plain, "--weights", weights, "--device", "cpu", "--gate", "off").exit_code == 0
    result = invoke("image", photo, "-o", ens, "--weights", weights, "--device", "cpu", "--self-ensemble", "4", "--gate", "off")
    assert result.exit_code == 0, result.output
    assert "self-ensemble x4" in result.stderr
    a, b = np.asarray(Image.open(plain)), np.asarray(Image.open(ens))
    assert a.shape == b.shape == (20, 24, 3) and not np.array_equal(a, b)
    assert_error(invoke("image", photo, "-o", tmp_path / "z.png", "--weights", weights, "--self-ensemble", "3"),
                 "--self-ensemble must be one of 1, 2, 4, 8")  # fmt: skip
    assert not (tmp_path / "z.png").exists()
