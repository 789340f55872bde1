"""The Gradio app: compare 2-4 sliced variants side by side, and design new slices with their numbers before building.

Why it is laid out this way: choosing a slice trades bytes and speed against quality, and people judge
that by reading the answers next to each other with size, speed and distance from the parent beside
them ("Compare"), and by seeing what a slice will cost, download and memory, before spending minutes on
it ("Design": every change re-plans instantly, without torch; "Build" slices and exports it into the
compared variants). The browser only sends variant names (checked against the registry), designs (checked
by the plan), a prompt and an uploaded audio file; every failure a user can cause becomes a message on the
page, and the app keeps serving.

Endpoints for `gradio_client`: `/variants` (registered names), `/compare` (prompt, list of names, optional
audio file, max new tokens -> {"parent", "variants": [per-variant text and numbers]}), `/run` (the
streaming handler behind the page), `/plot` (the plotted points: bytes, retention, Pareto front),
`/design` (a design as JSON -> validity or the reason, plan, predicted bytes and memory, commands),
`/design_starts` (starting points as designs) and `/build` (a design with a name -> the built variant).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from demo.compare import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, REFERENCE_PROMPTS, Comparer, InputError, Run
from demo.design import DTYPE_CHOICES, Design, Designer, parse_layers, spec_of
from demo.plot import figure, pareto_front, plot_data  # noqa: F401 (pareto_front: the app's public helper)
from demo.variants import Registry, load_variant
from gemma3n.errors import UserError
from gemma3n.modalities import MODALITIES
from gemma3n.units import human_bytes
from slicer.nesting import snap

MAX_COLUMNS = 4
MIN_UI_VARIANTS = 2
CSS = """
.layer { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px !important; }
.layer.kv-store { border: 2px solid #d97706; background: #fff7ed; }
.layer.kv-reuse { background: #f0f9ff; }
.layer .layer-head p { font-size: 0.85em; margin: 0; line-height: 1.25; }
#design-verdict.invalid { border-left: 4px solid #d62728; padding-left: 8px; }
#design-verdict.valid { border-left: 4px solid #2ca02c; padding-left: 8px; }
"""


def build_app(comparer: Comparer, designer: Designer | None = None) -> gr.Blocks:
    """The Blocks app over `comparer`'s registry; the Design tab needs `designer` (a parent to cut)."""
    registry = comparer.registry
    names = registry.names
    with gr.Blocks(title="MatSlice: compare and design sliced variants") as app:
        gr.Markdown("# MatSlice")
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                gr.Markdown(
                    f"Pick {MIN_UI_VARIANTS} to {MAX_COLUMNS} variants; one prompt runs on all of them with "
                    f"onnxruntime on the exported bundles (greedy). KL and top-1 are measured against the parent, "
                    f"**{registry.parent}**."
                )
                with gr.Row():
                    picked = gr.Dropdown(variant_choices(registry), value=names[:3], multiselect=True,
                                         max_choices=MAX_COLUMNS,
                                         label=f"Variants ({MIN_UI_VARIANTS}-{MAX_COLUMNS})", elem_id="picked")
                    max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1,
                                           label="Max new tokens")
                prompt = gr.Textbox(REFERENCE_PROMPTS[0], label="Prompt", lines=3,
                                    placeholder="e.g. " + " / ".join(REFERENCE_PROMPTS))
                audio = gr.Audio(sources=["upload"], type="filepath", label="Audio (WAV), for variants that kept audio")
                run = gr.Button("Run", variant="primary")
                status = gr.Markdown()
                slots = _columns(len(names[:3]))
                gr.Markdown("## Bundle size against quality retention")
                plot = gr.Plot(label="size / quality", show_label=False, elem_id="pareto-plot")
            with gr.Tab("Design", id="design"):
                if designer is None:
                    gr.Markdown("No design parent: start with `matslice demo --design-parent CHECKPOINT` "
                                "(a Gemma 3n checkpoint folder) to design and build slices of it.")
                else:
                    show, widgets, outputs = _design_tab(comparer, designer, picked, plot)
                    app.load(show, widgets, outputs, api_visibility="private")
        run.click(_ui_handler(comparer), [prompt, picked, audio, max_tokens], [status, *slots], api_name="run")
        app.load(lambda: (figure(_plot_data(comparer)), gr.update(choices=variant_choices(comparer.registry))), None,
                 [plot, picked], api_visibility="private")
        _api(comparer, designer)
    return app


def variant_choices(registry: Registry) -> list[tuple[str, str]]:
    """(label, name) per variant: a search front's slices show their predicted bytes and measured KL / top-1."""
    return [(registry.get(name).label(), name) for name in registry.names]


def _plot_data(comparer: Comparer) -> dict[str, Any]:
    retention = comparer.retention()
    return plot_data({name: comparer.registry.get(name).bytes for name in comparer.registry.names}, retention)


# --- The Design tab ---------------------------------------------------------------------------------------------
def _design_tab(comparer: Comparer, designer: Designer, picked: gr.Dropdown, plot: gr.Plot):
    """The parent's layers as a grid (skip, width), the towers, dtypes and context; numbers on every change."""
    parent = designer.parent
    config, grid = parent.config, parent.grid
    starts = designer.starts()
    first = next(iter(starts.values()))
    where = parent.folder or "a config"
    gr.Markdown(
        f"Cut **{where}** ({config.text.num_hidden_layers} layers). Every change re-plans the slice at once "
        "(no torch): parameters, download per dtype, largest tensor and runtime memory. Orange layers store a "
        "KV cache that later layers read: skipping one is refused while a reader is kept."
    )
    with gr.Row():
        start = gr.Dropdown(list(starts), value=next(iter(starts)), label="Start from", elem_id="design-start",
                            scale=3)
        group_layers = gr.Textbox("all", label="Set width of layers (all, or e.g. 0-4,7)", scale=2)
        all_widths = sorted({w for info in grid for w in info.widths})
        group_width = gr.Dropdown(all_widths, value=all_widths[-1], label="to width (snapped per layer)", scale=1)
        group_apply = gr.Button("Set width", scale=1)
    skips, widths = [], []
    per_row = 5 if len(grid) <= 10 else 7
    for row in range(0, len(grid), per_row):
        with gr.Row(equal_height=True):
            for info in grid[row:row + per_row]:
                with gr.Column(min_width=150, elem_classes=["layer", f"kv-{info.role}"], elem_id=f"layer-{info.index}"):
                    gr.Markdown(info.label, elem_classes=["layer-head"])
                    skips.append(gr.Checkbox(info.index in first.skip, label="skip", elem_id=f"skip-{info.index}",
                                             container=False))
                    widths.append(gr.Dropdown(list(info.widths), value=_width(first, info), label="FFN width",
                                              elem_id=f"width-{info.index}"))
    with gr.Row():
        modalities = gr.CheckboxGroup(list(config.modalities), value=list(first.modalities), label="Modalities",
                                      elem_id="design-modalities")
        dtypes = gr.CheckboxGroup(list(DTYPE_CHOICES), value=list(first.dtypes),
                                  label="Dtypes (the first, in this order, is the bundle's default)",
                                  elem_id="design-dtypes")
        context = gr.Slider(1, config.text.max_position_embeddings, value=min(first.context,
                            config.text.max_position_embeddings), step=1, label="Context (tokens) for memory",
                            elem_id="design-context")
    audio = config.audio
    blocks = audio.conf_num_hidden_layers if audio else 0
    with gr.Row(visible=audio is not None):
        audio_skip = gr.CheckboxGroup([str(j) for j in range(blocks)], value=[str(j) for j in first.audio_skip],
                                      label="Skip audio (conformer) blocks", elem_id="design-audio-skip")
        audio_ffn = gr.Slider(1, audio.ffn_width if audio else 1, value=first.audio_ffn_dim or (audio.ffn_width
                              if audio else 1), step=1, label="Audio FFN width (units kept by importance)",
                              elem_id="design-audio-ffn")
    with gr.Row(visible=parent.folder is not None):
        corpus = gr.File(label="Vocabulary cut: a UTF-8 .txt corpus (keep only the tokens it needs)",
                         file_types=[".txt"], type="filepath", elem_id="design-vocab-corpus")
        vocab_size = gr.Number(0, precision=0, label="at most N text tokens (0: all the corpus needs)",
                               elem_id="design-vocab-size")
        vocab_drop = gr.Checkbox(False, label="also drop the <unusedN> placeholder tokens it does not use",
                                 elem_id="design-vocab-drop")
        vocab_text = gr.State("")
    verdict = gr.Markdown(elem_id="design-verdict")
    numbers = gr.Markdown(elem_id="design-numbers")
    shell = gr.Code(language="shell", label="The same slice on the command line", interactive=False, lines=2,
                    wrap_lines=True, elem_id="design-commands")
    with gr.Row():
        name = gr.Textbox(label="Name of the built variant", placeholder="e.g. my-slice", elem_id="design-name")
        build = gr.Button("Build (slice + export)", variant="primary", elem_id="design-build")
    built = gr.Markdown(elem_id="build-status")

    widgets = [*skips, *widths, audio_skip, audio_ffn, modalities, dtypes, context, vocab_text, vocab_size,
               vocab_drop, name]

    def design_of_widgets(values: tuple[Any, ...]) -> Design:
        n = len(grid)
        skip_flags, width_values = values[:n], values[n:2 * n]
        a_skip, a_ffn, mods, dts, ctx, v_text, v_size, v_drop, label = values[2 * n:]
        return Design(
            skip=tuple(i for i, flag in enumerate(skip_flags) if flag),
            widths=tuple(int(w) if w is not None else info.width for w, info in zip(width_values, grid, strict=True)),
            audio_skip=tuple(sorted(int(j) for j in a_skip or ())),
            audio_ffn_dim=None if not audio or a_ffn is None else int(a_ffn),
            modalities=tuple(m for m in MODALITIES if m in (mods or ())),
            dtypes=tuple(d for d in DTYPE_CHOICES if d in (dts or ())),
            context=int(ctx or 1),
            name=(label or "").strip(),
            vocab_text=v_text or "",
            vocab_size=int(v_size) if v_size else None,
            vocab_keep_unused=not v_drop,
        )

    def show(*values: Any) -> list[Any]:
        result = designer.evaluate(design_of_widgets(values))
        return _shown(result)

    outputs = [verdict, numbers, shell]
    gr.on([c.input for c in widgets if c is not vocab_text], show, widgets, outputs, api_visibility="private",
          show_progress="hidden", queue=False)

    def read_corpus(path: str | None) -> str:
        """The uploaded corpus as text (Gradio's own upload file; the design then carries the text)."""
        if not path:
            return ""
        try:
            return Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            gr.Warning("the corpus is not UTF-8 text: convert it to UTF-8")
            return ""

    corpus.change(read_corpus, corpus, vocab_text, api_visibility="private", queue=False).then(
        show, widgets, outputs, api_visibility="private", queue=False)

    def load_start(label: str) -> list[Any]:
        design = designer.starts().get(label) or first
        return [*(gr.update(value=i in design.skip) for i in range(len(grid))),
                *(gr.update(value=_width(design, info)) for info in grid),
                gr.update(value=[str(j) for j in design.audio_skip]),
                gr.update(value=design.audio_ffn_dim or (audio.ffn_width if audio else 1)),
                gr.update(value=list(design.modalities))]

    start.input(load_start, start, [*skips, *widths, audio_skip, audio_ffn, modalities], api_visibility="private",
                queue=False).then(show, widgets, outputs, api_visibility="private", queue=False)

    def set_group(layers: str, width: Any, *values: Any) -> list[Any]:
        try:
            chosen = set(parse_layers(layers or "all", len(grid)))
        except UserError as error:
            gr.Warning(str(error))
            return [gr.update() for _ in grid]
        return [gr.update(value=snap(int(width), info.widths)) if info.index in chosen else gr.update()
                for info in grid]

    group_apply.click(set_group, [group_layers, group_width], widths, api_visibility="private",
                      queue=False).then(show, widgets, outputs, api_visibility="private", queue=False)

    # Progress first: Gradio finds it only among the named parameters, which end where *values begins.
    def build_click(progress=gr.Progress(), *values: Any) -> list[Any]:  # noqa: B008 (Gradio's idiom)
        design = design_of_widgets(values)
        try:
            record = _build(comparer, designer, design, progress)
        except UserError as error:
            return [f"**Not built:** {error}", *[gr.update()] * 4]
        except Exception as error:  # a bug or a failed export: say so, keep serving
            return [f"**Build failed:** {type(error).__name__}: {error}", *[gr.update()] * 4]
        variant = record["variant"]
        message = (f"**Built {variant['name']}**: {human_bytes(variant['bundle_bytes'])} bundle "
                   f"({variant['dtype']}), now in the Compare tab.")
        return [message, gr.update(choices=variant_choices(comparer.registry)), figure(_plot_data(comparer)),
                gr.update(choices=list(designer.starts())), "\n".join(record["commands"])]

    def building(label: str) -> str:
        return f"Building {label.strip() or '(no name)'} ..."

    build.click(building, name, built, api_visibility="private", queue=False).then(
        build_click, widgets, [built, picked, plot, start, shell], api_visibility="private", show_progress_on=built,
        concurrency_id="build", concurrency_limit=1)
    return show, widgets, outputs


def _width(design: Design, info) -> int:
    return design.widths[info.index] if design.widths else info.width


def _shown(result: dict[str, Any]) -> list[Any]:
    """(verdict, numbers, commands) for the page."""
    if not result["valid"]:
        return [gr.update(value=f"**Invalid design:** {result['message']}", elem_classes=["invalid"]),
                gr.update(value="_No numbers: fix the design first._"),
                gr.update(value="# no commands: the design is invalid")]
    return [gr.update(value=f"**Valid design:** {result['message']}", elem_classes=["valid"]),
            gr.update(value=numbers_markdown_design(result)), gr.update(value="\n".join(result["commands"]))]


def numbers_markdown_design(result: dict[str, Any]) -> str:
    """Parameters, then per dtype: download by session, largest tensor, runtime memory at the context."""
    plan, predicted = result["plan"], result["predicted"]
    params = plan["params"]
    modalities = result["design"]["modalities"]
    shipped = (params["total"] or 0) - sum(params.get(m) or 0 for m in ("audio", "vision")
                                             if m not in modalities and plan["model_type"] == "gemma3n")
    lines = [
        f"**Parameters:** effective {_count(params['effective_published'])} (published convention), "
        f"{_count(params['effective'])} (transformers); text {_count(params['text'])}; "
        f"total shipped {_count(shipped)}. **Checkpoint:** {human_bytes(plan['bytes'])} "
        f"({plan['bytes_source']}).",
        "",
        "| | " + " | ".join(predicted) + " |",
        "|---|" + "---:|" * len(predicted),
    ]
    dtypes = list(predicted)
    first = predicted[dtypes[0]]
    rows = [("**download**", lambda p: f"**{human_bytes(p['download'])}**")]
    rows += [(f"· {s}", lambda p, s=s: human_bytes(p["sessions"][s]["bytes"])) for s in first["sessions"]]
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


def _build(comparer: Comparer, designer: Designer, design: Design, progress: Any) -> dict[str, Any]:
    """Build `design` and serve it: the new bundle joins the registry under the design's name."""
    def report(fraction: float, what: str) -> None:
        if progress is not None:
            progress(fraction, desc=what)

    bundle, result = designer.build(design, comparer.registry.names, report)
    variant = load_variant(design.name, bundle, bundle.parent / "checkpoint")
    comparer.registry.add(variant)
    designer.slices[design.name] = spec_of(designer.parent, design)
    sessions = {s: {d: r["bytes"] for d, r in per.items()} for s, per in variant.manifest["sessions"].items()}
    return {"variant": variant.summary(), "predicted": result["predicted"], "manifest_sessions": sessions,
            "prediction_source": result["prediction_source"], "commands": result["commands"]}


def _columns(shown: int) -> list[gr.components.Component]:
    """MAX_COLUMNS slots of (header, text, numbers), the first `shown` visible."""
    outputs: list[gr.components.Component] = []
    with gr.Row(equal_height=False):
        for index in range(MAX_COLUMNS):
            with gr.Column(min_width=220):
                outputs.append(gr.Markdown(visible=index < shown))
                outputs.append(gr.Textbox(label="Output", lines=8, interactive=False, visible=index < shown))
                outputs.append(gr.Markdown(visible=index < shown))
    return outputs


def _api(comparer: Comparer, designer: Designer | None) -> None:
    """The programmatic endpoints; their inputs are hidden components, so they take JSON, not the widgets."""
    def variants() -> list[str]:
        """The registered variant names."""
        return comparer.registry.names

    def plot() -> dict[str, Any]:
        """The plotted points: each variant's bundle bytes, quality retention and Pareto-front membership."""
        return _plot_data(comparer)

    gr.api(variants, api_name="variants")
    gr.api(plot, api_name="plot")
    with gr.Row(visible=False):
        prompt, names = gr.Textbox(), gr.JSON()
        audio, tokens = gr.Audio(type="filepath"), gr.Number(value=DEFAULT_MAX_NEW_TOKENS, precision=0)
        out, button = gr.JSON(), gr.Button()
    button.click(_api_handler(comparer), [prompt, names, audio, tokens], out, api_name="compare")
    if designer is None:
        return

    def design(design: dict) -> dict:
        """A design (skip, widths, audio_skip, audio_ffn_dim, modalities, dtypes, context, name) -> its numbers."""
        try:
            return designer.evaluate(Design.from_json(design))
        except UserError as error:
            return {"valid": False, "message": str(error), "design": design}

    def design_starts() -> dict:
        """The starting points (parent, fitting presets, served variants, search front) as designs."""
        return {label: start.to_json() for label, start in designer.starts().items()}

    gr.api(design, api_name="design", queue=False)
    gr.api(design_starts, api_name="design_starts")

    def build(design: Any, progress=gr.Progress()) -> dict[str, Any]:  # noqa: B008 (Gradio's idiom)
        """Slice and export a named design into the served variants; an invalid one raises the reason."""
        try:
            return _build(comparer, designer, Design.from_json(design), progress)
        except UserError as error:
            raise gr.Error(str(error)) from None

    with gr.Row(visible=False):
        wanted, built, go = gr.JSON(), gr.JSON(), gr.Button()
    go.click(build, wanted, built, api_name="build", concurrency_id="build", concurrency_limit=1)


def _api_handler(comparer: Comparer):
    def compare(prompt: str, names: Any, audio: str | None, max_new_tokens: float | None) -> dict[str, Any]:
        """Run the prompt to the end on each named variant; bad input raises a gr.Error with the reason."""
        try:
            tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
            run = comparer.compare(prompt, names, audio, tokens)
        except InputError as error:
            raise gr.Error(str(error)) from None
        return {"parent": comparer.registry.parent, "variants": run.results()}

    return compare


def _ui_handler(comparer: Comparer):
    def run(prompt: str, names: list[str] | None, audio: str | None, max_new_tokens: float) -> Iterator[list[Any]]:
        """Stream every picked variant into its column; a bad request only writes a message."""
        try:
            prompt, names, tokens = comparer.check(prompt, names or [], max_new_tokens)
            if len(names) < MIN_UI_VARIANTS:
                raise InputError(f"pick at least {MIN_UI_VARIANTS} variants to compare them")
            for step in comparer.stream(comparer.start(prompt, names, audio, tokens)):
                yield _render(step)
        except InputError as error:
            yield [f"**Cannot run:** {error}", *[gr.update() for _ in range(3 * MAX_COLUMNS)]]
        except Exception as error:  # a bug or a broken bundle: say so, keep serving
            yield [f"**Failed:** {type(error).__name__}: {error}", *[gr.update() for _ in range(3 * MAX_COLUMNS)]]

    return run


def _render(run: Run) -> list[Any]:
    """Status line plus (header, text, numbers) updates for every slot."""
    state = "done" if run.scored else "generating..."
    updates: list[Any] = [f"{len(run.columns)} variants, {state}"]
    results = run.results()
    for index in range(MAX_COLUMNS):
        if index >= len(results):
            updates += [gr.update(visible=False)] * 3
            continue
        result = results[index]
        updates += [
            gr.update(value=f"### {result['name']}\n{result['slice']}", visible=True),
            gr.update(value=result["text"], visible=True),
            gr.update(value=numbers_markdown(result), visible=True),
        ]
    return updates


def numbers_markdown(result: dict[str, Any]) -> str:
    """The column's numbers as a two-column table."""
    rows = [
        ("effective params", _count(result["effective_params"])),
        ("total params", _count(result["total_params"])),
        ("bundle", f"{result['bundle_bytes'] / 1e6:.2f} MB ({result['dtype']})"),
        ("load", f"{result['load_seconds']:.2f} s" + (" (already loaded)" if result["load_cached"] else "")),
        ("first token", _seconds(result["ttft_seconds"])),
        ("tokens/s", "-" if result["tokens_per_second"] is None else f"{result['tokens_per_second']:.1f}"),
        ("KL vs parent", "-" if result["kl_vs_parent"] is None else f"{result['kl_vs_parent']:.4f} nats"),
        ("top-1 vs parent", "-" if result["top1_vs_parent"] is None else f"{result['top1_vs_parent']:.1%}"),
        ("tokens", f"{result['prompt_tokens']} prompt + {result['new_tokens']} new"),
    ]
    table = "| | |\n|---|---:|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return table + (f"\n\n_{result['note']}_" if result["note"] else "")


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"
