"""How much motion blur is in a photograph, in pixels: the blur-extent network and its meter.

Not in the paper. The deblurring network only pays off from a few pixels of blur: on nearly
sharp photographs it adds detail that was never there (``benchmarks/blur_sweep.py``: the
bundled weights lose about 3 dB at 2 px of linear blur and gain from about 8 px). A
photographer who runs ``deblur folder`` over a shoot, most of it sharp, wants the sharp frames
left alone. So before deblurring we *measure* the blur:

1. **Blur-extent network** (:class:`BlurExtentNet`): a small convolutional regressor on luma,
   trained on the same synthetic blur as SAPHN (:mod:`deblur_cli.training.meter`) to
   predict ``log(1 + extent)``, extent being the PSF length (linear blur) or the largest
   displacement of the camera-shake trajectory, 0 for a sharp patch. Defocus is labelled 0:
   it is the photograph's depth of field, which the deblurrer is trained to keep. The network
   outputs, per position (stride 8), an estimate and a confidence logit; a patch's estimate is
   the confidence-weighted mean (a flat sky says nothing about blur, an edge does).
2. **Per photograph** (:meth:`BlurMeter.estimate`): the net runs at the photograph's own
   resolution (the extent is in its pixels; downscaling would shrink it) on the ``tiles``
   most textured 96x96 tiles, and pools them the same way. Cost is bounded whatever the size.
3. **Gate** (:func:`~deblur_cli.gate.decision.gate_weight`):
   ``w = clip((extent - lo) / (hi - lo), 0, 1)``; the output is ``input + w * (deblurred - input)``:
   untouched below ``lo`` px, fully deblurred from ``hi`` px, a blend between.
4. **Per region** (:meth:`BlurMeter.extent_map`): the net reads *every* 96 px tile on its own,
   and the tiles' readings are pooled under a Gaussian window, weighted by their texture
   (:func:`~deblur_cli.gate.regions.pool_regions`);
   :meth:`~deblur_cli.gate.regions.BlurMap.weights` turns the map into a per-pixel gate. For
   camera shake about an off-centre point, or a sharp subject before a blurred background, one
   number per photograph is the wrong question.

Hand-made measures (edge widths along four directions, re-blur ratios) were tried first; on the
training photographs they separated 0-3 px from 8-12 px of camera shake with an AUC of only about
0.7, because natural edge widths vary from scene to scene as much as blur changes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deblur_cli.errors import DeblurError
from deblur_cli.gate.regions import REGION_SIGMA, TILE, BlurMap, blur_map_from_readings
from deblur_cli.gate.weights import checked_bundled_path, read_blur_extent

#: Tiles per forward pass of the meter when mapping a whole photograph (bounds its memory).
_MAP_CHUNK = 64
# ITU-R BT.601 luma, as OpenCV's RGB2GRAY.
_LUMA = (0.299, 0.587, 0.114)


class BlurExtentNet(nn.Module):
    """Motion-blur extent regressor on luma.

    ``forward``: ``(B, 1, H, W)`` luma in ``[0, 1]`` (``H``, ``W`` multiples of 8) ->
    ``(pred, logit)``, each ``(B, 1, H/8, W/8)``: ``pred`` estimates ``log(1 + extent)`` and
    ``logit`` its confidence. :meth:`pooled` gives one value per image.

    Each input is first normalised by its own mean and standard deviation, so that the
    estimate does not depend on exposure or contrast. Receptive field: 45 px, enough to see
    the blur it must tell apart (0-10 px) and to measure longer blur as long.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        chans = [(1, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 3 * w, 2), (3 * w, 3 * w, 1), (3 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride in chans:
            # BatchNorm: without it this plain stack learnt several times slower (a few hundred
            # steps at batch 32 barely moved off the constant prediction).
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(4 * w, 2, 1)
        self.width = width

    def forward(self, luma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = luma.mean(dim=(2, 3), keepdim=True)
        std = luma.std(dim=(2, 3), keepdim=True)
        x = (luma - mean) / (std + 0.02)  # 0.02: a flat, noisy patch is not blown up to unit contrast
        out = self.head(self.features(x))
        return out[:, :1], out[:, 1:]

    @staticmethod
    def pool(pred: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """Confidence-weighted mean over positions *and* over the batch: ``pred`` and ``logit``
        ``(B, 1, h, w)`` (the output of :meth:`forward`) -> ``()`` scalar."""
        w = torch.softmax(logit.flatten(), dim=0)
        return (w * pred.flatten()).sum()

    def pooled(self, luma: torch.Tensor) -> torch.Tensor:
        """One ``log(1 + extent)`` per image: ``(B,)``."""
        pred, logit = self(luma)
        w = torch.softmax(logit.flatten(1), dim=1)
        return (w * pred.flatten(1)).sum(dim=1)


def to_luma(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float RGB in ``[0, 1]`` -> ``(H, W)`` float32 luma."""
    r, g, b = _LUMA
    return (rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b).astype(np.float32)


def textured_tiles(luma: np.ndarray, tiles: int, tile: int = TILE) -> np.ndarray:
    """The ``tiles`` most textured non-overlapping ``tile`` x ``tile`` tiles of ``luma``.

    Texture is the mean absolute Laplacian; the image is padded by reflection when smaller than
    one tile. Returns ``(n, tile, tile)`` float32, ``n = min(tiles, tiles in the image)``."""
    import cv2

    h, w = luma.shape
    if h < tile or w < tile:
        luma = cv2.copyMakeBorder(luma, 0, max(0, tile - h), 0, max(0, tile - w), cv2.BORDER_REFLECT_101)
        h, w = luma.shape
    ny, nx = h // tile, w // tile
    oy, ox = (h - ny * tile) // 2, (w - nx * tile) // 2  # centre the grid
    grid = luma[oy : oy + ny * tile, ox : ox + nx * tile].reshape(ny, tile, nx, tile).swapaxes(1, 2).reshape(-1, tile, tile)
    lap = np.abs(cv2.Laplacian(luma, cv2.CV_32F))[oy : oy + ny * tile, ox : ox + nx * tile]
    score = lap.reshape(ny, tile, nx, tile).mean(axis=(1, 3)).ravel()
    keep = np.argsort(-score, kind="stable")[:tiles]
    return np.ascontiguousarray(grid[np.sort(keep)])


@dataclass(frozen=True)
class BlurEstimate:
    """Estimated motion-blur extent of one photograph."""

    extent: float  # pixels (PSF length or largest shake displacement)
    tiles: int  # how many tiles it was measured on


class BlurMeter:
    """Loaded blur-extent network; :meth:`estimate` measures photographs.

    Args:
        weights: a safetensors file; ``None`` loads the bundled one, checked against the
            sha256 recorded beside it (``weights/blur-extent.json``).
        tiles: most textured tiles measured per photograph (bounds the cost: 48 tiles of 96 px
            are 0.44 MP whatever the photograph's size).
        device: torch device.
    """

    def __init__(self, weights: str | Path | None = None, tiles: int = 48, device: str | torch.device = "cpu") -> None:
        path = Path(weights) if weights is not None else checked_bundled_path()
        self.net = load_blur_extent(path, device=device)
        self.tiles = tiles
        self.device = torch.device(device)

    @torch.inference_mode()
    def estimate(self, rgb: np.ndarray) -> BlurEstimate:
        """Blur extent of an ``(H, W, 3)`` float RGB image in ``[0, 1]``."""
        batch = textured_tiles(to_luma(rgb), self.tiles)
        x = torch.from_numpy(batch)[:, None].to(self.device)
        pred, logit = self.net(x)
        value = float(self.net.pool(pred, logit))
        return BlurEstimate(extent=max(0.0, math.expm1(value)), tiles=len(batch))

    @torch.inference_mode()
    def tile_readings(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every 96 px tile of an ``(H, W, 3)`` photograph read on its own: ``(estimates,
        texture)``, each ``(ceil(H / 96), ceil(W / 96))`` float32: ``log(1 + extent)`` pooled
        over the tile's positions by their confidences (what the net was trained to give per
        crop), and the tile's mean absolute Laplacian. The photograph is padded (mirrored) to
        whole tiles (:func:`tile_shares` says how much of each is real).

        Goes one row of tiles at a time (memory: the photograph's luma twice, whatever its
        size), with up to 64 tiles per forward pass; cost grows with the pixel count (about
        7 kMAC per pixel)."""
        import cv2

        h, w = rgb.shape[:2]
        ny, nx = -(-h // TILE), -(-w // TILE)
        padded = np.pad(to_luma(rgb), ((0, ny * TILE - h), (0, nx * TILE - w)), mode="symmetric")
        estimates = np.empty(ny * nx, np.float32)
        texture = np.empty((ny, nx), np.float32)
        pending: list[np.ndarray] = []
        done = 0

        def flush() -> None:
            nonlocal done
            x = torch.from_numpy(np.concatenate(pending))[:, None].to(self.device)
            pred, logit = self.net(x)
            weights = torch.softmax(logit.flatten(1), dim=1)
            estimates[done : done + len(x)] = (weights * pred.flatten(1)).sum(dim=1).float().cpu().numpy()
            done += len(x)
            pending.clear()

        for by in range(ny):
            y0 = by * TILE
            top = max(0, y0 - 1)  # a row of context each side, so the Laplacian is the whole image's
            lap = np.abs(cv2.Laplacian(padded[top : y0 + TILE + 1], cv2.CV_32F))[y0 - top :][:TILE]
            texture[by] = lap.reshape(TILE, nx, TILE).mean(axis=(0, 2))
            band = padded[y0 : y0 + TILE].reshape(TILE, nx, TILE).swapaxes(0, 1)
            for i in range(0, nx, _MAP_CHUNK):
                pending.append(np.ascontiguousarray(band[i : i + _MAP_CHUNK]))
                if sum(len(t) for t in pending) >= _MAP_CHUNK:
                    flush()
        if pending:
            flush()
        return estimates.reshape(ny, nx), texture

    def extent_map(self, rgb: np.ndarray, sigma: float = REGION_SIGMA) -> BlurMap:
        """Per-region blur of an ``(H, W, 3)`` float RGB image in ``[0, 1]``: the per-tile
        readings pooled under a Gaussian window of ``sigma`` px (see :func:`pool_regions`)."""
        est, texture = self.tile_readings(rgb)
        return blur_map_from_readings(est, texture, (rgb.shape[0], rgb.shape[1]), sigma)


def load_blur_extent(path: str | Path, device: str | torch.device = "cpu") -> BlurExtentNet:
    """Load blur-extent weights (safetensors only, strict keys; :mod:`deblur_cli.gate.weights`).

    Raises:
        DeblurError: missing/unreadable file, or not blur-extent weights.
    """
    state, width = read_blur_extent(path)
    try:
        net = BlurExtentNet(width=width)
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise DeblurError(f"{path}: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval()
