"""Memory: how many pixels the network may take at once on a device.

The network's peak memory per input pixel (:func:`estimate_bytes_per_pixel`), the bytes free
for activations (:func:`available_memory`, bounded on the CPU by :func:`memory_cap`) and the
recognition of out-of-memory failures (:func:`is_out_of_memory`). Tile and batch sizes are
derived from these by :class:`~deblur_cli.inference.deblurrer.Deblurrer`.
"""

from __future__ import annotations

import os
from typing import Any

from deblur_cli.errors import DeblurError

#: Share of the free memory that the network's activations may use.
MEMORY_FRACTION_CPU = 0.4
MEMORY_FRACTION_CUDA = 0.7
#: Assumed free memory where it cannot be measured.
FALLBACK_MEMORY = 4 << 30
#: Cap on the activations' budget on the CPU, so that a 24-megapixel photo stays within about
#: 4 GiB of resident memory whatever the machine (tiles beyond ~1 MP buy no speed on a CPU).
#: ``DEBLUR_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix) replaces it.
CPU_ACTIVATION_CAP = 2 << 30


def estimate_bytes_per_pixel(config: Any | None) -> float:
    """Peak inference memory of the network per input pixel (fp32, batch 1), in bytes.

    A fit of measured peak RSS growth per pixel on CPU (256^2 -> 512^2 inputs, torch 2.13,
    the filtering module gathering its taps one at a time): ``saphn-tiny`` ~350 B,
    ``saphn-s`` ~890 B, ``saphn`` ~2.0 kB, matched by ``4 B x (44 + 7.6 c0 + 1.75 c2)`` floats
    (``c0``/``c2``: full/quarter-resolution widths; the full-resolution features of the three
    levels dominate; the filter size no longer matters since the taps are gathered one at a
    time). A 1.5x margin is added. Without a config (e.g. an ONNX file) the paper's
    configuration is assumed.
    """
    if config is None:
        from deblur_cli.models.saphn import SAPHNConfig

        config = SAPHNConfig()
    c0, _, c2 = config.widths
    floats = 44 + 7.6 * c0 + 1.75 * c2
    return 1.5 * 4 * floats


def available_memory(device: Any | None = None) -> int:
    """Bytes the engine may use for activations on ``device`` (a :class:`torch.device` or None).

    CUDA: ``MEMORY_FRACTION_CUDA`` of ``torch.cuda.mem_get_info``'s free memory. Otherwise
    ``MEMORY_FRACTION_CPU`` of the host's available memory (:func:`host_available_memory`), at
    most :func:`memory_cap`.
    """
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_FRACTION_CUDA)
    return int(min(host_available_memory() * MEMORY_FRACTION_CPU, memory_cap()))


def memory_cap() -> int:
    """The CPU activation cap: ``DEBLUR_MEMORY_LIMIT`` if set (e.g. ``8G``), else
    :data:`CPU_ACTIVATION_CAP`.

    Raises:
        DeblurError: an unreadable ``DEBLUR_MEMORY_LIMIT``.
    """
    raw = os.environ.get("DEBLUR_MEMORY_LIMIT", "").strip()
    if not raw:
        return CPU_ACTIVATION_CAP
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        scale = units.get(raw[-1].upper(), 1)
        value = float(raw[:-1] if raw[-1].upper() in units else raw) * scale
    except ValueError:
        raise DeblurError(f"DEBLUR_MEMORY_LIMIT={raw!r}: give bytes or a number with K/M/G, e.g. 4G") from None
    if value <= 0:
        raise DeblurError(f"DEBLUR_MEMORY_LIMIT={raw!r} must be positive")
    return int(value)


def host_available_memory() -> int:
    """The host's available memory in bytes: ``MemAvailable`` from ``/proc/meminfo``, else
    psutil's figure if installed, else :data:`FALLBACK_MEMORY`."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().available)
    except ImportError:
        return FALLBACK_MEMORY


def is_out_of_memory(exc: BaseException) -> bool:
    """``MemoryError`` or torch's ``OutOfMemoryError`` (CUDA) / allocator failure (CPU)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "failed to allocate" in text

