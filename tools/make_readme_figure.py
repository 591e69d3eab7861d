"""Make the README's before/after picture from a real motion-blurred photograph.

Deblurs ``examples/licenseplate_motion.jpg`` (a real photograph with camera motion blur, no sharp
counterpart) with the default model, crops the same region from the input and the output, and
writes them side by side with a label above each:

    python tools/make_readme_figure.py                     # -> docs/images/before_after.png

The whole photograph goes through the network (the crop alone would lose the context the
attention sees); only the picture is cropped. Runs in seconds on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deblur_cli import Deblurrer
from deblur_cli.io import read_image

ROOT = Path(__file__).resolve().parent.parent
LABEL_HEIGHT = 28  # pixels of white band above each panel for its label
GAP = 8  # pixels of white between the two panels


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` -> a crop box ``(left, top, right, bottom)``."""
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, x + w, y + h


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB of any dtype the reader returns -> uint8."""
    if pixels.dtype == np.uint8:
        return pixels
    scale = 65535.0 if pixels.dtype == np.uint16 else 1.0
    return np.clip(np.rint(pixels.astype(np.float64) / scale * 255.0), 0, 255).astype(np.uint8)


def side_by_side(before: np.ndarray, after: np.ndarray, labels: tuple[str, str], scale: int) -> Image.Image:
    """Two ``(H, W, 3)`` uint8 crops side by side under their labels, each enlarged ``scale`` times."""
    panels = [Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.LANCZOS) for a in (before, after)]
    w, h = panels[0].size
    sheet = Image.new("RGB", (2 * w + GAP, h + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    for i, (panel, label) in enumerate(zip(panels, labels, strict=True)):
        left = i * (w + GAP)
        sheet.paste(panel, (left, LABEL_HEIGHT))
        draw.text((left + 4, 4), label, fill="black", font=font)
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=ROOT / "examples" / "licenseplate_motion.jpg")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "before_after.png")
    parser.add_argument("--crop", type=parse_box, default="120,120,360,220", help="x,y,w,h in input pixels")
    parser.add_argument("--scale", type=int, default=1, help="enlarge each crop this many times")
    args = parser.parse_args(argv)

    deblurrer = Deblurrer(device="cpu")  # the default model, the network alone (no blur gate)
    blurred = to_uint8(read_image(args.input).pixels[..., :3])
    sharp = to_uint8(deblurrer.deblur(blurred))
    box = args.crop
    crops = [a[box[1] : box[3], box[0] : box[2]] for a in (blurred, sharp)]
    name = deblurrer.model_info.get("name", "default model")
    sheet = side_by_side(crops[0], crops[1], ("blurred photograph", f"deblurred ({name})"), args.scale)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output} ({sheet.size[0]}x{sheet.size[1]}, {args.output.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
