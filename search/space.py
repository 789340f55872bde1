"""What the search may choose, and what each choice costs before anything runs.

The space is the parent's Mix-n-Match grid: every decoder layer kept or skipped, and every layer's FFN width
from the widths it nests (`slicer.nesting`). The options the user fixes (modalities, audio, a vocabulary
cut) hold for every candidate: the calibration is text, so a search over the audio tower could only ever
choose to shrink it, and a vocabulary cut is decided by the corpus, not by the search.

Every choice is made valid by construction (`repair`): a layer whose KV cache a kept layer reads is kept, so
the sampler never wastes a trial on a slice `make_plan` refuses. A candidate's bytes come from
`slicer.report.bundle_summary`, the arithmetic `matslice plan` prints; nothing here counts bytes itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gemma3n.config import ModelConfig
from gemma3n.safetensors import TensorInfo
from slicer.nesting import nested_widths
from slicer.plan import SlicePlan, SliceSpec, make_plan
from slicer.report import bundle_summary
from slicer.vocab import VocabCut

CONTEXT = 2048  # bundle_summary also predicts runtime memory at a context; the search reads only the bytes


@dataclass(frozen=True)
class Choice:
    """One point of the grid, per parent layer: skipped or not, and its FFN width (used when kept)."""

    skipped: frozenset[int]
    widths: tuple[int, ...]


@dataclass(frozen=True)
class Space:
    """The parent, the fixed part of every slice, and how a candidate's bundle is predicted."""

    config: ModelConfig
    base: SliceSpec  # modalities, audio and vocabulary options: the same for every candidate
    vocab: VocabCut | None
    tensors: dict[str, TensorInfo] | None
    dtype: str
    bundle_options: Mapping[str, Any]

    @property
    def layers(self) -> int:
        return self.config.text.num_hidden_layers

    def widths(self, layer: int) -> tuple[int, ...]:
        return nested_widths(self.config.text.intermediate_size[layer])

    def repair(self, choice: Choice) -> Choice:
        """The nearest valid choice: every store layer a kept layer reads is kept, and at least one layer is."""
        text = self.config.text
        skipped = set(choice.skipped)
        if len(skipped) == self.layers:  # keep the first layer that owns its KV cache
            skipped.discard(next(i for i in range(self.layers) if text.store_of(i) is None))
        for layer in range(self.layers):
            store = text.store_of(layer)
            if layer not in skipped and store is not None:
                skipped.discard(store)
        return Choice(frozenset(skipped), choice.widths)

    def spec(self, choice: Choice) -> SliceSpec:
        """The command line's slice of a (repaired) choice: one width per kept layer, or none when all are full."""
        kept = [i for i in range(self.layers) if i not in choice.skipped]
        dims = tuple(choice.widths[i] for i in kept)
        full = tuple(self.config.text.intermediate_size[i] for i in kept)
        return replace(self.base, layers_to_skip=tuple(sorted(choice.skipped)), ffn_dims=() if dims == full else dims)

    def plan(self, spec: SliceSpec) -> SlicePlan:
        return make_plan(self.config, spec, self.vocab)

    def bundle_bytes(self, spec: SliceSpec) -> int:
        """What `matslice export` writes for this slice in the search's dtype, every session of its modalities."""
        summary = bundle_summary(self.plan(spec), self.tensors, (self.dtype,), dict(self.bundle_options), CONTEXT)
        return int(summary["bundle"]["bytes"][self.dtype]["all"])

    def parent_choice(self) -> Choice:
        return Choice(frozenset(), tuple(self.config.text.intermediate_size))

    def narrowest_choice(self) -> Choice:
        """Every layer kept at its narrowest nested width."""
        return Choice(frozenset(), tuple(self.widths(i)[0] for i in range(self.layers)))

    def smallest(self) -> tuple[SliceSpec, int]:
        """The smallest slice the space holds and its bytes: one layer that reads no other's cache, narrowest.

        A slice with more layers or wider FFNs only adds tensors, so one of these is the minimum.
        """
        text = self.config.text
        found = []
        for layer in range(self.layers):
            if text.store_of(layer) is not None:
                continue
            widths = tuple(self.widths(i)[0] for i in range(self.layers))
            spec = self.spec(Choice(frozenset(range(self.layers)) - {layer}, widths))
            found.append((self.bundle_bytes(spec), layer, spec))
        size, _, spec = min(found, key=lambda f: (f[0], f[1]))
        return spec, size


def space_for(config: ModelConfig, folder: Path, base: SliceSpec, dtype: str, bundle_options: Mapping[str, Any],
              tensors: dict[str, TensorInfo] | None) -> Space:
    """The search space of the checkpoint at `folder`; a vocabulary cut is chosen once here, not per candidate."""
    vocab = None
    if base.vocab_corpus:
        from slicer.vocab import cut_for

        vocab = cut_for(folder, config.text.vocab_size_per_layer_input, config.text.vocab_size, base.vocab_corpus,
                        base.vocab_size, keep_placeholders=base.vocab_keep_unused)
    make_plan(config, base, vocab)  # the fixed options are checked before any trial
    return Space(config, base, vocab, tensors, dtype, dict(bundle_options))
