"""Draw the course diagrams as PNG files, with matplotlib only (no graphviz, no network).

Regenerate (a few seconds; the output is byte-for-byte the same on every run):

    python assets/make_diagrams.py              # writes assets/diagrams/*.png
    python assets/make_diagrams.py --out DIR    # writes the PNGs to DIR instead
    python assets/make_diagrams.py --only tasks # redraw one diagram while restyling

Restyle: every colour, font, size and line width lives in the STYLE dict below. Each "kind"
is a (fill, edge) colour pair used consistently across the diagrams:

    driver  - your script / the driver process
    worker  - tasks, actors, the model
    store   - Ray's object store and Ray-managed pools
    data    - storage, batches, blocks
    neutral - notes and idle resources
    plain   - white inner boxes and tags

Coordinates: every canvas is measured in inches from its bottom-left corner, so a box at
x=0.3 with w=2.0 is 2 inches wide on the page; fonts are in points (72 pt = 1 inch). Each
diagram is one `draw_*` function built from the shared helpers (box, cylinder, arrow, route,
label, badge, ...); add a new one to DIAGRAMS to have it written too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle

matplotlib.use("Agg")

Point = tuple[float, float]

STYLE: dict = {
    "dpi": 130,  # a 10-inch-wide canvas becomes 1300 px
    "font": "DejaVu Sans",
    "mono": "DejaVu Sans Mono",
    "title_size": 15.5,
    "subtitle_size": 11.5,
    "text_size": 12,
    "small_size": 10.5,
    "code_size": 10,
    "line_spacing": 1.3,
    "ink": "#1f2937",
    "muted": "#6b7280",
    "background": "#ffffff",
    "line_width": 1.6,
    "corner": 0.1,  # rounding radius of boxes, inches
    "arrow_head": 14,
    "kinds": {  # (fill, edge)
        "driver": ("#dbeafe", "#1d4ed8"),
        "worker": ("#dcfce7", "#15803d"),
        "store": ("#ede9fe", "#6d28d9"),
        "data": ("#fef3c7", "#b45309"),
        "neutral": ("#f3f4f6", "#6b7280"),
        "plain": ("#ffffff", "#6b7280"),
    },
}


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Box:
    """A drawn rectangle; its anchor points are used to attach arrows."""

    x: float
    y: float
    w: float
    h: float

    def at(self, fx: float, fy: float) -> Point:
        """Point at fraction (fx, fy) of the box: (0, 0) bottom-left, (1, 1) top-right."""
        return (self.x + fx * self.w, self.y + fy * self.h)

    @property
    def left(self) -> Point:
        return self.at(0.0, 0.5)

    @property
    def right(self) -> Point:
        return self.at(1.0, 0.5)

    @property
    def top(self) -> Point:
        return self.at(0.5, 1.0)

    @property
    def bottom(self) -> Point:
        return self.at(0.5, 0.0)

    @property
    def center(self) -> Point:
        return self.at(0.5, 0.5)


def colors(kind: str) -> tuple[str, str]:
    """(fill, edge) colours of a kind from STYLE."""
    return STYLE["kinds"][kind]


def line_height(size: float) -> float:
    """Height of one text line of `size` points, in inches."""
    return size * STYLE["line_spacing"] / 72


def apply_style() -> None:
    """Fix rcParams so every run renders identically."""
    matplotlib.rcParams.update(
        {
            "font.family": STYLE["font"],
            "font.size": STYLE["text_size"],
            "text.color": STYLE["ink"],
            "axes.unicode_minus": False,
            "path.simplify": False,
            "savefig.dpi": STYLE["dpi"],
            "savefig.facecolor": STYLE["background"],
            "svg.hashsalt": "course-diagrams",
        }
    )


def canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A blank figure whose data coordinates are inches (0..width, 0..height)."""
    fig = Figure(figsize=(width, height), dpi=STYLE["dpi"], facecolor=STYLE["background"])
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def label(
    ax: Axes,
    x: float,
    y: float,
    text: str,
    *,
    size: float | None = None,
    color: str | None = None,
    weight: str = "normal",
    mono: bool = False,
    ha: str = "center",
    va: str = "center",
    backdrop: bool = False,
    style: str = "normal",
    z: float = 5,
) -> None:
    """Write text; `backdrop` puts a white pad behind it so it can sit on an arrow."""
    bbox = None
    if backdrop:
        bbox = {"boxstyle": "round,pad=0.15", "fc": STYLE["background"], "ec": "none"}
    ax.text(
        x,
        y,
        text,
        fontsize=size or STYLE["text_size"],
        color=color or STYLE["ink"],
        fontweight=weight,
        fontfamily=STYLE["mono"] if mono else STYLE["font"],
        fontstyle=style,
        ha=ha,
        va=va,
        linespacing=STYLE["line_spacing"],
        bbox=bbox,
        zorder=z,
    )


