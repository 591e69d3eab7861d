"""The default model's output, pinned: a move of code must not change a single byte.

The checksum is of the ``uint8`` output of :class:`~deblur_cli.Deblurrer` (CPU, torch, fp32,
untiled, one thread) on two small test images: a crop of the real blurred example photograph
and an odd-sized synthetic image (which exercises the pad-and-crop path).

Floating-point summation order depends on the CPU's kernels (vendor GEMM, AVX-512 or not, bf16
or not), so a different CPU may round a handful of values the other way. The exact checksum is
therefore asserted on CPUs with the fingerprint it was recorded on; on others the output must
match the committed reference to within one level on at most 0.1 % of the values.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

# sha256 of the uint8 output, and the CPU fingerprint it was recorded on.
PINNED = {
    "licenseplate_crop": "fb672d622539d6dd27fcad7d816e0b3b9b1d3e3f1dd141fd763b79d899da8caa",
    "synthetic_odd": "7801cdc139ebe3944be3db09c523d3e891fb06156d236199377fc53d3375ae17",
}
RECORDED_ON = "AuthenticAMD-avx2-avx512f-avx512_bf16"


def cpu_fingerprint() -> str:
    """Vendor and the instruction-set flags that choose torch's CPU kernels."""
    from deblur_cli.ops.cpu import cpu_vendor

    try:
        flags = next(
            (line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("flags")),
            [],
        )
    except OSError:
        flags = []
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return "-".join([cpu_vendor(), *isa])


def inputs() -> dict[str, np.ndarray]:
    from deblur_cli.io import read_image

    photo = read_image(ROOT / "examples" / "licenseplate_motion.jpg").pixels
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, size=(11, 13, 3)).astype(np.float32)
    import cv2

    synthetic = cv2.resize(base, (53, 41), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    return {"licenseplate_crop": np.ascontiguousarray(photo[300:396, 200:328]), "synthetic_odd": synthetic}


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    import torch

    from deblur_cli import Deblurrer

    torch.set_num_threads(1)
    deblurrer = Deblurrer(device="cpu", tile=0)
    return {name: deblurrer.deblur(image) for name, image in inputs().items()}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_default_model_output_is_pinned(outputs, name):
    out = outputs[name]
    assert out.dtype == np.uint8
    digest = hashlib.sha256(out.tobytes()).hexdigest()
    if cpu_fingerprint() == RECORDED_ON:
        assert digest == PINNED[name]
    else:
        reference = np.load(DATA / f"golden_{name}.npy", allow_pickle=False)
        diff = np.abs(out.astype(np.int16) - reference.astype(np.int16))
        assert diff.max() <= 1
        assert np.count_nonzero(diff) <= 0.001 * diff.size


def test_the_model_changes_the_photo(outputs):
    """Guards the pin itself: an identity model would also give a stable checksum."""
    photo = inputs()["licenseplate_crop"]
    assert np.abs(outputs["licenseplate_crop"].astype(np.int16) - photo).mean() > 0.1
