"""Measures of the recorded maps, pure numpy: tap grids, offset directions, spreads, kernel variance.

**Offsets.** Tap ``k`` of a pixel sits at ``p_k = j_k + delta_k`` (base grid plus offset, in
quarter-resolution pixels, Eq. 11). The 2x2 covariance of the ``K*K`` positions gives the
filter's principal axis (its direction, counter-clockwise from +x with the image's y axis
pointing down, in ``[0, 180)``: a spread is *axial*, 0 == 180 degrees) and its elongation
``sqrt(l1) - sqrt(l2)`` (difference of the standard deviations along the two axes; 0 for the
regular grid and for any isotropic spread).

**Horizontal offsets (Fig. 7).** A filter that spreads along a horizontal motion moves its left
taps left and its right taps right, so the *mean* dx is ~0 there. :func:`horizontal_spread`
therefore measures the horizontal *spread*: the standard deviation of the taps' x positions
minus that of the regular grid (> 0 = wider than the grid); :func:`horizontal_shift` is the
mean dx, a shift of the filter's centre.

Upsampling: maps are at ``ceil(H/4) x ceil(W/4)``; :func:`upsample` resizes them bilinearly by 4
and crops them to ``H x W`` (upsample the offsets' covariance before taking the direction:
angles cannot be interpolated).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Resolution of the maps relative to the input (``deblur_cli.models.saphn.FEATURE_STRIDE``;
#: not imported: that module imports torch).
FEATURE_STRIDE = 4


def tap_grid(kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Base positions ``(y, x)`` of the ``K*K`` taps, row-major over the window, ``(K*K,)`` each."""
    r = (kernel_size - 1) // 2
    t = np.arange(kernel_size, dtype=np.float32) - r
    return np.repeat(t, kernel_size), np.tile(t, kernel_size)


def _kernel_size(channels: int) -> int:
    k = int(round(math.sqrt(channels / 2)))
    if 2 * k * k != channels:
        raise ValueError(f"offsets need 2*K*K channels, got {channels}")
    return k


def tap_positions(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tap positions relative to each pixel: base grid plus offsets.

    Args:
        offsets: ``(2*K*K, h, w)``, ``(dy, dx)`` of tap ``k`` at channels ``2k, 2k+1``.

    Returns:
        ``(y, x)``, each ``(K*K, h, w)``, in the offsets' pixels (image y down).
    """
    k = _kernel_size(offsets.shape[0])
    by, bx = tap_grid(k)
    off = offsets.reshape(k * k, 2, *offsets.shape[1:])
    return by[:, None, None] + off[:, 0], bx[:, None, None] + off[:, 1]


def tap_covariance(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel 2x2 covariance ``(sxx, sxy, syy)`` of the tap positions (image x right, y down).

    Args:
        offsets: ``(2*K*K, h, w)`` as in :func:`tap_positions`.

    Returns:
        three ``(h, w)`` arrays in squared pixels of the offsets.
    """
    y, x = tap_positions(offsets)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return (x * x).mean(axis=0), (x * y).mean(axis=0), (y * y).mean(axis=0)


def principal_axis(sxx: np.ndarray, sxy: np.ndarray, syy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direction and elongation of a spread from its covariance (image y down).

    Returns:
        ``(angle_deg, elongation)``: the major axis counter-clockwise from +x as seen on
        screen, in ``[0, 180)`` (a displacement ``(dx, dy)`` has angle ``atan2(-dy, dx)``), and
        ``sqrt(l1) - sqrt(l2)`` (>= 0) in the covariance's units of length.
    """
    # With y pointing up the cross term changes sign.
    angle = 0.5 * np.degrees(np.arctan2(-2.0 * sxy, sxx - syy))
    half = 0.5 * (sxx + syy)
    root = np.sqrt(np.maximum(0.25 * (sxx - syy) ** 2 + sxy**2, 0.0))
    l1, l2 = half + root, np.maximum(half - root, 0.0)
    return np.mod(angle, 180.0).astype(np.float32), (np.sqrt(l1) - np.sqrt(l2)).astype(np.float32)


def offset_directions(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel principal direction (degrees, ``[0, 180)``) and elongation (offset pixels)
    of the filter taps; see :func:`tap_covariance` and :func:`principal_axis`."""
    return principal_axis(*tap_covariance(offsets))


def horizontal_spread(offsets: np.ndarray) -> np.ndarray:
    """Std of the taps' x positions minus the regular grid's (offset pixels), ``(h, w)``."""
    _, bx = tap_grid(_kernel_size(offsets.shape[0]))
    sxx = tap_covariance(offsets)[0]
    return (np.sqrt(sxx) - float(np.sqrt((bx**2).mean()))).astype(np.float32)


def horizontal_shift(offsets: np.ndarray) -> np.ndarray:
    """Mean dx over the taps (offset pixels), ``(h, w)``."""
    k2 = offsets.shape[0] // 2
    return offsets.reshape(k2, 2, *offsets.shape[1:])[:, 1].mean(axis=0).astype(np.float32)


def kernel_variance(kernels: np.ndarray) -> np.ndarray:
    """Variance over the ``K*K`` kernel values ``V`` ``(K*K, h, w)`` -> ``(h, w)``."""
    return kernels.var(axis=0).astype(np.float32)


def upsample(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a quarter-resolution ``(h, w)`` or ``(h, w, c)`` map bilinearly by
    :data:`FEATURE_STRIDE` and crop it to ``(height, width)``."""
    h, w = values.shape[:2]
    big = cv2.resize(
        np.ascontiguousarray(values, dtype=np.float32),
        (w * FEATURE_STRIDE, h * FEATURE_STRIDE),
        interpolation=cv2.INTER_LINEAR,
    )
    if big.shape[0] < height or big.shape[1] < width:
        raise ValueError(f"map of {h}x{w} is too small for an image of {height}x{width}")
    return big[:height, :width]
