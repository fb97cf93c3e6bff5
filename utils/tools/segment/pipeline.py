"""The job's Ray Data pipeline: every stage runs on the workers, only index rows come back.

    files (paths) -> prepare_batch (CPU tasks: check, decode; preprocess for GPU actors)
                  -> Segmenter (model actors: forward pass, masks written into --out)
                  -> index rows -> this driver (the index, the progress, the summary)

The model reaches the actors as a checkpoint directory in the output folder, which on a
cluster every node must see (`check_shared_storage` proves it before the run starts).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from utils.cluster import gpu_share
from utils.config import get_config
from utils.images import Inspection, inspect_image, printable_id
from utils.tools.segment import files as sio
from utils.tools.segment.files import ResultWriter, UsageError, say

LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # ample for a few batches in flight; see local_object_store
PREPARE_CPUS = 0.5  # CPUs each prepare task reserves (decoding is light next to the model)
MODEL_DIR = ".model"  # the checkpoint the model actors load, inside the output folder
INDEX_COLUMNS = (
    "image_id",
    "path",
    "status",
    "reason",
    "note",
    "height",
    "width",
    "source_bytes",
    "source_mtime_ns",
)

# --- the stages -------------------------------------------------------------------------------


def prepare_batch(
    batch: Mapping[str, np.ndarray], image_processor: Any | None
) -> dict[str, np.ndarray]:
    """CPU stage: check and decode each file (bad ones become rejections), maybe preprocess.

    Runs as stateless Ray tasks, as many at once as there are CPUs to spare, on any node.
    Paths arrive as bytes (a file name need not be valid UTF-8; Arrow strings must be).
    With an `image_processor`, accepted images leave as the model's input (`pixels`, float32
    bytes of `input_shape`), so GPU actors only run the model; without one, as RGB bytes
    (uint8, `input_shape` = height, width, 3), a quarter of the size, which the actors
    preprocess themselves.
    """
    columns: dict[str, list] = {name: [] for name in INDEX_COLUMNS}
    images = []
    for image_id, path in zip(batch["image_id"], batch["path"]):
        path = os.fsdecode(bytes(path))  # bytes: any file name survives the trip through Arrow
        try:
            found = inspect_image(path)
        except Exception as error:  # noqa: BLE001 - belt and braces: never fail a batch
            found = Inspection(None, f"unreadable ({type(error).__name__}: {error})")
        columns["image_id"].append(str(image_id))
        columns["path"].append(printable_id(path))
        columns["status"].append(sio.OK if found.ok else sio.REJECTED)
        columns["reason"].append(found.reason)
        columns["note"].append(found.note)
        columns["height"].append(found.height or 0)
        columns["width"].append(found.width or 0)
        columns["source_bytes"].append(_or_minus_one(found.source_bytes))
        columns["source_mtime_ns"].append(_or_minus_one(found.source_mtime_ns))
        images.append(found.image if found.ok else None)
    accepted = [i for i, image in enumerate(images) if image is not None]
    if image_processor is not None:
        from utils.inference import preprocess  # imports torch: only where it is needed

        pixel_values, _ = preprocess(image_processor, [images[i] for i in accepted])
        arrays = list(pixel_values.numpy())
    else:
        arrays = [np.asarray(images[i]) for i in accepted]
    pixels, shapes = [b""] * len(images), ["[]"] * len(images)
    for row, values in zip(accepted, arrays):
        pixels[row], shapes[row] = values.tobytes(), json.dumps(values.shape)
    return {
        **{name: _column(values) for name, values in columns.items()},
        "pixels": _column(pixels),
        "input_shape": _column(shapes),
    }


def _or_minus_one(value: int | None) -> int:
    return -1 if value is None else value


def _column(values: list) -> np.ndarray:
    if values and isinstance(values[0], (int, np.integer)):
        return np.asarray(values, dtype=np.int64)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


class Segmenter:
    """Model stage, one per actor: run the model, write each mask, return the index rows.

    The actor loads the model from the checkpoint directory itself (nothing large travels in
    its constructor arguments, so Ray can restart it anywhere), and writes masks atomically
    where the index says they are: a batch retried after a failure rewrites the same files.
    """

    def __init__(self, checkpoint_dir: str, out: str, use_gpu: bool, preprocess: bool) -> None:
        import ray
        import torch
        from ray.train import Checkpoint

        from utils.labels import get_labels
        from utils.predictor import load_checkpoint

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, round(cpus)))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        model, self.image_processor = load_checkpoint(Checkpoint.from_directory(checkpoint_dir))
        self.model = model.to(self.device)
        self.preprocess = preprocess  # False: the prepare tasks did it
        self.id2label = dict(self.model.config.id2label or get_labels()[0])
        self.out = Path(out)
        self.delay = get_config().segment_delay_s

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from utils.masks import class_shares, encode_mask

        status, reason = list(batch["status"]), list(batch["reason"])
        accepted = [i for i, s in enumerate(status) if s == sio.OK]
        if self.delay and accepted:  # a batch of rejected files only runs no model
            time.sleep(self.delay)
        maps = self._predict(batch, accepted)
        tops: list[str] = ["[[], []]"] * len(status)
        for i, result in zip(accepted, maps):
            if isinstance(result, str):
                status[i], reason[i] = sio.REJECTED, result
                continue
            mask_path = self.out / sio.mask_relpath(str(batch["image_id"][i]))
            sio.write_atomic(mask_path, encode_mask(result))
            top = class_shares(result)[: sio.TOP_K]
            names = [str(self.id2label.get(k, f"class {k}")).strip() for k, _ in top]
            tops[i] = json.dumps([names, [round(share, 4) for _, share in top]])
        return {
            **{name: batch[name] for name in INDEX_COLUMNS},
            "status": _column(status),
            "reason": _column(reason),
            "top": _column(tops),
        }

    def _predict(self, batch: Mapping[str, np.ndarray], rows: list[int]) -> list:
        """One map per row; when the batch fails, each image alone (a failure: its reason).

        An image gets the same mask whatever batch it falls in (after a rejection, or on
        resume), so retrying image by image changes no result.
        """
        import torch
        from PIL import Image

        from utils.inference import predict_preprocessed, preprocess

        def inputs(chosen: list[int]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
            dtype = np.uint8 if self.preprocess else np.float32
            arrays = [
                np.frombuffer(batch["pixels"][i], dtype).reshape(
                    json.loads(batch["input_shape"][i])
                )
                for i in chosen
            ]
            sizes = [(int(batch["height"][i]), int(batch["width"][i])) for i in chosen]
            if self.preprocess:
                images = [Image.fromarray(array, "RGB") for array in arrays]
                return preprocess(self.image_processor, images)[0], sizes
            return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0), sizes

        try:
            return predict_preprocessed(self.model, *inputs(rows), device=self.device)
        except Exception:  # noqa: BLE001 - find the culprit image by image
            results: list = []
            for row in rows:
                try:
                    results += predict_preprocessed(self.model, *inputs([row]), self.device)
                except Exception as error:  # noqa: BLE001
                    results.append(f"the model failed on it ({type(error).__name__}: {error})")
            return results


def run_pipeline(
    todo: list[tuple[str, Path]],
    model,
    processor,
    args: argparse.Namespace,
    writer: ResultWriter,
    results: dict[str, dict[str, Any]],
) -> None:
    """Segment `todo` on Ray Data; write each index row through `writer` as it arrives."""
    start_ray(args)  # first: Ray reads its settings (RAY_AUTH_MODE) when first imported
    import ray
    from transformers.utils import logging as transformers_logging

    from utils.predictor import save_checkpoint

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    nodes = [node for node in ray.nodes() if node["Alive"]]
    say(
        f"Ray {ray.__version__} on {get_config().ray_address or 'a local instance'}: "
        f"{len(nodes)} node(s), {cpus:g} CPU(s), {gpus:g} GPU(s)"
    )
    node_cpus = [float(node["Resources"].get("CPU", 0)) for node in nodes]
    plan = plan_actors(node_cpus, gpus, args.device, args.actors)
    # Default: 2 images per call on a CPU actor (several actors share the RAM, and a CPU
    # gains nothing from larger batches), 4 on a GPU.
    batch_size = min(args.batch_size or (4 if plan.gpus else 2), len(todo))

    # With GPUs, CPU tasks preprocess so the GPUs only run the model. On CPUs alone the same
    # CPUs would do that work either way, and sending the model's float input (4 times the
    # RGB pixels) through the object store costs more than it gains: 2.03 against 2.12
    # images/s on 500 images on 2 cores, 4 images per prepare task.
    in_tasks = args.preprocess == "tasks" or (args.preprocess == "auto" and plan.gpus > 0)
    checkpoint_dir = writer.out / MODEL_DIR
    transformers_logging.disable_progress_bar()  # a bar for saving one file is noise here
    save_checkpoint(model, processor, checkpoint_dir)
    if len(nodes) > 1:
        check_shared_storage(checkpoint_dir, todo[0][1])
    say(
        f"{len(todo)} files to do; {plan.actors} model actor(s) on "
        f"{f'{plan.gpus:g} GPU' if plan.gpus else f'{plan.cpus:g} CPU(s)'} each, "
        f"batches of {batch_size}, preprocessing in the {'tasks' if in_tasks else 'actors'}"
    )

    items = [{"image_id": image_id, "path": os.fsencode(path)} for image_id, path in todo]
    # One block, one prepare task and one model call per batch: Ray Data passes a task's output
    # on when the task ends, so small blocks bring index rows here sooner, and an interrupted
    # run has recorded more of what its actors finished. (Prepare tasks of 16 images ran 11%
    # faster on 2 cores, but then rows came 16 at a time.) Rows still arrive after their masks
    # are on disk; a rerun redoes an image whose row was not recorded.
    dataset = (
        ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / batch_size))
        .map_batches(
            prepare_batch,
            batch_size=batch_size,
            num_cpus=PREPARE_CPUS,
            fn_kwargs={"image_processor": processor if in_tasks else None},
        )
        .map_batches(
            Segmenter,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            fn_constructor_kwargs={
                "checkpoint_dir": str(checkpoint_dir),
                "out": str(writer.out),
                "use_gpu": plan.gpus > 0,
                "preprocess": not in_tasks,
            },
        )
    )
    progress = Progress(len(todo))
    rejected = 0
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["image_id"])):
                image_id = str(batch["image_id"][i])
                if image_id in results:
                    continue  # a retried batch: its first row stands (its mask is the same)
                row = result_row(batch, i)
                writer.add(row)
                results[image_id] = row
                rejected += row["status"] == sio.REJECTED
                progress.update(len(results), rejected)
    finally:
        progress.close()


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as after Ctrl-C (written files stand, the index is saved)."""


