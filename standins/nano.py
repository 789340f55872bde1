"""A nano Gemma 3n whose text decoder is trained MatFormer-style on CPU, offline, in a few minutes.

Why this exists: the real Gemma 3n weights cannot be downloaded here, and a random model answers in noise,
so slices of it differ only in which noise they print. This module trains a Gemma 3n at nano size (same
classes and config fields as E4B: AltUp, LAuReL, per-layer embeddings, KV sharing, activation sparsity
on the first layers, sliding and full attention) on English prose (see ``standins.corpus``: CPython's
bundled documentation, PSF License 2.0) with a small BPE tokenizer that keeps Gemma's special tokens and
chat template. Its slices then behave as the real model's do: measurably worse the more is cut.

MatFormer training: every step samples one sub-model and trains it. FFN widths are nested, the first
``w`` units of each layer, at three granularities (full, 1/2, 1/4; sometimes mixed per layer, as
Mix-n-Match slices are), and some steps also skip KV-sharing reuse layers (never a store layer), as
Google's E2B does inside E4B. ``slice_checkpoint`` keeps exactly those first units and drops exactly
those layers, so the slices need no retraining. ``matformer=False`` trains the full model only, the
baseline that shows what the sampling buys.

The audio and vision towers keep their random initialisation (tiny shapes from ``standins.tiny``): they
exist so the multimodal export and processor paths run; the model card says so.

Token layout (2080 ids), Gemma's layout at nano scale: 0..6 the special tokens at Gemma's ids, 7..262
``<0x00>``..``<0xFF>`` byte-fallback tokens, then the learned pieces up to 2045; 2046
``<start_of_image>``, 2047 ``<start_of_audio>``; 2048..2063 the vision vocab (``<end_of_image>``,
``<image_soft_token>``), 2064..2079 the audio vocab (``<end_of_audio>``, ``<audio_soft_token>``).
Per-layer embeddings cover the 2048 text ids.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import Gemma3nForCausalLM, Gemma3nTextConfig, GemmaTokenizer

from slicer.plan import SliceSpec
from standins import tiny
from standins.corpus import BYTE_TOKENS, Corpus, load_corpus, source_note, train_pieces
from standins.folder import (
    gemma_tokenizer,
    generation_config,
    random_model,
    timm_problem,
    warn_text_only,
    write_folder,
)

# --- Token ids -------------------------------------------------------------------------------------------
TEXT_VOCAB_SIZE = 2048
BOI_ID, BOA_ID = TEXT_VOCAB_SIZE - 2, TEXT_VOCAB_SIZE - 1
VISION_VOCAB_OFFSET, VISION_VOCAB_SIZE = TEXT_VOCAB_SIZE, 16
EOI_ID, IMAGE_ID = VISION_VOCAB_OFFSET, VISION_VOCAB_OFFSET + 1
AUDIO_VOCAB_OFFSET, AUDIO_VOCAB_SIZE = VISION_VOCAB_OFFSET + VISION_VOCAB_SIZE, 16
EOA_ID, AUDIO_ID = AUDIO_VOCAB_OFFSET, AUDIO_VOCAB_OFFSET + 1
VOCAB_SIZE = AUDIO_VOCAB_OFFSET + AUDIO_VOCAB_SIZE  # 2080
PER_LAYER_VOCAB_SIZE = TEXT_VOCAB_SIZE
FIRST_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
PAD_ID, EOS_ID, BOS_ID, END_OF_TURN_ID = 0, 1, 2, 6
SPECIAL_TOKENS: dict[str, int] = {token: i for i, token in enumerate(FIRST_SPECIALS)} | {
    "<start_of_image>": BOI_ID,
    "<start_of_audio>": BOA_ID,
    "<end_of_image>": EOI_ID,
    "<image_soft_token>": IMAGE_ID,
    "<end_of_audio>": EOA_ID,
    "<audio_soft_token>": AUDIO_ID,
}

# --- Architecture ----------------------------------------------------------------------------------------
NUM_LAYERS = 10  # full attention at 4 and 9 ((i + 1) % 5 == 0), sliding elsewhere
FFN_WIDTH = 512
LAYER_TYPES = {False: "sliding_attention", True: "full_attention"}
NUM_KV_SHARED = 4  # layers 6-9 reuse KV; store layers 5 (sliding) and 4 (full)
SPARSE_LAYERS = 2  # activation sparsity 0.95 on the first layers, as E4B has on its first 10 of 35

# --- Training --------------------------------------------------------------------------------------------
SEQ_LEN = 128
BATCH = 8
DEFAULT_STEPS = 600
LEARNING_RATE = 3e-3
WARMUP = 40
# One thread: on a 2-core machine shared with other work, two OpenMP threads ran 10-15x slower than one
# (each waits for the other's core), and one thread also makes the run bit-for-bit repeatable.
THREADS = 1
GRANULARITIES = (1, 2, 4)  # FFN width divisors: full, half, quarter (nested: the first units)
WIDTH_WEIGHTS = (0.45, 0.3, 0.15)  # the remaining 0.1: an independent granularity per layer (Mix-n-Match)
SKIPPABLE = (6, 7, 8)  # KV-sharing reuse layers; the store layers 4 and 5 are never skipped
SKIP_PROBABILITY = 0.3
CHAT_EVERY = 3  # every third paragraph is also shown as a chat turn, so the chat template gets answers


@dataclass(frozen=True)
class SubModel:
    """One MatFormer sub-model: an FFN width for every layer and the layers it skips."""

    widths: tuple[int, ...]
    skipped: frozenset[int] = field(default_factory=frozenset)


    def slice_spec(self, modalities: tuple[str, ...] = ()) -> SliceSpec:
        """The SliceSpec whose checkpoint computes exactly this sub-model."""
        kept = [width for i, width in enumerate(self.widths) if i not in self.skipped]
        return SliceSpec(layers_to_skip=tuple(sorted(self.skipped)), ffn_dims=tuple(kept), modalities=modalities)


# Named slices used by the model card and the tests.
PARENT = SubModel((FFN_WIDTH,) * NUM_LAYERS)
E2B_LIKE = SubModel((FFN_WIDTH // 2,) * NUM_LAYERS, frozenset({8}))
HARSH = SubModel((FFN_WIDTH // 4,) * NUM_LAYERS, frozenset({7, 8}))
NAMED = {"parent": PARENT, "e2b_like": E2B_LIKE, "harsh": HARSH}


# --- Configs ---------------------------------------------------------------------------------------------
def text_config() -> dict[str, Any]:
    """The nano decoder: E4B's structure at hidden 128, 10 layers, 4 of them KV-sharing."""
    return {
        "model_type": "gemma3n_text",
        "vocab_size": VOCAB_SIZE,
        "vocab_size_per_layer_input": PER_LAYER_VOCAB_SIZE,
        "hidden_size": 128,
        "hidden_size_per_layer_input": 32,
        "num_hidden_layers": NUM_LAYERS,
        "intermediate_size": [FFN_WIDTH] * NUM_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "laurel_rank": 16,
        "altup_num_inputs": 4,
        "layer_types": [LAYER_TYPES[(i + 1) % 5 == 0] for i in range(NUM_LAYERS)],
        "num_kv_shared_layers": NUM_KV_SHARED,
        "sliding_window": 32,
        "max_position_embeddings": 4096,
        "activation_sparsity_pattern": [0.95] * SPARSE_LAYERS + [0.0] * (NUM_LAYERS - SPARSE_LAYERS),
        "pad_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "bos_token_id": BOS_ID,
    }


