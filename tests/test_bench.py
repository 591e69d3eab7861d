"""The benchmark scripts (the DMPHN baseline among them), the speed-optimised filtering module
(identical outputs), `deblur bench`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks import dmphn
from deblur_cli.models import create_model
from deblur_cli.models.pixel_filter import PixelDependentFilter
from deblur_cli.ops import pixel_filter as pf
from deblur_cli.ops import row_gather as rg
from deblur_cli.ops.cpu import onednn_products, onednn_products_setting, read_cpu_vendor

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    from deblur_cli.models import randomize_zero_layers

    return randomize_zero_layers(model)


# --- DMPHN (benchmarks/dmphn.py) ------------------------------------------------------------


def test_dmphn_sizes_match_the_paper():
    """DMPHN paper, Table 1 model sizes (float32): one level 7.2 MB, (1-2-4) 21.7 MB,
    (1-2-4-8) 29.0 MB, Stack(4)-DMPHN 86.8 MB."""
    mb = {
        "1": dmphn.DMPHN(levels=1).num_parameters() * 4 / 1e6,
        "1-2-4": dmphn.dmphn_124().num_parameters() * 4 / 1e6,
        "1-2-4-8": dmphn.DMPHN(levels=4).num_parameters() * 4 / 1e6,
        "stack4": dmphn.stack4_dmphn().num_parameters() * 4 / 1e6,
    }
    assert mb["1"] == pytest.approx(7.2, abs=0.05)
    assert mb["1-2-4"] == pytest.approx(21.7, abs=0.1)
    assert mb["1-2-4-8"] == pytest.approx(29.0, abs=0.1)
    assert mb["stack4"] == pytest.approx(86.8, abs=0.1)
    assert dmphn.dmphn_124().num_parameters() == pytest.approx(5.42e6, rel=0.01)


@pytest.mark.parametrize("levels,stack", [(3, 1), (3, 2), (4, 1)])
@pytest.mark.parametrize("size", [(32, 48), (37, 53)])  # a multiple of the patch grid, and odd
def test_dmphn_keeps_the_input_size(levels, stack, size):
    net = dmphn.DMPHN(levels=levels, stack=stack).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_dmphn_patch_split_and_merge_are_inverse():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    for grid in dmphn.GRIDS.values():
        parts = dmphn.split(x, grid)
        assert parts.shape == (2 * grid[0] * grid[1], 3, 8 // grid[0], 12 // grid[1])
        torch.testing.assert_close(dmphn.merge(parts, grid), x)
    # quadrants in the order top-left, top-right, bottom-left, bottom-right
    quads = dmphn.split(x[:1], (2, 2))
    torch.testing.assert_close(quads[1], x[0, :, :4, 6:])
    torch.testing.assert_close(quads[2], x[0, :, 4:, :6])


def test_dmphn_levels_are_patch_local():
    """Level 3 sees quadrants: changing one quadrant of the input leaves the level-3 features of
    the others unchanged (no convolution crosses a patch border)."""
    unit = dmphn.DMPHNUnit(levels=3).eval()
    x = torch.rand(1, 3, 32, 32)
    x2 = x.clone()
    x2[..., :16, :16] += 1.0
    with torch.no_grad():
        _, f1 = unit(x)
        _, f2 = unit(x2)
    torch.testing.assert_close(f1[0][..., :, 4:], f2[0][..., :, 4:])  # right half untouched
    assert not torch.allclose(f1[0][..., :4, :4], f2[0][..., :4, :4])


# --- the optimised filtering module is output-identical -------------------------------------


def _pdf_inputs(b, c, h, w, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    weight = torch.randn(c + 1, c, k, k, generator=g) * 0.1  # C_out != C_in on purpose
    bias = torch.randn(c + 1, generator=g)
    kernels = 2 * torch.sigmoid(torch.randn(b, k * k, h, w, generator=g))
    offsets = 3 * torch.tanh(torch.randn(b, 2 * k * k, h, w, generator=g))
    return x, kernels, offsets, weight, bias


@pytest.mark.parametrize("shape", [(1, 16, 13, 17), (3, 8, 9, 5), (2, 32, 24, 40), (1, 16, 1, 1)])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("threads", [1, 4])  # 4 threads: channel groups in grid_sample
@pytest.mark.parametrize("use_bias", [True, False])
def test_pdf_tap_by_tap_equals_reference(shape, k, threads, use_bias):
    x, kernels, offsets, weight, bias = _pdf_inputs(*shape, k)
    bias = bias if use_bias else None
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            ref = pf.pixel_dependent_filter_reference(x, kernels, offsets, weight, bias)
            ours = rg.filter_by_rows(x, kernels, offsets, weight, bias)  # CPU path from 32 channels
            by_grid = pf.filter_by_grid_sample(x, kernels, offsets, weight, bias)  # other CPU, GPU, ONNX
            ref_k = pf.kernel_only_filter_reference(x, kernels, weight, bias)
            ours_k = pf.kernel_only_filter(x, kernels, weight, bias)
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(by_grid, ref, atol=1e-5, rtol=1e-5)
    # The row gather uses the exact sample positions; grid_sample's round trip through
    # normalised coordinates moves them by ~1e-6 px, hence a slightly wider tolerance.
    torch.testing.assert_close(ours, ref, atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(ours_k, ref_k, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [0.0, 1.0, 8.0, 1e4])
@pytest.mark.parametrize("onednn", [True, False])
def test_row_gather_is_zero_padded_like_grid_sample_for_any_offset(scale, onednn):
    """Offsets far beyond the 2-px zero border (clamped positions) and exactly integer ones;
    the product by oneDNN (a 1x1 convolution) or by torch.mm."""
    x, kernels, offsets, weight, bias = _pdf_inputs(2, 8, 9, 11, 3)
    offsets = torch.round(offsets * scale * 4) / 4  # quarter pixels: corners exactly on the grid too
    with torch.inference_mode(), onednn_products(onednn):
        ref = pf.pixel_dependent_filter_reference(x, kernels, offsets, weight, bias)
        ours = rg.filter_by_rows(x, kernels, offsets, weight, bias)
    torch.testing.assert_close(ours, ref, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", [(1, 32, 13, 17), (3, 40, 9, 5), (2, 32, 1, 1)])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("onednn", [True, False])
def test_kernel_only_row_gather_equals_reference(shape, k, use_bias, onednn):
    """saphn-a's CPU inference path (one gathered row per integer tap, then one product, by
    oneDNN or by torch.mm) gives the straightforward form's output, zero border included,
    channels-last or not."""
    x, kernels, _, weight, bias = _pdf_inputs(*shape, k)
    bias = bias if use_bias else None
    with torch.inference_mode(), onednn_products(onednn):
        ref = pf.kernel_only_filter_reference(x, kernels, weight, bias)
        ours = pf.kernel_only_filter(x, kernels, weight, bias)
        ours_cl = pf.kernel_only_filter(x.contiguous(memory_format=torch.channels_last), kernels, weight, bias)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_cl, ref, atol=1e-5, rtol=1e-5)
    assert ours_cl.is_contiguous(memory_format=torch.channels_last)


def test_shift_rows_index_the_bordered_input():
    """Row ``shift_rows[p * KK + t]`` of the bordered matrix is input pixel p moved by tap t."""
    b, c, h, w, k = 2, 3, 4, 5, 3
    x = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)
    rows = rg.bordered_rows(x, k // 2)
    got = rows[rg.shift_rows(b, h, w, k).long().reshape(b, h, w, k * k)]  # (B, H, W, KK, C)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(k):
        for j in range(k):
            want = xp[:, :, i : i + h, j : j + w].permute(0, 2, 3, 1)
            assert torch.equal(got[:, :, :, i * k + j], want)


def test_kernel_only_filter_path_follows_the_channel_count(monkeypatch):
    """Like the offsets' path: the row gather for CPU inference from ROW_GATHER_MIN_CHANNELS,
    the tap-by-tap products below it and whenever autograd records."""
    calls = []
    real = pf.kernel_only_by_rows
    monkeypatch.setattr(pf, "kernel_only_by_rows", lambda *a: calls.append("rows") or real(*a))
    for c in (rg.ROW_GATHER_MIN_CHANNELS - 1, rg.ROW_GATHER_MIN_CHANNELS):
        x, kernels, _, weight, bias = _pdf_inputs(1, c, 4, 5, 3)
        with torch.inference_mode():
            pf.kernel_only_filter(x, kernels, weight, bias)
        pf.kernel_only_filter(x, kernels.requires_grad_(), weight, bias)
    assert calls == ["rows"]


def test_tap_grids_are_the_reference_grid_bit_for_bit():
    _, _, offsets, _, _ = _pdf_inputs(2, 4, 7, 11, 5)
    ref = pf.sampling_grid(offsets, 5).reshape(2, 25, 7, 11, 2)
    assert torch.equal(pf.tap_grids(offsets, 5), ref.transpose(0, 1))


@pytest.mark.parametrize("path", [pf.filter_by_grid_sample, rg.filter_by_rows], ids=["grid_sample", "rows"])
def test_pdf_gradients_equal_reference(path):
    """Training takes the out-of-place path; its gradients match the reference's."""
    inputs = _pdf_inputs(2, 8, 10, 12, 5)
    a = [t.clone().requires_grad_() for t in inputs]
    b = [t.clone().requires_grad_() for t in inputs]
    g = torch.randn(2, 9, 10, 12)
    (pf.pixel_dependent_filter_reference(*a) * g).sum().backward()
    (path(*b) * g).sum().backward()
    for ta, tb in zip(a, b):
        torch.testing.assert_close(tb.grad, ta.grad, atol=1e-4, rtol=1e-4)
    x, kernels, _, weight, bias = inputs
    a = [t.clone().requires_grad_() for t in (x, kernels, weight, bias)]
    b = [t.clone().requires_grad_() for t in (x, kernels, weight, bias)]
    (pf.kernel_only_filter_reference(*a) * g).sum().backward()
    (pf.kernel_only_filter(*b) * g).sum().backward()
    for ta, tb in zip(a, b):
        torch.testing.assert_close(tb.grad, ta.grad, atol=1e-4, rtol=1e-4)


