"""Segment every image under a folder with Ray Data: the course's pipeline as a production job.

    python -m utils.segment SOURCE --out DIR [--model M] [--batch-size N] [--actors N]
                            [--device auto|cpu|cuda] [--preview N] [--dashboard]

For each file under SOURCE (searched recursively) the job writes exactly one of:

- a mask, `DIR/masks/<image id>.png`: the class id of every pixel, 8-bit grayscale PNG
  (lossless), the size of the image as displayed;
- a rejection: the file is not a usable image, and the index says why.

`DIR/index.parquet` has one row per input file (see `utils.segment_io.INDEX_SCHEMA`), and
`DIR/previews/` overlays for the first few images. The summary reconciles
`inputs = written + rejected`; the exit code is 0 when it holds, 1 when it does not (or the
pipeline failed), 2 for a usage error found before any work starts (missing or empty
SOURCE, unknown model, DIR not writable), and 130 after Ctrl-C.

How it survives failures:

- Bad input: each file is checked in the read stage (`utils.segment_io.inspect_image`);
  a bad file becomes a rejection row, never an exception in a batch. A batch the model
  cannot process is retried image by image, so one bad image cannot take others with it.
- Killed workers: Ray Data restarts dead actors and retries their batches. Masks and
  index rows are written by this driver process only, once per image id, so a retried
  batch cannot produce a duplicate.
- Interruption: every file is written atomically (temporary name, then `os.replace`) and
  the index is saved in small shards as results arrive. Run the same command again and it
  skips every image whose mask exists and whose index row says ok, and does the rest.

Secure defaults: Ray's token authentication stays on (`RAY_AUTH_MODE=token` unless you
set it otherwise); the dashboard is off unless `--dashboard`, and then listens on
127.0.0.1 only; models load from safetensors without remote code; no environment
variable or token is printed or written.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import segment_io as sio
from .config import DEFAULT_MODEL, get_config

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
INDEX_FILE = "index.parquet"
PARTS_DIR = ".index-parts"  # index shards of runs not yet consolidated
MANIFEST_FILE = "run.json"
PREVIEWS_DIR = "previews"
FLUSH_ROWS, FLUSH_SECONDS = 64, 5.0  # save an index shard this often
SUMMARY_LINES = 25  # rejections and notes listed in the summary (all are in the index)
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # ample for a few batches in flight; see local_object_store
READ_CPUS = 0.5  # CPUs reserved by the reader actor (decoding is light next to the model)
# For tests and demonstrations only: seconds each model batch sleeps, to make a run long
# enough to interrupt or to kill a worker in.
DELAY_VARIABLE = "COURSE_SEGMENT_DELAY_S"

log = print  # the job's own messages go to stdout; progress and errors to stderr


class UsageError(Exception):
    """A problem with the command line or its folders, found before any work starts."""


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    config = get_config()
    parser = argparse.ArgumentParser(
        prog="python -m utils.segment",
        description="Segment every image under SOURCE (recursively) with SegFormer on Ray Data; "
                    "write one PNG mask per image and a Parquet index to --out.")
    parser.add_argument("source", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (created); run again with the same arguments "
                             "to resume")
    parser.add_argument("--model", default=config.model,
                        help=f"hub model id or local folder (default: COURSE_MODEL or "
                             f"{DEFAULT_MODEL})")
    # On a CPU, throughput hardly changes with the batch size (notebook 08), but the model
    # actor's working memory grows with it (about 140 MB per image, measured on the course's
    # photos).
    parser.add_argument("--batch-size", type=_positive, default=4,
                        help="images per model call (default 4; larger batches use more "
                             "memory, and help mostly on a GPU)")
    parser.add_argument("--actors", type=_positive, default=None,
                        help="model replicas (default: one per GPU, else CPUs - 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=config.device,
                        help="auto uses GPUs when the Ray cluster has them (default: "
                             "COURSE_DEVICE or auto)")
    parser.add_argument("--preview", type=_non_negative, default=4, metavar="N",
                        help="write overlay previews of the first N images (default 4)")
    parser.add_argument("--dashboard", action="store_true",
                        help="start Ray's dashboard (on 127.0.0.1 only)")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the job; return the exit code (see the module docstring)."""
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as error:
        print(f"segment: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the pipeline started: nothing was written yet
        print("\nsegment: interrupted before any image was processed", file=sys.stderr)
        return EXIT_INTERRUPTED


# --- checks before any work -------------------------------------------------------------------


def check_source(source: Path) -> Path:
    """SOURCE, resolved; `UsageError` unless it is a readable folder."""
    source = source.expanduser()
    if not source.exists():
        raise UsageError(f"source folder {source} does not exist")
    if not source.is_dir():
        raise UsageError(f"source {source} is not a folder")
    if not os.access(source, os.R_OK | os.X_OK):
        raise UsageError(f"source folder {source} cannot be read (permission denied)")
    return source.resolve()


def check_out(out: Path) -> Path:
    """DIR, created and resolved; `UsageError` unless a file can be written in it."""
    out = out.expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = sio.write_atomic(out / f".write-test-{os.getpid()}", b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"output folder {out} cannot be written "
                         f"({error.strerror or type(error).__name__})") from None
    return out.resolve()


def load_job_model(name: str) -> tuple[Any, Any, str]:
    """`(model, image_processor, description)` on the CPU, or `UsageError` for an unknown model.

    Same rules as `utils.load_model` (safetensors only, no remote code, a local folder or a
    hub id), with one difference: offline, only the DEFAULT model falls back to the random-
    weight stand-in (with its banner). A model you name explicitly that is neither a folder
    nor in the local cache is an error, not a silent stand-in producing meaningless masks.
    """
    from .hub import hub_unavailable_reason
    from .model import _from_pretrained, is_offline_model, load_model

    config = dataclasses.replace(get_config(), model=name)
    folder = Path(name).expanduser()
    if folder.is_file():
        raise UsageError(f"--model {name} is a file; give a hub id or a model folder")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    if not folder.is_dir() and looks_like_path:
        raise UsageError(f"model folder {name} does not exist")
    try:
        if folder.is_dir() or name == DEFAULT_MODEL:
            model, processor = load_model(config, device="cpu")
        else:
            reason = hub_unavailable_reason(config)
            if reason is None:
                model, processor = load_model(config, device="cpu")
            else:
                try:
                    model, processor = _from_pretrained(name, local_only=True)
                except OSError:
                    raise UsageError(
                        f"unknown model {name!r}: {reason} and it is not in the local cache "
                        f"(only the default model {DEFAULT_MODEL} has an offline stand-in)"
                    ) from None
                model = model.eval()
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - repository not found, not a SegFormer, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"unknown model {name!r} ({type(error).__name__}: {first_line})") \
            from None
    description = ("offline stand-in (random weights)" if is_offline_model(model)
                   else str(model.config.name_or_path or name))
    return model, processor, description


