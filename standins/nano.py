"""A nano Gemma 3n whose text decoder is trained MatFormer-style on CPU, offline, in a few minutes.

Why this exists: the real Gemma 3n weights cannot be downloaded here, and a random model answers in noise,
so slices of it differ only in which noise they print. This module trains a Gemma 3n at nano size (same
classes and config fields as E4B: AltUp, LAuReL, per-layer embeddings, KV sharing, activation sparsity
on the first layers, sliding and full attention) on English (see ``standins.corpus``: public-domain
novels and stories, WordNet 3.1's glosses and examples as sentences, and CPython's bundled documentation,
all from pinned packages) with a small BPE tokenizer that keeps Gemma's special tokens and chat template.
Its slices then behave as the real model's do: measurably worse the more is cut.

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

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import Gemma3nForCausalLM, Gemma3nTextConfig, GemmaTokenizer

from slicer.masked import masked_layers
from standins import folder, tiny
from standins.corpus import BYTE_TOKENS, Corpus, load_corpus, train_pieces
from standins.nano_recipe import (  # noqa: F401 (the recipe's names, as `nano.NAME`, for the trainer's callers)
    BATCH,
    DEFAULT_STEPS,
    E2B_LIKE,
    EVAL_TOKENS,
    FFN_WIDTH,
    FINAL_LEARNING_RATE,
    GRANULARITIES,
    HARSH,
    LAYER_TYPES,
    LEARNING_RATE,
    MEASURED,
    MIX,
    NAMED,
    NUM_KV_SHARED,
    NUM_LAYERS,
    PARENT,
    PROMPTS,
    SAMPLE_TOKENS,
    SEQ_LEN,
    SKIP_PROBABILITY,
    SKIPPABLE,
    SPARSE_LAYERS,
    SPECIAL_TOKENS,
    TEXT_VOCAB_SIZE,
    THREADS,
    TOKENS,
    VOCAB_SIZE,
    WARMUP,
    WIDTH_ONLY,
    WIDTH_WEIGHTS,
    WORKERS,
    SubModel,
    text_config,
)
from standins.tokens import BOS_ID, CONTROL_TOKENS, END_OF_TURN_ID, EOS_ID, PAD_ID


def nano_config(text_only: bool = False) -> dict[str, Any]:
    """config.json of the nano model: multimodal with tiny random towers, or gemma3n_text when text_only."""
    if text_only:
        return {**text_config(), "architectures": ["Gemma3nForCausalLM"]}
    base = tiny.tiny_config()
    return base | {"text_config": text_config(),
                   **TOKENS.multimodal_config(base["audio_config"], base["vision_config"])}


# --- Tokenizer -------------------------------------------------------------------------------------------
def build_tokenizer(corpus: Corpus) -> GemmaTokenizer:
    """GemmaTokenizer over BPE pieces learned from the training text (see standins.corpus for why it matches)."""
    room = TOKENS.boi - len(CONTROL_TOKENS) - len(BYTE_TOKENS)
    pieces, merges = train_pieces(corpus.train, room, CONTROL_TOKENS + BYTE_TOKENS)
    return folder.gemma_tokenizer(TOKENS.vocab(BYTE_TOKENS + pieces), merges)


# --- Data ------------------------------------------------------------------------------------------------
def chat_turn(question: str, answer: str) -> str:
    """One exchange as Gemma's chat template writes it (the answer closed by <end_of_turn>)."""
    return f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n{answer}<end_of_turn>\n"


def token_stream(tokenizer: GemmaTokenizer, paragraphs: list[str],
                 chats: Sequence[tuple[str, str]] = ()) -> torch.Tensor:
    """All paragraphs, then all chat turns, as one id stream, each opened by <bos> and closed by <eos>."""
    documents = list(paragraphs) + [chat_turn(question, answer) for question, answer in chats]
    ids = tokenizer(documents, add_special_tokens=True).input_ids
    return torch.tensor([t for doc in ids for t in [*doc, EOS_ID]], dtype=torch.long)


def training_streams(tokenizer: GemmaTokenizer, corpus: Corpus) -> list[tuple[torch.Tensor, int]]:
    """Each source's training stream (paragraphs and chat turns) with the rows it gets in every batch."""
    return [(token_stream(tokenizer, source.train, source.chats), MIX[source.name]) for source in corpus.sources]


def held_out_streams(tokenizer: GemmaTokenizer, corpus: Corpus, tokens: int = EVAL_TOKENS) -> dict[str, torch.Tensor]:
    """Each source's held-out paragraphs as a stream, cut to its first ``tokens`` tokens."""
    return {source.name: token_stream(tokenizer, source.held_out)[: tokens + 1] for source in corpus.sources}


