"""Synthetic training pairs made in batches on the training device (:class:`TorchSyntheticPairs`).

The photographs are decoded once and kept on the device as 8-bit tensors; each batch is cut,
degraded and quantised there by :mod:`deblur_cli.data.gpu_synthesis` and
:mod:`deblur_cli.data.gpu_jpeg`, so a GPU never waits for CPU workers. The sampling follows
:class:`deblur_cli.data.datasets.SyntheticPairs` (photo chosen with probability proportional to
the square root of its area, rescaled 0.5-1x, cropped with a margin, rotated/flipped; optional
defocus of the target; linear PSF or camera shake, or nearly sharp or no blur; noise; JPEG);
the random numbers differ, the distribution is the same.

Per-sample choices (which photo, where, which blur) are drawn on the host by a CPU
``torch.Generator``, pixel noise on the device by a device generator; both states are part of
:meth:`TorchSyntheticPairs.rng_state`, so a resumed run continues the same stream.

The host's numbers go to the device with ``non_blocking=True`` (safe from ordinary host memory:
the copy is staged before the call returns): a blocking copy waits for the GPU to finish all
queued work, so the host could not prepare the next batch while a training step runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deblur_cli.data.datasets import list_images, read_rgb
from deblur_cli.data.gpu_jpeg import jpeg_round_trip
from deblur_cli.data.gpu_synthesis import (
    add_noise,
    disk_psfs,
    filter_per_sample,
    kernel_size,
    line_psfs,
    linear_to_srgb,
    quantize,
    shake_matrices,
    srgb_to_linear,
    warp_average,
)
from deblur_cli.data.synthetic import BlurSettings


class TorchSyntheticPairs:
    """Random blurred/sharp crops from a folder of sharp photographs, made on ``device``.

    Args:
        folder: sharp photographs (8-bit files).
        crop: side of the square crops.
        settings: degradation ranges.
        seed: random seed.
        device: where the photos live and the batches are made.
    """

    def __init__(
        self, folder: Path, crop: int = 128, settings: BlurSettings | None = None, seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:  # fmt: skip
        self.device = torch.device(device)
        files = list_images(Path(folder))
        if not files:
            raise ValueError(f"no images in {folder}")
        # 8-bit photos exactly: read_rgb divides by 255, so this undoes it without loss.
        self.photos = [
            torch.from_numpy(np.round(read_rgb(p) * 255.0).astype(np.uint8))
            .permute(2, 0, 1)
            .contiguous()
            .to(self.device)
            for p in files
        ]
        self.crop = crop
        self.settings = settings or BlurSettings()
        self.margin = int(self.settings.length[1]) + 8
        area = torch.tensor([math.sqrt(p.shape[1] * p.shape[2]) for p in self.photos], dtype=torch.float64)
        self.prob = area / area.sum()
        self.host = torch.Generator().manual_seed(seed)
        self.gen = torch.Generator(self.device).manual_seed(seed + 1)

    # -- random state -------------------------------------------------------------------------

    def rng_state(self) -> dict:
        """JSON-able state of both generators (saved in a run's ``state.json``)."""
        return {"host": self.host.get_state().tolist(), "device": self.gen.get_state().tolist()}

    def set_rng_state(self, state: dict) -> None:
        """Restore :meth:`rng_state`."""
        self.host.set_state(torch.tensor(state["host"], dtype=torch.uint8))
        self.gen.set_state(torch.tensor(state["device"], dtype=torch.uint8))

    # -- sampling ------------------------------------------------------------------------------

    def _dev(self, t: Tensor) -> Tensor:
        """A host tensor on the device, without waiting for the GPU (see the module docstring)."""
        return t.to(self.device, non_blocking=True)

    def _u(self, n: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.host, dtype=torch.float64)

    def random_patches(self, n: int) -> Tensor:
        """``(n, 3, S, S)`` sharp float32 sRGB patches, ``S = crop + 2 * margin``, on the device."""
        side = self.crop + 2 * self.margin
        idx = torch.multinomial(self.prob, n, replacement=True, generator=self.host).tolist()
        draws = torch.rand(n, 5, generator=self.host, dtype=torch.float64).tolist()
        out = []
        for i, (u_scale, u_y, u_x, u_rot, u_flip) in zip(idx, draws):
            photo = self.photos[i]
            h, w = photo.shape[1:]
            smin = side / min(h, w)
            scale = (max(0.5, smin) + (1.0 - max(0.5, smin)) * u_scale) if smin < 1.0 else smin
            # The region of the photo that becomes the patch after rescaling by `scale`.
            r = min(round(side / scale), h, w)
            y, x = int(u_y * (h - r + 1)), int(u_x * (w - r + 1))
            patch = photo[:, y : y + r, x : x + r].float()[None] / 255.0
            if r != side:
                patch = F.interpolate(patch, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            patch = torch.rot90(patch, int(u_rot * 4), dims=(2, 3))
            if u_flip < 0.5:
                patch = patch.flip(3)
            out.append(patch)
        return torch.cat(out).clamp(0.0, 1.0)

    def batch(self, n: int) -> tuple[Tensor, Tensor]:
        """``(blurred, sharp)``, each ``(n, 3, crop, crop)`` float32 on the device, on 8-bit levels."""
        s = self.settings
        patch = self.random_patches(n)
        side = patch.shape[-1]
        if s.defocus_prob > 0:
            patch = self._defocus(patch, self._u(n) < s.defocus_prob)
        lin = srgb_to_linear(patch)
        # Blur kind and extent per sample, as degrade() draws them.
        linear = self._u(n) < s.linear_prob
        identity = self._u(n) < s.identity_prob if s.identity_prob > 0 else torch.zeros(n, dtype=torch.bool)
        nearly = self._u(n) < s.sharp_prob
        extent = torch.where(nearly, self._u(n, 1.0, 3.0), self._u(n, *s.length))
        out = lin.clone()
        sel = torch.nonzero(linear & ~identity).flatten()
        if len(sel):
            k = kernel_size(float(extent[sel].max()))
            angles = self._dev(self._u(len(sel), 0.0, 180.0).float())
            kernels = line_psfs(self._dev(extent[sel].float()), angles, k)
            out[self._dev(sel)] = filter_per_sample(lin[self._dev(sel)], kernels)
        sel = torch.nonzero(~linear & ~identity).flatten()
        if len(sel):
            m = len(sel)
            coef = torch.randn(m, 4, 2, generator=self.host, dtype=torch.float64)
            # Dirichlet([1, 1, 0.5]) from Gamma draws: Gamma(1) = -log U, Gamma(1/2) = Z^2 / 2.
            gam = torch.stack([-torch.log1p(-self._u(m)), -torch.log1p(-self._u(m)),
                               torch.randn(m, generator=self.host, dtype=torch.float64) ** 2 / 2], dim=1)  # fmt: skip
            mix = gam / gam.sum(dim=1, keepdim=True)
            centre = torch.stack([self._u(m, -0.5, 1.5) * side, self._u(m, -0.5, 1.5) * side], dim=1)
            mats = shake_matrices(coef, mix, centre, (side, side), extent[sel], s.frames)  # stays on the host
            out[self._dev(sel)] = warp_average(lin[self._dev(sel)], mats)
        m, c = self.margin, self.crop
        blurred = torch.where(self._dev(identity).view(-1, 1, 1, 1), patch, linear_to_srgb(out))
        blurred, sharp = blurred[..., m : m + c, m : m + c], patch[..., m : m + c, m : m + c]
        blurred = self._noise_jpeg(blurred)
        return quantize(blurred).contiguous(), quantize(sharp).contiguous()

    def _defocus(self, patch: Tensor, chosen: Tensor) -> Tensor:
        """Defocus the ``chosen`` samples, wholly or on the side of a soft line (as ``synthetic.defocus``)."""
        sel = torch.nonzero(chosen).flatten()
        if not len(sel):
            return patch
        s, m = self.settings, len(sel)
        radii = self._u(m, *s.defocus_radius).float()
        k = 2 * math.ceil(float(radii.max())) + 1
        dev_sel = self._dev(sel)
        lin = srgb_to_linear(patch[dev_sel])
        blurred = filter_per_sample(lin, disk_psfs(self._dev(radii), k))
        side = patch.shape[-1]
        whole = self._u(m) < 0.5
        angle = self._u(m, 0.0, 2 * math.pi)
        px, py = self._u(m, 0.2, 0.8) * side, self._u(m, 0.2, 0.8) * side
        coords = torch.arange(side, device=self.device, dtype=torch.float32)
        cos_a, sin_a = self._dev(torch.cos(angle).float()), self._dev(torch.sin(angle).float())
        dist = ((coords[None, None, :] - self._dev(px.float())[:, None, None]) * cos_a[:, None, None]
                + (coords[None, :, None] - self._dev(py.float())[:, None, None]) * sin_a[:, None, None])  # fmt: skip
        mask = (0.5 + dist / (0.1 * side)).clamp(0.0, 1.0)[:, None]
        mask = torch.where(self._dev(whole).view(-1, 1, 1, 1), torch.ones_like(mask), mask)
        out = patch.clone()
        out[dev_sel] = linear_to_srgb(mask * blurred + (1.0 - mask) * lin)
        return out

    def _noise_jpeg(self, img: Tensor) -> Tensor:
        """Noise in linear light, then a JPEG round trip, each for a random subset (as ``add_noise_jpeg``)."""
        s, n = self.settings, img.shape[0]
        noisy = self._u(n) < s.noise_prob
        sigma, shot = self._u(n, *s.noise_sigma).float(), self._u(n, *s.shot_noise).float()
        coded = self._u(n) < s.jpeg_prob
        lo, hi = s.jpeg_quality
        quality = torch.randint(lo, hi + 1, (n,), generator=self.host)
        sel = self._dev(torch.nonzero(noisy).flatten())
        if len(sel):
            img = img.clone()
            img[sel] = add_noise(img[sel], self._dev(sigma)[sel], self._dev(shot)[sel], self.gen)
        sel = self._dev(torch.nonzero(coded).flatten())
        if len(sel):
            img = img.clone()
            img[sel] = jpeg_round_trip(img[sel], self._dev(quality)[sel])
        return img
