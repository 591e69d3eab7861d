"""One image in, its deblurred version and its rendered maps out: the ``deblur viz`` pipeline.

:func:`fit_for_viz` shrinks the image for the one untiled pass the maps need and checks that it
fits in memory; :func:`visualize` deblurs it, recording the maps in the same pass
(:mod:`deblur_cli.viz.recording`), and renders them (:mod:`deblur_cli.viz.rendering`).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from deblur_cli.errors import DeblurError
from deblur_cli.inference.layout import split_image
from deblur_cli.inference.memory import available_memory, estimate_bytes_per_pixel
from deblur_cli.viz.drawing import as_rgb8
from deblur_cli.viz.recording import MapSelection, check_selection, collect_maps
from deblur_cli.viz.rendering import RenderedMaps, render_maps


def fit_for_viz(pixels: np.ndarray, config: Any, device: Any = None, max_side: int | None = None) -> np.ndarray:
    """Shrink an image for one untiled visualisation pass, and check that the pass fits in memory.

    Args:
        pixels: ``(H, W[, C])`` image array (any dtype :func:`as_rgb8` accepts).
        config: the model's ``SAPHNConfig`` (for the memory estimate).
        device: the device that will run.
        max_side: if given, the image is resized (area interpolation) so that its longest
            side is at most this.

    Raises:
        DeblurError: the image would need more memory than is free (the message suggests a
            ``--max-side`` that fits).
    """
    h, w = pixels.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        pixels = cv2.resize(pixels, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        h, w = pixels.shape[:2]
    budget = available_memory(device)
    need = estimate_bytes_per_pixel(config) * h * w
    if need > budget:
        fit = int(max(h, w) * math.sqrt(budget / need)) // 8 * 8
        raise DeblurError(
            f"a {w}x{h} image needs about {need / 2**30:.1f} GiB for the untiled pass that the maps need, "
            f"{budget / 2**30:.1f} GiB are free: use --max-side {max(fit, 16)}"
        )
    return pixels


def visualize(
    model: Any, image: np.ndarray, selection: MapSelection | None = None, *, device: Any = None, caption: str = ""
) -> tuple[np.ndarray, RenderedMaps]:
    """Deblur ``image`` with ``model`` and render the selected maps from the same pass.

    Args:
        model: an eval-mode SAPHN ``nn.Module`` (e.g. from ``deblur_cli.hub.loading.load_model``).
        image: ``(H, W[, C])`` uint8/uint16/float image (alpha ignored).
        selection: what to render (default :class:`MapSelection`()).
        device: where to run (default: the model's device).
        caption: header text for the contact sheet.

    Returns:
        ``(output, rendered)``: the deblurred ``(H, W, 3)`` uint8 RGB and :class:`RenderedMaps`.
    """
    sel = check_selection(selection or MapSelection(), int(model.config.blocks))
    rgb, _, _ = split_image(np.asarray(image))
    out, maps = collect_maps(model, rgb, sel, device)
    rgb8 = as_rgb8(np.moveaxis(rgb, 0, 2))
    out8 = as_rgb8(np.moveaxis(out, 0, 2))
    return out8, render_maps(maps, rgb8, out8, sel, caption=caption)
