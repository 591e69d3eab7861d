"""SAPHN: the spatially-attentive patch-hierarchical network (Sec. 2, Fig. 2).

Three levels after DMPHN's 1-2-4 hierarchy, processed bottom level first:

* level 3 encodes the four quadrants of the image (top-left, top-right, bottom-left,
  bottom-right) as four independent patches;
* level 2 encodes the top and bottom halves; its input is the level-3 estimate, and its
  encoder features are combined with level 3's by **cross-level attention** (Sec. 3.1.2: the
  lower level's features are attended, the higher level decides), where DMPHN adds them;
* level 1 encodes the whole image in the same way and its estimate is the output.

Where each level *decodes* follows DMPHN's code (``merged_decoding``, on in ``saphn``): the
features of a level's patches are stitched into the next level's patches first, so level 3
decodes two halves, level 2 the whole image (where it also meets level 3's features), level 1
the whole image. With ``merged_decoding`` off (``saphn-s``) every level decodes its own
patches and level 2 meets level 3's features per half.

Every level predicts a residual on its input, so ``y3 = x + r3``, ``y2 = y3 + r2``,
``y1 = y2 + r1``; the decoders' zero-initialised heads make an untrained network the identity.
There is no stacking in depth (the paper drops DMPHN's stacks).

Any input size works: the input is padded inside the model (reflect, or replicate where
the image is too small to reflect) to a multiple of 8 (two halvings for the patches times
the encoder's stride 4) and the output cropped back to the input size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
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

    The defaults are the paper's configuration (``saphn``). A weights file records its config;
    a field missing from it (a file saved before the field existed) takes the value in
    :data:`LEGACY_VALUES`, which rebuilds the structure the file was saved with.

    Attributes:
        widths: channels at full, half and quarter resolution (paper: 32, 64, 128 after DMPHN;
            "all convolutional layers within our proposed modules contain 128 filters").
        blocks: ``N``, content-aware residual blocks at quarter resolution in each encoder and
            each decoder (paper: 3).
        full_blocks: ``M``, DMPHN's plain residual blocks at full resolution in each encoder
            and each decoder (paper: 2).
        half_blocks: ``P``, the same at half resolution (paper: 2).
        attn_maps: ``C2``, spatial attention maps per attention module (not given in the paper).
        kernel_size: ``K`` of the pixel-dependent filter (paper: 5).
        max_offset: ``Delta_max`` in quarter-resolution pixels (not given in the paper).
        self_attention: Table 3 "SA".
        cross_attention: Table 3 "CA" (encoder-decoder).
        cross_level_attention: Table 3 "CLA"; off means DMPHN's plain sum across levels.
        adaptive_kernel: Table 3 "Kernel"; off means ``V = 1``.
        adaptive_offset: Table 3 "Offset"; off means ``delta = 0`` (Table 1 "Ours(a)").
        merged_decoding: decode level 3's quadrants stitched into halves and level 2's halves
            stitched into the whole image, as DMPHN's code and Fig. 2 do; off: every level
            decodes its own patches.
        transition_relu: a ReLU after the first, the strided and the transposed convolutions of
            every encoder and decoder (DMPHN has none there).
        dot_product_attention: Sec. 4.3's comparison with reference [1]: self-attention only in
            the first decoder block of each level, and there [1]'s dot-product attention (Eq. 1)
            instead of the efficient one.
        stage_skips: encoder-to-decoder additions at full/half resolution (not in the paper).
        detail_blocks: plain residual blocks at half and at full resolution in the decoders
            only, after the ``P`` and ``M`` ones (not in the paper): capacity where the
            residual's fine detail is drawn. Each starts as the identity (zero second conv),
            so weights of the same config without them can be grown into it exactly.
    """

    widths: tuple[int, int, int] = (32, 64, 128)
    blocks: int = 3
    full_blocks: int = 2
    half_blocks: int = 2
    attn_maps: int = 32
    kernel_size: int = 5
    max_offset: float = 3.0
    self_attention: bool = True
    cross_attention: bool = True
    cross_level_attention: bool = True
    adaptive_kernel: bool = True
    adaptive_offset: bool = True
    merged_decoding: bool = True
    transition_relu: bool = False
    dot_product_attention: bool = False
    stage_skips: bool = False
    detail_blocks: int = 0

    @property
    def stage_blocks(self) -> int | None:
        """The one count of plain blocks per scale that configs had before ``M`` and ``P`` were
        separate fields: ``M`` when ``M == P``, else ``None``."""
        return self.full_blocks if self.full_blocks == self.half_blocks else None

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly dict (tuples become lists)."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SAPHNConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take
        :data:`LEGACY_VALUES` (and the former ``stage_blocks`` sets both ``M`` and ``P``)."""
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])  # type: ignore[arg-type]
        if "stage_blocks" in d:
            count = d.pop("stage_blocks")
            d.setdefault("full_blocks", count)
            d.setdefault("half_blocks", count)
        for key, value in LEGACY_VALUES.items():
            d.setdefault(key, value)
        return cls(**d)  # type: ignore[arg-type]


#: The values a config dict without these fields was built with (a weights file written before
#: the fields existed, such as the shipped ``saphn-s.synth``): no plain blocks, per-patch decoding,
#: ReLUs after every transition. Such files rebuild exactly from their config.
LEGACY_VALUES: dict[str, object] = {
    "full_blocks": 0,
    "half_blocks": 0,
    "merged_decoding": False,
    "transition_relu": True,
    "dot_product_attention": False,
    "detail_blocks": 0,
}


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
    without "CLA") ``out = f_high + f_low`` as in DMPHN. The sum with ``f_high`` keeps DMPHN's
    path for the higher level's own features; the attention replaces only the plain addition
    of the lower level's.
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
        cam = {
            "attn_maps": cfg.attn_maps,
            "kernel_size": cfg.kernel_size,
            "max_offset": cfg.max_offset,
            "adaptive_kernel": cfg.adaptive_kernel,
            "adaptive_offset": cfg.adaptive_offset,
            "self_attention": cfg.self_attention,
            "dot_product_attention": cfg.dot_product_attention,
        }
        stages = {
            "full_blocks": cfg.full_blocks,
            "half_blocks": cfg.half_blocks,
            "transition_relu": cfg.transition_relu,
        }
        # Sec. 4.3's comparison with [1]: one attention module per level, in the decoder.
        enc_attention, dec_attention = ((), (0,)) if cfg.dot_product_attention else (None, None)
        self.encoders = nn.ModuleList(
            Encoder(cfg.widths, cfg.blocks, attention_blocks=enc_attention, **stages, **cam) for _ in range(3)
        )
        self.decoders = nn.ModuleList(
            Decoder(
                cfg.widths,
                cfg.blocks,
                cfg.cross_attention,
                cfg.stage_skips,
                detail_blocks=cfg.detail_blocks,
                attention_blocks=dec_attention,
                **stages,
                **cam,
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
        if self.config.merged_decoding:
            y3, y2, y1 = self._merged(xp)
        else:
            y3, y2, y1 = self._per_patch(xp)
        if levels is not None:
            levels.extend(t[..., :h, :w] for t in (y3, y2, y1))
        return y1[..., :h, :w]

    def _merged(self, xp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """DMPHN's data flow on the padded input ``(B, 3, H, W)``: each level encodes its own
        patches and decodes the next level's. Returns the whole-image ``(y3, y2, y1)``."""
        # Level 3: four quadrants (4B patches), decoded as two halves (2B).
        x3 = split_quadrants(xp)
        f3, e3 = self.encoders[2](x3 - 0.5)
        f3 = quadrants_to_halves(f3)
        y3 = split_halves(xp) + self.decoders[2](f3, self._decoder_feats(e3, quadrants_to_halves))
        # Level 2: two halves, input the level-3 estimate, decoded as the whole image (B),
        # where the level-3 features join through cross-level attention.
        f2, e2 = self.encoders[1](y3 - 0.5)
        f2 = self.cla[0](halves_to_full(f2), halves_to_full(f3))
        y2 = halves_to_full(y3) + self.decoders[1](f2, self._decoder_feats(e2, halves_to_full))
        # Level 1: the whole image.
        f1, e1 = self.encoders[0](y2 - 0.5)
        f1 = self.cla[1](f1, f2)
        y1 = y2 + self.decoders[0](f1, e1)
        return halves_to_full(y3), y2, y1

    def _per_patch(self, xp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every level decodes its own patches (``merged_decoding`` off). Returns the
        whole-image ``(y3, y2, y1)``."""
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
        return halves_to_full(quadrants_to_halves(y3)), halves_to_full(y2), y1

    def _decoder_feats(self, feats: list[Tensor], stitch: Callable[[Tensor], Tensor]) -> list[Tensor | None]:
        """The encoder's features that the decoder reads, stitched into its patches (those it
        does not read are ``None``, not copied)."""
        cfg = self.config
        return [stitch(t) if (cfg.stage_skips if i < 2 else cfg.cross_attention) else None for i, t in enumerate(feats)]

    def named_map_modules(self) -> Iterator[tuple[str, int, nn.Module]]:
        """The modules whose ``intermediates`` are the maps of Fig. 6-7, in the order ``forward``
        runs them: ``(key prefix, patch level, module)``.

        The prefixes are ``level{1,2,3}.{encoder,decoder}.block{i}.`` for the content-aware
        module of block ``i`` (``fusion``), the same followed by ``pdf.`` (``kernels``,
        ``offsets``), ``sa.`` and ``ca.`` (``m1``, ``q``) for its branches, and ``level{1,2}.cla.``
        for the cross-level attention (``m1``, ``q``); modules a variant does not have are left
        out. The patch level is the level whose patches the module sees: its own level, or with
        ``merged_decoding`` the next one up for decoders and cross-level attention;
        :func:`stitch_patches` with it makes the maps whole-image maps.
        """
        merged = int(self.config.merged_decoding)
        for level in (3, 2, 1):
            yield from self._block_map_modules(level, "encoder", level)
            cla = self.cla[2 - level].attn if level < 3 else None  # into level 2: cla[0]; 1: cla[1]
            if cla is not None:
                yield f"level{level}.cla.", max(level - merged, 1), cla
            yield from self._block_map_modules(level, "decoder", max(level - merged, 1))

    def _block_map_modules(self, level: int, part: str, patches: int) -> Iterator[tuple[str, int, nn.Module]]:
        """:meth:`named_map_modules` of one encoder or decoder, whose patches are level ``patches``'."""
        coder = (self.encoders if part == "encoder" else self.decoders)[level - 1]
        for i, block in enumerate(coder.blocks):
            prefix = f"level{level}.{part}.block{i + 1}."
            for name in ("pdf", "sa", "ca"):
                branch = getattr(block.cam, name)
                if branch is not None:
                    yield f"{prefix}{name}.", patches, branch
            yield prefix, patches, block.cam

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