def _stop(signum: int, frame: Any) -> None:
    """Raise `Terminated` for SIGTERM (a second one is ignored: it must not cut the index
    short), `KeyboardInterrupt` for Ctrl-C; in a quiet run, first hush Ray (see `quiet_ray`)."""
    if _hush_on_stop:
        import ray._private.worker

        ray._private.worker._worker_logs_enabled = False  # private; Ray's debugger uses it too
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Turn SIGTERM (kill, timeout, Kubernetes, Slurm, systemd) into `Terminated`.

    Call it again after `ray.init`: Ray's core worker installs its own fatal-signal handler
    in the driver, which would print a stack dump and abort instead of stopping cleanly.
    """
    signal.signal(signal.SIGTERM, _stop)


def start_ray(args: argparse.Namespace) -> None:
    """Join RAY_ADDRESS's cluster or start a local instance, quietly unless `--verbose`.

    Worker output stays in Ray's log files (`log_to_driver`); the driver shows only errors
    that stop the job. A local start is tried twice: a raylet on a busy host can miss Ray's
    fixed 30-second start deadline.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] != "token":
        print(
            f"segment: warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']} turns Ray's token "
            "authentication off",
            file=sys.stderr,
        )
    import ray

    # torch's own switch (since 2.2): its CPU buffers of 2 MB and more ask the kernel for
    # transparent huge pages. The model's activations are freed and allocated again for every
    # batch: in 4 KB pages a model actor took about 71,000 page faults a second, with them
    # about 3,500 (500 images on 2 cores, off then on: 251 against 199 s). Read once, when a
    # process starts: set here, it reaches the workers of a local instance and, through the
    # runtime environment, a cluster's.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    # Workers of a local instance share this environment; a cluster's need utils shipped.
    cluster = get_config().ray_address
    if not cluster:
        # Ray keeps an idle worker process only while CPUs are free (ray-project/ray#36766):
        # with the model actors holding all but half a CPU, every prepare task would start a
        # fresh process and import its libraries again (measured here: 1.25 images/s instead
        # of 2.5 on 120 images). Keep up to one idle worker per CPU, as Ray did before that.
        os.environ.setdefault("RAY_num_workers_soft_limit", str(os.cpu_count() or 1))
    for attempt in (1, 2):
        try:
            ray.init(
                runtime_env=job_runtime_env() if cluster else None,
                logging_level=logging.INFO if args.verbose else logging.ERROR,
                log_to_driver=args.verbose,
                include_dashboard=args.dashboard,
                dashboard_host="127.0.0.1",
                **local_object_store(),
            )
            break
        except Exception as error:  # e.g. a raylet slow to start on a busy host
            ray.shutdown()
            if attempt == 2 or cluster:
                raise
            print(f"segment: starting Ray failed ({error}); trying once more", file=sys.stderr)
    stop_on_sigterm()
    if not args.verbose:
        quiet_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours instead (Progress)
    context.print_on_execution_start = args.verbose


