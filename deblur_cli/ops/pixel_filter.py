"""Eq. 11, the pixel-dependent filtering, in every implementation, and the one that dispatches.

For every output pixel ``j`` and channel ``c``::

    y[c, j] = sum_k V[k, j] * sum_c' W[c, c', k] * x[c', j + j_k + delta_k(j)]

with ``V = 2 sigmoid(.)`` and ``delta = Delta_max tanh(.)`` of the meta-layer's logits
(:func:`kernel_values`, :func:`bounded_offsets`). :func:`filter` is what the model calls:

* CPU inference from 32 channels: the row gather, one ``embedding_bag`` and one matrix
  product per chunk of pixels (:mod:`deblur_cli.ops.row_gather`);
* otherwise (training, GPUs, ONNX export, narrow layers) tap by tap: for each of the ``K*K``
  taps, one bilinear ``grid_sample`` gathers the shifted copy of ``x`` (zero outside the image,
  like a zero-padded convolution), it is scaled by ``V`` and the tap's ``C_out x C_in`` slice
  of ``W`` is accumulated into the output with one batched matrix product;
* without offsets (Table 1 "Ours(a)"): integer shifts, no bilinear sampling.

Only ordinary ONNX-exportable ops are used (no torchvision deform_conv). The choice depends on
the channel count (a constant of the model), the device, autograd and the export, never on the
image. :func:`pixel_dependent_filter_reference` and :func:`kernel_only_filter_reference` keep
the straightforward all-taps-at-once forms; ``tests/test_bench.py`` checks that every path
agrees with them (outputs and gradients), and :func:`implementation` runs a block with one
chosen form (benchmarks).

Why tap by tap (see ``benchmarks/README.md``): gathering all ``K*K`` taps at once makes a
``C x K*K x H x W`` tensor (184 MB per call for ``saphn-s`` at 720p) that is written, scaled
and read again, and each fresh allocation of that size costs page faults on the CPU; one tap
at a time keeps the working set ``K*K`` times smaller and reused. On the CPU, ``grid_sample``
reads a channels-last copy of ``x`` (:func:`_sampling_input`, much better cache use, identical
output), and since torch's CPU ``grid_sample`` parallelises over the batch only, the channels
are split into groups that form extra batch entries (:func:`_sampling_groups`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from deblur_cli.ops.cpu import autocast_on, in_float32
from deblur_cli.ops.row_gather import filter_by_rows, filter_by_rows_from_logits, kernel_only_by_rows, use_row_gather

Implementation = Literal["auto", "grid_sample", "reference"]
#: Set only by :func:`implementation` for the duration of its block.
_IMPLEMENTATION: ContextVar[Implementation] = ContextVar("deblur_pixel_filter", default="auto")


@contextmanager
def implementation(name: Implementation) -> Iterator[None]:
    """Within the block, Eq. 11 runs as ``"auto"`` (the default: the fastest form for the
    tensor), ``"grid_sample"`` (tap by tap, never the row gather) or ``"reference"`` (all taps
    at once, :func:`pixel_dependent_filter_reference`). For benchmarks (the before/after of the
    speed work) and tests; the output agrees up to float rounding. Per thread."""
    if name not in ("auto", "grid_sample", "reference"):
        raise ValueError(f"unknown implementation {name!r}")
    token = _IMPLEMENTATION.set(name)
    try:
        yield
    finally:
        _IMPLEMENTATION.reset(token)


def kernel_values(raw: Tensor, kernel_size: int) -> Tensor:
    """``V = 2 sigmoid(logits)``, ``(B, K*K, H, W)`` in ``(0, 2)`` (1 for zero logits), from the
    first ``K*K`` channels of the meta-layer's ``raw`` ``(B, n, H, W)``."""
    kk = kernel_size * kernel_size
    return 2.0 * torch.sigmoid(raw[:, :kk])


def bounded_offsets(raw: Tensor, kernel_size: int, max_offset: float) -> Tensor:
    """``delta = Delta_max tanh(logits)``, ``(B, 2*K*K, H, W)`` in pixels, ``(dy, dx)`` of tap
    ``k`` at channels ``2k, 2k+1``, from the last ``2*K*K`` channels of ``raw``."""
    kk = kernel_size * kernel_size
    return max_offset * torch.tanh(raw[:, -2 * kk :])


