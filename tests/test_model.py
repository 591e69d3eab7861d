"""The SAPHN network against the paper: attention, filtering, fusion, hierarchy, sizes, variants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from deblur_cli.models import SAPHN, create_model, get_config, list_variants, randomize_zero_layers
from deblur_cli.models.attention import EfficientAttention, attention_reference
from deblur_cli.models.pixel_filter import PixelDependentFilter
from deblur_cli.models.saphn import halves_to_full, quadrants_to_halves, split_halves, split_quadrants
from deblur_cli.ops.pixel_filter import pixel_dependent_filter
from deblur_cli.viz.recording import MapRecorder

TINY = {"widths": (4, 8, 8), "blocks": 1, "attn_maps": 2, "kernel_size": 3}


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Every path live (zero-initialised heads and meta-layers get values), back in train mode."""
    return randomize_zero_layers(model, std=0.1).train()


# --- Pixel-dependent filtering (Eq. 11) ---------------------------------------------------


@pytest.mark.parametrize("k", [3, 5])
def test_pdf_with_unit_kernels_and_zero_offsets_is_a_convolution(k):
    """Sec. 3.2: V = 1 and delta = 0 reduce Eq. 11 to a standard K x K convolution with W."""
    x = torch.randn(2, 6, 13, 17)
    weight = torch.randn(5, 6, k, k)
    bias = torch.randn(5)
    kernels = torch.ones(2, k * k, 13, 17)
    offsets = torch.zeros(2, 2 * k * k, 13, 17)
    ours = pixel_dependent_filter(x, kernels, offsets, weight, bias)
    ref = F.conv2d(x, weight, bias, padding=k // 2)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_pdf_module_starts_as_plain_convolution():
    """The meta-layer is zero-initialised: an untrained module equals conv2d with its weight."""
    m = PixelDependentFilter(6, kernel_size=5)
    x = torch.randn(1, 6, 9, 11)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias, padding=2), atol=1e-4, rtol=1e-4)


def test_pdf_integer_offset_shifts_the_sample():
    """An offset of +1 px in x for every tap moves the K x K window one pixel right."""
    k = 3
    x = torch.randn(1, 2, 8, 10)
    weight = torch.randn(2, 2, k, k)
    kernels = torch.ones(1, k * k, 8, 10)
    offsets = torch.zeros(1, k * k, 2, 8, 10)
    offsets[:, :, 1] = 1.0  # dx = +1
    ours = pixel_dependent_filter(x, kernels, offsets.reshape(1, -1, 8, 10), weight, None)
    # Window of output column j covers input columns j..j+2 (zeros outside the image).
    ref = F.conv2d(F.pad(x, (0, 2, 1, 1)), weight)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_pdf_offsets_are_bounded():
    m = PixelDependentFilter(4, kernel_size=3, max_offset=1.5)
    torch.nn.init.normal_(m.meta.weight, std=10.0)
    maps = m.intermediates(torch.randn(1, 4, 6, 6))
    assert maps["offsets"].shape == (1, 18, 6, 6) and maps["kernels"].shape == (1, 9, 6, 6)
    assert maps["offsets"].abs().max() <= 1.5
    assert maps["offsets"].abs().max() > 0.5  # and they do move


# --- Attention (Eq. 2-10) -----------------------------------------------------------------


@pytest.mark.parametrize("cross", [False, True])
def test_attention_matrix_form_equals_step_by_step(cross):
    """Eq. 10 (matrix form) equals a literal Eq. 3-9; Eq. 9 averages over C2 where Eq. 10 sums."""
    attn = EfficientAttention(6, 4)
    x = torch.randn(2, 6, 5, 7)
    values = torch.randn(2, 6, 5, 7) if cross else None
    with torch.no_grad():
        fast = attn(x, values)
        slow = attention_reference(attn, x, values)
    torch.testing.assert_close(fast, slow * attn.maps, atol=1e-5, rtol=1e-4)
    cl = torch.channels_last
    with torch.no_grad():  # the CPU backend's layout: pixel-major product, channels-last result
        nhwc = attn(x.contiguous(memory_format=cl), None if values is None else values.contiguous(memory_format=cl))
    assert nhwc.is_contiguous(memory_format=cl)
    torch.testing.assert_close(nhwc, fast, atol=1e-6, rtol=1e-5)


