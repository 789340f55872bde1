"""The variants the demo may load: a fixed registry of name -> exported bundle, built before serving.

Why a registry: the browser only ever sends variant *names*; every bundle folder is decided here, at
start-up, from `dist/web/models.json`, from folders given on the command line, or from the embedded
default checkpoint sliced and exported into the user cache (`web_export.variant`). No path from a request
is ever opened.
What each column shows beside the text (slice, parameters, bytes) is read from the bundle's own
`manifest.json`, so the numbers describe exactly the files that are run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gemma3n.cache import code_key, folder
from gemma3n.errors import UserError
from gemma3n.modalities import TEXT_SESSIONS
from slicer.plan import SliceSpec
from slicer.report import layer_ranges
from standins import nano_recipe as nano
from web_export.manifest import NAME as MANIFEST
from web_export.manifest import Manifest
from web_export.variant import build_variant

MODELS_JSON = Path("dist/web/models.json")
# The default variants: the nested slices the default (nano) checkpoint was MatFormer-trained for.
DEFAULT_SLICES: dict[str, SliceSpec | None] = {
    "parent": None,
    "e2b-like": nano.E2B_LIKE.slice_spec(),
    "harsh-text": nano.HARSH.slice_spec(modalities=("text",)),
}
# The demo prompts with text and audio only, so the defaults are exported without the vision encoder.
DEFAULT_ENCODERS = {"audio"}


def default_cache() -> Path:
    """The user cache's demo/ folder for this code: designs, their corpora and the default slices' checkpoints.

    Keyed by the code that slices and exports (and decides the default slices), so a change to it builds anew
    instead of serving a bundle the old code wrote."""
    return folder("demo") / code_key("gemma3n", "slicer", "web_export", "demo.variants")


class UnknownVariant(ValueError):
    """A name that is not in the registry: the message lists the names that are."""


@dataclass(frozen=True)
class Variant:
    """One exported bundle and the numbers its manifest records."""

    name: str
    folder: Path
    manifest: dict[str, Any]
    checkpoint: Path | None = None  # the checkpoint it was exported from, when known (a design parent)
    searched: dict[str, Any] | None = None  # a search front's numbers: predicted bytes, measured KL and top-1

    @property
    def onnx_dir(self) -> Path:
        return self.folder / "onnx"

    @property
    def bytes(self) -> int:
        """What a browser downloads to run the bundle at its default dtype (every session, the side files)."""
        return Manifest(self.folder, self.manifest).download()

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
            parts.append(f"layers {layer_ranges(record.get('kept_layers', []))}")
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
            "search": self.searched,
        }

    def label(self) -> str:
        """The name as the variant list shows it: with the search's predicted bytes and measured KL / top-1."""
        if not self.searched:
            return self.name
        found = self.searched
        return (f"{self.name} · {found['bytes'] / 1e6:.2f} MB predicted · KL {found['kl']:.3f} · "
                f"top-1 {found['top1']:.0%}")


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

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) per variant, as a picker lists them: a front's slices show predicted bytes, KL, top-1."""
        return [(self.get(name).label(), name) for name in self.names]

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
    manifest = Manifest.load(Path(folder))
    if not set(TEXT_SESSIONS) <= set(manifest.sessions):
        raise UserError(f"{folder} lacks the embed_tokens/decoder_model_merged sessions")
    return Variant(name, Path(folder).resolve(), manifest.data,
                   None if checkpoint is None else Path(checkpoint).resolve())


def from_models_json(path: Path) -> Registry:
    """The variants `matslice build-web` listed, with folders relative to models.json; the parent variant keeps
    the checkpoint they were cut from (models.json's `source`) where it is still a checkpoint on this machine."""
    path = Path(path)
    data = json.loads(path.read_text())
    entries = data.get("models", data.get("variants", [])) if isinstance(data, dict) else data
    source = Path(data["source"]) if isinstance(data, dict) and data.get("source") else None
    if source is not None and not (source / "config.json").is_file():
        source = None
    variants, parent = [], None
    for entry in entries:
        name = entry.get("name") or entry.get("id")
        where = entry.get("path") or entry.get("folder") or entry.get("dir") or f"models/{name}"
        is_parent = entry.get("parent") is True or entry.get("role") == "parent"
        variants.append(load_variant(name, path.parent / where, source if is_parent else None))
        if is_parent:
            parent = name
    if isinstance(data, dict) and isinstance(data.get("parent"), str):
        parent = data["parent"]
    return Registry(variants, parent)


