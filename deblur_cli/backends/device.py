"""Device and precision resolution: the one place where ``auto`` becomes a real device.

Rules (the README's "Device" section repeats them for users):

* ``auto`` is CUDA device 0 when ``torch.cuda.is_available()``, else the CPU;
* ``cuda`` / ``cuda:N`` without CUDA, or with ``N`` out of range, is a :class:`DeblurError`:
  never a silent CPU run;
* fp16 runs only on CUDA. Asking for fp16 on a run that resolved to the CPU is a
  :class:`DeblurError` too (CPU half precision is slow or unsupported for several of the
  model's ops, see https://github.com/xinntao/Real-ESRGAN/issues/306), so the user knows exactly what ran.
* bf16 (bfloat16 autocast) runs on CUDA devices that support it and on CPUs with native
  bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere torch emulates it, slower than fp32,
  so asking for it there is a :class:`DeblurError` as well. fp16 and bf16 are exclusive.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import torch

#: What ``--device`` accepts.
DEVICE_HELP = "auto, cpu, cuda or cuda:N"

_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a user's device string into the :class:`torch.device` that will run.

    Args:
        spec: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (case-insensitive).

    Returns:
        ``cuda:N`` (``cuda`` and ``auto`` mean ``cuda:0``) or ``cpu``.

    Raises:
        DeblurError: malformed spec, CUDA requested without CUDA, or ``N`` out of range.
    """
    import torch

    text = spec.strip().lower()
    m = _SPEC.match(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise DeblurError(f"unknown device {spec!r}: use {DEVICE_HELP}")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeblurError(
            f"device {spec!r} requested but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto"
        )
    n = int(index) if index is not None else 0
    count = torch.cuda.device_count()
    if n >= count:
        raise DeblurError(f"device {spec!r} requested but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", n)


def check_fp16(device: torch.device, fp16: bool) -> bool:
    """Validate a half-precision request for ``device``; returns ``fp16`` unchanged.

    Raises:
        DeblurError: ``fp16`` requested on a non-CUDA device.
    """
    if fp16 and device.type != "cuda":
        raise DeblurError(f"--fp16 needs a CUDA device but this run uses {device}; drop --fp16 (fp32 is the default)")
    return fp16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (AVX512-BF16 or AMX tiles).

    Uses torch's own CPU feature probes (``torch.cpu._is_avx512_bf16_supported`` and
    ``torch.cpu._is_amx_tile_supported``; private, hence the guarded lookup: a torch without
    them counts as "no").
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(device: torch.device, fp16: bool = False, bf16: bool = False) -> str:
    """Validate a precision request for ``device`` and name it.

    Args:
        device: the resolved device.
        fp16: float16 autocast (CUDA only).
        bf16: bfloat16 autocast (CUDA with bf16 support, or a CPU with native bf16).

    Returns:
        ``"fp32"``, ``"fp16"`` or ``"bf16"``.

    Raises:
        DeblurError: both requested, fp16 off CUDA, or bf16 where it would be emulated.
    """
    import torch

    if fp16 and bf16:
        raise DeblurError("--fp16 and --bf16 are exclusive; pick one")
    if fp16:
        check_fp16(device, fp16)
        return "fp16"
    if not bf16:
        return "fp32"
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise DeblurError(f"--bf16: {describe_device(device)} has no bfloat16 support; use --fp16 or fp32")
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    raise DeblurError(
        f"--bf16 needs native bfloat16 (a CPU with AVX512-BF16 or AMX, or a CUDA GPU); on {device} "
        "torch would emulate it, slower than fp32: drop --bf16"
    )


def describe_device(device: torch.device) -> str:
    """Human-readable name of ``device``, e.g. ``cuda:0 (NVIDIA RTX 4090)`` or ``cpu (8 threads)``."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"