def check_manifest(out: Path, manifest: dict[str, str]) -> None:
    """Refuse to mix results: DIR may only be resumed with the same source and model."""
    path = out / MANIFEST_FILE
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable: it is rewritten below
    for key in ("source", "model"):
        if previous.get(key) != manifest[key]:
            raise UsageError(f"{out} holds results for {key} {previous.get(key)!r}, not "
                             f"{manifest[key]!r}; use another --out folder")


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    source = check_source(args.source)
    inputs, hidden = sio.find_inputs(source, exclude=[args.out.expanduser()])
    if not inputs:
        raise UsageError(f"source folder {source} has no files"
                         + (f" ({hidden} hidden entries skipped)" if hidden else ""))
    out = check_out(args.out)
    if args.device == "cuda" and not os.environ.get("RAY_ADDRESS"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda, but torch sees no CUDA device here")
    manifest = {"source": str(source), "model": args.model}
    check_manifest(out, manifest)
    model, processor, model_description = load_job_model(args.model)

    sio.remove_temporary_files(out)
    previous = load_previous_rows(out)
    by_id = dict(inputs)
    done: dict[str, dict[str, Any]] = {}
    for image_id, row in previous.items():
        if image_id in by_id and is_done(row, by_id[image_id], out):
            done[image_id] = row
    todo = [(image_id, path) for image_id, path in inputs if image_id not in done]
    sio.write_atomic(out / MANIFEST_FILE, json.dumps(
        {**manifest, "model_loaded": model_description}, indent=2).encode())
    log(f"segment: {len(inputs)} input files under {source}"
        + (f" ({hidden} hidden entries skipped)" if hidden else ""))
    log(f"segment: model {args.model} ({model_description})")
    if done:
        log(f"segment: resuming: {len(done)} files already done, {len(todo)} to go")

    results: dict[str, dict[str, Any]] = {}
    interrupted = False
    if todo:
        writer = ResultWriter(out)
        try:
            run_pipeline(todo, model, processor, args, writer, results)
        except KeyboardInterrupt:
            interrupted = True
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001 - report it; what was written stays valid
            print(f"segment: the pipeline failed ({type(error).__name__}: {error}); "
                  f"{len(results)} results were saved, run again to resume", file=sys.stderr)
            return EXIT_INCOMPLETE
        finally:
            writer.flush()
            _shutdown_ray()
    if interrupted:
        written = sum(1 for row in results.values() if row["status"] == sio.OK)
        print(f"\nsegment: interrupted after {len(results)} of {len(todo)} files this run "
              f"({written} masks written, all complete). Run the same command again to "
              "resume.", file=sys.stderr)
        return EXIT_INTERRUPTED

    final = {**done, **results}
    rows = [final[image_id] for image_id, _ in inputs if image_id in final]
    sio.write_atomic(out / INDEX_FILE, sio.table_bytes(sio.rows_to_table(rows)))
    for shard in (out / PARTS_DIR).glob("*.parquet"):
        shard.unlink(missing_ok=True)  # all of them are in the index now
    write_previews(rows, out, args.preview)
    return summarise(inputs, final, done, out, time.perf_counter() - started,
                     ran=len(results))


def is_done(row: Mapping[str, Any], path: Path, out: Path) -> bool:
    """Whether an earlier run's `row` still stands for the file at `path`, unchanged since
    (same size and modification time): ok with its mask on disk, or rejected for its content.
    A rejection for access (permission, a vanished file) is tried again."""
    size, mtime = sio.file_signature(path)
    if size is None or size != row.get("source_bytes") or mtime != row.get("source_mtime_ns"):
        return False
    if row.get("status") == sio.REJECTED:
        return not str(row.get("reason", "")).startswith(sio.RETRIED_REJECTIONS)
    return row.get("status") == sio.OK and bool(row.get("mask_path")) \
        and (out / row["mask_path"]).is_file()


def load_previous_rows(out: Path) -> dict[str, dict[str, Any]]:
    """Index rows of earlier runs: the final index, then the shards of unfinished runs."""
    rows: dict[str, dict[str, Any]] = {}
    files = [out / INDEX_FILE] if (out / INDEX_FILE).is_file() else []
    files += sorted((out / PARTS_DIR).glob("*.parquet"))
    for file in files:
        try:
            for row in sio.read_rows(file):
                rows[row["image_id"]] = row
        except Exception as error:  # noqa: BLE001 - an unreadable file only costs redoing work
            print(f"segment: ignoring {file.name} ({type(error).__name__}); its images are "
                  "done again", file=sys.stderr)
    return rows


class ResultWriter:
    """Writes results as they arrive: the mask first, then its row into an index shard."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pending: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.run_tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.shards = 0

    def add(self, row: dict[str, Any], mask_png: bytes) -> None:
        if row["status"] == sio.OK:
            sio.write_atomic(self.out / row["mask_path"], mask_png)
        self.pending.append(row)  # only after its mask is complete on disk
        if (len(self.pending) >= FLUSH_ROWS
                or time.monotonic() - self.last_flush > FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        if self.pending:
            name = f"part-{self.run_tag}-{self.shards:05d}.parquet"
            table = sio.rows_to_table(self.pending)
            sio.write_atomic(self.out / PARTS_DIR / name, sio.table_bytes(table))
            self.shards += 1
            self.pending = []
        self.last_flush = time.monotonic()


# --- Ray Data ---------------------------------------------------------------------------------


def read_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read stage: check and decode each file; bad ones become rejections, never exceptions.

    Paths arrive as bytes (a file name need not be valid UTF-8; Arrow strings must be).
    Accepted images travel as raw RGB bytes plus their size (any size, no padding).
    """
    columns: dict[str, list] = {name: [] for name in
                                ("image_id", "path", "status", "reason", "note", "height",
                                 "width", "pixels", "source_bytes", "source_mtime_ns")}
    for image_id, path in zip(batch["image_id"], batch["path"]):
        path = os.fsdecode(bytes(path))  # bytes: any file name survives the trip through Arrow
        try:
            found = sio.inspect_image(path)
        except Exception as error:  # noqa: BLE001 - belt and braces: never fail a batch
            found = sio.Inspection(None, f"unreadable ({type(error).__name__}: {error})")
        columns["image_id"].append(str(image_id))
        columns["path"].append(sio.printable_id(path))
        columns["status"].append(sio.OK if found.ok else sio.REJECTED)
        columns["reason"].append(found.reason)
        columns["note"].append(found.note)
        columns["height"].append(found.height or 0)
        columns["width"].append(found.width or 0)
        columns["pixels"].append(found.image.tobytes() if found.ok else b"")
        columns["source_bytes"].append(-1 if found.source_bytes is None else found.source_bytes)
        columns["source_mtime_ns"].append(
            -1 if found.source_mtime_ns is None else found.source_mtime_ns)
    return {name: _column(values) for name, values in columns.items()}


class Reader:
    """Read stage on one long-lived actor. As tasks, each batch could land in a fresh worker
    process (Ray retires idle workers beyond one per CPU within a second or so), and every
    new worker pays for importing the course's libraries again."""

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return read_batch(batch)


def _column(values: list) -> np.ndarray:
    if values and isinstance(values[0], (int, np.integer)):
        return np.asarray(values, dtype=np.int64)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


class Segmenter:
    """Model stage, one per actor: predict the accepted images of a batch, encode PNG masks."""

    def __init__(self, model_ref, image_processor, use_gpu: bool) -> None:
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, round(cpus)))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        # An ObjectRef inside fn_constructor_kwargs is passed as is: fetch the model here.
        self.model = ray.get(model_ref).to(self.device).eval()
        self.image_processor = image_processor
        from .labels import get_labels

        self.id2label = dict(self.model.config.id2label or get_labels()[0])
        self.delay = float(os.environ.get(DELAY_VARIABLE, "0") or 0)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from PIL import Image

        if self.delay:
            time.sleep(self.delay)
        status = list(batch["status"])
        reason = list(batch["reason"])
        accepted = [i for i, s in enumerate(status) if s == sio.OK]
        images = [Image.frombytes("RGB", (int(batch["width"][i]), int(batch["height"][i])),
                                  batch["pixels"][i]) for i in accepted]
        maps = self._predict(images)
        masks: list[bytes] = [b""] * len(status)
        tops: list[str] = ["[[], []]"] * len(status)
        for i, result in zip(accepted, maps):
            if isinstance(result, str):
                status[i], reason[i] = sio.REJECTED, result
                continue
            masks[i] = sio.encode_mask(result)
            tops[i] = json.dumps(sio.top_classes(result, self.id2label))
        return {
            "image_id": batch["image_id"], "path": batch["path"],
            "status": _column(status), "reason": _column(reason), "note": batch["note"],
            "height": batch["height"], "width": batch["width"],
            "source_bytes": batch["source_bytes"], "source_mtime_ns": batch["source_mtime_ns"],
            "top": _column(tops), "mask_png": _column(masks),
        }

    def _predict(self, images: list) -> list:
        """One map per image; when the batch fails, each image alone (a failure: its reason).

        `predict` gives the same mask whatever batch an image falls in (after a rejection,
        or on resume), so retrying image by image changes no result.
        """
        from .predict import predict

        try:
            return predict(self.model, self.image_processor, images, device=self.device)
        except Exception:  # noqa: BLE001 - find the culprit image by image
            results: list = []
            for image in images:
                try:
                    results.extend(predict(self.model, self.image_processor, [image],
                                           device=self.device))
                except Exception as error:  # noqa: BLE001
                    results.append(f"the model failed on it ({type(error).__name__}: {error})")
            return results


