"""Shared test setup: small thread count, no network, deterministic seeds."""

from __future__ import annotations

import os

import pytest

# Tests must never reach the network (the Hub tests run their own server on 127.0.0.1).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_model():
    """An eval-mode ``saphn-tiny`` with non-trivial weights (heads and meta-layers not zero)."""
    import torch

    from deblur_cli.models import create_model

    model = create_model("saphn-tiny").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0:  # zero-initialised heads/meta-layers: give them values
                p.normal_(0.0, 0.05)
    return model


@pytest.fixture
def tiny_weights(tmp_path_factory, tiny_model):
    """A ``saphn-tiny`` weights file (``tiny_model``'s values) in the loader's format."""
    from deblur_cli.hub.loading import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(tiny_model, path, "saphn-tiny")
    return path


@pytest.fixture
def cli():
    """Invoke the ``deblur`` Typer app in-process: ``cli("image", path, ...)``."""
    from typer.testing import CliRunner

    from deblur_cli.cli.main import _register, app

    _register()
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])
