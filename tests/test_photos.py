"""The photo-set builder (deblur_cli.data.photos) on fake package folders: splits, names, sizes."""

from pathlib import Path

import cv2
import numpy as np
import pytest

import deblur_cli.data.photos as photos


def _write(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Fake skimage data folder, unpacked opencv-doc and wallpaper packages, holding every listed file."""
    sk = tmp_path / "skimage"
    for n in photos.SKIMAGE_TRAIN + photos.HELDOUT["skimage"]:
        _write(sk / n, 20, 30)
    ocv = tmp_path / "opencv-doc"
    for n in photos.OPENCV_TRAIN + photos.HELDOUT["opencv"]:
        _write(ocv / photos.OPENCV_DATA / n, 24, 16)
    wall = {}
    for pkg in photos.WALLPAPER_PACKAGES:
        wall[pkg] = tmp_path / pkg
        for p in photos.WALLPAPER_TRAIN.get(pkg, []) + photos.WALLPAPER_VAL.get(pkg, []):
            _write(wall[pkg] / p, 40, 64)
    monkeypatch.setattr(photos, "skimage_data_dir", lambda: sk)
    monkeypatch.setattr(photos, "WALLPAPER_SIDE", 32)
    return ocv, wall


def test_build_writes_three_disjoint_splits(tmp_path, roots):
    ocv, wall = roots
    out = tmp_path / "out"
    counts = photos.build(out, ocv, wall)
    names = {s: sorted(p.name for p in (out / s).iterdir()) for s in ("train", "val", "heldout")}
    assert {s: len(n) for s, n in names.items()} == counts
    assert counts["train"] == len(photos.SKIMAGE_TRAIN) + len(photos.OPENCV_TRAIN) + sum(
        map(len, photos.WALLPAPER_TRAIN.values())
    )
    assert counts["val"] == sum(map(len, photos.WALLPAPER_VAL.values())) > 0
    train, val, held = (set(names[s]) for s in ("train", "val", "heldout"))
    assert not (train & val) and not (train & held) and not (val & held)
    # Plasma wallpapers are all called WxH.jpg: they are named for their folder.
    assert "Path.png" in train and "EveningGlow.png" in val and "LadyBird.png" in val
    assert "Kleiber_by_Lukas_Baubkus.png" in val


def test_wallpapers_are_downscaled_and_others_kept(tmp_path, roots):
    ocv, wall = roots
    out = tmp_path / "out"
    photos.build(out, ocv, wall)
    assert cv2.imread(str(out / "train" / "Garden.png")).shape == (20, 32, 3)  # 40x64 -> long side 32
    assert cv2.imread(str(out / "train" / "apple.png")).shape == (24, 16, 3)  # untouched
    assert cv2.imread(str(out / "heldout" / "chelsea.png")).shape == (20, 30, 3)


def test_build_reports_a_missing_photo(tmp_path, roots):
    ocv, wall = roots
    (ocv / photos.OPENCV_DATA / photos.OPENCV_TRAIN[0]).unlink()
    with pytest.raises(FileNotFoundError):
        photos.build(tmp_path / "out", ocv, wall)


def test_make_pairs_blurs_validation_photos_twice_and_nearly_sharp_ones_less(tmp_path, roots):
    ocv, wall = roots
    out = tmp_path / "out"
    counts = photos.build(out, ocv, wall)
    made = photos.make_pairs(out)
    assert made == {"heldout": 2 * counts["heldout"], "val": 2 * counts["val"], "val-nearsharp": 2 * counts["val"],
                    "val-half": 2 * counts["val"], "heldout-half": 2 * counts["heldout"]}  # fmt: skip

    def mean_abs_diff(name: str) -> float:
        d = [
            np.abs(cv2.imread(str(p)).astype(float) - cv2.imread(str(out / f"{name}-pairs" / "sharp" / p.name)))
            for p in sorted((out / f"{name}-pairs" / "blur").iterdir())
        ]
        return float(np.mean([x.mean() for x in d]))

    # Same sharp photos, much less blur (2-3 px against 9-21 px).
    assert 0 < mean_abs_diff("val-nearsharp") < mean_abs_diff("val")


def test_fetch_deb_unpacks_into_a_folder_whose_parents_do_not_exist_yet(tmp_path, monkeypatch):
    """A fresh clone has no data/ folder; ``dpkg -x`` creates only the last folder of its target."""
    calls = []

    def fake_run(cmd, cwd=None, check=False):
        calls.append(cmd)
        if cmd[:2] == ["apt-get", "download"]:
            (Path(cwd) / f"{cmd[2]}_1.0_all.deb").write_bytes(b"")
        else:  # dpkg -x DEB DEST, which fails like the real one when DEST's parent is missing
            assert cmd[:2] == ["dpkg", "-x"] and Path(cmd[3]).parent.is_dir()
            (Path(cmd[3]) / "unpacked").mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(photos.subprocess, "run", fake_run)
    dest = tmp_path / "data" / "photos" / "_opencv-doc"
    assert photos.fetch_deb("opencv-doc", dest) == dest
    assert (dest / "unpacked").is_dir() and [c[0] for c in calls] == ["apt-get", "dpkg"]
