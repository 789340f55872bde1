"""The slice designer's logic: a design as the Design tab holds it -> SliceSpec -> plan -> the numbers shown.

Why a module of its own, without torch or gradio: every click on the tab re-plans the whole slice, and
`slicer.plan.make_plan` reads config.json only, so an answer takes milliseconds; the same functions serve
the page, the `/design` endpoint and the tests, so what the page shows is what `matslice plan` prints.
Building (slice + export, torch) is `Designer.build`, which imports the heavy stages only when called.

A design is held per *parent* layer (skip it or not, its FFN width), as a grid shows it, and is turned
into the command line's SliceSpec (`--layers-to-skip`, one `--ffn-dims` width per kept layer, ...), so
`matslice slice` and `matslice export` reproduce a built design exactly (`commands`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gemma3n.config import ModelConfig, TextConfig, load_config
from gemma3n.dtypes import parse_dtypes
from gemma3n.errors import UserError
from gemma3n.modalities import MODALITIES
from gemma3n.rows import EMBEDDINGS, check_streamable
from slicer.footprint import bundle_sessions
from slicer.nesting import nested_widths
from slicer.options import spec_options
from slicer.plan import SlicePlan, SliceSpec, make_plan
from slicer.presets import all_presets
from slicer.report import bundle_summary, folder_tensors, layer_ranges, predicted_bytes
from slicer.vocab import VocabCut, cut_for

DEFAULT_CONTEXT = 2048
MAX_CORPUS_BYTES = 20 * 10**6
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")


# --- The parent's layers, as the grid shows them ------------------------------------------------------------
@dataclass(frozen=True)
class LayerInfo:
    """One parent layer as the grid shows it: attention kind, KV-sharing role, who reads its cache, widths."""

    index: int
    kind: str  # "sliding" or "full"
    role: str  # "own", "store" (others read its KV cache) or "reuse" (reads `store`'s)
    store: int | None
    readers: tuple[int, ...]
    width: int
    widths: tuple[int, ...]

    @property
    def label(self) -> str:
        if self.role == "store":
            return f"L{self.index} {self.kind} · KV store, read by {layer_ranges(self.readers, 'L', ', ')}"
        if self.role == "reuse":
            return f"L{self.index} {self.kind} · reuses L{self.store}'s KV"
        return f"L{self.index} {self.kind} · own KV"


def layer_grid(text: TextConfig) -> list[LayerInfo]:
    roles = text.kv_roles
    stores = [text.store_of(i) for i in range(text.num_hidden_layers)]
    return [
        LayerInfo(i, text.layer_types[i].removesuffix("_attention"), roles[i], stores[i],
                  tuple(j for j, s in enumerate(stores) if s == i), width, nested_widths(width))
        for i, width in enumerate(text.intermediate_size)
    ]


def parse_layers(text: str, count: int) -> tuple[int, ...]:
    """`all`, `sliding`, `full`, or indices and ranges (`0-4, 7`) -> layer indices, for group width changes."""
    words = text.strip().lower()
    if words in ("", "all"):
        return tuple(range(count))
    found: list[int] = []
    for part in words.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise UserError(f"layers {text!r}: write all, or indices and ranges like 0-4,7")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if first > last or last >= count:
            raise UserError(f"layers {text!r}: the parent has layers 0-{count - 1}")
        found += range(first, last + 1)
    return tuple(sorted(set(found)))


# --- A design ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """What the Design tab holds, per parent layer; `spec()` turns it into the command line's slice.

    `widths` has one entry per parent layer (a skipped layer's is kept so un-skipping restores it);
    () means the parent's. Audio settings apply only while audio is among `modalities`.
    """

    skip: tuple[int, ...] = ()
    widths: tuple[int, ...] = ()
    audio_skip: tuple[int, ...] = ()
    audio_ffn_dim: int | None = None
    modalities: tuple[str, ...] = ("text",)
    dtypes: tuple[str, ...] = ("q4",)
    context: int = DEFAULT_CONTEXT
    name: str = ""
    vocab_text: str = ""  # the corpus of a vocabulary cut, as text (empty: keep the parent's vocabulary)
    vocab_size: int | None = None
    vocab_keep_unused: bool = True
    embeddings: str = "bundled"  # or "streamed": the tables as a row file the loader reads a few rows of

    @classmethod
    def from_json(cls, data: Any) -> Design:
        """A design sent by a client; anything malformed is a UserError naming the field."""
        if not isinstance(data, Mapping):
            raise UserError("a design is a JSON object with skip, widths, modalities, dtypes, context, name")
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise UserError(f"unknown design field {unknown[0]!r}: use {', '.join(cls.__dataclass_fields__)}")

        def ints(key: str) -> tuple[int, ...]:
            value = data.get(key) or ()
            if not isinstance(value, list | tuple) or not all(_is_int(v) for v in value):
                raise UserError(f"design field {key!r} must be a list of whole numbers, got {value!r}")
            return tuple(int(v) for v in value)

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = data.get(key, default)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise UserError(f"design field {key!r} must be a list of names, got {value!r}")
            return tuple(v.strip() for v in value)

        ffn = data.get("audio_ffn_dim")
        if ffn is not None and not _is_int(ffn):
            raise UserError(f"design field 'audio_ffn_dim' must be a whole number, got {ffn!r}")
        context = data.get("context", DEFAULT_CONTEXT)
        if not _is_int(context):
            raise UserError(f"design field 'context' must be a whole number of tokens, got {context!r}")
        name, text = data.get("name") or "", data.get("vocab_text") or ""
        if not isinstance(name, str) or not isinstance(text, str):
            raise UserError(f"design fields 'name' and 'vocab_text' are text, got {name!r} and {text[:40]!r}")
        size = data.get("vocab_size")
        if size is not None and not _is_int(size):
            raise UserError(f"design field 'vocab_size' must be a whole number, got {size!r}")
        keep = data.get("vocab_keep_unused", True)
        if not isinstance(keep, bool):
            raise UserError(f"design field 'vocab_keep_unused' must be true or false, got {keep!r}")
        embeddings = data.get("embeddings", "bundled")
        if embeddings not in EMBEDDINGS:
            raise UserError(f"design field 'embeddings' must be one of {', '.join(EMBEDDINGS)}, got {embeddings!r}")
        return cls(ints("skip"), ints("widths"), ints("audio_skip"), None if ffn is None else int(ffn),
                   names("modalities", ("text",)), names("dtypes", ("q4",)), int(context), name.strip(), text,
                   None if size is None else int(size), keep, embeddings)

    def to_json(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()


def spec_of(context: Parent, design: Design) -> SliceSpec:
    """The SliceSpec of a design: what `matslice slice` is given (see `commands`)."""
    parent = context.config
    text = parent.text
    widths = design.widths or text.intermediate_size
    if len(widths) != text.num_hidden_layers:
        raise UserError(f"the design has {len(widths)} widths for the parent's {text.num_hidden_layers} layers: "
                        "give one per parent layer")
    kept = [i for i in range(text.num_hidden_layers) if i not in design.skip]
    dims = tuple(widths[i] for i in kept if 0 <= i < len(widths))
    audio = parent.audio is not None and "audio" in design.modalities
    return SliceSpec(
        layers_to_skip=tuple(sorted(design.skip)),
        ffn_dims=() if dims == tuple(text.intermediate_size[i] for i in kept) else dims,
        audio_layers_to_skip=tuple(sorted(design.audio_skip)) if audio else (),
        audio_ffn_dim=design.audio_ffn_dim if audio and design.audio_ffn_dim != parent.audio.ffn_width else None,
        modalities=("text",) if tuple(design.modalities) == ("text",) else (),
        vocab_corpus=(str(context.corpus(design.vocab_text)),) if design.vocab_text else (),
        vocab_size=design.vocab_size,
        vocab_keep_unused=design.vocab_keep_unused,
    )


def design_of(parent: ModelConfig, spec: SliceSpec, **rest: Any) -> Design:
    """The design a SliceSpec (a preset, a registered variant's slice, a search front entry) starts from."""
    text = parent.text
    kept = [i for i in range(text.num_hidden_layers) if i not in spec.layers_to_skip]
    widths = list(text.intermediate_size)
    dims = spec.ffn_dims * len(kept) if len(spec.ffn_dims) == 1 else spec.ffn_dims
    for i, width in zip(kept, dims or (), strict=False):
        widths[i] = width
    modalities = spec.modalities or default_modalities(parent)
    return Design(tuple(spec.layers_to_skip), tuple(widths), tuple(spec.audio_layers_to_skip), spec.audio_ffn_dim,
                  tuple(modalities), **rest)


def default_modalities(parent: ModelConfig) -> tuple[str, ...]:
    """Text and audio where the parent has audio: what the demo prompts with (no vision encoder to export)."""
    return ("text", "audio") if parent.audio is not None else ("text",)


def export_encoders(parent: ModelConfig, design: Design) -> set[str] | None:
    """The encoders `write_bundle` exports (None: every tower the child has), as `matslice export --modalities`."""
    if not parent.multimodal or tuple(design.modalities) == ("text",):
        return None
    if set(design.modalities) == set(parent.modalities):
        return None
    return set(design.modalities) - {"text"}


# --- Predictions ---------------------------------------------------------------------------------------------
PREDICTION_SOURCE = ("`matslice plan --dtype ... --context ...`: weights exact as the exporter lays them out, "
                     "each .onnx graph's own bytes estimated; memory as plan computes it")


def predict(plan: SlicePlan, dtypes: Sequence[str], context: int, tensors: Mapping[str, Any] | None,
            modalities: Sequence[str] | None = None, folder: Path | None = None,
            embeddings: str = "bundled") -> dict[str, Any]:
    """Per dtype: each session's download bytes and largest tensor, the bundle's download (its sessions, plus the
    side files and config.json when the parent's `folder` is at hand), and runtime memory
    (weights as loaded, the KV cache of the layers that own one, activations at batch 1) at `context` tokens:
    `matslice plan`'s own figures (slicer.report.bundle_summary), regrouped by dtype for the tab, for the sessions
    `matslice export --modalities` writes (a text+audio design has no vision encoder, though its checkpoint does).

    `tensors` are the parent's safetensors headers, needed only for a customised vision tower's session. Streamed
    `embeddings` count the row file's header and index in the download and give the row file's bytes (`rows`).
    """
    summary = bundle_summary(plan, dict(tensors) if tensors else None, tuple(dtypes), {"embeddings": embeddings},
                             context, folder)  # export's other defaults
    bundle, memory = summary["bundle"], summary["memory"]["dtypes"]
    side = sum((bundle["side_files"] or {}).values())
    kept = set(bundle_sessions(plan.child, modalities))
    sessions = {name: by for name, by in bundle["sessions"].items() if name in kept}
    out: dict[str, Any] = {}
    for dtype in dtypes:
        per = {name: {"bytes": by[dtype]["bytes"],
                      "largest_tensor": [by[dtype]["largest_tensor"]["name"], by[dtype]["largest_tensor"]["bytes"]]}
               for name, by in sessions.items()}
        largest = max(per.values(), key=lambda found: (found["largest_tensor"][1], found["largest_tensor"][0]))
        out[dtype] = {"sessions": per, "download": side + sum(found["bytes"] for found in per.values()),
                      "largest_tensor": largest["largest_tensor"], "memory": memory[dtype],
                      "rows": sum(by[dtype].get("rows_bytes", 0) for by in sessions.values())}
    return out


# --- Evaluating a design -------------------------------------------------------------------------------------
@dataclass
class Parent:
    """The checkpoint designs are cut from: its folder (None: a config alone, which can plan but not build),
    and where the corpora of vocabulary cuts are kept (`corpus`)."""

    config: ModelConfig
    folder: Path | None = None
    corpora: Path | None = None
    grid: list[LayerInfo] = field(init=False)
    _corpus_files: dict[str, Path] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.grid = layer_grid(self.config.text)

    @classmethod
    def load(cls, path: Path, corpora: Path | None = None) -> Parent:
        path = Path(path)
        return cls(load_config(path), path if path.is_dir() else None, corpora)

    @functools.cached_property
    def tensors(self) -> dict[str, Any] | None:
        """The parent's safetensors headers (None without a folder), read once: what `plan` reads of a folder."""
        return folder_tensors(self.folder)

    def corpus(self, text: str) -> Path:
        """The file holding a vocabulary corpus sent as text, named by its hash and written once.

        Why a file: `matslice slice --vocab-corpus FILE` must reproduce the design, and the server never opens
        a path a request names; the text itself is what a client sends.
        """
        if self.folder is None or self.corpora is None:
            raise UserError("a vocabulary cut needs the parent checkpoint's tokenizer.json: start the demo with "
                            "--design-parent CHECKPOINT")
        if text in self._corpus_files:  # a str caches its own hash: the text is hashed once, not per event
            return self._corpus_files[text]
        data = text.encode()
        if len(data) > MAX_CORPUS_BYTES:
            raise UserError(f"the vocabulary corpus is {len(data) / 1e6:.1f} MB: the designer takes up to "
                            f"{MAX_CORPUS_BYTES // 10**6} MB (cut larger ones with `matslice slice --vocab-corpus`)")
        path = self.corpora / f"corpus-{hashlib.sha256(data).hexdigest()[:16]}.txt"
        if not path.is_file():
            self.corpora.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
            partial.write_bytes(data)
            partial.replace(path)
        self._corpus_files = {text: path}  # the latest corpus only: a design carries one
        return path


@functools.lru_cache(maxsize=8)
def _vocab_cut(folder: str, text_vocab: int, vocab: int, corpus: str, size: int | None, keep: bool) -> VocabCut:
    """A vocabulary cut, computed once per corpus and options: the tab re-plans on every click."""
    return cut_for(Path(folder), text_vocab, vocab, (corpus,), size, keep_placeholders=keep)


@dataclass(frozen=True)
class Checked:
    """A valid design, worked out once per event: its SliceSpec (corpus written), plan and dtypes."""

    design: Design
    spec: SliceSpec
    plan: SlicePlan
    dtypes: tuple[str, ...]


def check(parent: Parent, design: Design) -> Checked:
    """The spec, plan and dtypes of a design; every invalid choice is a UserError saying why and what to do."""
    config = parent.config
    if "text" not in design.modalities:
        raise UserError("keep text among the modalities: every Gemma 3n variant decodes text")
    for modality in design.modalities:
        if modality not in config.modalities:
            raise UserError(f"the parent has no {modality} tower: choose from {', '.join(config.modalities)}")
    if not design.dtypes:
        raise UserError("choose at least one dtype to export")
    dtypes = parse_dtypes(",".join(design.dtypes))
    if design.embeddings == "streamed":
        for dtype in dtypes:
            check_streamable(dtype)
    limit = config.text.max_position_embeddings
    if not 1 <= design.context <= limit:
        raise UserError(f"context {design.context}: choose 1 to {limit} tokens (the parent's max_position_embeddings)")
    for position, (width, info) in enumerate(zip(design.widths, parent.grid, strict=False)):
        if position not in design.skip and width not in info.widths:
            raise UserError(f"layer {position} width {width} is not one of the parent's nested widths "
                            f"{', '.join(map(str, info.widths))}: a MatFormer slice keeps a trained width")
    spec = spec_of(parent, design)
    vocab = None
    if spec.vocab_corpus:
        vocab = _vocab_cut(str(parent.folder), config.text.vocab_size_per_layer_input, config.text.vocab_size,
                           spec.vocab_corpus[0], spec.vocab_size, spec.vocab_keep_unused)
    return Checked(design, spec, make_plan(config, spec, vocab), dtypes)


def evaluate(parent: Parent, design: Design, out: Path = Path("designs")) -> dict[str, Any]:
    """Everything the Design tab shows for `design`, JSON-ready: valid or the reason, plan, predictions, and the
    commands that build it into out/<name>.

    `plan` is exactly what `matslice plan PARENT <options> --json` prints for the same slice.
    """
    return assess(parent, design, out)[0]


def assess(parent: Parent, design: Design, out: Path) -> tuple[dict[str, Any], Checked | None]:
    """`evaluate`'s answer and the checked design it came from (None when invalid), worked out once."""
    try:
        checked = check(parent, design)
        plan = checked.plan
        summary = plan.summary() | predicted_bytes(plan, parent.folder, parent.tensors)
        modalities = tuple(m for m in MODALITIES if m in design.modalities)
        predicted = predict(plan, checked.dtypes, design.context, parent.tensors, modalities, parent.folder,
                            design.embeddings)
    except UserError as error:
        return {"valid": False, "message": str(error), "design": design.to_json()}, None
    return {
        "valid": True,
        "message": f"valid: {len(plan.kept_layers)} of {parent.config.text.num_hidden_layers} layers, "
                   f"{', '.join(modalities)}",
        "design": design.to_json(),
        "options": spec_options(checked.spec),
        "plan": summary,
        "predicted": predicted,
        "prediction_source": PREDICTION_SOURCE,
        "context": design.context,
        "commands": commands(parent, checked, out / (design.name or "my-design")),
    }, checked


def command_lines(parent: Parent, checked: Checked, out: Path) -> list[list[str]]:
    """The `matslice slice` and `matslice export` argument lists that build a design into out/checkpoint and
    out/bundle (one --ffn-dims width when all kept layers share it)."""
    source = str(parent.folder) if parent.folder else "PARENT_CHECKPOINT"
    checkpoint, bundle = out / "checkpoint", out / "bundle"
    export = ["--dtype", ",".join(checked.dtypes)]
    if checked.design.embeddings != "bundled":
        export += ["--embeddings", checked.design.embeddings]
    encoders = export_encoders(parent.config, checked.design)
    if encoders is not None:
        export += ["--modalities", ",".join(m for m in MODALITIES if m == "text" or m in encoders)]
    return [["matslice", "slice", source, str(checkpoint), *spec_options(checked.spec)],
            ["matslice", "export", str(checkpoint), str(bundle), *export]]


def commands(parent: Parent, checked: Checked, out: Path) -> list[str]:
    """`matslice slice ...` and `matslice export ...`: the design reproduced on the command line."""
    return [shlex.join(line) for line in command_lines(parent, checked, out)]


# --- Starting points ------------------------------------------------------------------------------------------
def starting_points(parent: Parent, slices: Mapping[str, SliceSpec] = {},  # noqa: B006 (read only)
                    front: Sequence[Mapping[str, Any]] = ()) -> dict[str, Design]:
    """Designs to start from: the parent, the presets that fit it, the given slices (registered variants),
    and the entries of a search front (`load_front`); each checked against this parent, misfits left out."""
    config = parent.config
    found = {"parent (nothing cut)": design_of(config, SliceSpec())}
    named = [(f"preset {p.name}", p.spec()) for p in all_presets()]
    named += [(f"variant {name}", spec) for name, spec in slices.items()]
    named += [(f"front {entry.get('name', i)}", SliceSpec.from_json(entry)) for i, entry in enumerate(front)]
    for label, spec in named:
        try:
            make_plan(config, spec)
        except (UserError, TypeError):
            continue
        found[label] = design_of(config, spec)
    return found


def load_front(path: Path) -> list[dict[str, Any]]:
    """The search stage's front file: a JSON list of slices (the hook `matslice demo --front FILE` feeds)."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read the search front {path}: {error}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path} is not a search front: expected a JSON list of slices")
    return entries


def slice_of_record(record: Mapping[str, Any] | None, parent: ModelConfig) -> SliceSpec | None:
    """The SliceSpec a registered variant's manifest records (`matslice` in its config), or None for a parent."""
    if not record or "kept_layers" not in record:
        return None
    kept = list(record["kept_layers"])
    skip = tuple(i for i in range(parent.text.num_hidden_layers) if i not in kept)
    audio = record.get("audio") or {}
    blocks = parent.audio.conf_num_hidden_layers if parent.audio else 0
    audio_skip = tuple(j for j in range(blocks) if "kept_blocks" in audio and j not in audio["kept_blocks"])
    ffn = audio.get("ffn_dim")
    return SliceSpec(skip, tuple(record.get("ffn_dims") or ()), audio_skip,
                     None if ffn is None or (parent.audio and ffn == parent.audio.ffn_width) else ffn,
                     tuple(record.get("modalities") or ()) if record.get("modalities") == ["text"] else ())


# --- Building ---------------------------------------------------------------------------------------------------
class Designer:
    """The Design tab's state on the server: the parent, where builds go, and one build at a time.

    A build slices the parent and exports the child inside one `atomic_folder` (designs/<name>/checkpoint
    and bundle), so a failed or interrupted build leaves nothing; the finished bundle is then handed to
    `register`, which adds it to the app's variants.
    """

    def __init__(self, parent: Parent, root: Path, slices: Mapping[str, SliceSpec] | None = None,
                 front: Sequence[Mapping[str, Any]] = ()) -> None:
        self.parent = parent
        self.root = Path(root)
        self.front = list(front)
        self.slices = dict(slices or {})
        self._lock = threading.Lock()

    def starts(self) -> dict[str, Design]:
        return starting_points(self.parent, self.slices, self.front)

    def evaluate(self, design: Design) -> dict[str, Any]:
        return evaluate(self.parent, design, self.root)

    def build(self, design: Design, taken: Sequence[str], progress: Callable[[float, str], None] | None = None
              ) -> tuple[Path, dict[str, Any], Checked]:
        """Slice and export `design` into root/<name>: the bundle folder, the evaluation it was built to, and the
        checked design (its spec is what the variant is registered with)."""
        if self.parent.folder is None:
            raise UserError("the design parent is a config, not a checkpoint: start the demo with "
                            "--design-parent CHECKPOINT to build")
        if not NAME.match(design.name or ""):
            raise UserError(f"name {design.name!r}: use 1-48 lowercase letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
        if design.name in taken:
            raise UserError(f"a variant named {design.name!r} is already served: choose another name")
        result, checked = assess(self.parent, design, self.root)
        if checked is None:
            raise UserError(result["message"])
        if not self._lock.acquire(blocking=False):
            raise UserError("another design is being built: wait for it to finish")
        try:
            return self._build(checked, result, progress or (lambda fraction, what: None)), result, checked
        finally:
            self._lock.release()

    def _build(self, checked: Checked, result: dict[str, Any], progress: Callable[[float, str], None]) -> Path:
        """Slice and export through `build_variant` (the path and cache build-web and the default variants use),
        into one atomic folder: the checkpoint `commands` rebuilds, the bundle linked from the cache, design.json.

        Progress comes from the build's own callback: a fraction and the running stage, "done" last.
        """
        from gemma3n.folders import atomic_folder
        from web_export.variant import build_variant

        out = self.root / checked.design.name
        with atomic_folder(out, overwrite=True) as work:  # a design of this name from an earlier session
            encoders = export_encoders(self.parent.config, checked.design)
            build_variant(self.parent.folder, checked.plan, work / "bundle", checked.dtypes, encoders,
                          checkpoint=work / "checkpoint", progress=progress, embeddings=checked.design.embeddings)
            (work / "design.json").write_text(json.dumps(result, indent=2) + "\n")
        return out / "bundle"
