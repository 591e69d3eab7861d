"""``saphn`` against the paper's Sec. 4.1 and DMPHN's code: blocks per scale (N, M, P), the
patches each level encodes and decodes, the open choices the architecture docs list, Table 3's
rows, and weights saved before the backbone followed the paper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from deblur_cli.errors import DeblurError
from deblur_cli.hub.loading import check_state_dict, load_model, save_weights
from deblur_cli.hub.registry import read_safetensors_metadata, weights_dir
from deblur_cli.models import SAPHNConfig, create_model, get_config, randomize_zero_layers
from deblur_cli.models.attention import EfficientAttention
from deblur_cli.models.dot_attention import DotProductAttention
from deblur_cli.models.fusion import ContentAwareModule
from deblur_cli.models.level import PlainResBlock, ResBlock
from deblur_cli.models.variants import TABLE3_ROWS
from deblur_cli.viz.recording import MapRecorder

#: Sec. 4.1: "The hyper-parameters for our encoder-decoder backbone are N=3, M=2, and P=2".
PAPER_N, PAPER_M, PAPER_P = 3, 2, 2
TINY = {"widths": (4, 8, 8), "attn_maps": 2, "kernel_size": 3}


def _blocks_per_scale(model: nn.Module, size: int = 32) -> dict[tuple[int, str], dict[str, list[int]]]:
    """Run ``model`` on one ``size x size`` image and return, for every (level, part), the
    resolution divisor (patch size / feature size) of every residual block, by kind."""
    found: dict[tuple[int, str], dict[str, list[int]]] = {}
    hooks = []
    for level in (1, 2, 3):
        for part in ("encoder", "decoder"):
            coder = getattr(model, part + "s")[level - 1]
            seen = found.setdefault((level, part), {"plain": [], "content-aware": []})
            for module in coder.modules():
                kind = {PlainResBlock: "plain", ResBlock: "content-aware"}.get(type(module))
                if kind is not None:
                    hooks.append(
                        module.register_forward_hook(lambda m, a, out, s=seen, k=kind: s[k].append(out.shape[-1]))
                    )
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return found


def test_saphn_has_n_m_p_blocks_per_scale():
    """Sec. 4.1: N = 3 content-aware blocks at quarter resolution, M = 2 plain blocks at full and
    P = 2 at half resolution, in every encoder and decoder of all three levels (DMPHN's layout,
    its two quarter-resolution blocks replaced by the N content-aware ones)."""
    cfg = get_config("saphn")
    assert (cfg.blocks, cfg.full_blocks, cfg.half_blocks) == (PAPER_N, PAPER_M, PAPER_P)
    assert cfg.widths[2] == 128 and cfg.kernel_size == 5  # "128 filters", "5 x 5"
    found = _blocks_per_scale(create_model("saphn"))
    assert len(found) == 6  # three levels, no stacking in depth
    for (level, part), kinds in found.items():
        # Patch widths: level 1 sees 32 px; level 3 encodes 16 px quadrants and (merged) decodes 32 px
        # wide halves; level 2 encodes 32 px wide halves. The blocks' widths give their scales.
        width = 16 if (level, part) == (3, "encoder") else 32
        scales = {width // w for w in kinds["plain"]}
        plain = [width // w for w in kinds["plain"]]
        assert plain.count(1) == PAPER_M and plain.count(2) == PAPER_P and scales == {1, 2}, (level, part)
        assert [width // w for w in kinds["content-aware"]] == [4] * PAPER_N, (level, part)


def test_saphn_backbone_has_dmphn_transitions():
    """No activation after the first, strided and transposed convolutions (DMPHN's models.py);
    ``saphn-s`` keeps its ReLUs there (its shipped weights were trained with them)."""
    paper, cpu = create_model("saphn"), create_model("saphn-s")
    for seq in ("stem", "down1", "down2"):
        assert not any(isinstance(m, nn.ReLU) for m in getattr(paper.encoders[0], seq).children())
        assert isinstance(getattr(cpu.encoders[0], seq)[1], nn.ReLU)
    for seq in ("up1", "up2"):
        assert not any(isinstance(m, nn.ReLU) for m in getattr(paper.decoders[0], seq).children())
        assert isinstance(getattr(cpu.decoders[0], seq)[1], nn.ReLU)


def _dmphn_flow(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The 1-2-4 data flow as DMPHN's ``DMPHN_1_2_4.py`` writes it (explicit slices, ``torch.cat``
    of quadrant features into halves before level 3's decoder and of half features into the
    whole before level 2's), with SAPHN's modules: cross-level attention where DMPHN adds, and
    each level's residual added to its own input (our documented choice). ``x``: ``(B, 3, H, W)``,
    ``H, W`` multiples of 8."""
    h, w = x.shape[-2:]
    top, bottom = x[..., : h // 2, :], x[..., h // 2 :, :]
    quads = [top[..., : w // 2], top[..., w // 2 :], bottom[..., : w // 2], bottom[..., w // 2 :]]
    enc3 = [model.encoders[2](q - 0.5) for q in quads]

    def cat(a, b, dim):  # encoder outputs (features, per-block list) of two patches, side by side
        return torch.cat([a[0], b[0]], dim), [torch.cat(pair, dim) for pair in zip(a[1], b[1])]

    f3_top, e3_top = cat(enc3[0], enc3[1], 3)
    f3_bot, e3_bot = cat(enc3[2], enc3[3], 3)
    y3_top = top + model.decoders[2](f3_top, e3_top)
    y3_bot = bottom + model.decoders[2](f3_bot, e3_bot)
    f2, e2 = cat(model.encoders[1](y3_top - 0.5), model.encoders[1](y3_bot - 0.5), 2)
    f2 = model.cla[0](f2, torch.cat([f3_top, f3_bot], 2))
    y2 = torch.cat([y3_top, y3_bot], 2)
    y2 = y2 + model.decoders[1](f2, e2)
    f1, e1 = model.encoders[0](y2 - 0.5)
    return y2 + model.decoders[0](model.cla[1](f1, f2), e1)


@pytest.mark.parametrize("name", ["saphn", "saphn-a"])
def test_levels_decode_the_next_levels_patches_as_dmphn(name):
    """Level 3 decodes its quadrants' features stitched into two halves, level 2 its halves'
    stitched into the whole image (DMPHN's code and Fig. 2), not each patch on its own."""
    torch.manual_seed(0)
    model = randomize_zero_layers(create_model(name, blocks=2, **TINY), std=0.1, seed=0)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        ours, dmphn = model(x), _dmphn_flow(model, x)
        per_patch = model.__class__(get_config(name, blocks=2, merged_decoding=False, **TINY))
        per_patch.load_state_dict(model.state_dict())
        other = per_patch.eval()(x)
    torch.testing.assert_close(ours, dmphn, atol=1e-5, rtol=1e-5)
    assert (other - ours).abs().max() > 1e-3  # decoding per patch is a different network


def test_decoders_see_halves_and_whole_images():
    """Batch sizes and shapes the decoders see: level 3 two halves per image, level 2 one image."""
    model = create_model("saphn", blocks=1, **TINY).eval()
    seen = {}
    hooks = [
        model.decoders[i].blocks[0].register_forward_hook(lambda m, a, out, i=i: seen.update({i: a[0].shape}))
        for i in range(3)
    ]
    with torch.no_grad():
        model(torch.rand(3, 3, 32, 48))
    for hook in hooks:
        hook.remove()
    assert seen[2] == (6, 8, 4, 12)  # 2 x 3 halves of 16 x 48 px at 1/4
    assert seen[1] == (3, 8, 8, 12) and seen[0] == (3, 8, 8, 12)


def test_maps_of_merged_decoding_are_whole_image_maps():
    """The maps of the decoders and of the cross-level attention that see stitched patches are
    stitched by their own patches (halves for level 3's decoder): every map covers the image."""
    model = randomize_zero_layers(create_model("saphn", blocks=1, **TINY), std=0.1, seed=0).eval()
    x = torch.rand(2, 3, 30, 44)  # padded to 32 x 48: halves of 16 x 48, maps of 4 x 12
    maps = MapRecorder()
    captured = []
    hook = (
        model.decoders[2]
        .blocks[0]
        .cam.register_forward_hook(lambda m, args, out: captured.append(m.intermediates(*args)["fusion"]))
    )
    with torch.no_grad(), maps.attach(model):
        model(x)
    hook.remove()
    assert {m.shape[-2:] for m in maps.values()} == {(8, 11)}  # ceil(30/4), ceil(44/4)
    assert "level2.cla.q" in maps and "level3.decoder.block1.ca.m1" in maps
    halves = captured[0].numpy()  # (2B, 1, 4, 12): top halves, then bottom halves
    whole = np.concatenate([halves[:2], halves[2:]], axis=2)[..., :8, :11]
    np.testing.assert_array_equal(maps["level3.decoder.block1.fusion"], whole)


# --- Choices the paper leaves open (docs/architecture.md, "Choices") ------------------------------


def test_m2_is_gated_from_the_average_of_x_m1():
    """Eq. 10 and Sec. 3.1.1's text (global average pooling of ``x_m1``), not Eq. 7's ``x_bar``:
    ``f_m2`` reads ``mean_HW(x * M1)``."""
    attn = EfficientAttention(6, 3)
    x = torch.randn(2, 6, 5, 7)
    seen = []
    hook = attn.f_m2.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        attn(x)
    hook.remove()
    with torch.no_grad():
        expected = (x * torch.sigmoid(attn.f_m1(x))).mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(seen[0], expected, atol=1e-6, rtol=1e-5)


def test_self_and_cross_attention_are_summed_before_fusion():
    """Where the fusion mask picks the attention branch (``M_fus = 1``) the module gives
    ``SA(x) + CA(x, encoder features)``."""
    cam = ContentAwareModule(6, attn_maps=3, kernel_size=3, cross_attention=True)
    with torch.no_grad():
        cam.f_fus.weight.zero_()
        cam.f_fus.bias.fill_(60.0)  # sigmoid(60) == 1 in float32
        x, enc = torch.randn(1, 6, 8, 9), torch.randn(1, 6, 8, 9)
        torch.testing.assert_close(cam(x, enc), cam.sa(x) + cam.ca(x, enc), atol=1e-5, rtol=1e-5)


def test_decoder_block_i_attends_encoder_block_n_minus_1_minus_i():
    """Mirrored pairing (U-Net): decoder block 1 attends the encoder's last block, block N its
    first. At level 3 the first pairing attends the decoder's own input (the redundancy the
    architecture docs note), at levels 1-2 that input is the cross-level attention's output."""
    model = randomize_zero_layers(create_model("saphn", blocks=3, **TINY), std=0.1, seed=0).eval()
    enc_out, dec_in, dec_input = [], [], []
    hooks = [b.register_forward_hook(lambda m, a, out: enc_out.append(out)) for b in model.encoders[0].blocks]
    hooks += [b.cam.register_forward_hook(lambda m, a, out: dec_in.append(a[1])) for b in model.decoders[0].blocks]
    hooks.append(model.decoders[2].register_forward_hook(lambda m, a, out: dec_input.append(a)))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    for i in range(3):
        assert torch.equal(dec_in[i], enc_out[2 - i])
    f3, feats3 = dec_input[0]
    assert torch.equal(feats3[-1], f3)  # level 3: decoder block 1 attends its own input


def test_dot_product_attention_is_eq1():
    """[1]'s attention (Sec. 4.3's comparison): softmax(A B^T / sqrt(d_a)) C per head."""
    attn = DotProductAttention(16, heads=4)
    x = torch.randn(2, 16, 5, 6)
    with torch.no_grad():
        q, k, v = attn.qkv(x).flatten(2).chunk(3, dim=1)  # (B, C, HW) each
        heads = []
        for h in range(4):
            sl = slice(4 * h, 4 * h + 4)
            a, b, c = q[:, sl].transpose(1, 2), k[:, sl].transpose(1, 2), v[:, sl].transpose(1, 2)
            heads.append(torch.softmax(a @ b.transpose(1, 2) / 2.0, dim=-1) @ c)  # sqrt(4) = 2
        ref = attn.out(torch.cat([hd.transpose(1, 2) for hd in heads], 1).reshape(2, 16, 5, 6))
        torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


# --- Table 3 --------------------------------------------------------------------------------------


def test_table3_rows_net7_and_net8_are_table1s_models():
    """Net8 (32.02 dB) is Table 1's "Ours(b)" = ``saphn``; Net7 (31.85 dB) is "Ours(a)" = ``saphn-a``."""
    assert get_config("saphn", **TABLE3_ROWS["Net8"]) == get_config("saphn")
    assert get_config("saphn", **TABLE3_ROWS["Net7"]) == get_config("saphn-a")


@pytest.mark.parametrize("row", sorted(TABLE3_ROWS))
def test_table3_rows_build_what_they_name(row):
    """Each row has attention, cross-attention, cross-level attention, kernels and offsets
    exactly where its switches say, and runs."""
    kw = TABLE3_ROWS[row]
    model = randomize_zero_layers(create_model("saphn", blocks=2, **TINY, **kw), std=0.1, seed=0)
    cams = [m for m in model.modules() if isinstance(m, ContentAwareModule)]
    sa = [type(c.sa).__name__ for c in cams if c.sa is not None]
    if kw.get("dot_product_attention"):  # one attention module per level, in the decoder
        assert sa == ["DotProductAttention"] * 3
        assert all(d.blocks[0].cam.sa is not None for d in model.decoders)
    else:
        assert (len(sa) == len(cams)) == kw["self_attention"] and (not sa) == (not kw["self_attention"])
    assert any(c.ca is not None for c in cams) == kw["cross_attention"]
    assert all(c.attn is not None for c in model.cla) == kw["cross_level_attention"]
    meta = [c.pdf.meta.out_channels if c.pdf.meta is not None else 0 for c in cams]
    assert set(meta) == {9 * kw["adaptive_kernel"] + 18 * kw["adaptive_offset"]}
    y = model(torch.rand(1, 3, 16, 16))
    y.mean().backward()
    assert torch.isfinite(y).all()


# --- Weights saved before the backbone followed the paper ------------------------------------------


def test_shipped_weights_rebuild_the_registered_saphn_s():
    """The bundled file's config (saved with ``stage_blocks`` and without the newer fields) reads
    as exactly ``saphn-s``: its own choices (no plain blocks, per-patch decoding, ReLUs)."""
    meta = read_safetensors_metadata(weights_dir() / "saphn-s.synth.safetensors")
    raw = json.loads(meta["config"])
    assert "full_blocks" not in raw and "merged_decoding" not in raw
    assert SAPHNConfig.from_dict(raw) == get_config("saphn-s")


def test_old_saphn_weights_load_as_what_they_are_and_never_into_the_new_saphn(tmp_path):
    """A ``saphn`` file saved before M, P and DMPHN's decoding carries its own config: it loads
    into the structure it was trained with, output for output; its tensors do not fit today's
    ``saphn``, and trying is a clear error naming the missing blocks, never a silent mismatch."""
    old = get_config("saphn", full_blocks=0, half_blocks=0, merged_decoding=False, transition_relu=True, **TINY)
    model = randomize_zero_layers(create_model("saphn", **old.__dict__), std=0.1, seed=0)
    path = tmp_path / "old-saphn.safetensors"
    save_weights(model, path, arch="saphn")
    # Rewrite the metadata as the older code wrote it: "stage_blocks", no newer fields.
    from safetensors.torch import load_file, save_file

    legacy = {k: v for k, v in old.to_dict().items() if k not in ("full_blocks", "half_blocks")}
    for key in ("merged_decoding", "transition_relu", "dot_product_attention", "detail_blocks"):
        legacy.pop(key)
    meta = dict(read_safetensors_metadata(path), config=json.dumps({**legacy, "stage_blocks": 0}))
    save_file(load_file(path), path, metadata=meta)
    loaded, info = load_model(weights=str(path))
    assert info["arch"] == "saphn" and loaded.config == old
    # ... and says so where the CLI says what runs, instead of passing as today's saphn.
    assert "not today's" in info["structure"] and "merged_decoding False (today True)" in info["structure"]
    assert "full_blocks 0 (today 2)" in info["structure"]
    from types import SimpleNamespace

    from deblur_cli.cli.options import describe_run

    assert "merged_decoding False (today True)" in describe_run(SimpleNamespace(device_description="cpu", model_info=info))
    assert "structure" not in load_model()[1]  # the shipped default is today's saphn-s
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), atol=0, rtol=0)
    with pytest.raises(DeblurError, match="do not match the architecture; missing keys: .*stem"):
        check_state_dict(create_model("saphn", **TINY), load_file(path), "old saphn weights")
