"""Audio FFN units a slice zeroed are physically absent from the exported audio encoder, which still
computes what the sliced checkpoint computes in stock transformers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from helpers import assert_plan_exact
from transformers import Gemma3nForConditionalGeneration

from gemma3n.config import load_config
from slicer.checkpoint import slice_checkpoint
from slicer.plan import SliceSpec, make_plan
from web_export.checkpoint import load_parts
from web_export.encoders import AudioEncoderSession
from web_export.export import export_onnx

LIVE = 40


def test_audio_encoder_drops_zeroed_units(tiny_multimodal, tmp_path):
    plan = make_plan(load_config(tiny_multimodal), SliceSpec(audio_ffn_dim=LIVE))
    child = slice_checkpoint(tiny_multimodal, tmp_path / "child", plan, progress=False)
    export_onnx(child, tmp_path / "bundle", modalities={"audio"})
    path = tmp_path / "bundle" / "onnx" / "audio_encoder.onnx"
    shapes = [tuple(t.dims) for t in onnx.load(path).graph.initializer]
    hidden = 32
    assert shapes.count((LIVE, hidden)) + shapes.count((hidden, LIVE)) >= 4  # per block: 2 modules x (W1, W2)
    assert (4 * hidden, hidden) not in shapes and (hidden, 4 * hidden) not in shapes
    assert load_parts(child).model.model.audio_tower.conformer[0].ffw_layer_start.ffw_layer_1.out_features == LIVE
    # `matslice plan` counts the narrowed weights exactly (fp32, as export_onnx writes them: no tensor limit)
    assert_plan_exact(tmp_path / "bundle" / "onnx", child, ("fp32",), ("embed_tokens", "decoder_model_merged",
                                                                       "audio_encoder"), max_tensor_bytes=None)

    features = torch.randn(1, 100, 128, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 100, dtype=torch.bool)
    mask[:, 80:] = False
    stock = Gemma3nForConditionalGeneration.from_pretrained(child, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = AudioEncoderSession(_parts_of(stock))(features, mask).numpy()
    got = ort.InferenceSession(str(path)).run(None, {"input_features": features.numpy(),
                                                     "input_features_mask": mask.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-5


def _parts_of(model):
    from web_export.checkpoint import split_parts

    return split_parts(model)
