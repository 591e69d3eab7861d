"""Build the photo folder that travels to an accelerator machine (about 23 MiB; limit 30).

``python tools/build_carry_photos.py [--photos data/photos] [--out data/carry/photos]``

The source is the folder ``python -m deblur_cli.data.photos data/photos`` makes (scikit-image's
photographs and Debian's opencv-doc and wallpaper packages; built first if missing). Written:

* ``train/``: the 70 training photographs, each as lossless WebP where that is at most 1.25x
  the size of a JPEG (text, charts, flat renders) or the JPEG would fall below 40 dB PSNR
  against the PNG, else as JPEG at quality 95 with full-resolution chroma (4:4:4; 40-56 dB, an
  error below the read noise the training adds to its inputs). PNG would take 48 MiB. The
  training pipeline rescales photos by 0.5-1x and JPEG-compresses inputs at quality 75-95.
* ``val-pairs/``: the validation pairs, lossless (WebP), so validation there and here scores
  the very same pixels. The sharp image of a photo's two pairs (linear and camera-shake blur)
  is stored once: ``sharp/X_shake.webp`` is a relative link to ``sharp/X_linear.webp``.
* ``MANIFEST.json``: every file's size, sha256 and, for JPEGs, PSNR against the PNG.

The held-out pairs do not travel: evaluation on them happens here, after the weights return.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

#: Size the folder must stay under.
LIMIT_BYTES = 30 * 1024 * 1024
#: A training photo is stored as JPEG only if the JPEG is at least this close to the PNG...
MIN_JPEG_PSNR = 40.0
#: ... and the lossless WebP would be more than this many times the JPEG's size.
LOSSLESS_RATIO = 1.25
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _write(path: Path, data: bytes) -> dict:
    path.write_bytes(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _encode(img: np.ndarray, ext: str, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"OpenCV cannot encode {ext}")
    return buf.tobytes()


def build(photos: Path, out: Path) -> dict:
    """Write the carried folder ``out`` from ``photos``; returns the manifest."""
    if out.exists():
        shutil.rmtree(out)
    manifest: dict = {"train": {}, "val-pairs": {}}
    (out / "train").mkdir(parents=True)
    for src in sorted((photos / "train").glob("*.png")):
        img = cv2.imread(str(src), cv2.IMREAD_COLOR)
        jpg, webp = _encode(img, ".jpg", JPEG), _encode(img, ".webp", WEBP_LOSSLESS)
        quality = _psnr(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR), img)
        if quality >= MIN_JPEG_PSNR and len(webp) > LOSSLESS_RATIO * len(jpg):
            entry = _write(out / "train" / f"{src.stem}.jpg", jpg) | {"psnr_vs_png": round(quality, 2)}
            manifest["train"][f"{src.stem}.jpg"] = entry
        else:
            manifest["train"][f"{src.stem}.webp"] = _write(out / "train" / f"{src.stem}.webp", webp)
    pairs = photos / "val-pairs"
    for sub in ("blur", "sharp"):
        (out / "val-pairs" / sub).mkdir(parents=True)
    stored: dict[bytes, str] = {}
    for src in sorted((pairs / "blur").glob("*.png")):
        name = f"{src.stem}.webp"
        blur, sharp = (
            cv2.imread(str(src), cv2.IMREAD_COLOR),
            cv2.imread(str(pairs / "sharp" / src.name), cv2.IMREAD_COLOR),
        )
        manifest["val-pairs"][f"blur/{name}"] = _write(
            out / "val-pairs" / "blur" / name, _encode(blur, ".webp", WEBP_LOSSLESS)
        )
        key = hashlib.sha256(sharp.tobytes()).digest()
        if key in stored:  # the same photo's other blur kind: link to the stored sharp image
            os.symlink(stored[key], out / "val-pairs" / "sharp" / name)
            manifest["val-pairs"][f"sharp/{name}"] = {"link": stored[key]}
        else:
            stored[key] = name
            data = _encode(sharp, ".webp", WEBP_LOSSLESS)
            manifest["val-pairs"][f"sharp/{name}"] = _write(out / "val-pairs" / "sharp" / name, data)
    for split in ("blur", "sharp"):  # lossless: the pixels must be the PNGs'
        for f in (out / "val-pairs" / split).iterdir():
            ref = cv2.imread(str(pairs / split / f.with_suffix(".png").name), cv2.IMREAD_COLOR)
            assert np.array_equal(cv2.imread(str(f), cv2.IMREAD_COLOR), ref), f
    total = sum(e.get("bytes", 0) for part in ("train", "val-pairs") for e in manifest[part].values())
    manifest["total_bytes"] = total
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--photos", type=Path, default=Path("data/photos"), help="built by python -m deblur_cli.data.photos"
    )
    ap.add_argument("--out", type=Path, default=Path("data/carry/photos"))
    args = ap.parse_args()
    if not (args.photos / "train").is_dir() or not (args.photos / "val-pairs").is_dir():
        print(
            f"{args.photos} has no train/ and val-pairs/: building it with python -m deblur_cli.data.photos", flush=True
        )
        subprocess.run([sys.executable, "-m", "deblur_cli.data.photos", str(args.photos)], check=True)
    manifest = build(args.photos, args.out)
    n_jpg = sum(1 for k in manifest["train"] if k.endswith(".jpg"))
    total = manifest["total_bytes"]
    print(f"{args.out}: {len(manifest['train'])} training photos ({n_jpg} JPEG, {len(manifest['train']) - n_jpg} "
          f"lossless WebP), {len(manifest['val-pairs']) // 2} validation pairs; {total / 2**20:.1f} MiB")  # fmt: skip
    if total > LIMIT_BYTES:
        print(f"over the {LIMIT_BYTES / 2**20:.0f} MiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
