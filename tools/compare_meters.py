"""Compare a newly trained blur meter with the bundled one, by the adoption rule below.

For each meter: its whole-image reading (``BlurMeter.estimate``, what ``deblur estimate`` and the
gate use) of every validation image, never trained on. Misreads: nearly sharp pairs
(``data/photos/val-nearsharp-pairs/blur``, 2-3 px) read at 4 px or more, and motion pairs
(``data/photos/val-pairs/blur``, 9-21 px) read below 6 px. Also the crop-level validation error
recorded when each meter was trained (mean |log err| over its extent bins). The new meter is
adopted only with fewer misreads and a crop-level error that is not higher.

Run from the repository root, with a meter from ``tools/train_blur_extent.py``::

    python tools/train_blur_extent.py --out runs/blur-extent-new
    python tools/compare_meters.py runs/blur-extent-new/blur-extent.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deblur_cli.data.datasets import list_images, read_rgb
from deblur_cli.gate.meter import BlurMeter
from deblur_cli.gate.weights import BUNDLED_RECORD, checked_bundled_path

NEAR = Path("data/photos/val-nearsharp-pairs/blur")
MOTION = Path("data/photos/val-pairs/blur")


def readings(meter: BlurMeter, images: dict[str, np.ndarray]) -> dict[str, float]:
    """Whole-image extent in px for every ``(H, W, 3)`` float RGB image, by name."""
    return {name: round(float(meter.estimate(rgb).extent), 2) for name, rgb in images.items()}


def crop_error(record: Path) -> float:
    """Mean |log error| over the extent bins of a meter's record (``blur-extent.json``)."""
    rows = json.loads(record.read_text())["val_crops"]
    return float(np.mean([r["mae_log"] for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", type=Path, help="the new meter's weights (its record JSON beside it)")
    ap.add_argument("--json", type=Path, help="write every reading here")
    args = ap.parse_args()
    meters = {"bundled": checked_bundled_path(), "new": args.new}
    near_images = {p.name: read_rgb(p) for p in list_images(NEAR)}  # read once, for both meters
    motion_images = {p.name: read_rgb(p) for p in list_images(MOTION)}
    result = {}
    for label, path in meters.items():
        meter = BlurMeter(path)
        near, motion = readings(meter, near_images), readings(meter, motion_images)
        near_bad = sum(v >= 4 for v in near.values())
        motion_bad = sum(v < 6 for v in motion.values())
        err = crop_error(path.with_name(BUNDLED_RECORD))
        result[label] = {
            "file": str(path),
            "near": near,
            "motion": motion,
            "near_misreads": near_bad,
            "motion_misreads": motion_bad,
            "misreads": near_bad + motion_bad,
            "crop_mae_log": round(err, 4),
        }
        print(
            f"{label:8s} nearly sharp read >= 4 px: {near_bad:2d}/{len(near)}  motion read < 6 px: "
            f"{motion_bad:2d}/{len(motion)}  misreads {near_bad + motion_bad:2d}  crop |log err| {err:.3f}"
        )
    new, old = result["new"], result["bundled"]
    adopt = new["misreads"] < old["misreads"] and new["crop_mae_log"] <= old["crop_mae_log"]
    print("adopt the new meter:", "yes" if adopt else "no")
    if args.json:
        args.json.write_text(json.dumps({**result, "adopt": adopt}, indent=1) + "\n")


if __name__ == "__main__":
    main()
