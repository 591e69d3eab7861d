"""Datasets: synthetic pairs made on the fly from sharp photos, and folders of real pairs.

With 2 CPU cores there is no spare core for loader workers, so pairs are made in the training
process itself; crops are blurred with a small margin only (a few milliseconds per sample),
never whole photographs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deblur_cli.data.synthetic import BlurSettings, add_noise_jpeg, defocus, degrade, quantize

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def read_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in ``[0, 1]`` (8- or 16-bit files; gray becomes 3 channels)."""
    img = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    return img[:, :, ::-1].astype(np.float32) / scale


def centre_crop(img: np.ndarray, max_side: int) -> np.ndarray:
    """The centre of ``(H, W, ...)`` ``img``, at most ``max_side`` pixels a side (a view)."""
    h, w = img.shape[:2]
    ch, cw = min(h, max_side), min(w, max_side)
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y : y + ch, x : x + cw]


class SyntheticPairs:
    """Random blurred/sharp crops from a folder of sharp photographs.

    Each sample: a photo picked with probability proportional to the square root of its area,
    randomly downscaled (0.5-1x: photos differ in resolution, and downscaling also removes
    compression noise from the target), cropped with a margin, flipped/rotated, degraded by
    :func:`~deblur_cli.data.synthetic.degrade` (linear PSF or camera shake) and then
    :func:`~deblur_cli.data.synthetic.add_noise_jpeg`; both images are quantised to 8 bits.

    Args:
        folder: sharp photographs.
        crop: side of the square crops.
        settings: degradation ranges.
        seed: random seed.
    """

    def __init__(self, folder: Path, crop: int = 128, settings: BlurSettings | None = None, seed: int = 0) -> None:
        self.photos = [read_rgb(p) for p in list_images(folder)]
        if not self.photos:
            raise ValueError(f"no images in {folder}")
        self.crop = crop
        self.settings = settings or BlurSettings()
        self.margin = int(self.settings.length[1]) + 8
        self.rng = np.random.default_rng(seed)
        area = np.array([np.sqrt(p.shape[0] * p.shape[1]) for p in self.photos])
        self.prob = area / area.sum()

    def random_patch(self) -> np.ndarray:
        """A random sharp ``(crop + 2 margin)``-square patch (rescaled, flipped, rotated), float32."""
        rng = self.rng
        photo = self.photos[rng.choice(len(self.photos), p=self.prob)]
        side = self.crop + 2 * self.margin
        h, w = photo.shape[:2]
        smin = side / min(h, w)
        scale = rng.uniform(max(0.5, smin), 1.0) if smin < 1.0 else smin
        if abs(scale - 1.0) > 1e-3:
            photo = cv2.resize(photo, (max(side, round(w * scale)), max(side, round(h * scale))), interpolation=cv2.INTER_AREA)
        h, w = photo.shape[:2]
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        patch = photo[y : y + side, x : x + side]
        patch = np.rot90(patch, int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One ``(blurred, sharp)`` pair, each ``(crop, crop, 3)`` float32 in ``[0, 1]``."""
        rng = self.rng
        patch = self.random_patch()
        # Guarded so that defocus_prob = 0 draws no random number (the data of earlier runs).
        if self.settings.defocus_prob > 0 and rng.random() < self.settings.defocus_prob:
            patch = defocus(patch, rng, self.settings)  # the target keeps this defocus
        blurred = degrade(patch, rng, self.settings)
        m, c = self.margin, self.crop
        blurred = add_noise_jpeg(blurred[m : m + c, m : m + c], rng, self.settings)
        return quantize(blurred), quantize(patch[m : m + c, m : m + c])

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(blurred, sharp)``, each ``(n, 3, crop, crop)`` float32."""
        pairs = [self.sample() for _ in range(n)]
        blur = np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2)
        sharp = np.stack([p[1] for p in pairs]).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(blur), np.ascontiguousarray(sharp)


@dataclass(frozen=True)
class Pair:
    """A blurred image and its sharp ground truth on disk."""

    blur: Path
    sharp: Path
    name: str


