"""The tensor table must equal what transformers instantiates, tensor for tensor."""

import copy

import pytest
import torch
from transformers import Gemma3nConfig, Gemma3nTextConfig
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nForCausalLM, Gemma3nForConditionalGeneration

from gemma3n.config import e4b_config, e4b_json, parse_config
from gemma3n.shapes import VISION_PARAMS, checkpoint_shapes, numel, stock_vision_shapes


def _meta_state(model_cls, config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = model_cls(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items() if name != "lm_head.weight"}


def test_e4b_multimodal_matches_transformers():
    config = e4b_config()
    state = _meta_state(Gemma3nForConditionalGeneration, Gemma3nConfig(**config.to_json()))
    vision = {k: v for k, v in state.items() if k.startswith("model.vision_tower.")}
    rest = {k: v for k, v in state.items() if k not in vision}
    assert checkpoint_shapes(config) == rest
    assert vision == stock_vision_shapes("mobilenetv5_300m_enc")  # the measured table (gemma3n/data)
    assert sum(numel(s) for s in vision.values()) == VISION_PARAMS["mobilenetv5_300m_enc"] == 294_126_912


@pytest.mark.parametrize("layers,shared", [(30, 10), (12, 3), (20, 0)])
def test_text_only_matches_transformers(layers, shared):
    text = copy.deepcopy(e4b_json()["text_config"])
    text.update(num_hidden_layers=layers, num_kv_shared_layers=shared, vocab_size=1024,
                vocab_size_per_layer_input=512, intermediate_size=[64 * (1 + i % 3) for i in range(layers)],
                layer_types=None, activation_sparsity_pattern=None)
    cfg = Gemma3nTextConfig(**{k: v for k, v in text.items() if v is not None})
    config = parse_config({**cfg.to_dict(), "model_type": "gemma3n_text"}, "test")
    assert checkpoint_shapes(config) == _meta_state(Gemma3nForCausalLM, cfg)
