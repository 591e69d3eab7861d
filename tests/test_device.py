"""Device resolution and the fp16/bf16 rules, with CUDA presence and CPU features faked by monkeypatching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deblur_cli.backends import device as device_mod
from deblur_cli.backends.device import check_fp16, describe_device, resolve_device, resolve_precision
from deblur_cli.errors import DeblurError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_is_cpu(two_gpus):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_auto_without_cuda_is_cpu(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_with_cuda_is_first_gpu(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize("spec, index", [("cuda", 0), ("cuda:0", 0), ("cuda:1", 1), ("CUDA:1", 1)])
def test_cuda_indices(two_gpus, spec, index):
    assert resolve_device(spec) == torch.device("cuda", index)


def test_cuda_index_out_of_range(two_gpus):
    with pytest.raises(DeblurError, match=r"only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_an_error_not_a_cpu_run(no_cuda, spec):
    with pytest.raises(DeblurError, match="no CUDA device"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cpu:1", "auto:0", "cuda:x", "", "mps"])
def test_malformed_specs(spec):
    with pytest.raises(DeblurError, match="unknown device"):
        resolve_device(spec)


def test_fp16_only_on_cuda():
    assert check_fp16(torch.device("cpu"), False) is False
    assert check_fp16(torch.device("cuda", 0), True) is True
    with pytest.raises(DeblurError, match="--fp16 needs a CUDA device"):
        check_fp16(torch.device("cpu"), True)


def test_describe_cpu():
    assert describe_device(torch.device("cpu")).startswith("cpu (")


def test_torch_backend_reports_what_ran(no_cuda, tiny_model):
    from deblur_cli.backends.torch_backend import TorchBackend

    backend = TorchBackend(tiny_model, device="auto")
    assert backend.device == torch.device("cpu")
    assert backend.device_description.startswith("cpu") and "fp32" in backend.device_description
    with pytest.raises(DeblurError, match="fp16"):
        TorchBackend(tiny_model, device="auto", fp16=True)


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def old_cpu(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)


def test_precision_defaults_to_fp32():
    assert resolve_precision(torch.device("cpu")) == "fp32"
    assert resolve_precision(torch.device("cuda", 0)) == "fp32"


def test_bf16_on_a_cpu_with_native_bf16(bf16_cpu):
    assert resolve_precision(torch.device("cpu"), bf16=True) == "bf16"


def test_bf16_where_it_would_be_emulated_is_an_error(old_cpu):
    with pytest.raises(DeblurError, match="emulate"):
        resolve_precision(torch.device("cpu"), bf16=True)


def test_bf16_on_cuda_follows_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision(torch.device("cuda", 0), bf16=True) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Old GPU")
    with pytest.raises(DeblurError, match="no bfloat16"):
        resolve_precision(torch.device("cuda", 0), bf16=True)


def test_fp16_and_bf16_are_exclusive(bf16_cpu):
    with pytest.raises(DeblurError, match="exclusive"):
        resolve_precision(torch.device("cuda", 0), fp16=True, bf16=True)
    assert resolve_precision(torch.device("cuda", 0), fp16=True) == "fp16"
    with pytest.raises(DeblurError, match="--fp16 needs a CUDA device"):
        resolve_precision(torch.device("cpu"), fp16=True)


def test_cpu_feature_probe_matches_torch():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert device_mod.cpu_has_native_bf16() == expected


def test_torch_backend_runs_bf16_close_to_fp32(bf16_cpu, tiny_model):
    """bf16 autocast really runs (the description says so) and stays close to fp32."""
    from deblur_cli.backends.torch_backend import TorchBackend
    x = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)
    ref = TorchBackend(tiny_model, device="cpu").run(x)
    low = TorchBackend(tiny_model, device="cpu", bf16=True)
    assert "bf16" in low.device_description
    out = low.run(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    diff = np.abs(out - ref).max()
    assert 0 < diff < 0.05  # bf16 changes the numbers (it ran), but only a little


def test_bf16_with_onnx_backend_is_an_error(tiny_model):
    from deblur_cli.backends.base import create_backend

    with pytest.raises(DeblurError, match="torch backend only"):
        create_backend("onnx", tiny_model, None, "cpu", bf16=True)
