"""DMPHN, the baseline of the SAPHN paper's speed claim, for side-by-side benchmarks.

Zhang, Dai, Li, Koniusz, "Deep Stacked Hierarchical Multi-patch Network for Image Deblurring",
CVPR 2019. Written from the paper's description (Sec. 3, Fig. 2-4); details the paper leaves
open (where the ReLUs are, how features and residuals pass between levels) were checked
against the authors' code (``HongguangZhang/DMPHN-cvpr19-master``: ``models.py``,
``DMPHN_1_2_4_test.py``, ``SDNet4_test.py``).

Every level has its own encoder and decoder, all with the same layout:

* encoder: conv 3->32, 2 residual blocks; conv stride 2 ->64, 2 residual blocks; conv stride 2
  ->128, 2 residual blocks (a residual block is conv-ReLU-conv plus the identity; there is no
  other activation);
* decoder: 2 residual blocks at 128; transposed conv ->64 (4x4, stride 2), 2 residual blocks;
  transposed conv ->32, 2 residual blocks; conv ->3.

That is 1.81 M parameters per level (7.2 MB in float32), 5.4 M for DMPHN(1-2-4), 7.2 M for
DMPHN(1-2-4-8) and 21.7 M for Stack(4)-DMPHN.

Hierarchy (1-2-4, bottom-up): level 3 encodes the 4 quadrants of the image; their features
are stitched and decoded per half into a residual for the 2 halves. Level 2 encodes the halves
plus that residual; its features, stitched, are *summed* with level 3's and decoded into a
residual for the whole image. Level 1 encodes image plus residual, sums level 2's features and
decodes the output image. Images live in ``[-0.5, 0.5]`` inside the network. Level 4 of
DMPHN(1-2-4-8) splits each quadrant into top and bottom halves again.

Stack(N)-DMPHN chains N such 1-2-4 units: unit ``s`` takes unit ``s - 1``'s output image as its
input and adds unit ``s - 1``'s features at every level (as the authors' ``SDNet4``). The
authors' test script also adds unit 1's output to the level-2 residual of later units; that
extra element-wise addition is left out (it changes no cost).

Unlike the authors' test scripts, any input size works: the image is padded (replicate) to a
multiple of the patch grid times the encoder stride and the output is cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Patch grid (rows, columns) of each level: level 1 is the whole image, level 2 the top and
#: bottom halves, level 3 the quadrants, level 4 each quadrant halved again vertically.
GRIDS = {1: (1, 1), 2: (2, 1), 3: (2, 2), 4: (4, 2)}
#: Encoder stride (two stride-2 convolutions).
STRIDE = 4


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Encoder(nn.Module):
    """``(B, 3, H, W) -> (B, 128, H/4, W/4)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            ResBlock(32),
            ResBlock(32),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            ResBlock(64),
            ResBlock(64),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            ResBlock(128),
            ResBlock(128),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Decoder(nn.Module):
    """``(B, 128, h, w) -> (B, 3, 4h, 4w)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ResBlock(128),
            ResBlock(128),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
            ResBlock(64),
            ResBlock(64),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            ResBlock(32),
            ResBlock(32),
            nn.Conv2d(32, 3, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def split(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """``(B, C, H, W) -> (B*R*S, C, H/R, W/S)`` for a ``(R, S)`` patch grid, patch-major."""
    rows, cols = grid
    b, c, h, w = x.shape
    x = x.reshape(b, c, rows, h // rows, cols, w // cols).permute(2, 4, 0, 1, 3, 5)
    return x.reshape(rows * cols * b, c, h // rows, w // cols)


def merge(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`split`."""
    rows, cols = grid
    n, c, h, w = x.shape
    b = n // (rows * cols)
    x = x.reshape(rows, cols, b, c, h, w).permute(2, 3, 0, 4, 1, 5)
    return x.reshape(b, c, rows * h, cols * w)


class DMPHNUnit(nn.Module):
    """One hierarchical multi-patch network, DMPHN(1-2-...-2^(levels-1)).

    Args:
        levels: 3 for DMPHN(1-2-4), 4 for DMPHN(1-2-4-8), ... (1 to 4).
    """

    def __init__(self, levels: int = 3) -> None:
        super().__init__()
        if levels not in GRIDS:
            raise ValueError(f"levels must be one of {sorted(GRIDS)}, got {levels}")
        self.levels = levels
        # encoders[i] / decoders[i] belong to level i + 1.
        self.encoders = nn.ModuleList(Encoder() for _ in range(levels))
        self.decoders = nn.ModuleList(Decoder() for _ in range(levels))

    def forward(self, x: Tensor, previous: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run the hierarchy bottom-up.

        Args:
            x: ``(B, 3, H, W)`` image in ``[-0.5, 0.5]``, ``H, W`` multiples of the padding
                multiple (see :class:`DMPHN`).
            previous: the stitched per-level feature sums of the unit below in a stack, or
                ``None``.

        Returns:
            The output image ``(B, 3, H, W)`` (still in ``[-0.5, 0.5]`` convention) and this
            unit's stitched feature sums, finest level first.
        """
        sums: list[Tensor] = []
        total: Tensor | None = None
        residual: Tensor | None = None
        out = x
        for i, level in enumerate(range(self.levels, 0, -1)):
            grid = GRIDS[level]
            inp = x if residual is None else x + residual
            feat = merge(self.encoders[level - 1](split(inp, grid)), grid)
            total = feat if total is None else feat + total
            if previous is not None:
                total = total + previous[i]
            sums.append(total)
            if level > 1:
                coarser = GRIDS[level - 1]
                residual = merge(self.decoders[level - 1](split(total, coarser)), coarser)
            else:
                out = self.decoders[0](total)
        return out, sums


class DMPHN(nn.Module):
    """DMPHN(1-2-4) (``levels=3``) or Stack(N)-DMPHN (``stack=N``); RGB in ``[0, 1]``, any size.

    Args:
        levels: levels of each unit (3: 1-2-4, 4: 1-2-4-8).
        stack: number of stacked units (1: plain DMPHN; 4: Stack(4)-DMPHN).
    """

    def __init__(self, levels: int = 3, stack: int = 1) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        self.units = nn.ModuleList(DMPHNUnit(levels) for _ in range(stack))
        rows, cols = GRIDS[levels]
        self.multiple = (rows * STRIDE, cols * STRIDE)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` blurred RGB in ``[0, 1]`` -> deblurred, same shape (not clamped)."""
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple[0], -w % self.multiple[1]
        y = F.pad(x, (0, pw, 0, ph), mode="replicate") - 0.5  # always padded: exports trace it
        feats: list[Tensor] | None = None
        for unit in self.units:
            y, feats = unit(y, feats)
        return y[..., :h, :w] + 0.5

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def dmphn_124() -> DMPHN:
    """DMPHN(1-2-4), the paper's main model (5.4 M parameters)."""
    return DMPHN(levels=3, stack=1)


def stack4_dmphn() -> DMPHN:
    """Stack(4)-DMPHN, the SAPHN paper's reference for speed (Table 1, 0.98 s; 21.7 M parameters)."""
    return DMPHN(levels=3, stack=4)


#: Baselines by the names the benchmark tables use.
BASELINES = {"DMPHN(1-2-4)": dmphn_124, "Stack(4)-DMPHN": stack4_dmphn}


if __name__ == "__main__":
    for label, make in BASELINES.items():
        net = make().eval()
        with torch.no_grad():
            y = net(torch.rand(1, 3, 72, 100))
        print(f"{label}: {net.num_parameters() / 1e6:.2f} M parameters, output {tuple(y.shape)}")
