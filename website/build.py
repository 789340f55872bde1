"""`matslice build-web` (`nox -s build_web`): slice, export and lay out a static site that runs in a browser.

Why one job: a user wants a folder to put on any static host, offline, with no CDN. So the output holds
everything the page needs: the site from `site/`, `models/<variant>/` transformers.js bundles (the parent
and its slices), `models.json` (what the page lists before downloading anything), and the transformers.js
and onnxruntime-web runtime files vendored from npm (pinned by `node/package-lock.json`, see gemma3n/npm.py).

Why keys: exporting even the tiny model takes a minute, a real one far longer. Each variant is built once per
machine into the user cache, keyed by the checkpoint's content, its slice, its dtypes and the code that slices
and exports (`web_export.variant.build_variant`, the demo's path too), and linked into OUT: a rebuild, or
another clone's build, reuses every variant whose key is unchanged. Every argument is checked (dtypes, presets,
slices against the parent's config, the output folder, node/npm) before any slicing or exporting starts;
a bad one ends the job with one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gemma3n.config import ModelConfig, load_config
from gemma3n.dtypes import parse_dtypes
from gemma3n.errors import UserError
from gemma3n.folders import check_writable
from gemma3n.modalities import TEXT_SESSIONS
from gemma3n.rows import check_streamable
from slicer.options import plan_for, spec_changes
from slicer.plan import SlicePlan, SliceSpec
from slicer.presets import get_preset
from web_export.manifest import Manifest
from web_export.variant import build_variant

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
DEFAULT_OUT = Path("dist/web")
DEFAULT_DTYPES = "q4"
# transformers.min.js bundles onnxruntime-web's JS. The page points it at one of two WASM builds: the asyncify build
# carries the WebGPU execution provider; the plain build runs WASM only, with less CPU per token (no asyncify
# instrumentation). The jsep build does not work with this JS for WebGPU ("webgpuInit is not a function").
RUNTIME_FILES = {
    "@huggingface/transformers/dist/transformers.min.js": "transformers.min.js",
    **{f"onnxruntime-web/dist/{build}.{ext}": f"{build}.{ext}" for build in
       ("ort-wasm-simd-threaded.asyncify", "ort-wasm-simd-threaded") for ext in ("mjs", "wasm")},
}


@dataclass(frozen=True)
class Variant:
    """One bundle to build: the parent as it is (`plan` None) or one slice of it (planned: its choices checked)."""

    id: str
    label: str
    plan: SlicePlan | None = None


VOCAB_OPTIONS = ("vocab_corpus", "vocab_size", "vocab_keep_unused")


def custom_spec(args: argparse.Namespace) -> SliceSpec | None:
    """The custom slice the shape options describe (None when none was given), with the vocabulary options."""
    changes = spec_changes(args)
    shape = {k: v for k, v in changes.items() if k not in VOCAB_OPTIONS}
    return replace(SliceSpec(), **changes) if shape else None


def vocab_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The vocabulary options, which apply to every slice of the build (presets, custom, the default)."""
    return {k: v for k, v in spec_changes(args).items() if k in VOCAB_OPTIONS}


def check_out(out: Path) -> None:
    """OUT must be absent, empty, or an earlier build (it has models.json): never someone else's folder."""
    check_writable(out)
    if out.is_dir() and any(out.iterdir()) and not (out / "models.json").is_file():
        raise UserError(f"--out {out} is not empty and holds no earlier build (no models.json): choose another folder")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "model"


def parent_id(model: Path, is_default: bool) -> str:
    """`gemma3n-nano` for the embedded default (its cache folder is `<kind>-seed<n>-<key>`), else the folder name."""
    return f"gemma3n-{model.name.split('-')[0]}" if is_default else slug(model.name)


