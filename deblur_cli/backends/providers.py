"""ONNX Runtime execution providers: which ones a ``--device`` asks for (pure, no onnxruntime import).

Rules (the README's ONNX section repeats them for users):

* ``cpu``: ``CPUExecutionProvider`` only.
* ``auto``: with ``CUDAExecutionProvider`` available (the ``onnxruntime-gpu`` package):
  TensorRT first if available, then CUDA on device 0, then the CPU; otherwise the CPU alone.
  Note that ``auto`` follows what *onnxruntime* can use, not what torch sees.
* ``cuda`` / ``cuda:N``: the same list on device ``N`` (TensorRT, CUDA, CPU); a
  :class:`DeblurError` when ``CUDAExecutionProvider`` is not available (the CPU build of
  onnxruntime, or both packages installed so that the CPU one shadows the GPU one).

The CPU provider always comes last: onnxruntime places nodes the GPU providers cannot run
there. Which providers a session really uses is ``session.get_providers()``, reported by
:class:`deblur_cli.backends.ort.OnnxBackend`.
"""

from __future__ import annotations

import re

from deblur_cli.errors import DeblurError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

#: An entry of ``onnxruntime.InferenceSession(providers=...)``: a name and its options.
Provider = tuple[str, dict[str, str]]

_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``, ``"cuda"`` -> ``("cuda", None)``, ``"auto"`` -> ``("auto", None)``.

    Raises:
        DeblurError: anything but ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (case-insensitive).
    """
    m = _SPEC.match(device.strip().lower())
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise DeblurError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    return m.group(1), int(m.group(2)) if m.group(2) is not None else None


def select_providers(
    device: str,
    available: list[str],
    *,
    tensorrt: bool = True,
    trt_cache_dir: str | None = None,
) -> list[Provider]:
    """The providers, in priority order with their options, for ``device``.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        available: ``onnxruntime.get_available_providers()``.
        tensorrt: use TensorRT when it is available (it builds an engine per input shape,
            which takes a while the first time each tile size is seen).
        trt_cache_dir: where TensorRT keeps its built engines (enables its engine cache).

    Returns:
        ``[(name, options), ...]`` for ``InferenceSession(providers=...)``, ending with the CPU.

    Raises:
        DeblurError: malformed ``device``, or CUDA asked for while ``CUDAExecutionProvider``
            is not in ``available``.
    """
    kind, index = parse_device(device)
    cpu: Provider = (CPU, {})
    if kind == "cpu" or (kind == "auto" and CUDA not in available):
        return [cpu]
    if CUDA not in available:
        raise DeblurError(
            f"device {device!r} needs onnxruntime's CUDAExecutionProvider, but only "
            f"{', '.join(available) or 'none'} are available: install onnxruntime-gpu (the 'gpu' extra) "
            "in place of onnxruntime, or use --device cpu"
        )
    device_id = str(index or 0)
    chosen: list[Provider] = []
    if tensorrt and TENSORRT in available:
        trt = {"device_id": device_id}
        if trt_cache_dir is not None:
            trt.update(trt_engine_cache_enable="True", trt_engine_cache_path=trt_cache_dir)
        chosen.append((TENSORRT, trt))
    chosen.append((CUDA, {"device_id": device_id}))
    chosen.append(cpu)
    return chosen


def wants_gpu(device: str) -> bool:
    """Whether ``device`` explicitly asks for CUDA (then a CPU-only session is an error)."""
    return parse_device(device)[0] == "cuda"
