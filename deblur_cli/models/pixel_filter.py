"""Pixel-dependent filtering, PDF (Sec. 3.2, Eq. 11).

For every output pixel ``j`` and channel ``c``::

    y_dyn[c, j] = sum_k V[k, j] * sum_c' W[c, c', k] * x[c', j + j_k + delta_k(j)]

``W`` is an ordinary learnable ``C x C x K x K`` weight; a "meta-layer" predicts, per pixel, the
``K*K`` kernel values ``V`` and the ``2*K*K`` offsets ``delta`` (shared across channels, as in
the paper, which keeps the cost close to one convolution). Offsets are bounded by
``max_offset`` (the paper's Delta_max) through ``tanh``.

Implementation (tap by tap; for CPU inference, one gather and one matrix product instead, see
:func:`_filter_by_rows`): for each of the ``K*K`` taps, one bilinear ``grid_sample`` gathers
the shifted copy of ``x`` (zero outside the image, like a zero-padded convolution), it
is scaled by ``V`` and the tap's ``C_out x C_in`` slice of ``W`` is accumulated into the output
with one batched matrix product. Only ordinary ONNX-exportable ops are used (no torchvision
deform_conv). With ``V = 1`` and ``delta = 0`` this is exactly a ``K x K`` convolution with
``W`` (the special case the paper names), which is also how the module is initialised: the
meta-layer starts at zero, so training starts from a plain convolution.

Why tap by tap (see ``benchmarks/README.md``): gathering all ``K*K`` taps at once makes a
``C x K*K x H x W`` tensor (184 MB per call for ``saphn-s`` at 720p) that is written, scaled
and read again, and each fresh allocation of that size costs page faults on the CPU; one tap
at a time keeps the working set ``K*K`` times smaller and reused. On the CPU, ``grid_sample``
reads a channels-last copy of ``x`` (:func:`_sampling_input`, much better cache use, identical
output), and since torch's CPU ``grid_sample`` parallelises over the batch only, the channels
are split into groups that form extra batch entries (:func:`_sampling_groups`).
:func:`pixel_dependent_filter_reference` keeps the straightforward all-taps-at-once form;
``tests/test_bench.py`` checks that both agree (outputs and gradients).
"""

from __future__ import annotations

import functools

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