def default_slice(config: ModelConfig) -> tuple[SliceSpec, str]:
    """The default's browser slice: the nano model's E2B-like slice, text only, the one it was MatFormer-trained
    to serve (every FFN at half width, KV-sharing layers 7 and 8 dropped), so the page's default variant is a
    nested sub-model rather than an arbitrary cut. A default of another shape gets the same idea generically:
    the second-to-last layer (KV-sharing in Gemma 3n, so no KV store is lost) dropped and every FFN halved."""
    from standins import nano_recipe as nano

    text = config.text
    if (text.num_hidden_layers, max(text.intermediate_size)) == (nano.NUM_LAYERS, nano.FFN_WIDTH):
        return nano.E2B_LIKE.slice_spec(modalities=("text",)), "e2b-like-text"
    layers, width = text.num_hidden_layers, max(text.intermediate_size) // 2
    spec = SliceSpec(layers_to_skip=(layers - 2,), ffn_dims=(width,), modalities=("text",))
    return spec, f"{layers - 1}l-ffn{width}-text"


def slice_name(plan: SlicePlan) -> str:
    """A custom slice's name from its shape, with a short hash so two different slices never collide."""
    digest = hashlib.sha256(json.dumps(plan.record, sort_keys=True).encode()).hexdigest()[:6]
    text = "-text" if plan.text_only_child else ""
    return f"{len(plan.kept_layers)}l{text}-{digest}"


def resolve_variants(args: argparse.Namespace, model: Path, is_default: bool) -> list[Variant]:
    """Every variant of this build, each slice validated against the parent's config (no weights read)."""
    config = load_config(model)
    base = parent_id(model, is_default)
    vocab = vocab_changes(args)
    variants = [] if args.no_parent else [Variant(base, f"{base} (parent)")]
    for name in args.preset:
        preset = get_preset(name)
        variants.append(Variant(f"{base}-{slug(preset.name)}", preset.name,
                                plan_for(config, replace(preset.spec(), **vocab), model)))
    spec = custom_spec(args)
    if spec is None and is_default and not args.preset:
        spec, name = default_slice(config)
        spec = replace(spec, **vocab)
        args.name = args.name or name
    elif spec is None and vocab and not args.preset:  # a vocabulary cut alone is a slice too
        spec = replace(SliceSpec(), **vocab)
    if spec is not None:
        plan = plan_for(config, spec, model)
        name = slug(args.name) if args.name else slice_name(plan)
        variants.append(Variant(f"{base}-{name}", f"{base} {name}", plan))
    if not variants:
        raise UserError("--no-parent with no slice leaves nothing to build: add --preset or slice options")
    ids = [v.id for v in variants]
    if len(set(ids)) != len(ids):
        raise UserError(f"two variants share a name ({', '.join(ids)}): pass --name for the custom slice")
    return variants


def models_entry(variant: Variant, bundle: Path, key: str, out: Path) -> dict[str, Any]:
    """What the page shows before downloading: slice, parameters, bytes per dtype, sessions, modalities."""
    manifest = Manifest.load(bundle)
    sessions = list(manifest.sessions)
    text_sessions = [s for s in TEXT_SESSIONS if s in sessions]
    audio = not manifest.text_only and {"audio_encoder", "vision_encoder"} <= set(sessions)
    slice_info = None
    if variant.plan is not None:
        summary = variant.plan.summary()
        slice_info = {k: summary[k] for k in ("preset", "kept_layers", "skipped_layers", "modalities")}
        slice_info["ffn_dims"] = list(variant.plan.ffn_dims)
        slice_info["audio"] = variant.plan.record.get("audio")
        slice_info["vocab"] = variant.plan.record.get("vocab")
    return {
        "id": variant.id,
        "label": variant.label,
        "path": bundle.relative_to(out).as_posix() + "/",
        "parent": variant.plan is None,
        "slice": slice_info,
        "params": manifest.params,
        "layers": len(variant.plan.kept_layers) if variant.plan is not None else None,
        "dtypes": list(manifest.dtypes),
        "default_dtype": manifest.default_dtype,
        "sessions": sessions,
        "text_sessions": text_sessions,
        "audio": audio,
        "bytes": {d: {"text": manifest.download(d, text_sessions), "all": manifest.download(d)}
                  for d in manifest.dtypes},
        "largest_tensor": manifest.largest_tensor,
        "not_on_wasm": {d: info["not_on_wasm"] for d, info in manifest.data["dtype_info"].items()},
        "embeddings": manifest.data["embeddings"],
        "build_key": key,
    }


