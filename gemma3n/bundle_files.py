"""A bundle's files besides its ONNX sessions: the side files copied from the checkpoint, and config.json.

Why here, as pure data: `matslice export` writes these files and `matslice plan` predicts what a page downloads,
which includes them (tokenizer.json alone is 33 MB at Gemma's full vocabulary), so both use these functions.

transformers.js cannot load a text-only checkpoint (`gemma3n_text`, `Gemma3nForCausalLM`) as it is: that model type
is in none of its model mappings, and only a `...ForConditionalGeneration` architecture gets the embed_tokens +
decoder_model_merged pair. So a text-only config is wrapped as a `gemma3n` config with `text_config`. The
`transformers.js_config` entry tells the runtime each session's default dtype and how many external data chunks
each .onnx file has (nothing probes for them: an undeclared chunk is never fetched).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gemma3n.config import MULTIMODAL_CLASS

REQUIRED_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_FILES = (
    "generation_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "processor_config.json",
    "special_tokens_map.json",
)


def runtime_config(source: dict[str, Any]) -> dict[str, Any]:
    """A multimodal config unchanged; a text-only one wrapped as `gemma3n` with `text_config` (module doc)."""
    if source.get("model_type") == "gemma3n":
        return dict(source)
    if source.get("model_type") != "gemma3n_text":
        raise ValueError(f"not a Gemma 3n config: model_type={source.get('model_type')!r}")
    top = {key: source[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id", "matslice") if key in source}
    return {
        "architectures": [MULTIMODAL_CLASS],
        "model_type": "gemma3n",
        **top,
        "text_config": dict(source),
        "transformers_version": source.get("transformers_version"),
    }


def bundle_config(source: dict[str, Any], sessions: Mapping[str, Mapping[str, Mapping[str, Any]]],
                  dtypes: tuple[str, ...]) -> dict[str, Any]:
    """The checkpoint's config as transformers.js reads it, plus `transformers.js_config`. `sessions`:
    {session: {dtype: {"file": "onnx/<name>.onnx", "external_data_chunks": n}}}."""
    config = runtime_config(source)
    config["transformers.js_config"] = {
        "dtype": {name: dtypes[0] for name in sessions},
        "use_external_data_format": {
            record["file"].rsplit("/", 1)[-1]: record["external_data_chunks"]
            for variants in sessions.values()
            for record in variants.values()
            if record["external_data_chunks"]
        },
    }
    return config


def json_text(data: dict[str, Any]) -> str:
    """A bundle's JSON files as written: indent 2, insertion order, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
