"""Eq. 11 for CPU inference as one gather and one matrix product: the row gather.

Why (``benchmarks/README.md`` has the figures): torch's CPU ``grid_sample`` computes every
output value separately and writes channel-planar output, so each sample of each channel
touches a separate cache line. Here ``x`` is one zero-bordered ``(pixels, C)`` matrix, and
``embedding_bag`` (the weighted sum of a few rows per output, a kernel tuned for recommender
systems) gathers whole contiguous channel vectors: the four bilinear corners of every tap of
every pixel, weighted by the bilinear weights times ``V``. Gathered pixel-major, a chunk of
pixels is a ``(pixels, K*K*C)`` matrix (an im2col of the deformed taps), and Eq. 11 is then a
single product with ``W`` as a ``(K*K*C, C_out)`` matrix: one large GEMM per chunk instead of
``K*K`` thin ones (``saphn``'s 128 channels, K=5, 320x180: 0.26 s against 0.31 s; with the
product through oneDNN on an AMD EPYC, see :func:`onednn_gemm`, 0.20 s for the whole module).

Integer taps (no offsets, Table 1 "Ours(a)") use the same product with one row per tap
(:func:`shift_rows`). Results equal :mod:`deblur_cli.ops.pixel_filter`'s reference forms up to
float rounding (the same samples, summed in another order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deblur_cli.ops.cpu import cpu_inference, cpu_vendor, onednn_available, onednn_products_setting

#: Channels from which the row gather beats ``grid_sample`` for inference on the CPU. Measured
#: on 2 threads, whole network at 1280x720, channels-last: ``saphn-s`` (32 channels, K=3)
#: 0.96-0.97 s vs 0.98-1.03 s with grid_sample (``saphn``, 128: see benchmarks/README.md).
#: Training keeps grid_sample: ``embedding_bag``'s backward made a ``saphn-s`` step 0.85 s
#: instead of 0.59 s.
ROW_GATHER_MIN_CHANNELS = 32

#: Taps gathered per chunk by :func:`gather_and_multiply` (elements: pixels x K*K x C). 2**20
#: (4 MB, stays in cache) was the fastest of 2**20..2**24 for ``saphn``'s 128 channels, K=5.
ROW_CHUNK_ELEMENTS = 1 << 20

#: Zero border added around the feature map before gathering: with sample positions clamped to
#: [-1, size] per axis, both bilinear corners of any position outside the map fall in it.
_BORDER = 2


def use_row_gather(x: Tensor) -> bool:
    """Whether Eq. 11 on ``x`` ``(B, C, H, W)`` takes the row gather: CPU inference
    (:func:`~deblur_cli.ops.cpu.cpu_inference`) from :data:`ROW_GATHER_MIN_CHANNELS` channels.
    Depends on the channel count (a constant of the model), never on the image."""
    return cpu_inference(x) and x.shape[1] >= ROW_GATHER_MIN_CHANNELS


def onednn_gemm(x: Tensor, vendor: str, forced: bool | None = None) -> bool:
    """Whether :func:`gather_and_multiply` multiplies through oneDNN (as a 1x1 convolution)
    rather than ``torch.mm`` (MKL): inference (no autograd) on a CPU build with oneDNN, and
    ``forced`` if given, else on any CPU whose ``vendor`` is not Intel's (unknown vendors too).

    Why by vendor: MKL, behind ``torch.mm`` in torch's x86 builds, is Intel's library and takes
    its fast code paths on Intel CPUs only. Measured with 2 threads, torch 2.13: on an AMD EPYC
    ``torch.mm`` of a (1310, 3200) by (3200, 128) product ran at 198 GFLOP/s and the same
    product as a channels-last 1x1 convolution at 434; on Intel Xeons MKL was the faster one
    (334 against 294 GFLOP/s for 2048x2048; ``saphn-s``'s products 15 against 20 ms per
    filtering module at 720p). The rule reads the vendor only, so the choice (and the output,
    which can differ in the last bit between the two) is the same on every run of a machine.
    The attention's Eq. 9 mixing has its own, vendor-blind rule
    (:func:`deblur_cli.ops.attention.onednn_mix`).

    Args:
        x: ``(B, C, H, W)`` features being filtered.
        vendor: the CPU vendor string (:func:`~deblur_cli.ops.cpu.cpu_vendor`).
        forced: ``True``/``False`` to choose oneDNN/MKL wherever both can run (benchmarks and
            tests: :func:`~deblur_cli.ops.cpu.onednn_products`).
    """
    if torch.is_grad_enabled() or not onednn_available():
        return False
    if forced is not None:
        return forced
    return vendor != "GenuineIntel"


def tap_corners(offsets: Tensor, kernels: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """Row indices and weights of the four bilinear corners of every tap of every pixel.

    The rows are those of the zero-bordered, channels-last feature map that
    :func:`filter_by_rows` gathers from: ``(B * (H + 4) * (W + 4), C)``. A position is clamped
    to ``[-1, H]`` x ``[-1, W]`` first: beyond that both corners are zero rows either way, so
    the result (and its gradient) equals ``grid_sample``'s zero padding for any offset.

    Args:
        offsets: ``(B, 2*K*K, H, W)``, ``(dy, dx)`` per tap (row-major taps), in pixels.
        kernels: ``(B, K*K, H, W)`` kernel values ``V``, folded into the weights.
        kernel_size: ``K``.

    Returns:
        ``(indices, weights)``, each ``(B*H*W*K*K, 4)`` (int32 and float), pixel-major and
        tap-minor: one bag of four corners per tap, in the order ``embedding_bag`` fills the
        ``(pixels, K*K*C)`` matrix.
    """
    b, _, h, w = offsets.shape
    kk = kernel_size * kernel_size
    # (B, H, W, KK, 2); a view when the offsets are channels-last (the CPU backend's layout)
    off = offsets.permute(0, 2, 3, 1).reshape(b, h, w, kk, 2)
    return _corners(off[..., 0], off[..., 1], kernels.permute(0, 2, 3, 1), kernel_size)


def _corners(dy: Tensor, dx: Tensor, v: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """:func:`tap_corners` from pixel-major maps: ``dy``, ``dx`` and ``v`` are ``(B, H, W, K*K)``
    (offsets in pixels and kernel values, any strides). Same results as :func:`tap_corners`."""
    b, h, w, kk = v.shape
    r = (kernel_size - 1) // 2
    p = _BORDER
    dtype, device = dy.dtype, dy.device
    taps = torch.arange(kernel_size, dtype=dtype, device=device) - r
    ys = torch.arange(h, dtype=dtype, device=device).reshape(1, h, 1, 1)
    xs = torch.arange(w, dtype=dtype, device=device).reshape(1, 1, w, 1)
    pos_y = (dy + (ys + taps.repeat_interleave(kernel_size))).clamp_(-1.0, h)  # (B, H, W, KK)
    pos_x = (dx + (xs + taps.repeat(kernel_size))).clamp_(-1.0, w)
    y0, x0 = torch.floor(pos_y), torch.floor(pos_x)
    wp = w + 2 * p
    # Row of the top-left corner, exact in float32 below 2**24 rows (a 268-megapixel input at
    # quarter resolution), then int32 like the other corners: +1 (right), +wp (below).
    image = torch.arange(b, dtype=dtype, device=device).reshape(b, 1, 1, 1) * ((h + 2 * p) * wp) + (p * wp + p)
    top_left = (y0 * wp + x0 + image).to(torch.int32)
    # The corners interleaved in a trailing dim of 4, written as four strided passes over whole
    # maps: a broadcast add (or a stack) over such a short trailing dim does not vectorise and
    # cost 1.5-2x as much (180x320x9 taps: 3.1 ms against 1.8 ms).
    indices = torch.empty(b, h, w, kk, 4, dtype=torch.int32, device=device)
    for i, step in enumerate((0, 1, wp, wp + 1)):
        torch.add(top_left, step, out=indices[..., i])
    fy, fx = pos_y - y0, pos_x - x0  # (B, H, W, KK); gradients flow through these
    # The bilinear weights with V folded in, corners TL, TR, BL, BR: each product over whole
    # (B, H, W, KK) maps. (A broadcast outer product over (2, 1) x (1, 2) trailing dims computed
    # the same values 2-3x slower: the kernels do not vectorise over such short dims.)
    below = fy * v
    above = v - below
    above_r, below_r = above * fx, below * fx
    if torch.is_grad_enabled():  # autograd cannot record out= writes: one interleaving stack
        weights = torch.stack((above - above_r, above_r, below - below_r, below_r), dim=-1)
    else:
        weights = torch.empty(b, h, w, kk, 4, dtype=dtype, device=device)
        torch.sub(above, above_r, out=weights[..., 0])
        weights[..., 1].copy_(above_r)
        torch.sub(below, below_r, out=weights[..., 2])
        weights[..., 3].copy_(below_r)
    return indices.reshape(-1, 4), weights.reshape(-1, 4)


def filter_by_rows(x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 by the row gather: rows of a channels-last copy of ``x`` gathered with
    ``embedding_bag``, then one matrix product per chunk of pixels.

    Args:
        x: ``(B, C, H, W)``; kernels: ``(B, K*K, H, W)`` ``V``; offsets: ``(B, 2*K*K, H, W)``
            ``delta`` in pixels; weight: ``(C_out, C, K, K)``; bias: ``(C_out,)`` or ``None``.

    Returns:
        ``(B, C_out, H, W)``, computed channels-last; returned as that view when ``x`` is
        channels-last (the CPU backend's layout, so no copy either way) and copied to NCHW
        otherwise.
    """
    k = weight.shape[-1]
    indices, weights = tap_corners(offsets, kernels, k)  # (P*KK, 4) each: pixel-major, tap-minor
    return gather_and_multiply(x, bordered_rows(x, _BORDER), indices, weights, weight, bias)


