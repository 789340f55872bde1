"""The size/quality plot: every served variant as bundle MB against quality retention, the Pareto front marked.

Why matplotlib (drawn on the server into an image gr.Plot shows): the names must be readable on the plot
itself, not only in a hover tooltip, and stay inside it; Gradio's native plots have no per-point labels, and
the hand-drawn SVG this replaces clipped labels at its edge. Labels are placed toward the plot's centre and
nudged apart when points crowd. The data behind the figure is `plot_data`, also served as `/plot`.
"""

from __future__ import annotations

import math
from typing import Any

FRONT_COLOR, OTHER_COLOR = "#d62728", "#6f6f6f"
TOP = 1.1  # the retention axis ends above 100%, so the parent's name fits
X_TITLE = "bundle size (MB, every file of the bundle)"
Y_TITLE = "quality retention\n(top-1 agreement with the parent)"


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


def plot_data(sizes: dict[str, int], retention: dict[str, float]) -> dict[str, Any]:
    """The plotted points, JSON-ready: name, bytes, MB, retention, and whether it is on the Pareto front."""
    points = {name: (sizes[name] / 1e6, retention[name]) for name in sizes}
    front = pareto_front(points)
    return {
        "x": X_TITLE,
        "y": Y_TITLE.replace("\n", " "),
        "points": [{"name": name, "bundle_bytes": sizes[name], "bundle_mb": round(mb, 3), "retention": quality,
                    "pareto": name in front} for name, (mb, quality) in points.items()],
        "front": front,
    }


def figure(data: dict[str, Any]):
    """A matplotlib Figure of `plot_data` (no pyplot: nothing global, safe from the server's threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(8, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # rendered off-screen, to PNG
    ax = fig.add_subplot()
    points = data["points"]
    if not points:
        ax.text(0.5, 0.5, "no variants", ha="center", va="center", transform=ax.transAxes)
        return fig
    top = max(p["bundle_mb"] for p in points) * 1.15 or 1.0
    low = max(0.0, math.floor((min(p["retention"] for p in points) - 0.12) * 10) / 10)  # zoom on the points
    ax.set_xlim(0, top)
    ax.set_ylim(low, TOP)
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["bundle_mb"])
    ax.plot([p["bundle_mb"] for p in front], [p["retention"] for p in front], color=FRONT_COLOR, lw=2, zorder=2,
            label="Pareto front (nothing smaller is as good)")
    for on_front, color, label in ((True, FRONT_COLOR, None), (False, OTHER_COLOR, "dominated")):
        chosen = [p for p in points if p["pareto"] == on_front]
        if chosen:
            ax.scatter([p["bundle_mb"] for p in chosen], [p["retention"] for p in chosen], s=46, color=color,
                       zorder=3, label=label)
    _labels(ax, points, top, low)
    ax.set_xlabel(X_TITLE)
    ax.set_ylabel(Y_TITLE)
    ax.set_yticks([tick for tick in ax.get_yticks() if low - 1e-9 <= tick <= 1 + 1e-9])  # none past 100%
    ax.set_ylim(low, TOP)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    return fig


def _labels(ax, points: list[dict[str, Any]], top: float, low: float) -> None:
    """Each point's name beside it, on the side facing the centre and off the (rising) front line, on a white
    ground; when it would overlap a name already placed it moves up or down (alternately, further each time)
    and a thin line ties it to its point."""
    placed: list[tuple[float, float, float]] = []  # (left, right, y) in axes fractions
    for point in sorted(points, key=lambda p: (-p["retention"], p["bundle_mb"])):
        name = point["name"] + (" (Pareto)" if point["pareto"] else "")
        fx = point["bundle_mb"] / top
        fy = (point["retention"] - low) / (TOP - low)
        right = fx > 0.55
        width = 0.011 * len(name) + 0.01  # 10 pt text over the axes' ~700 px
        tx = fx - 0.02 if right else fx + 0.02
        left_edge = tx - width if right else tx
        ty = fy + 0.045 if right else fy - 0.045  # off a rising front: above-left of it, or below-right
        first = ty
        for step in range(1, 40):
            if not any(a < left_edge + width and left_edge < b and abs(ty - y) < 0.06 for a, b, y in placed) \
                    and 0.03 <= ty <= 0.95:
                break
            ty = first + (step + 1) // 2 * 0.065 * (1 if step % 2 else -1)
        placed.append((left_edge, left_edge + width, ty))
        ax.annotate(name, (point["bundle_mb"], point["retention"]), xytext=(tx, ty), textcoords="axes fraction",
                    ha="right" if right else "left", va="center", fontsize=10, zorder=4,
                    color=FRONT_COLOR if point["pareto"] else "#333333", annotation_clip=False,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                    arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.8} if abs(ty - fy) > 0.06 else None)
