"""Writing a stand-in Gemma 3n as a Hugging Face folder: weights, tokenizer, processor and chat template.

The tiny random model (`standins.tiny`) and the trained nano model (`standins.nano`) differ in their
decoders and tokenizers, and share everything else a real Gemma 3n folder holds: the multimodal token
names the processor reads, the chat template, greedy generation settings, the tiny-shaped audio and
vision towers' processor, and the flat preprocessor_config.json transformers.js reads. They are here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Gemma3nAudioFeatureExtractor,
    Gemma3nConfig,
    Gemma3nForCausalLM,
    Gemma3nForConditionalGeneration,
    Gemma3nProcessor,
    Gemma3nTextConfig,
    GemmaTokenizer,
    GenerationConfig,
)

from gemma3n.folders import atomic_folder

# --- Multimodal sequence lengths -------------------------------------------------------------------------
# MobileNetV5's multi-scale fusion adapter always emits 2048 channels x 16 x 16, whatever the input size and
# channel multiplier, so an image is 256 soft tokens and the vision hidden size stays 2048.
VISION_SOFT_TOKENS = 256
VISION_HIDDEN_SIZE = 2048
# 512 px: the stride-16 feature map is 32 x 32 and gets average-pooled to 16 x 16, the same path as the real
# 768 px input (48 x 48 pooled by 3), at under half the cost.
IMAGE_SIZE = 512
# The processor inserts this many audio tokens per clip and the model pads the encoder output up to it.
# The encoder emits one token per 16 mel frames (160-sample hop), so 8 tokens hold clips up to about 1.3 s;
# a longer clip fails in Gemma3nModel (negative padding). The real model uses 188 for 30 s.
AUDIO_SOFT_TOKENS = 8

# Attribute names Gemma3nProcessor (Python and transformers.js) reads from the tokenizer / tokenizer_config.
MULTIMODAL_TOKENS: dict[str, str] = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
    "boa_token": "<start_of_audio>",
    "eoa_token": "<end_of_audio>",
    "audio_token": "<audio_soft_token>",
}

# Gemma 3n's chat template: a user turn renders as "<start_of_turn>user\n...<end_of_turn>\n" and the
# generation prompt is "<start_of_turn>model\n"; image/audio items become the placeholder soft tokens.
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'audio' -%}
                {{ '<audio_soft_token>' }}
            {%- elif item['type'] == 'image' -%}
                {{ '<image_soft_token>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""


def gemma_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> GemmaTokenizer:
    """GemmaTokenizer over a stand-in vocabulary, configured as Gemma's own: <bos> added, the chat turn markers and
    the multimodal tokens special, and no clean-up of spaces on decode (transformers.js would otherwise default it
    to on and decode `a != b` as `a!= b`, unlike Python).

    Built through GemmaTokenizer (on the ``tokenizers`` library) rather than a hand-made pipeline because
    transformers 5 rebuilds GemmaTokenizer's normalizer, pre-tokenizer and decoder from the class on load and
    keeps only vocab and merges from tokenizer.json; saving what the class builds keeps tokenizer.json (what
    transformers.js runs) and the Python tokenizer identical.
    """
    return GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        extra_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        **MULTIMODAL_TOKENS,
    )


def timm_problem() -> str | None:
    """Why the vision tower cannot be built here, or None: timm, and torchvision under it, must import."""
    try:
        import timm  # noqa: F401
    except Exception as error:  # torchvision built for another torch fails with RuntimeError, not ImportError
        return f"{type(error).__name__}: {error}"
    return None


def random_model(config: dict[str, Any], seed: int) -> torch.nn.Module:
    """Build the model with the model's own initialisation under ``seed``, without touching the caller's RNG.

    Using the model's _init_weights (normal std 0.02 for linears/embeddings, ones for norms, timm's init for
    the vision tower) keeps activations in a realistic range; random norms would make logits meaningless.
    """
    text_only = config["model_type"] == "gemma3n_text"
    config_cls = Gemma3nTextConfig if text_only else Gemma3nConfig
    model_cls = Gemma3nForCausalLM if text_only else Gemma3nForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config_cls.from_dict(config))
    return model.to(torch.float32).eval()


def generation_config(bos: int, eos: list[int], pad: int) -> GenerationConfig:
    """Greedy by default, so Python, ONNX and transformers.js runs compare token by token; stops on any of
    `eos` (``<eos>`` and ``<end_of_turn>``, as Gemma's instruction-tuned generation config does)."""
    return GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False)


def processor(tokenizer: GemmaTokenizer) -> Gemma3nProcessor:
    """Gemma3nProcessor with the stock audio feature extractor and a 512 px SigLIP image processor.

    Image settings follow Gemma 3n's (rescale to [0, 1], no normalisation, bilinear resize), only smaller.
    Imported here because SiglipImageProcessor needs torchvision, which the text-only fallback may lack.
    """
    from transformers import SiglipImageProcessor

    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_normalize=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=2,
    )
    return Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        audio_seq_length=AUDIO_SOFT_TOKENS,
        image_seq_length=VISION_SOFT_TOKENS,
    )


def _write_preprocessor_config(out: Path) -> None:
    """Write the flat preprocessor_config.json transformers.js reads.

    transformers 5 saves the feature extractor and image processor nested inside processor_config.json only;
    transformers.js' AutoProcessor/AutoImageProcessor/AutoFeatureExtractor read preprocessor_config.json and
    pick classes from its image_processor_type, feature_extractor_type and processor_class, as in Google's
    published Gemma 3n folders.
    """
    nested = json.loads((out / "processor_config.json").read_text())
    flat = {
        **nested["feature_extractor"],
        **nested["image_processor"],
        "processor_class": nested["processor_class"],
    }
    (out / "preprocessor_config.json").write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")


def write_folder(out: Path, model: torch.nn.Module, tokenizer: GemmaTokenizer, *, text_only: bool,
                 card: str | None = None, overwrite: bool = True) -> Path:
    """Save `model` with its tokenizer (and, multimodal, its processor) as a folder at `out`, atomically."""
    with atomic_folder(Path(out), overwrite=overwrite) as work:
        model.save_pretrained(work)
        if text_only:
            tokenizer.chat_template = CHAT_TEMPLATE
            tokenizer.save_pretrained(work)
        else:
            processor(tokenizer).save_pretrained(work)
            _write_preprocessor_config(work)
        if card is not None:
            (work / "README.md").write_text(card)
    return Path(out)


def warn_text_only(kind: str, problem: str) -> None:
    print(f"timm is not usable ({problem}): writing a text-only {kind} checkpoint; "
          "pip install timm torchvision for the vision tower", file=sys.stderr)