def test_pdf_runs_in_float32_under_autocast():
    """Mixed precision (CPU bf16 here, CUDA fp16 in the engine): the filtering module runs in
    float32 (precise sampling positions, no per-tap casts), the layers around it do not."""
    x, kernels, offsets, weight, bias = _pdf_inputs(1, 16, 12, 14, 5)
    with torch.inference_mode():
        ref = pf.pixel_dependent_filter_reference(x, kernels, offsets, weight, bias)
        ref_k = pf.kernel_only_filter_reference(x, kernels, weight, bias)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = pf.pixel_dependent_filter(x.bfloat16(), kernels, offsets, weight, bias)
            ours_k = pf.kernel_only_filter(x, kernels, weight, bias)
    assert ours.dtype == torch.float32 and ours_k.dtype == torch.float32
    torch.testing.assert_close(
        ours,
        pf.pixel_dependent_filter_reference(x.bfloat16().float(), kernels, offsets, weight, bias),
        atol=1e-4,
        rtol=1e-4,
    )
    torch.testing.assert_close(ours_k, ref_k, atol=1e-5, rtol=1e-5)
    assert (ours - ref).abs().max() < 0.05 * ref.abs().max()  # only x was rounded to bf16


@pytest.mark.parametrize("name", ["saphn-tiny", "saphn-s", "saphn-a"])
def test_whole_network_output_identical_to_reference_path(name):
    """Every variant's output within 1e-4 of the straightforward filtering."""
    # 32 channels at quarter resolution: the CPU inference paths (row gather, oneDNN products).
    overrides = {} if name == "saphn-tiny" else {"widths": (8, 16, rg.ROW_GATHER_MIN_CHANNELS), "attn_maps": 4}
    torch.manual_seed(0)
    model = _randomize(create_model(name, **overrides))
    x = torch.rand(2, 3, 40, 56)
    with torch.inference_mode():
        ours = model(x)
        with pf.implementation("reference"):
            ref = model(x)
        with pf.implementation("grid_sample"):
            by_grid = model(x)
    assert (ours - ref).abs().max() <= 1e-4 and (by_grid - ref).abs().max() <= 1e-4
    assert not torch.equal(ours, ref)  # the reference did run (its sums go in another order)


