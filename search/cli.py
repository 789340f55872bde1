"""`matslice search [MODEL] --budget-bytes SIZE ...`: the Pareto front of slices under a byte budget.

optuna, ray and torch are imported inside the command, so every other command (and `--help`) works without
the `search` extra.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from gemma3n.errors import UserError
from gemma3n.units import human_bytes, parse_size


def _request(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from search.study import Request
    from slicer.options import bundle_options, spec_changes
    from slicer.plan import SliceSpec

    if args.layers_to_skip is not None or args.ffn_dims is not None:
        raise UserError("the search chooses --layers-to-skip and --ffn-dims itself: leave them out (fix modalities, "
                        "audio and vocabulary options only)")
    model = Path(args.model) if args.model else None
    if model is None:
        from standins.default import default_checkpoint

        model = default_checkpoint()
    if not (model / "config.json").is_file():
        raise UserError(f"{model} is not a checkpoint folder (no config.json): the search loads its weights")
    dtypes, options = bundle_options(args)
    if len(dtypes) != 1:
        raise UserError(f"--dtype {args.dtype}: the search predicts one dtype's bundle; give one, e.g. --dtype q4")
    for name in ("trials", "batch", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: give at least 1")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: give at least 1")
    if args.window < 8:
        raise UserError(f"--window {args.window} is too short: use at least 8 tokens")
    return Request(model, parse_size(args.budget_bytes, "--budget-bytes"), dtypes[0], options,
                   replace(SliceSpec(), **spec_changes(args)), args.calibration, args.trials, args.seed, args.batch,
                   args.window, args.device, args.threads, args.workers, args.ray)


def default_front_path(result: dict[str, Any]) -> Path:
    """Under search/ in the user cache, named for the model and keyed by what was asked, so reruns replace their
    own file."""
    asked = json.dumps({k: result[k] for k in ("model", "budget_bytes", "dtype", "seed", "trials", "calibration")},
                       sort_keys=True)
    from gemma3n.cache import folder

    return folder("search") / f"{Path(result['model']).name}-{hashlib.sha256(asked.encode()).hexdigest()[:10]}.json"


def report(result: dict[str, Any]) -> str:
    from search.hardware import in_words

    lines = [
        f"model: {result['model']} (parent bundle {human_bytes(result['parent_bytes'])} at {result['dtype']})",
        f"budget: {human_bytes(result['budget_bytes'])}; "
        f"smallest possible slice {human_bytes(result['smallest_bytes'])}",
        f"trials: {result['trials']} (seed {result['seed']}): {result['measured']} measured, {result['over_budget']} "
        f"over budget (not measured), {result['repeats']} repeats",
        f"calibration: {result['calibration']}, {result['calibration_positions']} positions",
        f"hardware: {in_words(result['hardware'])}; parent loaded in {result['load_seconds']:.1f} s; "
        f"{result['seconds_per_trial']:.3f} s per measured trial; {result['trials_per_minute']:.1f} trials/min",
        "",
        f"Pareto front (bundle bytes at {result['dtype']} vs mean KL against the parent, nats):",
        f"{'name':<6}{'bytes':>12}{'KL':>10}{'top-1':>8}  slice",
    ]
    for entry in result["front"]:
        skipped = ",".join(map(str, entry["layers_to_skip"])) or "none"
        widths = "/".join(sorted({str(w) for w in entry["ffn_dims"]}, key=int)) or "parent's"
        lines.append(f"{entry['name']:<6}{human_bytes(entry['bytes']):>12}{entry['kl']:>10.4f}{entry['top1']:>8.1%}"
                     f"  skip {skipped}; ffn {widths}")
    lines.append("")
    lines += [f"{entry['name']}: {entry['command']}" for entry in result["front"]]
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> None:
    from search.front import save_front
    from search.study import run_search

    result = run_search(_request(args))
    path = save_front(Path(args.save) if args.save else default_front_path(result), result["front"])
    result["front_file"] = str(path)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(report(result))
    print(f"\nfront saved to {path}: `matslice demo --front {path}` builds and compares its slices")


def register(commands: argparse._SubParsersAction) -> None:
    from slicer.options import add_bundle_options, add_slice_options

    search = commands.add_parser("search", help="find the Pareto front of slices (bundle bytes vs KL) under a budget")
    search.add_argument("model", nargs="?", help="checkpoint folder (default: the embedded nano model)")
    search.add_argument("--budget-bytes", required=True, help="largest bundle to consider, e.g. 400MB or 1.5GB")
    add_slice_options(search, preset=False)
    add_bundle_options(search)
    search.add_argument("--calibration", metavar="FILE",
                        help="UTF-8 text to measure KL on, at least 64 tokens (default: a built-in English passage)")
    search.add_argument("--trials", type=int, default=48, help="slices to propose (default 48)")
    search.add_argument("--seed", type=int, default=0, help="sampler seed: same seed and inputs, same front")
    search.add_argument("--batch", type=int, default=8,
                        help="trials asked before telling (default 8); fixed, so the front does not depend on workers")
    search.add_argument("--window", type=int, default=256, help="tokens per calibration window (default 256)")
    search.add_argument("--workers", type=int,
                        help="parallel workers, each loading the parent once (default 1; with --ray, the cluster's "
                             "CPUs / --threads)")
    search.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    search.add_argument("--ray", metavar="ADDRESS",
                        help="measure on a Ray cluster: HOST:PORT of its head, ray://HOST:PORT, auto, or local")
    search.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where candidates run (default cpu)")
    search.add_argument("--save", metavar="FILE",
                        help="the front's JSON file (default: under search/ in the user cache)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(run=cmd_search)
