"""Every tensor of a Gemma 3n checkpoint, by name and shape, computed from its config alone.

This one table serves parameter counts, predicted checkpoint bytes, the completeness check of a
parent's shards and the synthetic full-size checkpoints of the benchmarks. It mirrors what
transformers >= 5 instantiates (tests compare it with a model built on the meta device), so KV-shared
layers have no k/v projections here. The vision tower is a timm network whose tensors we do not
re-derive: they come from the checkpoint's own safetensors headers, or, for a stock tower (no `model_args`), from
the table measured once from timm (gemma3n/data/vision-towers.json, which records the command).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from gemma3n.config import AudioConfig, ModelConfig, TextConfig

Shapes = dict[str, tuple[int, ...]]


@cache
def _vision_towers() -> dict[str, Shapes]:
    towers = json.loads(resources.files("gemma3n.data").joinpath("vision-towers.json").read_text())["towers"]
    return {arch: {name: tuple(shape) for name, shape in tensors.items()} for arch, tensors in towers.items()}


def stock_vision_shapes(architecture: str) -> Shapes | None:
    """The tensors of a stock timm vision tower as Gemma 3n stores them (`model.vision_tower.`...), or None."""
    tower = _vision_towers().get(architecture)
    return None if tower is None else dict(tower)


def text_shapes(text: TextConfig, prefix: str) -> Shapes:
    """Tensors of the text decoder."""
    hidden, layers = text.hidden_size, text.num_hidden_layers
    per_layer, head_dim = text.hidden_size_per_layer_input, text.head_dim
    q_out, kv_out = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim
    altup, rank = text.altup_num_inputs, text.laurel_rank
    shapes: Shapes = {
        "embed_tokens.weight": (text.vocab_size, hidden),
        "embed_tokens_per_layer.weight": (text.vocab_size_per_layer_input, layers * per_layer),
        "per_layer_model_projection.weight": (layers * per_layer, hidden),
        "per_layer_projection_norm.weight": (per_layer,),
        "norm.weight": (hidden,),
    }
    for i in range(1, altup):
        shapes[f"altup_projections.{i - 1}.weight"] = (hidden, hidden)
        shapes[f"altup_unembed_projections.{i - 1}.weight"] = (hidden, hidden)
    for i, (width, role) in enumerate(zip(text.intermediate_size, text.kv_roles, strict=True)):
        layer = {
            "self_attn.q_proj.weight": (q_out, hidden),
            "self_attn.q_norm.weight": (head_dim,),
            "self_attn.o_proj.weight": (hidden, q_out),
            "mlp.gate_proj.weight": (width, hidden),
            "mlp.up_proj.weight": (width, hidden),
            "mlp.down_proj.weight": (hidden, width),
            "altup.correct_output_scale": (hidden,),
            "altup.correction_coefs.weight": (altup, altup),
            "altup.prediction_coefs.weight": (altup * altup, altup),
            "altup.modality_router.weight": (altup, hidden),
            "altup.router_norm.weight": (hidden,),
            "laurel.linear_left.weight": (rank, hidden),
            "laurel.linear_right.weight": (hidden, rank),
            "laurel.post_laurel_norm.weight": (hidden,),
            "per_layer_input_gate.weight": (per_layer, hidden),
            "per_layer_projection.weight": (hidden, per_layer),
            "post_per_layer_input_norm.weight": (hidden,),
        }
        for norm in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
            layer[f"{norm}_layernorm.weight"] = (hidden,)
        if role != "reuse":
            layer |= {
                "self_attn.k_proj.weight": (kv_out, hidden),
                "self_attn.v_proj.weight": (kv_out, hidden),
                "self_attn.k_norm.weight": (head_dim,),
            }
        shapes |= {f"layers.{i}.{name}": shape for name, shape in layer.items()}
    return {prefix + name: shape for name, shape in shapes.items()}


def shared_kv_params(text: TextConfig) -> int:
    """k/v projections and k_norm that Google's published counts still give each KV-shared layer."""
    return text.num_kv_shared_layers * (2 * text.num_key_value_heads * text.head_dim * text.hidden_size + text.head_dim)


