"""Self-ensemble: the eight symmetries, their inverses, and the engine's averaging."""

from __future__ import annotations

import numpy as np
import pytest

from deblur_cli.errors import DeblurError
from deblur_cli.inference import Deblurrer
from deblur_cli.inference.ensemble import SIZES, check_size, inverse, transform


def test_the_eight_transforms_are_distinct_and_invertible():
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    seen = []
    for i in range(8):
        t = transform(x, i)
        assert t.shape == ((2, 3, 5) if i < 4 else (2, 5, 3))
        np.testing.assert_array_equal(inverse(t, i), x)
        seen.append(t.tobytes() + bytes(t.shape))
    assert len(set(seen)) == 8  # a rectangle's 8 symmetries: none repeats


def test_first_four_keep_the_shape_and_are_the_flips():
    x = np.random.default_rng(0).random((3, 4, 6))
    np.testing.assert_array_equal(transform(x, 1), x[:, :, ::-1])
    np.testing.assert_array_equal(transform(x, 2), x[:, ::-1, :])
    np.testing.assert_array_equal(transform(x, 3), np.rot90(x, 2, axes=(1, 2)))
    np.testing.assert_array_equal(transform(x, 4), x.transpose(0, 2, 1))


@pytest.mark.parametrize("bad", [0, 3, 16, -1])
def test_sizes_are_checked(bad):
    with pytest.raises(ValueError, match="--self-ensemble"):
        check_size(bad)
    with pytest.raises(DeblurError, match="--self-ensemble"):
        Deblurrer(backend=_Skewed(), self_ensemble=bad)
    assert [check_size(n) for n in SIZES] == list(SIZES)


class _Skewed:
    """A backend that is not flip-equivariant: it adds a horizontal ramp (0 at the left edge).

    Averaged over the ensemble the ramp's left-right asymmetry cancels: with flips, every
    pixel gets the mean of the ramp at its column and at the mirrored column.
    """

    device_description = "skewed"

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape)
        w = batch.shape[-1]
        return batch + np.linspace(0.0, 0.2, w, dtype=np.float32)


def test_engine_averages_the_transformed_passes():
    x = np.full((3, 20, 30), 0.5, dtype=np.float32)
    one = Deblurrer(backend=_Skewed(), tile=0).deblur_rgb(x)
    assert one[0, 0, 0] == pytest.approx(0.5) and one[0, 0, -1] == pytest.approx(0.7)
    backend = _Skewed()
    d = Deblurrer(backend=backend, tile=0, self_ensemble=2)
    two = d.deblur_rgb(x)
    assert len(backend.calls) == 2 and "self-ensemble x2" in d.device_description
    np.testing.assert_allclose(two, 0.6, atol=1e-6)  # ramp + its mirror image, halved
    backend = _Skewed()
    eight = Deblurrer(backend=backend, tile=0, self_ensemble=8).deblur_rgb(x)
    # The transposed passes see the image 20 wide: the ramp runs down the rows there.
    assert sorted(backend.calls) == [(1, 3, 20, 30)] * 4 + [(1, 3, 30, 20)] * 4
    np.testing.assert_allclose(eight, 0.6, atol=1e-6)
    assert eight.shape == x.shape and eight.dtype == np.float32


def test_ensemble_of_the_real_network_keeps_shape_and_stays_close(tiny_model):
    rng = np.random.default_rng(1)
    image = rng.random((23, 37, 3), dtype=np.float32)
    single = Deblurrer(tiny_model, device="cpu", tile=0).deblur(image)
    mean8 = Deblurrer(tiny_model, device="cpu", tile=0, self_ensemble=8).deblur(image)
    assert mean8.shape == image.shape
    # The untrained tiny net starts near the identity; the ensemble differs, but not wildly.
    assert 0 < np.abs(mean8 - single).max() < 0.2
