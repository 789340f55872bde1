"""Run one prompt on several variants' ONNX bundles and measure what a user trades: speed against quality.

Why onnxruntime on the exported bundles rather than the PyTorch checkpoints: what is compared must be
what ships. The sessions are driven by `web_export.runtime.BundleRuntime`, which feeds them exactly as
transformers.js does and decodes step by step, so tokens can be streamed.

Numbers per variant:
* load time: creating the onnxruntime sessions (once per variant; later runs reuse them and say so);
* time to first token: tokenizing is excluded; embedding, the audio encoder and the prefill are included;
* tokens per second: tokens after the first over the time of their decode steps;
* KL divergence and top-1 agreement against the parent: both models are run teacher-forced over the
  prompt followed by the parent's own greedy continuation, and at every position the parent's
  next-token distribution P is compared with the variant's Q: mean KL(P || Q) in nats, and the share
  of positions whose argmax agree. The parent against itself gives exactly 0 and 1.

Each variant's time is its own compute time, so running the variants interleaved (to stream them side
by side) does not change their numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demo.plot import plot_data
from demo.variants import Registry, Variant
from evaluation.metrics import divergence
from gemma3n.errors import UserError
from gemma3n.modalities import ENCODER_SESSIONS, TEXT_SESSIONS
from standins import nano_recipe as nano
from web_export.runtime import BundleRuntime, Prompt

USED_SESSIONS = (*TEXT_SESSIONS, ENCODER_SESSIONS["audio"])  # the demo prompts with text and audio, not images
DEFAULT_MAX_NEW_TOKENS = 32
MAX_NEW_TOKENS = 256
MAX_AUDIO_SECONDS = 30.0
# Short fixed prompts for the plot's quality retention, which must not depend on what a user typed: the default
# model's own prompts, which it was trained to answer, so retention compares answers rather than noise.
REFERENCE_PROMPTS = nano.PROMPTS


class InputError(ValueError):
    """A problem with what the user sent (prompt, audio, variant names): shown to them, never a crash."""


def read_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """A WAV file as mono float32 at `sampling_rate`, at most MAX_AUDIO_SECONDS long."""
    from evaluation.data import read_wav

    try:
        samples = read_wav(Path(path), sampling_rate)
    except UserError as error:
        raise InputError(f"cannot read the audio file: {error}") from None
    if len(samples) / sampling_rate > MAX_AUDIO_SECONDS:
        raise InputError(f"the audio is {len(samples) / sampling_rate:.1f} s long: "
                         f"the demo takes up to {MAX_AUDIO_SECONDS:g} s")
    return samples


class Runner:
    """One variant's sessions, tokenizer and (if it kept audio) processor, loaded once."""

    def __init__(self, variant: Variant) -> None:
        from transformers import AutoProcessor, AutoTokenizer

        start = time.perf_counter()
        self.variant = variant
        config = json.loads((variant.folder / "config.json").read_text())
        self.text_config = config.get("text_config", config)
        self.onnx = BundleRuntime.from_bundle(variant.folder, only=USED_SESSIONS)
        self.load_seconds = time.perf_counter() - start
        self.tokenizer = AutoTokenizer.from_pretrained(variant.folder)
        self.processor = AutoProcessor.from_pretrained(variant.folder) if variant.has_audio else None
        self.eos_ids = set(_eos_ids(variant.folder, self.text_config))

    @property
    def context(self) -> int:
        return int(self.text_config.get("max_position_embeddings") or 32768)

    def prompt(self, text: str, audio: np.ndarray | None) -> Prompt:
        """The chat-templated prompt; audio is used only if this variant kept its audio encoder."""
        use_audio = audio is not None and self.processor is not None
        content = ([{"type": "audio"}] if use_audio else []) + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        if not use_audio:
            encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return Prompt(np.array(encoded["input_ids"]))
        templated = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        out = self.processor(text=templated, audio=[audio], add_special_tokens=False, return_tensors="np")
        return Prompt(out["input_ids"][0], input_features=out["input_features"],
                      input_features_mask=out["input_features_mask"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, prompt: Prompt, max_new_tokens: int) -> Iterator[tuple[int, float]]:
        """Greedy ids one by one, each with the seconds of compute it took; stops after an EOS id."""
        return self.onnx.generate(prompt, max_new_tokens, self.eos_ids)

    def logits(self, prompt: Prompt, ids: list[int]) -> np.ndarray:
        """Teacher-forced logits [len(ids), vocab] of `ids` (the prompt's ids followed by a continuation)."""
        return self.onnx.logits(prompt.with_ids(ids))


def _eos_ids(folder: Path, text_config: dict[str, Any]) -> list[int]:
    path = folder / "generation_config.json"
    eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
    eos = eos if eos is not None else text_config.get("eos_token_id", 1)
    return list(eos) if isinstance(eos, list) else [int(eos)]


@dataclass
class Column:
    """One variant's run: streamed text and the numbers measured so far."""

    variant: Variant
    runner: Runner
    prompt: Prompt
    cached: bool
    ids: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    done: bool = False
    kl: float | None = None
    top1: float | None = None
    note: str = ""

    @property
    def text(self) -> str:
        return self.runner.decode([i for i in self.ids if i not in self.runner.eos_ids])

    def result(self) -> dict[str, Any]:
        decode = sum(self.seconds[1:])
        return {
            **self.variant.summary(),
            "text": self.text,
            "token_ids": self.ids,
            "prompt_tokens": len(self.prompt.ids),
            "new_tokens": len(self.ids),
            "load_seconds": self.runner.load_seconds,
            "load_cached": self.cached,
            "ttft_seconds": self.seconds[0] if self.seconds else None,
            "tokens_per_second": (len(self.seconds) - 1) / decode if decode > 0 else None,
            "kl_vs_parent": self.kl,
            "top1_vs_parent": self.top1,
            "audio_used": self.prompt.input_features is not None,
            "note": self.note,
            "done": self.done,
        }


@dataclass
class Run:
    """One request: the prompt as typed, the decoded audio, and a column per picked variant."""

    text: str
    audio: np.ndarray | None
    max_new_tokens: int
    columns: list[Column] = field(default_factory=list)
    scored: bool = False

    def results(self) -> list[dict[str, Any]]:
        return [column.result() for column in self.columns]


def _join(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


class Comparer:
    """Loads registered variants on demand (never a path from a request) and compares them."""

    def __init__(self, registry: Registry, max_variants: int = 4) -> None:
        self.registry = registry
        self.max_variants = max_variants
        self.runners: dict[str, Runner] = {}
        self._retention: dict[str, float] = {}

    def runner(self, name: str, keep: set[str]) -> tuple[Runner, bool]:
        """The variant's runner and whether it was already loaded; drops runners outside `keep` first."""
        for other in [n for n in self.runners if n not in keep]:
            del self.runners[other]
        if name in self.runners:
            return self.runners[name], True
        self.runners[name] = Runner(self.registry.get(name))
        return self.runners[name], False

    def check(self, prompt: Any, names: Any, max_new_tokens: Any) -> tuple[str, list[str], int]:
        """Validate a request; every failure is an InputError worded for the user."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("the prompt is empty: type a question or an instruction")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list | tuple) or not names:
            raise InputError(f"pick 1 to {self.max_variants} variants")
        names = list(dict.fromkeys(names))
        if len(names) > self.max_variants:
            raise InputError(f"{len(names)} variants picked: compare at most {self.max_variants} at once")
        for name in names:
            if not isinstance(name, str) or name not in self.registry.variants:
                raise InputError(f"unknown variant {name!r}: choose from {', '.join(self.registry.names)}")
        try:
            tokens = int(max_new_tokens)
        except (TypeError, ValueError):
            raise InputError(f"max_new_tokens must be a whole number, got {max_new_tokens!r}") from None
        if not 1 <= tokens <= MAX_NEW_TOKENS:
            raise InputError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {tokens}")
        return prompt, names, tokens

    def start(self, prompt: str, names: list[str], audio_path: str | None, max_new_tokens: int) -> Run:
        """Load the variants and the parent, tokenize, and check each prompt fits its variant's context."""
        keep = {*names, self.registry.parent}
        audio = None
        if audio_path:
            rate = self._sampling_rate(names)
            audio = read_audio(audio_path, rate) if rate else None
        run = Run(prompt, audio, max_new_tokens)
        for name in names:
            runner, cached = self.runner(name, keep)
            tokens = runner.prompt(prompt, audio)
            if len(tokens.ids) + max_new_tokens > runner.context:
                raise InputError(
                    f"the prompt is {len(tokens.ids)} tokens; with {max_new_tokens} new tokens it exceeds "
                    f"{name}'s context of {runner.context} tokens: shorten it"
                )
            column = Column(runner.variant, runner, tokens, cached)
            if audio is not None and tokens.input_features is None:
                column.note = "audio ignored: this variant has no audio encoder"
            run.columns.append(column)
        return run

    def _sampling_rate(self, names: list[str]) -> int | None:
        """The feature extractor's rate, or None when no picked variant takes audio (the file is then unused)."""
        for name in names:
            variant = self.registry.get(name)
            if variant.has_audio:
                config = json.loads((variant.folder / "preprocessor_config.json").read_text())
                return int(config.get("sampling_rate", 16000))
        return None

    def stream(self, run: Run) -> Iterator[Run]:
        """Advance every column one token at a time (so they stream side by side), then score them."""
        generators = [c.runner.generate(c.prompt, run.max_new_tokens) for c in run.columns]
        while not all(c.done for c in run.columns):
            for column, generator in zip(run.columns, generators, strict=True):
                if column.done:
                    continue
                step = next(generator, None)
                if step is None:
                    column.done = True
                else:
                    column.ids.append(step[0])
                    column.seconds.append(step[1])
            yield run
        self.score(run)
        run.scored = True
        yield run

    def score(self, run: Run) -> None:
        """KL and top-1 agreement of each column against the parent on prompt + the parent's continuation.

        A column is scored against the parent given the same inputs: a variant without audio against
        the parent prompted with the text alone.
        """
        parent = self.registry.parent
        runner, _ = self.runner(parent, {*[c.variant.name for c in run.columns], parent})
        references: dict[bool, tuple[Prompt, list[int], np.ndarray]] = {}
        for column in run.columns:
            with_audio = column.prompt.input_features is not None
            if with_audio not in references:
                references[with_audio] = self._reference(runner, run, run.audio if with_audio else None)
            prompt, ids, parent_logits = references[with_audio]
            if prompt.ids != column.prompt.ids:
                column.note = _join(column.note, "no KL: its prompt tokenizes differently from the parent's")
                continue
            column.kl, column.top1 = divergence(parent_logits, column.runner.logits(column.prompt, ids))

    def _reference(self, runner: Runner, run: Run, audio: np.ndarray | None) -> tuple[Prompt, list[int], np.ndarray]:
        """The parent's prompt, the ids scored (prompt + its greedy continuation) and its logits on them."""
        prompt = runner.prompt(run.text, audio)
        parent = self.registry.parent
        mine = [c for c in run.columns if c.variant.name == parent and c.prompt.ids == prompt.ids]
        continuation = mine[0].ids if mine else [t for t, _ in runner.generate(prompt, run.max_new_tokens)]
        ids = prompt.ids + continuation[:-1]
        return prompt, ids, runner.logits(prompt, ids)

    def compare(self, prompt: Any, names: Any, audio_path: str | None = None,
                max_new_tokens: Any = DEFAULT_MAX_NEW_TOKENS) -> Run:
        """Run to the end and return the run (the non-streaming API)."""
        prompt, names, tokens = self.check(prompt, names, max_new_tokens)
        run = self.start(prompt, names, audio_path, tokens)
        for _ in self.stream(run):
            pass
        return run

    def retention(self) -> dict[str, float]:
        """Quality retention of every variant: mean top-1 agreement with the parent on REFERENCE_PROMPTS.

        Measured once per variant, so a design built while serving costs only its own runs.
        """
        missing = [name for name in self.registry.names if name not in self._retention]
        scores: dict[str, list[float]] = {name: [] for name in missing}
        for text in REFERENCE_PROMPTS:
            for name in missing:
                column = self.compare(text, [name], None, 16).columns[0]
                scores[name].append(column.top1 if column.top1 is not None else 0.0)
        self._retention |= {name: float(np.mean(values)) for name, values in scores.items()}
        return {name: self._retention[name] for name in self.registry.names}

    def plot_data(self) -> dict[str, Any]:
        """The plotted points now: every served variant's bundle bytes against its quality retention."""
        retention = self.retention()
        return plot_data({name: self.registry.get(name).bytes for name in self.registry.names}, retention)