def filter(  # the operation's name as the model calls it: pixel_filter.filter (shadows the builtin here)
    x: Tensor,
    raw: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    max_offset: float,
    adaptive_kernel: bool = True,
    adaptive_offset: bool = True,
) -> Tensor:
    """Eq. 11 from the meta-layer's logits, by the fastest form for ``x``.

    Args:
        x: ``(B, C, H, W)`` input features.
        raw: ``(B, n, H, W)`` meta-layer logits: ``K*K`` kernel logits first if
            ``adaptive_kernel``, ``2*K*K`` offset logits last if ``adaptive_offset``.
        weight: ``(C_out, C, K, K)`` learnable weight ``W``; bias: ``(C_out,)`` or ``None``.
        max_offset: ``Delta_max`` in pixels.
        adaptive_kernel: ``V`` from ``raw``; else ``V = 1``.
        adaptive_offset: ``delta`` from ``raw``; else ``delta = 0`` (integer taps).

    Returns:
        ``(B, C_out, H, W)``. CPU inference with both switches on computes the activations
        inside the row gather (:func:`~deblur_cli.ops.row_gather.filter_by_rows_from_logits`),
        equal to :func:`kernel_values`/:func:`bounded_offsets` within the last bit.
    """
    b, _, h, w = x.shape
    k = weight.shape[-1]
    if (
        adaptive_kernel
        and adaptive_offset
        and _IMPLEMENTATION.get() == "auto"
        and use_row_gather(x)
        and not autocast_on(x)
    ):
        return filter_by_rows_from_logits(x, raw, max_offset, weight, bias)
    kernels = kernel_values(raw, k) if adaptive_kernel else x.new_ones(b, k * k, h, w)
    if not adaptive_offset:
        return kernel_only_filter(x, kernels, weight, bias)
    return pixel_dependent_filter(x, kernels, bounded_offsets(raw, k, max_offset), weight, bias)