def test_attention_mixing_by_onednn_equals_bmm():
    """CPU inference of one image mixes the descriptors with a 1x1 convolution; the batched
    product gives the same values. Batches (levels 2 and 3's patches) take the product."""
    from deblur_cli.ops.attention import onednn_mix
    from deblur_cli.ops.cpu import onednn_products

    attn = EfficientAttention(16, 4)
    x = torch.randn(1, 16, 6, 9).contiguous(memory_format=torch.channels_last)
    assert not onednn_mix(x)  # autograd records
    with torch.inference_mode():
        assert onednn_mix(x) == torch.backends.mkldnn.is_available()
        assert not onednn_mix(torch.cat([x, x])) and not onednn_mix(x, forced=False)
        by_conv = attn(x)
        with onednn_products(False):
            by_bmm = attn(x)
    assert by_conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(by_conv, by_bmm, atol=1e-6, rtol=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_attention_never_forms_an_hw_by_hw_matrix():
    """On a 96x96 map (HW = 9216) no intermediate reaches HW^2 = 85M elements: the largest is C*HW."""
    attn = EfficientAttention(8, 4)
    x = torch.randn(1, 8, 96, 96)
    with torch.no_grad(), _LargestTensor() as probe:
        attn(x)
    hw = 96 * 96
    assert probe.largest <= 8 * hw  # the input itself; HW x HW would be 1000x larger


class _FullSizeStorages(TorchDispatchMode):
    """Records the distinct storages of the tensors of at least ``size`` elements that ops produce
    (a view shares its base's storage, so reshapes are not counted again)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() >= self.size:
                self.storages.add(t.untyped_storage().data_ptr())
        return out


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_attention_forms_no_gated_copy_of_the_features(cross, layout):
    """Eq. 3's gating is folded into the maps and sums that read it: the only tensor the size of
    the features that the module writes is its output (no ``x * M1``, no ``values * M1``)."""
    attn = EfficientAttention(16, 4)  # the maps' tensors, (B, 2 * C2, H, W), are half the features' size
    x = torch.randn(2, 16, 24, 20).contiguous(memory_format=layout)
    values = torch.randn(2, 16, 24, 20).contiguous(memory_format=layout) if cross else None
    with torch.no_grad(), _FullSizeStorages(x.numel()) as probe:
        attn(x, values)
    inputs = {t.untyped_storage().data_ptr() for t in (x, values) if t is not None}  # their views
    assert len(probe.storages - inputs) == 1


def test_attention_sums_stay_in_half_precision_range():
    """The pooled mean of Eq. 7 is scaled before it is summed: 16k pixels of value 8 sum to
    131k, past float16's 65504, yet the module's output in float16 is finite and matches
    float32 (the CUDA ``--fp16`` and ONNX fp16 paths compute in this precision)."""
    attn = EfficientAttention(8, 4)
    x = torch.full((1, 8, 128, 128), 8.0) + torch.rand(1, 8, 128, 128)
    with torch.no_grad():
        ref = attn(x)
        half = attn.half()(x.half())
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), ref, atol=0.05, rtol=0.01)


def test_attention_maps_are_distributions():
    attn = EfficientAttention(6, 3)
    maps = attn.intermediates(torch.randn(2, 6, 4, 5))
    q = maps["q"]
    assert q.shape == (2, 3, 4, 5)
    torch.testing.assert_close(q.sum(dim=(2, 3)), torch.ones(2, 3))
    assert maps["m1"].shape == (2, 1, 4, 5)
    assert ((maps["m1"] > 0) & (maps["m1"] < 1)).all()


# --- Hierarchy and sizes ------------------------------------------------------------------


def test_patch_split_follows_the_4_2_1_layout():
    """Level 3: quadrants TL, TR, BL, BR; level 2: top and bottom halves; stitching inverts both."""
    x = torch.arange(2 * 1 * 8 * 12, dtype=torch.float32).reshape(2, 1, 8, 12)
    q = split_quadrants(x)
    assert q.shape == (8, 1, 4, 6)
    b = 2
    for i, (ys, xs) in enumerate([(slice(0, 4), slice(0, 6)), (slice(0, 4), slice(6, 12)),
                                  (slice(4, 8), slice(0, 6)), (slice(4, 8), slice(6, 12))]):  # fmt: skip
        torch.testing.assert_close(q[i * b : (i + 1) * b], x[:, :, ys, xs])
    h = split_halves(x)
    torch.testing.assert_close(h[:b], x[:, :, :4])
    torch.testing.assert_close(h[b:], x[:, :, 4:])
    torch.testing.assert_close(quadrants_to_halves(q), h)
    torch.testing.assert_close(halves_to_full(h), x)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (37, 53), (255, 1023), (8, 8), (9, 300)])
def test_output_has_input_size(size):
    model = _randomize(create_model("saphn-tiny")).eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_untrained_network_is_the_identity():
    """Zero-initialised decoder heads: every level starts as 'output = input'."""
    model = create_model("saphn-tiny").eval()
    x = torch.rand(2, 3, 21, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x)


def test_deterministic_in_eval_mode():
    model = _randomize(create_model("saphn-tiny")).eval()
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_batch_items_are_independent():
    """Global attention is per image (per patch): batching must not mix images."""
    model = _randomize(create_model("saphn-tiny")).eval()
    x = torch.rand(3, 3, 24, 32)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


# --- Variants, switches, gradients ---------------------------------------------------------


def test_registered_variants():
    names = set(list_variants())
    assert {"saphn", "saphn-a", "saphn-s", "saphn-tiny"} <= names
    assert get_config("saphn").widths[2] == 128 and get_config("saphn").blocks == 3
    assert get_config("saphn").kernel_size == 5
    assert get_config("saphn-a").adaptive_offset is False
    with pytest.raises(KeyError, match="unknown model"):
        get_config("nope")


@pytest.mark.parametrize("name", sorted(list_variants()))
def test_every_variant_runs_forward_backward(name):
    """Each registered variant (at test width) trains: finite outputs, finite gradients."""
    model = _randomize(create_model(name, **TINY))
    x = torch.rand(2, 3, 24, 40)
    levels: list[torch.Tensor] = []
    y = model(x, levels=levels)
    loss = sum((lv - x.flip(-1)).abs().mean() for lv in levels)
    loss.backward()
    assert y.shape == x.shape and len(levels) == 3
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


SWITCHES = ["self_attention", "cross_attention", "cross_level_attention", "adaptive_kernel", "adaptive_offset"]


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=5)))
def test_table3_ablation_switches_build_and_run(flags):
    """Every combination of Table 3's SA / CA / CLA / Kernel / Offset columns builds and runs."""
    kw = dict(zip(SWITCHES, flags))
    model = _randomize(create_model("saphn", **TINY, **kw))
    x = torch.rand(1, 3, 16, 16)
    y = model(x)
    y.mean().backward()
    assert torch.isfinite(y).all()
    has_offsets = any(k.endswith("pdf.offsets") for k in _maps(model, x))
    assert has_offsets == kw["adaptive_offset"]
    if not any(flags):
        assert model.num_parameters() < create_model("saphn", **TINY).num_parameters()


@pytest.mark.parametrize("flags", [(True, True, True, True, True), (True, False, True, False, True),
                                   (False, True, True, True, False), (False, False, True, True, True)])  # fmt: skip
@pytest.mark.parametrize("channels_last", [False, True])
def test_shared_heads_equal_separate_convolutions(flags, channels_last, monkeypatch):
    """The content-aware module runs its 3x3 heads on x (meta-layer, f_fus, f_m1s) as one
    convolution; outputs, maps and gradients equal running them one by one."""
    from deblur_cli.models.fusion import ContentAwareModule

    kw = dict(zip(SWITCHES, flags))
    torch.manual_seed(0)
    a = _randomize(create_model("saphn", **TINY, **kw))
    b = _randomize(create_model("saphn", **TINY, **kw))
    b.load_state_dict(a.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(2, 3, 16, 24).contiguous(memory_format=fmt)
    a.to(memory_format=fmt), b.to(memory_format=fmt)
    maps_a, maps_b = MapRecorder(), MapRecorder()
    with maps_a.attach(a):
        ya = a(x)
    ya.square().mean().backward()
    calls = []
    monkeypatch.setattr(ContentAwareModule, "_heads", lambda self, x, use_ca: calls.append(1) or {})
    with maps_b.attach(b):
        yb = b(x)
    yb.square().mean().backward()
    assert calls  # the unfused path did run
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    assert maps_a.keys() == maps_b.keys()
    for k in maps_a:
        np.testing.assert_allclose(maps_a[k], maps_b[k], atol=1e-5, rtol=1e-5)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert (pa.grad is None) == (pb.grad is None), n
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4)


def _maps(model: SAPHN, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every map of one forward pass, recorded through the forward hooks."""
    maps = MapRecorder()
    with torch.no_grad(), maps.attach(model):
        model(x)
    return dict(maps)


def test_gradients_reach_offset_and_kernel_generators():
    model = _randomize(create_model("saphn-tiny"))
    x = torch.rand(1, 3, 32, 32)
    (model(x) - x.roll(1, -1)).abs().mean().backward()
    metas = [(n, p) for n, p in model.named_parameters() if ".pdf.meta." in n and n.endswith("weight")]
    assert metas
    for n, p in metas:
        assert p.grad is not None and p.grad.abs().sum() > 0, n


# --- Introspection --------------------------------------------------------------------------


def test_maps_are_returned_on_request_at_quarter_resolution():
    model = _randomize(create_model("saphn-tiny")).eval()
    x = torch.rand(1, 3, 37, 53)
    maps = _maps(model, x)
    hq, wq = 10, 14  # ceil(37/4), ceil(53/4)
    k2 = 9
    expected = {
        "level1.decoder.block1.fusion": 1,
        "level1.decoder.block1.sa.m1": 1,
        "level1.decoder.block1.sa.q": 2,
        "level1.decoder.block1.ca.q": 2,
        "level1.decoder.block1.pdf.kernels": k2,
        "level1.decoder.block1.pdf.offsets": 2 * k2,
        "level2.encoder.block1.fusion": 1,
        "level3.decoder.block1.pdf.offsets": 2 * k2,
        "level1.cla.q": 2,
        "level2.cla.m1": 1,
    }
    for key, ch in expected.items():
        assert maps[key].shape == (1, ch, hq, wq), key
    # Stitched level-3 maps: the four quadrant patches fill the whole image.
    assert np.isfinite(maps["level3.encoder.block1.fusion"]).all()


def test_level3_maps_are_the_quadrants_stitched():
    """A level-3 map is the four patches' maps side by side (TL, TR, BL, BR), cropped."""
    model = _randomize(create_model("saphn-tiny")).eval()
    x = torch.rand(2, 3, 30, 44)  # padded to 32 x 48: quadrants of 16 x 24, maps of 4 x 6
    maps = _maps(model, x)
    module = model.decoders[2].blocks[0].cam
    seen = []
    hook = module.register_forward_hook(lambda m, args, out: seen.append(m.intermediates(*args)["fusion"]))
    with torch.no_grad():
        model(x)
    hook.remove()
    patches = seen[0].numpy()  # (4B, 1, 4, 6), patch-major
    b = 2
    top = np.concatenate([patches[0:b], patches[b : 2 * b]], axis=3)
    bottom = np.concatenate([patches[2 * b : 3 * b], patches[3 * b :]], axis=3)
    whole = np.concatenate([top, bottom], axis=2)[..., :8, :11]  # ceil(30/4), ceil(44/4)
    np.testing.assert_array_equal(maps["level3.decoder.block1.fusion"], whole)


@pytest.mark.parametrize("name", ["saphn-tiny", "saphn-s", "saphn-a"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_recording_maps_leaves_the_output_unchanged(name, channels_last):
    """Asking for every map gives the same output, bit for bit, on every CPU path (``saphn-s``
    and ``saphn-a`` take the row gather for inference); the hooks are gone afterwards."""
    torch.manual_seed(0)
    model = randomize_zero_layers(create_model(name), seed=0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.rand(1, 3, 28, 36).contiguous(memory_format=fmt)
    recorder = MapRecorder()
    with torch.inference_mode():
        plain = model(x)
        with recorder.attach(model):
            recorded = model(x)
        again = model(x)
    assert len(recorder) > 20
    assert torch.equal(plain, recorded) and torch.equal(plain, again)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_nothing_is_kept_without_a_request():
    model = _randomize(create_model("saphn-tiny")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16))
    assert set(model.state_dict()) == set(before)
    assert not any(isinstance(v, torch.Tensor) for k, v in vars(model).items() if not k.startswith("_"))


def test_config_round_trip():
    cfg = get_config("saphn-s")
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_plain_blocks_add_full_and_half_resolution_capacity():
    """``M`` and ``P`` add DMPHN's plain residual blocks; 0 keeps the parameter names of
    existing weights; the network still starts as the identity and trains."""
    base = create_model("saphn-tiny")
    more = create_model("saphn-tiny", full_blocks=2, half_blocks=2)
    assert set(base.state_dict()) < set(more.state_dict())
    assert more.num_parameters() > base.num_parameters()
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(more.eval()(x), x)
    more = _randomize(more)
    more(x).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in more.parameters())


def test_shipped_weights_still_load_strictly():
    from deblur_cli.hub.loading import load_model

    model, info = load_model()
    assert info["arch"] == "saphn-s" and model.config.full_blocks == model.config.half_blocks == 0
    assert not model.config.merged_decoding and model.config.transition_relu


def test_network_runs_under_bf16_autocast():
    """The --bf16 path: low-precision convolutions and attention, float32 filtering, fused by
    Eq. 13 in float32; close to the float32 output."""
    model = _randomize(create_model("saphn-tiny")).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.1