def find_pairs(data: Path) -> list[Pair]:
    """Pairs in GoPro's layout (``[test/]<scene>/blur`` + ``<scene>/sharp``) or ``blur/`` + ``sharp/``.

    Files are matched by name. Raises ``ValueError`` if nothing matches.
    """
    data = Path(data)
    roots: list[Path] = []
    for base in (data / "test", data):
        if (base / "blur").is_dir() and (base / "sharp").is_dir():
            roots.append(base)
            break
        if base.is_dir():
            scenes = sorted(d for d in base.iterdir() if (d / "blur").is_dir() and (d / "sharp").is_dir())
            if scenes:
                roots.extend(scenes)
                break
    pairs = []
    for root in roots:
        sharp = {p.name: p for p in list_images(root / "sharp")}
        for b in list_images(root / "blur"):
            if b.name in sharp:
                name = b.name if root == data or root == data / "test" else f"{root.name}/{b.name}"
                pairs.append(Pair(b, sharp[b.name], name))
    if not pairs:
        raise ValueError(f"no blur/sharp pairs found under {data} (expected [test/]<scene>/blur|sharp or blur/ + sharp/)")
    return pairs


def _blur_photos(
    photos: Path,
    out: Path,
    max_side: int,
    extents: tuple[float, ...],
    seed: int,
    suffix: str,
    mix: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> list[Pair]:
    """Each photo of ``photos`` centre-cropped to ``max_side``, blurred both ways (extents in
    turn, fixed seed), ``mix(sharp, blurred)`` written to ``out/blur/<stem>_<suffix><kind>.png``
    and the sharp photo to ``out/sharp``."""
    rng = np.random.default_rng(seed)
    (out / "blur").mkdir(parents=True, exist_ok=True)
    (out / "sharp").mkdir(parents=True, exist_ok=True)
    settings = BlurSettings()
    for i, path in enumerate(list_images(photos)):
        img = quantize(centre_crop(read_rgb(path), max_side))
        for kind in ("linear", "shake"):
            blurred = quantize(mix(img, degrade(img, rng, settings, kind=kind, extent=extents[i % len(extents)])))
            name = f"{path.stem}_{suffix}{kind}.png"
            for sub, im in (("blur", blurred), ("sharp", img)):
                cv2.imwrite(str(out / sub / name), (im[:, :, ::-1] * 255.0 + 0.5).astype(np.uint8))
    return find_pairs(out)


def make_heldout_set(
    photos: Path, out: Path, max_side: int = 512, extents: tuple[float, ...] = (9.0, 15.0, 21.0), seed: int = 1234
) -> list[Pair]:
    """Blur each held-out photo both ways, (a) linear and (b) camera shake, into ``out/blur|sharp``.

    Each photo is centre-cropped to at most ``max_side`` pixels a side; each blur kind uses the
    extents in turn (photo ``i`` gets ``extents[i % len]``), with a fixed seed, so the set is
    the same on every machine. No noise or JPEG: the set measures deblurring alone.
    """
    return _blur_photos(photos, out, max_side, extents, seed, "", lambda sharp, blurred: blurred)


def make_half_blurred_set(
    photos: Path, out: Path, max_side: int = 512, extents: tuple[float, ...] = (9.0, 15.0, 21.0), seed: int = 2468
) -> list[Pair]:
    """As :func:`make_heldout_set`, but only the right half of each photo is blurred: the left
    half stays sharp, with a 32 px soft seam between. Blur that differs across the frame (a
    sharp subject, a blurred side) is what a per-region gate is for; one estimate per photograph
    must choose between damaging the sharp half and leaving the blurred half alone."""

    def right_half(sharp: np.ndarray, blurred: np.ndarray) -> np.ndarray:
        w = sharp.shape[1]
        ramp = np.clip((np.arange(w, dtype=np.float32) - (w / 2 - 16)) / 32.0, 0.0, 1.0)[None, :, None]
        return sharp * (1.0 - ramp) + blurred * ramp

    return _blur_photos(photos, out, max_side, extents, seed, "half", right_half)
