"""Measuring: wall-clock stopwatches, per-batch spans from workers, tables and timelines."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


class Stopwatch:
    """Context manager measuring wall time: `with Stopwatch() as sw: ...; sw.seconds`."""

    def __enter__(self) -> Stopwatch:
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


def plot_timeline(spans: Sequence[Span], title: str = "Batches per worker") -> Figure:
    """One row per worker process, one bar per batch from its measured start to end."""
    if not spans:
        raise ValueError("no spans to plot")
    origin = min(span.start for span in spans)
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
    ax.set_xlabel("seconds since the first batch started")
    end = max(span.end for span in spans) - origin
    ax.set_title(f"{title}: {len(spans)} batches on {len(workers)} worker(s), {end:.1f} s")
    figure.tight_layout()
    return figure
