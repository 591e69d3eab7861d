"""Grow trained weights into a larger variant without changing what they compute.

A variant that only *adds* identity-initialised blocks to another (``saphn-sd`` =
``saphn-s`` + ``detail_blocks``) can start from the smaller one's trained weights: every
tensor is copied, the new blocks keep their identity initialisation, and the grown network's
output equals the original's. Training then goes on from there instead of from scratch (the
bundled ``saphn-s`` weights took 5.5 CPU hours).

Usage::

    from deblur_cli.training.grow import grow_weights
    grow_weights("weights/saphn-s.synth.safetensors", "saphn-sd", "runs/x/init.safetensors")
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from deblur_cli.errors import DeblurError
from deblur_cli.models import SAPHN, create_model


def grow_model(small: SAPHN, variant: str, check_size: int = 64, atol: float = 1e-5) -> SAPHN:
    """``variant`` built with every tensor of ``small`` copied in, checked to compute the same.

    Args:
        small: trained network whose parameter names are all in ``variant``, with equal shapes.
        variant: registered variant name of the larger network.
        check_size: side of the random image the two outputs are compared on.
        atol: largest allowed difference of the two outputs.

    Returns:
        The grown network, in eval mode, on the CPU.

    Raises:
        DeblurError: a tensor of ``small`` has no place in ``variant`` (or another shape), or
            the new tensors are not an identity initialisation (the outputs differ).
    """
    big = create_model(variant).eval()
    src = small.state_dict()
    dst = big.state_dict()
    extra = sorted(set(src) - set(dst))
    if extra:
        raise DeblurError(f"cannot grow into {variant}: it has no {extra[0]} (and {len(extra) - 1} more)")
    for key, value in src.items():
        if dst[key].shape != value.shape:
            raise DeblurError(f"cannot grow into {variant}: {key} is {tuple(value.shape)}, there {tuple(dst[key].shape)}")
    big.load_state_dict(src, strict=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, check_size, check_size, generator=gen)
    reference = copy.deepcopy(small).cpu().eval()  # the caller's network keeps its device and mode
    with torch.no_grad():
        diff = (big(x) - reference(x)).abs().max().item()
    if diff > atol:
        raise DeblurError(f"grown {variant} differs from the original by {diff:.3g} (new blocks are not the identity)")
    return big


def grow_weights(src: str | os.PathLike[str], variant: str, dest: str | os.PathLike[str]) -> str:
    """Grow the weights file ``src`` into ``variant`` (:func:`grow_model`) and write ``dest``.

    Returns:
        The sha256 of ``dest``; its metadata ``grown_from`` names ``src``'s sha256.
    """
    from deblur_cli.hub.loading import load_model, save_weights

    small, info = load_model(weights=str(src))
    big = grow_model(small, variant)
    return save_weights(big, Path(dest), variant, {"grown_from": info.get("sha256", "")})