def job_runtime_env() -> dict[str, Any]:
    """The course's runtime environment for a cluster, plus the job's torch allocation switch."""
    from utils.cluster import course_runtime_env

    runtime_env = course_runtime_env()
    runtime_env["env_vars"] = {
        **runtime_env["env_vars"],
        "THP_MEM_ALLOC_ENABLE": os.environ["THP_MEM_ALLOC_ENABLE"],
    }
    return runtime_env


_saved_stderr: tuple[int, TextIO] | None = None
_hush_on_stop = False  # set by `quiet_ray`


def quiet_ray() -> None:
    """Keep Ray's own log lines out of the terminal; they all stay in Ray's log files.

    Ray Data's console handler shows errors only (its file handler keeps everything). Lines
    Ray's C++ core prints on this process's stderr (it writes each of them to its own log
    file too) go to `segment-driver.err` in Ray's log folder: every run printed one such
    ERROR, about the constructor arguments Ray Data itself passes its actors through the
    object store (ray-project/ray#53727), which the job's user can do nothing about. Python's
    own `sys.stderr` (the progress, the job's errors, tracebacks) stays on the terminal.
    `undo_quiet_ray` undoes all of it.

    Ctrl-C and SIGTERM also hush the lines Ray's driver prints from a thread of its own,
    whatever `log_to_driver` says: stopping shuts Ray Data's actors down with `ray.kill`, and
    a batch on its way to one was echoed as "(raylet) Task ... submit failed ... killed by
    `ray.kill`" after the job's summary.
    """
    global _saved_stderr, _hush_on_stop
    import ray
    import ray.data  # configures Ray Data's loggers when first imported

    _hush_on_stop = True
    signal.signal(signal.SIGINT, _stop)

    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)
    try:
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # private, stable
        target = open(logs / "segment-driver.err", "ab")  # noqa: SIM115 - kept open for the run
    except (AttributeError, OSError):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    _saved_stderr = (saved, sys.stderr)
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(target.fileno(), 2)
    target.close()


