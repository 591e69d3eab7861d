"""Synthetic motion blur: blurred/sharp pairs made from sharp photographs.

Three degradations, composable, all computed in linear light (sRGB decoded, blurred, encoded
again), since a camera integrates photons, not gamma-encoded values:

(a) **linear motion PSF**: a line of random angle and length, anti-aliased, convolved with the
    image (uniform blur, the paper's Sec. 4.4 experiment);
(b) **camera shake**: a smooth random trajectory of rotation about an off-centre point,
    translation and zoom; the frames along it are warped and averaged, and the *middle*
    frame is the sharp target, so the blur varies across the image as in GoPro (whose blurred
    frames are averages of consecutive sharp video frames);
(c) **sensor noise and JPEG**: Poisson-Gaussian noise in linear light and a JPEG round trip.

Crops are made with a margin so that neither the convolution nor the warps see the border.
OpenCV does the filtering, warping and JPEG coding; the trajectory model is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Rng = np.random.Generator


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in ``[0, 1]`` to linear light (IEC 61966-2-1)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_to_linear`; clips to ``[0, 1]``."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def linear_psf(length: float, angle_deg: float, supersample: int = 8) -> np.ndarray:
    """An anti-aliased line PSF.

    Args:
        length: extent of the motion in pixels (>= 1; 1 is the identity).
        angle_deg: direction, counter-clockwise from the +x axis (image x right, y down).
        supersample: the line is drawn this many times finer, then box-downsampled.

    Returns:
        ``(k, k)`` float32 kernel summing to 1, ``k`` odd.
    """
    k = int(math.ceil(length)) | 1
    k = max(k, 3)
    s = supersample
    big = np.zeros((k * s, k * s), np.float32)
    c = (k * s - 1) / 2.0
    half = (length - 1) * s / 2.0
    dx, dy = math.cos(math.radians(angle_deg)), -math.sin(math.radians(angle_deg))
    p0 = (c - dx * half, c - dy * half)
    p1 = (c + dx * half, c + dy * half)
    shift = 4  # cv2.line sub-pixel coordinates with 4 fractional bits
    f = 1 << shift
    cv2.line(
        big,
        (round(p0[0] * f), round(p0[1] * f)),
        (round(p1[0] * f), round(p1[1] * f)),
        1.0,
        thickness=max(1, s // 2),
        lineType=cv2.LINE_AA,
        shift=shift,
    )
    kernel = cv2.resize(big, (k, k), interpolation=cv2.INTER_AREA)
    return (kernel / kernel.sum()).astype(np.float32)


@dataclass(frozen=True)
class BlurSettings:
    """Ranges the random degradations are drawn from (pixels at the working resolution).

    Attributes:
        linear_prob: probability of (a) linear PSF, else (b) camera shake.
        length: ``(min, max)`` blur extent: line length for (a), largest displacement along the
            trajectory for (b).
        sharp_prob: probability of a nearly sharp sample (extent 1-3 px), so that the network
            learns to leave sharp images alone.
        identity_prob: probability of no blur at all (input = target before noise and JPEG):
            a sharp photograph must come back unchanged. Drawn before ``sharp_prob``, and only
            when it is above 0, so that runs without it draw the same random numbers as before.
        noise_prob: probability of adding Poisson-Gaussian noise.
        noise_sigma: ``(min, max)`` read noise sigma in linear light.
        shot_noise: ``(min, max)`` shot-noise variance per unit of linear signal (2e-4: a
            1.4 % standard deviation at white, a clean photo at a moderate ISO; much more and
            the network learns to smooth, which costs detail on clean photos).
        jpeg_prob: probability of a JPEG round trip; quality drawn from ``jpeg_quality``.
        jpeg_quality: ``(min, max)``.
        frames: number of frames averaged along a camera-shake trajectory.
        defocus_prob: probability that the photograph is first defocused (by
            :func:`defocus`) so that the *target* itself contains defocus blur: the network
            must learn to remove motion blur and keep defocus (shallow depth of field), which
            the mostly all-sharp training photographs do not teach. 0 by default (stage 1 of the shipped
            weights, ``configs/train/saphn-s.synth.toml``, trains without it).
        defocus_radius: ``(min, max)`` disk radius in pixels.
    """

    linear_prob: float = 0.5
    length: tuple[float, float] = (5.0, 25.0)
    sharp_prob: float = 0.05
    identity_prob: float = 0.0
    noise_prob: float = 0.3
    noise_sigma: tuple[float, float] = (0.0, 0.005)
    shot_noise: tuple[float, float] = (0.0, 2e-4)
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (75, 95)
    frames: int = 15
    defocus_prob: float = 0.0
    defocus_radius: tuple[float, float] = (1.0, 6.0)


def shake_warps(rng: Rng, size: tuple[int, int], extent: float, frames: int) -> list[np.ndarray]:
    """Affine warps along a random smooth camera trajectory, middle frame the identity.

    The trajectory mixes an in-plane rotation about a random point (possibly outside the
    crop: then the blur varies strongly across it), a translation and a zoom, each following a
    random smooth (quadratic) path in time, scaled so that the largest displacement of any
    crop corner over the exposure is about ``extent`` pixels.

    Args:
        rng: random generator.
        size: ``(h, w)`` of the image to warp.
        extent: target largest displacement in pixels.
        frames: number of frames (odd keeps the identity exactly in the middle).

    Returns:
        ``frames`` 2x3 float32 matrices for ``cv2.warpAffine``.
    """
    h, w = size
    t = np.linspace(-0.5, 0.5, frames)
    # Smooth paths: a random linear and quadratic term per parameter, zero at t = 0.
    coef = rng.normal(size=(4, 2))
    # The curvature term is kept small: the mean of a curved path is off the middle frame, which
    # shifts the blurred image against its target (real too, but hard to learn from scratch).
    paths = coef[:, :1] * t + coef[:, 1:] * t**2 * 0.6
    paths -= paths[:, frames // 2 : frames // 2 + 1]  # middle frame is the identity
    mix = rng.dirichlet([1.0, 1.0, 0.5])  # share of rotation, translation, zoom
    cx = rng.uniform(-0.5, 1.5) * w
    cy = rng.uniform(-0.5, 1.5) * h
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
    radius = np.max(np.hypot(corners[:, 0] - cx, corners[:, 1] - cy))
    mats = []
    for i in range(frames):
        ang = paths[0, i] * mix[0]  # radians per unit, rescaled below
        tx, ty = paths[1, i] * mix[1], paths[2, i] * mix[1]
        zoom = paths[3, i] * mix[2]
        mats.append((ang, tx, ty, zoom))
    # Displacement of the farthest corner per unit of each parameter: radius*ang, |t|, radius*zoom.
    disp = max(max(abs(a) * radius, math.hypot(x, y), abs(z) * radius) for a, x, y, z in mats) + 1e-9
    scale = extent / disp
    out = []
    for ang, tx, ty, zoom in mats:
        m = cv2.getRotationMatrix2D((cx, cy), math.degrees(ang * scale), 1.0 + zoom * scale)
        m[0, 2] += tx * scale
        m[1, 2] += ty * scale
        out.append(m.astype(np.float32))
    return out


def disk_psf(radius: float, supersample: int = 8) -> np.ndarray:
    """An anti-aliased disk (a defocus PSF) of ``radius`` pixels, ``(k, k)`` with ``k`` odd, sum 1."""
    k = 2 * int(math.ceil(radius)) + 1
    s = supersample
    # Coverage of each pixel by the disk, from s x s sub-pixel centres (exactly symmetric,
    # unlike an anti-aliased cv2.circle, which shifts the centre by a fraction of a pixel).
    sub = (np.arange(k * s, dtype=np.float64) + 0.5) / s - k / 2.0
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2 <= radius * radius).astype(np.float64)
    kernel = inside.reshape(k, s, k, s).mean(axis=(1, 3))
    return (kernel / kernel.sum()).astype(np.float32)


def defocus(sharp: np.ndarray, rng: Rng, settings: BlurSettings) -> np.ndarray:
    """Defocus all of ``sharp`` or a soft-edged region of it (a "background"), in linear light.

    Half of the time the whole image, otherwise the side of a random line, with a soft
    transition a tenth of the image wide (depth changes gradually).

    Args:
        sharp: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` float32 sRGB, defocused where the mask says.
    """
    lin = srgb_to_linear(sharp)
    blurred = cv2.filter2D(lin, -1, disk_psf(rng.uniform(*settings.defocus_radius)), borderType=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        return linear_to_srgb(blurred)
    h, w = lin.shape[:2]
    angle = rng.uniform(0.0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = (xx - w * rng.uniform(0.2, 0.8)) * math.cos(angle) + (yy - h * rng.uniform(0.2, 0.8)) * math.sin(angle)
    mask = np.clip(0.5 + dist / (0.1 * max(h, w)), 0.0, 1.0)[..., None]
    return linear_to_srgb(mask * blurred + (1.0 - mask) * lin)


def degrade(sharp: np.ndarray, rng: Rng, settings: BlurSettings, kind: str | None = None, extent: float | None = None) -> np.ndarray:
    """Blur an sRGB float image (with margin) the way :class:`BlurSettings` says.

    Args:
        sharp: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.
        rng: random generator.
        settings: degradation ranges.
        kind: force ``"linear"`` or ``"shake"`` (else random).
        extent: force the blur extent in pixels (else random).

    Returns:
        ``(H, W, 3)`` float32 sRGB blurred image (noise/JPEG not applied: see :func:`add_noise_jpeg`).
    """
    if kind is None:
        kind = "linear" if rng.random() < settings.linear_prob else "shake"
    if extent is None:
        if settings.identity_prob > 0 and rng.random() < settings.identity_prob:
            return sharp.copy()
        lo, hi = settings.length
        extent = rng.uniform(1.0, 3.0) if rng.random() < settings.sharp_prob else rng.uniform(lo, hi)
    lin = srgb_to_linear(sharp)
    if kind == "linear":
        psf = linear_psf(extent, rng.uniform(0.0, 180.0))
        out = cv2.filter2D(lin, -1, psf, borderType=cv2.BORDER_REFLECT)
    elif kind == "shake":
        h, w = lin.shape[:2]
        acc = np.zeros_like(lin)
        warps = shake_warps(rng, (h, w), extent, settings.frames)
        for m in warps:
            acc += cv2.warpAffine(lin, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out = acc / len(warps)
    else:
        raise ValueError(f"unknown blur kind {kind!r}")
    return linear_to_srgb(out)


def add_noise_jpeg(img: np.ndarray, rng: Rng, settings: BlurSettings) -> np.ndarray:
    """(c): Poisson-Gaussian sensor noise in linear light and a JPEG round trip, at random.

    Args:
        img: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.

    Returns:
        the degraded image, same shape, float32 in ``[0, 1]``.
    """
    if rng.random() < settings.noise_prob:
        lin = srgb_to_linear(img)
        sigma = rng.uniform(*settings.noise_sigma)
        shot = rng.uniform(*settings.shot_noise)  # variance proportional to the signal
        std = np.sqrt(sigma**2 + shot * lin)
        lin = lin + rng.normal(size=lin.shape).astype(np.float32) * std
        img = linear_to_srgb(lin)
    if rng.random() < settings.jpeg_prob:
        q = int(rng.integers(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1))
        u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0
    return img


def quantize(img: np.ndarray) -> np.ndarray:
    """Round to 8-bit levels (what a saved photo holds), keep float32."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0