def pixel_dependent_filter(x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 from kernel values and offsets: the row gather for CPU inference from 32
    channels, else tap by tap with ``grid_sample``; float32 under autocast.

    Args:
        x: ``(B, C_in, H, W)`` input features.
        kernels: ``(B, K*K, H, W)`` per-pixel kernel values ``V``.
        offsets: ``(B, 2*K*K, H, W)`` per-pixel tap offsets ``delta`` in pixels.
        weight: ``(C_out, C_in, K, K)`` fixed learnable weight ``W``.
        bias: ``(C_out,)`` or ``None``.

    Returns:
        ``(B, C_out, H, W)``; equal to :func:`pixel_dependent_filter_reference` up to float
        rounding (the same samples, summed in another order).
    """
    if autocast_on(x):
        return in_float32(pixel_dependent_filter, x, kernels, offsets, weight, bias)
    impl = _IMPLEMENTATION.get()
    if impl == "reference":
        return pixel_dependent_filter_reference(x, kernels, offsets, weight, bias)
    if impl == "auto" and use_row_gather(x):
        return filter_by_rows(x, kernels, offsets, weight, bias)
    return filter_by_grid_sample(x, kernels, offsets, weight, bias)


def kernel_only_filter(x: Tensor, kernels: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 with ``delta = 0``: the K*K integer shifts of the zero-padded input.

    CPU inference from 32 channels: the row gather with one row per tap
    (:func:`~deblur_cli.ops.row_gather.kernel_only_by_rows`); otherwise tap by tap, each shift
    a slice; float32 under autocast.

    Args:
        x: ``(B, C, H, W)``; kernels: ``(B, K*K, H, W)``; weight: ``(C_out, C, K, K)``.

    Returns:
        ``(B, C_out, H, W)``.
    """
    if autocast_on(x):
        return in_float32(kernel_only_filter, x, kernels, weight, bias)
    impl = _IMPLEMENTATION.get()
    if impl == "reference":
        return kernel_only_filter_reference(x, kernels, weight, bias)
    if impl == "auto" and use_row_gather(x):
        return kernel_only_by_rows(x, kernels, weight, bias)
    b, c, h, w = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    w_taps = _per_tap(weight)
    mode = _accumulation_mode(x)
    y: Tensor | None = None
    for i in range(k):
        for j in range(k):
            t = i * k + j
            taps = xp[:, :, i : i + h, j : j + w] * kernels[:, t : t + 1]  # (B, C, H, W), a new tensor
            y = _accumulate(y, w_taps[t], taps.reshape(b, c, h * w), mode)
    return _add_bias(y, bias, mode).reshape(b, c_out, h, w)


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


def tap_grids(offsets: Tensor, kernel_size: int) -> Tensor:
    """The grid of :func:`sampling_grid`, tap-major: ``(K*K, B, H, W, 2)``.

    Same arithmetic as :func:`sampling_grid` (so the same sample positions to the last bit),
    laid out so that each tap's grid is one contiguous ``(B, H, W, 2)`` block.
    """
    b, _, h, w = offsets.shape
    kk = kernel_size * kernel_size
    r = (kernel_size - 1) // 2
    dtype, device = offsets.dtype, offsets.device
    taps = torch.arange(kernel_size, dtype=dtype, device=device) - r
    base_y = torch.arange(h, dtype=dtype, device=device).reshape(1, 1, h, 1) + taps.repeat_interleave(
        kernel_size
    ).reshape(kk, 1, 1, 1)  # (KK, 1, H, 1), exact integers
    base_x = torch.arange(w, dtype=dtype, device=device).reshape(1, 1, 1, w) + taps.repeat(kernel_size).reshape(
        kk, 1, 1, 1
    )  # (KK, 1, 1, W)
    off = offsets.reshape(b, kk, 2, h, w).transpose(0, 1)  # (KK, B, 2, H, W)
    gy = (2.0 * (off[:, :, 0] + base_y) + 1.0) / h - 1.0
    gx = (2.0 * (off[:, :, 1] + base_x) + 1.0) / w - 1.0
    return torch.stack((gx, gy), dim=-1)


def _sampling_groups(x: Tensor) -> int:
    """Into how many channel groups to split ``x`` for ``grid_sample`` (1 = none).

    torch's CPU ``grid_sample`` parallelises over the batch dimension only, so a single image
    runs on one core; channel groups become extra batch entries (each with the same grid). Up
    to one group per thread, each of at least 8 channels (below that, copying the grid costs
    more than the sampling saves). GPUs and the ONNX export (onnxruntime parallelises its
    GridSample by itself) use 1. Depends on the channel count and the thread count, never on
    the image size.
    """
    if x.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        return 1
    c = x.shape[1]
    for g in range(min(torch.get_num_threads(), c // 8), 1, -1):
        if c % g == 0:
            return g
    return 1


def _sampling_input(x: Tensor, groups: int) -> Tensor:
    """``x`` ``(B, C, H, W)`` as ``(B * groups, C / groups, H, W)``, channels-last in memory on the CPU.

    torch's CPU ``grid_sample`` walks the channels of each output point in its inner loop; with
    channels-last input the four corners of consecutive channels share cache lines, which makes
    it several times faster (bit-identical output, still in the default layout). One copy of
    ``x`` per call. Elsewhere (GPU, ONNX export) ``x`` is only reshaped.
    """
    b, c, h, w = x.shape
    if x.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        return x.reshape(b * groups, c // groups, h, w)
    xs = x.reshape(b, groups, c // groups, h, w).permute(0, 1, 3, 4, 2).contiguous()
    return xs.reshape(b * groups, h, w, c // groups).permute(0, 3, 1, 2)


def filter_by_grid_sample(x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 with one ``grid_sample`` per tap (training, GPU and ONNX path); arguments as
    :func:`pixel_dependent_filter`."""
    b, c, h, w = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    kk = k * k
    g = _sampling_groups(x)
    grids = tap_grids(offsets, k)  # (KK, B, H, W, 2)
    if g > 1:  # every channel group samples at the same positions: (KK, B * G, H, W, 2)
        grids = grids.unsqueeze(2).expand(kk, b, g, h, w, 2).reshape(kk, b * g, h, w, 2)
    w_taps = _per_tap(weight)  # (KK, C_out, C_in)
    xs = _sampling_input(x, g)
    mode = _accumulation_mode(x)
    y: Tensor | None = None
    for t in range(kk):
        taps = F.grid_sample(xs, grids[t], mode="bilinear", padding_mode="zeros", align_corners=False)
        taps = taps.reshape(b, c, h * w)
        v = kernels[:, t].reshape(b, 1, h * w)
        y = _accumulate(y, w_taps[t], taps.mul_(v) if mode == "in_place" else taps * v, mode)
    return _add_bias(y, bias, mode).reshape(b, c_out, h, w)


def _per_tap(weight: Tensor) -> Tensor:
    """``W`` ``(C_out, C_in, K, K)`` as ``K*K`` contiguous matrices ``(K*K, C_out, C_in)``,
    row-major taps (contiguous once here, not copied by every product)."""
    return weight.flatten(2).permute(2, 0, 1).contiguous()


def _accumulation_mode(x: Tensor) -> str:
    """How to sum the taps: ``"in_place"`` (eager inference: the taps are scaled and added into
    the running sum in place, no new buffers per tap) or ``"out_of_place"`` (training, where
    autograd needs the unscaled taps, and ONNX export)."""
    if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
        return "out_of_place"
    return "in_place"


def _accumulate(y: Tensor | None, w_tap: Tensor, taps: Tensor, mode: str) -> Tensor:
    """``y + w_tap @ taps`` for one tap (``w_tap @ taps`` for the first).

    Args:
        y: running sum ``(B, C_out, HW)``, ``None`` before the first tap.
        w_tap: ``(C_out, C_in)``.
        taps: ``(B, C_in, HW)`` scaled taps.
        mode: see :func:`_accumulation_mode`.
    """
    if y is None:
        return torch.matmul(w_tap, taps)
    w_b = w_tap.expand(taps.shape[0], -1, -1)
    # out=y rather than y.baddbmm_(): the same kernel, and torch's FLOP counter sees it.
    return torch.baddbmm(y, w_b, taps, out=y) if mode == "in_place" else torch.baddbmm(y, w_b, taps)


def _add_bias(y: Tensor | None, bias: Tensor | None, mode: str) -> Tensor:
    """``y + bias`` over the channel axis of ``(B, C_out, HW)``."""
    assert y is not None  # K >= 1
    if bias is None:
        return y
    return y.add_(bias.reshape(1, -1, 1)) if mode == "in_place" else y + bias.reshape(1, -1, 1)


def pixel_dependent_filter_reference(
    x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None
) -> Tensor:
    """Eq. 11 the straightforward way (all taps at once); the reference for tests and benchmarks.

    Same arguments and result as :func:`pixel_dependent_filter`.
    """
    b, c, h, w = x.shape
    k = weight.shape[-1]
    kk = k * k
    grid = sampling_grid(offsets, k)
    taps = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    taps = taps.reshape(b, c, kk, h, w) * kernels.unsqueeze(1)  # (B, C_in, KK, H, W)
    return F.conv2d(taps.reshape(b, c * kk, h, w), _as_pointwise(weight), bias)


def kernel_only_filter_reference(x: Tensor, kernels: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The straightforward form of :func:`kernel_only_filter` (all shifts stacked), for tests
    and benchmarks; same arguments and result."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    taps = torch.stack([xp[:, :, i : i + h, j : j + w] for i in range(k) for j in range(k)], dim=2)
    taps = taps * kernels.unsqueeze(1)
    return F.conv2d(taps.reshape(b, c * k * k, h, w), _as_pointwise(weight), bias)


def _as_pointwise(weight: Tensor) -> Tensor:
    """``W`` ``(C_out, C_in, K, K)`` as a 1x1 kernel ``(C_out, C_in*K*K, 1, 1)``.

    Its input order, channel-major then tap-major, matches the gathered taps. Built with
    flatten/unsqueeze (no reshape to traced sizes) so the ONNX exporter sees a static kernel.
    """
    return weight.flatten(1).unsqueeze(-1).unsqueeze(-1)