def pixel_dependent_filter(x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Apply Eq. 11, one tap at a time.

    For inference on the CPU (no autograd, outside ONNX export) with at least
    :data:`ROW_GATHER_MIN_CHANNELS` channels the bilinear samples are gathered with
    ``embedding_bag`` (:func:`_filter_by_rows`); otherwise with ``grid_sample``
    (:func:`_filter_by_grid_sample`). The choice depends on the channel count (a constant of the
    model) and on whether autograd records, never on the image.

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
    if _autocast_on(x):
        return _in_float32(pixel_dependent_filter, x, kernels, offsets, weight, bias)
    if _rows_path(x):
        return _filter_by_rows(x, kernels, offsets, weight, bias)
    return _filter_by_grid_sample(x, kernels, offsets, weight, bias)


def _filter_by_grid_sample(x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 with one ``grid_sample`` per tap (GPU and ONNX path); arguments as
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


#: Channels from which the row gather beats ``grid_sample`` for inference on the CPU. Measured
#: on 2 threads, whole network at 1280x720, channels-last: ``saphn-s`` (32 channels, K=3)
#: 0.96-0.97 s vs 0.98-1.03 s with grid_sample (``saphn``, 128: see benchmarks/README.md).
#: Training keeps grid_sample: ``embedding_bag``'s backward made a ``saphn-s`` step 0.85 s
#: instead of 0.59 s.
ROW_GATHER_MIN_CHANNELS = 32

#: Compute the row gather's product with oneDNN (as a 1x1 convolution) instead of ``torch.mm``
#: (MKL): ``True``, ``False``, or ``None`` for the rule of :func:`_onednn_gemm`.
GEMM_BY_ONEDNN: bool | None = None


def _onednn_gemm(x: Tensor) -> bool:
    """Whether :func:`_gather_and_multiply` multiplies through oneDNN: inference (no autograd)
    on a CPU build with oneDNN, and :data:`GEMM_BY_ONEDNN` set, or left at ``None`` on any
    CPU not known to be Intel's (unknown vendors keep the earlier default, oneDNN).

    Why by vendor: MKL, behind ``torch.mm`` in torch's x86 builds, is Intel's library and takes
    its fast code paths on Intel CPUs only. Measured with 2 threads, torch 2.13: on an AMD EPYC
    (session 8) ``torch.mm`` of a (1310, 3200) by (3200, 128) product ran at 198 GFLOP/s and the
    same product as a channels-last 1x1 convolution at 434; on Intel Xeons (sessions 9 and 11)
    MKL was the faster one (334 against 294 GFLOP/s for 2048x2048; ``saphn-s``'s products 15
    against 20 ms per filtering module at 720p). The rule reads the vendor only, so the choice
    (and the output, which can differ in the last bit between the two) is the same on every
    run of a machine. The attention's Eq. 9 mixing (:data:`~deblur_cli.models.attention.ONEDNN_MIX`)
    has its own, vendor-blind rule.
    """
    if torch.is_grad_enabled() or not torch.backends.mkldnn.is_available():
        return False
    if GEMM_BY_ONEDNN is not None:
        return GEMM_BY_ONEDNN
    return cpu_vendor() != "GenuineIntel"


@functools.cache
def cpu_vendor() -> str:
    """This machine's CPU vendor string (``GenuineIntel``, ``AuthenticAMD``, ...): from
    ``/proc/cpuinfo`` on Linux (:func:`read_cpu_vendor`), else from ``platform.processor()``
    where it names one (Windows does: "Intel64 Family 6 ... GenuineIntel"); ``""`` if unknown."""
    vendor = read_cpu_vendor()
    if not vendor:
        import platform

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


def _rows_path(x: Tensor) -> bool:
    """Whether Eq. 11 takes the row gather (:func:`_gather_and_multiply`): :func:`cpu_inference`,
    from :data:`ROW_GATHER_MIN_CHANNELS` channels. Never depends on the image."""
    return cpu_inference(x) and x.shape[1] >= ROW_GATHER_MIN_CHANNELS


#: Zero border added around the feature map before gathering: with sample positions clamped to
#: [-1, size] per axis, both bilinear corners of any position outside the map fall in it.
_BORDER = 2


def tap_corners(offsets: Tensor, kernels: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """Row indices and weights of the four bilinear corners of every tap of every pixel.

    The rows are those of the zero-bordered, channels-last feature map that
    :func:`_filter_by_rows` gathers from: ``(B * (H + 4) * (W + 4), C)``. A position is clamped
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
    # cost 1.5-2x as much (session 11, 180x320x9 taps: 3.1 ms against 1.8 ms).
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


#: Taps gathered per chunk by :func:`_gather_and_multiply` (elements: pixels x K*K x C). 2**20
#: (4 MB, stays in cache) was the fastest of 2**20..2**24 for ``saphn``'s 128 channels, K=5.
ROW_CHUNK_ELEMENTS = 1 << 20


def _filter_by_rows(x: Tensor, kernels: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 on the CPU: gather rows of a channels-last copy of ``x`` with ``embedding_bag``,
    then one matrix product.

    Why (``benchmarks/README.md`` has the figures): torch's CPU ``grid_sample`` computes every
    output value separately and writes channel-planar output, so each sample of each channel
    touches a separate cache line. Here ``x`` is one zero-bordered ``(pixels, C)`` matrix, and
    ``embedding_bag`` (the weighted sum of a few rows per output, a kernel tuned for
    recommender systems) gathers whole contiguous channel vectors: the four bilinear corners of
    every tap of every pixel, weighted by the bilinear weights times ``V``. Gathered pixel-major,
    a chunk of pixels is a ``(pixels, K*K*C)`` matrix (an im2col of the deformed taps), and Eq. 11
    is then a single product with ``W`` as a ``(K*K*C, C_out)`` matrix: one large GEMM per
    chunk instead of ``K*K`` thin ones (session 4, ``saphn``'s 128 channels, K=5, 320x180:
    0.26 s vs 0.31 s; since session 8 the product runs through oneDNN on CPUs other than
    Intel's, see :func:`_onednn_gemm`: 0.20 s for the whole module on an AMD EPYC).
    Same arguments and result as :func:`pixel_dependent_filter`. The result is computed
    channels-last; it is returned as that view when ``x`` is channels-last (the CPU backend's
    layout, so no copy either way) and copied to NCHW otherwise.
    """
    k = weight.shape[-1]
    indices, weights = tap_corners(offsets, kernels, k)  # (P*KK, 4) each: pixel-major, tap-minor
    return _gather_and_multiply(x, _bordered_rows(x, _BORDER), indices, weights, weight, bias)


def _filter_by_rows_from_logits(
    x: Tensor, raw: Tensor, max_offset: float, weight: Tensor, bias: Tensor | None
) -> Tensor:
    """Eq. 11 on the CPU path of :func:`_filter_by_rows`, from the meta-layer's logits.

    ``raw`` ``(B, 3*K*K, H, W)``: kernel logits, then ``(dy, dx)`` logits per tap (read from the
    end, as the module reads them); usually a
    channel slice of the content-aware module's shared head convolution, channels-last. The
    module's own activations (``V = 2 sigmoid``, ``delta = Delta_max tanh``) read such a slice
    with a stride of the head's channel count, where the element-wise kernels fall back to
    scalar code (session 11, 180x320, 9 + 18 of 30 channels: 5.7 ms); copying each group of
    channels to a dense map first lets them vectorise (1.5 ms), and splitting ``dy`` from ``dx``
    here gives :func:`_corners` dense inputs too. Values equal the module's within float
    rounding (the vectorised ``tanh``/``sigmoid`` round differently in the last bit).

    Args:
        x: ``(B, C, H, W)``; max_offset: ``Delta_max``; weight: ``(C_out, C, K, K)``; bias: ``(C_out,)``.

    Returns:
        as :func:`pixel_dependent_filter`.
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
    return _gather_and_multiply(x, _bordered_rows(x, _BORDER), indices, weights, weight, bias)


def _bordered_rows(x: Tensor, border: int) -> Tensor:
    """``x`` ``(B, C, H, W)`` zero-padded by ``border`` on every side, as the channels-last row
    matrix ``(B * (H + 2 border) * (W + 2 border), C)`` that :func:`_gather_and_multiply` reads."""
    c = x.shape[1]
    return F.pad(x, (border, border, border, border)).permute(0, 2, 3, 1).contiguous().reshape(-1, c)


def _gather_and_multiply(
    x: Tensor, rows: Tensor, indices: Tensor, weights: Tensor, weight: Tensor, bias: Tensor | None
) -> Tensor:
    """Eq. 11 from precomputed sample rows: chunk by chunk of pixels, ``embedding_bag`` builds the
    ``(pixels, K*K*C)`` matrix of weighted taps, and one matrix product applies ``W``.

    Args:
        x: ``(B, C, H, W)``, for its shape, dtype and layout only.
        rows: :func:`_bordered_rows` of ``x``.
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
    onednn = _onednn_gemm(x)
    if onednn:
        # The product as a 1x1 convolution over a channels-last (1, K*K*C, 1, pixels) view of the
        # chunk: oneDNN's GEMM, 2-2.4x the throughput of torch.mm (MKL) on AMD CPUs (see
        # _onednn_gemm); the same arithmetic, summed in another order.
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


def _per_tap(weight: Tensor) -> Tensor:
    """``W`` ``(C_out, C_in, K, K)`` as ``K*K`` contiguous matrices ``(K*K, C_out, C_in)``,
    row-major taps (contiguous once here, not copied by every product)."""
    return weight.flatten(2).permute(2, 0, 1).contiguous()


def _autocast_on(x: Tensor) -> bool:
    """Whether autocast (mixed precision) is enabled for ``x``'s device type."""
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type without autocast (e.g. "meta", used to count FLOPs)
        return False


def _in_float32(fn, *tensors: Tensor | None) -> Tensor:  # type: ignore[no-untyped-def]
    """Run ``fn`` on float32 copies of ``tensors`` with autocast off.

    Under autocast the tap-by-tap sums would mix precisions in every step (slow casts and
    element-wise ops with type promotion) and the sampling positions would be rounded to 8
    bits; the filtering module therefore runs in float32, like a module autocast keeps in
    float32. The surrounding convolutions still run in low precision.
    """
    with torch.autocast(tensors[0].device.type, enabled=False):  # type: ignore[union-attr]
        return fn(*(t.float() if t is not None else None for t in tensors))


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

    def forward(
        self, x: Tensor, maps: dict[str, Tensor] | None = None, prefix: str = "", raw: Tensor | None = None
    ) -> Tensor:
        """Filter ``x`` (``(B, C, H, W)``) with per-pixel kernels and offsets.

        If ``maps`` is a dict, the predicted kernel values ``V`` ``(B, K*K, H, W)`` and offsets
        ``(B, 2*K*K, H, W)`` (dy, dx per tap) are stored in it under ``prefix``. ``raw`` is
        ``self.meta(x)`` when the caller has computed it already (the content-aware module
        runs it in one convolution with its other heads on ``x``).

        CPU inference without ``maps`` (and without autocast) takes
        :func:`_filter_by_rows_from_logits`; asking for maps computes the activations as
        written here, which can change the output in the last bit (about 1e-7).
        """
        if self.meta is None:
            y = F.conv2d(x, self.weight, self.bias, padding=self.kernel_size // 2)
            return y
        kk = self.kernel_size * self.kernel_size
        if raw is None:
            raw = self.meta(x)
        b, _, h, w = x.shape
        if maps is None and self.adaptive_kernel and self.adaptive_offset and _rows_path(x) and not _autocast_on(x):
            return _filter_by_rows_from_logits(x, raw, self.max_offset, self.weight, self.bias)
        if self.adaptive_kernel:
            kernels = 2.0 * torch.sigmoid(raw[:, :kk])  # in (0, 2), 1 at initialisation
        else:
            kernels = x.new_ones(b, kk, h, w)
        if maps is not None and self.adaptive_kernel:  # only what the module predicts
            maps[prefix + "kernels"] = kernels
        if not self.adaptive_offset:
            # Integer taps (Table 1 "Ours(a)"): no bilinear sampling, one row or slice per tap.
            return _kernel_only_filter(x, kernels, self.weight, self.bias)
        offsets = self.max_offset * torch.tanh(raw[:, -2 * kk :])
        if maps is not None:
            maps[prefix + "offsets"] = offsets
        return pixel_dependent_filter(x, kernels, offsets, self.weight, self.bias)


def _kernel_only_filter(x: Tensor, kernels: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 11 with ``delta = 0``: the K*K integer shifts of the zero-padded input.

    CPU inference: the row gather of the offsets' path with one row per tap
    (:func:`shift_rows`, :func:`_gather_and_multiply`); otherwise tap by tap, each shift a slice.

    Args:
        x: ``(B, C, H, W)``; kernels: ``(B, K*K, H, W)``; weight: ``(C_out, C, K, K)``.

    Returns:
        ``(B, C_out, H, W)``.
    """
    if _autocast_on(x):
        return _in_float32(_kernel_only_filter, x, kernels, weight, bias)
    b, c, h, w = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    r = k // 2
    if _rows_path(x):
        # CPU inference: the same one-gather-one-product form as the offsets' path, with one
        # row per tap instead of four bilinear corners.
        indices = shift_rows(b, h, w, k, x.device)
        return _gather_and_multiply(x, _bordered_rows(x, r), indices, kernels.permute(0, 2, 3, 1).reshape(-1, 1), weight, bias)
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


def _kernel_only_filter_reference(x: Tensor, kernels: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The straightforward form of :func:`_kernel_only_filter` (all shifts stacked), for tests."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    taps = torch.stack([xp[:, :, i : i + h, j : j + w] for i in range(k) for j in range(k)], dim=2)
    taps = taps * kernels.unsqueeze(1)
    return F.conv2d(taps.reshape(b, c * k * k, h, w), _as_pointwise(weight), bias)
