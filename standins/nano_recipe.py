"""The nano Gemma 3n's recipe, with no torch: its token layout, architecture, training settings, the prompts it
was trained to answer and its named sub-models.

Why apart from `standins.nano`: the demo, the site build and `eval` need a few of these names (the prompts, the
E2B-like slice) and must not import torch and transformers to get them; `standins.nano` trains to this recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slicer.plan import SliceSpec
from standins.tokens import BOS_ID, EOS_ID, PAD_ID, TokenLayout

# --- Token ids -------------------------------------------------------------------------------------------
TOKENS = TokenLayout(text_vocab=2048)
TEXT_VOCAB_SIZE, VOCAB_SIZE, SPECIAL_TOKENS = TOKENS.text_vocab, TOKENS.vocab_size, TOKENS.special_tokens  # 2048, 2080

# --- Architecture ----------------------------------------------------------------------------------------
NUM_LAYERS = 10  # full attention at 4 and 9 ((i + 1) % 5 == 0), sliding elsewhere
FFN_WIDTH = 512
LAYER_TYPES = {False: "sliding_attention", True: "full_attention"}
NUM_KV_SHARED = 4  # layers 6-9 reuse KV; store layers 5 (sliding) and 4 (full)
SPARSE_LAYERS = 2  # activation sparsity 0.95 on the first layers, as E4B has on its first 10 of 35

# --- Training --------------------------------------------------------------------------------------------
SEQ_LEN = 128
BATCH = 8
DEFAULT_STEPS = 1500  # 9-10 minutes on 2 cores: what a first `build_web` under 15 minutes leaves for training
LEARNING_RATE = 3e-3
WARMUP = 40
FINAL_LEARNING_RATE = 0.1  # of LEARNING_RATE, where the cosine ends
# Rows of each batch drawn from each corpus source: mostly narrative prose (books), then the general vocabulary
# (WordNet's definitions), a little documentation.
MIX = {"books": 4, "wordnet": 3, "python-docs": 1}
# Two cores, used as two Python threads of one intra-op thread each: every batch is split in two halves whose
# forward and backward run concurrently (torch releases the GIL inside its kernels), and the halves' gradients
# are summed in a fixed order, so a seed gives the same weights bit for bit. Two OpenMP threads instead ran
# 10-15x slower on a 2-core machine shared with other work (each waits for the other's core) and were not
# repeatable. The model is small enough that Python overhead limits what the second thread adds: on a busy
# 2-core machine a short A/B measured the same time per step with one worker and with two.
THREADS = 1  # intra-op threads per worker
WORKERS = 2  # Python threads, one half-batch each
EVAL_TOKENS = 32_768  # held-out tokens scored per source (the first ones), for the model card and the benchmark
# Prompts the demo and the site offer first, and the model card's samples: plain prose to continue (the books'
# chat turns taught the model to go on with a story) and a question the WordNet chat turns taught it to answer.
PROMPTS = ("The history of the city", "She opened the door and saw", "What is a river?")
SAMPLE_TOKENS = 30
GRANULARITIES = (1, 2, 4)  # FFN width divisors: full, half, quarter (nested: the first units)
WIDTH_WEIGHTS = (0.45, 0.3, 0.15)  # the remaining 0.1: an independent granularity per layer (Mix-n-Match)
SKIPPABLE = (6, 7, 8)  # KV-sharing reuse layers; the store layers 4 and 5 are never skipped
SKIP_PROBABILITY = 0.3


@dataclass(frozen=True)
class SubModel:
    """One MatFormer sub-model: an FFN width for every layer and the layers it skips."""

    widths: tuple[int, ...]
    skipped: frozenset[int] = field(default_factory=frozenset)


    def slice_spec(self, modalities: tuple[str, ...] = ()) -> SliceSpec:
        """The SliceSpec whose checkpoint computes exactly this sub-model."""
        kept = [width for i, width in enumerate(self.widths) if i not in self.skipped]
        return SliceSpec(layers_to_skip=tuple(sorted(self.skipped)), ffn_dims=tuple(kept), modalities=modalities)


# Named slices used by the model card, the demo, the site and the tests: nested, each inside the one before.
PARENT = SubModel((FFN_WIDTH,) * NUM_LAYERS)
E2B_LIKE = SubModel((FFN_WIDTH // 2,) * NUM_LAYERS, frozenset({7, 8}))
HARSH = SubModel((FFN_WIDTH // 4,) * NUM_LAYERS, frozenset({6, 7, 8}))
NAMED = {"parent": PARENT, "e2b_like": E2B_LIKE, "harsh": HARSH}
# Slices by FFN width alone (every layer kept), as Gemma 3n's Mix-n-Match slices are: measured beside NAMED.
WIDTH_ONLY = {"half": SubModel((FFN_WIDTH // 2,) * NUM_LAYERS), "quarter": SubModel((FFN_WIDTH // 4,) * NUM_LAYERS)}
MEASURED = NAMED | WIDTH_ONLY


# --- Configs ---------------------------------------------------------------------------------------------
def text_config() -> dict[str, Any]:
    """The nano decoder: E4B's structure at hidden 128, 10 layers, 4 of them KV-sharing."""
    return {
        "model_type": "gemma3n_text",
        "vocab_size": VOCAB_SIZE,
        "vocab_size_per_layer_input": TEXT_VOCAB_SIZE,
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
