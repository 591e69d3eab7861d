"""Inference backends: what runs the network on a batch.

The engine talks to a backend only through :class:`Backend`: ``run`` on a float32
``(B, 3, H, W)`` numpy batch in ``[0, 1]`` and ``device_description``, the device/provider
that really ran, which the CLI prints. :func:`create_backend` builds one by name: the torch
backend (:class:`~deblur_cli.backends.torch_backend.TorchBackend`) or the ONNX Runtime backend
(:class:`~deblur_cli.backends.ort.OnnxBackend`, imported only when asked for, since
onnxruntime is an optional extra).

Optional attributes the engine uses when present: ``info`` (the model's name, source and
sha256), ``config`` (the :class:`~deblur_cli.models.SAPHNConfig`, for memory estimates) and
``device`` (a :class:`torch.device`; CUDA means the GPU's free memory bounds tiles).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from deblur_cli.backends.torch_backend import TorchBackend
from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

BACKENDS = ("torch", "onnx")


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a backend."""

    device_description: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 RGB in ``[0, 1]`` -> same shape, float32 (not clamped)."""
        ...


def create_backend(
    backend: str,
    model: str | nn.Module | None = None,
    weights: str | None = None,
    device: str = "auto",
    fp16: bool = False,
    bf16: bool = False,
) -> Backend:
    """Build the backend called ``backend`` (``"torch"`` or ``"onnx"``).

    The ONNX backend receives ``(model, weights, device)`` with ``device`` as the user wrote
    it (it resolves ``auto`` to an execution provider itself) and reports the provider in
    its ``device_description``.

    Raises:
        DeblurError: unknown backend, or the ONNX backend not installed (or its own errors,
            e.g. fp16 without the CUDA provider), or bf16 with the ONNX backend.
    """
    if backend == "torch":
        return TorchBackend(model, weights, device, fp16, bf16)
    if bf16:
        raise DeblurError("--bf16 runs with the torch backend only (ONNX Runtime has no bfloat16 kernels for this model)")
    if backend == "onnx":
        try:
            from deblur_cli.backends.ort import OnnxBackend
        except ModuleNotFoundError as exc:
            missing = exc.name or "onnxruntime"
            raise DeblurError(
                f"the ONNX backend is not available ({missing} is not installed); "
                "install the 'cpu' or 'gpu' extra, or use --backend torch"
            ) from None
        extra = {"fp16": True} if fp16 else {}  # a float16 export, CUDA provider only
        return OnnxBackend(model, weights, device, **extra)  # type: ignore[no-any-return]
    raise DeblurError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
