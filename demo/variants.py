"""The variants the demo may load: a fixed registry of name -> exported bundle, built before serving.

Why a registry: the browser only ever sends variant *names*; every bundle folder is decided here, at
start-up, from `dist/web/models.json`, from folders given on the command line, or from the embedded
default checkpoint sliced and exported into `.cache/demo/`. No path from a request is ever opened.
What each column shows beside the text (slice, parameters, bytes) is read from the bundle's own
`manifest.json`, so the numbers describe exactly the files that are run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma3n.config import load_config
from gemma3n.errors import UserError
from slicer.plan import SliceSpec, make_plan
from standins import nano

MODELS_JSON = Path("dist/web/models.json")
CACHE = Path(".cache/demo")
# The default variants: the nested slices the default (nano) checkpoint was MatFormer-trained for.
DEFAULT_SLICES: dict[str, SliceSpec | None] = {
    "parent": None,
    "e2b-like": nano.E2B_LIKE.slice_spec(),
    "harsh-text": nano.HARSH.slice_spec(modalities=("text",)),
}
# The demo prompts with text and audio only, so the defaults are exported without the vision encoder.
DEFAULT_ENCODERS = {"audio"}


class UnknownVariant(ValueError):
    """A name that is not in the registry: the message lists the names that are."""


@dataclass(frozen=True)
class Variant:
    """One exported bundle and the numbers its manifest records."""

    name: str
    folder: Path
    manifest: dict[str, Any]
    checkpoint: Path | None = None  # the checkpoint it was exported from, when known (a design parent)

    @property
    def onnx_dir(self) -> Path:
        return self.folder / "onnx"

    @property
    def bytes(self) -> int:
        """Every file of the bundle, as the manifest lists them (what a browser downloads at most)."""
        return sum(int(record["bytes"]) for record in self.manifest["files"].values())

    @property
    def params(self) -> dict[str, Any]:
        return self.manifest.get("params") or {}

    @property
    def has_audio(self) -> bool:
        return "audio_encoder" in self.manifest.get("sessions", {})

    @property
    def slice_record(self) -> dict[str, Any] | None:
        return self.manifest.get("matslice")

    @property
    def modalities(self) -> list[str]:
        """What the bundle can take in: text, plus each encoder session it ships."""
        sessions = self.manifest.get("sessions", {})
        return ["text"] + [m for m in ("audio", "vision") if f"{m}_encoder" in sessions]

    @property
    def total_params(self) -> int | None:
        """The manifest's total, less the towers whose encoder the bundle does not ship."""
        total = self.params.get("total")
        if total is None:
            return None
        dropped = [m for m in ("audio", "vision") if m not in self.modalities]
        return int(total) - sum(int(self.params.get(m) or 0) for m in dropped)

    def describe_slice(self) -> str:
        """One line: which layers and FFN widths were kept, and the modalities the bundle takes."""
        record = self.slice_record
        parts = [str(record["preset"])] if record and record.get("preset") else []
        if not record:
            parts.append("parent (unsliced)")
        else:
            parts.append(f"layers {_ranges(record.get('kept_layers', []))}")
            widths = sorted(set(record.get("ffn_dims", [])))
            if widths:
                parts.append("ffn " + "/".join(str(w) for w in widths))
        parts.append("+".join(self.modalities))
        return ", ".join(parts)

    def summary(self) -> dict[str, Any]:
        """The static numbers of the variant, JSON-ready."""
        return {
            "name": self.name,
            "slice": self.describe_slice(),
            "effective_params": self.params.get("effective"),
            "total_params": self.total_params,
            "bundle_bytes": self.bytes,
            "dtype": self.manifest.get("default_dtype"),
            "audio": self.has_audio,
        }


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    spans: list[list[int]] = []
    for index in indices:
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


class Registry:
    """Registered variants by name, and which one is the parent the others are measured against."""

    def __init__(self, variants: list[Variant], parent: str | None = None) -> None:
        if not variants:
            raise UserError("no variants to serve: build some with `nox -s build_web` (matslice build-web)")
        self.variants = {v.name: v for v in variants}
        if len(self.variants) != len(variants):
            raise UserError("two variants share a name: give each bundle folder its own name")
        self.parent = parent or pick_parent(variants).name
        self.get(self.parent)

    @property
    def names(self) -> list[str]:
        return list(self.variants)

    def add(self, variant: Variant) -> None:
        """Register a variant built while serving (a design); names stay unique, the parent stays."""
        if variant.name in self.variants:
            raise UserError(f"a variant named {variant.name!r} is already served: choose another name")
        self.variants[variant.name] = variant

    def get(self, name: str) -> Variant:
        if not isinstance(name, str) or name not in self.variants:
            raise UnknownVariant(f"unknown variant {name!r}: choose from {', '.join(self.variants)}")
        return self.variants[name]


