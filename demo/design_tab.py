"""The Design tab: a parent's layers as a grid (skip, FFN width), its towers, dtypes and context, the plan's numbers
on every change, and Build, which slices and exports the design into the compared variants.

Why a class: the tab has some forty widgets. Its handlers take them as one dict (Gradio's set-of-components
inputs) and read each by name, so adding a widget never shifts another's position; each event turns the widgets
into one `Design` and checks it once (demo/design.py), and answers with a dict of the outputs it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from demo.compare import Comparer
from demo.design import Design, Designer, parse_layers
from demo.plot import figure
from demo.variants import load_variant
from gemma3n.dtypes import PREFERENCE
from gemma3n.errors import UserError
from gemma3n.modalities import MODALITIES
from gemma3n.rows import EMBEDDINGS
from gemma3n.units import count, human_bytes
from slicer.nesting import snap

CSS = """
.layer { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px !important; }
.layer.kv-store { border: 2px solid #d97706; background: #fff7ed; }
.layer.kv-reuse { background: #f0f9ff; }
.layer .layer-head p { font-size: 0.85em; margin: 0; line-height: 1.25; }
#design-verdict.invalid { border-left: 4px solid #d62728; padding-left: 8px; }
#design-verdict.valid { border-left: 4px solid #2ca02c; padding-left: 8px; }
"""
QUIET = {"api_visibility": "private", "queue": False}  # the tab's own events: no API endpoint, no queue


class DesignTab:
    """The tab's widgets, laid out on construction inside a `gr.Tab`, and its handlers.

    `picked` and `plot` are the Compare tab's variant picker and plot, which a build updates.
    """

    def __init__(self, comparer: Comparer, designer: Designer, picked: gr.Dropdown, plot: gr.Plot) -> None:
        self.comparer, self.designer = comparer, designer
        self.picked, self.plot = picked, plot
        parent = designer.parent
        self.grid, self.audio = parent.grid, parent.config.audio
        self.first = next(iter(designer.starts().values()))
        self._layout()
        self.inputs = {*self.skips, *self.widths, self.audio_skip, self.audio_ffn, self.modalities, self.dtypes,
                       self.embeddings, self.context, self.vocab_text, self.vocab_size, self.vocab_drop, self.name}
        self.outputs = [self.verdict, self.numbers, self.shell]
        self._wire()

    # --- Layout -------------------------------------------------------------------------------------------------
    def _layout(self) -> None:
        parent, first, audio = self.designer.parent, self.first, self.audio
        config = parent.config
        gr.Markdown(
            f"Cut **{parent.folder or 'a config'}** ({config.text.num_hidden_layers} layers). Every change re-plans "
            "the slice at once (no torch): parameters, download per dtype, largest tensor and runtime memory. "
            "Orange layers store a KV cache that later layers read: skipping one is refused while a reader is kept."
        )
        with gr.Row():
            starts = self.designer.starts()
            self.start = gr.Dropdown(list(starts), value=next(iter(starts)), label="Start from",
                                     elem_id="design-start", scale=3)
            self.group_layers = gr.Textbox("all", label="Set width of layers (all, or e.g. 0-4,7)", scale=2)
            all_widths = sorted({w for info in self.grid for w in info.widths})
            self.group_width = gr.Dropdown(all_widths, value=all_widths[-1], label="to width (snapped per layer)",
                                           scale=1)
            self.group_apply = gr.Button("Set width", scale=1)
        self.skips, self.widths = [], []
        per_row = 5 if len(self.grid) <= 10 else 7
        for row in range(0, len(self.grid), per_row):
            with gr.Row(equal_height=True):
                for info in self.grid[row:row + per_row]:
                    with gr.Column(min_width=150, elem_classes=["layer", f"kv-{info.role}"],
                                   elem_id=f"layer-{info.index}"):
                        gr.Markdown(info.label, elem_classes=["layer-head"])
                        self.skips.append(gr.Checkbox(info.index in first.skip, label="skip", container=False,
                                                      elem_id=f"skip-{info.index}"))
                        self.widths.append(gr.Dropdown(list(info.widths), value=_width(first, info),
                                                       label="FFN width", elem_id=f"width-{info.index}"))
        with gr.Row():
            self.modalities = gr.CheckboxGroup(list(config.modalities), value=list(first.modalities),
                                               label="Modalities", elem_id="design-modalities")
            self.dtypes = gr.CheckboxGroup(list(PREFERENCE), value=list(first.dtypes),
                                           label="Dtypes (the first, in this order, is the bundle's default)",
                                           elem_id="design-dtypes")
            self.embeddings = gr.Radio(list(EMBEDDINGS), value=first.embeddings, elem_id="design-embeddings",
                                       label="Embeddings (streamed: rows fetched as a prompt needs them; q4, q8, fp32)")
            limit = config.text.max_position_embeddings
            self.context = gr.Slider(1, limit, value=min(first.context, limit), step=1,
                                     label="Context (tokens) for memory", elem_id="design-context")
        blocks = audio.conf_num_hidden_layers if audio else 0
        with gr.Row(visible=audio is not None):
            self.audio_skip = gr.CheckboxGroup([str(j) for j in range(blocks)],
                                               value=[str(j) for j in first.audio_skip],
                                               label="Skip audio (conformer) blocks", elem_id="design-audio-skip")
            self.audio_ffn = gr.Slider(1, self._audio_width, value=first.audio_ffn_dim or self._audio_width, step=1,
                                       label="Audio FFN width (units kept by importance)", elem_id="design-audio-ffn")
        with gr.Row(visible=parent.folder is not None):
            self.corpus = gr.File(label="Vocabulary cut: a UTF-8 .txt corpus (keep only the tokens it needs)",
                                  file_types=[".txt"], type="filepath", elem_id="design-vocab-corpus")
            self.vocab_size = gr.Number(0, precision=0, label="at most N text tokens (0: all the corpus needs)",
                                        elem_id="design-vocab-size")
            self.vocab_drop = gr.Checkbox(False, label="also drop the <unusedN> placeholder tokens it does not use",
                                          elem_id="design-vocab-drop")
            self.vocab_text = gr.State("")
        self.verdict = gr.Markdown(elem_id="design-verdict")
        self.numbers = gr.Markdown(elem_id="design-numbers")
        self.shell = gr.Code(language="shell", label="The same slice on the command line", interactive=False,
                             lines=2, wrap_lines=True, elem_id="design-commands")
        with gr.Row():
            self.name = gr.Textbox(label="Name of the built variant", placeholder="e.g. my-slice",
                                   elem_id="design-name")
            self.build_button = gr.Button("Build (slice + export)", variant="primary", elem_id="design-build")
        self.built = gr.Markdown(elem_id="build-status")

    @property
    def _audio_width(self) -> int:
        return self.audio.ffn_width if self.audio else 1

    def _wire(self) -> None:
        """Every input re-plans; a start, a group width or a corpus sets widgets, then re-plans; Build builds."""
        typed = [c.input for c in self.inputs if c is not self.vocab_text]
        gr.on(typed, self.show, self.inputs, self.outputs, show_progress="hidden", **QUIET)
        setters = [
            (self.corpus.change, self.read_corpus, self.corpus, [self.vocab_text]),
            (self.start.input, self.load_start, self.start,
             [*self.skips, *self.widths, self.audio_skip, self.audio_ffn, self.modalities]),
            (self.group_apply.click, self.set_group, {self.group_layers, self.group_width}, self.widths),
        ]
        for event, handler, inputs, outputs in setters:
            event(handler, inputs, outputs, **QUIET).then(self.show, self.inputs, self.outputs, **QUIET)
        self.build_button.click(self.building, self.name, self.built, **QUIET).then(
            self.on_build, self.inputs, [self.built, self.picked, self.plot, self.start, self.shell],
            api_visibility="private", show_progress_on=self.built, concurrency_id="build", concurrency_limit=1)

    # --- Handlers -------------------------------------------------------------------------------------------------
    def design(self, values: dict[gr.components.Component, Any]) -> Design:
        """The widgets' values as a Design (unchecked: `Designer.evaluate` checks it)."""
        size, ffn = values[self.vocab_size], values[self.audio_ffn]
        return Design(
            skip=tuple(info.index for info, box in zip(self.grid, self.skips, strict=True) if values[box]),
            widths=tuple(info.width if values[box] is None else int(values[box])
                         for info, box in zip(self.grid, self.widths, strict=True)),
            audio_skip=tuple(sorted(int(j) for j in values[self.audio_skip] or ())),
            audio_ffn_dim=None if self.audio is None or ffn is None else int(ffn),
            modalities=tuple(m for m in MODALITIES if m in (values[self.modalities] or ())),
            dtypes=tuple(d for d in PREFERENCE if d in (values[self.dtypes] or ())),
            embeddings=values[self.embeddings] or "bundled",
            context=int(values[self.context] or 1),
            name=(values[self.name] or "").strip(),
            vocab_text=values[self.vocab_text] or "",
            vocab_size=int(size) if size else None,
            vocab_keep_unused=not values[self.vocab_drop],
        )

    def show(self, values: dict[gr.components.Component, Any]) -> dict[gr.components.Component, Any]:
        """The verdict, the numbers and the commands of the design on the page."""
        result = self.designer.evaluate(self.design(values))
        if not result["valid"]:
            return {self.verdict: gr.update(value=f"**Invalid design:** {result['message']}", elem_classes=["invalid"]),
                    self.numbers: "_No numbers: fix the design first._",
                    self.shell: "# no commands: the design is invalid"}
        return {self.verdict: gr.update(value=f"**Valid design:** {result['message']}", elem_classes=["valid"]),
                self.numbers: numbers_markdown(result), self.shell: "\n".join(result["commands"])}

    def read_corpus(self, path: str | None) -> str:
        """The uploaded corpus as text (Gradio's own upload file; the design then carries the text)."""
        if not path:
            return ""
        try:
            return Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            gr.Warning("the corpus is not UTF-8 text: convert it to UTF-8")
            return ""

    def load_start(self, label: str) -> list[Any]:
        """The widgets of a starting point (the parent, a preset, a served variant, a search front entry)."""
        design = self.designer.starts().get(label) or self.first
        return [*(gr.update(value=i in design.skip) for i in range(len(self.grid))),
                *(gr.update(value=_width(design, info)) for info in self.grid),
                gr.update(value=[str(j) for j in design.audio_skip]),
                gr.update(value=design.audio_ffn_dim or self._audio_width),
                gr.update(value=list(design.modalities))]

    def set_group(self, values: dict[gr.components.Component, Any]) -> dict[gr.components.Component, Any]:
        """One width for a group of layers, snapped to each layer's nested widths."""
        try:
            chosen = set(parse_layers(values[self.group_layers] or "all", len(self.grid)))
        except UserError as error:
            gr.Warning(str(error))
            return {}
        return {box: snap(int(values[self.group_width]), info.widths)
                for info, box in zip(self.grid, self.widths, strict=True) if info.index in chosen}

    def building(self, label: str) -> str:
        return f"Building {label.strip() or '(no name)'} ..."

    def on_build(self, values: dict[gr.components.Component, Any],
              progress: gr.Progress = gr.Progress()) -> dict[gr.components.Component, Any]:  # noqa: B008 (Gradio's idiom)
        """Build the design into the served variants; a refusal or a failure is a message, and the app serves on."""
        try:
            record = serve_build(self.comparer, self.designer, self.design(values), progress)
        except UserError as error:
            return {self.built: f"**Not built:** {error}"}
        except Exception as error:  # a bug or a failed export: say so, keep serving
            return {self.built: f"**Build failed:** {type(error).__name__}: {error}"}
        variant = record["variant"]
        return {self.built: f"**Built {variant['name']}**: {human_bytes(variant['bundle_bytes'])} bundle "
                            f"({variant['dtype']}), now in the Compare tab.",
                self.picked: gr.update(choices=self.comparer.registry.choices()),
                self.plot: figure(self.comparer.plot_data()),
                self.start: gr.update(choices=list(self.designer.starts())),
                self.shell: "\n".join(record["commands"])}


def serve_build(comparer: Comparer, designer: Designer, design: Design, progress: Any) -> dict[str, Any]:
    """Build `design` and serve it: the new bundle joins the registry under the design's name."""
    def report(fraction: float, what: str) -> None:
        if progress is not None:
            progress(fraction, desc=what)

    bundle, result, checked = designer.build(design, comparer.registry.names, report)
    variant = load_variant(design.name, bundle, bundle.parent / "checkpoint")
    comparer.registry.add(variant)
    designer.slices[design.name] = checked.spec
    sessions = {s: {d: r["bytes"] for d, r in per.items()} for s, per in variant.manifest["sessions"].items()}
    return {"variant": variant.summary(), "predicted": result["predicted"], "manifest_sessions": sessions,
            "prediction_source": result["prediction_source"], "commands": result["commands"]}


def _width(design: Design, info) -> int:
    return design.widths[info.index] if design.widths else info.width


def numbers_markdown(result: dict[str, Any]) -> str:
    """Parameters, then per dtype: download by session, largest tensor, runtime memory at the context."""
    plan, predicted = result["plan"], result["predicted"]
    params = plan["params"]
    modalities = result["design"]["modalities"]
    shipped = (params["total"] or 0) - sum(params.get(m) or 0 for m in ("audio", "vision")
                                             if m not in modalities and plan["model_type"] == "gemma3n")
    lines = [
        f"**Parameters:** effective {count(params['effective_published'])} (published convention), "
        f"{count(params['effective'])} (transformers); text {count(params['text'])}; "
        f"total shipped {count(shipped)}. **Checkpoint:** {human_bytes(plan['bytes'])} "
        f"({plan['bytes_source']}).",
        "",
        "| | " + " | ".join(predicted) + " |",
        "|---|" + "---:|" * len(predicted),
    ]
    dtypes = list(predicted)
    first = predicted[dtypes[0]]
    rows = [("**download**", lambda p: f"**{human_bytes(p['download'])}**")]
    rows += [(f"· {s}", lambda p, s=s: human_bytes(p["sessions"][s]["bytes"])) for s in first["sessions"]]
    if any(p["rows"] for p in predicted.values()):
        rows += [("· row file (streamed)", lambda p: human_bytes(p["rows"]))]
    rows += [("largest tensor", lambda p: f"{human_bytes(p['largest_tensor'][1])} `{_short(p['largest_tensor'][0])}`")]
    rows += [(f"**memory at {result['context']:,} tokens**", lambda p: f"**{human_bytes(p['memory']['total'])}**")]
    rows += [(f"· {k.replace('_', ' ')}", lambda p, k=k: human_bytes(p["memory"][k]))
             for k in ("weights", "kv_cache", "activations")]
    lines += [f"| {label} | " + " | ".join(cell(predicted[d]) for d in dtypes) + " |" for label, cell in rows]
    if plan.get("vocab"):
        vocab = plan["vocab"]
        lines += ["", f"**Vocabulary:** {vocab['kept_text_ids']:,} of {vocab['parent_text_ids']:,} text tokens kept; "
                      f"they cover {vocab['covered_token_fraction']:.1%} of the corpus's tokens."]
    lines += ["", f"_Bytes and memory: {result['prediction_source']}._"]
    return "\n".join(lines)


def _short(tensor: str) -> str:
    """A checkpoint tensor's name without the decoder's prefix: `embed_tokens_per_layer.weight`."""
    for prefix in ("model.language_model.", "model."):
        if tensor.startswith(prefix):
            return tensor.removeprefix(prefix)
    return tensor
