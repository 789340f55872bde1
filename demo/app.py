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
from typing import Any

import gradio as gr

from demo.compare import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, REFERENCE_PROMPTS, Comparer, InputError, Run
from demo.design import Design, Designer
from demo.design_tab import DesignTab, serve_build
from demo.plot import figure, pareto_front  # noqa: F401 (pareto_front: the app's public helper)
from gemma3n.errors import UserError
from gemma3n.units import count

MAX_COLUMNS = 4
MIN_UI_VARIANTS = 2


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
                    picked = gr.Dropdown(registry.choices(), value=names[:3], multiselect=True,
                                         max_choices=MAX_COLUMNS,
                                         label=f"Variants ({MIN_UI_VARIANTS}-{MAX_COLUMNS})", elem_id="picked")
                    max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1,
                                           label="Max new tokens")
                prompt = gr.Textbox(REFERENCE_PROMPTS[0], label="Prompt", lines=3, elem_id="prompt",
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
                    tab = DesignTab(comparer, designer, picked, plot)
                    app.load(tab.show, tab.inputs, tab.outputs, api_visibility="private")
        run.click(_ui_handler(comparer), [prompt, picked, audio, max_tokens], [status, *slots], api_name="run")
        app.load(lambda: (figure(comparer.plot_data()), gr.update(choices=comparer.registry.choices())), None,
                 [plot, picked], api_visibility="private")
        _api(comparer, designer)
    return app


def _columns(shown: int) -> list[gr.components.Component]:
    """MAX_COLUMNS slots of (header, text, numbers), the first `shown` visible."""
    outputs: list[gr.components.Component] = []
    with gr.Row(equal_height=False):
        for index in range(MAX_COLUMNS):
            with gr.Column(min_width=220):
                outputs.append(gr.Markdown(visible=index < shown))
                outputs.append(gr.Textbox(label="Output", lines=8, interactive=False, visible=index < shown,
                                          elem_classes=["column-text"]))
                outputs.append(gr.Markdown(visible=index < shown))
    return outputs


def _api(comparer: Comparer, designer: Designer | None) -> None:
    """The programmatic endpoints; their inputs are hidden components, so they take JSON, not the widgets."""
    def variants() -> list[str]:
        """The registered variant names."""
        return comparer.registry.names

    def plot() -> dict[str, Any]:
        """The plotted points: each variant's bundle bytes, quality retention and Pareto-front membership."""
        return comparer.plot_data()

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
            return serve_build(comparer, designer, Design.from_json(design), progress)
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
        ("effective params", count(result["effective_params"])),
        ("total params", count(result["total_params"])),
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


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"
