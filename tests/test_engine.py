"""The inference engine: tiling and blending, array layouts, tiny images, batching, memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deblur_cli.backends.torch_backend import TorchBackend
from deblur_cli.errors import DeblurError
from deblur_cli.inference import deblurrer, memory, tiling
from deblur_cli.inference.deblurrer import Deblurrer
from deblur_cli.inference.memory import estimate_bytes_per_pixel
from deblur_cli.inference.tiling import choose_tile, tile_process, tile_starts, tile_weights


def _test_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(3, H, W)`` float32: smooth gradients, a flat rectangle with sharp edges, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    img = np.stack([0.5 + 0.4 * np.sin(3 * xx + yy), 0.5 + 0.4 * np.cos(2 * yy), 0.5 + 0.3 * np.sin(4 * xx * yy)])
    img[:, 20:50, 30:70] = rng.random(3)[:, None, None]
    return np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32)


class SpyBackend:
    """A backend that records the batch shapes it sees and returns ``scale * x + shift``."""

    device_description = "spy"

    def __init__(self, scale: float = 1.0, shift: float = 0.0) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.scale, self.shift = scale, shift

    def run(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[1] == 3
        self.shapes.append(batch.shape)
        return batch * self.scale + self.shift


# --- tiling geometry and weights ------------------------------------------------------------


@pytest.mark.parametrize("size, tile, overlap", [(100, 32, 8), (64, 64, 8), (65, 64, 16), (300, 128, 32), (10, 32, 8)])
def test_tile_starts_cover_with_overlap(size, tile, overlap):
    t = min(tile, size)
    starts = tile_starts(size, t, overlap)
    assert starts[0] == 0 and starts[-1] + t == size
    assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:], strict=False))  # overlap at least `overlap`


@pytest.mark.parametrize("overlap, margin", [(16, 0), (16, 4), (32, 8), (7, 2)])
def test_weights_are_a_partition_of_unity(overlap, margin):
    tile = 64
    left = tile_weights(tile, overlap, False, True, margin)
    right = tile_weights(tile, overlap, True, False, margin)
    total = left[tile - overlap :] + right[:overlap]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert (right[:margin] == 0).all() and (right[overlap:] == 1).all()
    assert np.all(np.diff(right[:overlap]) >= 0)  # a monotone, smooth ramp


@pytest.mark.parametrize("shape, tile, overlap", [((3, 70, 90), 32, 8), ((3, 64, 200), 48, 16), ((2, 33, 17), 16, 4)])
def test_tiling_identity_is_exact(shape, tile, overlap):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = tile_process(lambda x: x, image, tile, overlap)
    np.testing.assert_allclose(out, image, atol=1e-6)
    t = torch.from_numpy(image)
    np.testing.assert_allclose(tile_process(lambda x: x, t, tile, overlap).numpy(), image, atol=1e-6)


def test_tiling_a_local_network_is_exact_when_its_context_fits_the_margin():
    """No seams from the blending: a network that only looks 2 px around each pixel gives
    the same result tiled and untiled once the zero-weight margin is >= 2 px."""
    torch.manual_seed(1)
    k1, k2 = torch.randn(8, 3, 3, 3) * 0.3, torch.randn(3, 8, 3, 3) * 0.3

    def local_net(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(torch.tanh(F.conv2d(x, k1, padding=1)), k2, padding=1)

    image = torch.rand(3, 90, 110)
    full = local_net(image[None])[0]
    tiled = tile_process(local_net, image, tile=40, overlap=12, margin=3)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_tiles_are_fed_in_batches():
    image = np.random.default_rng(0).random((3, 100, 100), dtype=np.float32)
    calls: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x * 2

    out = tile_process(run, image, tile=40, overlap=8, batch_size=3)
    assert sum(calls) == 9 and calls == [3, 3, 3]
    np.testing.assert_allclose(out, image * 2, atol=1e-6)


def test_tile_errors_propagate():
    def run(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tile_process(run, np.zeros((3, 50, 50), np.float32), 32, 8)
    with pytest.raises(ValueError, match="overlap"):
        tile_process(lambda x: x, np.zeros((3, 50, 50), np.float32), 32, 16)


def test_tiled_matches_untiled_saphn(tiny_model):
    """The criterion: < 0.5/255 mean absolute difference on an image where both fit.

    SAPHN is not translation-equivariant: its levels process quadrants and halves of their
    input independently, so a randomly initialised network leaves faint lines along the
    middle of whatever it is given (the whole image untiled, each tile when tiled), and its
    attention pools over the whole input. Those lines, not the blending (see the exact test
    above), are what remains here; they shrink relative to the image as tiles grow, and
    auto-chosen tiles are far larger than these.
    """
    backend = TorchBackend(tiny_model, device="cpu")
    image = _test_image(256, 320)
    untiled = np.clip(backend.run(image[None])[0], 0, 1)
    assert np.abs(untiled - image).mean() > 10 / 255  # the network really changes the image
    tiled = Deblurrer(backend=backend, tile=128, tile_overlap=32).deblur_rgb(image)
    assert np.abs(tiled - untiled).mean() < 0.5 / 255
    # smooth blending is what gets it there: hard-pasted tiles (no overlap) are worse
    pasted = np.clip(tile_process(backend.run, image, 128, 0), 0, 1)
    assert np.abs(tiled - untiled).mean() < np.abs(pasted - untiled).mean()


# --- memory-driven sizes --------------------------------------------------------------------


def test_bytes_per_pixel_follow_the_measurements():
    from deblur_cli.models import get_config

    tiny, small, paper = (estimate_bytes_per_pixel(get_config(n)) for n in ("saphn-tiny", "saphn-s", "saphn"))
    # measured peaks (docstring) times the 1.5 margin, within 25%
    assert 350 * 1.5 * 0.8 < tiny < 350 * 1.5 * 1.2
    assert 890 * 1.5 * 0.8 < small < 890 * 1.5 * 1.2
    assert 2040 * 1.5 * 0.8 < paper < 2040 * 1.5 * 1.2
    assert estimate_bytes_per_pixel(None) == paper


def test_choose_tile():
    assert choose_tile(100, 100, 1e6) == 0  # fits: no tiling
    tile = choose_tile(4000, 3000, 1e6)
    assert tile == 1000 and tile % 8 == 0
    assert choose_tile(4000, 3000, 10) == 64


def test_auto_tiling_when_memory_is_short(monkeypatch):
    spy = SpyBackend()
    d = Deblurrer(backend=spy)
    monkeypatch.setattr(deblurrer, "available_memory", lambda device=None: 200 * 200 * d.bytes_per_pixel)
    assert d.tile_for(100, 100) == 0
    assert d.tile_for(1000, 800) == 200
    image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    out = d.deblur(image)
    np.testing.assert_array_equal(out, image)
    assert all(s[2] <= 200 and s[3] <= 200 for s in spy.shapes) and len(spy.shapes) > 1


def test_host_memory_is_read():
    assert memory.host_available_memory() > 0
    assert memory.available_memory() > 0


# --- arrays in, arrays out ------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, dtype",
    [((20, 24, 3), np.uint8), ((20, 24, 3), np.uint16), ((20, 24), np.uint8), ((20, 24, 1), np.uint16),
     ((20, 24, 4), np.uint8), ((20, 24, 2), np.uint16), ((20, 24, 3), np.float32)],
)  # fmt: skip
def test_layouts_round_trip(shape, dtype, tiny_model):
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "u":
        image = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    else:
        image = rng.random(shape, dtype=dtype)
    out = Deblurrer(tiny_model, device="cpu").deblur(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    if len(shape) == 3 and shape[2] in (2, 4):
        np.testing.assert_array_equal(out[..., -1], image[..., -1])  # alpha untouched
    identity = Deblurrer(backend=SpyBackend()).deblur(image)
    np.testing.assert_array_equal(identity, image)  # conversions are exact inverses


def test_alpha_is_not_seen_by_the_network():
    spy = SpyBackend()
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., 3] = 255
    Deblurrer(backend=spy).deblur(rgba)
    assert spy.shapes == [(1, 3, 20, 24)]


def test_gray_is_replicated_and_averaged_back():
    gray = np.full((20, 24), 100, np.uint8)
    assert (Deblurrer(backend=SpyBackend(shift=0.1)).deblur(gray) == 100 + round(0.1 * 255)).all()


def test_output_is_clamped():
    image = np.full((20, 24, 3), 200, np.uint8)
    assert (Deblurrer(backend=SpyBackend(scale=3.0)).deblur(image) == 255).all()
    assert (Deblurrer(backend=SpyBackend(shift=-2.0)).deblur(image) == 0).all()


@pytest.mark.parametrize("h, w", [(1, 1), (5, 7), (15, 40), (16, 16), (3, 200)])
def test_tiny_images_are_padded_to_16(h, w, tiny_model):
    spy = SpyBackend()
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Deblurrer(backend=spy).deblur(image), image)
    assert spy.shapes == [(1, 3, max(h, 16), max(w, 16))]
    assert Deblurrer(tiny_model, device="cpu").deblur(image).shape == (h, w, 3)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 5), np.uint8), np.zeros((4, 4), np.int32), np.zeros((0, 4, 3), np.uint8)]
)
def test_unsupported_arrays(bad):
    with pytest.raises(DeblurError):
        Deblurrer(backend=SpyBackend()).deblur(bad)


def test_deblur_batch_matches_single_images(tiny_model):
    rng = np.random.default_rng(0)
    images = [rng.random((24, 20, 3), dtype=np.float32) for _ in range(3)] + [rng.random((17, 30, 3), dtype=np.float32)]
    d = Deblurrer(tiny_model, device="cpu", tile=0)
    batched = d.deblur_batch(images, batch_size=3)
    for image, out in zip(images, batched, strict=True):
        np.testing.assert_allclose(out, d.deblur(image), atol=1e-5)
    spy = SpyBackend()
    Deblurrer(backend=spy).deblur_batch(images, batch_size=2)
    assert sorted(s[0] for s in spy.shapes) == [1, 1, 2]


def test_deblur_a_path(tmp_path, tiny_model):
    from PIL import Image

    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "g.png")
    assert Deblurrer(tiny_model, device="cpu").deblur(tmp_path / "g.png").shape == (20, 24)
    with pytest.raises(DeblurError, match="no such file"):
        Deblurrer(backend=SpyBackend()).deblur(tmp_path / "missing.png")


# --- construction -------------------------------------------------------------------------


def test_public_api_is_lazy_and_exported():
    import deblur_cli

    assert deblur_cli.Deblurrer is Deblurrer


def test_model_from_weights_file(tmp_path, tiny_model):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    meta = {"arch": "saphn-tiny", "config": json.dumps(tiny_model.config.to_dict())}
    save_file(tiny_model.state_dict(), str(path), metadata=meta)
    d = Deblurrer(weights=path, device="cpu")
    assert d.model_info["sha256"] and d.device_description.startswith("cpu")
    image = _test_image(24, 20)
    expected = Deblurrer(tiny_model, device="cpu").deblur_rgb(image)
    np.testing.assert_allclose(d.deblur_rgb(image), expected, atol=1e-6)


def test_module_with_weights_is_ambiguous(tiny_model, tmp_path):
    with pytest.raises(DeblurError, match="not both"):
        Deblurrer(tiny_model, weights=tmp_path / "w.safetensors", device="cpu")


def test_bad_tile_options():
    with pytest.raises(DeblurError, match="--tile"):
        Deblurrer(backend=SpyBackend(), tile=8)
    with pytest.raises(DeblurError, match="half"):
        Deblurrer(backend=SpyBackend(), tile=64, tile_overlap=32)
    with pytest.raises(DeblurError, match="overlap"):
        Deblurrer(backend=SpyBackend(), tile_overlap=-1)


def test_unknown_backend_and_missing_onnx(monkeypatch, tiny_model):
    import sys

    with pytest.raises(DeblurError, match="unknown backend"):
        Deblurrer(tiny_model, backend="tensorrt")
    monkeypatch.setitem(sys.modules, "deblur_cli.backends.ort", None)  # import fails
    with pytest.raises(DeblurError, match="ONNX backend is not available"):
        Deblurrer(tiny_model, backend="onnx")


def test_onnx_backend_is_built_through_the_protocol(monkeypatch):
    import sys
    import types

    made = {}

    class FakeOnnx:
        def __init__(self, model, weights, device, **kwargs):
            made.update(model=model, weights=weights, device=device, **kwargs)
            self.device_description = "onnxruntime CPUExecutionProvider"

        def run(self, batch):
            return batch

    monkeypatch.setitem(sys.modules, "deblur_cli.backends.ort", types.SimpleNamespace(OnnxBackend=FakeOnnx))
    d = Deblurrer("saphn-s.synth", weights="w.onnx", device="auto", backend="onnx")
    assert made == {"model": "saphn-s.synth", "weights": "w.onnx", "device": "auto"}
    assert d.device_description == "onnxruntime CPUExecutionProvider"
    Deblurrer(backend="onnx", fp16=True)
    assert made["fp16"] is True


def test_default_overlap_is_shared_with_the_cli():
    from deblur_cli.cli import options

    assert options.DEFAULT_TILE_OVERLAP == tiling.DEFAULT_TILE_OVERLAP


def test_deblur_files_batches_same_sizes_and_isolates_failures(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    jobs = []
    for name, shape in [("a", (20, 24, 3)), ("b", (30, 16, 3)), ("c", (20, 24, 3)), ("d", (20, 24, 3))]:
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / f"{name}.png")
        jobs.append((tmp_path / f"{name}.png", tmp_path / "out" / f"{name}.png"))
    (tmp_path / "bad.png").write_text("nope")
    jobs.insert(2, (tmp_path / "bad.png", tmp_path / "out" / "bad.png"))
    spy = SpyBackend()
    results = list(Deblurrer(backend=spy).deblur_files(jobs, batch_size=None))
    assert sorted(r.status for r in results) == ["done"] * 4 + ["failed"]
    assert sorted(s[:1] + s[2:] for s in spy.shapes) == [(1, 30, 16), (3, 20, 24)]  # a, c, d in one batch
    failed = next(r for r in results if r.status == "failed")
    assert failed.src.name == "bad.png" and "not an image" in failed.message
    for src, dst in jobs:
        if src.name != "bad.png":
            np.testing.assert_array_equal(np.asarray(Image.open(dst)), np.asarray(Image.open(src)))
    again = list(Deblurrer(backend=spy).deblur_files(jobs, skip_existing=True))
    assert [r.status for r in again].count("skipped") == 4


def test_out_of_memory_is_a_clear_error(tmp_path):
    from PIL import Image

    class Starved(SpyBackend):
        def run(self, batch):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(DeblurError, match="out of memory.*--tile"):
        Deblurrer(backend=Starved()).deblur_file(tmp_path / "a.png", tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_cpu_memory_budget_is_capped(monkeypatch):
    monkeypatch.setattr(memory, "host_available_memory", lambda: 64 << 30)
    monkeypatch.delenv("DEBLUR_MEMORY_LIMIT", raising=False)
    assert memory.available_memory() == memory.CPU_ACTIVATION_CAP
    monkeypatch.setenv("DEBLUR_MEMORY_LIMIT", "8G")
    assert memory.available_memory() == 8 << 30
    monkeypatch.setenv("DEBLUR_MEMORY_LIMIT", "100G")
    assert memory.available_memory() == int((64 << 30) * memory.MEMORY_FRACTION_CPU)
    monkeypatch.setenv("DEBLUR_MEMORY_LIMIT", "lots")
    with pytest.raises(DeblurError, match="DEBLUR_MEMORY_LIMIT"):
        memory.available_memory()


def test_cpu_runs_channels_last_with_the_same_output(tiny_model):
    """The CPU backend converts the network to NHWC; its output is NCHW and matches a plain NCHW run."""
    import copy

    reference = copy.deepcopy(tiny_model)
    image = _test_image(64, 96)[None]
    backend = TorchBackend(tiny_model, device="cpu")
    assert backend.channels_last
    conv = next(m for m in backend.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    out = backend.run(image)
    assert out.flags["C_CONTIGUOUS"] and out.shape == image.shape
    with torch.inference_mode():
        ref = reference(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
