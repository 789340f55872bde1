"""Reading a Gemma 3n config.json as plain data, with no torch and no transformers import.

A checkpoint is either multimodal (`model_type: gemma3n`, text under `text_config`) or text-only
(`model_type: gemma3n_text`). Everything downstream works on the text decoder's numbers, so this
module's job is to find them, fill what a hand-written config may omit from the E4B defaults that
transformers uses, and answer the one structural question the slicer keeps asking: which layers own
a KV cache, which store it for others, and which reuse it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from slicer.errors import SliceError

KvRole = Literal["own", "store", "reuse"]

MULTIMODAL = "gemma3n"
TEXT_ONLY = "gemma3n_text"


@cache
def _builtin(name: str) -> dict[str, Any]:
    return json.loads(resources.files("slicer.data").joinpath(name).read_text())


def e4b_config() -> dict[str, Any]:
    """The full-size Gemma 3n E4B config (transformers' defaults), for `plan` with no model at hand."""
    return json.loads(json.dumps(_builtin("gemma3n-e4b-config.json")))


def load_config(model: Path) -> dict[str, Any]:
    """Read `model/config.json` (or a config file itself) and check that it is Gemma 3n."""
    path = model / "config.json" if model.is_dir() else model
    if not path.is_file():
        raise SliceError(f"{model} has no config.json: pass a Gemma 3n checkpoint folder (or its config.json)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SliceError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): restore the file") from None
    model_type = config.get("model_type")
    if model_type not in (MULTIMODAL, TEXT_ONLY):
        raise SliceError(
            f"{path} has model_type {model_type!r}, not a Gemma 3n model: "
            f"MatSlice slices 'gemma3n' and 'gemma3n_text' checkpoints only"
        )
    return config


def is_multimodal(config: dict[str, Any]) -> bool:
    return config.get("model_type") == MULTIMODAL


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The text decoder's config with every field the slicer reads present and list-valued."""
    raw = config.get("text_config", {}) if is_multimodal(config) else config
    text = {**_builtin("gemma3n-e4b-config.json")["text_config"], **raw}
    layers = int(text["num_hidden_layers"])
    if "layer_types" not in raw:
        text["layer_types"] = [
            "full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(layers)
        ]
    if "activation_sparsity_pattern" not in raw or raw["activation_sparsity_pattern"] is None:
        sparse = 10 if layers > 10 else 0
        text["activation_sparsity_pattern"] = [0.95] * sparse + [0.0] * (layers - sparse)
    if "intermediate_size" not in raw:
        text["intermediate_size"] = 16_384
    if isinstance(text["intermediate_size"], int):
        text["intermediate_size"] = [text["intermediate_size"]] * layers
    if isinstance(text["activation_sparsity_pattern"], int | float):
        text["activation_sparsity_pattern"] = [float(text["activation_sparsity_pattern"])] * layers
    for key in ("intermediate_size", "layer_types", "activation_sparsity_pattern"):
        if len(text[key]) != layers:
            raise SliceError(
                f"config {key} has {len(text[key])} entries for {layers} layers: fix the parent's config.json"
            )
    return text


def audio_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """The audio encoder's config (defaults filled), or None for a text-only checkpoint."""
    if not is_multimodal(config):
        return None
    return {**_builtin("gemma3n-e4b-config.json")["audio_config"], **config.get("audio_config", {})}


def kv_roles(layer_types: list[str], num_kv_shared_layers: int) -> list[KvRole]:
    """Each layer's part in KV sharing, as transformers >= 5 assigns it.

    Layers at or after `first_shared = L - num_kv_shared_layers` reuse the KV cache of the last
    earlier layer of their own attention type (the "store" layer); all other layers own theirs.
    """
    count = len(layer_types)
    first_shared = count - num_kv_shared_layers
    roles: list[KvRole] = ["own" if i < first_shared else "reuse" for i in range(count)]
    if num_kv_shared_layers == 0:
        return roles
    for kind in sorted(set(layer_types[first_shared:]) - set(layer_types[:first_shared])):
        raise SliceError(
            f"no layer before the KV-shared ones is {kind}, so shared {kind} layers have no cache "
            f"to reuse: keep at least one {kind} layer before layer {first_shared}"
        )
    for kind in set(layer_types[:first_shared]):  # transformers marks every type's last owner
        roles[max(i for i in range(first_shared) if layer_types[i] == kind)] = "store"
    return roles


def store_of(layer: int, layer_types: list[str], num_kv_shared_layers: int) -> int | None:
    """The index of the layer whose KV cache `layer` reads, or None if it owns one."""
    first_shared = len(layer_types) - num_kv_shared_layers
    if layer < first_shared:
        return None
    return max(i for i in range(first_shared) if layer_types[i] == layer_types[layer])