def filter_by_rows_from_logits(
    x: Tensor, raw: Tensor, max_offset: float, weight: Tensor, bias: Tensor | None
) -> Tensor:
    """:func:`filter_by_rows` from the meta-layer's logits, the activations done here.

    ``raw`` ``(B, 3*K*K, H, W)``: kernel logits, then ``(dy, dx)`` logits per tap (read from the
    end, as the module reads them); usually a channel slice of the content-aware module's
    shared head convolution, channels-last. The module's activations (``V = 2 sigmoid``,
    ``delta = Delta_max tanh``) read such a slice with a stride of the head's channel count,
    where the element-wise kernels fall back to scalar code (180x320, 9 + 18 of 30 channels:
    5.7 ms); copying each group of channels to a dense map first lets them vectorise (1.5 ms),
    and splitting ``dy`` from ``dx`` here gives :func:`_corners` dense inputs too. Values equal
    the module's within float rounding (the vectorised ``tanh``/``sigmoid`` round differently
    in the last bit).

    Args:
        x: ``(B, C, H, W)``; max_offset: ``Delta_max``; weight: ``(C_out, C, K, K)``; bias: ``(C_out,)``.

    Returns:
        as :func:`filter_by_rows`.
    """
    k = weight.shape[-1]
    kk = k * k
    cl = torch.channels_last

    def dense(t: Tensor) -> Tensor:  # (B, n, H, W) channel slice -> dense, as (B, H, W, n)
        return t.contiguous(memory_format=cl).permute(0, 2, 3, 1)

    v = torch.sigmoid(dense(raw[:, :kk])).mul_(2.0)
    dy = torch.tanh(dense(raw[:, -2 * kk :: 2])).mul_(max_offset)
    dx = torch.tanh(dense(raw[:, 1 - 2 * kk :: 2])).mul_(max_offset)
    indices, weights = _corners(dy, dx, v, k)
    return gather_and_multiply(x, bordered_rows(x, _BORDER), indices, weights, weight, bias)


