"""What the CPU fast paths decide from: the CPU's vendor, whether a tensor is run through for
CPU inference, autocast, and which library multiplies.

Every choice here depends on the machine, the tensor's device, autograd and the export, never
on the image: the same model on the same machine takes the same path for every input, so its
output is reproducible to the bit.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

#: Set only by :func:`onednn_products` for the duration of its block.
_ONEDNN_PRODUCTS: ContextVar[bool | None] = ContextVar("deblur_onednn_products", default=None)


@functools.cache
def cpu_vendor() -> str:
    """This machine's CPU vendor string (``GenuineIntel``, ``AuthenticAMD``, ...): from
    ``/proc/cpuinfo`` on Linux (:func:`read_cpu_vendor`), else from ``platform.processor()``
    where it names one (Windows does: "Intel64 Family 6 ... GenuineIntel"); ``""`` if unknown."""
    vendor = read_cpu_vendor()
    if not vendor:
        vendor = next((v for v in ("GenuineIntel", "AuthenticAMD") if v in platform.processor()), "")
    return vendor


def read_cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The first ``vendor_id`` of a Linux ``cpuinfo`` file; ``""`` where the file does not exist
    (macOS, Windows) or names none (ARM)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def cpu_inference(x: Tensor) -> bool:
    """Whether ``x`` is being run through for CPU inference: on the CPU, no autograd recording,
    not traced for ONNX export. The CPU-only fast paths of the filtering module and of the
    attention are taken only then; training and export always take the plain forms. Checks the
    export first, so that no later test of a caller makes the tracer read a size."""
    return not torch.onnx.is_in_onnx_export() and x.device.type == "cpu" and not torch.is_grad_enabled()


def onednn_available() -> bool:
    """Whether this torch build has oneDNN (``torch.backends.mkldnn``) for its CPU kernels."""
    return torch.backends.mkldnn.is_available()


@contextmanager
def onednn_products(enabled: bool | None) -> Iterator[None]:
    """Within the block, the CPU fast paths multiply through oneDNN (``True``), through
    ``torch.mm``/``torch.bmm`` (``False``), or by their own rules (``None``, the default outside
    any block): the filtering module's row-gather product
    (:func:`deblur_cli.ops.row_gather.onednn_gemm`) and the attention's Eq. 9 mixing
    (:func:`deblur_cli.ops.attention.onednn_mix`). For benchmarks and tests; the rules stay
    what decides where oneDNN is not available or autograd records. Blocks nest; the setting is
    per thread (and per asyncio task)."""
    token = _ONEDNN_PRODUCTS.set(enabled)
    try:
        yield
    finally:
        _ONEDNN_PRODUCTS.reset(token)


def onednn_products_setting() -> bool | None:
    """The setting of the innermost :func:`onednn_products` block (``None`` outside any)."""
    return _ONEDNN_PRODUCTS.get()


def autocast_on(x: Tensor) -> bool:
    """Whether autocast (mixed precision) is enabled for ``x``'s device type."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type without autocast (e.g. "meta", used to count FLOPs)
        return False


def in_float32(fn: Callable[..., Tensor], *tensors: Tensor | None) -> Tensor:
    """Run ``fn`` on float32 copies of ``tensors`` (``None`` passed through) with autocast off.

    Under autocast the filtering module's tap-by-tap sums would mix precisions in every step
    (slow casts and element-wise ops with type promotion) and its sampling positions would be
    rounded to 8 bits; it therefore runs in float32, like a module autocast keeps in float32.
    The surrounding convolutions still run in low precision.
    """
    with torch.autocast(tensors[0].device.type, enabled=False):  # type: ignore[union-attr]
        return fn(*(t.float() if t is not None else None for t in tensors))