def pick_parent(variants: list[Variant]) -> Variant:
    """The unsliced bundle if there is exactly one, else the one with the most effective parameters."""
    unsliced = [v for v in variants if not v.slice_record]
    if len(unsliced) == 1:
        return unsliced[0]
    return max(variants, key=lambda v: (v.params.get("effective") or 0, v.bytes))


def load_variant(name: str, folder: Path, checkpoint: Path | None = None) -> Variant:
    """A bundle folder written by `write_bundle`; refuses anything without its manifest and sessions."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise UserError(f"{folder} has no manifest.json: pass a bundle written by `matslice export`")
    manifest = json.loads(path.read_text())
    if not {"embed_tokens", "decoder_model_merged"} <= set(manifest.get("sessions", {})):
        raise UserError(f"{folder} lacks the embed_tokens/decoder_model_merged sessions")
    return Variant(name, folder.resolve(), manifest, None if checkpoint is None else Path(checkpoint).resolve())


def from_models_json(path: Path) -> Registry:
    """The variants `matslice build-web` listed, with folders relative to models.json."""
    path = Path(path)
    data = json.loads(path.read_text())
    entries = data.get("models", data.get("variants", [])) if isinstance(data, dict) else data
    variants, parent = [], None
    for entry in entries:
        name = entry.get("name") or entry.get("id")
        where = entry.get("path") or entry.get("folder") or entry.get("dir") or f"models/{name}"
        variants.append(load_variant(name, path.parent / where))
        if entry.get("parent") is True or entry.get("role") == "parent":
            parent = name
    if isinstance(data, dict) and isinstance(data.get("parent"), str):
        parent = data["parent"]
    return Registry(variants, parent)


def from_paths(paths: list[Path], cache: Path = CACHE) -> Registry:
    """Bundles, checkpoints (exported once into `cache`) or a folder holding models.json."""
    if len(paths) == 1 and (Path(paths[0]) / "models.json").is_file():
        return from_models_json(Path(paths[0]) / "models.json")
    variants = []
    for path in map(Path, paths):
        name = path.resolve().name
        if (path / "manifest.json").is_file():
            variants.append(load_variant(name, path))
        elif (path / "config.json").is_file():
            variants.append(load_variant(name, export_cached(path, cache / "exports" / _key(path) / name), path))
        else:
            raise UserError(f"{path} is neither a bundle (manifest.json) nor a checkpoint (config.json)")
    return Registry(variants)


def _key(path: Path) -> str:
    """Cache key of a checkpoint folder: its absolute path and config, so an edited checkpoint re-exports."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    digest.update((path / "config.json").read_bytes())
    return digest.hexdigest()[:12]


def export_cached(model_dir: Path, out: Path, encoders: set[str] | None = None) -> Path:
    """`write_bundle` unless `out` already holds a finished bundle (the bundle is renamed in when complete)."""
    if not (out / "manifest.json").is_file():
        from web_export.bundle import write_bundle

        write_bundle(model_dir, out, dtypes=("q4",), modalities=encoders)
    return out


def build_defaults(cache: Path = CACHE, checkpoint: Path | None = None) -> Registry:
    """Slice the embedded default checkpoint into DEFAULT_SLICES and export each (once, then cached)."""
    from slicer.checkpoint import slice_checkpoint
    from standins.default import default_checkpoint

    parent = Path(checkpoint or default_checkpoint())
    config = load_config(parent)
    root = cache / parent.name
    variants = []
    for name, spec in DEFAULT_SLICES.items():
        bundle = root / "bundles" / name
        if not (bundle / "manifest.json").is_file():
            model = parent
            if spec is not None:
                model = root / "checkpoints" / name
                if not (model / "config.json").is_file():
                    slice_checkpoint(parent, model, make_plan(config, spec), overwrite=True, progress=False)
            export_cached(model, bundle, DEFAULT_ENCODERS if load_config(model).multimodal else None)
        variants.append(load_variant(name, bundle, parent if spec is None else root / "checkpoints" / name))
    return Registry(variants, parent="parent")


def default_registry(paths: list[Path] | None = None, models_json: Path = MODELS_JSON, cache: Path = CACHE) -> Registry:
    """What `matslice demo` serves: the given folders, else dist/web/models.json, else the built defaults."""
    if paths:
        return from_paths(paths, cache)
    if models_json.is_file():
        return from_models_json(models_json)
    return build_defaults(cache)
