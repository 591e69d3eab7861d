"""Apply the weight-selection rule of runs 5 and 6 (stated in their recipes before each run).

For each candidate weights file: ``deblur eval``'s scoring (full images, RGB 8-bit, no blur
gate) on the motion-blurred validation pairs (G = mean gain, W = pairs whose gain is below
``-worse_tol`` dB) and on the nearly sharp validation pairs (S = mean gain). Eligible:
W <= W(B) and G >= G(B) - 0.1 dB, B being the bundled weights. Score: (G + S) / 2. The eligible
candidate with the highest score replaces B if it beats B's score by at least 0.1 dB. Held-out
pairs are not read. Run 5 used ``--worse-tol 0``; run 6 ``--worse-tol 0.05``; run 7 also
``--gate 4,6``: every candidate (B too) measured behind the blur gate with the bundled meter, as
``deblur image`` runs by default. ``--meter FILE`` puts another blur meter behind the gate
(session 8's meter v2, ``runs/blur-extent-v2/RULE.md``). Gated figures are cached under the
meter's sha256 (entries keyed ``|gate=...`` alone, from before session 8, were read by the
meter bundled then).

Run from the repository root::

    python runs/select_weights.py --run runs/saphn-s.crop192 --worse-tol 0.05 runs/saphn-s.crop192/snapshots/*.safetensors

With ``--bootstrap N`` (run 12's rule, ``runs/recipe_saphn_s_psnr192.py``) the hand-set 0.1 dB margin
gives way to a test: the best eligible candidate replaces B if its score is above B's and the
photograph-level paired bootstrap of its score minus B's (N resamples of the validation
photographs, seed 0, :mod:`deblur_cli.bootstrap`) has its 0.05 / k quantile above 0, k being
the number of eligible candidates (Bonferroni).

Each candidate's per-pair gains are cached in ``RUN/selection.json`` (keyed by the file's
sha256), so the script can be rerun as snapshots arrive.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deblur_cli.blur_extent import checked_bundled_path, parse_gate
from deblur_cli.bootstrap import resampled_means
from deblur_cli.data.datasets import find_pairs
from deblur_cli.engine import Deblurrer
from deblur_cli.evaluate import evaluate
from deblur_cli.registry import sha256_file

VAL = Path("data/photos/val-pairs")
NEAR = Path("data/photos/val-nearsharp-pairs")
BUNDLED = Path("weights/saphn-s.synth.safetensors")


def measure(weights: Path | None, gate: tuple[float, float] | None = None, meter: Path | None = None) -> dict:
    """Per-pair gains on both validation folders (``weights`` None: the bundled default), behind
    the blur gate ``(lo, hi)`` px if given, read by the blur meter ``meter`` (None: bundled)."""
    blur_meter = None
    if gate is not None and meter is not None:
        from deblur_cli.blur_extent import BlurMeter

        blur_meter = BlurMeter(meter)
    d = Deblurrer(None, weights=str(weights) if weights else None, device="cpu", gate=gate, blur_meter=blur_meter)
    val, _ = evaluate(d.deblur, find_pairs(VAL))  # deblur: (H, W, 3) float in [0, 1] -> same
    near, _ = evaluate(d.deblur, find_pairs(NEAR))
    return {"val": {r.name: round(r.gain, 4) for r in val}, "near": {r.name: round(r.gain, 4) for r in near}}


def figures(m: dict, worse_tol: float) -> dict:
    g, s = list(m["val"].values()), list(m["near"].values())
    return {"G": sum(g) / len(g), "W": sum(x < -worse_tol for x in g), "S": sum(s) / len(s)}


def score_difference_samples(m: dict, b: dict, n: int, seed: int = 0) -> np.ndarray:
    """``(n,)`` bootstrap samples of score(m) - score(b), photographs resampled with their pairs."""
    dval = {k: m["val"][k] - b["val"][k] for k in b["val"]}
    dnear = {k: m["near"][k] - b["near"][k] for k in b["near"]}
    return resampled_means([dval, dnear], n=n, seed=seed).mean(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="run directory (holds the cache)")
    ap.add_argument("--worse-tol", type=float, default=0.05)
    ap.add_argument("--gate", default="off", help="'off' or 'LO,HI' px: measure behind the blur gate")
    ap.add_argument("--meter", type=Path, help="blur-meter weights for --gate (default: the bundled meter)")
    ap.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="run 12's rule: a Bonferroni-bounded photograph bootstrap (N resamples) instead of the 0.1 dB margin",
    )
    ap.add_argument("candidates", nargs="*", type=Path)
    args = ap.parse_args()
    if args.bootstrap < 0:
        ap.error("--bootstrap N needs N >= 1 (0: the 0.1 dB margin)")
    cache_path = args.run / "selection.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    rows = {}
    gains = {}
    gate = parse_gate(args.gate)
    if args.meter is not None and gate is None:
        ap.error("--meter needs --gate LO,HI (without a gate no meter is read)")
    # Behind the gate the figures depend on the meter too, the bundled one included (it was
    # replaced in session 8): the key names the meter's sha256 whichever meter it is.
    suffix = (
        ""
        if gate is None
        else f"|gate={gate[0]:g},{gate[1]:g}|meter={sha256_file(args.meter or checked_bundled_path())}"
    )
    for w in [None, *args.candidates]:
        key = sha256_file(BUNDLED if w is None else w) + suffix
        if key not in cache or "val" not in cache[key]:
            cache[key] = measure(w, gate, args.meter)
            cache_path.write_text(json.dumps(cache, indent=1))
        rows["bundled (B)" if w is None else str(w)] = figures(cache[key], args.worse_tol)
        gains["bundled (B)" if w is None else str(w)] = cache[key]
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


def choose(rows: dict, gains: dict, bootstrap: int = 0) -> dict:
    """The rule. ``rows``: name -> figures (G, W, S), ``gains``: name -> per-pair gains, both
    with the bundled weights under ``"bundled (B)"``. Eligible: W <= W(B), G >= G(B) - 0.1.
    The best eligible candidate by score (the first named on a tie) is the one tested; if it
    fails, B stays (trying a runner-up would be a second test). It must score above B and
    then, with ``bootstrap`` = N > 0, have the 0.05 / k quantile of N resamples of
    score - score(B) above 0 (k eligible candidates, B not counted; a quantile of exactly 0
    fails); without, beat B's score by at least 0.1 dB.

    Returns a dict: ``best`` (a name), ``scores``, ``eligible``, ``lows`` (the quantiles, with
    ``bootstrap``), ``k`` and ``q``.
    """
    B = "bundled (B)"
    b = rows[B]
    scores = {n: (r["G"] + r["S"]) / 2 for n, r in rows.items()}
    eligible = {n: r["W"] <= b["W"] and r["G"] >= b["G"] - 0.1 for n, r in rows.items()}
    k = max(1, sum(v for n, v in eligible.items() if n != B))
    q = 0.05 / k
    lows = {}
    if bootstrap:
        for n in rows:
            if n != B:
                lows[n] = float(np.quantile(score_difference_samples(gains[n], gains[B], bootstrap), q))
    top = max((n for n in rows if eligible[n] and n != B), key=scores.__getitem__, default=None)
    best = B
    if top is not None and scores[top] > scores[B]:
        margin_met = lows[top] > 0 if bootstrap else scores[top] >= scores[B] + 0.1
        best = top if margin_met else B
    return {"best": best, "scores": scores, "eligible": eligible, "lows": lows, "k": k, "q": q}


if __name__ == "__main__":
    main()