def batches(streams: Sequence[tuple[torch.Tensor, int]], generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Random windows of SEQ_LEN + 1 tokens, the given number of rows from each stream, forever."""
    while True:
        rows = []
        for stream, count in streams:
            starts = torch.randint(0, len(stream) - SEQ_LEN - 1, (count,), generator=generator)
            rows += [stream[s : s + SEQ_LEN + 1] for s in starts.tolist()]
        yield torch.stack(rows)


# --- MatFormer sub-models inside one model ---------------------------------------------------------------
@contextmanager
def sub_models(model: torch.nn.Module) -> Iterator[Callable[[SubModel], None]]:
    """Patch the decoder so ``select(sub)`` switches which sub-model the next forward computes: the masking
    `matslice search` measures slices with (slicer.masked), so training, the model card and search agree.

    Works on Gemma3nForCausalLM and on Gemma3nForConditionalGeneration (its language model).
    """
    with masked_layers(model) as choose:
        yield lambda sub: choose(sub.skipped, dict(enumerate(sub.widths)))


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
        skipped = frozenset(rng.sample(SKIPPABLE, rng.randint(1, len(SKIPPABLE))))
    return SubModel(widths, skipped)


# --- Training --------------------------------------------------------------------------------------------
def _learning_rate(step: int, steps: int) -> float:
    if step < WARMUP:
        return LEARNING_RATE * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    floor = FINAL_LEARNING_RATE
    return LEARNING_RATE * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _loss(model: Gemma3nForCausalLM, batch: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=batch[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def _in_one_thread(work: Callable[[], Any]) -> Callable[[], Any]:
    """``work`` with this worker thread's intra-op threads at THREADS (OpenMP's count is per thread)."""

    def run() -> Any:
        torch.set_num_threads(THREADS)
        return work()

    return run


def _parallel(pool: ThreadPoolExecutor, tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the tasks on the pool's threads and return their results in the tasks' order."""
    return [future.result() for future in [pool.submit(_in_one_thread(task)) for task in tasks]]


def _half_gradients(model: torch.nn.Module, params: list[torch.nn.Parameter],
                    rows: torch.Tensor) -> tuple[float, list[torch.Tensor | None]]:
    loss = _loss(model, rows)
    return loss.item(), list(torch.autograd.grad(loss, params, allow_unused=True))


def _step_gradients(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: torch.Tensor,
                    pool: ThreadPoolExecutor) -> float:
    """Set every parameter's .grad to the batch's mean-loss gradient, computed as WORKERS halves in parallel.

    The halves' gradients are summed in their fixed order, so the result does not depend on which thread
    finished first: training is bit-for-bit repeatable. A parameter the sampled sub-model does not use
    keeps no gradient, so AdamW leaves it (and its moments) untouched, as one backward() would.
    """
    halves = batch.chunk(WORKERS)
    results = _parallel(pool, [lambda rows=rows: _half_gradients(model, params, rows) for rows in halves])
    for i, param in enumerate(params):
        grads = [grads[i] for _, grads in results]
        if grads[0] is None:
            param.grad = None
            continue
        total = grads[0].clone()
        for grad in grads[1:]:
            total += grad
        param.grad = total.div_(len(grads))
    return sum(loss for loss, _ in results) / len(results)


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float


def train(model: Gemma3nForCausalLM, streams: Sequence[tuple[torch.Tensor, int]], *, steps: int, seed: int,
          matformer: bool) -> TrainResult:
    """Train the text decoder in place: AdamW, warmup then cosine decay, one sampled sub-model per step."""
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    start, smoothed = time.monotonic(), float("nan")
    with (sub_models(model) as select, ThreadPoolExecutor(WORKERS) as pool,
          tqdm(total=steps, desc="training nano", unit="step") as bar):
        for step, batch in zip(range(steps), batches(streams, generator), strict=False):
            select(sample_sub_model(rng) if matformer else PARENT)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, steps)
            loss = _step_gradients(model, params, batch, pool)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            smoothed = loss if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss
            bar.set_postfix(loss=f"{smoothed:.3f}")
            bar.update()
    model.eval()
    return TrainResult(steps, steps * len(batch) * SEQ_LEN, time.monotonic() - start, smoothed)


