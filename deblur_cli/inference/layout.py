"""Array layouts: any supported image array to the network's ``(3, H, W)`` float RGB and back.

:func:`split_image` takes ``(H, W)`` or ``(H, W, 1|2|3|4)`` uint8/uint16/float arrays (gray,
gray+alpha, RGB, RGBA); :func:`merge_image` restores the caller's dtype and channels, with the
alpha plane untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from deblur_cli.errors import DeblurError

#: Smallest side the network is given: smaller images are padded (replicate) to it and
#: cropped back, so exported ONNX models never see degenerate shapes.
MIN_SIDE = 16


@dataclass(frozen=True)
class Layout:
    """How to turn the network's RGB back into the caller's array."""

    dtype: np.dtype[Any]
    gray: bool
    shape: tuple[int, ...]


def _max_value(dtype: np.dtype[Any]) -> float:
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def split_image(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, Layout]:
    """``(H, W)``, ``(H, W, 1|2|3|4)`` uint8/uint16/float array -> ``(3, H, W)`` float32 RGB in
    ``[0, 1]``, the alpha plane (untouched) or None, and the layout to restore.

    Gray is replicated to three channels for the network.

    Raises:
        DeblurError: other shapes or dtypes.
    """
    if not isinstance(pixels, np.ndarray):
        raise DeblurError(f"expected a numpy array or a path, got {type(pixels).__name__}")
    dtype = pixels.dtype
    if dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise DeblurError(f"unsupported dtype {dtype}: use uint8, uint16 or float in [0, 1]")
    if pixels.ndim == 2:
        color, alpha = pixels[..., None], None
    elif pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4):
        c = pixels.shape[2]
        color, alpha = (pixels[..., :-1], pixels[..., -1]) if c in (2, 4) else (pixels, None)
    else:
        raise DeblurError(f"unsupported image shape {pixels.shape}: use (H, W) or (H, W, C) with C in 1-4")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise DeblurError(f"empty image of shape {pixels.shape}")
    gray = color.shape[2] == 1
    rgb = np.moveaxis(color, 2, 0).astype(np.float32) / np.float32(_max_value(dtype))
    if dtype.kind == "f":
        rgb = np.nan_to_num(np.clip(rgb, 0.0, 1.0))
    if gray:
        rgb = np.repeat(rgb, 3, axis=0)
    return np.ascontiguousarray(rgb), alpha, Layout(dtype=dtype, gray=gray, shape=pixels.shape)


def merge_image(rgb: np.ndarray, alpha: np.ndarray | None, layout: Layout) -> np.ndarray:
    """Inverse of :func:`split_image`: clamp to ``[0, 1]``, back to the input's dtype and
    channels. Gray output is the mean of the three channels (the exact inverse of the
    replication on the way in)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    color = rgb.mean(axis=0, keepdims=True) if layout.gray else rgb
    color = np.moveaxis(color, 0, 2)
    if layout.dtype.kind == "u":
        color = np.rint(color * _max_value(layout.dtype))
    color = color.astype(layout.dtype)
    if alpha is not None:
        color = np.concatenate([color, alpha[..., None].astype(layout.dtype)], axis=2)
    return color.reshape(layout.shape)