def vendor_runtime(out: Path) -> dict[str, str]:
    """Copy transformers.js and the onnxruntime-web WASM build the page loads into OUT/vendor/."""
    from gemma3n.npm import package_file, package_version

    vendor = out / "vendor"
    shutil.rmtree(vendor, ignore_errors=True)
    vendor.mkdir(parents=True)
    for source, name in RUNTIME_FILES.items():
        shutil.copyfile(package_file(source), vendor / name)
    return {package: package_version(package) for package in ("@huggingface/transformers", "onnxruntime-web")}


def copy_site(out: Path) -> None:
    """The static page from site/, without its npm files."""
    for path in SITE.iterdir():
        target = out / path.name
        if path.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(path, target)
        else:
            shutil.copyfile(path, target)


def write_models_json(out: Path, entries: list[dict[str, Any]], runtime: dict[str, str], source: Path,
                      prompts: Sequence[str] = ()) -> None:
    """models.json; ``source`` is the checkpoint every variant was cut from (on the machine that built them: the
    demo's Design tab cuts it), ``prompts`` (the default model's own, which it was trained to answer) prefill
    the page."""
    default = next((e["id"] for e in entries if not e["parent"]), entries[0]["id"] if entries else None)
    data = {"format": 1, "default": default, "runtime": runtime,
            "source": str(source.resolve()), "variants": entries}
    if prompts:
        data["prompts"] = list(prompts)
    tmp = out / ".models.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(out / "models.json")


def remove_stale(out: Path, keep: set[str]) -> None:
    """Variant folders an earlier build made that this one does not list (OUT is a MatSlice build)."""
    models = out / "models"
    for path in models.iterdir() if models.is_dir() else ():
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path)


def build(args: argparse.Namespace) -> list[tuple[dict[str, Any], str]]:
    """Check everything, then build each variant (or reuse it), the runtime and the site."""
    from gemma3n.npm import check_tools, ensure_installed

    dtypes = parse_dtypes(args.dtype)
    embeddings = getattr(args, "embeddings", "bundled")
    if embeddings == "streamed":
        for dtype in dtypes:
            check_streamable(dtype)
    out = Path(args.out)
    check_out(out)
    check_tools()
    custom_spec(args)  # parses the custom slice's numbers before anything is built
    if args.model is not None and not Path(args.model).is_dir():
        raise UserError(f"--model {args.model} is not a folder: pass a Gemma 3n checkpoint folder")
    prompts: tuple[str, ...] = ()
    if args.model is None:
        from standins.default import default_checkpoint
        from standins.nano_recipe import PROMPTS

        model, prompts = default_checkpoint(), PROMPTS
    else:
        model = Path(args.model)
    variants = resolve_variants(args, model, args.model is None)

    ensure_installed()
    (out / "models").mkdir(parents=True, exist_ok=True)
    remove_stale(out, {v.id for v in variants})
    runtime = vendor_runtime(out)
    if not (out / "models.json").is_file():  # marks OUT as a MatSlice build before the first (long) export
        write_models_json(out, [], runtime, model, prompts)
    copy_site(out)
    built: list[tuple[dict[str, Any], str]] = []
    for variant in variants:
        print(f"{variant.id} ({', '.join(dtypes)}) ...", flush=True)
        done = build_variant(model, variant.plan, out / "models" / variant.id, dtypes, embeddings=embeddings)
        note = "reused" if done.reused else f"built in {done.seconds:.0f}s"
        built.append((models_entry(variant, done.bundle, done.key, out), note))
        write_models_json(out, [entry for entry, _ in built], runtime, model, prompts)
    return built


def report(built: Sequence[tuple[dict[str, Any], str]], out: Path) -> None:
    for e, note in built:
        dtype = e["default_dtype"]
        params = e["params"]["effective_published"]
        print(f"  {e['id']:<28} {note:<14} {len(e['sessions'])} sessions, {params:,} effective params, "
              f"{e['bytes'][dtype]['text'] / 1e6:.1f} MB text / {e['bytes'][dtype]['all'] / 1e6:.1f} MB all ({dtype})")
    print(f"wrote {out}/ (site, models.json, vendor/ runtime, {len(built)} variant(s))")
    print(f"serve it: nox -s serve   (or: matslice serve {out}), then open http://127.0.0.1:8000/")
    print("host it: copy the folder to any static host; _headers (Netlify, Cloudflare), .htaccess (Apache) and "
          "vercel.json set the COOP/COEP headers threaded WASM needs")