def nano_config(text_only: bool = False) -> dict[str, Any]:
    """config.json of the nano model: multimodal with tiny random towers, or gemma3n_text when text_only."""
    if text_only:
        return {**text_config(), "architectures": ["Gemma3nForCausalLM"]}
    base = tiny.tiny_config()
    return base | {
        "text_config": text_config(),
        "audio_config": base["audio_config"] | {"vocab_offset": AUDIO_VOCAB_OFFSET, "vocab_size": AUDIO_VOCAB_SIZE},
        "vision_config": base["vision_config"] | {"vocab_offset": VISION_VOCAB_OFFSET, "vocab_size": VISION_VOCAB_SIZE},
        "boi_token_id": BOI_ID,
        "eoi_token_id": EOI_ID,
        "image_token_id": IMAGE_ID,
        "boa_token_id": BOA_ID,
        "eoa_token_id": EOA_ID,
        "audio_token_id": AUDIO_ID,
    }


# --- Tokenizer -------------------------------------------------------------------------------------------
def _vocab(pieces: list[str]) -> dict[str, int]:
    by_id = {token_id: token for token, token_id in SPECIAL_TOKENS.items()}
    first = len(FIRST_SPECIALS)
    by_id |= {first + i: token for i, token in enumerate(BYTE_TOKENS + pieces)}
    if first + len(BYTE_TOKENS) + len(pieces) > BOI_ID:
        raise AssertionError("nano token layout collides")
    unused = itertools.count()
    return {by_id.get(i) or f"<unused{next(unused)}>": i for i in range(VOCAB_SIZE)}


