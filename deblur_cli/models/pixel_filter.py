"""Pixel-dependent filtering, PDF (Sec. 3.2, Eq. 11).

For every output pixel ``j`` and channel ``c``::

    y_dyn[c, j] = sum_k V[k, j] * sum_c' W[c, c', k] * x[c', j + j_k + delta_k(j)]

``W`` is an ordinary learnable ``C x C x K x K`` weight; a "meta-layer" predicts, per pixel, the
``K*K`` kernel values ``V`` and the ``2*K*K`` offsets ``delta`` (shared across channels, as in
the paper, which keeps the cost close to one convolution). Offsets are bounded by
``max_offset`` (the paper's Delta_max) through ``tanh``.

Implementation: one bilinear ``grid_sample`` gathers the ``K*K`` shifted copies of ``x``
(zero outside the image, like a zero-padded convolution), they are scaled by ``V`` and a
single 1x1 convolution applies ``W``. Only ordinary ONNX-exportable ops are used (no
torchvision deform_conv). With ``V = 1`` and ``delta = 0`` this is exactly a ``K x K``
convolution with ``W`` (the special case the paper names), which is also how the module is
initialised: the meta-layer starts at zero, so training starts from a plain convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sampling_grid(offsets: Tensor, kernel_size: int) -> Tensor:
    """Normalised ``grid_sample`` coordinates of the ``K*K`` taps of every pixel.

    Args:
        offsets: ``(B, 2*K*K, H, W)``, ``(dy, dx)`` pairs in pixels for tap ``k`` at channels
            ``2k, 2k+1``; taps are in row-major order over the ``K x K`` window.
        kernel_size: ``K``.

    Returns:
        ``(B, K*K*H, W, 2)`` grid (x, y order, ``align_corners=False`` convention) with the taps
        stacked along the height axis.
    """
    b, _, h, w = offsets.shape
    kk = kernel_size * kernel_size
    r = (kernel_size - 1) // 2
    dtype, device = offsets.dtype, offsets.device
    taps = torch.arange(kernel_size, dtype=dtype, device=device) - r
    tap_y = taps.repeat_interleave(kernel_size).reshape(1, kk, 1, 1)  # row-major window
    tap_x = taps.repeat(kernel_size).reshape(1, kk, 1, 1)
    ys = torch.arange(h, dtype=dtype, device=device).reshape(1, 1, h, 1)
    xs = torch.arange(w, dtype=dtype, device=device).reshape(1, 1, 1, w)
    off = offsets.reshape(b, kk, 2, h, w)
    pos_y = ys + tap_y + off[:, :, 0]  # (B, KK, H, W), in pixels
    pos_x = xs + tap_x + off[:, :, 1]
    # Pixel centre i maps to (2i + 1) / size - 1 with align_corners=False; valid for size 1 too.
    gy = (2.0 * pos_y + 1.0) / h - 1.0
    gx = (2.0 * pos_x + 1.0) / w - 1.0
    return torch.stack((gx, gy), dim=-1).reshape(b, kk * h, w, 2)


def pixel_dependent_filter(x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Apply Eq. 11.

    Args:
        x: ``(B, C_in, H, W)`` input features.
        kernels: ``(B, K*K, H, W)`` per-pixel kernel values ``V``.
        offsets: ``(B, 2*K*K, H, W)`` per-pixel tap offsets ``delta`` in pixels.
        weight: ``(C_out, C_in, K, K)`` fixed learnable weight ``W``.
        bias: ``(C_out,)`` or ``None``.

    Returns:
        ``(B, C_out, H, W)``.
    """
    b, c, h, w = x.shape
    k = weight.shape[-1]
    kk = k * k
    grid = sampling_grid(offsets, k)
    taps = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    taps = taps.reshape(b, c, kk, h, w) * kernels.unsqueeze(1)  # (B, C_in, KK, H, W)
    return F.conv2d(taps.reshape(b, c * kk, h, w), _as_pointwise(weight), bias)


def _as_pointwise(weight: Tensor) -> Tensor:
    """``W`` ``(C_out, C_in, K, K)`` as a 1x1 kernel ``(C_out, C_in*K*K, 1, 1)``.

    Its input order, channel-major then tap-major, matches the gathered taps. Built with
    flatten/unsqueeze (no reshape to traced sizes) so the ONNX exporter sees a static kernel.
    """
    return weight.flatten(1).unsqueeze(-1).unsqueeze(-1)


class PixelDependentFilter(nn.Module):
    """The local branch of the content-aware module (Eq. 11).

    Args:
        channels: ``C`` (input and output channels).
        kernel_size: ``K`` (5 in the paper).
        max_offset: ``Delta_max``, bound on every offset, in pixels of this feature map.
        adaptive_kernel: predict ``V`` per pixel (Table 3 "Kernel"); if off, ``V = 1``.
        adaptive_offset: predict ``delta`` per pixel (Table 3 "Offset"); if off, ``delta = 0``.
    """

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

    def forward(self, x: Tensor, maps: dict[str, Tensor] | None = None, prefix: str = "") -> Tensor:
        """Filter ``x`` (``(B, C, H, W)``) with per-pixel kernels and offsets.

        If ``maps`` is a dict, the predicted kernel values ``V`` ``(B, K*K, H, W)`` and offsets
        ``(B, 2*K*K, H, W)`` (dy, dx per tap) are stored in it under ``prefix``.
        """
        if self.meta is None:
            y = F.conv2d(x, self.weight, self.bias, padding=self.kernel_size // 2)
            return y
        kk = self.kernel_size * self.kernel_size
        raw = self.meta(x)
        b, _, h, w = x.shape
        if self.adaptive_kernel:
            kernels = 2.0 * torch.sigmoid(raw[:, :kk])  # in (0, 2), 1 at initialisation
        else:
            kernels = x.new_ones(b, kk, h, w)
        if self.adaptive_offset:
            offsets = self.max_offset * torch.tanh(raw[:, -2 * kk :])
        else:
            offsets = x.new_zeros(b, 2 * kk, h, w)
        if maps is not None:  # only what the module predicts (fixed V = 1 or delta = 0 shows nothing)
            if self.adaptive_kernel:
                maps[prefix + "kernels"] = kernels
            if self.adaptive_offset:
                maps[prefix + "offsets"] = offsets
        if not self.adaptive_offset:
            # Integer taps: an unfold-free equivalent is a conv per tap; grid_sample is exact too
            # but this keeps the "Kernel only" variant (Table 1 "Ours(a)") cheap.
            return _kernel_only_filter(x, kernels, self.weight, self.bias)
        return pixel_dependent_filter(x, kernels, offsets, self.weight, self.bias)


def _kernel_only_filter(x: Tensor, kernels: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 with ``delta = 0``: gather the K*K integer shifts by zero padding and slicing.

    Args:
        x: ``(B, C, H, W)``; kernels: ``(B, K*K, H, W)``; weight: ``(C_out, C, K, K)``.

    Returns:
        ``(B, C_out, H, W)``.
    """
    b, c, h, w = x.shape
    k = weight.shape[-1]
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    taps = torch.stack([xp[:, :, i : i + h, j : j + w] for i in range(k) for j in range(k)], dim=2)
    taps = taps * kernels.unsqueeze(1)
    return F.conv2d(taps.reshape(b, c * k * k, h, w), _as_pointwise(weight), bias)
