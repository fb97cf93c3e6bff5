"""Benchmark every approach of the course on this machine, and profile one batch by stage.

    python -m utils.tools.benchmark [--images 10 100 1000] [--approaches sequential tasks ...]
                              [--batch-size 16] [--out results]
    python -m utils.tools.benchmark --job-memory 10000     # the production job's peak memory

Writes `results/benchmark.csv` (one row per approach and image count), `benchmark.md`
(the same as a table, with the machine and the stage profile), and `benchmark.png`
(images/s per approach and count). Every Ray approach's maps are checked against the
sequential loop's, image by image. Beside each total, the start-up (from the first
submission to the first finished batch) and the steady rate after it are reported apart:
at a few hundred images, process starts and model loading weigh as much as inference.
Each approach runs the notebooks' own code (kept in `utils.workers` and `utils.predictor`);
the notebooks explain it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch
from PIL import Image

from utils.check import add_predictions, assert_same_maps
from utils.cluster import actor_cpus, gpus_per_worker
from utils.data import load_test_images, png_bytes, write_images_parquet
from utils.images import convert_image_to_rgb, make_batches
from utils.inference import predict, reference_predict, upsample_argmax
from utils.model import is_offline_model, load_model, model_recipe
from utils.timing import Span, Stopwatch, spans_from, timed

APPROACHES = ("sequential", "tasks", "actors", "actor_pool", "ray_data", "checkpoint_predictor")
COLUMNS = (
    "approach",
    "n_images",
    "seconds",
    "images_per_s",
    "first_batch_s",
    "steady_images_per_s",
    "peak_rss_mb",
    "cpu_count",
    "gpu",
    "ray_version",
    "torch_version",
    "model_source",
)

Batch = tuple[list[str], list[Image.Image]]
# What a runner returns: {image_id: map}, and each batch's Span (where, from when to when, in
# time.time() taken where it ran, and how many images).
Run = tuple[dict[str, np.ndarray], list[Span]]


@dataclass(frozen=True)
class Workload:
    """What every approach gets: the batches in memory and, for Ray Data, the same images
    as Parquet files of their original bytes on disk (written before the clock starts:
    preparing data is not inference)."""

    batches: Sequence[Batch]
    parquet: Path


# ---------------------------------------------------------------- the approaches
# Each runs the code its notebook teaches, imported from `utils.workers` and `utils.predictor`
# (where a test keeps it identical to the notebook's), with one CPU and one torch thread per
# worker as in the notebooks.


def run_sequential(model, processor, work: Workload, workers: int) -> Run:
    """The baseline: one process, batch after batch, torch using every core."""
    return _collect(
        (dict(zip(ids, maps, strict=True)), span)
        for ids, images in work.batches
        for maps, span in [timed(predict, model, processor, images)]
    )


def _collect(outcomes) -> Run:
    """Merge `({image_id: map}, span)` pairs into a `Run`."""
    results, spans = {}, []
    for maps, span in outcomes:
        add_predictions(results, maps)
        spans.append(span)
    return results, spans


def run_tasks(model, processor, work: Workload, workers: int) -> Run:
    """Ray Tasks, as notebook 02: the model's recipe put in the object store once, one
    `predict_batch` task per batch, each rebuilding the model."""
    import ray

    from utils.workers import predict_batch

    task = predict_batch.options(num_cpus=1, num_gpus=gpus_per_worker(workers))
    recipe_ref, processor_ref = ray.put(model_recipe(model)), ray.put(processor)
    refs = [task.remote(recipe_ref, processor_ref, ids, images) for ids, images in work.batches]
    return _collect(ray.get(refs))


def _start_actors(workers: int) -> list:
    from utils.workers import PredictionActor

    share = PredictionActor.options(num_cpus=1, num_gpus=gpus_per_worker(workers))
    return [share.remote() for _ in range(workers)]


def run_actors(model, processor, work: Workload, workers: int) -> Run:
    """Ray Actors, as notebook 03: its `PredictionActor`s and its `ray.wait` loop."""
    import ray

    from utils.workers import run_on_actors

    actors = _start_actors(workers)
    try:
        return run_on_actors(actors, work.batches)
    finally:
        for actor in actors:
            ray.kill(actor)


def run_actor_pool(model, processor, work: Workload, workers: int) -> Run:
    """ActorPool, as notebook 04: the same actors, `map_unordered` with its `predict_on`."""
    import ray
    from ray.util.actor_pool import ActorPool

    from utils.workers import predict_on

    actors = _start_actors(workers)
    try:
        return _collect(ActorPool(actors).map_unordered(predict_on, work.batches))
    finally:
        for actor in actors:
            ray.kill(actor)


def _images_dataset(work: Workload):
    """The Parquet input, split back into one block per batch, as notebooks 05 and 06 do."""
    import ray

    batch_size = max(len(ids) for ids, _ in work.batches)
    return ray.data.read_parquet(str(work.parquet)).repartition(
        target_num_rows_per_block=batch_size
    ), batch_size


def _written(predictions) -> Run:
    """Write `predictions` to Parquet, as the notebooks do, and read the maps and spans back."""
    import pyarrow.parquet as pq

    from utils.masks import read_masks

    with tempfile.TemporaryDirectory() as folder:
        masks = Path(folder) / "masks"
        predictions.write_parquet(str(masks))
        return read_masks(masks), spans_from(pq.read_table(masks))


def run_ray_data(model, processor, work: Workload, workers: int) -> Run:
    """Ray Data, as notebook 05: Parquet in, its `SegmentImages` on an actor pool, Parquet out."""
    import ray

    from utils.workers import SegmentImages

    images, batch_size = _images_dataset(work)
    predictions = images.map_batches(
        SegmentImages,
        fn_constructor_args=(1,),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=actor_cpus(workers, 1),
        num_gpus=gpus_per_worker(workers),
    )
    return _written(predictions)


def run_checkpoint_predictor(model, processor, work: Workload, workers: int) -> Run:
    """Checkpoint + predictor, as notebook 06: each actor builds a `SegmentationPredictor`
    from a `ray.train.Checkpoint` (`batch_predict`)."""
    from utils.predictor import SegmentationPredictor, batch_predict, save_checkpoint

    images, batch_size = _images_dataset(work)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_checkpoint(model, processor, Path(folder) / "checkpoint")
        predictions = batch_predict(
            images,
            checkpoint,
            SegmentationPredictor,
            batch_size=batch_size,
            actors=workers,
            threads=1,
            num_gpus=gpus_per_worker(workers),
        )
        return _written(predictions)


RUNNERS: dict[str, Callable[..., Run]] = {
    "sequential": run_sequential,
    "tasks": run_tasks,
    "actors": run_actors,
    "actor_pool": run_actor_pool,
    "ray_data": run_ray_data,
    "checkpoint_predictor": run_checkpoint_predictor,
}


# ---------------------------------------------------------------- measuring


def startup_and_steady(started: float, ended: float, spans: Sequence[Span]) -> tuple[float, float]:
    """(seconds from `started` to the end of the first finished batch, images/s from then on).

    The steady rate counts the work done after the first batch finished: each batch's images
    in proportion to the part of its span that lies after that moment (a second worker's first
    batch, mostly done during the start-up, counts for little), over the time from then to
    `ended`. NaN when no work was left after the first batch.
    """
    first = min(span.end for span in spans)
    after = sum(
        span.n_images * (span.end - max(span.start, first)) / (span.end - span.start)
        for span in spans
        if span.end > first and span.end > span.start
    )
    steady = after / (ended - first) if after and ended > first else math.nan
    return first - started, steady


def _summed(processes: list[psutil.Process], measure: Callable[[psutil.Process], int]) -> int:
    """`measure` summed over `processes`, skipping any that ended meanwhile."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += measure(process)
    return total