def test_optimised_path_counts_the_same_flops():
    """The tap-by-tap products add up to the reference's 1x1 convolution (model_cost.py stays valid)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("saphn-tiny").to("meta").eval()
    x = torch.empty(1, 3, 32, 48, device="meta")

    def flops() -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
        return fc.get_total_flops()

    ours = flops()
    with pf.implementation("reference"):
        assert flops() == ours


# --- deblur bench ---------------------------------------------------------------------------


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from deblur_cli.cli import main

    main._register()
    return CliRunner(), main.app


def test_bench_command_on_a_tiny_model(cli):
    runner, app = cli
    result = runner.invoke(app, ["bench", "--model", "saphn-tiny", "--size", "48x40", "--runs", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "saphn-tiny (random weights)" in out
    assert "48x40" in out
    assert "median of 2" in out
    assert "cpu" in out


def test_bench_command_tiles_when_asked(cli):
    runner, app = cli
    result = runner.invoke(
        app, ["bench", "-m", "saphn-tiny", "--size", "120x72", "--runs", "1", "--device", "cpu", "--tile", "72"]
    )
    assert result.exit_code == 0, result.output
    assert "tiles of 72 px" in result.output


def test_bench_bf16_runs_or_refuses_by_cpu(cli, monkeypatch):
    """--bf16 reaches the engine: it runs (and says bf16) on a CPU with native bf16, and is a
    one-line error on one without."""
    from deblur_cli.backends import device as device_mod
    from deblur_cli.errors import DeblurError

    runner, app = cli
    args = ["bench", "-m", "saphn-tiny", "--size", "48x40", "--runs", "1", "--device", "cpu", "--bf16"]
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "torch bf16" in result.output
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, DeblurError)
    assert "emulate" in str(result.exception)


def test_bench_rejects_a_bad_size(cli):
    from deblur_cli.errors import DeblurError

    runner, app = cli
    result = runner.invoke(app, ["bench", "-m", "saphn-tiny", "--size", "big", "--device", "cpu"])
    assert result.exit_code != 0
    assert isinstance(result.exception, DeblurError)
    assert "1280x720" in str(result.exception)


def test_bench_module_does_not_import_torch():
    import subprocess

    code = "import sys, deblur_cli.cli.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- benchmark scripts run (tiny sizes) -----------------------------------------------------


def test_latency_script_quick(capsys):
    from benchmarks import latency

    args = "--size 32x24 --runs 1 --warmup 0 --threads 1 --variants saphn-tiny --baselines DMPHN(1-2-4) --no-onnx"
    latency.main(args.split())
    out = capsys.readouterr().out
    assert "`saphn-tiny`" in out and "DMPHN(1-2-4)" in out and "torch bf16" in out


def test_compare_trees_times_both_trees_and_diffs_their_outputs(capsys):
    from benchmarks import compare_trees

    root = str(BENCH_DIR.parent)
    compare_trees.main(["--before", root, "--after", root, "--variant", "saphn-tiny", "--size", "48x32",
                        "--pairs", "2", "--runs", "1", "--warmup", "1", "--threads", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("pair ") == 2
    # the same tree twice: the same seeded model and input, so the outputs agree exactly
    assert "saphn-tiny 48x32" in out and "max abs output difference 0.00e+00" in out


def test_compare_trees_refuses_a_folder_without_the_code(tmp_path):
    from benchmarks import compare_trees

    with pytest.raises(SystemExit) as err:
        compare_trees.main(["--before", str(tmp_path), "--pairs", "1"])
    assert err.value.code == 2


def test_efficiency_counts_flops_of_both_families():
    from benchmarks import efficiency

    assert efficiency.counted_flops(dmphn.dmphn_124(), 32, 32) > efficiency.counted_flops(dmphn.DMPHN(levels=1), 32, 32)
    assert efficiency.counted_flops(create_model("saphn-tiny"), 32, 32) > 0
    rates = efficiency.gemm_rates(1, n=128, runs=2)
    assert set(rates) == {"mm", "onednn"} and min(rates.values()) > 0


def test_scaling_dimensions_are_multiples_of_8():
    from benchmarks import scaling

    for mp in (0.25, 1, 24):
        w, h = scaling.dims(mp)
        assert w % 8 == 0 and h % 8 == 0
        assert w * h / 1e6 == pytest.approx(mp, rel=0.02)


def test_pointwise_reference_is_a_convolution():
    """Sanity of the reference itself (it is what the optimised path is held to)."""
    x = torch.randn(1, 4, 9, 11)
    weight = torch.randn(3, 4, 3, 3)
    ones = torch.ones(1, 9, 9, 11)
    zeros = torch.zeros(1, 18, 9, 11)
    ref = F.conv2d(x, weight, None, padding=1)
    for fn in (pf.pixel_dependent_filter_reference, pf.pixel_dependent_filter):
        torch.testing.assert_close(fn(x, ones, zeros, weight, None), ref, atol=1e-5, rtol=1e-5)


def test_filter_path_follows_the_channel_count(monkeypatch):
    """The row gather runs for inference from ROW_GATHER_MIN_CHANNELS channels on the CPU,
    grid_sample below it and whenever autograd records (training)."""
    calls = []
    monkeypatch.setattr(pf, "filter_by_rows", lambda *a: calls.append("rows") or pf.filter_by_grid_sample(*a))
    for c in (rg.ROW_GATHER_MIN_CHANNELS - 1, rg.ROW_GATHER_MIN_CHANNELS):
        x, kernels, offsets, weight, bias = _pdf_inputs(1, c, 4, 5, 3)
        with torch.inference_mode():
            pf.pixel_dependent_filter(x, kernels, offsets, weight, bias)
        pf.pixel_dependent_filter(x, kernels, offsets.requires_grad_(), weight, bias)
    assert calls == ["rows"]


# --- blur sweep (benchmarks/blur_sweep.py) --------------------------------------------------


def _sweep_photos():
    import numpy as np

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:56] / 8.0
    base = np.stack([0.5 + 0.4 * np.sin(xx + yy), 0.5 + 0.4 * np.cos(2 * yy), 0.5 + 0.3 * np.sin(xx * yy)], -1)
    return [np.round(np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1) * 255).astype(np.float32) / 255]


def test_blur_sweep_rows():
    """Identity: zero gain, unchanged sharp row (inf); blurring more: negative gains, counted."""
    import cv2
    import numpy as np

    from benchmarks import blur_sweep

    photos = _sweep_photos()
    rows = blur_sweep.sweep(lambda x: x, photos, [0.0, 4.0, 9.0], kinds=("linear", "shake"))
    assert [(r["kind"], r["extent"]) for r in rows] == [(k, e) for k in ("linear", "shake") for e in (0.0, 4.0, 9.0)]
    sharp_row, short, long = rows[:3]
    assert sharp_row["psnr_out"] == float("inf") and sharp_row["gain"] is None
    assert short["gain"] == 0.0 and short["psnr_in"] > long["psnr_in"]  # longer blur, lower input PSNR
    worse = blur_sweep.sweep(lambda x: cv2.GaussianBlur(x, (0, 0), 2.0), photos, [0.0, 4.0], kinds=("linear",))
    assert np.isfinite(worse[0]["psnr_out"]) and worse[1]["gain"] < 0 and worse[1]["worse"] == 1


def test_blur_sweep_command_reports_a_missing_folder(tmp_path, capsys):
    from benchmarks import blur_sweep

    assert blur_sweep.main(["--photos", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_blur_gate_scoring():
    """``benchmarks/blur_gate.py``: "off" scores the network alone, a gate that leaves an image
    untouched scores 0 dB for it, and "worse" counts only drops beyond the 0.05 dB tolerance."""
    import numpy as np

    from benchmarks import blur_gate

    rng = np.random.default_rng(0)
    sharp = rng.random((16, 16, 3)).astype(np.float32)
    blurred = np.clip(sharp + 0.05, 0, 1).astype(np.float32)
    worse = np.clip(sharp + 0.1, 0, 1).astype(np.float32)  # the "network" makes it worse
    better = sharp.copy() + 0.01
    items = [(2.0, blurred, worse, sharp), (10.0, blurred, better, sharp)]
    res = blur_gate.score_gates(items, [(4.0, 6.0), (20.0, 30.0)])
    assert res["off"]["worse"] == 1
    assert res["4,6"]["worse"] == 0  # the nearly sharp one is left alone
    assert res["20,30"]["gain"] == 0.0 and res["20,30"]["worse"] == 0  # everything left alone
    assert res["4,6"]["gain"] > res["off"]["gain"]


def test_blur_gate_scoring_by_region():
    """A regional map that says "left sharp, right blurred" scores each half on its own: the
    network's damage on the left is avoided and its gain on the right kept."""
    import numpy as np

    from benchmarks import blur_gate
    from deblur_cli.gate.regions import TILE, BlurMap

    rng = np.random.default_rng(1)
    sharp = rng.random((TILE, 4 * TILE, 3)).astype(np.float32)
    blurred = np.clip(sharp + 0.05, 0, 1).astype(np.float32)
    out = sharp.copy()
    out[:, :TILE] = np.clip(sharp[:, :TILE] + 0.2, 0, 1)  # the network ruins the (sharp) left end
    log_e = np.log1p(np.array([[0.0, 0.0, 20.0, 20.0]], np.float32))
    maps = {"region:96": BlurMap(log_e, (TILE, 4 * TILE), 3.0)}
    res = blur_gate.score_gates([(3.0, maps, blurred, out, sharp)], [(4.0, 6.0)], ("image", "region:96"))
    assert set(res) == {"off", "4,6", "4,6@region:96"}
    assert res["4,6"]["gain"] == 0.0  # 3 px for the whole picture: left as it was
    assert res["off"]["gain"] < 0 < res["4,6@region:96"]["gain"]


