"""One level of the hierarchy: DMPHN's encoder-decoder with SAPHN's content-aware blocks (Sec. 2).

Following DMPHN, each level is an encoder-decoder over three scales. The encoder brings a patch
from RGB to ``widths[2]`` features at 1/4 resolution through two stride-2 convolutions, the
decoder brings them back with two transposed convolutions and predicts an RGB residual. Sec. 4.1
gives the backbone as ``N = 3, M = 2, P = 2``:

* ``N`` content-aware residual blocks (``conv -> ReLU -> content-aware module -> conv``, plus
  the identity; Sec. 2, Sec. 4.3) at 1/4 resolution, in each encoder and each decoder, where
  DMPHN has two plain residual blocks;
* ``M`` plain residual blocks (DMPHN's ``conv -> ReLU -> conv``, plus the identity) at full
  resolution and ``P`` at half resolution, in each encoder and each decoder, as DMPHN has two
  at each of those scales (``docs/architecture.md`` gives the evidence for this reading).

Decoder blocks cross-attend the encoder block of the mirrored depth (decoder block ``i`` attends
encoder block ``N-1-i``, as in a U-Net).

``transition_relu`` puts a ReLU after the first convolution, the strided ones and the
transposed ones; DMPHN has none there (``saphn`` follows DMPHN, ``saphn-s`` keeps them).
``detail_blocks`` adds identity-initialised plain blocks to the decoder only (``saphn-sd``).
``stage_skips`` (not in the paper, off in ``saphn``) adds the encoder's full- and half-
resolution features to the decoder's: narrow CPU variants have too few channels at 1/4
resolution to carry fine detail through the bottleneck alone.
"""

from __future__ import annotations

from torch import Tensor, nn

from deblur_cli.models.fusion import ContentAwareModule


class ResBlock(nn.Module):
    """``x + conv(CAM(relu(conv(x))))``: SAPHN's residual block (Sec. 2).

    The paper says "1 convolution layer followed by a content-aware processing module and
    another convolutional layer" and no more; the ReLU sits where DMPHN's residual block has it,
    between the two convolutions, here before the module.

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
    """DMPHN's residual block ``x + conv(relu(conv(x)))``: the ``M`` full- and ``P`` half-
    resolution blocks, and ``detail_blocks`` (``(B, C, H, W) -> (B, C, H, W)``).

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


def _stage(channels: int, count: int, identity: int = 0) -> list[nn.Module]:
    """``count`` plain residual blocks followed by ``identity`` identity-initialised ones."""
    blocks = [PlainResBlock(channels) for _ in range(count)]
    return blocks + [PlainResBlock(channels, identity_init=True) for _ in range(identity)]


def _transition(conv: nn.Module, relu: bool) -> list[nn.Module]:
    """A change of scale or width, with a ReLU after it if ``relu``."""
    return [conv, nn.ReLU(inplace=True)] if relu else [conv]


class Encoder(nn.Module):
    """RGB patch ``(B, 3, H, W)`` -> features ``(B, widths[2], H/4, W/4)``.

    Args:
        widths: channels at full, half and quarter resolution.
        blocks: ``N`` content-aware residual blocks at quarter resolution.
        full_blocks: ``M`` plain residual blocks at full resolution.
        half_blocks: ``P`` plain residual blocks at half resolution.
        transition_relu: a ReLU after the first and the strided convolutions (not in DMPHN).
        attention_blocks: which of the ``N`` blocks have self-attention (default: all).
        cam: keyword arguments of the blocks' content-aware modules.
    """

    def __init__(
        self,
        widths: tuple[int, int, int],
        blocks: int,
        full_blocks: int = 0,
        half_blocks: int = 0,
        transition_relu: bool = True,
        attention_blocks: tuple[int, ...] | None = None,
        **cam: object,
    ) -> None:
        super().__init__()
        c0, c1, c2 = widths
        relu = transition_relu
        self.stem = nn.Sequential(*_transition(nn.Conv2d(3, c0, 3, padding=1), relu), *_stage(c0, full_blocks))
        self.down1 = nn.Sequential(
            *_transition(nn.Conv2d(c0, c1, 3, stride=2, padding=1), relu), *_stage(c1, half_blocks)
        )
        self.down2 = nn.Sequential(*_transition(nn.Conv2d(c1, c2, 3, stride=2, padding=1), relu))
        self.blocks = nn.ModuleList(
            ResBlock(c2, cross_attention=False, **_with_attention(cam, i, attention_blocks)) for i in range(blocks)
        )

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
        full_blocks: ``M`` plain residual blocks at full resolution, after the addition.
        half_blocks: ``P`` plain residual blocks at half resolution, after the addition.
        detail_blocks: more of them, identity-initialised, after those (their parameters are
            ``half_blocks.{P + i}`` and ``full_blocks.{M + i}``).
        transition_relu: a ReLU after each transposed convolution (not in DMPHN).
        attention_blocks: which of the ``N`` blocks have self-attention (default: all).
        cam: keyword arguments of the blocks' content-aware modules.
    """

    def __init__(
        self,
        widths: tuple[int, int, int],
        blocks: int,
        cross_attention: bool,
        stage_skips: bool,
        full_blocks: int = 0,
        half_blocks: int = 0,
        detail_blocks: int = 0,
        transition_relu: bool = True,
        attention_blocks: tuple[int, ...] | None = None,
        **cam: object,
    ) -> None:
        super().__init__()
        c0, c1, c2 = widths
        self.stage_skips = stage_skips
        self.blocks = nn.ModuleList(
            ResBlock(c2, cross_attention=cross_attention, **_with_attention(cam, i, attention_blocks))
            for i in range(blocks)
        )
        relu = transition_relu
        self.up1 = nn.Sequential(*_transition(nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), relu))
        self.up2 = nn.Sequential(*_transition(nn.ConvTranspose2d(c1, c0, 4, stride=2, padding=1), relu))
        self.half_blocks = nn.Sequential(*_stage(c1, half_blocks, detail_blocks))
        self.full_blocks = nn.Sequential(*_stage(c0, full_blocks, detail_blocks))
        self.head = nn.Conv2d(c0, 3, 3, padding=1)
        # Zero head: every level starts as the identity, so training begins from "output = input".
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, f: Tensor, enc_feats: list[Tensor | None]) -> Tensor:
        """``enc_feats`` is the encoder's second return value (entries the decoder does not
        read, the full/half ones without ``stage_skips``, the blocks' without cross-attention,
        may be ``None``)."""
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


def _with_attention(cam: dict[str, object], index: int, attention_blocks: tuple[int, ...] | None) -> dict[str, object]:
    """The content-aware module's arguments for block ``index``: without self-attention unless
    the block is one of ``attention_blocks`` (``None``: every block keeps ``cam`` as it is)."""
    if attention_blocks is None or index in attention_blocks:
        return cam
    return {**cam, "self_attention": False}