class PeakMemory:
    """Samples the resident memory of this process plus Ray's worker processes on this node,
    or of the process `root` and everything it started.

    Resident sizes (RSS) are summed, so memory shared between processes (libraries, Ray's
    object store) counts once per process: an upper bound, read every `interval_s`. With
    `proportional=True` it also sums each process's proportional set size (PSS: shared pages
    split between the processes sharing them), which adds up to the memory the run actually
    occupies. Reading PSS makes the kernel walk every page table (about 20 ms for a process
    that has imported torch), so PSS is read only as often as keeps the sampler within
    `pss_budget` of one CPU: otherwise it would take CPU from the run it measures.
    """

    def __init__(
        self,
        interval_s: float = 0.25,
        root: int | None = None,
        proportional: bool = False,
        pss_budget: float = 0.02,
    ) -> None:
        self.interval_s, self.peak_bytes, self.root = interval_s, 0, root
        self.proportional, self.peak_pss_bytes, self.pss_budget = proportional, 0, pss_budget
        self.samples = self.pss_samples = 0
        self.cpu_seconds = 0.0  # the sampler's own CPU time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[psutil.Process]:
        if self.root is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.root)
                return [root, *root.children(recursive=True)]
            return []
        found = [psutil.Process()]
        try:
            import ray

            node = ray._private.worker._global_node  # set when this driver started Ray
            raylet = node.all_processes.get("raylet", []) if node else []
            for info in raylet:
                found += psutil.Process(info.process.pid).children(recursive=True)
        except Exception:  # noqa: BLE001 - a remote cluster: only the driver is measured
            pass
        return found

    def _run(self) -> None:
        next_pss = 0.0
        while not self._stop.is_set():
            started = time.thread_time()
            processes = self._processes()
            rss = _summed(processes, lambda process: process.memory_info().rss)
            self.peak_bytes = max(self.peak_bytes, rss)
            self.samples += 1
            if self.proportional and time.monotonic() >= next_pss:
                pss_started = time.thread_time()
                pss = _summed(processes, lambda process: process.memory_full_info().pss)
                self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
                self.pss_samples += 1
                cost = time.thread_time() - pss_started
                next_pss = time.monotonic() + cost / self.pss_budget
            self.cpu_seconds += time.thread_time() - started
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def machine_info(model) -> dict[str, Any]:
    """What the numbers were measured on."""
    import ray

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "model_source": (
            "offline random weights (SegFormer-b0)"
            if is_offline_model(model)
            else model.config.name_or_path
        ),
    }