def audio_freq_out(audio: AudioConfig) -> int:
    """Frequency bins left after the two sub-sampling convolutions (each padded 1 left, 1 right)."""
    freq = audio.input_feat_size
    for (_, kernel_w), (_, stride_w) in zip(audio.sscp_conv_kernel_size, audio.sscp_conv_stride_size, strict=True):
        freq = (freq + 2 - kernel_w) // stride_w + 1
    return freq


def audio_shapes(audio: AudioConfig, prefix: str = "model.audio_tower.") -> Shapes:
    """Tensors of the conformer audio encoder. Its feed-forward width 4H is fixed by transformers."""
    hidden, blocks = audio.hidden_size, audio.conf_num_hidden_layers
    (c0, c1), kernels = audio.sscp_conv_channel_size, audio.sscp_conv_kernel_size
    shapes: Shapes = {
        "subsample_conv_projection.conv_0.conv.weight": (c0, 1, *kernels[0]),
        "subsample_conv_projection.conv_0.norm.weight": (c0,),
        "subsample_conv_projection.conv_1.conv.weight": (c1, c0, *kernels[1]),
        "subsample_conv_projection.conv_1.norm.weight": (c1,),
        "subsample_conv_projection.input_proj_linear.weight": (hidden, c1 * audio_freq_out(audio)),
    }
    for j in range(blocks):
        block: Shapes = {
            "attention.pre_attn_norm.weight": (hidden,),
            "attention.attn.per_dim_scale": (hidden // audio.conf_num_attention_heads,),
            "attention.attn.relative_position_embedding.pos_proj.weight": (hidden, hidden),
            "attention.attn.q_proj.weight": (hidden, hidden),
            "attention.attn.k_proj.weight": (hidden, hidden),
            "attention.attn.v_proj.weight": (hidden, hidden),
            "attention.post.weight": (hidden, hidden),
            "attention.post_norm.weight": (hidden,),
            "lconv1d.pre_layer_norm.weight": (hidden,),
            "lconv1d.linear_start.weight": (2 * hidden, hidden),
            "lconv1d.depthwise_conv1d.weight": (hidden, 1, audio.conf_conv_kernel_size),
            "lconv1d.conv_norm.weight": (hidden,),
            "lconv1d.linear_end.weight": (hidden, hidden),
            "norm.weight": (hidden,),
        }
        for ffw in ("ffw_layer_start", "ffw_layer_end"):
            block |= {
                f"{ffw}.pre_layer_norm.weight": (hidden,),
                f"{ffw}.ffw_layer_1.weight": (4 * hidden, hidden),
                f"{ffw}.ffw_layer_2.weight": (hidden, 4 * hidden),
                f"{ffw}.post_layer_norm.weight": (hidden,),
            }
        shapes |= {f"conformer.{j}.{name}": shape for name, shape in block.items()}
    return {prefix + name: shape for name, shape in shapes.items()}


def embedder_shapes(hidden: int, vocab_size: int, text_hidden: int, prefix: str) -> Shapes:
    """A Gemma3nMultimodalEmbedder: the tower's soft tokens into the text model's hidden size."""
    return {
        prefix + "embedding.weight": (vocab_size, hidden),
        prefix + "hard_embedding_norm.weight": (hidden,),
        prefix + "soft_embedding_norm.weight": (hidden,),
        prefix + "embedding_projection.weight": (text_hidden, hidden),
    }


def checkpoint_shapes(config: ModelConfig) -> Shapes:
    """All tensors the config implies except the vision tower's (see module docstring)."""
    shapes = text_shapes(config.text, config.text_prefix)
    if config.multimodal:
        audio, vision, hidden = config.audio, config.vision, config.text.hidden_size
        shapes |= audio_shapes(audio)
        shapes |= embedder_shapes(audio.hidden_size, audio.vocab_size, hidden, "model.embed_audio.")
        shapes |= embedder_shapes(vision.hidden_size, vision.vocab_size, hidden, "model.embed_vision.")
    return shapes


def numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# timm `mobilenetv5_300m_enc` as Gemma 3n builds it (no model_args): 294,126,912 parameters.
VISION_PARAMS = {arch: sum(numel(shape) for shape in tower.values()) for arch, tower in _vision_towers().items()}
