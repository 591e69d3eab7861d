"""Tiling: run a network over overlapping tiles of an image and blend them without seams.

:func:`tile_process` is a pure function (all state local, nothing swallowed) that blends tiles
with raised-cosine weights (:func:`tile_weights`), so tiled output has no seams;
:func:`choose_tile` picks the tile side from the pixels that fit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

#: Default overlap of neighbouring tiles, in pixels.
DEFAULT_TILE_OVERLAP = 32

A = TypeVar("A")


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)``.

    Neighbouring tiles overlap by at least ``overlap``; the last tile ends exactly at
    ``size`` (so every tile has the same length). ``tile >= size`` gives ``[0]``.
    """
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def tile_weights(length: int, overlap: int, ramp_start: bool, ramp_end: bool, margin: int = 0) -> np.ndarray:
    """1-D blending weights of a tile along one axis.

    At an end with a neighbouring tile (``ramp_start``/``ramp_end``) the first ``overlap``
    pixels are: ``margin`` pixels of weight 0 (their output lacks context; Real-ESRGAN's
    ``tile_pad`` drops them the same way), then a raised-cosine ramp
    ``sin^2(pi (i + 1/2) / (2 n))`` over ``n = overlap - 2 margin`` pixels, then 1. Mirrored
    at the far end. Where two tiles overlap by exactly ``overlap`` their weights sum to 1
    (Hann window halves); since ``margin < overlap / 2`` every pixel has a positive weight
    in some tile, so normalising by the sum is always defined.
    """
    w = np.ones(length, dtype=np.float32)
    overlap = min(overlap, length // 2)
    margin = max(0, min(margin, (overlap - 1) // 2))
    n = overlap - 2 * margin
    if n > 0:
        ramp = np.concatenate(
            [np.zeros(margin), np.sin(np.pi * (np.arange(n) + 0.5) / (2 * n)) ** 2, np.ones(margin)]
        ).astype(np.float32)
        if ramp_start:
            w[:overlap] = ramp
        if ramp_end:
            w[length - overlap :] = np.minimum(w[length - overlap :], ramp[::-1])
    return w


def tile_process(
    run: Callable[[A], A],
    image: A,
    tile: int,
    overlap: int = DEFAULT_TILE_OVERLAP,
    batch_size: int = 1,
    margin: int | None = None,
) -> A:
    """Run ``run`` over overlapping tiles of ``image`` and blend the results without seams.

    Pure: all state is local, nothing is swallowed (an exception in ``run`` propagates).

    Args:
        run: maps a ``(B, C, h, w)`` batch to ``(B, C_out, h, w)`` (numpy or torch, the same
            kind as ``image``).
        image: ``(C, H, W)`` float numpy array or torch tensor.
        tile: tile side; ``0`` or a tile covering the whole image runs ``image`` at once.
            Along a side shorter than ``tile`` the tile is that side.
        overlap: pixels shared by neighbouring tiles, blended with :func:`tile_weights`.
        batch_size: tiles per call of ``run`` (all tiles have the same size).
        margin: pixels at each inner tile edge that get weight 0 (the network saw no context
            beyond them); default ``overlap // 4``. Must be less than ``overlap / 2``.

    Returns:
        ``(C_out, H, W)``, same kind and dtype as ``image``: the weighted average of every
        tile's output, weights normalised by their sum at each pixel.
    """
    _, h, w = image.shape  # type: ignore[attr-defined]
    if tile <= 0 or (tile >= h and tile >= w):
        return run(image[None])[0]  # type: ignore[index]
    if overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"overlap must be in [0, tile / 2), got overlap={overlap}, tile={tile}")
    if margin is None:
        margin = overlap // 4
    elif overlap and not 0 <= 2 * margin < overlap:
        raise ValueError(f"margin must be in [0, overlap / 2), got margin={margin}, overlap={overlap}")
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, x) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]

    dtype = image.dtype  # type: ignore[attr-defined]
    if isinstance(image, np.ndarray):
        stack: Callable[[list[Any]], Any] = np.stack

        def zeros(*shape: int) -> Any:
            return np.zeros(shape, dtype)

        def as_array(a: np.ndarray) -> Any:
            return a.astype(dtype)
    else:
        import torch

        stack = torch.stack
        device = image.device  # type: ignore[attr-defined]

        def zeros(*shape: int) -> Any:
            return torch.zeros(shape, dtype=dtype, device=device)

        def as_array(a: np.ndarray) -> Any:
            return torch.from_numpy(a).to(device=device, dtype=dtype)

    out: Any = None
    norm = zeros(h, w)
    step = max(1, batch_size)
    for i in range(0, len(boxes), step):
        chunk = boxes[i : i + step]
        result = run(stack([image[:, y : y + th, x : x + tw] for y, x in chunk]))  # type: ignore[index]
        if out is None:
            out = zeros(result.shape[1], h, w)
        for (y, x), t in zip(chunk, result, strict=True):
            wy = tile_weights(th, overlap, y > 0, y + th < h, margin)
            wx = tile_weights(tw, overlap, x > 0, x + tw < w, margin)
            weight = as_array(np.outer(wy, wx))
            out[:, y : y + th, x : x + tw] += t * weight
            norm[y : y + th, x : x + tw] += weight
    return out / norm[None]  # type: ignore[no-any-return]


def choose_tile(height: int, width: int, max_pixels: float) -> int:
    """Tile side for an image when ``max_pixels`` fit in memory at once; 0 = no tiling.

    The whole image is preferred when it fits (the network's attention is global, so an
    untiled run is the reference); otherwise the largest square multiple of 8 that fits,
    at least 64.
    """
    if height * width <= max_pixels:
        return 0
    side = int(math.sqrt(max(max_pixels, 0.0))) // 8 * 8
    return max(side, 64)

