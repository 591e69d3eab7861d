"""Execution-provider selection (``deblur_cli.backends.providers``): pure, no onnxruntime needed."""

from __future__ import annotations

import pytest

from deblur_cli.errors import DeblurError
from deblur_cli.backends.providers import CPU, CUDA, TENSORRT, parse_device, select_providers, wants_gpu

CPU_ONLY = ["AzureExecutionProvider", CPU]  # what the CPU wheel of onnxruntime 1.31 reports
WITH_CUDA = [CUDA, CPU]
WITH_TRT = [TENSORRT, CUDA, CPU]


def names(providers):
    return [name for name, _ in providers]


def test_cpu_is_cpu_only_whatever_is_available():
    for available in (CPU_ONLY, WITH_CUDA, WITH_TRT):
        assert select_providers("cpu", available) == [(CPU, {})]


def test_auto_without_cuda_is_cpu():
    assert select_providers("auto", CPU_ONLY) == [(CPU, {})]


def test_auto_with_cuda_is_cuda_device_0_then_cpu():
    assert select_providers("auto", WITH_CUDA) == [(CUDA, {"device_id": "0"}), (CPU, {})]


def test_tensorrt_comes_first_then_cuda_then_cpu():
    chosen = select_providers("auto", [CPU, CUDA, TENSORRT])  # order of `available` does not matter
    assert names(chosen) == [TENSORRT, CUDA, CPU]
    assert chosen[0][1]["device_id"] == "0"


def test_tensorrt_can_be_turned_off():
    assert names(select_providers("cuda", WITH_TRT, tensorrt=False)) == [CUDA, CPU]


def test_tensorrt_engine_cache():
    opts = select_providers("cuda", WITH_TRT, trt_cache_dir="/tmp/trt")[0][1]
    assert opts == {"device_id": "0", "trt_engine_cache_enable": "True", "trt_engine_cache_path": "/tmp/trt"}


def test_cuda_index_goes_to_every_gpu_provider():
    chosen = select_providers("cuda:1", WITH_TRT)
    assert chosen == [(TENSORRT, {"device_id": "1"}), (CUDA, {"device_id": "1"}), (CPU, {})]
    assert select_providers("CUDA", WITH_CUDA) == [(CUDA, {"device_id": "0"}), (CPU, {})]


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_provider_is_an_error(device):
    with pytest.raises(DeblurError, match="onnxruntime-gpu"):
        select_providers(device, CPU_ONLY)


def test_tensorrt_alone_does_not_make_cuda_available():
    with pytest.raises(DeblurError, match="CUDAExecutionProvider"):
        select_providers("cuda", [TENSORRT, CPU])
    assert select_providers("auto", [TENSORRT, CPU]) == [(CPU, {})]


@pytest.mark.parametrize("device", ["gpu", "cpu:0", "auto:1", "cuda:", "cuda:x", ""])
def test_malformed_device_is_an_error(device):
    with pytest.raises(DeblurError, match="unknown device"):
        select_providers(device, WITH_CUDA)


def test_parse_device_and_wants_gpu():
    assert parse_device(" Cuda:2 ") == ("cuda", 2)
    assert parse_device("auto") == ("auto", None)
    assert wants_gpu("cuda:3") and wants_gpu("cuda")
    assert not wants_gpu("auto") and not wants_gpu("cpu")
