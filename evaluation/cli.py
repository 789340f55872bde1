"""The evaluation stage's commands: `matslice verify` (a bundle against PyTorch) and `matslice eval` (a variant
against its parent)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gemma3n.config import load_config
from gemma3n.errors import UserError
from web_export.manifest import Manifest


def _default_pair() -> tuple[Path, Path]:
    """The embedded default (nano) model and its E2B-like nested slice, built once and cached beside it."""
    from slicer.checkpoint import slice_checkpoint
    from slicer.plan import make_plan
    from standins import nano_recipe as nano
    from standins.default import default_checkpoint

    parent = default_checkpoint()
    variant = parent.with_name(parent.name + "-e2b-like")
    if not (variant / "config.json").is_file():
        slice_checkpoint(parent, variant, make_plan(load_config(parent), nano.E2B_LIKE.slice_spec()), overwrite=True)
    return variant, parent


def cmd_eval(args: argparse.Namespace) -> None:
    if (args.variant is None) != (args.parent is None):
        raise UserError("give both VARIANT and PARENT, or neither (the default model and its E2B-like slice)")
    variant, parent = _default_pair() if args.variant is None else (Path(args.variant), Path(args.parent))
    for folder in (variant, parent):
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder: pass a checkpoint folder or an exported bundle")
    if args.window < 8:
        raise UserError(f"--window {args.window} is too short: use at least 8 tokens")
    from evaluation.compare import evaluate
    from evaluation.data import TEXT, load_clips, speech_clips

    text = TEXT
    if args.text:
        try:
            text = Path(args.text).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --text {args.text} ({exc}): pass a UTF-8 text file") from None
    clips = load_clips(Path(args.audio)) if args.audio else None
    if clips is None and not args.no_audio:
        clips = speech_clips()
    result = evaluate(variant, parent, text=text, clips=clips, window=args.window, dtype=args.dtype,
                      parent_dtype=args.parent_dtype)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    t = result["text"]
    print(f"text: {t['positions']} positions; perplexity parent {t['parent_perplexity']:.3f}, "
          f"variant {t['variant_perplexity']:.3f}; KL {t['kl_mean']:.4f}; top-1 agreement {t['top1_agreement']:.3f}")
    if result["audio"]:
        print(f"audio: {result['audio']['clips']} clips; encoder output cosine {result['audio']['cosine_mean']:.4f}")


def cmd_verify(args: argparse.Namespace) -> None:
    bundle, model = Path(args.bundle), Path(args.model)
    load_config(model)
    manifest = Manifest.load(bundle)
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps}: decode at least one step")
    from evaluation.parity import check_parity

    result, failures = {}, []
    for dtype in manifest.dtypes:
        report = check_parity(model, bundle, dtype, steps=args.steps)
        result[dtype] = report.summary()
        if not report.passed:
            failures.append(dtype)
        if not args.json:
            tol = report.tolerance
            if tol.max_logits_diff is not None:
                measured = (f"max |logits diff| {report.max_logits_diff:.2e} (at most {tol.max_logits_diff:g}), "
                            f"greedy ids {'match' if report.torch_ids == report.onnx_ids else 'differ'}")
            else:
                measured = (f"KL {report.kl_mean:.2e} (at most {tol.max_kl:g}), top-1 agreement {report.top1:.3f} "
                            f"(at least {tol.min_top1:g})")
            print(f"{dtype}: {measured}; {len(report.logits_max_diff) - 1} cached steps, {report.positions} "
                  f"positions, against {tol.reference}: {'ok' if report.passed else 'FAILED'}")
    if args.json:
        print(json.dumps(result, indent=2))
    if failures:
        raise UserError(f"{bundle} does not match {model} at {', '.join(failures)}: re-export it (matslice export)")


def register(commands: argparse._SubParsersAction) -> None:
    verify = commands.add_parser("verify", help="check a bundle against PyTorch in onnxruntime, every dtype")
    verify.add_argument("bundle")
    verify.add_argument("model")
    verify.add_argument("--steps", type=int, help="cached decode steps (default: 8 past the sliding window)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=cmd_verify)

    parser = commands.add_parser("eval", help="compare a variant (checkpoint or bundle) with its parent")
    parser.add_argument("variant", nargs="?", help="checkpoint folder or bundle (default: the nano model's slice)")
    parser.add_argument("parent", nargs="?", help="checkpoint folder or bundle (default: the nano model)")
    parser.add_argument("--text", help="a UTF-8 text file (default: a built-in passage)")
    parser.add_argument("--audio", help="a folder of WAV clips (default: built-in espeak-ng speech)")
    parser.add_argument("--no-audio", action="store_true", help="skip the audio comparison")
    parser.add_argument("--window", type=int, default=256, help="tokens per scored window (default 256)")
    parser.add_argument("--dtype", help="the variant bundle's dtype to run (default: the bundle's own)")
    parser.add_argument("--parent-dtype", help="the parent bundle's dtype to run (default: the bundle's own)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=cmd_eval)
