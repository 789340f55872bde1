"""The slice options as a command line takes them, shared by every command that slices (`slice`, `plan`,
`build-web`, `search`): one spelling, one parser, values parsed as integers and never evaluated; and the
plan they make for a checkpoint (a vocabulary cut reads the parent's tokenizer and the corpus here)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from gemma3n.config import ModelConfig
from slicer.plan import SlicePlan, SliceSpec, make_plan
from slicer.presets import get_preset, parse_int, parse_int_list


def add_slice_options(parser: argparse.ArgumentParser, *, preset: bool = True) -> None:
    group = parser.add_argument_group("slice options")
    if preset:
        group.add_argument("--preset", help="an official or MatSlice preset (see `matslice presets`)")
    group.add_argument("--layers-to-skip", help="decoder layer indices to drop, e.g. 20,21,22 or [20, 21]")
    group.add_argument("--ffn-dims", help="FFN width per kept layer, or one width for all; 2_048 * 4 accepted")
    group.add_argument("--audio-layers-to-skip", help="conformer block indices to drop")
    group.add_argument("--audio-ffn-dim", help="audio feed-forward width to keep (units chosen by importance)")
    group.add_argument("--modalities", help="text, or text,audio,vision (the default: all the parent has)")
    group.add_argument("--vocab-corpus", action="append", metavar="PATH",
                       help="keep only the tokens this text needs (a UTF-8 file, or a folder of .txt files; repeat "
                            "for several): covered text tokenizes exactly as before, other text through smaller pieces")
    group.add_argument("--vocab-size", help="with --vocab-corpus: at most N text tokens, the most frequent first")
    group.add_argument("--vocab-drop-unused", action="store_true",
                       help="with --vocab-corpus: drop the <unusedN> placeholder tokens the corpus does not use")


def spec_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The SliceSpec fields the explicit slice options set."""
    changes: dict[str, Any] = {}
    for option in ("layers_to_skip", "ffn_dims", "audio_layers_to_skip"):
        if (value := getattr(args, option)) is not None:
            changes[option] = parse_int_list(value, "--" + option.replace("_", "-"))
    if args.audio_ffn_dim is not None:
        changes["audio_ffn_dim"] = parse_int(args.audio_ffn_dim, "--audio-ffn-dim")
    if args.modalities is not None:
        changes["modalities"] = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    if args.vocab_corpus:
        changes["vocab_corpus"] = tuple(args.vocab_corpus)
    if args.vocab_size is not None:
        changes["vocab_size"] = parse_int(args.vocab_size, "--vocab-size")
    if args.vocab_drop_unused:
        changes["vocab_keep_unused"] = False
    return changes


def slice_spec(args: argparse.Namespace) -> SliceSpec:
    """The user's slice: a preset's, with any explicit option replacing the preset's value."""
    preset = getattr(args, "preset", None)
    spec = get_preset(preset).spec() if preset else SliceSpec()
    return replace(spec, **spec_changes(args))


def plan_for(config: ModelConfig, spec: SliceSpec, folder: Path | None) -> SlicePlan:
    """The plan of `spec` on the checkpoint at `folder` (None: a config alone, which cannot cut a vocabulary)."""
    vocab = None
    if spec.vocab_corpus and folder is not None:
        from slicer.vocab import cut_for

        vocab = cut_for(folder, config.text.vocab_size_per_layer_input, config.text.vocab_size, spec.vocab_corpus,
                        spec.vocab_size, keep_placeholders=spec.vocab_keep_unused)
    return make_plan(config, spec, vocab)
