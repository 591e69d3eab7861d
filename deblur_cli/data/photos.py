"""The photographs we train on: those that packages ship, with a fixed held-out split.

Sources (all listed in ``weights/MODEL_CARD.md``):

* scikit-image's ``skimage/data`` folder (installed with the ``test`` extra);
* Debian's ``opencv-doc`` package, ``usr/share/doc/opencv-doc/examples/data``
  (``apt-get download opencv-doc && dpkg -x opencv-doc_*.deb DIR``);
* the photographs among Debian's desktop wallpapers, ``plasma-workspace-wallpapers``,
  ``mate-backgrounds``, ``lomiri-wallpapers-16.04`` and ``lomiri-wallpapers-20.04`` (same
  way). They are the only sharp photographs here with natural shallow depth of field (bokeh),
  which the network must learn to leave alone; they are downscaled to at most
  :data:`WALLPAPER_SIDE` pixels so that a training crop holds a scene, not a patch of sky.

Only photographs with texture are used: logos, charts, renders of shapes, photos that are
already blurred (``licenseplate_motion``, ``text_motion``, ``text_defocus``, ``clock_motion``)
are left out. Near-duplicates (stereo pairs, before/after pairs) sit on the same side of the
split, so no held-out scene is seen in training.

Three splits: ``train``; ``val``, wallpapers kept aside to choose checkpoints and settings on
(all the Lomiri photographs are validation photos); ``heldout``, used only
to report results. Run ``python -m deblur_cli.data.photos OUT_DIR`` to (re)build
``OUT_DIR/{train,val,heldout}`` as PNG files and the fixed evaluation pairs
``OUT_DIR/{val,heldout}-pairs/{blur,sharp}`` (each photo blurred both ways, see
:func:`deblur_cli.data.datasets.make_heldout_set`), plus ``OUT_DIR/val-nearsharp-pairs``: the
validation photos blurred by only 2-3 px, to catch weights that damage nearly sharp
photographs, and ``OUT_DIR/{val,heldout}-half-pairs``: only the right half of each photo blurred
(:func:`deblur_cli.data.datasets.make_half_blurred_set`), for the regional blur gate. It
downloads the Debian packages with apt unless their unpacked folders are given.
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

#: Photographs among the wallpapers (the rest are renders and drawings), by Debian package;
#: paths inside the unpacked package. ``mate/nature/Storm.jpg`` is left out: it is a long exposure
#: with motion blur in it.
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
WALLPAPER_TRAIN = {
    "plasma-workspace-wallpapers": [_PLASMA.format(n) for n in (
        "BytheWater", "ColdRipple", "DarkestHour", "FallenLeaf", "OneStandsOut", "Path", "summer_1am")],
    "mate-backgrounds": [_MATE.format(n) for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "RainDrops", "TwoWings", "Wood")],
}  # fmt: skip
_LOMIRI = "usr/share/backgrounds/{}.jpg"
#: The validation split: wallpapers never trained on, to pick checkpoints without touching HELDOUT.
#: Lomiri's are photographs by named photographers (the packages' other images are renders:
#: ``umang``, ``Fossa``, ``Infinite-Sea``, ``Painting-Colors``, ``warty-final-ubuntu``).
WALLPAPER_VAL = {
    "plasma-workspace-wallpapers": [_PLASMA.format(n) for n in ("EveningGlow", "Grey")],
    "mate-backgrounds": [_MATE.format(n) for n in ("LadyBird", "YellowFlower")],
    "lomiri-wallpapers-16.04": [_LOMIRI.format(n) for n in (
        "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich",
        "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
        "sunset_by_Aitzol_Berasategi")],
    "lomiri-wallpapers-20.04": [_LOMIRI.format("Kleiber_by_Lukas_Baubkus")],
}  # fmt: skip
#: Every wallpaper package used, in either split.
WALLPAPER_PACKAGES = list(dict.fromkeys([*WALLPAPER_TRAIN, *WALLPAPER_VAL]))
#: Wallpapers are downscaled (INTER_AREA) to at most this many pixels on their long side.
WALLPAPER_SIDE = 1280
#: Seed of the validation pairs (the held-out pairs use make_heldout_set's default).
VAL_SEED = 4321
#: Seed and extents (px) of the nearly sharp validation pairs.
NEARSHARP_SEED = 8765
NEARSHARP_EXTENTS = (2.0, 3.0)
#: Seed of the half-blurred validation pairs (the held-out ones use make_half_blurred_set's
#: default).
HALF_VAL_SEED = 1357


def skimage_data_dir() -> Path:
    """Folder of scikit-image's bundled sample images."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def fetch_deb(package: str, dest: Path) -> Path:
    """Download a Debian package with apt and unpack it (``dpkg -x``) into ``dest``; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)  # dpkg -x creates the last folder only, not its parents
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True)
        deb = glob.glob(os.path.join(tmp, f"{package}_*.deb"))[0]
        subprocess.run(["dpkg", "-x", deb, str(dest)], check=True)
    return dest


def _unpacked(package: str, given: Path | None, out: Path, probe: str) -> Path:
    """Root of the unpacked ``package``: ``given``, or ``out/_<package>``, fetched there if absent."""
    root = given if given is not None else out / f"_{package}"
    if given is None and not (root / probe).exists():
        fetch_deb(package, root)
    return root


def _first(pkg: str) -> str:
    """A file that wallpaper package ``pkg`` holds once unpacked."""
    return (WALLPAPER_TRAIN.get(pkg) or WALLPAPER_VAL[pkg])[0]


def _name(path: str) -> str:
    """Output file name: the wallpaper's folder name for Plasma (its files are all ``WxH.jpg``)."""
    p = Path(path)
    return (p.parents[2].name if p.parent.name == "images" else p.stem) + ".png"


