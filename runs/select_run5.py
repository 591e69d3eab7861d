"""Apply run 5's selection rule (stated in ``runs/recipe_saphn_s_identity.py`` before the run).

For each candidate weights file: ``deblur eval``'s scoring (full images, RGB 8-bit) on the
motion-blurred validation pairs (G = mean gain, W = images made worse) and on the nearly sharp
validation pairs (S = mean gain). Eligible: W <= W(B) and G >= G(B) - 0.1 dB, B being the bundled
weights. Score: (G + S) / 2. The eligible candidate with the highest score replaces B if it beats
B's score by at least 0.1 dB. Held-out pairs are not read.

Run from the repository root::

    python runs/select_run5.py runs/saphn-s.nearsharp/best.safetensors runs/saphn-s.identity/snapshots/*.safetensors

Each candidate's figures are cached in ``runs/saphn-s.identity/selection.json`` (keyed by the
file's sha256), so the script can be rerun as snapshots arrive.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deblur_cli.data.datasets import find_pairs
from deblur_cli.engine import Deblurrer
from deblur_cli.evaluate import evaluate
from deblur_cli.registry import sha256_file

VAL = Path("data/photos/val-pairs")
NEAR = Path("data/photos/val-nearsharp-pairs")
CACHE = Path("runs/saphn-s.identity/selection.json")


def measure(weights: Path | None) -> dict:
    """G, W and S of ``weights`` (None: the bundled default)."""
    d = Deblurrer(None, weights=str(weights) if weights else None, device="cpu")
    _, val = evaluate(d.deblur, find_pairs(VAL))  # deblur: (H, W, 3) float in [0, 1] -> same
    _, near = evaluate(d.deblur, find_pairs(NEAR))
    return {"G": round(val.gain, 3), "W": val.worse, "S": round(near.gain, 3), "S_worse": near.worse}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="*", type=Path)
    args = ap.parse_args()
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    rows = {}
    for w in [None, *args.candidates]:
        key = "bundled" if w is None else sha256_file(w)
        if key not in cache:
            cache[key] = measure(w)
            CACHE.write_text(json.dumps(cache, indent=1))
        rows["bundled (B)" if w is None else str(w)] = cache[key]
    b = rows["bundled (B)"]
    best, best_score = "bundled (B)", (b["G"] + b["S"]) / 2
    print(f"{'candidate':62s} {'G':>6s} {'W':>3s} {'S':>6s} {'score':>6s} eligible")
    for name, r in rows.items():
        score = (r["G"] + r["S"]) / 2
        eligible = r["W"] <= b["W"] and r["G"] >= b["G"] - 0.1
        print(f"{name:62s} {r['G']:+6.2f} {r['W']:3d} {r['S']:+6.2f} {score:+6.2f} {'yes' if eligible else 'no'}")
        if eligible and name != "bundled (B)" and score > best_score and score >= (b["G"] + b["S"]) / 2 + 0.1:
            best, best_score = name, score
    print(f"choice: {best} (score {best_score:+.2f})")


if __name__ == "__main__":
    main()