@torch.no_grad()
def perplexity(model: torch.nn.Module, stream: torch.Tensor, seq_len: int = SEQ_LEN) -> float:
    """exp(mean next-token loss) over non-overlapping windows of the stream (works for any causal LM).

    The windows are scored WORKERS chunks at a time in parallel; each chunk's sum is exact, so the result
    does not depend on the threads.
    """
    windows = stream[: (len(stream) - 1) // seq_len * seq_len + 1]
    inputs = windows[:-1].view(-1, seq_len)
    targets = windows[1:].view(-1, seq_len)

    def chunk_loss(rows: slice) -> float:
        logits = model(input_ids=inputs[rows], use_cache=False).logits
        return F.cross_entropy(logits.flatten(0, 1), targets[rows].flatten(), reduction="sum").item()

    chunks = [slice(row, row + 32) for row in range(0, len(inputs), 32)]
    with ThreadPoolExecutor(WORKERS) as pool:
        total = math.fsum(_parallel(pool, [lambda rows=rows: chunk_loss(rows) for rows in chunks]))
    return math.exp(total / targets.numel())


def sub_model_perplexities(model: Gemma3nForCausalLM, streams: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Held-out perplexity of the parent, the named slices and the width-only slices on each stream, computed
    inside the trained model."""
    with sub_models(model) as select:
        out = {}
        for name, sub in MEASURED.items():
            select(sub)
            out[name] = {source: perplexity(model, stream) for source, stream in streams.items()}
    return out


@torch.no_grad()
def greedy(model: torch.nn.Module, tokenizer: GemmaTokenizer, prompt: str, new_tokens: int = SAMPLE_TOKENS) -> str:
    """The model's greedy answer to ``prompt`` under the chat template, up to <end_of_turn> or ``new_tokens``.

    A plain loop without a KV cache, so it also runs inside ``sub_models`` (whose skipped layers have none).
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, chat_template=folder.CHAT_TEMPLATE)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    start = ids.shape[1]
    for _ in range(new_tokens):
        token = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
        if token.item() in (EOS_ID, END_OF_TURN_ID):
            break
        ids = torch.cat([ids, token.view(1, 1)], dim=1)
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True)


def sub_model_samples(model: Gemma3nForCausalLM, tokenizer: GemmaTokenizer,
                      prompts: Sequence[str] = PROMPTS) -> dict[str, dict[str, str]]:
    """Greedy answers of the parent and each named slice to each prompt."""
    with sub_models(model) as select:
        out = {}
        for name, sub in NAMED.items():
            select(sub)
            out[name] = {prompt: greedy(model, tokenizer, prompt) for prompt in prompts}
    return out


# --- Writing the folder ----------------------------------------------------------------------------------
@contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _trained_decoder(streams: torch.Tensor | Sequence[tuple[torch.Tensor, int]], seed: int, steps: int,
                     matformer: bool) -> tuple[Any, TrainResult]:
    """A fresh decoder from ``seed`` trained on ``streams`` (or one stream filling every batch)."""
    if isinstance(streams, torch.Tensor):
        streams = [(streams, BATCH)]
    with torch.random.fork_rng(devices=[]), threads(THREADS):
        torch.manual_seed(seed)
        model = Gemma3nForCausalLM(Gemma3nTextConfig.from_dict(text_config())).to(torch.float32)
        result = train(model, streams, steps=steps, seed=seed, matformer=matformer)
    return model, result


@dataclass
class NanoRun:
    """One trained decoder with what it was trained on and what it measures: the model card's contents."""

    seed: int
    matformer: bool
    corpus: Corpus
    tokenizer: GemmaTokenizer
    decoder: Gemma3nForCausalLM
    result: TrainResult
    perplexities: dict[str, dict[str, float]]  # sub-model -> source -> held-out perplexity
    samples: dict[str, dict[str, str]]  # sub-model -> prompt -> greedy answer


def train_nano(*, seed: int = 0, steps: int | None = None, matformer: bool = True) -> NanoRun:
    """Train the nano decoder and measure its named slices on each source's held-out text (no files written)."""
    corpus = load_corpus()
    tokenizer = build_tokenizer(corpus)
    decoder, result = _trained_decoder(training_streams(tokenizer, corpus), seed,
                                       DEFAULT_STEPS if steps is None else steps, matformer)
    with threads(THREADS):
        ppl = sub_model_perplexities(decoder, held_out_streams(tokenizer, corpus))
        samples = sub_model_samples(decoder, tokenizer)
    return NanoRun(seed, matformer, corpus, tokenizer, decoder, result, ppl, samples)


