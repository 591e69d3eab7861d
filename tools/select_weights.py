"""Measure candidate weights on the validation pairs and apply the selection rule.

For each candidate weights file and the bundled weights B: ``deblur eval``'s scoring (full
images, RGB 8-bit) on the motion-blurred validation pairs (G = mean gain, W = pairs whose gain
is below ``-worse_tol`` dB) and on the nearly sharp validation pairs (S = mean gain), optionally
behind the blur gate as ``deblur image`` runs by default. The rule itself,
:func:`deblur_cli.eval.selection.choose`: eligible if W <= W(B) and G >= G(B) - 0.1 dB; score
(G + S) / 2; the best eligible candidate replaces B if it beats B's score by 0.1 dB, or with
``--bootstrap N`` if the photograph-level paired bootstrap of its score minus B's has its
0.05 / k quantile above 0 (k eligible candidates). Held-out pairs are never read.

Run from the repository root (``data/photos`` from ``python -m deblur_cli.data.photos data/photos``)::

    python tools/select_weights.py --run runs/saphn-s.psnr --gate 4,6 runs/saphn-s.psnr/snapshots/*.safetensors

Each candidate's per-pair gains are cached in ``RUN/selection.json``, keyed by the file's
sha256 (and, behind the gate, the gate and the blur meter's sha256), so the tool can be rerun
as snapshots arrive.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deblur_cli.data.datasets import find_pairs
from deblur_cli.eval.pairs import evaluate
from deblur_cli.eval.selection import BUNDLED, choose, figures
from deblur_cli.gate.decision import parse_gate
from deblur_cli.gate.meter import BlurMeter
from deblur_cli.gate.weights import checked_bundled_path
from deblur_cli.hub.registry import sha256_file
from deblur_cli.inference import Deblurrer

VAL = Path("data/photos/val-pairs")
NEAR = Path("data/photos/val-nearsharp-pairs")
BUNDLED_FILE = Path("weights/saphn-s.synth.safetensors")


def measure(weights: Path | None, gate: tuple[float, float] | None = None, meter: Path | None = None) -> dict:
    """Per-pair gains on both validation folders (``weights`` None: the bundled default), behind
    the blur gate ``(lo, hi)`` px if given, read by the blur meter ``meter`` (None: bundled)."""
    blur_meter = BlurMeter(meter) if gate is not None and meter is not None else None
    d = Deblurrer(None, weights=str(weights) if weights else None, device="cpu", gate=gate, blur_meter=blur_meter)
    val, _ = evaluate(d.deblur, find_pairs(VAL))  # deblur: (H, W, 3) float in [0, 1] -> same
    near, _ = evaluate(d.deblur, find_pairs(NEAR))
    return {"val": {r.name: round(r.gain, 4) for r in val}, "near": {r.name: round(r.gain, 4) for r in near}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="run folder (holds the cache, selection.json)")
    ap.add_argument("--worse-tol", type=float, default=0.05, help="a pair is made worse below -TOL dB")
    ap.add_argument("--gate", default="off", help="'off' or 'LO,HI' px: measure behind the blur gate")
    ap.add_argument("--meter", type=Path, help="blur-meter weights for --gate (default: the bundled meter)")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="a Bonferroni-bounded photograph bootstrap (N resamples), not the 0.1 dB margin")  # fmt: skip
    ap.add_argument("candidates", nargs="*", type=Path)
    args = ap.parse_args()
    if args.bootstrap < 0:
        ap.error("--bootstrap N needs N >= 1 (0: the 0.1 dB margin)")
    gate = parse_gate(args.gate)
    if args.meter is not None and gate is None:
        ap.error("--meter needs --gate LO,HI (without a gate no meter is read)")
    cache_path = args.run / "selection.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    # Behind the gate the figures depend on the meter too: the key names its sha256.
    meter_sha = "" if gate is None else sha256_file(args.meter or checked_bundled_path())
    suffix = "" if gate is None else f"|gate={gate[0]:g},{gate[1]:g}|meter={meter_sha}"
    rows, gains = {}, {}
    for w in [None, *args.candidates]:
        key = sha256_file(BUNDLED_FILE if w is None else w) + suffix
        if key not in cache or "val" not in cache[key]:
            cache[key] = measure(w, gate, args.meter)
            cache_path.write_text(json.dumps(cache, indent=1))
        name = BUNDLED if w is None else str(w)
        rows[name], gains[name] = figures(cache[key], args.worse_tol), cache[key]
    c = choose(rows, gains, args.bootstrap)
    print("gate:", "off" if gate is None else f"{gate[0]:g}-{gate[1]:g} px", f"meter: {args.meter or 'bundled'}")
    extra = f" {'low ' + format(c['q'], '.3g'):>10s}" if args.bootstrap else ""
    print(f"{'candidate':62s} {'G':>6s} {'W':>3s} {'S':>6s} {'score':>6s}{extra} eligible")
    for name, r in rows.items():
        low = c["lows"].get(name)
        cell = "" if not args.bootstrap else f" {'-' if low is None else format(low, '+.3f'):>10s}"
        flag = "yes" if c["eligible"][name] else "no"
        print(f"{name:62s} {r['G']:+6.2f} {r['W']:3d} {r['S']:+6.2f} {c['scores'][name]:+6.2f}{cell} {flag}")
    if args.bootstrap:
        print(f"bootstrap: {args.bootstrap} photograph resamples, seed 0; "
              f"low = the {c['q']:.3g} quantile of score - score(B) (k = {c['k']})")  # fmt: skip
    print(f"choice: {c['best']} (score {c['scores'][c['best']]:+.2f})")


if __name__ == "__main__":
    main()
