"""The torch backend: run SAPHN with PyTorch on the CPU or CUDA, in fp32, fp16 or bf16.

:class:`TorchBackend` implements :class:`~deblur_cli.backends.base.Backend`; torch is imported
when one is built, not with this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deblur_cli.errors import DeblurError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


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
    from deblur_cli.hub.loading import load_model

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
            keeps float32 (see :func:`deblur_cli.ops.cpu.in_float32`). See
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

    def run(self, batch: np.ndarray, maps: Any | None = None) -> np.ndarray:
        """See :meth:`Backend.run`; ``maps`` (torch only), a
        :class:`~deblur_cli.viz.recording.MapRecorder`, records the network's internal maps from
        this same pass through its forward hooks (the output is the same with or without)."""
        from contextlib import nullcontext

        import torch

        x = torch.from_numpy(batch).to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        autocast = torch.autocast(self.device.type, low or torch.bfloat16, enabled=low is not None)
        recording = nullcontext() if maps is None else maps.attach(self.model)
        with torch.inference_mode(), autocast, recording:
            y = self.model(x)
        return y.float().contiguous().cpu().numpy()  # NCHW again
