"""Validation gain against training samples seen, from the CPU runs' logs (no training).

``PYTHONPATH=. python tools/accelerator/gain_curve.py [--last saphn-s.psnr192] [--json FILE]``

Follows the chain of configs that leads to ``--last`` (``configs/train/*.toml``; each run
starts from an output of the one before: ``final``, ``best`` or a snapshot step, or the shipped
default, which is the chain ``saphn-s.synth`` -> ... -> ``saphn-s.identity`` at step 3,000),
reads each run's validation lines from ``docs/experiments/runs/<run>/train.log`` (or
``runs/<run>/train.log``) and prints, for every validation, the samples seen since the identity
(cumulative steps x batch) and the same in 256 x 256 crops' worth of pixels, with the gain.

Validation sets changed along the chain (input PSNR 23.98 dB: the held-out pairs; 27.73 dB:
the validation pairs before the Lomiri photographs; 27.20 dB: the 38 validation pairs of
today), so gains compare within one set only: the fit at the end gives each set its own offset
and all of them one slope per doubling of samples.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from deblur_cli.training.config import load_recipe

CONFIGS = Path("configs/train")
#: The shipped default: stage 5's step-3,000 snapshot (weights/MODEL_CARD.md).
SHIPPED = ("saphn-s.identity", 3000)
_VAL = re.compile(r"validation at step (\d+): input ([\d.]+) dB -> output ([\d.]+) dB")
_OUTPUT = re.compile(r"^(?P<name>[\w.\-]+):(?:snapshots/step-(?P<step>\d+)|(?P<which>best|final))$")


def _log(name: str) -> str:
    for folder in (Path("docs/experiments/runs"), Path("runs")):
        if (folder / name / "train.log").is_file():
            return (folder / name / "train.log").read_text()
    raise FileNotFoundError(f"no train.log for {name}")


def _validations(name: str) -> list[tuple[int, float, float]]:
    return [(int(s), float(i), float(o)) for s, i, o in _VAL.findall(_log(name))]


def _parent(name: str) -> tuple[str, int] | None:
    """(run, step of the weights taken) that ``name`` starts from, or None for the identity."""
    recipe = load_recipe(CONFIGS / f"{name}.toml")
    init = recipe.init_weights
    if init is None:
        return None
    if init.endswith("saphn-s.synth.safetensors"):
        return SHIPPED
    m = _OUTPUT.match(init)
    if m is None:
        raise ValueError(f"{name}: cannot follow init_weights {init!r}")
    parent = m["name"]
    if m["step"]:
        return parent, int(m["step"])
    vals = _validations(parent)
    if m["which"] == "best":
        return parent, max(vals, key=lambda v: v[2])[0]
    last = load_recipe(CONFIGS / f"{parent}.toml")
    return parent, last.stop_at or last.config.steps


def curve(last: str) -> list[dict]:
    """Every validation along the chain to ``last`` with cumulative samples (see the module docstring)."""
    chain: list[tuple[str, int | None]] = [(last, None)]
    while (p := _parent(chain[0][0])) is not None:
        chain.insert(0, p)
    rows, samples, pixels = [], 0, 0
    for i, (name, _) in enumerate(chain):
        cfg = load_recipe(CONFIGS / f"{name}.toml").config
        until = chain[i][1]  # the step whose weights the next run started from
        for step, pin, pout in _validations(name):
            if until is not None and step > until:
                break
            rows.append({
                "run": name, "step": step, "samples": samples + step * cfg.batch,
                "samples_256": round((pixels + step * cfg.batch * cfg.crop**2) / 256**2),
                "val_in": pin, "gain_db": round(pout - pin, 2),
            })  # fmt: skip
        used = until if until is not None else max(s for s, _, _ in _validations(name))
        samples += used * cfg.batch
        pixels += used * cfg.batch * cfg.crop**2
    return rows


def fit(rows: list[dict]) -> dict:
    """gain = a_set + b log2(samples): one slope ``b`` for all rows, an intercept per validation
    set (the sets differ in difficulty, not in how gains grow), by least squares."""
    sets: dict[float, list[tuple[float, float]]] = {}
    for r in rows:
        sets.setdefault(r["val_in"], []).append((math.log2(r["samples_256"]), r["gain_db"]))
    sxy = sxx = 0.0
    for pts in sets.values():
        mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
        sxy += sum((x - mx) * (y - my) for x, y in pts)
        sxx += sum((x - mx) ** 2 for x, _ in pts)
    b = sxy / sxx if sxx else 0.0
    resid = [y - (sum(q for _, q in pts) / len(pts) + b * (x - sum(p for p, _ in pts) / len(pts)))
             for pts in sets.values() for x, y in pts]  # fmt: skip
    return {"points": len(rows), "sets": len(sets), "db_per_doubling": round(b, 3),
            "residual_sd_db": round(math.sqrt(sum(e * e for e in resid) / max(1, len(resid) - len(sets) - 1)), 3),
            "samples_256_range": [rows[0]["samples_256"], rows[-1]["samples_256"]], "last_gain_db": rows[-1]["gain_db"]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--last", default="saphn-s.psnr192")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = curve(args.last)
    print(f"{'run':<20}{'step':>7}{'samples':>10}{'256px eq.':>11}{'val in':>8}{'gain dB':>9}")
    for r in rows:
        print(
            f"{r['run']:<20}{r['step']:>7}{r['samples']:>10}{r['samples_256']:>11}{r['val_in']:>8.2f}{r['gain_db']:>+9.2f}"
        )
    result = fit(rows)
    print(f"fit on {result['points']} validations ({result['sets']} validation sets, each its own offset): "
          f"{result['db_per_doubling']:+.3f} dB per doubling of samples, residual sd {result['residual_sd_db']} dB")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "fit": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
