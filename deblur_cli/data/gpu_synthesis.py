"""Synthetic blur in batches with torch: the degradations of :mod:`deblur_cli.data.synthetic`,
computed for a whole batch at once on any device (a GPU keeps its own training data coming).

Every function takes and returns ``(B, C, H, W)`` float tensors; each sample has its own
random parameters (``(B,)`` tensors), so one call makes a batch of different blurs:

* **linear PSFs** (:func:`line_psfs`): the reference's anti-aliased line (a capsule drawn 8x
  finer, then box-averaged), one kernel per sample, applied by one grouped convolution
  (:func:`filter_per_sample`);
* **defocus** (:func:`disk_psfs`): the reference's disk, exactly (same sub-pixel coverage);
* **camera shake** (:func:`shake_matrices`, :func:`warp_average`): the reference's trajectory
  model, vectorised, and the frames warped with ``grid_sample`` and averaged;
* **noise** (:func:`add_noise`): Poisson-Gaussian in linear light.

Conventions follow OpenCV's so that the numpy reference and this module agree: filters are
correlations (as ``cv2.filter2D``), borders reflect without repeating the edge pixel's mirror
(``BORDER_REFLECT``: ``grid_sample``'s ``"reflection"`` with ``align_corners=False``), and
warp matrices map source to destination pixels (as ``cv2.warpAffine``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def srgb_to_linear(x: Tensor) -> Tensor:
    """sRGB-encoded values in ``[0, 1]`` to linear light (IEC 61966-2-1); any shape."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Inverse of :func:`srgb_to_linear`; clips to ``[0, 1]``."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def kernel_size(extent: float) -> int:
    """Side of the kernel bank that holds lines up to ``extent`` px (the reference's rule, odd, >= 3)."""
    return max(3, math.ceil(extent) | 1)


def _supersampled_grid(size: int, supersample: int, device: torch.device) -> Tensor:
    """Sub-pixel centre coordinates ``(size * s,)`` relative to the kernel centre, in pixels."""
    n = size * supersample
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / supersample - size / 2.0


