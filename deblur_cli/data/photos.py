"""The photographs we train on: those that packages ship, with a fixed held-out split.

Sources (both listed in ``weights/MODEL_CARD.md``):

* scikit-image's ``skimage/data`` folder (installed with the ``test`` extra);
* Debian's ``opencv-doc`` package, ``usr/share/doc/opencv-doc/examples/data``
  (``apt-get download opencv-doc && dpkg -x opencv-doc_*.deb DIR``).

Only photographs with texture are used: logos, charts, renders of shapes, photos that are
already blurred (``licenseplate_motion``, ``text_motion``, ``text_defocus``, ``clock_motion``)
are left out. Near-duplicates (stereo pairs, before/after pairs) sit on the same side of the
split, so no held-out scene is seen in training.

Run ``python -m deblur_cli.data.photos OUT_DIR`` to (re)build ``OUT_DIR/train`` and
``OUT_DIR/heldout`` as PNG files, and the fixed held-out evaluation pairs
``OUT_DIR/heldout-pairs/{blur,sharp}`` (each held-out photo blurred both ways, see
:func:`deblur_cli.data.datasets.make_heldout_set`); it downloads ``opencv-doc`` with apt if no
folder is given.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2

SKIMAGE_TRAIN = [
    "astronaut.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
    "motorcycle_right.png", "retina.jpg", "brick.png", "camera.png", "grass.png", "gravel.png",
    "moon.png", "coins.png", "cell.png", "page.png", "text.png",
]  # fmt: skip
OPENCV_TRAIN = [
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "aloeR.jpg", "apple.jpg", "board.jpg", "butterfly.jpg",
    "ela_original.jpg", "graf1.png", "graf3.png", "HappyFish.jpg", "left.jpg", "right.jpg", "orange.jpg",
    "pca_test1.jpg", "pic2.png", "pic3.png", "pic4.png", "pic5.png", "rubberwhale1.png", "rubberwhale2.png",
    "starry_night.jpg", "stuff.jpg", "sudoku.png", "imageTextN.png", "imageTextR.png", "chicky_512.png",
    "Blender_Suzanne1.jpg", "basketball1.png", "basketball2.png", "box_in_scene.png", "box.png", "cards.png",
    "left01.jpg", "left05.jpg", "left09.jpg", "right03.jpg", "right12.jpg",
]  # fmt: skip
#: Never used in training (nor are their near-duplicates, e.g. leuvenB).
HELDOUT = {
    "skimage": ["chelsea.png", "rocket.jpg"],
    "opencv": ["baboon.jpg", "building.jpg", "fruits.jpg", "squirrel_cls.jpg", "leuvenA.jpg", "home.jpg",
               "messi5.jpg", "smarties.png"],
}  # fmt: skip

OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"


def skimage_data_dir() -> Path:
    """Folder of scikit-image's bundled sample images."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def fetch_opencv_doc(dest: Path) -> Path:
    """Download Debian's opencv-doc with apt and unpack it into ``dest``; returns the data folder."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True)
        deb = glob.glob(os.path.join(tmp, "opencv-doc_*.deb"))[0]
        subprocess.run(["dpkg", "-x", deb, str(dest)], check=True)
    return dest / OPENCV_DATA


def build(out: Path, opencv_root: Path | None = None) -> dict[str, int]:
    """Write ``out/train/*.png`` and ``out/heldout/*.png`` (RGB, alpha dropped).

    Args:
        out: output folder.
        opencv_root: folder where opencv-doc was unpacked (``dpkg -x``); downloaded if None.

    Returns:
        number of images per split.
    """
    if opencv_root is None:
        opencv_root = out / "_opencv-doc"
        if not (opencv_root / OPENCV_DATA).is_dir():
            fetch_opencv_doc(opencv_root)
    ocv = opencv_root / OPENCV_DATA if (opencv_root / OPENCV_DATA).is_dir() else opencv_root
    sk = skimage_data_dir()
    plan = {
        "train": [(sk, n) for n in SKIMAGE_TRAIN] + [(ocv, n) for n in OPENCV_TRAIN],
        "heldout": [(sk, n) for n in HELDOUT["skimage"]] + [(ocv, n) for n in HELDOUT["opencv"]],
    }
    counts = {}
    for split, items in plan.items():
        d = out / split
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for folder, name in items:
            img = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)  # drops alpha, gray -> 3 channels
            if img is None:
                raise FileNotFoundError(folder / name)
            cv2.imwrite(str(d / (Path(name).stem + ".png")), img)
        counts[split] = len(items)
    return counts


def main() -> None:
    """``python -m deblur_cli.data.photos OUT_DIR [--opencv-doc DIR]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--opencv-doc", type=Path, default=None, help="where opencv-doc was unpacked (dpkg -x)")
    args = ap.parse_args()
    counts = build(args.out, args.opencv_doc)
    from deblur_cli.data.datasets import make_heldout_set

    pairs = make_heldout_set(args.out / "heldout", args.out / "heldout-pairs")
    print(f"{counts['train']} training photos in {args.out / 'train'}, {counts['heldout']} held-out photos in "
          f"{args.out / 'heldout'}, {len(pairs)} held-out pairs in {args.out / 'heldout-pairs'}")  # fmt: skip


if __name__ == "__main__":
    main()
