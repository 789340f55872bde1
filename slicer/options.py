"""The slice options as a command line takes them, shared by every command that slices (`slice`, `plan`,
`build-web`, `search`): one spelling, one parser, values parsed as integers and never evaluated; and the
plan they make for a checkpoint (a vocabulary cut reads the parent's tokenizer and the corpus here). Likewise
the bundle options, shared by `export`, which writes a bundle, and `plan`, which predicts it."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from gemma3n.config import ModelConfig
from gemma3n.dtypes import DTYPES, parse_dtypes
from gemma3n.errors import UserError
from gemma3n.rows import EMBEDDINGS, check_streamable
from gemma3n.units import parse_size
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


def spec_options(spec: SliceSpec) -> list[str]:
    """The slice options (as `add_slice_options` reads them) that give `spec` back: the inverse of `slice_spec`, for
    the commands the designer and the search print. Equal widths are written once (`--ffn-dims 256`)."""
    options: list[str] = []
    if spec.layers_to_skip:
        options += ["--layers-to-skip", ",".join(map(str, spec.layers_to_skip))]
    if spec.ffn_dims:
        dims = spec.ffn_dims[:1] if len(set(spec.ffn_dims)) == 1 else spec.ffn_dims
        options += ["--ffn-dims", ",".join(map(str, dims))]
    if spec.audio_layers_to_skip:
        options += ["--audio-layers-to-skip", ",".join(map(str, spec.audio_layers_to_skip))]
    if spec.audio_ffn_dim is not None:
        options += ["--audio-ffn-dim", str(spec.audio_ffn_dim)]
    if spec.modalities:
        options += ["--modalities", ",".join(spec.modalities)]
    for corpus in spec.vocab_corpus:
        options += ["--vocab-corpus", corpus]
    if spec.vocab_size is not None:
        options += ["--vocab-size", str(spec.vocab_size)]
    if spec.cuts_vocab and not spec.vocab_keep_unused:
        options.append("--vocab-drop-unused")
    return options


def plan_for(config: ModelConfig, spec: SliceSpec, folder: Path | None) -> SlicePlan:
    """The plan of `spec` on the checkpoint at `folder` (None: a config alone, which cannot cut a vocabulary)."""
    vocab = None
    if spec.vocab_corpus and folder is not None:
        from slicer.vocab import cut_for

        vocab = cut_for(folder, config.text.vocab_size_per_layer_input, config.text.vocab_size, spec.vocab_corpus,
                        spec.vocab_size, keep_placeholders=spec.vocab_keep_unused)
    return make_plan(config, spec, vocab)


def add_bundle_options(parser: argparse.ArgumentParser) -> None:
    """How a bundle is written (`export`) or predicted (`plan`): the same options, spelled once."""
    group = parser.add_argument_group("bundle options")
    group.add_argument("--dtype", default="q4", help=f"comma-separated, from {','.join(DTYPES)} (default q4)")
    group.add_argument("--block-size", type=int, default=32, help="int4 quantization block size (default 32)")
    group.add_argument("--asymmetric", action="store_true", help="int4 with zero points (default symmetric)")
    group.add_argument("--max-file-size", default="1.5GB", help="largest file of the bundle (default 1.5GB)")
    group.add_argument("--max-tensor-bytes", default="256MiB",
                       help="split any weight or table above this, so every tensor fits a phone's WebGPU storage "
                            "binding (default 256MiB)")
    group.add_argument("--embeddings", choices=EMBEDDINGS, default="bundled",
                       help="bundled: the embedding tables in the embed_tokens session (any runtime); streamed: a row "
                            "file site/matslice.js reads by HTTP Range, a few rows a prompt (q4, q8, fp32)")


def bundle_options(args: argparse.Namespace) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(dtypes, options for `write_bundle` / `bundle_footprint`), every value checked."""
    dtypes = parse_dtypes(args.dtype)
    if args.block_size < 16 or args.block_size & (args.block_size - 1):
        raise UserError(f"--block-size {args.block_size}: choose a power of two of at least 16 (32 is usual)")
    max_file_bytes = parse_size(args.max_file_size, "--max-file-size")
    max_tensor_bytes = parse_size(args.max_tensor_bytes, "--max-tensor-bytes")
    if not 0 < max_tensor_bytes <= max_file_bytes:
        raise UserError(f"--max-tensor-bytes {max_tensor_bytes:,} must be above 0 and at most --max-file-size "
                        f"({max_file_bytes:,} bytes): a tensor cannot span two data files")
    embeddings = getattr(args, "embeddings", "bundled")
    if embeddings == "streamed":
        for dtype in dtypes:
            check_streamable(dtype)
    return dtypes, {"block_size": args.block_size, "symmetric": not args.asymmetric,
                    "max_file_bytes": max_file_bytes, "max_tensor_bytes": max_tensor_bytes, "embeddings": embeddings}
