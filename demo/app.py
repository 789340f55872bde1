"""The Gradio app: 2-4 sliced variants answer one prompt side by side, with the numbers that decide a slice.

Why it is laid out this way: choosing a slice trades bytes and speed against quality, and people judge
that by reading the answers next to each other with size, speed and distance from the parent beside
them. The browser only sends variant names (checked against the registry), a prompt and an uploaded
audio file; every failure a user can cause becomes a message on the page, and the app keeps serving.

Endpoints for `gradio_client`: `/variants` (registered names), `/compare` (prompt, list of names, optional
audio file, max new tokens -> {"parent", "variants": [per-variant text and numbers]}), `/run` (the
streaming handler behind the page) and `/plot` (the size/quality SVG).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import gradio as gr

from demo.compare import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, Comparer, InputError, Run

MAX_COLUMNS = 4
MIN_UI_VARIANTS = 2
PLOT_W, PLOT_H, MARGIN = 640, 360, 56


def build_app(comparer: Comparer) -> gr.Blocks:
    """The Blocks app over `comparer`'s registry."""
    registry = comparer.registry
    names = registry.names
    with gr.Blocks(title="MatSlice: compare sliced variants") as app:
        gr.Markdown(
            "# MatSlice: compare sliced variants\n"
            f"Pick {MIN_UI_VARIANTS} to {MAX_COLUMNS} variants; one prompt runs on all of them with onnxruntime "
            f"on the exported bundles (greedy). KL and top-1 are measured against the parent, **{registry.parent}**."
        )
        with gr.Row():
            picked = gr.Dropdown(names, value=names[:3], multiselect=True, max_choices=MAX_COLUMNS,
                                 label=f"Variants ({MIN_UI_VARIANTS}-{MAX_COLUMNS})")
            max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1, label="Max new tokens")
        prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Ask something")
        audio = gr.Audio(sources=["upload"], type="filepath", label="Audio (WAV), for variants that kept audio")
        run = gr.Button("Run", variant="primary")
        status = gr.Markdown()
        slots = _columns(len(names[:3]))
        gr.Markdown("## Bundle size against quality retention")
        plot = gr.HTML()
        run.click(_ui_handler(comparer), [prompt, picked, audio, max_tokens], [status, *slots], api_name="run")
        app.load(lambda: plot_svg(comparer), None, plot, api_name="plot")
        _api(comparer)
    return app


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


def _api(comparer: Comparer) -> None:
    """The programmatic endpoints; their inputs are hidden components, so they take JSON, not the widgets."""
    def variants() -> list[str]:
        """The registered variant names."""
        return comparer.registry.names

    gr.api(variants, api_name="variants")
    with gr.Row(visible=False):
        prompt, names = gr.Textbox(), gr.JSON()
        audio, tokens = gr.Audio(type="filepath"), gr.Number(value=DEFAULT_MAX_NEW_TOKENS, precision=0)
        out, button = gr.JSON(), gr.Button()
    button.click(_api_handler(comparer), [prompt, names, audio, tokens], out, api_name="compare")


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


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points (bytes, retention) that no other point beats: smaller or equal and at least as good."""
    front = []
    for name, (size, quality) in points.items():
        beaten = any(
            other != name and s <= size and q >= quality and (s < size or q > quality)
            for other, (s, q) in points.items()
        )
        if not beaten:
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])


def plot_svg(comparer: Comparer) -> str:
    """Every registered variant as bundle MB against quality retention, the Pareto front joined in red."""
    try:
        retention = comparer.retention()
    except Exception as error:  # a plot must never take the page down
        return f"<p>Cannot draw the plot: {html.escape(f'{type(error).__name__}: {error}')}</p>"
    points = {name: (comparer.registry.get(name).bytes / 1e6, retention[name]) for name in comparer.registry.names}
    return render_svg(points, pareto_front(points))


def render_svg(points: dict[str, tuple[float, float]], front: list[str]) -> str:
    """An inline SVG scatter plot (no plotting library, so the page renders the same everywhere)."""
    top = max(size for size, _ in points.values()) * 1.15 or 1.0

    def xy(size: float, quality: float) -> tuple[float, float]:
        return (MARGIN + size / top * (PLOT_W - 2 * MARGIN), PLOT_H - MARGIN - quality * (PLOT_H - 2 * MARGIN))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PLOT_W} {PLOT_H}" width="{PLOT_W}" '
        f'height="{PLOT_H}" font-family="sans-serif" font-size="12" id="pareto-plot">',
        f'<rect width="{PLOT_W}" height="{PLOT_H}" fill="white"/>',
        *_axes(top),
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(*points[n]) for n in front))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#d62728" stroke-width="2" class="front"/>')
    for name, (size, quality) in points.items():
        x, y = xy(size, quality)
        color = "#d62728" if name in front else "#7f7f7f"
        label = html.escape(name) + (" (Pareto)" if name in front else "")
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{html.escape(name)}: '
                     f'{size:.2f} MB, {quality:.1%}</title></circle>')
        parts.append(f'<text x="{x + 8:.1f}" y="{y - 8:.1f}" fill="{color}">{label}</text>')
    parts.append("</svg>")
    caption = ("<p>Quality retention: top-1 agreement of next-token predictions with the parent on fixed "
               "reference prompts. Red: the Pareto front (no other variant is smaller and at least as good).</p>")
    return "".join(parts) + caption


def _axes(top: float) -> list[str]:
    left, bottom, right, upper = MARGIN, PLOT_H - MARGIN, PLOT_W - MARGIN, MARGIN
    items = [
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{upper}" stroke="black"/>',
        f'<text x="{(left + right) / 2}" y="{PLOT_H - 16}" text-anchor="middle">bundle size (MB)</text>',
        f'<text x="16" y="{(upper + bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(upper + bottom) / 2})">quality retention (top-1 vs parent)</text>',
    ]
    for step in range(5):
        quality, size = step / 4, top * step / 4
        y = bottom - quality * (bottom - upper)
        x = left + step / 4 * (right - left)
        items.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{quality:.0%}</text>')
        items.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{size:.2f}</text>')
    return items