def line_psfs(lengths: Tensor, angles_deg: Tensor, size: int, supersample: int = 8) -> Tensor:
    """Anti-aliased line PSFs, one per sample, centred in a ``size x size`` bank.

    As :func:`deblur_cli.data.synthetic.linear_psf`: a line of the given length through the
    centre, half a pixel thick at the fine resolution's scale (``supersample // 2`` fine
    pixels, round caps), drawn ``supersample`` times finer and box-averaged. OpenCV's
    anti-aliasing differs in detail, so the kernels agree to a few per cent of their mass
    (see ``tests/test_gpu_synthesis.py``).

    Args:
        lengths: ``(B,)`` extent of the motion in pixels (>= 1).
        angles_deg: ``(B,)`` direction, counter-clockwise from +x (image y points down).
        size: odd kernel side, at least :func:`kernel_size` of the longest line.

    Returns:
        ``(B, size, size)`` float32 kernels, each summing to 1.
    """
    dev = lengths.device
    g = _supersampled_grid(size, supersample, dev)
    yy, xx = g[:, None], g[None, :]
    rad = torch.deg2rad(angles_deg.float())
    dx, dy = torch.cos(rad)[:, None, None], -torch.sin(rad)[:, None, None]
    half = ((lengths.float() - 1.0) / 2.0)[:, None, None]
    # Distance of every fine pixel centre to the segment [-half, +half] along (dx, dy).
    along = (xx * dx + yy * dy).clamp(-half, half)
    dist = torch.hypot(xx - along * dx, yy - along * dy)
    # Coverage of a fine pixel by a capsule of radius (s // 2) / 2 fine pixels, with a one fine
    # pixel linear ramp at its edge (anti-aliasing).
    radius = (supersample // 2) / 2.0 / supersample
    cover = ((radius - dist) * supersample + 0.5).clamp(0.0, 1.0)
    k = F.avg_pool2d(cover[:, None], supersample)[:, 0]
    return k / k.sum(dim=(1, 2), keepdim=True)


def disk_psfs(radii: Tensor, size: int, supersample: int = 8) -> Tensor:
    """Anti-aliased disks (defocus PSFs), one per sample, as :func:`deblur_cli.data.synthetic.disk_psf`.

    Args:
        radii: ``(B,)`` radius in pixels.
        size: odd kernel side, at least ``2 * ceil(max radius) + 1``.

    Returns:
        ``(B, size, size)`` float32 kernels, each summing to 1.
    """
    g = _supersampled_grid(size, supersample, radii.device)
    inside = (g[:, None] ** 2 + g[None, :] ** 2)[None] <= (radii.float() ** 2)[:, None, None]
    k = F.avg_pool2d(inside.float()[:, None], supersample)[:, 0]
    return k / k.sum(dim=(1, 2), keepdim=True)


def filter_per_sample(x: Tensor, kernels: Tensor) -> Tensor:
    """Correlate each sample with its own kernel (all channels), reflecting at the border.

    As ``cv2.filter2D`` with ``BORDER_REFLECT`` does for one image, for the whole batch at once,
    by FFT: its cost does not grow with the kernel (a 25 px line PSF costs what a 3 px one does)
    and its shapes do not depend on the kernel size, so the GPU runs the same plan every batch.

    Args:
        x: ``(B, C, H, W)`` float32.
        kernels: ``(B, k, k)``, ``k`` odd.

    Returns:
        ``(B, C, H, W)``.
    """
    b, _, h, w = x.shape
    k = kernels.shape[-1]
    p = k // 2
    # F.pad's "reflect" mirrors about the edge pixel (cv2's BORDER_REFLECT_101), not about the
    # pixel edge as BORDER_REFLECT does: mirror by hand; replicate where the image is too small.
    padded = _reflect_pad(x, p) if p <= min(h, w) else F.pad(x, (p, p, p, p), mode="replicate")
    hp, wp = padded.shape[-2:]
    # Correlation with K is circular convolution with K flipped and rolled so that its centre
    # sits at (0, 0); the p-pixel border absorbs the wrap-around, the interior is exact.
    bank = torch.zeros(b, hp, wp, device=x.device, dtype=torch.float32)
    bank[:, :k, :k] = kernels.float().flip(-1, -2)
    bank = torch.roll(bank, shifts=(-p, -p), dims=(-2, -1))
    spectrum = torch.fft.rfft2(padded.float()) * torch.fft.rfft2(bank)[:, None]
    out = torch.fft.irfft2(spectrum, s=(hp, wp))
    return out[..., p : p + h, p : p + w].to(x.dtype)


def _reflect_pad(x: Tensor, p: int) -> Tensor:
    """Pad the last two dims by ``p`` mirroring about the pixel edge (``fedcba|abcdef``)."""
    if p == 0:
        return x
    left, right = x[..., :, :p].flip(-1), x[..., :, -p:].flip(-1)
    x = torch.cat([left, x, right], dim=-1)
    top, bottom = x[..., :p, :].flip(-2), x[..., -p:, :].flip(-2)
    return torch.cat([top, x, bottom], dim=-2)


def shake_matrices(
    coef: Tensor, mix: Tensor, centre: Tensor, size: tuple[int, int], extent: Tensor, frames: int
) -> Tensor:
    """Affine warps along camera trajectories, as :func:`deblur_cli.data.synthetic.shake_warps`.

    The random draws are inputs (the reference draws them in this order: ``coef``, ``mix``,
    ``centre``), so the same numbers give the same matrices.

    Args:
        coef: ``(B, 4, 2)`` linear and quadratic coefficient of rotation, x and y translation
            and zoom (standard normal).
        mix: ``(B, 3)`` share of rotation, translation and zoom (Dirichlet ``[1, 1, 0.5]``).
        centre: ``(B, 2)`` rotation centre ``(cx, cy)`` in pixels.
        size: ``(h, w)`` of the images to warp.
        extent: ``(B,)`` largest displacement of a corner, in pixels.
        frames: number of frames (odd keeps the identity in the middle).

    Returns:
        ``(B, frames, 2, 3)`` float32 matrices in OpenCV's convention (source to destination).
    """
    h, w = size
    dev = coef.device
    coef, mix, centre, extent = coef.double(), mix.double(), centre.double(), extent.double()
    t = torch.linspace(-0.5, 0.5, frames, device=dev, dtype=torch.float64)
    paths = coef[:, :, :1] * t + coef[:, :, 1:] * t**2 * 0.6  # (B, 4, F)
    paths = paths - paths[:, :, frames // 2 : frames // 2 + 1]
    ang = paths[:, 0] * mix[:, :1]
    tx, ty = paths[:, 1] * mix[:, 1:2], paths[:, 2] * mix[:, 1:2]
    zoom = paths[:, 3] * mix[:, 2:3]
    cx, cy = centre[:, 0:1], centre[:, 1:2]
    corners = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], device=dev, dtype=torch.float64)
    radius = torch.hypot(corners[None, :, 0] - cx, corners[None, :, 1] - cy).amax(dim=1, keepdim=True)
    disp = torch.stack([ang.abs() * radius, torch.hypot(tx, ty), zoom.abs() * radius]).amax(dim=(0, 2)) + 1e-9
    scale = (extent / disp)[:, None]
    # cv2.getRotationMatrix2D(centre, degrees(a), s): [[al, be, (1-al)cx - be cy], [-be, al, be cx + (1-al) cy]]
    a = ang * scale
    s = 1.0 + zoom * scale
    al, be = s * torch.cos(a), s * torch.sin(a)
    row0 = torch.stack([al, be, (1 - al) * cx - be * cy + tx * scale], dim=-1)
    row1 = torch.stack([-be, al, be * cx + (1 - al) * cy + ty * scale], dim=-1)
    return torch.stack([row0, row1], dim=-2).float()


