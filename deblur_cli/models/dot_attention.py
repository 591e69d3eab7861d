"""The attention of the paper's reference [1] (Bello et al., attention-augmented convolution), for
the comparison of Sec. 4.3: multi-head dot-product self-attention over all positions (Eq. 1).

Sec. 4.3 puts [1]'s attention "in our model for fair comparison" and, because of its memory,
only "one attention module in the decoder in each level" (30.52 dB against Net3's 30.76). This
module is that attention; ``SAPHNConfig.dot_product_attention`` places it. It forms the
``HW x HW`` matrix of every head (that is the point of the comparison), so it is for training
and ablations at patch sizes, not for 720p inference. [1]'s relative position logits are left
out (the SAPHN paper does not say whether its comparison kept them).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class DotProductAttention(nn.Module):
    """``O = softmax(A B^T / sqrt(d_a)) C`` per head (Eq. 1), projected back to ``C`` channels.

    Args:
        channels: ``C``; the query, key and value embeddings have ``C`` channels in all, split
            over the heads (``d_a = d_c = C / heads`` each).
        heads: number of heads (8, as in [1]).
    """

    #: No maps of Fig. 6-7 (those are the efficient attention's ``M1`` and ``q``).
    map_names: tuple[str, ...] = ()

    def __init__(self, channels: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)  # W_a, W_b, W_c of Eq. 1
        self.out = nn.Conv2d(channels, channels, 1)  # [1]'s output projection

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``, every position attending every other one."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(3, 4).unbind(1)
        o = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads)
        return self.out(o.transpose(2, 3).reshape(b, c, h, w))
