"""Every variant exports to ONNX with dynamic H and W and matches torch."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from deblur_cli.models import create_model, list_variants, randomize_zero_layers

ort = pytest.importorskip("onnxruntime")

TINY = dict(widths=(4, 8, 8), blocks=1, attn_maps=2, kernel_size=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(list_variants()))
def test_variant_exports_with_dynamic_size_and_matches_torch(name):
    model = randomize_zero_layers(create_model(name, **TINY), std=0.1)
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.rand(1, 3, 48, 64),),
        buf,
        dynamo=False,
        opset_version=18,
        input_names=["blurred"],
        output_names=["deblurred"],
        dynamic_axes={"blurred": {0: "batch", 2: "height", 3: "width"}, "deblurred": {0: "batch", 2: "height", 3: "width"}},
    )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 37, 53), (2, 3, 64, 40)]:  # sizes other than the export size, odd too
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"blurred": x.numpy()})[0]
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-3
