"""ONNX export (``deblur_cli.backends.onnx_export``) and the onnxruntime backend (``deblur_cli.backends.ort``).

Exports take ~2 s each for ``saphn-tiny`` on one CPU thread: tests that export are ``slow`` and
share module-scoped exports where they only read them.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from deblur_cli.backends.onnx_export import (
    INPUT_NAME,
    META_ARCH,
    META_OPSET,
    META_PRECISION,
    META_SHA256,
    META_VERSION,
    OUTPUT_NAME,
    TOLERANCE,
    export_metadata,
    export_onnx,
    read_metadata,
    state_digest,
)
from deblur_cli.backends.ort import OnnxBackend, cache_path, default_cache_dir
from deblur_cli.errors import DeblurError
from deblur_cli.models import create_model, randomize_zero_layers

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

NEEDS_NO_CUDA = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime has CUDA here"
)


def make_tiny(seed: int = 0):
    """``saphn-tiny`` with non-zero heads and meta-layers (as conftest's ``tiny_model``)."""
    torch.manual_seed(seed)
    return randomize_zero_layers(create_model("saphn-tiny"))


def torch_out(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One fp32 export of ``make_tiny()`` with provenance metadata: (model, ExportResult)."""
    torch.set_num_threads(1)
    model = make_tiny()
    meta = export_metadata(model, sha256=state_digest(model), arch="saphn-tiny", name="tiny")
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return model, export_onnx(model, path, metadata=meta)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache folder holding the backend's export of ``make_tiny()``: (model, folder, file)."""
    torch.set_num_threads(1)
    model = make_tiny()
    folder = tmp_path_factory.mktemp("cache")
    backend = OnnxBackend(model, device="cpu", cache_dir=folder, threads=1)
    assert backend.cache_hit is False
    return model, folder, backend.onnx_path


@pytest.fixture
def cache(warm_cache, tmp_path):
    """A private copy of ``warm_cache`` (tests may damage it)."""
    model, folder, path = warm_cache
    copy = tmp_path / "cache"
    shutil.copytree(folder, copy)
    return model, copy, copy / path.name


# ------------------------------------------------------------------------------ fast checks


def test_cache_path_is_keyed_by_sha_opset_precision_and_version():
    from deblur_cli import __version__

    sha = "ab" * 32
    p = cache_path("/c", sha, 18, "fp32")
    assert p.name == f"{sha[:16]}-opset18-fp32-deblur{__version__}.onnx"
    others = {cache_path("/c", "cd" * 32, 18, "fp32"), cache_path("/c", sha, 17, "fp32"), cache_path("/c", sha, 18, "fp16")}
    assert p not in others and len(others) == 3


def test_default_cache_dir_honours_deblur_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("DEBLUR_CACHE", str(tmp_path / "dc"))
    assert default_cache_dir() == tmp_path / "dc" / "onnx"
    monkeypatch.delenv("DEBLUR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "deblur" / "onnx"


def test_state_digest_follows_weights_and_config(tiny_model):
    digest = state_digest(tiny_model)
    assert digest == state_digest(tiny_model) and len(digest) == 64
    same_tensors = create_model("saphn-tiny", max_offset=1.0)
    same_tensors.load_state_dict(tiny_model.state_dict())
    assert state_digest(same_tensors) != digest  # a switch without a tensor still changes the key
    with torch.no_grad():
        next(tiny_model.parameters())[0].add_(1e-3)
    assert state_digest(tiny_model) != digest


@NEEDS_NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_backend_cuda_without_cuda_provider_is_a_clear_error(tiny_model, tmp_path, device):
    with pytest.raises(DeblurError, match="onnxruntime-gpu"):
        OnnxBackend(tiny_model, device=device, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # failed before exporting anything


@NEEDS_NO_CUDA
def test_backend_fp16_on_cpu_is_an_error(tiny_model, tmp_path):
    with pytest.raises(DeblurError, match="fp16"):
        OnnxBackend(tiny_model, device="auto", fp16=True, cache_dir=tmp_path)


def test_backend_argument_errors(tiny_model, tmp_path):
    with pytest.raises(DeblurError, match="not both"):
        OnnxBackend(tiny_model, weights="w.safetensors", device="cpu", cache_dir=tmp_path)
    with pytest.raises(DeblurError, match="not found"):
        OnnxBackend(None, weights=str(tmp_path / "missing.onnx"), device="cpu")
    with pytest.raises(DeblurError, match="opset"):
        OnnxBackend(tiny_model, device="cpu", opset=15, cache_dir=tmp_path)
    with pytest.raises(DeblurError, match="unknown device"):
        OnnxBackend(tiny_model, device="gpu", cache_dir=tmp_path)
    with pytest.raises(DeblurError, match="unknown weights"):
        OnnxBackend("no-such-model", device="cpu", cache_dir=tmp_path)


def test_export_checks_destination_and_opset_before_exporting(tiny_model, tmp_path):
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"keep")
    with pytest.raises(DeblurError, match="--overwrite"):
        export_onnx(tiny_model, existing)
    assert existing.read_bytes() == b"keep"
    with pytest.raises(DeblurError, match="folder"):
        export_onnx(tiny_model, tmp_path)
    for opset in (15, 99):
        with pytest.raises(DeblurError, match="opset"):
            export_onnx(tiny_model, tmp_path / "new.onnx", opset=opset)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ------------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_passes_checker_with_named_dynamic_io_and_metadata(exported):
    model, result = exported
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    for value in (inp, out):
        dims = value.type.tensor_type.shape.dim
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    meta = read_metadata(result.path)
    from deblur_cli import __version__

    assert meta[META_ARCH] == "saphn-tiny"
    assert meta[META_SHA256] == state_digest(model)
    assert (meta[META_VERSION], meta[META_OPSET], meta[META_PRECISION]) == (__version__, "18", "fp32")
    assert "widths" in meta["config"]
    assert 0 <= result.max_abs_diff <= TOLERANCE["fp32"] == result.tolerance
    assert not list(result.path.parent.glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 37, 53), (3, 3, 40, 72), (1, 3, 5, 9)])
def test_export_runs_any_batch_and_size(exported, shape):
    model, result = exported
    from deblur_cli.backends.onnx_export import cpu_session

    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    out = cpu_session(result.path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    assert out.shape == shape
    assert np.abs(out - torch_out(model, x)).max() <= 1e-3


@pytest.mark.slow
def test_failed_verification_leaves_no_file(tiny_model, tmp_path, monkeypatch):
    import deblur_cli.backends.onnx_export as ox

    monkeypatch.setattr(ox, "verify_onnx", lambda *a, **k: 0.5)
    target = tmp_path / "m.onnx"
    with pytest.raises(DeblurError, match="does not match torch"):
        export_onnx(tiny_model, target)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")  # an existing file survives a failed --overwrite
    with pytest.raises(DeblurError, match="does not match torch"):
        export_onnx(tiny_model, target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and target.read_bytes() == b"old"


@pytest.mark.slow
def test_fp16_export_converts_weights_keeps_float32_io(tiny_model, tmp_path):
    result = export_onnx(tiny_model, tmp_path / "h.onnx", fp16=True)
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto)
    kinds = {init.data_type for init in proto.graph.initializer if init.data_type in (1, 10)}
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert read_metadata(result.path)[META_PRECISION] == "fp16"
    assert result.tolerance == TOLERANCE["fp16"] and result.max_abs_diff <= TOLERANCE["fp16"]


# ------------------------------------------------------------------------------ backend


@pytest.mark.slow
def test_backend_reuses_cached_export_and_matches_torch(cache):
    model, folder, path = cache
    mtime, data = path.stat().st_mtime_ns, path.read_bytes()
    backend = OnnxBackend(model, device="cpu", cache_dir=folder, threads=1)
    assert backend.cache_hit is True and backend.onnx_path == path
    assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data
    assert backend.providers == ["CPUExecutionProvider"]
    assert backend.device_description.startswith(f"onnxruntime {ort.__version__} [CPUExecutionProvider], fp32")
    assert backend.info["sha256"] == state_digest(model) and backend.config == model.config
    assert backend.device is None
    for shape in [(2, 3, 24, 40), (1, 3, 4, 4), (1, 3, 7, 30), (1, 3, 1, 1)]:  # tiny sizes replicate like torch
        x = np.random.default_rng(2).random(shape, dtype=np.float32)
        y = backend.run(x)
        assert y.dtype == np.float32 and y.shape == shape
        assert np.abs(y - torch_out(model, x)).max() <= 1e-3


@pytest.mark.slow
def test_new_weights_get_a_new_export(cache):
    model, folder, path = cache
    model = copy.deepcopy(model)  # the module-scoped fixture's model stays as it is
    with torch.no_grad():
        next(model.parameters()).mul_(1.5)
    backend = OnnxBackend(model, device="cpu", cache_dir=folder, threads=1)
    assert backend.cache_hit is False and backend.onnx_path != path
    assert sorted(p.name for p in folder.glob("*.onnx")) == sorted([path.name, backend.onnx_path.name])
    x = np.random.default_rng(3).random((1, 3, 20, 28), dtype=np.float32)
    assert np.abs(backend.run(x) - torch_out(model, x)).max() <= 1e-3


@pytest.mark.slow
def test_corrupt_cached_file_is_exported_again(cache):
    model, folder, path = cache
    path.write_bytes(b"\x08\x07 not an onnx model")
    backend = OnnxBackend(model, device="cpu", cache_dir=folder, threads=1)
    assert backend.cache_hit is False and backend.onnx_path == path
    assert read_metadata(path)[META_SHA256] == state_digest(model)
    again = OnnxBackend(model, device="cpu", cache_dir=folder, threads=1)
    assert again.cache_hit is True


@pytest.mark.slow
def test_foreign_file_under_the_key_is_not_used(cache, exported):
    model, folder, path = cache
    other = exported[1].path  # same network, but its metadata says opset 18 / other provenance
    proto = onnx.load(str(other))
    from deblur_cli.backends.onnx_export import set_metadata

    set_metadata(proto, {META_SHA256: "0" * 64})
    onnx.save_model(proto, str(path))
    backend = OnnxBackend(model, device="cpu", cache_dir=folder, threads=1)
    assert backend.cache_hit is False
    assert read_metadata(path)[META_SHA256] == state_digest(model)


@pytest.mark.slow
def test_backend_from_weights_file_keys_on_its_sha256(tmp_path):
    from deblur_cli.hub.loading import save_weights

    model = make_tiny(seed=5)
    sha = save_weights(model, tmp_path / "tiny.safetensors", arch="saphn-tiny")
    folder = tmp_path / "cache"
    backend = OnnxBackend(None, str(tmp_path / "tiny.safetensors"), device="cpu", cache_dir=folder, threads=1)
    assert backend.onnx_path == cache_path(folder, sha, 18, "fp32")
    assert backend.info["sha256"] == sha and backend.info["arch"] == "saphn-tiny"
    x = np.random.default_rng(4).random((1, 3, 33, 17), dtype=np.float32)
    assert np.abs(backend.run(x) - torch_out(model, x)).max() <= 1e-3
    hit = OnnxBackend("saphn-tiny", str(tmp_path / "tiny.safetensors"), device="cpu", cache_dir=folder)
    assert hit.cache_hit is True
    with pytest.raises(DeblurError, match="needs 'saphn'"):  # the architecture is checked on a cache hit too
        OnnxBackend("saphn", str(tmp_path / "tiny.safetensors"), device="cpu", cache_dir=folder)


@pytest.mark.slow
def test_backend_runs_a_given_onnx_file(exported, tmp_path):
    model, result = exported
    backend = OnnxBackend(None, str(result.path), device="auto", cache_dir=tmp_path)
    assert backend.cache_hit is None and backend.info["arch"] == "saphn-tiny"
    assert not any(tmp_path.iterdir())  # nothing exported
    x = np.random.default_rng(5).random((2, 3, 19, 23), dtype=np.float32)
    assert np.abs(backend.run(x) - torch_out(model, x)).max() <= 1e-3
    with pytest.raises(DeblurError, match="drop the model name"):
        OnnxBackend("saphn-s.synth", str(result.path), device="cpu")


@pytest.mark.slow
def test_engine_results_of_both_backends_agree_within_1_255(warm_cache):
    from deblur_cli.inference import Deblurrer

    model, folder, _ = warm_cache
    image = np.random.default_rng(6).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    onnx_run = Deblurrer(backend=OnnxBackend(model, device="cpu", cache_dir=folder, threads=1), tile=0)
    torch_run = Deblurrer(model, device="cpu", backend="torch", tile=0)
    a = onnx_run.deblur(image).astype(int)
    b = torch_run.deblur(image).astype(int)
    assert np.abs(a - b).max() <= 1
    assert "CPUExecutionProvider" in onnx_run.device_description
