"""``deblur export onnx`` through Typer's CliRunner and the real entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from deblur_cli.cli import main as cli_main
from deblur_cli.errors import DeblurError

pytest.importorskip("onnxruntime")

cli_main._register()
runner = CliRunner()


@pytest.fixture
def weights_file(tmp_path, tiny_model):
    from deblur_cli.hub.loading import save_weights

    path = tmp_path / "tiny.safetensors"
    sha = save_weights(tiny_model, path, arch="saphn-tiny")
    return path, sha


def invoke(*args: str):
    return runner.invoke(cli_main.app, ["export", "onnx", *args])


def test_command_module_imports_no_heavy_stack():
    code = (
        "import sys, deblur_cli.cli.main, deblur_cli.cli.export; "
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_options():
    result = runner.invoke(cli_main.app, ["export", "onnx", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--model", "--weights", "--opset", "--fp16", "--overwrite"):
        assert option in result.output


def test_output_is_required():
    result = invoke("--model", "saphn-s.synth")
    assert result.exit_code == 2 and "--output" in result.output


def test_existing_output_without_overwrite_is_refused_before_exporting(tmp_path, weights_file):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    result = invoke("--weights", str(weights_file[0]), "-o", str(out))
    assert isinstance(result.exception, DeblurError) and "--overwrite" in str(result.exception)
    assert out.read_bytes() == b"keep"


def test_unknown_model_is_an_error(tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("--model", "no-such-model", "-o", str(out))
    assert isinstance(result.exception, DeblurError) and "unknown weights 'no-such-model'" in str(result.exception)
    assert not out.exists()


def test_missing_weights_file_is_an_error(tmp_path):
    result = invoke("--weights", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path / "m.onnx"))
    assert isinstance(result.exception, DeblurError) and "not found" in str(result.exception)


@pytest.mark.parametrize("opset", ["15", "21"])
def test_unsupported_opset_is_an_error(tmp_path, weights_file, opset):
    result = invoke("--weights", str(weights_file[0]), "-o", str(tmp_path / "m.onnx"), "--opset", opset)
    assert isinstance(result.exception, DeblurError) and "--opset" in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()


def test_entry_point_prints_one_line_and_exits_non_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["export", "onnx", "--model", "no-such-model", "-o", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("deblur: error: unknown weights 'no-such-model'")


@pytest.mark.slow
def test_export_writes_a_verified_file_and_overwrites_only_when_asked(tmp_path, weights_file):
    from deblur_cli.backends.onnx_export import read_metadata

    path, sha = weights_file
    out = tmp_path / "sub" / "tiny.onnx"
    result = invoke("--weights", str(path), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.output and "tolerance 0.001" in result.output
    meta = read_metadata(out)
    assert meta["arch"] == "saphn-tiny" and meta["weights_sha256"] == sha and meta["opset"] == "18"
    assert float(result.output.split("max abs difference ")[1].split()[0]) <= 1e-3

    mtime = out.stat().st_mtime_ns
    again = invoke("--weights", str(path), "-o", str(out))
    assert isinstance(again.exception, DeblurError) and out.stat().st_mtime_ns == mtime

    replaced = invoke("--weights", str(path), "-o", str(out), "--overwrite", "--opset", "17")
    assert replaced.exit_code == 0, replaced.output
    assert read_metadata(out)["opset"] == "17"
