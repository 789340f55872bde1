"""A slice computed inside its loaded parent: the child's logits without writing the child.

Why: a search over slices measures hundreds of candidates, and writing (then loading) a checkpoint per
candidate costs far more than the forward pass that measures it. `masked_slices` patches one loaded Gemma 3n
(Gemma3nForCausalLM, or Gemma3nForConditionalGeneration's language model) so that `select(plan)` makes its
next forward compute exactly what `slice_checkpoint(plan)` would write and stock transformers would load:

- a skipped decoder layer passes its hidden states (all AltUp streams) through untouched. The parent's
  per-layer input for that layer is computed and not used, which is what the child does by dropping that
  layer's slice of the per-layer embedding table and projection: each kept layer still gets its own slice.
- A kept layer's FFN runs on its first `w` units with the weights *sliced*, not zero-masked: activation
  sparsity (the Gaussian top-k of the first layers) takes its mean and deviation over the width, so only
  slicing matches the child.
- KV sharing needs nothing: `make_plan` never skips a store layer a kept layer reads, so every kept reader
  finds the same keys and values in the parent's shared-KV slots as it would in the child's.

Prefill only (call the model with `use_cache=False`): a cache would keep empty entries for skipped layers.
A vocabulary cut and the audio options change tokens and the audio tower, not the decoder's computation on
the parent's tokens, so they are refused here rather than silently ignored. torch is imported here and only
here in the slicer package, so `slicer.plan` stays importable without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from slicer.plan import SlicePlan


@dataclass
class _Selection:
    """What the patched forwards read: the layers to pass through and each kept layer's FFN width."""

    skipped: frozenset[int] = frozenset()
    widths: dict[int, int] = field(default_factory=dict)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The text decoder's layers of a Gemma3nForCausalLM or Gemma3nForConditionalGeneration."""
    inner = model.model
    return getattr(inner, "language_model", inner).layers


def _mlp_forward(mlp: torch.nn.Module, hidden: torch.Tensor, width: int) -> torch.Tensor:
    """Gemma3nTextMLP.forward on the first `width` units (the nested MatFormer sub-network)."""
    gate = F.linear(hidden, mlp.gate_proj.weight[:width])
    if mlp.activation_sparsity > 0.0:
        gate = mlp._gaussian_topk(gate)
    up = F.linear(hidden, mlp.up_proj.weight[:width])
    return F.linear(mlp.act_fn(gate) * up, mlp.down_proj.weight[:, :width])


def _check(plan: SlicePlan, layers: torch.nn.ModuleList) -> None:
    if plan.parent.text.num_hidden_layers != len(layers):
        raise ValueError(f"the plan slices a {plan.parent.text.num_hidden_layers}-layer parent, the model has "
                         f"{len(layers)} decoder layers")
    if plan.vocab is not None:
        raise ValueError("a vocabulary cut changes the tokens, not the decoder: measure its plan without the cut")
    parent_audio = plan.parent.audio
    if plan.kept_audio_blocks is not None and parent_audio is not None and (
            plan.audio_ffn_dim is not None or len(plan.kept_audio_blocks) != parent_audio.conf_num_hidden_layers):
        raise ValueError("the audio options change the audio tower, which the masked decoder does not compute")


@contextmanager
def masked_layers(model: torch.nn.Module) -> Iterator[Callable[[frozenset[int], Mapping[int, int]], None]]:
    """Patch `model` so that `choose(skipped, widths)` makes its next forward pass the `skipped` decoder layers
    through and run layer i's FFN on its first `widths[i]` units (layers not in `widths`: full width).

    The patches are instance attributes shadowing the modules' own `forward`, removed on exit, so the model
    is the stock parent again afterwards. Training the nano model's MatFormer sub-models uses this directly;
    `masked_slices` checks a plan and chooses through it.
    """
    layers = decoder_layers(model)
    selection = _Selection()

    def passable(index: int, layer: torch.nn.Module) -> Callable[..., torch.Tensor]:
        forward = layer.forward
        return lambda hidden, *args, **kwargs: hidden if index in selection.skipped else forward(hidden, *args,
                                                                                                   **kwargs)

    def nested(index: int, mlp: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        forward = mlp.forward
        full = mlp.gate_proj.weight.shape[0]

        def run(hidden: torch.Tensor) -> torch.Tensor:
            width = selection.widths.get(index, full)
            return forward(hidden) if width == full else _mlp_forward(mlp, hidden, width)
        return run

    for index, layer in enumerate(layers):
        layer.forward = passable(index, layer)
        layer.mlp.forward = nested(index, layer.mlp)

    def choose(skipped: frozenset[int], widths: Mapping[int, int]) -> None:
        selection.skipped, selection.widths = frozenset(skipped), dict(widths)

    try:
        yield choose
    finally:
        for layer in layers:
            del layer.forward, layer.mlp.forward


@contextmanager
def masked_slices(model: torch.nn.Module) -> Iterator[Callable[[SlicePlan | None], None]]:
    """Patch `model` so that `select(plan)` switches which slice its next forward computes (None: the parent)."""
    layers = decoder_layers(model)
    with masked_layers(model) as choose:

        def select(plan: SlicePlan | None) -> None:
            if plan is None:
                choose(frozenset(), {})
                return
            _check(plan, layers)
            choose(frozenset(plan.skipped_layers), dict(zip(plan.kept_layers, plan.ffn_dims, strict=True)))

        yield select
