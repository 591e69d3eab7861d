"""Device resolution and the fp16 rule, with CUDA presence faked by monkeypatching."""

from __future__ import annotations

import pytest
import torch

from deblur_cli.device import check_fp16, describe_device, resolve_device
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
    from deblur_cli.backends import TorchBackend

    backend = TorchBackend(tiny_model, device="auto")
    assert backend.device == torch.device("cpu")
    assert backend.device_description.startswith("cpu") and "fp32" in backend.device_description
    with pytest.raises(DeblurError, match="fp16"):
        TorchBackend(tiny_model, device="auto", fp16=True)
