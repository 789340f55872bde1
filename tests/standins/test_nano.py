"""The nano Gemma 3n: a real, loadable, sliceable checkpoint whose slices are the sub-models it trained.

The folder tests run on the default checkpoint, the folder `write_nano` writes for seed 0 (trained once per
machine into the user cache): they prove it is a stock-loadable Gemma 3n with a consistent Gemma-style tokenizer
and that each MatFormer sub-model computed inside it is exactly what slice_checkpoint writes; a two-step training
proves training is repeatable. Whether the training buys anything is checked on the same checkpoint: its nested
slices, and its width-only slices, must be worse in order on held-out prose from the books. Whether the order
holds for other seeds, and how MatFormer compares with plain training, takes three more full runs: figures of
`matslice bench --only nano`, not a test.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from helpers import CHECKPOINT_FILES
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer, Gemma3nForCausalLM, Gemma3nForConditionalGeneration

from gemma3n.config import load_config, parse_config
from slicer.checkpoint import slice_checkpoint
from slicer.plan import make_plan
from standins import nano, wordnet
from standins.corpus import HELD_OUT_EVERY, load_corpus, paragraphs
from standins.folder import timm_problem

FILES = CHECKPOINT_FILES | {"README.md"}  # the nano folder carries its model card
# The default model (seed 0) on the first 32k held-out book tokens: parent 59.4, e2b_like 63.1, harsh 65.5, half 59.5,
# quarter 59.8 (its model card). Whole skipped layers cost far more than narrower FFNs at this size, so the
# width-only slices must be worse in order, by less.
PARENT_PROSE_PPL = 70
# Each slice over the one it sits in, seeds 0-2 (`matslice bench --only nano`): nested at least +3.0 % (seed 1's harsh
# over e2b_like), width-only at least +0.10 % (seed 1's half over parent).
NESTED_MARGIN, WIDTH_MARGIN = 1.015, 1.0005
needs_timm = pytest.mark.skipif(timm_problem() is not None, reason="the multimodal nano model needs timm")


@pytest.fixture(scope="module")
def nano_dir(nano_checkpoint: Path) -> Path:
    """The default checkpoint: the folder `write_nano` writes for seed 0 (trained once per machine, user cache)."""
    return nano_checkpoint


@pytest.fixture(scope="module")
def held_out(nano_dir: Path) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(nano_dir)
    return nano.token_stream(tokenizer, load_corpus().held_out[:20])


def _slice(parent: Path, out: Path, sub: nano.SubModel, modalities: tuple[str, ...] = ("text",)) -> Path:
    return slice_checkpoint(parent, out, make_plan(load_config(parent), sub.slice_spec(modalities)), progress=False)


@needs_timm
def test_folder_loads_in_stock_transformers(nano_dir: Path) -> None:
    assert {p.name for p in nano_dir.iterdir()} == FILES
    model, info = Gemma3nForConditionalGeneration.from_pretrained(nano_dir, output_loading_info=True)
    assert all(not keys for keys in info.values()), info
    text = model.config.text_config
    assert text.altup_num_inputs == 4 and text.laurel_rank > 0 and text.hidden_size_per_layer_input > 0
    assert set(text.layer_types) == {"sliding_attention", "full_attention"}
    assert text.activation_sparsity_pattern[0] > 0 and text.activation_sparsity_pattern[-1] == 0
    roles = load_config(nano_dir).text.kv_roles
    assert "reuse" in roles and "store" in roles
    card = (nano_dir / "README.md").read_text()
    assert "random" in card and "Python Software Foundation License" in card and "WordNet 3.1 License" in card
    assert "public domain" in card and "Moby Dick" in card
    assert all(prompt in card for prompt in nano.PROMPTS)


@needs_timm
def test_tokenizer_is_gemma_shaped(nano_dir: Path) -> None:
    config = json.loads((nano_dir / "config.json").read_text())
    text, audio, vision = config["text_config"], config["audio_config"], config["vision_config"]
    tokenizer = AutoTokenizer.from_pretrained(nano_dir)
    assert len(tokenizer) == text["vocab_size"] == audio["vocab_offset"] + audio["vocab_size"]
    assert text["vocab_size_per_layer_input"] == vision["vocab_offset"] == nano.TEXT_VOCAB_SIZE
    for token, token_id in nano.SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
    for name in ("boi", "eoi", "image", "boa", "eoa", "audio"):
        assert getattr(tokenizer, f"{name}_token_id") == config[f"{name}_token_id"], name
    sample = "The river was navigable for fifty miles, and the value of x is returned.\nCafé 42 ~ {ok}"
    ids = tokenizer(sample).input_ids
    assert ids[0] == nano.BOS_ID and max(ids) < nano.TEXT_VOCAB_SIZE
    assert len(ids) < len(sample) / 2, "BPE merges should shorten English text"
    assert tokenizer.decode(ids, skip_special_tokens=True) == sample  # é goes through byte fallback
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi there"}], tokenize=False)
    assert chat == "<bos><start_of_turn>user\nhi there<end_of_turn>\n"
    raw = Tokenizer.from_file(str(nano_dir / "tokenizer.json"))
    assert raw.encode(sample + chat, add_special_tokens=False).ids == tokenizer(
        sample + chat, add_special_tokens=False).input_ids  # fmt: skip


@needs_timm
def test_decoder_trained_towers_random(nano_dir: Path) -> None:
    from standins.folder import random_model

    trained = load_file(nano_dir / "model.safetensors")
    fresh = random_model(nano.nano_config(), seed=0).state_dict()
    for prefix, should_change in (("model.language_model.", True), ("model.audio_tower.", False),
                                  ("model.vision_tower.", False)):  # fmt: skip
        keys = [k for k in trained if k.startswith(prefix)]
        changed = any(not torch.equal(trained[k], fresh[k]) for k in keys)
        assert keys and changed == should_change, prefix


@needs_timm
@pytest.mark.parametrize("name", ["e2b_like", "harsh"])
def test_slice_is_the_trained_sub_model(nano_dir: Path, held_out: torch.Tensor, tmp_path: Path, name: str) -> None:
    sub = nano.NAMED[name]
    child = Gemma3nForCausalLM.from_pretrained(_slice(nano_dir, tmp_path / name, sub)).eval()
    parent = Gemma3nForConditionalGeneration.from_pretrained(nano_dir).eval()
    ids = held_out[: 2 * nano.SEQ_LEN].view(2, -1)
    with torch.no_grad(), nano.sub_models(parent) as select:
        select(sub)
        expected = parent(input_ids=ids, use_cache=False).logits
        actual = child(input_ids=ids, use_cache=False).logits
        select(nano.PARENT)
        full = parent(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(actual, full, atol=1e-3), "the slice computes the parent"
    multimodal = _slice(nano_dir, tmp_path / f"{name}-mm", sub, ())
    _, info = Gemma3nForConditionalGeneration.from_pretrained(multimodal, output_loading_info=True)
    assert all(not keys for keys in info.values()), info


def test_sub_models_never_skip_store_layers() -> None:
    rng = random.Random(0)
    samples = [nano.sample_sub_model(rng) for _ in range(400)]
    roles = parse_config(nano.text_config(), "nano").text.kv_roles
    assert all(sub.skipped <= set(nano.SKIPPABLE) for sub in samples)
    assert all(roles[i] == "reuse" for i in nano.SKIPPABLE)
    widths = {w for sub in samples for w in sub.widths}
    assert widths == {nano.FFN_WIDTH // d for d in nano.GRANULARITIES}
    assert any(sub.skipped for sub in samples) and any(len(set(sub.widths)) > 1 for sub in samples)
    for sub in samples[:50]:
        config = parse_config(nano.nano_config(text_only=True), "nano")
        make_plan(config, sub.slice_spec())  # every sampled sub-model is a valid slice


def test_training_is_repeatable() -> None:
    stream = torch.randint(0, nano.TEXT_VOCAB_SIZE, (4 * nano.SEQ_LEN,), generator=torch.Generator().manual_seed(0))
    first, _ = nano._trained_decoder(stream, seed=0, steps=2, matformer=True)
    second, _ = nano._trained_decoder(stream, seed=0, steps=2, matformer=True)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_step_gradients_are_the_whole_batch_gradient() -> None:
    torch.manual_seed(0)
    model = Gemma3nForCausalLM(nano.Gemma3nTextConfig.from_dict(nano.text_config()))
    batch = torch.randint(0, nano.TEXT_VOCAB_SIZE, (4, 33), generator=torch.Generator().manual_seed(1))
    params = list(model.parameters())
    nano._loss(model, batch).backward()
    whole = [p.grad.clone() if p.grad is not None else None for p in params]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(nano.WORKERS) as pool:
        nano._step_gradients(model, params, batch, pool)
    for param, expected in zip(params, whole, strict=True):
        assert (param.grad is None) == (expected is None)
        if expected is not None:
            torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-6)


def test_corpus_sources_are_prose_each_with_its_own_held_out_split() -> None:
    corpus = load_corpus()
    assert [source.name for source in corpus.sources] == ["books", "wordnet", "python-docs"]
    books, words, docs = corpus.sources
    assert sum(map(len, books.train)) > 4_000_000 and len(books.held_out) > 500
    assert sum(map(len, docs.train)) > 500_000 and len(docs.held_out) > 100
    assert sum(map(len, words.train)) > 5_000_000 and len(words.held_out) > 5_000
    for source in corpus.sources:
        assert not set(source.train) & set(source.held_out), source.name
        assert abs(len(source.train) / len(source.held_out) - (HELD_OUT_EVERY - 1)) < 1, source.name
        assert not {answer for _, answer in source.chats} & set(source.held_out), source.name
    assert not set(corpus.train) & set(corpus.held_out)
    assert all(question.endswith("?") for question, _ in words.chats)
    assert paragraphs("A sentence that is long enough to count as a paragraph of English prose.\n\n"
                      "   indented = code(that, is, dropped)\n\n>>> print('dropped too, it is a prompt.')") == [
        "A sentence that is long enough to count as a paragraph of English prose."]  # fmt: skip


def test_wordnet_synsets_read_as_sentences() -> None:
    line = ("09411430 17 n 01 river 0 007 @ 09448361 n 0000 | a large natural stream of water (larger than a "
            'creek); "the river was navigable for 50 miles"  ')
    assert wordnet.synset_entry(line) == ("What is a river?", "A river is a large natural stream of water (larger "
                                          "than a creek). The river was navigable for 50 miles.")
    verb = '01904930 38 v 01 swim 0 001 @ 01835496 v 0000 | travel through water; "We had to swim for 20 minutes"'
    assert wordnet.synset_entry(verb) == ("What does it mean to swim?",
                                          "To swim is to travel through water. We had to swim for 20 minutes.")
    adjective = '00002000 00 s 02 light(a) 0 wakeful 0 000 | (of sleep) easily disturbed; "in a light doze"'
    assert wordnet.synset_entry(adjective) == ("What does light mean?", "Of sleep, light means easily disturbed. "
                                               "Other words for it: wakeful. In a light doze.")
    assert wordnet.synset_entry("  1 This software and database is being provided to you") is None


def _perplexities(folder: Path, tmp: Path, stream: torch.Tensor) -> dict[str, float]:
    out = {}
    for name, sub in nano.MEASURED.items():
        child = folder if sub == nano.PARENT else _slice(folder, tmp / name, sub)
        cls = Gemma3nForConditionalGeneration if child == folder else Gemma3nForCausalLM
        out[name] = nano.perplexity(cls.from_pretrained(child).eval(), stream)
    return out


@needs_timm
def test_default_model_slices_degrade_in_order_on_held_out_prose(nano_checkpoint: Path, tmp_path: Path) -> None:
    """The default checkpoint on ~16k held-out tokens of the books, as sliced files: each nested slice (parent,
    e2b_like, harsh) at least 1.5 % worse than the one it sits in, each width-only slice (every layer at 1/2, then
    1/4 width) worse than the one before, and the parent must have learnt prose (PARENT_PROSE_PPL)."""
    tokenizer = AutoTokenizer.from_pretrained(nano_checkpoint)
    stream = nano.token_stream(tokenizer, load_corpus().source("books").held_out)[: 16 * 1024 + 1]
    ppl = _perplexities(nano_checkpoint, tmp_path, stream)
    print(ppl)
    assert ppl["parent"] < PARENT_PROSE_PPL, ppl
    for order, margin in ((("parent", "e2b_like", "harsh"), NESTED_MARGIN),
                          (("parent", "half", "quarter"), WIDTH_MARGIN)):
        for before, after in itertools.pairwise(order):
            assert ppl[after] > margin * ppl[before], (before, after, ppl)