def warp_average(x: Tensor, mats: Tensor) -> Tensor:
    """Average of ``x`` warped by each of its frames' matrices (bilinear, reflecting border).

    Args:
        x: ``(B, C, H, W)``.
        mats: ``(B, F, 2, 3)`` OpenCV-convention affine matrices (source to destination).

    Returns:
        ``(B, C, H, W)``, the mean over the ``F`` warped images.
    """
    b, c, h, w = x.shape
    frames = mats.shape[1]
    m = mats.double().cpu()  # a few 2x3 matrices: inverted on the host, not by a GPU solver
    # Inverse of [[A, t], [0, 1]]: destination pixel -> source pixel, as cv2.warpAffine samples.
    a_inv = torch.linalg.inv(m[..., :2])
    t_inv = -(a_inv @ m[..., 2:])
    inv = torch.cat([a_inv, t_inv], dim=-1)  # (B, F, 2, 3) in pixels
    # Pixel coordinates -> grid_sample's normalised ones (align_corners=False): u = (2x + 1) / w - 1.
    to_norm = torch.tensor([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]],
                           dtype=torch.float64)  # fmt: skip
    from_norm = torch.linalg.inv(to_norm)
    theta = to_norm[:2] @ torch.cat([inv, _last_row(inv)], dim=-2) @ from_norm
    theta = theta.to(x.device, x.dtype, non_blocking=True)  # not waiting for the GPU's queue
    acc = torch.zeros_like(x)
    for f in range(frames):
        grid = F.affine_grid(theta[:, f], [b, c, h, w], align_corners=False)
        acc = acc + F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return acc / frames


def _last_row(m: Tensor) -> Tensor:
    row = torch.zeros_like(m[..., :1, :])
    row[..., 0, 2] = 1.0
    return row


def add_noise(x: Tensor, read_sigma: Tensor, shot: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Poisson-Gaussian noise in linear light: variance ``read_sigma**2 + shot * signal``.

    Args:
        x: ``(B, C, H, W)`` sRGB in ``[0, 1]``.
        read_sigma: ``(B,)`` read-noise standard deviation (0: none).
        shot: ``(B,)`` shot-noise variance per unit of linear signal.
        generator: random generator on ``x``'s device.

    Returns:
        ``(B, C, H, W)`` sRGB, clipped to ``[0, 1]``.
    """
    lin = srgb_to_linear(x)
    std = torch.sqrt(read_sigma.view(-1, 1, 1, 1) ** 2 + shot.view(-1, 1, 1, 1) * lin)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return linear_to_srgb(lin + noise * std)


def quantize(x: Tensor) -> Tensor:
    """Round to 8-bit levels (what a saved photo holds), keep the float dtype."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
