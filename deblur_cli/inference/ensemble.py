"""Self-ensemble: average the network's output over flips and transposes of its input.

The network is not exactly equivariant to the eight symmetries of the square (the dihedral
group: identity, flips, 180-degree rotation, transposes), so its errors differ from one
orientation to another and partly cancel in the mean. Run on a transformed image, the output
is transformed back before averaging. EDSR introduced this for super-resolution ("x8
self-ensemble"); BasicSR and Restormer's test scripts offer it. Cost: ``n`` passes.

Measured with an earlier version of the bundled weights (mean PSNR gain over the input, full
images): validation pairs +1.11 dB alone, +1.27 with 4, +1.29 with 8; held-out pairs +0.80,
+0.89, +0.92. The README has the current figures (``deblur eval --data DIR --self-ensemble 8``).

The transforms are ordered so that every prefix is a sensible ensemble: 2 = identity and
horizontal flip, 4 = the flips and their product (all keep the image's shape, so images of a
batch stay one size), 8 = also the transposes.
"""

from __future__ import annotations

import numpy as np

#: Ensemble sizes accepted by :class:`~deblur_cli.inference.deblurrer.Deblurrer` and ``--self-ensemble``.
SIZES = (1, 2, 4, 8)


def check_size(n: int) -> int:
    """``n`` if it is one of :data:`SIZES`; raises ``ValueError`` otherwise."""
    if n not in SIZES:
        raise ValueError(f"--self-ensemble must be one of {', '.join(map(str, SIZES))}, got {n}")
    return n


def transform(x: np.ndarray, i: int) -> np.ndarray:
    """Symmetry ``i`` (0-7) of the last two axes of ``x`` (``(..., H, W)``), as a view.

    0 identity, 1 horizontal flip, 2 vertical flip, 3 both (180-degree rotation); 4-7 the same
    after swapping the two axes (transpose), so that their output is ``(..., W, H)``.
    """
    if not 0 <= i < 8:
        raise ValueError(f"symmetry index must be 0..7, got {i}")
    if i >= 4:
        x = np.swapaxes(x, -1, -2)
    if i & 1:
        x = x[..., :, ::-1]
    if i & 2:
        x = x[..., ::-1, :]
    return x


def inverse(y: np.ndarray, i: int) -> np.ndarray:
    """Undo :func:`transform` ``i`` on ``y`` (``inverse(transform(x, i), i) == x``), as a view."""
    if not 0 <= i < 8:
        raise ValueError(f"symmetry index must be 0..7, got {i}")
    if i & 2:
        y = y[..., ::-1, :]
    if i & 1:
        y = y[..., :, ::-1]
    if i >= 4:
        y = np.swapaxes(y, -1, -2)
    return y