def kernel_only_by_rows(x: Tensor, kernels: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 with ``delta = 0`` by the row gather: one row per tap (:func:`shift_rows`)
    instead of four bilinear corners.

    Args:
        x: ``(B, C, H, W)``; kernels: ``(B, K*K, H, W)``; weight: ``(C_out, C, K, K)``; bias: ``(C_out,)``.

    Returns:
        as :func:`filter_by_rows`.
    """
    b, _, h, w = x.shape
    k = weight.shape[-1]
    indices = shift_rows(b, h, w, k, x.device)
    return gather_and_multiply(
        x, bordered_rows(x, k // 2), indices, kernels.permute(0, 2, 3, 1).reshape(-1, 1), weight, bias
    )


def bordered_rows(x: Tensor, border: int) -> Tensor:
    """``x`` ``(B, C, H, W)`` zero-padded by ``border`` on every side, as the channels-last row
    matrix ``(B * (H + 2 border) * (W + 2 border), C)`` that :func:`gather_and_multiply` reads."""
    c = x.shape[1]
    return F.pad(x, (border, border, border, border)).permute(0, 2, 3, 1).contiguous().reshape(-1, c)


def gather_and_multiply(
    x: Tensor, rows: Tensor, indices: Tensor, weights: Tensor, weight: Tensor, bias: Tensor | None
) -> Tensor:
    """Eq. 11 from precomputed sample rows: chunk by chunk of pixels, ``embedding_bag`` builds the
    ``(pixels, K*K*C)`` matrix of weighted taps, and one matrix product applies ``W`` (through
    oneDNN or ``torch.mm`` as :func:`onednn_gemm` decides).

    Args:
        x: ``(B, C, H, W)``, for its shape, dtype and layout only.
        rows: :func:`bordered_rows` of ``x``.
        indices: ``(B*H*W*K*K, S)`` int32 rows to sum per tap (``S`` = 4 bilinear corners, or
            1 for integer taps), pixel-major and tap-minor.
        weights: ``(B*H*W*K*K, S)`` their weights (``V`` folded in).
        weight: ``(C_out, C, K, K)``; bias: ``(C_out,)`` or ``None``.

    Returns:
        ``(B, C_out, H, W)``: a channels-last view when ``x`` is channels-last, else contiguous.
    """
    b, c, h, w = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    kk = k * k
    n = b * h * w
    step = max(1, ROW_CHUNK_ELEMENTS // (kk * c))
    onednn = onednn_gemm(x, cpu_vendor(), onednn_products_setting())
    if onednn:
        # The product as a 1x1 convolution over a channels-last (1, K*K*C, 1, pixels) view of the
        # chunk: oneDNN's GEMM, 2-2.4x the throughput of torch.mm (MKL) on AMD CPUs (see
        # onednn_gemm); the same arithmetic, summed in another order.
        w_conv = weight.permute(0, 2, 3, 1).reshape(c_out, kk * c, 1, 1)  # input t*C + c_in
    else:
        w_all = weight.permute(2, 3, 1, 0).reshape(kk * c, c_out)  # row t*C + c_in = W[:, c_in, ky, kx]
    chunks = []
    out = None if torch.is_grad_enabled() else torch.empty(n, c_out, dtype=x.dtype, device=x.device)
    for s in range(0, n, step):
        e = min(n, s + step)
        taps = F.embedding_bag(indices[s * kk : e * kk], rows, per_sample_weights=weights[s * kk : e * kk], mode="sum")
        taps = taps.view(e - s, kk * c)
        if out is None:  # autograd records (a direct call; the dispatcher avoids it): no out=
            chunks.append(taps @ w_all if bias is None else torch.addmm(bias, taps, w_all))
        elif onednn:
            part = F.conv2d(taps.view(1, 1, e - s, kk * c).permute(0, 3, 1, 2), w_conv, bias)  # (1, C_out, 1, e-s)
            out[s:e].view(1, 1, e - s, c_out).permute(0, 3, 1, 2).copy_(part)
        elif bias is None:
            torch.mm(taps, w_all, out=out[s:e])
        else:
            torch.addmm(bias, taps, w_all, out=out[s:e])
    y = torch.cat(chunks) if out is None else out
    y = y.view(b, h, w, c_out).permute(0, 3, 1, 2)
    return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()


def shift_rows(batch: int, height: int, width: int, kernel_size: int, device: torch.device | None = None) -> Tensor:
    """Row indices of the ``K*K`` integer taps of every pixel in the ``K // 2``-bordered row matrix.

    Pixel ``(y, x)`` of image ``n``, tap ``(i, j)`` (row-major) reads input pixel
    ``(y + i - K//2, x + j - K//2)``, that is bordered row
    ``n (H + 2r)(W + 2r) + (y + i)(W + 2r) + x + j``. Depends only on the sizes.

    Returns:
        ``(B*H*W*K*K, 1)`` int32, pixel-major and tap-minor (one single-row bag per tap).
    """
    r = kernel_size // 2
    hp, wp = height + 2 * r, width + 2 * r
    kw = dict(dtype=torch.int32, device=device)
    pixel = (
        (torch.arange(batch, **kw) * (hp * wp)).reshape(batch, 1, 1)
        + (torch.arange(height, **kw) * wp).reshape(1, height, 1)
        + torch.arange(width, **kw).reshape(1, 1, width)
    )
    tap = ((torch.arange(kernel_size, **kw) * wp).reshape(-1, 1) + torch.arange(kernel_size, **kw)).reshape(-1)
    return (pixel.unsqueeze(-1) + tap).reshape(-1, 1)