def title(ax: Axes, height: float, text: str, subtitle: str = "") -> None:
    """Diagram title (and optional subtitle) at the top-left of the canvas."""
    label(
        ax, 0.3, height - 0.22, text, size=STYLE["title_size"], weight="bold", ha="left", va="top"
    )
    if subtitle:
        label(
            ax,
            0.3,
            height - 0.62,
            subtitle,
            size=STYLE["subtitle_size"],
            color=STYLE["muted"],
            ha="left",
            va="top",
        )


def box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str = "",
    kind: str = "neutral",
    *,
    sub: str = "",
    sub_mono: bool = False,
    size: float | None = None,
    sub_size: float | None = None,
    weight: str = "bold",
    header: str = "",
    header_mono: bool = False,
    dashed: bool = False,
    text_color: str | None = None,
    corner: float | None = None,
    z: float = 2,
) -> Box:
    """Rounded box with a centred `text` (bold) and optional smaller `sub` text under it.

    `header` is written at the top-left inside the box instead, for containers.
    """
    fill, edge = colors(kind)
    radius = STYLE["corner"] if corner is None else corner
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle=f"round,pad=0,rounding_size={radius}",
            fc=fill,
            ec=edge,
            lw=STYLE["line_width"],
            ls=(0, (4, 3)) if dashed else "-",
            zorder=z,
        )
    )
    if header:
        label(
            ax,
            x + 0.14,
            y + h - 0.1,
            header,
            size=STYLE["small_size"],
            weight="bold",
            color=edge,
            mono=header_mono,
            ha="left",
            va="top",
            z=z + 0.5,
        )
    area = Box(x, y, w, h)
    stacked_text(
        ax,
        area,
        text,
        sub,
        size=size,
        sub_size=sub_size,
        weight=weight,
        sub_mono=sub_mono,
        color=text_color,
        z=z + 0.5,
    )
    return area


def stacked_text(
    ax: Axes,
    area: Box,
    text: str,
    sub: str = "",
    *,
    size: float | None = None,
    sub_size: float | None = None,
    weight: str = "bold",
    sub_mono: bool = False,
    color: str | None = None,
    z: float = 3,
) -> None:
    """`text` over smaller `sub`, centred together as one block in `area`."""
    size = size or STYLE["text_size"]
    sub_size = sub_size or (STYLE["code_size"] if sub_mono else STYLE["small_size"])
    main_h = line_height(size) * (text.count("\n") + 1) if text else 0.0
    sub_h = line_height(sub_size) * (sub.count("\n") + 1) if sub else 0.0
    gap = 0.04 if text and sub else 0.0
    cx, cy = area.center
    top = cy + (main_h + gap + sub_h) / 2
    if text:
        label(ax, cx, top, text, size=size, weight=weight, va="top", color=color, z=z)
    if sub:
        label(
            ax,
            cx,
            top - main_h - gap,
            sub,
            size=sub_size,
            mono=sub_mono,
            va="top",
            color=color,
            z=z,
        )


def pill(
    ax: Axes,
    cx: float,
    cy: float,
    text: str,
    kind: str = "neutral",
    *,
    size: float | None = None,
    z: float = 4,
) -> Box:
    """Small fully rounded tag centred at (cx, cy), sized (roughly) to its text."""
    size = size or STYLE["small_size"] - 1
    width = len(text) * size * 0.58 / 72 + 0.22
    height = line_height(size) + 0.08
    return box(
        ax,
        cx - width / 2,
        cy - height / 2,
        width,
        height,
        text,
        kind,
        size=size,
        weight="normal",
        corner=height / 2,
        z=z,
    )


def code(
    ax: Axes,
    x: float,
    y: float,
    lines: Sequence[str],
    *,
    size: float | None = None,
    color: str | None = None,
) -> float:
    """Monospaced code block with its top-left at (x, y); returns the y below it."""
    size = size or STYLE["code_size"]
    label(ax, x, y, "\n".join(lines), size=size, mono=True, ha="left", va="top", color=color)
    return y - line_height(size) * len(lines)


def code_line_y(top: float, line: int, size: float | None = None) -> float:
    """Vertical centre of line number `line` (from 0) of a code() block whose top is `top`."""
    return top - (line + 0.5) * line_height(size or STYLE["code_size"])


