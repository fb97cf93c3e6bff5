"""Measuring: wall-clock stopwatches, per-batch spans from workers, tables and timelines, and
each notebook's measured runs saved for the recap."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from .config import get_config


class Stopwatch:
    """Context manager measuring wall time: `with Stopwatch() as sw: ...; sw.seconds`.

    `started_at` is the start as `time.time()`, the clock of `Span`s, so that a timeline can
    show how long a run took before its first batch began (`plot_timeline(started=...)`).
    """

    def __enter__(self) -> Stopwatch:
        self.started_at = time.time()
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self.start


@dataclass(frozen=True)
class Span:
    """One batch's work on one worker process, in wall-clock seconds since the epoch."""

    worker: str
    start: float
    end: float
    n_images: int


def worker_name() -> str:
    """`host:pid` of the calling process, to tell workers apart in a timeline."""
    return f"{socket.gethostname()}:{os.getpid()}"


def spans_from(table):
    """One Span per batch, from a table of one row per image with its batch's worker, start, end."""
    frame = table.select(["worker", "start", "end"]).to_pandas()
    groups = frame.groupby(["worker", "start", "end"]).size().reset_index(name="n")
    return [Span(r.worker, r.start, r.end, int(r.n)) for r in groups.itertuples()]


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Span]:
    """Call `fn(*args, **kwargs)` and return its result with the span it took here.

    The span's `n_images` is the length of the result (one map per image).
    """
    start = time.time()
    result = fn(*args, **kwargs)
    return result, Span(worker_name(), start, time.time(), len(result))


def results_table(rows: Iterable[dict[str, Any]], baseline: str | None = None) -> pd.DataFrame:
    """A table of measured runs: approach, images, seconds, images/s (and speed-up).

    Each row needs `approach`, `images` and `seconds`; with `baseline`, a column gives
    each row's images/s relative to that approach's.
    """
    table = pd.DataFrame(list(rows))
    table["images/s"] = table["images"] / table["seconds"]
    if baseline is not None:
        reference = table.loc[table["approach"] == baseline, "images/s"]
        if reference.empty:
            raise ValueError(f"baseline {baseline!r} is not among the approaches")
        table["vs " + baseline] = table["images/s"] / reference.iloc[0]
    return table.round(3)


def save_results(
    notebook: str, rows: Iterable[dict[str, Any]], cache_dir: Path | None = None
) -> Path:
    """Keep a notebook's measured runs (`approach`, `images`, `seconds`) in the course cache.

    The recap (notebook 07) reads every notebook's runs back with `saved_results` and compares
    the approaches without running them all again. One file per notebook and image count: a
    later run of the same notebook at the same count replaces it.
    """
    table = pd.DataFrame(list(rows))[["approach", "images", "seconds"]]
    table.insert(0, "notebook", notebook)
    table["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    images = int(table["images"].max())
    path = (cache_dir or get_config().cache_dir) / "results" / f"{notebook}-{images}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(f".{os.getpid()}.tmp")
    table.to_csv(staged, index=False)
    os.replace(staged, path)  # a notebook stopped mid-write leaves no half file
    return path


def saved_results(images: int, cache_dir: Path | None = None) -> pd.DataFrame:
    """Every notebook's runs saved by `save_results` whose largest run had `images` images."""
    folder = (cache_dir or get_config().cache_dir) / "results"
    tables = [pd.read_csv(path) for path in sorted(folder.glob(f"*-{images}.csv"))]
    columns = ["notebook", "approach", "images", "seconds", "measured_at"]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)


def plot_timeline(
    spans: Sequence[Span], title: str = "Batches per worker", started: float | None = None
) -> Figure:
    """One row per worker process, one bar per batch from its measured start to end.

    With `started`, the `time.time()` when the run was submitted (a `Stopwatch`'s
    `started_at`), the axis begins there and a grey band shows the start-up: the time before
    any batch began (starting processes, imports, loading the model).
    """
    if not spans:
        raise ValueError("no spans to plot")
    first = min(span.start for span in spans)
    origin = first if started is None else min(started, first)
    workers = sorted(
        {span.worker for span in spans}, key=lambda w: min(s.start for s in spans if s.worker == w)
    )
    figure, ax = plt.subplots(figsize=(10, 0.55 * len(workers) + 1.6))
    colours = plt.get_cmap("tab10").colors
    for number, span in enumerate(sorted(spans, key=lambda s: s.start)):
        row = workers.index(span.worker)
        ax.barh(
            row,
            span.end - span.start,
            left=span.start - origin,
            height=0.6,
            color=colours[number % len(colours)],
            edgecolor="white",
        )
    ax.set_yticks(range(len(workers)), [f"worker {i} ({w})" for i, w in enumerate(workers)])
    ax.invert_yaxis()
    if started is None:
        ax.set_xlabel("seconds since the first batch started")
    else:
        ax.axvspan(0, first - origin, color="0.85", zorder=0)  # the start-up, before any batch
        ax.set_xlabel(f"seconds since the run started (grey: start-up, {first - origin:.1f} s)")
    end = max(span.end for span in spans) - origin
    ax.set_title(f"{title}: {len(spans)} batches on {len(workers)} worker(s), {end:.1f} s")
    figure.tight_layout()
    return figure
