"""SAPHN: the spatially-attentive patch-hierarchical network (Sec. 2, Fig. 2).

Three levels after DMPHN's 1-2-4 hierarchy, processed bottom level first:

* level 3 sees the four quadrants of the image (top-left, top-right, bottom-left,
  bottom-right) as four independent patches;
* level 2 sees the top and bottom halves; its input is the level-3 estimate, and its
  encoder features are combined with level 3's (stitched to halves) by **cross-level
  attention** (Sec. 3.1.2: the lower level's features are attended, the higher level
  decides), where DMPHN adds them;
* level 1 sees the whole image in the same way and its estimate is the output.

Every level predicts a residual on its input, so ``y3 = x + r3``, ``y2 = y3 + r2``,
``y1 = y2 + r1``; the decoders' zero-initialised heads make an untrained network the identity.
There is no stacking in depth (the paper drops DMPHN's stacks).

Any input size works: the input is padded inside the model (reflect, or replicate where
the image is too small to reflect) to a multiple of 8 (two halvings for the patches times
the encoder's stride 4) and the output cropped back to the input size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from deblur_cli.models.attention import EfficientAttention
from deblur_cli.models.level import Decoder, Encoder

#: The input is padded to a multiple of this (2 patch halvings x encoder stride 4).
SIZE_MULTIPLE = 8
#: Resolution of the feature maps (and of every introspection map) relative to the input.
FEATURE_STRIDE = 4


@dataclass(frozen=True)
class SAPHNConfig:
    """Architecture hyper-parameters; every field is a constructor option of :class:`SAPHN`.

    Attributes:
        widths: channels at full, half and quarter resolution (paper: 32, 64, 128 after DMPHN;
            "all convolutional layers within our proposed modules contain 128 filters").
        blocks: ``N``, residual blocks in each encoder and each decoder (paper: 3).
        attn_maps: ``C2``, spatial attention maps per attention module (not given in the paper).
        kernel_size: ``K`` of the pixel-dependent filter (paper: 5).
        max_offset: ``Delta_max`` in quarter-resolution pixels (not given in the paper).
        self_attention: Table 3 "SA".
        cross_attention: Table 3 "CA" (encoder-decoder).
        cross_level_attention: Table 3 "CLA"; off means DMPHN's plain sum across levels.
        adaptive_kernel: Table 3 "Kernel"; off means ``V = 1``.
        adaptive_offset: Table 3 "Offset"; off means ``delta = 0`` (Table 1 "Ours(a)").
        stage_skips: encoder-to-decoder additions at full/half resolution (not in the paper).
        stage_blocks: DMPHN-style plain residual blocks at full and at half resolution, in
            every encoder and decoder (0: none, the quarter-resolution blocks do all the work).
        detail_blocks: plain residual blocks at half and at full resolution in the decoders
            only (not in the paper): capacity where the residual's fine detail is drawn, at a
            third of ``stage_blocks``' cost. Each starts as the identity (zero second conv),
            so weights of the same config without them can be grown into it exactly.
    """

    widths: tuple[int, int, int] = (32, 64, 128)
    blocks: int = 3
    attn_maps: int = 32
    kernel_size: int = 5
    max_offset: float = 3.0
    self_attention: bool = True
    cross_attention: bool = True
    cross_level_attention: bool = True
    adaptive_kernel: bool = True
    adaptive_offset: bool = True
    stage_skips: bool = False
    stage_blocks: int = 0
    detail_blocks: int = 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly dict (tuples become lists)."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SAPHNConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def split_quadrants(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (4B, C, H/2, W/2)``, patches ordered TL, TR, BL, BR (patch-major)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, 2, h // 2, 2, w // 2).permute(2, 4, 0, 1, 3, 5)
    return x.reshape(4 * b, c, h // 2, w // 2)


def split_halves(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (2B, C, H/2, W)``, top half first."""
    b, c, h, w = x.shape
    return x.reshape(b, c, 2, h // 2, w).permute(2, 0, 1, 3, 4).reshape(2 * b, c, h // 2, w)


def quadrants_to_halves(x: Tensor) -> Tensor:
    """``(4B, C, h, w) -> (2B, C, h, 2w)``: stitch left and right quadrants side by side."""
    n, c, h, w = x.shape
    b = n // 4
    x = x.reshape(2, 2, b, c, h, w).permute(0, 2, 3, 4, 1, 5)
    return x.reshape(2 * b, c, h, 2 * w)


def halves_to_full(x: Tensor) -> Tensor:
    """``(2B, C, h, W) -> (B, C, 2h, W)``: stitch top and bottom halves."""
    n, c, h, w = x.shape
    b = n // 2
    return x.reshape(2, b, c, h, w).permute(1, 2, 0, 3, 4).reshape(b, c, 2 * h, w)


def stitch_patches(t: Tensor, level: int, height: int, width: int) -> Tensor:
    """A map of level ``level``'s patches as a map of the whole image, cropped to the input.

    Args:
        t: ``(4B, ch, h, w)`` (level 3: quadrants), ``(2B, ch, h, w)`` (level 2: halves) or
            ``(B, ch, h, w)`` (level 1), at the features' resolution.
        level: 1, 2 or 3.
        height, width: the network's input size ``H, W``.

    Returns:
        ``(B, ch, ceil(H/4), ceil(W/4))``.
    """
    if level == 3:
        t = quadrants_to_halves(t)
    if level >= 2:
        t = halves_to_full(t)
    return t[..., : math.ceil(height / FEATURE_STRIDE), : math.ceil(width / FEATURE_STRIDE)]


def pad_to_multiple(x: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Pad the bottom/right of ``(B, C, H, W)`` to multiples of ``multiple``.

    Reflect padding keeps image statistics at the border; it needs the pad to be smaller
    than the size, so images smaller than that are padded by replication (a shape test, not a
    value test: it is fixed at ONNX export time, and the inference engine never sends such
    small inputs to an exported model).
    """
    h, w = x.shape[-2], x.shape[-1]
    ph = (multiple - h % multiple) % multiple
    pw = (multiple - w % multiple) % multiple
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class CrossLevelAttention(nn.Module):
    """Cross-level attention (Sec. 3.1.2) in place of DMPHN's feature sum.

    ``out = f_high + attention(decisions=f_high, attended=f_low)``; when disabled (Table 3
    without "CLA") ``out = f_high + f_low`` as in DMPHN.
    """

    def __init__(self, channels: int, maps: int, enabled: bool) -> None:
        super().__init__()
        self.attn = EfficientAttention(channels, maps) if enabled else None

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        """``high``, ``low``: ``(B, C, h, w)`` features of the same patches."""
        if self.attn is None:
            return high + low
        return high + self.attn(high, low)


class SAPHN(nn.Module):
    """The full network. Input and output are RGB in ``[0, 1]``, ``(B, 3, H, W)``, any ``H, W >= 1``.

    Args:
        config: architecture hyper-parameters.
    """

    def __init__(self, config: SAPHNConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SAPHNConfig()
        cam = dict(
            attn_maps=cfg.attn_maps,
            kernel_size=cfg.kernel_size,
            max_offset=cfg.max_offset,
            adaptive_kernel=cfg.adaptive_kernel,
            adaptive_offset=cfg.adaptive_offset,
            self_attention=cfg.self_attention,
        )
        self.encoders = nn.ModuleList(Encoder(cfg.widths, cfg.blocks, cfg.stage_blocks, **cam) for _ in range(3))
        self.decoders = nn.ModuleList(
            Decoder(
                cfg.widths, cfg.blocks, cfg.cross_attention, cfg.stage_skips, cfg.stage_blocks, cfg.detail_blocks, **cam
            )
            for _ in range(3)
        )
        c = cfg.widths[2]
        # Cross-level attention into level 2 (from level 3) and into level 1 (from level 2).
        self.cla = nn.ModuleList(CrossLevelAttention(c, cfg.attn_maps, cfg.cross_level_attention) for _ in range(2))

    def forward(self, x: Tensor, levels: list[Tensor] | None = None) -> Tensor:
        """Deblur a batch.

        Args:
            x: ``(B, 3, H, W)`` blurred RGB in ``[0, 1]``.
            levels: optional list; receives the estimates ``[y3, y2, y1]``, each ``(B, 3, H, W)``,
                for per-level supervision.

        Returns:
            ``(B, 3, H, W)`` deblurred RGB (not clamped).

        The maps of Fig. 6-7 are not part of the output: the modules of
        :meth:`named_map_modules` give them for the same pass through forward hooks
        (``deblur_cli.viz.recording``), which leave the output as it is.
        """
        h, w = x.shape[-2], x.shape[-1]
        xp = pad_to_multiple(x)
        # Level 3: four quadrants as a batch of 4B patches.
        x3 = split_quadrants(xp)
        f3, e3 = self.encoders[2](x3 - 0.5)
        y3 = x3 + self.decoders[2](f3, e3)
        # Level 2: top and bottom halves; input is the level-3 estimate.
        x2 = quadrants_to_halves(y3)
        f2, e2 = self.encoders[1](x2 - 0.5)
        f2 = self.cla[0](f2, quadrants_to_halves(f3))
        y2 = x2 + self.decoders[1](f2, e2)
        # Level 1: the whole image.
        x1 = halves_to_full(y2)
        f1, e1 = self.encoders[0](x1 - 0.5)
        f1 = self.cla[1](f1, halves_to_full(f2))
        y1 = x1 + self.decoders[0](f1, e1)
        if levels is not None:
            levels.extend(t[..., :h, :w] for t in (halves_to_full(quadrants_to_halves(y3)), halves_to_full(y2), y1))
        return y1[..., :h, :w]

    def named_map_modules(self) -> Iterator[tuple[str, int, nn.Module]]:
        """The modules whose ``intermediates`` are the maps of Fig. 6-7, in the order ``forward``
        runs them: ``(key prefix, level, module)``.

        The prefixes are ``level{1,2,3}.{encoder,decoder}.block{i}.`` for the content-aware
        module of block ``i`` (``fusion``), the same followed by ``pdf.`` (``kernels``,
        ``offsets``), ``sa.`` and ``ca.`` (``m1``, ``q``) for its branches, and ``level{1,2}.cla.``
        for the cross-level attention (``m1``, ``q``); modules a variant does not have are left
        out. A level's maps are per patch; :func:`stitch_patches` makes them whole-image maps.
        """
        for level in (3, 2, 1):
            yield from self._block_map_modules(level, "encoder")
            cla = self.cla[2 - level].attn if level < 3 else None  # into level 2: cla[0]; 1: cla[1]
            if cla is not None:
                yield f"level{level}.cla.", level, cla
            yield from self._block_map_modules(level, "decoder")

    def _block_map_modules(self, level: int, part: str) -> Iterator[tuple[str, int, nn.Module]]:
        """:meth:`named_map_modules` of one encoder or decoder."""
        coder = (self.encoders if part == "encoder" else self.decoders)[level - 1]
        for i, block in enumerate(coder.blocks):
            prefix = f"level{level}.{part}.block{i + 1}."
            for name in ("pdf", "sa", "ca"):
                branch = getattr(block.cam, name)
                if branch is not None:
                    yield f"{prefix}{name}.", level, branch
            yield prefix, level, block.cam

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