def run_pipeline(todo: list[tuple[str, Path]], model, processor, args: argparse.Namespace,
                 writer: ResultWriter, results: dict[str, dict[str, Any]]) -> None:
    """Segment `todo` on Ray Data; write each result through `writer` as it arrives."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] != "token":
        print(f"segment: warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']} turns Ray's token "
              "authentication off", file=sys.stderr)
    import ray

    from .cluster import course_runtime_env

    # Workers of a local instance share this environment; a cluster's need utils shipped.
    runtime_env = course_runtime_env() if os.environ.get("RAY_ADDRESS") else None
    if runtime_env and os.environ.get(DELAY_VARIABLE):
        runtime_env.setdefault("env_vars", {})[DELAY_VARIABLE] = os.environ[DELAY_VARIABLE]
    for attempt in (1, 2):
        try:
            ray.init(runtime_env=runtime_env, logging_level=logging.WARNING,
                     include_dashboard=args.dashboard, dashboard_host="127.0.0.1",
                     **local_object_store())
            break
        except Exception as error:  # noqa: BLE001 - e.g. a raylet slow to start on a busy host
            ray.shutdown()
            if attempt == 2 or os.environ.get("RAY_ADDRESS"):
                raise
            print(f"segment: starting Ray failed ({error}); trying once more", file=sys.stderr)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # ours instead

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    where = os.environ.get("RAY_ADDRESS") or "a local instance"
    log(f"segment: Ray {ray.__version__} on {where}: {cpus:g} CPU(s), {gpus:g} GPU(s)")
    use_gpu = args.device != "cpu" and gpus > 0
    if args.device == "cuda" and not use_gpu:
        raise UsageError("--device cuda, but the Ray cluster has no GPU")
    if use_gpu:
        actors = args.actors or max(1, int(gpus))
        actor_cpus, actor_gpus = 1.0, min(1.0, gpus / actors)
    else:
        actors = args.actors or max(1, int(cpus) - 1)
        # Leave room for one read task, or the read stage could never be scheduled; give
        # the actors the rest (on 2 CPUs: one actor with 1.5 CPUs, so 2 torch threads).
        largest_node = max((node["Resources"].get("CPU", 0) for node in ray.nodes()
                            if node["Alive"]), default=cpus)
        actor_cpus = min(largest_node, max(0.1, (cpus - READ_CPUS) / actors))
        actor_gpus = 0
    batch_size = min(args.batch_size, len(todo))
    log(f"segment: {len(todo)} files to do; {actors} model actor(s) on "
        f"{'GPU' if use_gpu else f'{actor_cpus:g} CPU(s) each'}, batches of {batch_size}")

    items = [{"image_id": image_id, "path": os.fsencode(path)} for image_id, path in todo]
    model_ref = ray.put(model)  # held here for the whole run, so restarted actors can fetch it
    dataset = (
        ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / batch_size))
        .map_batches(Reader, batch_size=batch_size, num_cpus=READ_CPUS,
                     compute=ray.data.ActorPoolStrategy(size=1))
        .map_batches(Segmenter, batch_size=batch_size,
                     compute=ray.data.ActorPoolStrategy(size=actors),
                     num_cpus=actor_cpus, num_gpus=actor_gpus,
                     fn_constructor_kwargs={"model_ref": model_ref,
                                            "image_processor": processor,
                                            "use_gpu": use_gpu})
    )
    progress = Progress(len(todo))
    rejected = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["image_id"])):
            image_id = str(batch["image_id"][i])
            if image_id in results:
                continue  # a retried batch: its first result stands
            row = result_row(batch, i)
            writer.add(row, bytes(batch["mask_png"][i]))
            results[image_id] = row
            rejected += row["status"] == sio.REJECTED
            progress.update(len(results), rejected)
    progress.close()


def result_row(batch: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
    """The index row for item `i` of a model-stage output batch."""
    image_id = str(batch["image_id"][i])
    ok = batch["status"][i] == sio.OK
    names, shares = json.loads(batch["top"][i]) if ok else (None, None)
    height, width = int(batch["height"][i]), int(batch["width"][i])
    size, mtime = int(batch["source_bytes"][i]), int(batch["source_mtime_ns"][i])
    return {
        "image_id": image_id, "source_path": str(batch["path"][i]),
        "status": str(batch["status"][i]), "reason": str(batch["reason"][i]),
        "note": str(batch["note"][i]),
        "height": height or None, "width": width or None,
        "top_classes": names, "top_shares": shares,
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
    return {} if os.environ.get("RAY_ADDRESS") else {"object_store_memory":
                                                      LOCAL_OBJECT_STORE_BYTES}


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


class Progress:
    """A one-line progress bar on stderr: done/total, images/s and the time left.

    In a terminal the line is redrawn in place; elsewhere (a log file, a notebook) a new
    line is printed every few seconds.
    """

    def __init__(self, total: int, stream=None) -> None:
        self.total, self.stream = total, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.first: tuple[float, int] | None = None
        self.last_print = 0.0
        self.line = ""

    def update(self, done: int, rejected: int = 0) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, done)
        if done < self.total and now - self.last_print < (0.2 if self.tty else 5.0):
            return
        self.last_print = now
        since, at = self.first
        rate = (done - at) / (now - since) if now > since and done > at else 0.0
        eta = _clock((self.total - done) / rate) if rate else "--:--"
        width = 24
        filled = int(width * done / self.total)
        self.line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} images"
                     f" ({rejected} rejected)  {rate:.2f} images/s  ETA {eta}")
        if self.tty:
            print(f"\r{self.line}", end="", file=self.stream, flush=True)
        else:
            print(self.line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty and self.line:
            print(file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# --- after the run ----------------------------------------------------------------------------


def write_previews(rows: list[dict[str, Any]], out: Path, n: int) -> list[Path]:
    """Overlay previews (image blended with its coloured mask) of the first `n` ok images."""
    if n == 0:
        return []
    from PIL import Image

    from .visualisation import overlay

    written = []
    for row in [r for r in rows if r["status"] == sio.OK][:n]:
        found = sio.inspect_image(row["source_path"])
        mask = sio.read_mask(out / row["mask_path"])
        if not found.ok or found.image.size != (mask.shape[1], mask.shape[0]):
            continue  # the file changed since; the index row stands, the preview is skipped
        picture = Image.fromarray(overlay(found.image, mask.astype(np.int64)))
        picture.thumbnail((800, 800))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
        path = out / PREVIEWS_DIR / f"{row['image_id']}.jpg"
        written.append(sio.write_atomic(path, buffer.getvalue()))
    return written


def summarise(inputs: list[tuple[str, Path]], final: Mapping[str, Mapping[str, Any]],
              done: Mapping[str, Any], out: Path, seconds: float, ran: int) -> int:
    """Print the summary; return 0 when `inputs = written + rejected` holds, else 1."""
    ids = [image_id for image_id, _ in inputs]
    written = [i for i in ids if i in final and final[i]["status"] == sio.OK
               and (out / final[i]["mask_path"]).is_file()]
    rejected = [i for i in ids if i in final and final[i]["status"] == sio.REJECTED]
    accounted = set(written) | set(rejected)
    missing = [i for i in ids if i not in accounted]
    print()
    print(f"Summary: {len(ids)} inputs = {len(written)} written + {len(rejected)} rejected"
          + ("" if not missing else f" + {len(missing)} MISSING"))
    print(f"  this run: {ran} files in {seconds:.1f} s; skipped as already done: {len(done)}")
    for title, chosen, column in (("rejected", rejected, "reason"),
                                  ("notes", [i for i in written if final[i].get("note")], "note")):
        if chosen:
            print(f"  {title}:")
            for image_id in chosen[:SUMMARY_LINES]:
                print(f"    {image_id}: {final[image_id][column]}")
            if len(chosen) > SUMMARY_LINES:
                print(f"    ... and {len(chosen) - SUMMARY_LINES} more (see the index)")
    print(f"  index: {out / INDEX_FILE}")
    print(f"  masks: {out / 'masks'}")
    if missing:
        print(f"segment: INCOMPLETE: {len(missing)} inputs have neither a mask nor a "
              f"rejection, e.g. {missing[:3]}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


if __name__ == "__main__":
    # Import the module under its package name, so Ray workers can find `Segmenter` there.
    from utils.segment import main as _main

    sys.exit(_main())