def from_paths(paths: list[Path]) -> Registry:
    """Bundles, checkpoints (each exported once into the user cache, keyed by its content) or a folder holding
    models.json."""
    if len(paths) == 1 and (Path(paths[0]) / "models.json").is_file():
        return from_models_json(Path(paths[0]) / "models.json")
    variants = []
    for path in map(Path, paths):
        name = path.resolve().name
        if (path / MANIFEST).is_file():
            variants.append(load_variant(name, path))
        elif (path / "config.json").is_file():
            variants.append(load_variant(name, build_variant(path, None).bundle, path))
        else:
            raise UserError(f"{path} is neither a bundle (manifest.json) nor a checkpoint (config.json)")
    return Registry(variants)


def build_defaults(cache: Path | None = None, checkpoint: Path | None = None) -> Registry:
    """Slice the embedded default checkpoint into DEFAULT_SLICES and export each (once, then cached), placed as
    `cache`/<parent>/bundles/NAME (folders named for the variant, as `matslice demo FOLDER...` names them) beside
    the slices' checkpoints, checkpoints/NAME (the tests run them in PyTorch beside the bundles)."""
    from standins.default import default_checkpoint

    parent = Path(checkpoint or default_checkpoint())
    root = (cache or default_cache()) / parent.name
    variants = []
    for name, spec in DEFAULT_SLICES.items():
        model = parent if spec is None else root / "checkpoints" / name
        built = build_variant(parent, spec, root / "bundles" / name, ("q4",), DEFAULT_ENCODERS,
                              checkpoint=None if spec is None else model)
        variants.append(load_variant(name, built.bundle, model))
    return Registry(variants, parent="parent")


def pick_front(entries: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most `most` entries of a front (sorted by bytes), evenly spread from the smallest to the largest."""
    if len(entries) <= most:
        return list(entries)
    if most == 1:
        return [entries[-1]]
    return [entries[round(i * (len(entries) - 1) / (most - 1))] for i in range(most)]


def build_front(entries: list[dict[str, Any]], most: int = 6) -> Registry:
    """The parent and a search front's slices (`matslice search --save`), each sliced and exported once through
    the same path as the defaults, with every modality its slice keeps, so a bundle is the one whose bytes the
    search predicted. Each variant carries the search's numbers for the variant list."""
    models = {entry.get("model") for entry in entries}
    if not entries or len(models) != 1 or None in models:
        raise UserError("the search front must list at least one slice, all of one parent (`model`): pass a file "
                        "written by `matslice search --save`")
    parent = Path(models.pop())
    if not (parent / "config.json").is_file():
        raise UserError(f"the search front slices {parent}, which is not a checkpoint folder here: run the demo where "
                        "the search ran, or search again")
    variants = [load_variant("parent", build_variant(parent, None, None, ("q4",), DEFAULT_ENCODERS).bundle, parent)]
    for entry in pick_front(entries, most):
        built = build_variant(parent, SliceSpec.from_json(entry), None, (str(entry.get("dtype") or "q4"),))
        searched = {k: entry[k] for k in ("bytes", "kl", "top1") if k in entry}
        variants.append(replace(load_variant(str(entry["name"]), built.bundle), searched=searched))
    return Registry(variants, parent="parent")


def default_registry(paths: list[Path] | None = None, models_json: Path = MODELS_JSON,
                     cache: Path | None = None) -> Registry:
    """What `matslice demo` serves: the given folders, else dist/web/models.json, else the built defaults."""
    if paths:
        return from_paths(paths)
    if models_json.is_file():
        return from_models_json(models_json)
    return build_defaults(cache)
