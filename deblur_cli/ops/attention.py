"""The last step of the efficient attention (Eq. 8-9, the sum form of Eq. 10): every pixel mixes
the ``C2`` channel-gated descriptors with its selection weights ``P``.

:func:`mix` is what the model calls; :func:`mix_reference` is the plain batched product it
must equal (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deblur_cli.ops.cpu import cpu_inference, onednn_available, onednn_products_setting


def onednn_mix(x: Tensor, forced: bool | None = None) -> bool:
    """Whether Eq. 9's mixing for the decision features ``x`` ``(B, C, H, W)`` runs as a oneDNN
    1x1 convolution: channels-last CPU inference (no autograd, not while exporting to ONNX) of a
    single image or patch, on a build with oneDNN, unless ``forced`` is ``False``.

    One image only: each image has its own descriptors, so a batch would be one convolution per
    image and a ``cat`` of the results, an extra pass over the output that cost more than the
    convolution saved (Intel: 4.8-5.0 ms against ``bmm``'s 2.2 ms for 2 or 4 patches of 128
    channels; the whole ``saphn`` 9.46 -> 9.14 s with levels 2 and 3 on ``bmm``). Unlike the
    filtering module's product the rule does not read the vendor: for one 320x180 image of 128
    channels, C2 = 16, the convolution took 0.8 ms against ``bmm``'s 3.8 ms on an AMD EPYC, and
    2.4 against 2.2 ms on an Intel Xeon.

    Args:
        x: the attention's decision features.
        forced: ``False`` keeps ``torch.bmm``; ``True`` or ``None`` apply the rule
            (:func:`~deblur_cli.ops.cpu.onednn_products` sets it for a block).
    """
    return (
        forced is not False
        and cpu_inference(x)
        and x.is_contiguous(memory_format=torch.channels_last)
        and onednn_available()
        and x.shape[0] == 1
    )


def mix(p: Tensor, desc: Tensor, x: Tensor) -> Tensor:
    """``y[:, :, j] = desc @ p[:, :, j]`` for every pixel ``j``, by the fastest form for ``x``.

    Args:
        p: ``(B, C2, H*W)`` selection weights ``P`` (Eq. 8).
        desc: ``(B, C, C2)`` channel-gated descriptors (Eq. 6).
        x: ``(B, C, H, W)`` decision features: their shape, device and memory layout choose the
            form, and the result has their layout.

    Returns:
        ``(B, C, H, W)``, channels-last when ``x`` is, like the filtering branch it is fused
        with (Eq. 13), so the fusion and the convolutions after it never mix memory layouts.
    """
    b, c, h, w = x.shape
    if onednn_mix(x, onednn_products_setting()):
        # CPU inference of one image: the same product as a 1x1 convolution of the maps P by the
        # descriptors, through oneDNN (on an AMD EPYC, 0.8 ms against bmm's 3.8 ms for 128
        # channels, C2 = 16, 320x180); channels-last output.
        p_img = p.reshape(1, p.shape[1], h, w).contiguous(memory_format=torch.channels_last)
        y = F.conv2d(p_img, desc[0, :, :, None, None])
    elif x.is_contiguous(memory_format=torch.channels_last):
        # Pixel-major product, (B, HW, C2) @ (B, C2, C): the result has the strides of NHWC.
        # Same values as the reference.
        y = torch.bmm(p.transpose(1, 2), desc.transpose(1, 2)).transpose(1, 2)  # (B, C, HW)
    else:
        y = mix_reference(p, desc)
    return y.reshape(b, c, h, w)


def mix_reference(p: Tensor, desc: Tensor) -> Tensor:
    """The plain product ``desc @ p``: ``(B, C, C2) x (B, C2, HW) -> (B, C, HW)``."""
    return torch.bmm(desc, p)