def undo_quiet_ray() -> None:
    """Undo `quiet_ray`: Ctrl-C and Ray's driver echo, file descriptor 2 and `sys.stderr` back
    as they were."""
    global _saved_stderr, _hush_on_stop
    if _hush_on_stop:
        _hush_on_stop = False
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import ray._private.worker

        ray._private.worker._worker_logs_enabled = True
    if _saved_stderr is None:
        return
    saved, stream = _saved_stderr
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    sys.stderr.close()
    sys.stderr, _saved_stderr = stream, None


def storage_problem(checkpoint_dir: str, source_file: str) -> str | None:
    """Why this node cannot run the job's workers on these paths, or None."""
    for path, what in ((source_file, "a source file"), (checkpoint_dir, "the model checkpoint")):
        if not os.path.exists(path):
            return f"{what} {path} does not exist here"
    try:
        probe = Path(checkpoint_dir, f".write-test-{os.getpid()}")
        sio.write_atomic(probe, b"")
        probe.unlink()
    except OSError as error:
        return f"cannot write in {checkpoint_dir} ({error.strerror or type(error).__name__})"
    return None


def check_shared_storage(checkpoint_dir: Path, source_file: Path) -> None:
    """`UsageError` unless every node of the cluster sees the source and output folders.

    On a cluster the workers read the images and write the masks where they run, so both
    folders must be storage every node mounts at the same path (NFS, a cloud file system).
    One tiny task per alive node checks, before any work starts.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0)(storage_problem)
    nodes = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    answers = [
        check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote(str(checkpoint_dir), str(source_file))
        for node_id in nodes
    ]
    problems = [
        f"node {address}: {problem}"
        for address, problem in zip(nodes.values(), ray.get(answers, timeout=300))
        if problem
    ]
    if problems:
        raise UsageError(
            "on a cluster the source and --out folders must be on storage every node sees, "
            "at the same path; " + "; ".join(problems)
        )


@dataclass(frozen=True)
class ActorPlan:
    """How many model actors to start, and what each one reserves."""

    actors: int
    cpus: float
    gpus: float


def plan_actors(node_cpus: list[float], gpus: float, device: str, actors: int | None) -> ActorPlan:
    """Model actors for a cluster whose nodes have `node_cpus` and `gpus` in all.

    `actors` is the user's count (None: the default). With GPUs (unless `device` is cpu), one
    actor per GPU by default, each with a share that packs onto whole GPUs
    (`cluster.gpu_share`: 3 actors on 2 GPUs get 0.5 each, so all three start). On CPUs,
    every node keeps `PREPARE_CPUS` for the prepare tasks, or that stage could never run
    beside the actors; by default each node gets one single-threaded actor per CPU left,
    counting a part CPU as one (on 2 CPUs: two actors with 0.75 CPUs and one torch thread
    each), and the actors share the CPUs left in all, never more than one node has to give.
    Single-threaded replicas beat one replica with two threads on a CPU: the serial parts
    (preprocessing, post-processing, PNG encoding) of one overlap the forward pass of the
    other (500 images on 2 cores: 2.88 against 2.46 images/s after the first result).
    """
    if device == "cuda" and gpus < 1:
        raise UsageError("--device cuda, but the Ray cluster has no GPU")
    if device != "cpu" and gpus >= 1:
        count = actors or int(gpus)
        return ActorPlan(count, 1.0, gpu_share(gpus, count))
    spare = [cpus - PREPARE_CPUS for cpus in node_cpus if cpus > PREPARE_CPUS] or [0.0]
    count = actors or max(1, sum(math.ceil(cpus) for cpus in spare))
    share = min(max(spare), sum(spare) / count)
    return ActorPlan(count, max(0.1, share), 0.0)


def result_row(batch: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
    """The index row for item `i` of a model-stage output batch."""
    image_id = str(batch["image_id"][i])
    ok = batch["status"][i] == sio.OK
    names, shares = json.loads(batch["top"][i]) if ok else (None, None)
    height, width = int(batch["height"][i]), int(batch["width"][i])
    size, mtime = int(batch["source_bytes"][i]), int(batch["source_mtime_ns"][i])
    return {
        "image_id": image_id,
        "source_path": str(batch["path"][i]),
        "status": str(batch["status"][i]),
        "reason": str(batch["reason"][i]),
        "note": str(batch["note"][i]),
        "height": height or None,
        "width": width or None,
        "top_classes": names,
        "top_shares": shares,
        "mask_path": sio.mask_relpath(image_id) if ok else None,
        "source_bytes": None if size < 0 else size,
        "source_mtime_ns": None if mtime < 0 else mtime,
    }


def local_object_store() -> dict[str, int]:
    """`ray.init` arguments that size the object store of a Ray instance started here.

    Ray's default is 30% of the RAM. Every page of it that a long run has used once stays
    resident, so memory creeps up towards that size although the pipeline holds only a few
    batches at a time: give it `LOCAL_OBJECT_STORE_BYTES` instead. A cluster (RAY_ADDRESS)
    keeps its own setting.
    """
    if get_config().ray_address:
        return {}
    return {"object_store_memory": LOCAL_OBJECT_STORE_BYTES}


def shutdown_ray() -> None:
    """Stop this run's Ray (its workers stop with it); undo `quiet_ray`."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    undo_quiet_ray()


class Progress:
    """Done/total, images/s and the time left, on stderr: a tqdm bar in a terminal, and a
    plain line every few seconds elsewhere (a log file, a notebook), where a redrawn bar
    would pile up as noise. The rate counts from the first result, not from Ray's start-up.
    """

    def __init__(self, total: int, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.total, self.stream, self.every_s = total, stream or sys.stderr, every_s
        self.tty = self.stream.isatty()
        self.bar = tqdm(total=total, unit="image", file=self.stream, disable=not self.tty)
        self.first: tuple[float, int] | None = None
        self.last_line = 0.0

    def update(self, done: int, rejected: int = 0) -> None:
        now = time.monotonic()
        self.first = self.first or (now, done)
        self.bar.set_postfix(rejected=rejected, refresh=False)
        self.bar.update(done - self.bar.n)
        if self.tty or (done < self.total and now - self.last_line < self.every_s):
            return
        self.last_line = now
        since, at = self.first
        rate = (done - at) / (now - since) if now > since and done > at else None
        line = tqdm.format_meter(
            done,
            self.total,
            now - since,
            unit="image",
            rate=rate,
            ascii=True,
            postfix=f"rejected={rejected}",
        )
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
