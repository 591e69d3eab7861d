"""One level of the hierarchy: encoder and decoder built from content-aware residual blocks (Sec. 2).

Following DMPHN, each level is an encoder-decoder: the encoder brings a patch from RGB to
``widths[2]`` features at 1/4 resolution through two stride-2 convolutions, the decoder brings
them back with two transposed convolutions and predicts an RGB residual. SAPHN's change is
the residual block: ``conv -> content-aware module -> conv`` (+ identity), ``N`` of them in the
encoder and ``N`` in the decoder, all at 1/4 resolution where the module is cheap. Decoder
blocks cross-attend the encoder block of the mirrored depth (decoder block ``i`` attends
encoder block ``N-1-i``, as in a U-Net).

``stage_blocks`` (0 in every registered variant for now) adds DMPHN's plain residual blocks at
full and half resolution, in encoder and decoder: more capacity where fine detail lives.
``detail_blocks`` adds them to the decoder only, identity-initialised (``saphn-sd``).

``stage_skips`` (not in the paper, off in ``saphn``) adds the encoder's full- and half-
resolution features to the decoder's: narrow CPU variants have too few channels at 1/4
resolution to carry fine detail through the bottleneck alone.
"""

from __future__ import annotations

from torch import Tensor, nn

from deblur_cli.models.fusion import ContentAwareModule


class ResBlock(nn.Module):
    """``x + conv(CAM(relu(conv(x))))``: SAPHN's residual block (Sec. 2).

    Args:
        channels: ``C``.
        cam: keyword arguments of :class:`ContentAwareModule`.
    """

    def __init__(self, channels: int, **cam: object) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.cam = ContentAwareModule(channels, **cam)  # type: ignore[arg-type]
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, encoder_features: Tensor | None = None) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``; ``encoder_features`` feed the cross-attention."""
        y = self.act(self.conv1(x))
        y = self.cam(y, encoder_features)
        return x + self.conv2(y)


class PlainResBlock(nn.Module):
    """DMPHN's residual block ``x + conv(relu(conv(x)))``, for the full- and half-resolution
    stages when ``stage_blocks > 0`` or ``detail_blocks > 0`` (``(B, C, H, W) -> (B, C, H, W)``).

    ``identity_init``: zero the second convolution, so the block starts as the identity (how
    ``detail_blocks`` are added to trained weights without changing their output).
    """

    def __init__(self, channels: int, identity_init: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        if identity_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def _stage(channels: int, count: int, identity: int = 0) -> nn.Sequential:
    """``count`` plain residual blocks followed by ``identity`` identity-initialised ones (an
    empty Sequential, with no parameters, for none)."""
    blocks = [PlainResBlock(channels) for _ in range(count)]
    blocks += [PlainResBlock(channels, identity_init=True) for _ in range(identity)]
    return nn.Sequential(*blocks)


class Encoder(nn.Module):
    """RGB patch ``(B, 3, H, W)`` -> features ``(B, widths[2], H/4, W/4)``.

    Args:
        widths: channels at full, half and quarter resolution.
        blocks: ``N`` residual blocks at quarter resolution.
        stage_blocks: plain residual blocks at full and at half resolution (DMPHN has 2).
        cam: keyword arguments of the blocks' content-aware modules.
    """

    def __init__(self, widths: tuple[int, int, int], blocks: int, stage_blocks: int = 0, **cam: object) -> None:
        super().__init__()
        c0, c1, c2 = widths
        act = nn.ReLU(inplace=True)
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1), act, *_stage(c0, stage_blocks))
        self.down1 = nn.Sequential(nn.Conv2d(c0, c1, 3, stride=2, padding=1), act, *_stage(c1, stage_blocks))
        self.down2 = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), act)
        self.blocks = nn.ModuleList(ResBlock(c2, cross_attention=False, **cam) for _ in range(blocks))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Returns the final features and the list of per-stage/per-block features
        ``[full, half, block_1, ..., block_N]`` that the decoder uses."""
        s0 = self.stem(x)
        s1 = self.down1(s0)
        f = self.down2(s1)
        feats = [s0, s1]
        for block in self.blocks:
            f = block(f)
            feats.append(f)
        return f, feats


class Decoder(nn.Module):
    """Features ``(B, widths[2], H/4, W/4)`` -> RGB residual ``(B, 3, H, W)``.

    Args:
        widths: as for :class:`Encoder`.
        blocks: ``N``.
        cross_attention: decoder blocks attend the mirrored encoder block (Table 3 "CA").
        stage_skips: add the encoder's full/half-resolution features (see module docstring).
        stage_blocks: plain residual blocks at half and at full resolution, after the additions.
        detail_blocks: more of them, identity-initialised, after the ``stage_blocks`` (their
            parameters are ``half_blocks.{stage_blocks + i}`` and ``full_blocks.{...}``).
        cam: keyword arguments of the blocks' content-aware modules.
    """

    def __init__(
        self,
        widths: tuple[int, int, int],
        blocks: int,
        cross_attention: bool,
        stage_skips: bool,
        stage_blocks: int = 0,
        detail_blocks: int = 0,
        **cam: object,
    ) -> None:
        super().__init__()
        c0, c1, c2 = widths
        self.stage_skips = stage_skips
        self.blocks = nn.ModuleList(ResBlock(c2, cross_attention=cross_attention, **cam) for _ in range(blocks))
        act = nn.ReLU(inplace=True)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), act)
        self.up2 = nn.Sequential(nn.ConvTranspose2d(c1, c0, 4, stride=2, padding=1), act)
        self.half_blocks = _stage(c1, stage_blocks, detail_blocks)
        self.full_blocks = _stage(c0, stage_blocks, detail_blocks)
        self.head = nn.Conv2d(c0, 3, 3, padding=1)
        # Zero head: every level starts as the identity, so training begins from "output = input".
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, f: Tensor, enc_feats: list[Tensor]) -> Tensor:
        """``enc_feats`` is the encoder's second return value."""
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            f = block(f, enc_feats[2 + n - 1 - i])
        f = self.up1(f)
        if self.stage_skips:
            f = f + enc_feats[1]
        f = self.up2(self.half_blocks(f))
        if self.stage_skips:
            f = f + enc_feats[0]
        return self.head(self.full_blocks(f))