def cylinder(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str = "",
    kind: str = "data",
    *,
    sub: str = "",
    z: float = 2,
) -> Box:
    """Storage drum (a database / bucket icon) with centred text."""
    fill, edge = colors(kind)
    lw = STYLE["line_width"]
    cap = min(0.3, 0.22 * w)
    ax.add_patch(Ellipse((x + w / 2, y + cap / 2), w, cap, fc=fill, ec=edge, lw=lw, zorder=z))
    ax.add_patch(Rectangle((x, y + cap / 2), w, h - cap, fc=fill, ec="none", zorder=z))
    for side in (x, x + w):
        ax.add_line(
            Line2D([side, side], [y + cap / 2, y + h - cap / 2], color=edge, lw=lw, zorder=z)
        )
    ax.add_patch(Ellipse((x + w / 2, y + h - cap / 2), w, cap, fc=fill, ec=edge, lw=lw, zorder=z))
    stacked_text(ax, Box(x, y, w, h - cap), text, sub, z=z + 0.5)  # centred below the lid
    return Box(x, y, w, h)


def arrow(
    ax: Axes,
    start: Point,
    end: Point,
    *,
    color: str | None = None,
    dashed: bool = False,
    text: str = "",
    text_at: float = 0.5,
    text_offset: Point = (0.0, 0.0),
    text_size: float | None = None,
    mono: bool = False,
    z: float = 3,
) -> None:
    """Straight arrow, optionally labelled (at fraction `text_at` of its length, shifted)."""
    color = color or STYLE["ink"]
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=STYLE["arrow_head"],
            color=color,
            lw=STYLE["line_width"],
            ls=(0, (4, 3)) if dashed else "-",
            shrinkA=1,
            shrinkB=1,
            zorder=z,
        )
    )
    if text:
        tx = start[0] + text_at * (end[0] - start[0]) + text_offset[0]
        ty = start[1] + text_at * (end[1] - start[1]) + text_offset[1]
        label(
            ax,
            tx,
            ty,
            text,
            size=text_size or STYLE["small_size"],
            mono=mono,
            backdrop=True,
            color=color,
            z=z + 1,
        )


def route(
    ax: Axes, points: Sequence[Point], *, color: str | None = None, dashed: bool = False
) -> None:
    """Elbow arrow through `points`; the head is on the last segment."""
    color = color or STYLE["ink"]
    xs, ys = zip(*points[:-1], strict=True)
    ax.add_line(
        Line2D(
            xs,
            ys,
            color=color,
            lw=STYLE["line_width"],
            ls=(0, (4, 3)) if dashed else "-",
            solid_joinstyle="round",
            zorder=3,
        )
    )
    arrow(ax, points[-2], points[-1], color=color, dashed=dashed)


def badge(ax: Axes, x: float, y: float, number: int, color: str | None = None) -> None:
    """Numbered step marker (filled circle) centred at (x, y)."""
    ax.add_patch(Circle((x, y), 0.125, fc=color or STYLE["ink"], ec="none", zorder=6))
    label(ax, x, y - 0.005, str(number), size=9.5, weight="bold", color="#ffffff", z=7)