def profile_stages(model, processor, images: Sequence[Image.Image]) -> dict[str, float]:
    """Milliseconds per image for each stage of `predict`, on one batch."""
    n = len(images)
    encoded = [png_bytes(image) for image in images]
    timings: dict[str, float] = {}

    def clock(name: str, fn: Callable[[], Any]) -> Any:
        with Stopwatch() as watch:
            result = fn()
        timings[name] = watch.seconds * 1000 / n
        return result

    rgb = clock(
        "decode + convert",
        lambda: [convert_image_to_rgb(Image.open(io.BytesIO(b))) for b in encoded],
    )
    pixels = clock("preprocess", lambda: processor(images=rgb, return_tensors="pt")["pixel_values"])
    with torch.inference_mode():
        logits = clock(
            "model forward", lambda: model(pixel_values=pixel_values_on(model, pixels)).logits
        )
        sizes = [(image.height, image.width) for image in rgb]
        clock(
            "postprocess (upsample + argmax, utils.predict)",
            lambda: [upsample_argmax(logits[i], size) for i, size in enumerate(sizes)],
        )
        clock(
            "postprocess (transformers, all 150 classes)",
            lambda: processor.post_process_semantic_segmentation(
                type("Out", (), {"logits": logits})(), target_sizes=sizes
            ),
        )
    return timings


def pixel_values_on(model, pixels: torch.Tensor) -> torch.Tensor:
    return pixels.to(next(model.parameters()).device)