def build(out: Path, opencv_root: Path | None = None, wallpaper_roots: dict[str, Path] | None = None) -> dict[str, int]:
    """Write ``out/{train,val,heldout}/*.png`` (RGB, alpha dropped).

    Args:
        out: output folder.
        opencv_root: folder where opencv-doc was unpacked (``dpkg -x``), or its data folder;
            downloaded if None.
        wallpaper_roots: unpacked wallpaper packages by package name; downloaded where missing.

    Returns:
        number of images per split.
    """
    roots = wallpaper_roots or {}
    ocv = _unpacked("opencv-doc", opencv_root, out, OPENCV_DATA)
    ocv = ocv / OPENCV_DATA if (ocv / OPENCV_DATA).is_dir() else ocv
    wall = {pkg: _unpacked(pkg, roots.get(pkg), out, _first(pkg)) for pkg in WALLPAPER_PACKAGES}
    sk = skimage_data_dir()
    # (source folder, file inside it, max side or None)
    plan = {
        "train": [(sk, n, None) for n in SKIMAGE_TRAIN]
        + [(ocv, n, None) for n in OPENCV_TRAIN]
        + [(wall[pkg], p, WALLPAPER_SIDE) for pkg, ps in WALLPAPER_TRAIN.items() for p in ps],
        "val": [(wall[pkg], p, WALLPAPER_SIDE) for pkg, ps in WALLPAPER_VAL.items() for p in ps],
        "heldout": [(sk, n, None) for n in HELDOUT["skimage"]] + [(ocv, n, None) for n in HELDOUT["opencv"]],
    }
    counts = {}
    for split, items in plan.items():
        d = out / split
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for folder, name, side in items:
            img = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)  # drops alpha, gray -> 3 channels
            if img is None:
                raise FileNotFoundError(folder / name)
            if side is not None and max(img.shape[:2]) > side:
                f = side / max(img.shape[:2])
                img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(d / _name(name)), img)
        counts[split] = len(items)
    return counts


def make_pairs(out: Path) -> dict[str, int]:
    """(Re)make the fixed evaluation pairs from ``out/{heldout,val}``: ``out/heldout-pairs``,
    ``out/val-pairs``, ``out/val-nearsharp-pairs``, and the half-blurred ``out/val-half-pairs``
    and ``out/heldout-half-pairs`` (right half blurred only, for the regional gate); returns the
    number of pairs of each."""
    from deblur_cli.data.datasets import make_half_blurred_set, make_heldout_set

    plan = {
        "heldout": (make_heldout_set, "heldout", {}),
        "val": (make_heldout_set, "val", {"seed": VAL_SEED}),
        "val-nearsharp": (make_heldout_set, "val", {"seed": NEARSHARP_SEED, "extents": NEARSHARP_EXTENTS}),
        "val-half": (make_half_blurred_set, "val", {"seed": HALF_VAL_SEED}),
        "heldout-half": (make_half_blurred_set, "heldout", {}),
    }
    made = {}
    for name, (maker, split, kwargs) in plan.items():
        if (out / f"{name}-pairs").exists():
            shutil.rmtree(out / f"{name}-pairs")
        made[name] = len(maker(out / split, out / f"{name}-pairs", **kwargs))
    return made


def main() -> None:
    """``python -m deblur_cli.data.photos OUT_DIR [--opencv-doc DIR]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--opencv-doc", type=Path, default=None, help="where opencv-doc was unpacked (dpkg -x)")
    for pkg in WALLPAPER_PACKAGES:
        ap.add_argument(f"--{pkg}", type=Path, default=None, help=f"where {pkg} was unpacked (dpkg -x)")
    args = ap.parse_args()
    roots = {pkg: getattr(args, pkg.replace("-", "_")) for pkg in WALLPAPER_PACKAGES}
    counts = build(args.out, args.opencv_doc, {k: v for k, v in roots.items() if v is not None})
    pairs = make_pairs(args.out)
    print(f"{counts['train']} training photos in {args.out / 'train'}, {counts['val']} validation photos "
          f"({pairs['val']} pairs, {pairs['val-nearsharp']} nearly sharp pairs, {pairs['val-half']} half-blurred), "
          f"{counts['heldout']} held-out photos ({pairs['heldout']} pairs, {pairs['heldout-half']} half-blurred) "
          f"in {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
