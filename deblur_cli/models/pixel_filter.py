"""Pixel-dependent filtering, PDF (Sec. 3.2, Eq. 11).

For every output pixel ``j`` and channel ``c``::

    y_dyn[c, j] = sum_k V[k, j] * sum_c' W[c, c', k] * x[c', j + j_k + delta_k(j)]

``W`` is an ordinary learnable ``C x C x K x K`` weight; a "meta-layer" predicts, per pixel, the
``K*K`` kernel values ``V = 2 sigmoid(.)`` and the ``2*K*K`` offsets
``delta = Delta_max tanh(.)`` (shared across channels, as in the paper, which keeps the cost
close to one convolution; ``Delta_max`` is the paper's bound on the offsets). With ``V = 1``
and ``delta = 0`` this is exactly a ``K x K`` convolution with ``W`` (the special case the
paper names), which is also how the module is initialised: the meta-layer starts at zero, so
training starts from a plain convolution.

The filtering itself, with bilinear samples at the offset taps (zero outside the image, like a
zero-padded convolution), is :func:`deblur_cli.ops.pixel_filter.filter`: one name for the
straightforward form, the tap-by-tap form (training, GPUs, ONNX) and the CPU inference form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur_cli.ops import pixel_filter


class PixelDependentFilter(nn.Module):
    """The local branch of the content-aware module (Eq. 11).

    Args:
        channels: ``C`` (input and output channels).
        kernel_size: ``K`` (5 in the paper).
        max_offset: ``Delta_max``, bound on every offset, in pixels of this feature map.
        adaptive_kernel: predict ``V`` per pixel (Table 3 "Kernel"); if off, ``V = 1``.
        adaptive_offset: predict ``delta`` per pixel (Table 3 "Offset"); if off, ``delta = 0``.
    """

    #: What :meth:`intermediates` can return.
    map_names = ("kernels", "offsets")

    def __init__(
        self,
        channels: int,
        kernel_size: int = 5,
        max_offset: float = 3.0,
        adaptive_kernel: bool = True,
        adaptive_offset: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.max_offset = max_offset
        self.adaptive_kernel = adaptive_kernel
        self.adaptive_offset = adaptive_offset
        kk = kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default
        out = (kk if adaptive_kernel else 0) + (2 * kk if adaptive_offset else 0)
        # The meta-layer; zero-initialised so that V = 1 and delta = 0 at the start of training.
        self.meta = nn.Conv2d(channels, out, 3, padding=1) if out else None
        if self.meta is not None:
            nn.init.zeros_(self.meta.weight)
            nn.init.zeros_(self.meta.bias)

    def forward(self, x: Tensor, raw: Tensor | None = None) -> Tensor:
        """Filter ``x`` ``(B, C, H, W)`` with per-pixel kernels and offsets: ``(B, C, H, W)``.

        ``raw`` is ``self.meta(x)`` ``(B, 3*K*K, H, W)`` (or fewer channels, as the switches
        say) when the caller has computed it already: the content-aware module runs it in one
        convolution with its other heads on ``x``.
        """
        if self.meta is None:  # V = 1, delta = 0: a plain convolution
            return F.conv2d(x, self.weight, self.bias, padding=self.kernel_size // 2)
        if raw is None:
            raw = self.meta(x)
        return pixel_filter.filter(
            x, raw, self.weight, self.bias, self.max_offset, self.adaptive_kernel, self.adaptive_offset
        )

    def intermediates(self, x: Tensor, raw: Tensor | None = None) -> dict[str, Tensor]:
        """What the meta-layer predicts for the same arguments as :meth:`forward`: ``kernels``
        ``V`` ``(B, K*K, H, W)`` and ``offsets`` ``delta`` ``(B, 2*K*K, H, W)`` (``(dy, dx)`` per
        tap, row-major taps, in pixels), each only if the module predicts it."""
        if self.meta is None:
            return {}
        if raw is None:
            raw = self.meta(x)
        out = {}
        if self.adaptive_kernel:
            out["kernels"] = pixel_filter.kernel_values(raw, self.kernel_size)
        if self.adaptive_offset:
            out["offsets"] = pixel_filter.bounded_offsets(raw, self.kernel_size, self.max_offset)
        return out
