"""Growing trained weights into a variant with more (identity-initialised) blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deblur_cli.errors import DeblurError
from deblur_cli.hub.loading import load_model, save_weights
from deblur_cli.models import create_model, get_config, randomize_zero_layers
from deblur_cli.models.level import PlainResBlock
from deblur_cli.training import grow


def test_identity_initialised_block_is_the_identity():
    block = PlainResBlock(8, identity_init=True)
    x = torch.randn(2, 8, 9, 11)
    assert torch.equal(block(x), x)
    assert not torch.equal(PlainResBlock(8)(x), x)


def test_saphn_sd_is_saphn_s_with_decoder_detail_blocks():
    s, sd = get_config("saphn-s"), get_config("saphn-sd")
    assert sd.detail_blocks == 1 and sd.stage_blocks == 0
    assert dataclasses.replace(sd, detail_blocks=0) == s
    keys = set(create_model("saphn-sd").state_dict()) - set(create_model("saphn-s").state_dict())
    assert keys and all(".half_blocks.0." in k or ".full_blocks.0." in k for k in keys)
    assert all(k.startswith("decoders.") for k in keys)


def test_grown_network_computes_the_same():
    torch.manual_seed(0)
    small = randomize_zero_layers(create_model("saphn-s"), seed=1).train()
    big = grow.grow_model(small, "saphn-sd")
    assert small.training  # the caller's network keeps its mode (the check runs on a copy)
    small.eval()
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)
    assert big.num_parameters() > small.num_parameters()
    # ... and it has capacity of its own: training the new blocks changes the output.
    for name, p in big.named_parameters():
        if "full_blocks.0.conv2" in name:
            torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        assert (big(x) - small(x)).abs().max() > 1e-3


def test_grow_refuses_a_network_that_does_not_fit():
    with pytest.raises(DeblurError, match="cannot grow into saphn-sd"):
        grow.grow_model(create_model("saphn-tiny"), "saphn-sd")


def test_grow_refuses_new_blocks_that_are_not_the_identity(monkeypatch):
    real = grow.create_model

    def noisy(name):
        model = real(name)
        for n, p in model.named_parameters():
            if "full_blocks.0.conv2.weight" in n:
                torch.nn.init.normal_(p, std=0.5)
        return model

    monkeypatch.setattr(grow, "create_model", noisy)
    with pytest.raises(DeblurError, match="not the identity"):
        grow.grow_model(randomize_zero_layers(create_model("saphn-s"), seed=1), "saphn-sd")


def test_grow_weights_writes_a_loadable_file(tmp_path):
    small = randomize_zero_layers(create_model("saphn-s"), seed=2)
    src = tmp_path / "small.safetensors"
    sha_small = save_weights(small, src, "saphn-s")
    dest = tmp_path / "grown" / "sd.safetensors"
    sha = grow.grow_weights(src, "saphn-sd", dest)
    model, info = load_model(weights=str(dest))
    assert info["sha256"] == sha
    assert model.config == get_config("saphn-sd")
    from deblur_cli.hub.loading import read_weights

    assert read_weights(dest)[1]["grown_from"] == sha_small
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), small.eval()(x), atol=1e-6, rtol=0)