def build_tokenizer(corpus: Corpus) -> GemmaTokenizer:
    """GemmaTokenizer over BPE pieces learned from the training text (see standins.corpus for why it matches)."""
    room = BOI_ID - len(FIRST_SPECIALS) - len(BYTE_TOKENS)
    pieces, merges = train_pieces(corpus.train, room, FIRST_SPECIALS + BYTE_TOKENS)
    return gemma_tokenizer(_vocab(pieces), merges)


# --- Data ------------------------------------------------------------------------------------------------
def _chat(paragraph: str) -> str | None:
    """The paragraph as a chat exchange: its first sentence asked, the rest answered; None if one sentence."""
    head, sep, rest = paragraph.partition(". ")
    if not sep or not rest:
        return None
    return f"<start_of_turn>user\n{head}.<end_of_turn>\n<start_of_turn>model\n{rest}<end_of_turn>\n"


def token_stream(tokenizer: GemmaTokenizer, paragraphs: list[str], chat: bool) -> torch.Tensor:
    """All paragraphs as one id stream, each opened by <bos> and closed by <eos> (or a chat turn)."""
    documents = list(paragraphs)
    if chat:
        documents += [c for i, p in enumerate(paragraphs) if not i % CHAT_EVERY and (c := _chat(p))]
    ids = tokenizer(documents, add_special_tokens=True).input_ids
    return torch.tensor([t for doc in ids for t in [*doc, EOS_ID]], dtype=torch.long)