def hardware_ceiling(model) -> dict[str, float]:
    """Model GFLOP per 512x512 image, measured fp32 matmul GFLOP/s, and the ceiling they imply."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    sample = torch.zeros(1, 3, 512, 512, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(pixel_values=sample)
    gflop = counter.get_total_flops() / 1e9
    size = 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    reps = 5
    with Stopwatch() as watch:
        for _ in range(reps):
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
    matmul_gflops = 2 * size**3 * reps / watch.seconds / 1e9
    return {
        "gflop_per_image": gflop,
        "matmul_gflop_per_s": matmul_gflops,
        "ceiling_images_per_s": matmul_gflops / gflop,
    }


def measure_forward_vs_predict(
    model, processor, images: Sequence[Image.Image], batch_size: int, rounds: int = 3
) -> dict[str, float]:
    """Throughput of the forward pass alone vs `predict` end to end (and the plain path).

    The two alternate for `rounds` rounds and each keeps its fastest: a busy neighbour on a
    shared machine slows one round, not the comparison.
    """
    rgb = [convert_image_to_rgb(image) for image in images]
    batches = [rgb[i : i + batch_size] for i in range(0, len(rgb), batch_size)]
    pixels = [processor(images=batch, return_tensors="pt")["pixel_values"] for batch in batches]

    def forward_pass() -> None:
        with torch.inference_mode():
            for batch_pixels in pixels:
                model(pixel_values=pixel_values_on(model, batch_pixels))

    def seconds(step: Callable[[], object]) -> float:
        with Stopwatch() as watch:
            step()
        return watch.seconds

    with torch.inference_mode():
        model(pixel_values=pixel_values_on(model, pixels[0]))  # warm up
    forward, fast = math.inf, math.inf
    for _ in range(rounds):
        forward = min(forward, seconds(forward_pass))
        fast = min(fast, seconds(lambda: [predict(model, processor, b) for b in batches]))
    plain = seconds(lambda: [reference_predict(model, processor, b) for b in batches])
    return {
        "forward_images_per_s": len(rgb) / forward,
        "predict_images_per_s": len(rgb) / fast,
        "plain_predict_images_per_s": len(rgb) / plain,
        "predict_vs_forward": forward / fast,
        "plain_vs_forward": forward / plain,
    }


# ---------------------------------------------------------------- the command


def run(
    counts: Sequence[int],
    approaches: Sequence[str],
    batch_size: int,
    out: Path,
    progress: bool = True,
    profile: bool = True,
) -> pd.DataFrame:
    """Run every approach at every count, check the maps, write the results; return the table.

    With `profile`, the report also times one batch by stage, `predict` against the forward
    pass alone, and the hardware ceiling (a minute or two on a small CPU).
    """
    import logging

    import ray
    from tqdm.auto import tqdm

    from utils.cluster import course_runtime_env, describe_cluster

    # The sequential loop always runs, first: its maps are every other approach's reference.
    approaches = ["sequential", *[a for a in approaches if a != "sequential"]]
    out.mkdir(parents=True, exist_ok=True)
    model, processor = load_model()
    machine = machine_info(model)
    dataset = load_test_images(max(counts))
    ids = list(dataset["image_id"])
    images = [convert_image_to_rgb(image) for image in dataset["image"]]
    ray.init(runtime_env=course_runtime_env(), logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False
    context.use_datasource_v2 = False  # as notebooks 05 and 06: see 05 for why
    print(describe_cluster())
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    rows, bar = [], tqdm(total=len(counts) * len(approaches), disable=not progress)
    scratch = tempfile.TemporaryDirectory(prefix="benchmark-")
    try:
        for n in counts:
            # Small enough batches that every worker gets at least two, when n allows it.
            size = max(1, min(batch_size, n // (2 * workers)))
            work = Workload(
                make_batches(ids[:n], images[:n], size),
                write_images_parquet(
                    dataset.select(range(n)), Path(scratch.name) / f"images-{n}", size
                ),
            )
            expected = None
            for name in approaches:
                bar.set_description(f"{name} x {n}")
                with PeakMemory() as memory, Stopwatch() as watch:
                    got, spans = RUNNERS[name](model, processor, work, workers)
                seconds = watch.seconds
                first_batch, steady = startup_and_steady(
                    watch.started_at, watch.started_at + seconds, spans
                )
                if expected is None:
                    expected = got  # the sequential loop runs first
                else:
                    assert_same_maps(got, expected)
                rows.append(
                    {
                        "approach": name,
                        "n_images": n,
                        "seconds": round(seconds, 3),
                        "images_per_s": round(n / seconds, 3),
                        "first_batch_s": round(first_batch, 2),
                        "steady_images_per_s": round(steady, 3),
                        "peak_rss_mb": round(memory.peak_bytes / 2**20),
                        **{k: machine[k] for k in COLUMNS if k in machine},
                    }
                )
                bar.update()
                bar.write(
                    f"{name:>22} {n:>6} images: {seconds:8.1f} s, {n / seconds:6.2f} images/s; "
                    f"first batch after {first_batch:.1f} s, then {steady:.2f} images/s"
                )
    finally:
        bar.close()
        ray.shutdown()
        scratch.cleanup()
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.to_csv(out / "benchmark.csv", index=False)
    stages: dict[str, Any] = {}
    if profile:
        stages = {
            "stage_ms_per_image": profile_stages(model, processor, images[:batch_size]),
            "ceiling": hardware_ceiling(model),
            "speed": measure_forward_vs_predict(
                model, processor, images[: 2 * batch_size], batch_size
            ),
        }
    (out / "machine.json").write_text(json.dumps({**machine, **stages}, indent=2))
    write_report(table, machine, stages, out)
    return table


def markdown_table(frame: pd.DataFrame, floatfmt: str) -> str:
    """A DataFrame as a markdown table, index first (no extra dependency)."""
    header = [str(frame.index.name or "")] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(index)] + cells) + " |")
    return "\n".join(lines)


def write_report(
    table: pd.DataFrame, machine: dict[str, Any], stages: dict[str, Any], out: Path
) -> None:
    """benchmark.md (tables, ratios and, when measured, `stages`: the stage profile, predict
    vs forward, the hardware ceiling) and benchmark.png (images/s per approach and count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = table.pivot(index="approach", columns="n_images", values="images_per_s")
    wide = wide.reindex([a for a in APPROACHES if a in wide.index])
    lines = [
        "# Benchmark",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, GPU: {machine['gpu']}; "
        f"Ray {machine['ray_version']}, torch {machine['torch_version']}; "
        f"model: {machine['model_source']}.",
        "",
        "## Images per second",
        "",
        markdown_table(wide, ".2f"),
        "",
    ]
    lines += relative_to_the_loop(wide, "## Relative to the sequential loop")
    first = table.pivot(index="approach", columns="n_images", values="first_batch_s")
    steady = table.pivot(index="approach", columns="n_images", values="steady_images_per_s")
    first, steady = first.reindex(wide.index), steady.reindex(wide.index)
    lines += [
        "## Start-up and steady state",
        "",
        "Seconds from the first submission to the first finished batch (starting processes, "
        "importing torch and transformers, loading the model, then one batch's work):",
        "",
        markdown_table(first, ".1f"),
        "",
        "Images per second after that first batch:",
        "",
        markdown_table(steady, ".2f"),
        "",
    ]
    lines += relative_to_the_loop(steady, "Steady rate relative to the sequential loop's:")
    if stages:
        lines += stage_report(stages["stage_ms_per_image"], stages["ceiling"], stages["speed"])
    (out / "benchmark.md").write_text("\n".join(lines))
    figure, ax = plt.subplots(figsize=(8, 4.5))
    wide.T.plot(ax=ax, marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("images")
    ax.set_ylabel("images per second")
    ax.set_title(f"Throughput per approach ({machine['cpu_count']} CPUs, GPU: {machine['gpu']})")
    figure.tight_layout()
    figure.savefig(out / "benchmark.png", dpi=120)
    plt.close(figure)


def relative_to_the_loop(frame: pd.DataFrame, heading: str) -> list[str]:
    """Markdown lines: `heading`, then `frame` divided by its sequential row (none without it)."""
    if "sequential" not in frame.index:
        return []
    return [heading, "", markdown_table(frame / frame.loc["sequential"], ".2f"), ""]


def stage_report(
    profile: dict[str, float], ceiling: dict[str, float], speed: dict[str, float]
) -> list[str]:
    """Markdown lines: the stage profile, predict vs the forward pass, the hardware ceiling."""
    return [
        "## Where one batch's time goes (ms per image)",
        "",
        markdown_table(pd.Series(profile, name="ms per image").to_frame(), ".1f"),
        "",
        "## predict vs the forward pass alone",
        "",
        f"- forward alone: {speed['forward_images_per_s']:.2f} images/s",
        f"- utils.predict end to end: {speed['predict_images_per_s']:.2f} images/s "
        f"= **{speed['predict_vs_forward']:.2f}x** the forward pass",
        f"- transformers' post-processing end to end: "
        f"{speed['plain_predict_images_per_s']:.2f} images/s = "
        f"{speed['plain_vs_forward']:.2f}x",
        "",
        "## Hardware ceiling",
        "",
        f"- SegFormer-b0 forward: {ceiling['gflop_per_image']:.1f} GFLOP per 512x512 image",
        f"- fp32 matrix multiply measured here: {ceiling['matmul_gflop_per_s']:.0f} GFLOP/s",
        f"- ceiling: {ceiling['ceiling_images_per_s']:.1f} images/s; "
        "the forward pass reaches "
        f"{speed['forward_images_per_s'] / ceiling['ceiling_images_per_s']:.0%} of it",
        "",
    ]


def job_memory_run(n: int, out: Path) -> dict[str, Any]:
    """Segment `n` images with the production job (`python -m utils.segment`) and measure the
    peak resident memory of the whole run: the job's driver and every process it started.

    The images are the bundled photographs and their deterministic variants, written as
    JPEG files one at a time (this process never holds them all). Also states what
    collecting every map in the driver as int64, as the 2022 course did, would take.
    """
    import subprocess
    import sys

    from utils.data import bundled_image_paths, make_variant
    from utils.tools.segment.files import OK

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="job-memory-") as folder:
        source, pixels = Path(folder) / "images", 0
        source.mkdir()
        paths = bundled_image_paths()
        for index in range(n):
            path = paths[index % len(paths)]
            if index < len(paths):
                with Image.open(path) as original:
                    original.load()
                    image = convert_image_to_rgb(original)
            else:
                image = make_variant(path, index // len(paths), seed=index)[0].convert("RGB")
            image.save(source / f"{index:06d}.jpg", quality=90)
            pixels += image.width * image.height
        command = [
            sys.executable,
            "-m",
            "utils.segment",
            str(source),
            "--out",
            str(Path(folder) / "masks"),
            "--preview",
            "0",
        ]
        with Stopwatch() as watch:
            job = subprocess.Popen(command)
            with PeakMemory(interval_s=0.5, root=job.pid, proportional=True) as memory:
                code = job.wait()
        seconds = watch.seconds
        # A job stopped early (SIGTERM, Ctrl-C) saves its index too: count what it recorded.
        index_file = Path(folder) / "masks" / "index.parquet"
        index = pd.read_parquet(index_file) if index_file.exists() else None
        done = len(index) if index is not None else 0
        written = int((index["status"] == OK).sum()) if index is not None else 0
    result = {
        "images": n,
        "exit_code": code,
        "images_done": done,
        "masks_written": written,
        "seconds": round(seconds, 1),
        "images_per_s": round(done / seconds, 3),
        "peak_pss_gib": round(memory.peak_pss_bytes / 2**30, 2),
        "peak_rss_gib": round(memory.peak_bytes / 2**30, 2),
        "rss_samples": memory.samples,
        "pss_samples": memory.pss_samples,
        "sampler_cpu_s": round(memory.cpu_seconds, 1),
        "int64_maps_in_driver_gib": round(pixels * 8 / 2**30, 2),
        "uint8_maps_gib": round(pixels / 2**30, 2),
    }
    (out / "job_memory.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nThe job: {done} of {n} images in {seconds:.0f} s, {written} masks written, "
        f"exit code {code}; "
        f"peak memory of the whole run {result['peak_pss_gib']:.2f} GiB (summed PSS; "
        f"summed RSS, counting shared pages once per process: {result['peak_rss_gib']:.2f} GiB)."
    )
    print(
        f"Memory read {memory.samples} times (RSS) and {memory.pss_samples} times (PSS); the "
        f"sampling took {memory.cpu_seconds:.1f} s of CPU "
        f"({memory.cpu_seconds / max(seconds, 1e-9):.1%} of one CPU over the run)."
    )
    print(
        f"Collecting all {n} maps in the driver as int64 would need "
        f"{result['int64_maps_in_driver_gib']:.2f} GiB for the maps alone "
        f"(as uint8: {result['uint8_maps_gib']:.2f} GiB)."
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.tools.benchmark", description=__doc__)
    parser.add_argument("--images", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--approaches", nargs="+", choices=APPROACHES, default=list(APPROACHES))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument(
        "--job-memory",
        type=int,
        metavar="N",
        help="instead: run the production job on N images, measure its peak "
        "memory (results/job_memory.json)",
    )
    args = parser.parse_args(argv)
    if args.job_memory:
        result = job_memory_run(args.job_memory, args.out)
        return 0 if result["exit_code"] == 0 and result["masks_written"] == args.job_memory else 1
    table = run(sorted(args.images), args.approaches, args.batch_size, args.out)
    print(table.to_string(index=False))
    print(f"Results in {args.out}/benchmark.csv, benchmark.md, benchmark.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
