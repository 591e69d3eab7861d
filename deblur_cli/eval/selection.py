"""The weight-selection rule: does a candidate replace the bundled weights?

Each candidate (and the bundled weights B) is measured on two sets of validation pairs: motion
blurred ones, giving G (mean PSNR gain, dB) and W (pairs whose gain is below ``-worse_tol``),
and nearly sharp ones, giving S (mean gain). A candidate is eligible if W <= W(B) and
G >= G(B) - 0.1 dB; its score is (G + S) / 2. The best eligible candidate by score is the only
one tested (trying a runner-up after it fails would be a second test); it replaces B if it
scores above B and either beats B's score by 0.1 dB or, with a bootstrap, passes a paired
photograph-level bootstrap bounded for the number of eligible candidates (Bonferroni).

``tools/select_weights.py`` measures the candidates and applies :func:`choose`; the rule lives
here so that it is tested as a pure function.
"""

from __future__ import annotations

import numpy as np

from deblur_cli.eval.bootstrap import resampled_means

#: The name :func:`choose` expects for the bundled weights among the candidates.
BUNDLED = "bundled (B)"
#: Eligibility: a candidate's G may fall at most this far below B's (dB).
G_TOLERANCE = 0.1
#: Without a bootstrap, the best eligible score must beat B's by at least this much (dB).
MARGIN = 0.1


def figures(gains: dict, worse_tol: float) -> dict:
    """G, W and S of one candidate from its per-pair gains.

    Args:
        gains: ``{"val": {pair name: gain dB}, "near": {pair name: gain dB}}``, the motion
            blurred and the nearly sharp validation pairs.
        worse_tol: a motion pair counts as made worse if its gain is below ``-worse_tol``.
    """
    g, s = list(gains["val"].values()), list(gains["near"].values())
    return {"G": sum(g) / len(g), "W": sum(x < -worse_tol for x in g), "S": sum(s) / len(s)}


def score_difference_samples(m: dict, b: dict, n: int, seed: int = 0) -> np.ndarray:
    """``(n,)`` bootstrap samples of score(m) - score(b): photographs resampled with their pairs
    (:func:`deblur_cli.eval.bootstrap.resampled_means`); ``m``, ``b`` as :func:`figures` takes."""
    dval = {k: m["val"][k] - b["val"][k] for k in b["val"]}
    dnear = {k: m["near"][k] - b["near"][k] for k in b["near"]}
    return resampled_means([dval, dnear], n=n, seed=seed).mean(axis=1)


def choose(rows: dict, gains: dict, bootstrap: int = 0) -> dict:
    """Apply the rule.

    Args:
        rows: candidate name -> figures (G, W, S), with the bundled weights under :data:`BUNDLED`.
        gains: candidate name -> per-pair gains (needed only with ``bootstrap``).
        bootstrap: N > 0: the tested candidate must have the ``0.05 / k`` quantile of N resamples
            of score - score(B) above 0 (k eligible candidates, B not counted; a quantile of
            exactly 0 fails); 0: it must beat B's score by :data:`MARGIN`.

    Returns:
        a dict: ``best`` (a name; B when nothing passes; the first named wins a tie),
        ``scores``, ``eligible``, ``lows`` (the quantiles, with ``bootstrap``), ``k`` and ``q``.
    """
    b = rows[BUNDLED]
    scores = {n: (r["G"] + r["S"]) / 2 for n, r in rows.items()}
    eligible = {n: r["W"] <= b["W"] and r["G"] >= b["G"] - G_TOLERANCE for n, r in rows.items()}
    k = max(1, sum(v for n, v in eligible.items() if n != BUNDLED))
    q = 0.05 / k
    lows = {}
    if bootstrap:
        for n in rows:
            if n != BUNDLED:
                lows[n] = float(np.quantile(score_difference_samples(gains[n], gains[BUNDLED], bootstrap), q))
    top = max((n for n in rows if eligible[n] and n != BUNDLED), key=scores.__getitem__, default=None)
    best = BUNDLED
    if top is not None and scores[top] > scores[BUNDLED]:
        margin_met = lows[top] > 0 if bootstrap else scores[top] >= scores[BUNDLED] + MARGIN
        best = top if margin_met else BUNDLED
    return {"best": best, "scores": scores, "eligible": eligible, "lows": lows, "k": k, "q": q}
