"""Plans are pure data: validated, counted and turned into configs that transformers accepts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import Gemma3nConfig
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nForConditionalGeneration

from gemma3n.config import e4b_config
from gemma3n.errors import UserError
from gemma3n.shapes import checkpoint_shapes
from slicer.plan import SliceSpec, count_params, make_plan
from slicer.presets import OUR_PRESETS, get_preset, parse_int_list
from slicer.report import presets_table

REPRODUCED = {"E4B", "E2B", "E1.96B-layer", "E3.18B-layer"}


def test_csv_expressions_parse_without_eval():
    assert parse_int_list("[2_048 * 4, 2_048 * 8]", "x") == (8192, 16384)
    assert parse_int_list("20, 21,22", "x") == (20, 21, 22)
    for bad in ("__import__('os')", "2048.5", "2_048 ** 4", "1e3", "-5"):
        with pytest.raises(UserError, match="not a whole number"):
            parse_int_list(bad, "--ffn-dims")


def test_official_presets_reproduce_published_counts():
    rows = {row["name"]: row for row in presets_table() if row["official"]}
    assert len(rows) == 16
    for name, row in rows.items():
        if name in REPRODUCED:
            assert row["reproduced"] and round(row["effective_params"] / 1e9, 2) == row["published_effective_params_b"]
        else:  # every other row is explained, and off by more than rounding
            assert not row["reproduced"] and "computed" in row["note"]
            assert abs(row["effective_params"] / 1e9 - row["published_effective_params_b"]) > 0.005
    assert rows["E4B"]["effective_params"] == 3_980_491_248
    assert rows["E2B"]["effective_params_transformers"] == 1_884_521_568


def test_our_presets_are_sub_billion_and_named_by_their_count():
    for preset in OUR_PRESETS:
        params = make_plan(e4b_config(), preset.spec()).summary()["params"]
        assert params["effective_published"] < 1e9
        assert preset.name.startswith(f"E{params['effective_published'] / 1e9:.2f}B")


@pytest.mark.parametrize("name", ["E2B", "E0.55B", "E0.93B"])
def test_full_size_child_config_instantiates_with_the_planned_shapes(name):
    plan = make_plan(e4b_config(), get_preset(name).spec())
    with torch.device("meta"):
        model = Gemma3nForConditionalGeneration(Gemma3nConfig(**plan.child.to_json()))
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()
             if not k.startswith("model.vision_tower.") and k != "lm_head.weight"}
    assert state == checkpoint_shapes(plan.child)
    vision = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("model.vision_tower."))
    text = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("model.language_model."))
    counted = count_params(plan.child)
    assert counted["text"] == text and counted["vision"] == vision


def test_e2b_kv_sharing_rederived():
    plan = make_plan(e4b_config(), get_preset("E2B").spec())
    text = plan.child.to_json()["text_config"]
    assert text["num_kv_shared_layers"] == 10 and text["num_hidden_layers"] == 30
    assert text["layer_types"][19] == "full_attention" and text["layer_types"][18] == "sliding_attention"
    assert all(isinstance(s, float) for s in text["activation_sparsity_pattern"])


@pytest.mark.parametrize("spec,message", [
    (SliceSpec(layers_to_skip=(18,)), "layer 18 stores the KV cache"),
    (SliceSpec(layers_to_skip=(35,)), "indices 0..34"),
    (SliceSpec(layers_to_skip=(3, 3)), "twice"),
    (SliceSpec(ffn_dims=(20000,)), "wider than parent layer 0"),
    (SliceSpec(ffn_dims=(8192, 8192)), "2 widths for 35 kept layers"),
    (SliceSpec(ffn_dims=(0,)), "whole numbers above 0"),
    (SliceSpec(audio_layers_to_skip=tuple(range(12))), "keep at least one"),
    (SliceSpec(audio_ffn_dim=7000), "outside 1..6144"),
    (SliceSpec(modalities=("text", "audio")), "no Gemma 3n class without a vision tower"),
    (SliceSpec(modalities=("audio",)), "must include text"),
    (SliceSpec(modalities=("text", "smell")), "unknown modality"),
])
def test_invalid_slices_are_refused(spec, message):
    with pytest.raises(UserError, match=message):
        make_plan(e4b_config(), spec)


def test_store_layer_may_go_with_all_its_readers():
    plan = make_plan(e4b_config(), SliceSpec(layers_to_skip=tuple(range(18, 35))))
    assert plan.child.text.num_kv_shared_layers == 0


def test_plan_command_imports_no_torch():
    code = ("import sys; from matslice.cli import main; main(['plan', '--preset', 'E2B', '--json']); "
            "heavy = [m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'gradio') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"kept_layers"' in done.stdout


def test_slice_spec_json_round_trips_and_ignores_other_keys() -> None:
    spec = SliceSpec(layers_to_skip=(3, 4), ffn_dims=(256,), audio_layers_to_skip=(1,), audio_ffn_dim=96,
                     modalities=("text",), vocab_corpus=("a.txt",), vocab_size=4096, vocab_keep_unused=False)
    data = spec.to_json()
    assert data["layers_to_skip"] == [3, 4] and "preset" not in data
    assert json.loads(json.dumps(data)) == data
    assert SliceSpec.from_json({"name": "s1", "bytes": 9, **data}) == spec
    assert SliceSpec.from_json(SliceSpec(preset="E2B").to_json()) == SliceSpec(preset="E2B")
