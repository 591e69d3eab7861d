"""Efficient spatial attention of SAPHN (Sec. 3.1, Eq. 2-10).

The paper replaces the HW x HW product of ordinary self-attention with a two-step
aggregation whose cost is O(C * C2 * HW):

1. a spatial mask ``M1 = sigmoid(f_m1(x))`` (Eq. 2) gates the input, ``x_m1 = x * M1`` (Eq. 3);
2. ``C2`` spatial attention maps ``Q`` (softmax over the HW positions, Eq. 4) pool the gated
   features into ``C2`` global descriptors of ``C`` channels (Eq. 5);
3. a channel gate ``M2`` from the globally pooled features re-weights them (Eq. 6-7);
4. per-pixel selection maps ``P`` (softmax over the ``C2`` descriptors, Eq. 8) mix the
   descriptors back into every pixel (Eq. 9).

In matrix form (Eq. 10): ``y_att = M2 * [(x_m1) softmax_HW(Q)^T] softmax_C2(P)``, computed
in the order that never forms an ``HW x HW`` matrix: besides the output, the intermediates are
``(B, C, C2)`` descriptors and ``C2``-channel maps. Nor is the gated ``x_m1`` of Eq. 3 formed:
``M1`` is one scalar per pixel, so it is folded into the 1x1 maps and the sums that read it.

Eq. 9 writes the last step as a global *average* over ``C2`` while Eq. 10 (the form the
paper says it implements) has a plain sum; the two differ by the constant ``C2``. We follow
Eq. 10: with a convex combination the output keeps the scale of the input features, which
matters when it is fused with the filtering branch (Eq. 13). ``tests/test_model.py``
checks Eq. 10 against a literal Eq. 3-9 implementation scaled by ``C2``.

The same module serves as cross-attention (Sec. 3.1.2): the features that are *attended*
(``values``) come from another tensor (the matching encoder block, or the lower level),
while every attention decision (``M1``, ``Q``, ``P``, ``M2``) is made from ``x``.

The last step, Eq. 9's mixing, is :func:`deblur_cli.ops.attention.mix` (a oneDNN form for CPU
inference beside the plain batched product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur_cli.ops import attention as attention_ops


class EfficientAttention(nn.Module):
    """SAPHN's global attention branch, self- or cross-attention (Eq. 2-10).

    Args:
        channels: ``C``, channels of the input and of the attended features.
        maps: ``C2``, the number of spatial attention maps ``q_1..q_C2``.
    """

    #: What :meth:`intermediates` returns.
    map_names = ("m1", "q")

    def __init__(self, channels: int, maps: int) -> None:
        super().__init__()
        self.maps = maps
        # f_m1 of Eq. 2: a single-channel spatial mask from a 3x3 neighbourhood.
        self.f_m1 = nn.Conv2d(channels, 1, 3, padding=1)
        # f_Q and f_P of Eq. 10: per-pixel linear maps to C2 scores.
        self.f_q = nn.Conv2d(channels, maps, 1)
        self.f_p = nn.Conv2d(channels, maps, 1)
        # f_m2 of Eq. 7: channel gate from the globally pooled gated features.
        self.f_m2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, values: Tensor | None = None, m1_logits: Tensor | None = None) -> Tensor:
        """Attend over all positions of each image (or patch) in the batch.

        Args:
            x: ``(B, C, H, W)`` features that make the attention decisions.
            values: ``(B, C, H, W)`` features to attend (cross-attention); ``None`` for
                self-attention (``values = x``).
            m1_logits: ``self.f_m1(x)`` ``(B, 1, H, W)`` if the caller computed it already (the
                content-aware module runs all its 3x3 heads on ``x`` as one convolution).

        Returns:
            ``(B, C, H, W)`` attended features ``y_att``.
        """
        h, w = x.shape[-2:]
        # M1, then x's view, then Q and P: the order autograd sums x's gradients in.
        m1_flat = self._spatial_mask(x, m1_logits)  # (B, 1, HW)
        x_flat = x.flatten(2)  # (B, C, HW); a view, also of channels-last x
        q, p = self._scores(x, m1_flat)
        # Eq. 5-6 and Eq. 7's pooling as products of the values with weights over the pixels:
        # the C2 maps Q * M1 (attention-weighted sums of the gated values) and M1 / HW (the
        # mean of x * M1; scaled before the sum so that fp16 sums stay in range). In
        # self-attention, one product reads x once for both.
        weights = q * m1_flat  # (B, C2, HW)
        mean_weights = m1_flat / (h * w)  # (B, 1, HW)
        if values is None:
            sums = torch.bmm(x_flat, torch.cat([weights, mean_weights], dim=1).transpose(1, 2))
            desc, pooled = sums.split([self.maps, 1], dim=2)  # (B, C, C2), (B, C, 1)
        else:
            desc = torch.bmm(values.flatten(2), weights.transpose(1, 2))
            pooled = torch.bmm(x_flat, mean_weights.transpose(1, 2))
        m2 = torch.sigmoid(self.f_m2(pooled.unsqueeze(3))).flatten(1)  # Eq. 7, (B, C)
        desc = desc * m2.unsqueeze(2)  # Eq. 6, channel-gated descriptors (B, C, C2)
        # Eq. 8-9 (sum form of Eq. 10): every pixel mixes the C2 descriptors.
        return attention_ops.mix(p, desc, x)

    def masks(self, x: Tensor, m1_logits: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The attention decisions made from ``x`` ``(B, C, H, W)``.

        Eq. 3 is folded into what reads ``x * M1``, so the gated features ``(B, C, H, W)`` are
        never formed: ``M1`` is one scalar per pixel, so a 1x1 map ``f(x * M1) = M1 * (W x) +
        bias``; the pooling of Eq. 7 is ``x @ M1 / HW``; Eq. 5's sums weight the values by
        ``Q * M1``. Exact up to float rounding, and it saves two to three passes over the
        feature map per module.

        Returns:
            ``(m1, q, p)``, each over the flattened pixels: the spatial mask ``M1``
            ``(B, 1, H*W)`` (Eq. 2), the attention maps ``Q`` ``(B, C2, H*W)`` (Eq. 4, each
            summing to 1 over the pixels) and the selection weights ``P`` ``(B, C2, H*W)``
            (Eq. 8, summing to 1 over the ``C2`` maps).
        """
        m1 = self._spatial_mask(x, m1_logits)
        return (m1, *self._scores(x, m1))

    def _spatial_mask(self, x: Tensor, m1_logits: Tensor | None) -> Tensor:
        """``M1`` (Eq. 2) over the flattened pixels, ``(B, 1, H*W)``."""
        return torch.sigmoid(self.f_m1(x) if m1_logits is None else m1_logits).flatten(2)

    def _scores(self, x: Tensor, m1: Tensor) -> tuple[Tensor, Tensor]:
        """``Q`` (Eq. 4) and ``P`` (Eq. 8), each ``(B, C2, H*W)``, from ``x`` and ``M1`` ``(B, 1, H*W)``."""
        w_qp = torch.cat([self.f_q.weight, self.f_p.weight])  # f_Q and f_P read x in one pass
        qp = F.conv2d(x, w_qp).flatten(2) * m1  # (B, 2*C2, HW)
        q_logits, p_logits = qp.split(self.maps, dim=1)
        q = torch.softmax(q_logits + self.f_q.bias[:, None], dim=2)  # Eq. 4, sums to 1 over HW
        p = torch.softmax(p_logits + self.f_p.bias[:, None], dim=1)  # Eq. 8, sums to 1 over C2
        return q, p

    def intermediates(
        self, x: Tensor, values: Tensor | None = None, m1_logits: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The maps of Fig. 6 for the same arguments as :meth:`forward`: ``m1`` ``(B, 1, H, W)``
        and ``q`` ``(B, C2, H, W)`` (each ``q_i`` summing to 1 over the pixels)."""
        b, _, h, w = x.shape
        m1, q, _ = self.masks(x, m1_logits)
        return {"m1": m1.reshape(b, 1, h, w), "q": q.reshape(b, self.maps, h, w)}


def attention_reference(module: EfficientAttention, x: Tensor, values: Tensor | None = None) -> Tensor:
    """Literal, loop-based Eq. 3-9 (with Eq. 9's average over C2), for tests only.

    Slow by design: it follows the paper's step-by-step description pixel by pixel so that the
    matrix form in :class:`EfficientAttention` can be checked against it.

    Args:
        module: the attention module whose weights to use.
        x: ``(B, C, H, W)`` decision features.
        values: optional ``(B, C, H, W)`` attended features.

    Returns:
        ``(B, C, H, W)``: Eq. 9's ``y_bar`` for every pixel.
    """
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    for n in range(b):
        xi = x[n : n + 1]
        m1 = torch.sigmoid(module.f_m1(xi))[0, 0]  # (H, W)
        x_m1 = xi[0] * m1  # Eq. 3, (C, H, W)
        v_m1 = x_m1 if values is None else values[n] * m1
        q = F.softmax(module.f_q(x_m1[None])[0].reshape(module.maps, -1), dim=1)  # (C2, HW)
        p = F.softmax(module.f_p(x_m1[None])[0].reshape(module.maps, -1), dim=0)  # (C2, HW)
        m2 = torch.sigmoid(module.f_m2(x_m1.mean(dim=(1, 2))[None, :, None, None]))[0, :, 0, 0]
        descs = []
        for k in range(module.maps):
            part = q[k].reshape(h, w) * v_m1  # Eq. 4: x^k_m1 = q_k * x_m1
            descs.append(part.sum(dim=(1, 2)))  # Eq. 5: global sum pooling over HW
        desc = torch.stack(descs, dim=1) * m2[:, None]  # Eq. 6, (C, C2)
        flat = torch.empty(c, h * w, dtype=x.dtype)
        for j in range(h * w):
            y_j = p[:, j][None, :] * desc  # Eq. 8, (C, C2)
            flat[:, j] = y_j.mean(dim=1)  # Eq. 9: global average pooling over C2
        out[n] = flat.reshape(c, h, w)
    return out
