"""The content-aware processing module and its attentive fusion (Sec. 3, Eq. 12-13).

Two branches see the same input ``x``: the global one (self-attention, plus cross
encoder-decoder attention in decoder blocks; Sec. 3.1) and the local one (pixel-dependent
filtering; Sec. 3.2). A single-channel convolution decides per pixel which to trust::

    M_fus = sigmoid(f_fus(x))                      (Eq. 12)
    y     = M_fus * y_att + (1 - M_fus) * y_dyn    (Eq. 13)

``M_fus = 1`` means the attention branch, ``0`` the filtering branch. With an ablation that
removes the whole global branch (Table 3 without SA and CA) the module is the local branch
alone and has no fusion mask.

In decoder blocks the global branch has two attentions, self- and cross-attention; the paper
does not say how they are combined before Eq. 13. We add them, ``y_att = y_sa + y_ca``: Eq. 13
has one ``y_att``, a sum keeps one fusion mask and no extra layer, and it is what the paper does
wherever else it merges two feature streams ("+" in Fig. 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur_cli.models.attention import EfficientAttention
from deblur_cli.models.dot_attention import DotProductAttention
from deblur_cli.models.pixel_filter import PixelDependentFilter


class ContentAwareModule(nn.Module):
    """Global-local module of Fig. 3.

    Args:
        channels: ``C``.
        attn_maps: ``C2`` of the attention branch.
        kernel_size, max_offset, adaptive_kernel, adaptive_offset: see
            :class:`~deblur_cli.models.pixel_filter.PixelDependentFilter`.
        self_attention: include self-attention (Table 3 "SA").
        cross_attention: include cross encoder-decoder attention (Table 3 "CA"); only
            meaningful in decoder blocks, which pass the encoder features to ``forward``.
        dot_product_attention: the self-attention is reference [1]'s dot-product attention
            (:class:`~deblur_cli.models.dot_attention.DotProductAttention`, Sec. 4.3's
            comparison) instead of the efficient one.
    """

    #: What :meth:`intermediates` can return.
    map_names = ("fusion",)

    def __init__(
        self,
        channels: int,
        attn_maps: int,
        kernel_size: int = 5,
        max_offset: float = 3.0,
        adaptive_kernel: bool = True,
        adaptive_offset: bool = True,
        self_attention: bool = True,
        cross_attention: bool = False,
        dot_product_attention: bool = False,
    ) -> None:
        super().__init__()
        self.sa: EfficientAttention | DotProductAttention | None = None
        if self_attention:
            self.sa = (
                DotProductAttention(channels) if dot_product_attention else EfficientAttention(channels, attn_maps)
            )
        self.ca = EfficientAttention(channels, attn_maps) if cross_attention else None
        self.pdf = PixelDependentFilter(channels, kernel_size, max_offset, adaptive_kernel, adaptive_offset)
        has_global = self.sa is not None or self.ca is not None
        self.f_fus = nn.Conv2d(channels, 1, 3, padding=1) if has_global else None

    def forward(self, x: Tensor, encoder_features: Tensor | None = None) -> Tensor:
        """Args:
            x: ``(B, C, H, W)``.
            encoder_features: ``(B, C, H, W)`` from the matching encoder block, attended by
                the cross-attention (decoder blocks only).

        Returns:
            ``(B, C, H, W)`` fused features ``y_GL``.
        """
        use_ca = self.ca is not None and encoder_features is not None
        heads = self._heads(x, use_ca)
        y_dyn = self.pdf(x, raw=heads.get("pdf"))
        if self.f_fus is None:
            return y_dyn
        y_att = None
        if isinstance(self.sa, DotProductAttention):
            y_att = self.sa(x)
        elif self.sa is not None:
            y_att = self.sa(x, None, m1_logits=heads.get("sa"))
        if use_ca:
            y_ca = self.ca(x, encoder_features, m1_logits=heads.get("ca"))
            y_att = y_ca if y_att is None else y_att + y_ca
        if y_att is None:  # CA only, in an encoder block: no global branch here
            return y_dyn
        m_fus = self._fusion_mask(x, heads)
        # Eq. 13, M * y_att + (1 - M) * y_dyn, as y_dyn + M * (y_att - y_dyn): one pass over
        # the features instead of four (equal up to float rounding). Under autocast the filtering
        # branch is float32 and the rest low precision; lerp wants one dtype: the float32 one.
        dtype = y_dyn.dtype
        return torch.lerp(y_dyn, y_att.to(dtype), m_fus.to(dtype))

    def intermediates(self, x: Tensor, encoder_features: Tensor | None = None) -> dict[str, Tensor]:
        """For the same arguments as :meth:`forward`: the fusion mask ``fusion`` ``M_fus``
        ``(B, 1, H, W)`` (1 = attention, 0 = filtering) where the module fuses two branches
        (the branches' own maps come from their modules)."""
        use_ca = self.ca is not None and encoder_features is not None
        if self.f_fus is None or (self.sa is None and not use_ca):
            return {}
        return {"fusion": self._fusion_mask(x, self._heads(x, use_ca))}

    def _fusion_mask(self, x: Tensor, heads: dict[str, Tensor]) -> Tensor:
        """``M_fus = sigmoid(f_fus(x))`` (Eq. 12), ``(B, 1, H, W)``, from the shared head
        convolution when it ran."""
        assert self.f_fus is not None
        return torch.sigmoid(heads["fus"] if "fus" in heads else self.f_fus(x))

    def _heads(self, x: Tensor, use_ca: bool) -> dict[str, Tensor]:
        """The 3x3 convolutions that read ``x``, run as one: the filter's meta-layer (``pdf``,
        ``(B, 3*K*K, H, W)`` or less), the fusion mask's ``f_fus`` and the attention masks'
        ``f_m1`` (``sa``, ``ca``), each ``(B, 1, H, W)`` logits.

        Why: a convolution with one output channel costs nearly as much as one with dozens (on
        the CPU, 7.5 ms for 128 -> 1 at 320x180 against 35 ms for 128 -> 75). Concatenating the weights is
        exact (each output channel is its own dot product) and keeps the parameters, their
        names and the checkpoints as they are. Empty if there is at most one head.
        """
        convs: dict[str, nn.Conv2d] = {}
        if self.pdf.meta is not None:
            convs["pdf"] = self.pdf.meta
        if self.f_fus is not None and (self.sa is not None or use_ca):  # else no global branch to fuse
            convs["fus"] = self.f_fus
        if isinstance(self.sa, EfficientAttention):
            convs["sa"] = self.sa.f_m1
        if self.ca is not None and use_ca:
            convs["ca"] = self.ca.f_m1
        if len(convs) < 2:
            return {}
        weight = torch.cat([c.weight for c in convs.values()])
        bias = torch.cat([c.bias for c in convs.values()])
        out = F.conv2d(x, weight, bias, padding=1)
        return dict(zip(convs, torch.split(out, [c.out_channels for c in convs.values()], dim=1)))
