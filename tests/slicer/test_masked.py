"""A masked slice computes what the written slice computes: the parent loaded once, `select(plan)`, and the
logits equal those of `slice_checkpoint(plan)` loaded in stock transformers. The written child is the
reference because it is what ships: it drops the skipped layers' per-layer inputs and re-derives the KV
sharing, which the masked parent must match without doing either."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3nForConditionalGeneration

from gemma3n.config import load_config
from slicer.checkpoint import slice_checkpoint
from slicer.masked import masked_slices
from slicer.plan import SliceSpec, make_plan

# The 8-layer tiny model: sliding store 3 read by 5-7, full store 4; layers 0 and 1 activation-sparse.
SPECS = {
    "own-and-reuse": SliceSpec(layers_to_skip=(1, 6), ffn_dims=(96, 64, 64, 32, 64, 48)),
    "store-and-readers": SliceSpec(layers_to_skip=(3, 5, 6, 7), ffn_dims=(64, 32, 48, 96)),
    "sparse-layer-narrowed": SliceSpec(layers_to_skip=(0, 7), ffn_dims=(32, 48, 96, 64, 32, 64)),
    "widths-only": SliceSpec(ffn_dims=(64,)),
}
IDS = torch.tensor([[2, 17, 45, 99, 3, 150, 200, 31, 77, 8, 250, 12, 64, 5, 140, 33]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, use_cache=False).logits[0]


@pytest.mark.parametrize("text_only_child", [False, True], ids=["multimodal-child", "text-child"])
def test_masked_logits_equal_the_written_slice(tiny_multimodal: Path, tmp_path: Path, text_only_child: bool) -> None:
    parent = Gemma3nForConditionalGeneration.from_pretrained(tiny_multimodal, dtype=torch.float32).eval()
    config = load_config(tiny_multimodal)
    full = _logits(parent)
    with masked_slices(parent) as select:
        for name, spec in SPECS.items():
            if text_only_child:
                spec = SliceSpec(spec.layers_to_skip, spec.ffn_dims, modalities=("text",))
            plan = make_plan(config, spec)
            out = slice_checkpoint(tiny_multimodal, tmp_path / name, plan, progress=False)
            cls = AutoModelForCausalLM if text_only_child else Gemma3nForConditionalGeneration
            child = _logits(cls.from_pretrained(out, dtype=torch.float32).eval())
            select(plan)
            masked = _logits(parent)
            assert torch.allclose(masked, child, atol=1e-4, rtol=0), (name, (masked - child).abs().max())
            assert not torch.allclose(masked, full, atol=1e-3), name  # the slice does change the output
        select(None)
        assert torch.equal(_logits(parent), full)
    assert torch.equal(_logits(parent), full)  # unpatched: the stock parent again
    assert "forward" not in vars(parent.model.language_model.layers[0])


def test_a_text_only_parent_too(tiny_text: Path, tmp_path: Path) -> None:
    parent = AutoModelForCausalLM.from_pretrained(tiny_text, dtype=torch.float32).eval()
    plan = make_plan(load_config(tiny_text), SPECS["store-and-readers"])
    child = AutoModelForCausalLM.from_pretrained(slice_checkpoint(tiny_text, tmp_path / "c", plan, progress=False),
                                                 dtype=torch.float32).eval()
    with masked_slices(parent) as select:
        select(plan)
        assert torch.allclose(_logits(parent), _logits(child), atol=1e-4, rtol=0)


def test_what_masking_cannot_compute_is_refused(tiny_multimodal: Path) -> None:
    parent = Gemma3nForConditionalGeneration.from_pretrained(tiny_multimodal, dtype=torch.float32).eval()
    config = load_config(tiny_multimodal)
    with masked_slices(parent) as select, pytest.raises(ValueError, match="audio"):
        select(make_plan(config, SliceSpec(audio_layers_to_skip=(1,))))
