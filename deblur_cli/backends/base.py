"""Inference backends: what runs the network on a batch.

The engine talks to a backend only through :class:`Backend`: ``run`` on a float32
``(B, 3, H, W)`` numpy batch in ``[0, 1]`` and ``device_description``, the device/provider
that really ran, which the CLI prints. :class:`TorchBackend` is here; the ONNX Runtime
backend (``deblur_cli.backends.ort.OnnxBackend``) implements the same protocol and is only
imported when asked for (:func:`create_backend`).

Optional attributes the engine uses when present: ``info`` (the model's name, source and
sha256), ``config`` (the :class:`~deblur_cli.models.SAPHNConfig`, for memory estimates) and
``device`` (a :class:`torch.device`; CUDA means the GPU's free memory bounds tiles).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

BACKENDS = ("torch", "onnx")


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a backend."""

    device_description: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 RGB in ``[0, 1]`` -> same shape, float32 (not clamped)."""
        ...


def load_torch_model(
    model: str | nn.Module | None, weights: str | None, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """An eval-mode network on ``device`` plus its info dict (``name``, ``source``, ``sha256``).

    ``model`` may be an already-built :class:`torch.nn.Module` (used as is, moved to ``device``
    and switched to eval mode), or a registry/architecture name and/or ``weights`` resolved
    by :func:`deblur_cli.hub.loading.load_model`.
    """
    from torch import nn

    if isinstance(model, nn.Module):
        if weights is not None:
            raise DeblurError("give either a built model or weights, not both")
        info: dict[str, Any] = {"name": type(model).__name__, "source": "in-memory module", "sha256": None}
        return model.to(device).eval(), info
    if model is not None and not isinstance(model, str):
        raise DeblurError(f"model must be a name or an nn.Module, not {type(model).__name__}")
    try:
        from deblur_cli.hub.loading import load_model
    except ModuleNotFoundError as exc:  # pragma: no cover - only while loading.py is missing
        if exc.name != "deblur_cli.hub.loading":
            raise
        raise DeblurError("model loading is not available in this installation (deblur_cli.hub.loading)") from None
    module, info = load_model(model, weights, str(device))
    return module.to(device).eval(), dict(info)


class TorchBackend:
    """Run a SAPHN with PyTorch.

    Args:
        model: registry/architecture name, ``None`` for the default, or a built ``nn.Module``.
        weights: local weights path or ``hf://repo/file@rev`` (see ``deblur_cli.hub.loading``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a :class:`torch.device`.
        fp16: run under CUDA autocast in half precision (weights stay fp32, softmaxes run in
            fp32); a :class:`DeblurError` on CPU, see :func:`deblur_cli.backends.device.check_fp16`.
        bf16: run under bfloat16 autocast (CPU with native bf16, or CUDA); the filtering module
            keeps float32 (see ``pixel_filter._in_float32``). See
            :func:`deblur_cli.backends.device.resolve_precision`.

    Attributes:
        device: the resolved :class:`torch.device`.
        device_description: e.g. ``"cpu (2 threads), torch fp32"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        channels_last: activations and convolution weights are NHWC (on the CPU, see below).
        info: the model's info dict from the loader.
        config: the model's ``SAPHNConfig`` if it has one.

    On the CPU the network runs channels-last (NHWC): oneDNN's convolutions, and above all its
    transposed convolutions, are faster on it and no layout reorders are needed between layers.
    Measured with ``saphn-s`` at 1280x720, 2 threads: 1.12 s NCHW vs 0.98 s NHWC, outputs equal
    within 4e-7. The model passed in is converted in place (memory layout only).
    """

    def __init__(
        self,
        model: str | nn.Module | None = None,
        weights: str | None = None,
        device: str | torch.device = "auto",
        fp16: bool = False,
        bf16: bool = False,
    ) -> None:
        import torch

        from deblur_cli.backends.device import describe_device, resolve_device, resolve_precision

        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = resolve_precision(self.device, fp16, bf16)
        self.fp16 = self.precision == "fp16"
        self.model, self.info = load_torch_model(model, weights, self.device)
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.config = getattr(self.model, "config", None)
        self.device_description = f"{describe_device(self.device)}, torch {self.precision}"

    def run(self, batch: np.ndarray, maps: dict[str, Any] | None = None) -> np.ndarray:
        """See :meth:`Backend.run`; ``maps`` (torch only) receives the network's internal maps
        from this same pass (``SAPHN.forward``'s ``maps``, e.g. a ``viz.MapRecorder``)."""
        import torch

        x = torch.from_numpy(batch).to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        autocast = torch.autocast(self.device.type, low or torch.bfloat16, enabled=low is not None)
        with torch.inference_mode(), autocast:
            y = self.model(x) if maps is None else self.model(x, maps=maps)
        return y.float().contiguous().cpu().numpy()  # NCHW again


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
            missing = exc.name or "onnx_backend"
            raise DeblurError(
                f"the ONNX backend is not available ({missing} is not installed); "
                "install the 'cpu' or 'gpu' extra, or use --backend torch"
            ) from None
        extra = {"fp16": True} if fp16 else {}  # a float16 export, CUDA provider only
        return OnnxBackend(model, weights, device, **extra)  # type: ignore[no-any-return]
    raise DeblurError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