def _full_model(decoder: Gemma3nForCausalLM, text_only: bool, seed: int) -> torch.nn.Module:
    """The checkpoint's model: the trained decoder, inside random audio/vision towers unless text-only."""
    if text_only:
        return decoder
    model = folder.random_model(nano_config(), seed)
    missing = model.model.language_model.load_state_dict(decoder.model.state_dict())
    if missing.missing_keys or missing.unexpected_keys:
        raise AssertionError(f"decoder weights do not fit the multimodal model: {missing}")
    return model


def _model_card(run: NanoRun) -> str:
    mode = "MatFormer sampling" if run.matformer else "full model only (no MatFormer sampling: a baseline)"
    sources = [source.name for source in run.corpus.sources]
    texts = "\n".join(f"  - `{source.name}`: {source.note}; {len(source.train)} training and "
                      f"{len(source.held_out)} held-out paragraphs, {MIX[source.name]} of every {BATCH} rows"
                      for source in run.corpus.sources)
    header = "| sub-model | " + " | ".join(sources) + " |\n|---|" + "---:|" * len(sources)
    rows = "\n".join(f"| {name} | " + " | ".join(f"{ppl[s]:.2f}" for s in sources) + " |"
                     for name, ppl in run.perplexities.items())
    samples = "\n".join(f"- **{name}**, *{prompt}* → {answer!r}"
                        for name, answers in run.samples.items() for prompt, answer in answers.items())
    return f"""---
library_name: transformers
tags: [gemma3n, matformer, matslice, nano]
---
# Nano Gemma 3n (seed {run.seed})

A Gemma 3n (Gemma3nForConditionalGeneration) at nano size, made by `matslice nano` fully offline.

- **Text decoder: trained** on CPU, {run.result.steps} steps of {BATCH} x {SEQ_LEN} tokens, {mode}
  ({run.result.seconds / 60:.1f} minutes on {WORKERS} threads).
  MatFormer steps sample nested FFN widths (full, 1/2, 1/4, or a per-layer mix; always the first units)
  and sometimes skip KV-sharing layers {list(SKIPPABLE)}, so Mix-n-Match slices work without retraining.
- **Audio and vision towers: random** (untrained): they make the multimodal paths run, nothing more.
- Training text (corpus {run.corpus.fingerprint()}):
{texts}
- Tokenizer: byte-fallback BPE with {TEXT_VOCAB_SIZE} text ids trained with the `tokenizers` library,
  Gemma's special tokens at Gemma's ids and Gemma 3n's chat template.

## Held-out perplexity (the first {EVAL_TOKENS:,} held-out tokens of each source at most)
{header}
{rows}

`e2b_like`: every FFN at 1/2 width, layers 7 and 8 skipped; `harsh`: every FFN at 1/4 width, layers 6, 7
and 8 skipped (6-9 reuse the KV cache of layers 4 and 5, which are never skipped). Each is nested in the one
before it. `half` and `quarter`: every layer kept, every FFN at 1/2 or 1/4 width.

## Greedy samples (chat template, up to {SAMPLE_TOKENS} new tokens)
{samples}

This is a toy: it writes English-looking prose, definitions and manual sentences, not reliable answers.
"""


def write_nano(out: Path, *, seed: int = 0, steps: int | None = None, matformer: bool = True) -> Path:
    """Train the nano Gemma 3n from ``seed`` and write its checkpoint folder to ``out``; return ``out``.

    Same files as ``write_tiny`` plus a model card. Deterministic for one seed, step count, Python version
    and machine type (the npm text is pinned byte for byte). Falls back to text-only without timm, like write_tiny.
    """
    text_only = (problem := folder.timm_problem()) is not None
    if text_only:
        folder.warn_text_only("nano", problem)
    run = train_nano(seed=seed, steps=steps, matformer=matformer)
    model = _full_model(run.decoder, text_only, seed)
    model.generation_config = folder.generation_config(BOS_ID, [EOS_ID, END_OF_TURN_ID], PAD_ID)
    return folder.write_folder(out, model, run.tokenizer, text_only=text_only, card=_model_card(run))


def write_random_nano(out: Path, *, seed: int = 0, text_only: bool = True) -> Path:
    """A nano-shaped Gemma 3n with random weights and the tiny tokenizer, written in seconds: for the checks that
    need nano's shapes (hidden 128, 10 layers, a 2080-id vocabulary) but not its training, such as bundle sizes.
    The tokenizer covers only the first 288 ids, which export does not mind."""
    text_only = text_only or folder.timm_problem() is not None
    model = folder.random_model(nano_config(text_only=text_only), seed)
    model.generation_config = folder.generation_config(BOS_ID, [EOS_ID, END_OF_TURN_ID], PAD_ID)
    return folder.write_folder(out, model, tiny.tokenizer(), text_only=text_only)
