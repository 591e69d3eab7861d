"""A JPEG round trip in torch, for a batch on any device (baseline JPEG as libjpeg codes it).

The training data's JPEG step (:func:`deblur_cli.data.synthetic.add_noise_jpeg` calls
``cv2.imencode``) needs a CPU round trip per image; this module computes the same loss in
batch where the rest of the synthesis runs: RGB to JFIF YCbCr, 4:2:0 chroma by 2x2 averages,
8x8 DCT, quantisation by libjpeg's standard tables scaled for each sample's quality, and back
with libjpeg's default "fancy" (triangle) chroma upsampling. Integer rounding inside libjpeg's
DCT is not modelled, so the result is close to, not bit-equal with, OpenCV's (see
``tests/test_gpu_synthesis.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-T T.81 Annex K tables (libjpeg's std_luminance_quant_tbl / std_chrominance_quant_tbl).
_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
]  # fmt: skip


def quant_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """libjpeg's quantisation tables for each sample's quality (``jpeg_quality_scaling``).

    Args:
        quality: ``(B,)`` integers in ``[1, 100]``.

    Returns:
        luma and chroma tables, each ``(B, 8, 8)`` float32.
    """
    q = quality.float().clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]
    tables = []
    for base in (_LUMA, _CHROMA):
        t = torch.tensor(base, dtype=torch.float32).to(quality.device, non_blocking=True).view(1, 8, 8)
        tables.append(torch.floor((t * scale + 50.0) / 100.0).clamp(1.0, 255.0))
    return tables[0], tables[1]


def _dct_matrix(device: torch.device) -> Tensor:
    """Orthonormal 8-point DCT-II matrix ``(8, 8)`` (JPEG's DCT up to its fixed scale)."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float().to(device, non_blocking=True)


def _code_plane(x: Tensor, table: Tensor) -> Tensor:
    """DCT, quantise, dequantise and inverse DCT of ``(B, H, W)`` planes (H, W multiples of 8)."""
    b, h, w = x.shape
    d = _dct_matrix(x.device)
    blocks = x.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)  # (B, h/8, w/8, 8, 8)
    coef = d @ blocks @ d.T
    # JPEG's DCT is the orthonormal one times 8 / 8 (its quantisation divides the same values).
    t = table[:, None, None]
    coef = torch.round(coef / t) * t
    return (d.T @ coef @ d).transpose(2, 3).reshape(b, h, w)


def jpeg_round_trip(x: Tensor, quality: Tensor) -> Tensor:
    """Encode and decode each sample as baseline 4:2:0 JPEG at its own quality.

    Args:
        x: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
        quality: ``(B,)`` JPEG quality ``1..100``.

    Returns:
        ``(B, 3, H, W)`` in ``[0, 1]``, on 8-bit levels, as a decoded JPEG would be.
    """
    _, _, h, w = x.shape
    v = torch.round(x.float().clamp(0, 1) * 255.0)
    r, g, bl = v[:, 0], v[:, 1], v[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * bl + 128.0
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * bl + 128.0
    # libjpeg pads each component to whole MCUs (16 px luma for 4:2:0) by repeating the edge.
    ph, pw = -h % 16, -w % 16
    pad = lambda p: F.pad(p[:, None], (0, pw, 0, ph), mode="replicate")[:, 0]
    y, cb, cr = pad(torch.round(y)), pad(cb), pad(cr)
    cb, cr = (torch.round(F.avg_pool2d(c[:, None], 2)[:, 0]) for c in (cb, cr))
    luma_t, chroma_t = quant_tables(quality)
    # Planes whose side is not a multiple of 8 after subsampling are padded again (edge).
    y = _code_plane(y - 128.0, luma_t) + 128.0
    ch, cw = cb.shape[-2:]
    cpad = lambda p: F.pad(p[:, None], (0, -cw % 8, 0, -ch % 8), mode="replicate")[:, 0]
    cb = (_code_plane(cpad(cb) - 128.0, chroma_t) + 128.0)[:, :ch, :cw]
    cr = (_code_plane(cpad(cr) - 128.0, chroma_t) + 128.0)[:, :ch, :cw]
    y, cb, cr = (torch.round(p).clamp(0, 255) for p in (y, cb, cr))
    # libjpeg's h2v2 "fancy" upsampling is the 3/4, 1/4 triangle filter: bilinear at scale 2.
    up = lambda p: F.interpolate(p[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0]
    cb, cr = up(cb) - 128.0, up(cr) - 128.0
    y = y[:, :h, :w]
    cb, cr = cb[:, :h, :w], cr[:, :h, :w]
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136286 * cb - 0.714136286 * cr, y + 1.772 * cb], dim=1)
    return (torch.round(rgb).clamp(0, 255) / 255.0).to(x.dtype)
