"""The content-aware processing module and its attentive fusion (Sec. 3, Eq. 12-13).

Two branches see the same input ``x``: the global one (self-attention, plus cross
encoder-decoder attention in decoder blocks; Sec. 3.1) and the local one (pixel-dependent
filtering; Sec. 3.2). A single-channel convolution decides per pixel which to trust::

    M_fus = sigmoid(f_fus(x))                      (Eq. 12)
    y     = M_fus * y_att + (1 - M_fus) * y_dyn    (Eq. 13)

``M_fus = 1`` means the attention branch, ``0`` the filtering branch. With an ablation that
removes the whole global branch (Table 3 without SA and CA) the module is the local branch
alone and has no fusion mask.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deblur_cli.models.attention import EfficientAttention
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
    """

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
    ) -> None:
        super().__init__()
        self.sa = EfficientAttention(channels, attn_maps) if self_attention else None
        self.ca = EfficientAttention(channels, attn_maps) if cross_attention else None
        self.pdf = PixelDependentFilter(channels, kernel_size, max_offset, adaptive_kernel, adaptive_offset)
        has_global = self.sa is not None or self.ca is not None
        self.f_fus = nn.Conv2d(channels, 1, 3, padding=1) if has_global else None

    def forward(
        self,
        x: Tensor,
        encoder_features: Tensor | None = None,
        maps: dict[str, Tensor] | None = None,
        prefix: str = "",
    ) -> Tensor:
        """Args:
            x: ``(B, C, H, W)``.
            encoder_features: ``(B, C, H, W)`` from the matching encoder block, attended by
                the cross-attention (decoder blocks only).
            maps: optional dict receiving ``fusion`` ``(B, 1, H, W)`` and the branches' maps.
            prefix: key prefix for ``maps``.

        Returns:
            ``(B, C, H, W)`` fused features ``y_GL``.
        """
        y_dyn = self.pdf(x, maps, prefix + "pdf.")
        if self.f_fus is None:
            return y_dyn
        y_att = None
        if self.sa is not None:
            y_att = self.sa(x, None, maps, prefix + "sa.")
        if self.ca is not None and encoder_features is not None:
            y_ca = self.ca(x, encoder_features, maps, prefix + "ca.")
            y_att = y_ca if y_att is None else y_att + y_ca
        if y_att is None:  # CA only, in an encoder block: no global branch here
            return y_dyn
        m_fus = torch.sigmoid(self.f_fus(x))  # Eq. 12
        if maps is not None:
            maps[prefix + "fusion"] = m_fus
        return m_fus * y_att + (1.0 - m_fus) * y_dyn  # Eq. 13
