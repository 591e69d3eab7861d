"""Device and precision resolution: the one place where ``auto`` becomes a real device.

Rules (the README's "Device" section repeats them for users):

* ``auto`` is CUDA device 0 when ``torch.cuda.is_available()``, else the CPU;
* ``cuda`` / ``cuda:N`` without CUDA, or with ``N`` out of range, is a :class:`DeblurError`:
  never a silent CPU run;
* fp16 runs only on CUDA. Asking for fp16 on a run that resolved to the CPU is a
  :class:`DeblurError` too (CPU half precision is slow or unsupported for several of the
  model's ops, see Real-ESRGAN issue #306), so the user knows exactly what ran.
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


def describe_device(device: torch.device) -> str:
    """Human-readable name of ``device``, e.g. ``cuda:0 (NVIDIA RTX 4090)`` or ``cpu (8 threads)``."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"