def test_blur_gate_scopes_argument():
    import argparse

    import pytest

    from benchmarks import blur_gate

    assert blur_gate._scopes("image, region:192,region:192") == ["image", "region:192"]
    for bad in ("region", "image:", "region:abc", "region:0", "region:inf", "tile:9"):
        with pytest.raises(argparse.ArgumentTypeError):
            blur_gate._scopes(bad)


# --- the filtering module from its logits, the GEMM by CPU vendor -----------------------------


@pytest.mark.parametrize("shape", [(1, 32, 13, 17), (2, 32, 9, 5), (1, 40, 1, 1)])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("extra_heads", [0, 3])
def test_filter_from_logits_equals_the_module_path(shape, k, extra_heads, monkeypatch):
    """CPU inference straight from the meta-layer's logits, given as a channel slice of a wider
    channels-last head (as the content-aware module passes them), equals the row gather from the
    module's own activations (its recorded maps) and the reference form."""
    b, c, h, w = shape
    kk = k * k
    torch.manual_seed(0)
    module = PixelDependentFilter(c, k, max_offset=3.0)
    heads = (torch.randn(b, 3 * kk + extra_heads, h, w) * 2).contiguous(memory_format=torch.channels_last)
    raw = heads[:, : 3 * kk]
    x = torch.randn(b, c, h, w).contiguous(memory_format=torch.channels_last)
    calls = []
    real = pf.filter_by_rows_from_logits
    monkeypatch.setattr(pf, "filter_by_rows_from_logits", lambda *a: calls.append(1) or real(*a))
    with torch.inference_mode():
        fast = module(x, raw=raw)
        maps = module.intermediates(x, raw=raw)
        written = pf.pixel_dependent_filter(x, maps["kernels"], maps["offsets"], module.weight, module.bias)
        ref = pf.pixel_dependent_filter_reference(
            x, 2 * torch.sigmoid(raw[:, :kk]), 3.0 * torch.tanh(raw[:, kk:]), module.weight, module.bias
        )
    assert calls == [1]  # the module's call; the maps are the written-out activations
    torch.testing.assert_close(fast, written, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, ref, atol=5e-5, rtol=1e-4)
    assert fast.is_contiguous(memory_format=torch.channels_last)