def batches(stream: torch.Tensor, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Random windows of SEQ_LEN + 1 tokens, BATCH at a time, forever."""
    while True:
        starts = torch.randint(0, len(stream) - SEQ_LEN - 1, (BATCH,), generator=generator)
        yield torch.stack([stream[s : s + SEQ_LEN + 1] for s in starts.tolist()])


# --- MatFormer sub-models inside one model ---------------------------------------------------------------
def _mlp_forward(mlp: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Gemma3nTextMLP.forward on the first ``mlp.nano_width`` units: sliced weights, not a mask.

    Activation sparsity takes its statistics over the width, so only slicing matches the sliced checkpoint.
    """
    width = mlp.nano_width
    gate = F.linear(hidden, mlp.gate_proj.weight[:width])
    if mlp.activation_sparsity > 0.0:
        gate = mlp._gaussian_topk(gate)
    up = F.linear(hidden, mlp.up_proj.weight[:width])
    return F.linear(mlp.act_fn(gate) * up, mlp.down_proj.weight[:, :width])


@contextmanager
def sub_models(model: torch.nn.Module) -> Iterator[Callable[[SubModel], None]]:
    """Patch the decoder so ``select(sub)`` switches which sub-model the next forward computes.

    Works on Gemma3nForCausalLM and on Gemma3nForConditionalGeneration (its language model).
    """
    layers = getattr(model.model, "language_model", model.model).layers

    def skippable(layer: torch.nn.Module) -> Callable:
        forward = layer.forward
        return lambda hidden, *args, **kwargs: hidden if layer.nano_skip else forward(hidden, *args, **kwargs)

    for layer in layers:  # instance attributes shadow the class's forward until deleted below
        layer.forward = skippable(layer)
        layer.mlp.forward = lambda hidden, mlp=layer.mlp: _mlp_forward(mlp, hidden)

    def select(sub: SubModel) -> None:
        for i, layer in enumerate(layers):
            layer.nano_skip = i in sub.skipped
            layer.mlp.nano_width = sub.widths[i]

    try:
        select(PARENT)
        yield select
    finally:
        for layer in layers:
            del layer.forward, layer.mlp.forward, layer.nano_skip, layer.mlp.nano_width


def sample_sub_model(rng: random.Random) -> SubModel:
    """One training step's sub-model: a nested width granularity (or a per-layer mix) and maybe skipped layers."""
    roll = rng.random()
    if roll < sum(WIDTH_WEIGHTS):
        divisor = rng.choices(GRANULARITIES, weights=WIDTH_WEIGHTS)[0]
        widths = (FFN_WIDTH // divisor,) * NUM_LAYERS
    else:
        widths = tuple(FFN_WIDTH // rng.choice(GRANULARITIES) for _ in range(NUM_LAYERS))
    skipped = frozenset()
    if rng.random() < SKIP_PROBABILITY:
        skipped = frozenset(rng.sample(SKIPPABLE, rng.choice((1, 2))))
    return SubModel(widths, skipped)


# --- Training --------------------------------------------------------------------------------------------
def _learning_rate(step: int, steps: int) -> float:
    if step < WARMUP:
        return LEARNING_RATE * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LEARNING_RATE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _loss(model: Gemma3nForCausalLM, batch: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=batch[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float


def train(model: Gemma3nForCausalLM, stream: torch.Tensor, *, steps: int, seed: int, matformer: bool) -> TrainResult:
    """Train the text decoder in place: AdamW, warmup then cosine decay, one sampled sub-model per step."""
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    start, smoothed = time.monotonic(), float("nan")
    with sub_models(model) as select, tqdm(total=steps, desc="training nano", unit="step") as bar:
        for step, batch in zip(range(steps), batches(stream, generator), strict=False):
            select(sample_sub_model(rng) if matformer else PARENT)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, steps)
            loss = _loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            smoothed = loss.item() if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss.item()
            bar.set_postfix(loss=f"{smoothed:.3f}")
            bar.update()
    model.eval()
    return TrainResult(steps, steps * BATCH * SEQ_LEN, time.monotonic() - start, smoothed)


@torch.no_grad()
def perplexity(model: torch.nn.Module, stream: torch.Tensor, seq_len: int = SEQ_LEN) -> float:
    """exp(mean next-token loss) over non-overlapping windows of the stream (works for any causal LM)."""
    windows = stream[: (len(stream) - 1) // seq_len * seq_len + 1]
    inputs = windows[:-1].view(-1, seq_len)
    targets = windows[1:].view(-1, seq_len)
    total = 0.0
    for rows in range(0, len(inputs), 32):
        logits = model(input_ids=inputs[rows : rows + 32], use_cache=False).logits
        total += F.cross_entropy(logits.flatten(0, 1), targets[rows : rows + 32].flatten(), reduction="sum").item()
    return math.exp(total / targets.numel())


def sub_model_perplexities(model: Gemma3nForCausalLM, stream: torch.Tensor) -> dict[str, float]:
    """Held-out perplexity of the parent and the named slices, computed inside the trained model."""
    with sub_models(model) as select:
        out = {}
        for name, sub in NAMED.items():
            select(sub)
            out[name] = perplexity(model, stream)
    return out


# --- Writing the folder ----------------------------------------------------------------------------------
@contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _trained_decoder(stream: torch.Tensor, seed: int, steps: int, matformer: bool) -> tuple[Any, TrainResult]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3nForCausalLM(Gemma3nTextConfig.from_dict(text_config())).to(torch.float32)
        result = train(model, stream, steps=steps, seed=seed, matformer=matformer)
    return model, result


def _full_model(decoder: Gemma3nForCausalLM, text_only: bool, seed: int) -> torch.nn.Module:
    """The checkpoint's model: the trained decoder, inside random audio/vision towers unless text-only."""
    if text_only:
        return decoder
    model = random_model(nano_config(), seed)
    missing = model.model.language_model.load_state_dict(decoder.model.state_dict())
    if missing.missing_keys or missing.unexpected_keys:
        raise AssertionError(f"decoder weights do not fit the multimodal model: {missing}")
    return model


def _model_card(matformer: bool, seed: int, result: TrainResult, ppl: dict[str, float], corpus: Corpus) -> str:
    mode = "MatFormer sampling" if matformer else "full model only (no MatFormer sampling: a baseline)"
    rows = "\n".join(f"| {name} | {value:.2f} |" for name, value in ppl.items())
    return f"""---
library_name: transformers
tags: [gemma3n, matformer, matslice, nano]
---
# Nano Gemma 3n (seed {seed})

A Gemma 3n (Gemma3nForConditionalGeneration) at nano size, made by `matslice nano` fully offline.

- **Text decoder: trained** on CPU, {result.steps} steps of {BATCH} x {SEQ_LEN} tokens, {mode}.
  MatFormer steps sample nested FFN widths (full, 1/2, 1/4, or a per-layer mix; always the first units)
  and sometimes skip KV-sharing layers {list(SKIPPABLE)}, so Mix-n-Match slices work without retraining.
- **Audio and vision towers: random** (untrained): they make the multimodal paths run, nothing more.
- Training text: {source_note()} ({len(corpus.train)} paragraphs, corpus {corpus.fingerprint()}).
- Tokenizer: byte-fallback BPE with {TEXT_VOCAB_SIZE} text ids trained with the `tokenizers` library,
  Gemma's special tokens at Gemma's ids and Gemma 3n's chat template.

## Held-out perplexity ({len(corpus.held_out)} paragraphs)
| sub-model | perplexity |
|---|---:|
{rows}

`e2b_like`: every FFN at 1/2 width, layer 8 skipped; `harsh`: 1/4 width, layers 7 and 8 skipped.
This is a toy: it writes English-looking sentences about Python, not answers.
"""


def write_nano(out: Path, *, seed: int = 0, steps: int | None = None, matformer: bool = True) -> Path:
    """Train the nano Gemma 3n from ``seed`` and write its checkpoint folder to ``out``; return ``out``.

    Same files as ``write_tiny`` plus a model card. Deterministic for one seed, step count, Python version
    and machine type (training runs on 2 threads). Falls back to text-only without timm, like write_tiny.
    """
    text_only = (problem := timm_problem()) is not None
    if text_only:
        warn_text_only("nano", problem)
    corpus = load_corpus()
    tokenizer = build_tokenizer(corpus)
    with _threads(THREADS):
        stream = token_stream(tokenizer, corpus.train, chat=True)
        decoder, result = _trained_decoder(stream, seed, DEFAULT_STEPS if steps is None else steps, matformer)
        ppl = sub_model_perplexities(decoder, token_stream(tokenizer, corpus.held_out, chat=False))
    model = _full_model(decoder, text_only, seed)
    model.generation_config = generation_config(BOS_ID, [EOS_ID, END_OF_TURN_ID], PAD_ID)
    return write_folder(out, model, tokenizer, text_only=text_only, card=_model_card(matformer, seed, result, ppl,
                                                                                        corpus))


def write_random_nano(out: Path, *, seed: int = 0, text_only: bool = True) -> Path:
    """A nano-shaped Gemma 3n with random weights and the tiny tokenizer, written in seconds: for the checks that
    need nano's shapes (hidden 128, 10 layers, a 2080-id vocabulary) but not its training, such as bundle sizes.
    The tokenizer covers only the first 288 ids, which export does not mind."""
    text_only = text_only or timm_problem() is not None
    model = random_model(nano_config(text_only=text_only), seed)
    model.generation_config = generation_config(BOS_ID, [EOS_ID, END_OF_TURN_ID], PAD_ID)
    return write_folder(out, model, tiny.tokenizer(), text_only=text_only)
