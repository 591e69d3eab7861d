"""Parameters and FLOPs of every registered variant at 1280x720 (counted, not estimated).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed
convolutions and matrix products, 2 FLOPs per multiply-add) on the meta device, so nothing is
computed and the script takes seconds. Element-wise work (bilinear sampling of the filtering
module, activations, softmax) is not counted by torch's counter; ``sampled`` reports the number
of values that ``grid_sample`` produces, to show its size.

Usage: ``python -m benchmarks.model_cost [--height 720 --width 1280]``
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from deblur_cli.models import create_model, list_variants


def count(name: str, h: int, w: int) -> tuple[int, int, int]:
    """(parameters, counted FLOPs, values gathered by grid_sample) of one variant."""
    model = create_model(name).eval()
    params = model.num_parameters()
    model = model.to("meta")
    x = torch.empty(1, 3, h, w, device="meta")
    sampled = 0

    def hook(mod, inp, out):
        nonlocal sampled
        cfg = model.config
        k2 = cfg.kernel_size**2
        if mod.adaptive_offset:
            sampled += inp[0].numel() * k2

    hooks = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ == "PixelDependentFilter"]
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    for hk in hooks:
        hk.remove()
    return params, fc.get_total_flops(), sampled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()
    print(f"| variant | parameters | counted GFLOPs at {args.width}x{args.height} | grid_sample values (M) |")
    print("|---|---|---|---|")
    for name in list_variants():
        p, f, s = count(name, args.height, args.width)
        print(f"| `{name}` | {p / 1e6:.2f} M | {f / 1e9:.1f} | {s / 1e6:.0f} |")


if __name__ == "__main__":
    main()