def test_filter_from_logits_is_taken_only_for_plain_cpu_inference(monkeypatch):
    """Not while autograd records, below the row gather's width, under autocast, or with the
    kernels or the offsets switched off (Table 3 ablations, ``saphn-a``)."""
    calls = []
    real = pf.filter_by_rows_from_logits
    monkeypatch.setattr(pf, "filter_by_rows_from_logits", lambda *a: calls.append(1) or real(*a))
    c = rg.ROW_GATHER_MIN_CHANNELS
    x = torch.randn(1, c, 6, 7)
    PixelDependentFilter(c, 3)(x)  # autograd records
    with torch.inference_mode():
        PixelDependentFilter(c - 1, 3)(x[:, 1:])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            PixelDependentFilter(c, 3)(x)
        PixelDependentFilter(c, 3, adaptive_kernel=False)(x)
        PixelDependentFilter(c, 3, adaptive_offset=False)(x)
        for forced in ("grid_sample", "reference"):
            with pf.implementation(forced):
                PixelDependentFilter(c, 3)(x)
        assert calls == []
        PixelDependentFilter(c, 3)(x)
    assert calls == [1]


@pytest.mark.parametrize(("vendor", "onednn"), [("GenuineIntel", False), ("AuthenticAMD", True), ("", True)])
def test_gemm_follows_the_cpu_vendor_unless_forced(vendor, onednn):
    """MKL (torch.mm) on Intel CPUs, oneDNN elsewhere; a forced choice wins; never while
    autograd records."""
    x = torch.zeros(1)
    mkldnn = torch.backends.mkldnn.is_available()
    with torch.inference_mode():
        assert rg.onednn_gemm(x, vendor) is (onednn and mkldnn)
        for forced in (True, False):
            assert rg.onednn_gemm(x, vendor, forced) is (forced and mkldnn)
    for forced in (True, None):  # autograd records: the plain product whatever the choice
        assert rg.onednn_gemm(x, "AuthenticAMD", forced) is False