def legend_steps(
    ax: Axes,
    x: float,
    y: float,
    steps: Sequence[str],
    *,
    columns: int = 2,
    column_width: float = 4.7,
    row_height: float = 0.32,
) -> None:
    """Numbered step list (badge + text) laid out in columns, top-left at (x, y)."""
    rows = -(-len(steps) // columns)
    for i, step in enumerate(steps):
        cx = x + (i // rows) * column_width
        cy = y - (i % rows) * row_height
        badge(ax, cx + 0.125, cy, i + 1)
        label(ax, cx + 0.35, cy, step, size=STYLE["small_size"], ha="left")


def block_chip(ax: Axes, cx: float, cy: float, kind: str = "data", size: float = 0.17) -> None:
    """Small square standing for one data block / batch."""
    fill, edge = colors(kind)
    ax.add_patch(
        FancyBboxPatch(
            (cx - size / 2, cy - size / 2),
            size,
            size,
            boxstyle="round,pad=0,rounding_size=0.03",
            fc=fill,
            ec=edge,
            lw=1.2,
            zorder=5,
        )
    )


def save(fig: Figure, path: Path) -> None:
    """Write a PNG without a timestamp or software tag, so reruns give identical bytes."""
    fig.savefig(path, dpi=STYLE["dpi"], facecolor=STYLE["background"], metadata={"Software": None})


# --------------------------------------------------------------------------- diagrams


def draw_batch_inference() -> Figure:
    """Stored dataset -> batches -> model -> predictions in storage; online inference aside."""
    W, H = 10.0, 5.4
    fig, ax = canvas(W, H)
    title(
        ax,
        H,
        "Batch inference: run a model over a whole stored dataset",
        "Offline and throughput-oriented: what matters is images per second, not one reply.",
    )
    ink, muted = STYLE["ink"], STYLE["muted"]

    data = cylinder(
        ax,
        0.35,
        2.15,
        2.0,
        1.85,
        "Stored dataset",
        sub="ADE20K scenes\n(many images on\ndisk or S3)",
    )
    for i, name in enumerate(["batch 1", "batch 2", "batch 3", "…", "batch N"]):
        y = 3.62 - i * 0.36
        if name == "…":
            label(ax, 3.75, y + 0.14, "⋮", size=13, color=muted)
            continue
        box(
            ax,
            3.2,
            y,
            1.1,
            0.3,
            name,
            "data",
            size=STYLE["small_size"],
            weight="normal",
            corner=0.06,
        )
    label(ax, 3.75, 4.12, "split into batches", size=STYLE["small_size"], color=muted)
    flow_y = 3.05  # centre line of the main flow (batch 3 sits on it)
    model = box(
        ax, 5.25, flow_y - 0.575, 1.9, 1.15, "Model", "worker", sub="SegFormer,\nloaded once"
    )
    out = cylinder(
        ax,
        8.05,
        2.15,
        1.65,
        1.85,
        "Predictions",
        sub="one mask per\nimage, written\nback to storage",
    )

    arrow(ax, (data.x + data.w, flow_y), (3.15, flow_y), text="read", text_offset=(0, 0.17))
    arrow(ax, (4.35, flow_y), model.left)
    arrow(ax, model.right, (out.x, flow_y), text="predict", text_offset=(0, 0.17))

    box(
        ax,
        0.35,
        0.3,
        9.35,
        1.35,
        kind="neutral",
        dashed=True,
        header="For contrast: online inference",
    )
    req = pill(ax, 1.2, 0.82, "1 request", "plain", size=STYLE["small_size"])
    srv = box(
        ax,
        2.45,
        0.6,
        1.75,
        0.45,
        "model server",
        "plain",
        size=STYLE["small_size"],
        weight="normal",
    )
    resp = pill(ax, 5.35, 0.82, "1 response", "plain", size=STYLE["small_size"])
    arrow(ax, req.right, srv.left, color=muted)
    arrow(ax, srv.right, resp.left, color=muted)
    label(
        ax,
        6.3,
        0.82,
        "each request answered alone, as fast as\npossible (low latency, always running)",
        size=STYLE["small_size"],
        color=ink,
        ha="left",
    )
    return fig


def draw_sequential() -> Figure:
    """One worker, batches back to back on a timeline; the rest of the machine idles."""
    W, H = 10.0, 4.7
    fig, ax = canvas(W, H)
    title(
        ax,
        H,
        "Baseline: a sequential loop",
        "One worker runs batch 1, then batch 2, then batch 3 … while the other cores wait.",
    )
    muted = STYLE["muted"]
    lane_h, x0, x1 = 0.55, 2.35, 9.7
    lanes = [
        ("worker", "worker", "model loaded once"),
        ("core 2", "neutral", "idle"),
        ("core 3", "neutral", "idle"),
    ]
    for row, (name, kind, sub) in enumerate(lanes):
        y = 3.0 - row * 0.75
        box(ax, 0.35, y, 1.7, lane_h, name, kind, sub=sub, size=STYLE["small_size"], sub_size=9.5)
        if row == 0:
            step = 1.22
            for i in range(5):
                box(
                    ax,
                    x0 + i * step,
                    y,
                    step - 0.12,
                    lane_h,
                    f"batch {i + 1}",
                    "worker",
                    size=STYLE["small_size"],
                    weight="normal",
                )
            label(
                ax,
                x0 + 5 * step + 0.25,
                y + lane_h / 2,
                "…  batch N",
                size=STYLE["small_size"],
                ha="left",
            )
        else:
            box(
                ax,
                x0,
                y,
                x1 - x0,
                lane_h,
                "idle",
                "neutral",
                dashed=True,
                size=STYLE["small_size"],
                weight="normal",
                text_color=muted,
            )
    arrow(ax, (x0, 1.1), (x1, 1.1), color=muted, text="time", text_at=0.5)
    code(ax, 0.35, 0.72, ["for batch in batches:  preds.append(predict(model, batch))"])
    label(
        ax,
        9.7,
        0.63,
        "total time ≈ N × time per batch",
        size=STYLE["small_size"],
        ha="right",
        weight="bold",
    )
    return fig


def draw_tasks() -> Figure:
    """ray.put once, one stateless task per batch, tasks read the model from the store."""
    W, H = 10.0, 6.6
    fig, ax = canvas(W, H)
    title(
        ax,
        H,
        "Ray Tasks: one stateless task per batch",
        "The model goes into the object store once; every task reads it from there.",
    )
    blue = colors("driver")[1]
    purple = colors("store")[1]
    green = colors("worker")[1]

    driver = box(ax, 0.3, 1.25, 3.15, 3.4, kind="driver", header="Driver (your script)")
    lines = [
        "model_ref = ray.put(model)",
        "",
        "refs = [",
        "  predict_batch.remote(",
        "      model_ref, b)",
        "  for b in batches",
        "]",
        "",
        "preds = ray.get(refs)",
        "# waits for every task",
    ]
    code(ax, 0.62, 4.15, lines)
    for number, line in ((1, 0), (2, 3), (4, 8)):
        badge(ax, 0.45, code_line_y(4.15, line), number)

    store = box(ax, 7.95, 1.25, 1.75, 3.4, kind="store", header="Object store")
    label(ax, store.center[0], 1.65, "shared memory,\none per node", size=9.5, color=purple)
    box(ax, 8.15, 3.55, 1.35, 0.5, "model", "plain", size=STYLE["small_size"])

    tasks = []
    for i in range(3):
        y = 3.75 - i * 1.2
        tasks.append(
            box(
                ax,
                4.55,
                y,
                2.55,
                0.9,
                f"Task {i + 1}",
                "worker",
                sub=f"predict_batch(batch {i + 1})",
                sub_mono=True,
                size=STYLE["small_size"],
            )
        )
    for i, t in enumerate(tasks):
        arrow(ax, (driver.x + driver.w, t.at(0, 0.7)[1]), t.at(0, 0.7), color=blue)
        arrow(ax, t.at(0, 0.3), (driver.x + driver.w, t.at(0, 0.3)[1]), color=green, dashed=True)
        arrow(ax, (store.x, t.at(1, 0.5)[1]), t.right, color=purple, dashed=True)
        if i == 0:
            badge(ax, 4.0, t.at(0, 0.7)[1] + 0.2, 2)
            badge(ax, 7.52, t.at(1, 0.5)[1] + 0.2, 3)
            badge(ax, 4.0, t.at(0, 0.3)[1] - 0.2, 4)
    route(
        ax,
        [
            (1.85, driver.y + driver.h),
            (1.85, 5.1),
            (store.center[0], 5.1),
            (store.center[0], store.y + store.h),
        ],
        color=blue,
    )
    label(
        ax,
        5.0,
        5.1,
        "ray.put(model): stored once, shared by all tasks",
        mono=False,
        size=STYLE["small_size"],
        color=blue,
        backdrop=True,
    )
    badge(ax, 2.5, 5.1, 1)

    legend_steps(
        ax,
        0.3,
        0.85,
        [
            "ray.put places the model in the object store",
            "one task is launched per batch (.remote)",
            "each task reads the model by reference",
            "ray.get waits for and collects the predictions",
        ],
        column_width=4.85,
        row_height=0.34,
    )
    return fig


def draw_actors() -> Figure:
    """Stateful actors hold the model; the driver hands batches to idle actors via ray.wait."""
    W, H = 10.0, 6.5
    fig, ax = canvas(W, H)
    title(
        ax,
        H,
        "Ray Actors: each replica loads the model once and keeps it",
        "The driver tracks which actors are idle and hands each one the next batch.",
    )
    blue, green = colors("driver")[1], colors("worker")[1]

    driver = box(ax, 0.3, 1.3, 4.55, 4.0, kind="driver", header="Driver loop")
    top = 4.8
    lines = [
        "actors = [PredictionActor.remote()",
        "          for _ in range(3)]",
        "idle, pending = list(actors), {}",
        "while batches or pending:",
        "    while idle and batches:",
        "        actor = idle.pop()",
        "        ref = actor.predict.remote(",
        "                  batches.pop())",
        "        pending[ref] = actor",
        "    done, _ = ray.wait(list(pending))",
        "    results.append(ray.get(done[0]))",
        "    idle.append(pending.pop(done[0]))",
    ]
    code(ax, 0.62, top, lines)
    for number, line in ((1, 6), (2, 9), (3, 11)):
        badge(ax, 0.45, code_line_y(top, line), number)
    ax.add_line(Line2D([0.5, 4.65], [2.05, 2.05], color=blue, lw=0.8, ls=(0, (2, 2)), zorder=3))
    label(ax, 0.62, 1.88, "state at this moment", size=9.5, ha="left", color=STYLE["muted"])
    label(ax, 0.62, 1.55, "idle:", size=STYLE["small_size"], ha="left", weight="bold")
    pill(ax, 1.62, 1.55, "actor 3", "plain")
    label(ax, 2.3, 1.55, "busy:", size=STYLE["small_size"], ha="left", weight="bold")
    pill(ax, 3.32, 1.55, "actor 1", "data")
    pill(ax, 4.18, 1.55, "actor 2", "data")

    states = [("busy · batch 7", "data"), ("busy · batch 8", "data"), ("idle", "plain")]
    actors = []
    for i, (state, kind) in enumerate(states):
        y = 4.1 - i * 1.4
        a = box(ax, 6.15, y, 3.55, 1.2, kind="worker", header=f"PredictionActor {i + 1}")
        box(
            ax,
            6.35,
            y + 0.15,
            2.1,
            0.48,
            "model",
            "plain",
            sub="loaded in __init__",
            size=STYLE["small_size"],
            sub_size=9,
        )
        pill(ax, 9.0, y + 0.39, state, kind)
        actors.append(a)
    for i, a in enumerate(actors[:2]):
        arrow(
            ax,
            (driver.x + driver.w, a.at(0, 0.5)[1]),
            a.left,
            color=blue,
            text=f"batch {7 + i}",
            text_offset=(0, 0.17),
        )
    a3 = actors[2]
    arrow(
        ax,
        a3.left,
        (driver.x + driver.w, a3.at(0, 0.5)[1]),
        color=green,
        dashed=True,
        text="first result",
        text_offset=(0, 0.17),
    )
    badge(ax, 5.5, actors[0].at(0, 0.5)[1] - 0.22, 1)
    badge(ax, 5.5, a3.at(0, 0.5)[1] - 0.22, 2)

    legend_steps(
        ax,
        0.3,
        0.85,
        [
            "hand the next batch to an idle actor (.remote)",
            "ray.wait returns the first result to finish",
            "that actor goes back on the idle list",
            "repeat until every batch is done",
        ],
        column_width=4.85,
        row_height=0.34,
    )
    return fig


def draw_actor_pool() -> Figure:
    """ActorPool wraps the actors and does the idle/busy bookkeeping for the driver."""
    W, H = 10.0, 5.9
    fig, ax = canvas(W, H)
    title(
        ax,
        H,
        "ActorPool: the pool does the idle / busy bookkeeping",
        "Same actors as before; the driver just asks for results as they finish.",
    )
    blue, purple, green = colors("driver")[1], colors("store")[1], colors("worker")[1]

    drv = box(ax, 0.3, 3.95, 9.4, 0.95, kind="driver")
    label(ax, 0.5, drv.center[1], "Driver", weight="bold", ha="left", color=blue)
    code(
        ax,
        1.55,
        drv.center[1] + line_height(STYLE["code_size"]),
        [
            "pool = ActorPool([PredictionActor.remote() for _ in range(3)])",
            "for preds in pool.map_unordered(lambda a, b: a.predict.remote(b), batches): ...",
        ],
    )

    label(ax, 0.85, 3.45, "batches", size=STYLE["small_size"], weight="bold")
    feed_y = 2.0
    for i in range(5):
        box(
            ax,
            0.35,
            feed_y + (2 - i) * 0.45 - 0.17,
            1.0,
            0.34,
            f"batch {i + 1}",
            "data",
            size=STYLE["small_size"],
            weight="normal",
            corner=0.06,
        )
    label(ax, 0.85, 0.72, "⋮", size=13, color=STYLE["muted"])

    pool = box(ax, 1.9, 0.35, 6.0, 3.3, kind="store", dashed=True, header="ActorPool", z=1)
    sched = box(
        ax,
        2.15,
        1.1,
        2.1,
        1.8,
        "bookkeeping",
        "plain",
        sub="gives the next batch\nto an idle actor;\nmarks it busy, then\nidle again when done",
        size=STYLE["small_size"],
        sub_size=9.5,
    )
    actors = []
    for i in range(3):
        y = 2.75 - i * 1.0
        actors.append(
            box(
                ax,
                5.2,
                y,
                2.45,
                0.75,
                f"PredictionActor {i + 1}",
                "worker",
                sub="model loaded once",
                size=STYLE["small_size"],
                sub_size=9.5,
            )
        )
        arrow(ax, sched.right, actors[-1].left, color=purple)
    arrow(ax, (1.4, feed_y), sched.left, color=blue)
    arrow(
        ax,
        drv.at(0.33, 0.0),
        (drv.at(0.33, 0)[0], pool.y + pool.h),
        color=blue,
        text="map_unordered(fn, batches)",
        mono=True,
        text_size=9.5,
        text_offset=(1.35, 0.0),
    )

    label(ax, 8.85, 3.45, "results", size=STYLE["small_size"], weight="bold")
    for a, n in zip(actors, (2, 1, 3), strict=True):  # results arrive in completion order
        chip = box(
            ax,
            8.35,
            a.center[1] - 0.17,
            1.1,
            0.34,
            f"preds {n}",
            "worker",
            size=STYLE["small_size"],
            weight="normal",
            corner=0.06,
        )
        arrow(ax, a.right, chip.left, color=green)
    label(ax, 8.9, 0.62, "in the order\nthey finish", size=9.5, color=STYLE["muted"])
    return fig


def draw_ray_data() -> Figure:
    """read -> preprocess -> map_batches on an actor pool -> write, with blocks streaming."""
    W, H = 10.4, 6.0
    fig, ax = canvas(W, H)
    title(
        ax,
        H,
        "Ray Data: a streaming batch-inference pipeline",
        "Blocks of rows flow through the operators; reading, inference and writing overlap.",
    )
    muted = STYLE["muted"]

    top = 4.9
    banner = box(ax, 0.3, 4.05, 9.8, 1.0, kind="driver")
    label(
        ax, 9.95, banner.center[1], "Driver", weight="bold", ha="right", color=colors("driver")[1]
    )
    code(
        ax,
        0.5,
        top,
        [
            "ds = ray.data.read_images(path)        # or ray.data.read_parquet(path)",
            "ds = ds.map_batches(preprocess)",
            "ds = ds.map_batches(Predictor, compute=ActorPoolStrategy(size=2), num_gpus=1)",
            "ds.write_parquet(out_path)",
        ],
    )

    y, h = 1.75, 1.65
    read = box(
        ax,
        0.3,
        y,
        1.55,
        h,
        "Read",
        "data",
        sub="read_images\nread_parquet",
        sub_mono=True,
        sub_size=9,
    )
    prep = box(
        ax,
        2.6,
        y,
        1.8,
        h,
        "Preprocess",
        "worker",
        sub="map_batches(fn)\n\nCPU tasks",
        sub_mono=False,
        sub_size=STYLE["small_size"],
    )
    pred = box(ax, 5.15, y, 2.85, h, kind="worker")
    label(ax, pred.center[0], y + h - 0.2, "Predict", weight="bold", va="center")
    label(
        ax,
        pred.center[0],
        y + h - 0.56,
        "map_batches(Predictor,\n compute=ActorPoolStrategy)",
        mono=True,
        size=9,
    )
    for i in range(2):
        box(
            ax,
            5.35 + i * 1.27,
            y + 0.15,
            1.18,
            0.42,
            f"actor {i + 1}",
            "plain",
            sub="GPU",
            size=9.5,
            sub_size=8.5,
        )
    write = box(
        ax, 8.75, y, 1.35, h, "Write", "data", sub="write_parquet", sub_mono=True, sub_size=9
    )
    stages = [read, prep, pred, write]
    for left, right in pairwise(stages):
        a, b = left.right, right.left
        arrow(ax, a, b)
        for k in range(2):
            block_chip(ax, a[0] + (b[0] - a[0]) * (0.3 + 0.3 * k), a[1])

    src = cylinder(ax, 0.45, 0.3, 1.25, 1.0, "images", sub="disk / S3")
    dst = cylinder(ax, 8.8, 0.3, 1.25, 1.0, "masks", sub="Parquet")
    arrow(ax, src.top, read.bottom)
    arrow(ax, write.bottom, dst.top)

    block_chip(ax, 2.75, 1.1)
    label(
        ax,
        2.95,
        1.1,
        "= one block (a batch of rows) moving downstream",
        size=STYLE["small_size"],
        ha="left",
    )
    label(
        ax,
        2.6,
        0.62,
        "Only a few blocks are in flight at a time, so memory stays bounded\n"
        "and the GPU actors always have the next batch waiting.",
        size=STYLE["small_size"],
        ha="left",
        color=muted,
    )
    return fig


def draw_checkpoint_predictor() -> Figure:
    """save_pretrained -> directory -> Checkpoint -> Predictor.from_checkpoint once per actor."""
    W, H = 10.0, 6.7
    fig, ax = canvas(W, H)
    title(
        ax,
        H,
        "Checkpoint + Predictor: load once per actor, predict per batch",
        "A checkpoint is a small handle to model files; every actor builds its own predictor.",
    )
    purple, green = colors("store")[1], colors("worker")[1]

    row_y, row_h = 4.0, 1.3
    model = box(
        ax,
        0.3,
        row_y + 0.2,
        1.6,
        row_h - 0.4,
        "Trained model",
        "worker",
        sub="SegFormer",
        size=STYLE["small_size"],
    )
    folder = box(ax, 3.55, row_y, 2.4, row_h, kind="data", header="model_dir/", header_mono=True)
    code(
        ax,
        3.7,
        row_y + row_h - 0.42,
        ["config.json", "model.safetensors", "preprocessor_config.json"],
        size=9.5,
    )
    ckpt = box(
        ax,
        7.15,
        row_y + 0.1,
        2.55,
        row_h - 0.2,
        "ray.train.Checkpoint",
        "store",
        sub="Checkpoint.from_directory(\n    model_dir)",
        sub_mono=True,
        sub_size=9,
        size=STYLE["small_size"],
    )
    arrow(
        ax,
        model.right,
        folder.left,
        text="save_pretrained()",
        mono=True,
        text_size=9,
        text_offset=(0, 0.2),
    )
    arrow(ax, folder.right, ckpt.left, text="wrap", text_offset=(0, 0.2))

    box(
        ax,
        1.85,
        0.35,
        6.3,
        3.05,
        kind="store",
        dashed=True,
        z=1,
        header="ds.map_batches(Segmenter, compute=ActorPoolStrategy(size=N))",
        header_mono=True,
    )
    for k in (2, 1):
        box(ax, 2.1 + 0.12 * k, 0.6 + 0.12 * k, 5.5, 2.15, kind="worker", z=1.5)
    card = box(
        ax, 2.1, 0.6, 5.5, 2.15, kind="worker", header="each actor: one Segmenter instance (× N)"
    )
    once_y, each_y = 2.0, 1.15
    badge(ax, 2.4, once_y, 1)
    label(
        ax,
        2.62,
        once_y + 0.13,
        "once, in __init__:",
        size=STYLE["small_size"],
        ha="left",
        weight="bold",
    )
    label(
        ax,
        2.62,
        once_y - 0.15,
        "self.p = Predictor.from_checkpoint(checkpoint)",
        mono=True,
        size=9.5,
        ha="left",
    )
    badge(ax, 2.4, each_y, 2)
    label(
        ax,
        2.62,
        each_y + 0.13,
        "per batch, in __call__(batch):",
        size=STYLE["small_size"],
        ha="left",
        weight="bold",
    )
    label(ax, 2.62, each_y - 0.15, "return self.p.predict(batch)", mono=True, size=9.5, ha="left")

    route(
        ax, [ckpt.bottom, (ckpt.bottom[0], 3.7), (7.42, 3.7), (7.42, card.y + card.h)], color=purple
    )
    label(
        ax,
        ckpt.bottom[0] + 0.12,
        3.82,
        "same checkpoint,\nevery actor",
        size=9.5,
        color=purple,
        ha="left",
    )

    label(ax, 0.85, each_y + 0.78, "batches", size=STYLE["small_size"], weight="bold")
    for i in range(3):
        box(
            ax,
            0.35,
            each_y + (1 - i) * 0.42 - 0.16,
            1.0,
            0.32,
            f"batch {i + 1}",
            "data",
            size=STYLE["small_size"],
            weight="normal",
            corner=0.06,
        )
    arrow(ax, (1.4, each_y), (card.x, each_y))
    out = cylinder(ax, 8.55, 0.55, 1.15, 1.1, "masks", sub="write_parquet")
    arrow(ax, (card.x + card.w + 0.24, each_y), (out.x, each_y), color=green)
    return fig


DIAGRAMS: dict[str, Callable[[], Figure]] = {
    "batch_inference": draw_batch_inference,
    "sequential": draw_sequential,
    "tasks": draw_tasks,
    "actors": draw_actors,
    "actor_pool": draw_actor_pool,
    "ray_data": draw_ray_data,
    "checkpoint_predictor": draw_checkpoint_predictor,
}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and write the selected diagrams."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "diagrams",
        help="output folder (default: diagrams/ beside this script)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        choices=sorted(DIAGRAMS),
        default=None,
        help="draw only these diagrams (default: all)",
    )
    args = parser.parse_args(argv)
    apply_style()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or DIAGRAMS:
        fig = DIAGRAMS[name]()
        path = args.out / f"{name}.png"
        save(fig, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
