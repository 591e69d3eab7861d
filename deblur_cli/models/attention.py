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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur_cli.models.pixel_filter import cpu_inference


class EfficientAttention(nn.Module):
    """SAPHN's global attention branch, self- or cross-attention (Eq. 2-10).

    Args:
        channels: ``C``, channels of the input and of the attended features.
        maps: ``C2``, the number of spatial attention maps ``q_1..q_C2``.
    """

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

    def forward(
        self,
        x: Tensor,
        values: Tensor | None = None,
        maps: dict[str, Tensor] | None = None,
        prefix: str = "",
        m1_logits: Tensor | None = None,
    ) -> Tensor:
        """Attend over all positions of each image (or patch) in the batch.

        Args:
            x: ``(B, C, H, W)`` features that make the attention decisions.
            values: ``(B, C, H, W)`` features to attend (cross-attention); ``None`` for
                self-attention (``values = x``).
            maps: if a dict is given, the spatial mask ``m1`` ``(B, 1, H, W)`` and the
                attention maps ``q`` ``(B, C2, H, W)`` (each summing to 1 over H, W) are
                stored in it under ``prefix``.
            prefix: key prefix for ``maps``.
            m1_logits: ``self.f_m1(x)`` ``(B, 1, H, W)`` if the caller computed it already (the
                content-aware module runs all its 3x3 heads on ``x`` as one convolution).

        Returns:
            ``(B, C, H, W)`` attended features ``y_att``.
        """
        b, c, h, w = x.shape
        m1 = torch.sigmoid(self.f_m1(x) if m1_logits is None else m1_logits)  # Eq. 2, (B, 1, H, W)
        m1_flat = m1.flatten(2)  # (B, 1, HW)
        x_flat = x.flatten(2)  # (B, C, HW); a view, also of channels-last x
        # Eq. 3 is folded into what reads x * M1, so the gated features (B, C, H, W) are never
        # formed: M1 is one scalar per pixel, so a 1x1 map f(x * M1) = M1 * (W x) + bias; the
        # pooling of Eq. 7 is x @ M1 / HW; Eq. 5's sums weight the values by Q * M1. Exact up to
        # float rounding, and it saves two to three passes over the feature map per module.
        w_qp = torch.cat([self.f_q.weight, self.f_p.weight])  # f_Q and f_P read x in one pass
        qp = F.conv2d(x, w_qp).flatten(2) * m1_flat  # (B, 2*C2, HW)
        q_logits, p_logits = qp.split(self.maps, dim=1)
        q = torch.softmax(q_logits + self.f_q.bias[:, None], dim=2)  # Eq. 4, (B, C2, HW), sums to 1 over HW
        p = torch.softmax(p_logits + self.f_p.bias[:, None], dim=1)  # Eq. 8, (B, C2, HW), sums to 1 over C2
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
        if _onednn_mix(x):
            # CPU inference of one image: the same product as a 1x1 convolution of the maps P
            # by the descriptors, through oneDNN (on session 8's AMD, 0.8 ms against bmm's
            # 3.8 ms for 128 channels, C2 = 16, 320x180); channels-last output like the branch
            # it is fused with.
            p_img = p.reshape(1, self.maps, h, w).contiguous(memory_format=torch.channels_last)
            y = F.conv2d(p_img, desc[0, :, :, None, None])
        elif x.is_contiguous(memory_format=torch.channels_last):
            # Pixel-major product, (B, HW, C2) @ (B, C2, C): the result is channels-last like
            # the input and like the filtering branch it is fused with (Eq. 13), so the fusion
            # and the convolutions after it never mix memory layouts. Same values as below.
            y = torch.bmm(p.transpose(1, 2), desc.transpose(1, 2)).transpose(1, 2)  # (B, C, HW), strides of NHWC
        else:
            y = torch.bmm(desc, p)  # (B, C, HW)
        if maps is not None:
            maps[prefix + "m1"] = m1
            maps[prefix + "q"] = q.reshape(b, self.maps, h, w)
        return y.reshape(b, c, h, w)


#: Mix the descriptors into the pixels (Eq. 9) with oneDNN on the CPU; off: ``torch.bmm``.
ONEDNN_MIX = True


def _onednn_mix(x: Tensor) -> bool:
    """Whether Eq. 9's mixing runs as a oneDNN 1x1 convolution: channels-last CPU inference (no
    autograd, not while exporting to ONNX) of a single image or patch, on a build with oneDNN,
    and :data:`ONEDNN_MIX` set.

    One image only: each image has its own descriptors, so a batch would be one convolution per
    image and a ``cat`` of the results, an extra pass over the output that cost more than the
    convolution saved (session 9, Intel: 4.8-5.0 ms against ``bmm``'s 2.2 ms for 2 or 4 patches
    of 128 channels; the whole ``saphn`` 9.46 -> 9.14 s with levels 2 and 3 on ``bmm``).
    """
    return (
        ONEDNN_MIX
        and cpu_inference(x)
        and x.is_contiguous(memory_format=torch.channels_last)
        and torch.backends.mkldnn.is_available()
        and x.shape[0] == 1
    )


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