def test_onednn_products_is_scoped_and_feeds_both_products(monkeypatch):
    """The block's choice reaches the row gather's product and the attention's mixing, nests,
    and is gone after the block."""
    from deblur_cli.ops import attention as attention_ops

    seen = []
    monkeypatch.setattr(rg, "onednn_gemm", lambda x, vendor, forced=None: seen.append(forced) or False)
    x, kernels, offsets, weight, bias = _pdf_inputs(1, 8, 4, 5, 3)
    assert onednn_products_setting() is None
    with torch.inference_mode(), onednn_products(False):
        with onednn_products(True):
            assert onednn_products_setting() is True
            rg.filter_by_rows(x, kernels, offsets, weight, bias)
        assert onednn_products_setting() is False
        rg.filter_by_rows(x, kernels, offsets, weight, bias)
        one = torch.zeros(1, 8, 3, 4).contiguous(memory_format=torch.channels_last)
        assert attention_ops.onednn_mix(one, onednn_products_setting()) is False
    assert onednn_products_setting() is None and seen == [True, False]


def test_cpu_vendor_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\nprocessor\t: 1\n")
    assert read_cpu_vendor(str(info)) == "AuthenticAMD"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # ARM: no vendor_id
    assert read_cpu_vendor(str(info)) == ""
    assert read_cpu_vendor(str(tmp_path / "missing")) == ""
