"""Segment every image under a folder with Ray Data: the course's pipeline as a production job.

    python -m utils.segment SOURCE --out DIR [--model M] [--batch-size N] [--actors N]
                            [--device auto|cpu|cuda] [--preprocess auto|tasks|actors]
                            [--preview N] [--dashboard] [--verbose]

For each file under SOURCE (searched recursively) the job writes exactly one of:

- a mask, `DIR/masks/<image id>.png`: the class id of every pixel, 8-bit grayscale PNG
  (lossless), the size of the image as displayed;
- a rejection: the file is not a usable image, and the index says why.

`DIR/index.parquet` has one row per input file (see `files.INDEX_SCHEMA`), and
`DIR/previews/` overlays for the first few images. The summary reconciles
`inputs = written + rejected`; the exit code is 0 when it holds, 1 when it does not (or the
pipeline failed), 2 for a usage error found before any work starts (missing or empty
SOURCE, unknown model, DIR not writable, folders a cluster's nodes cannot see), 130 after
Ctrl-C and 143 after SIGTERM.

Where the work runs (`pipeline.py`): CPU tasks check and decode the files (and preprocess
them for GPU actors, see --preprocess); model actors run the model and write the masks; only
index rows come back to this process. With
RAY_ADDRESS set the job joins that cluster, and SOURCE and DIR must then be storage that
every node sees at the same path (checked before the run starts).

How it survives failures:

- Bad input: each file is checked in the prepare stage (`utils.images.inspect_image`);
  a bad file becomes a rejection row, never an exception in a batch. A batch the model
  cannot process is retried image by image, so one bad image cannot take others with it.
- Killed workers and lost nodes: Ray Data restarts dead actors and retries their batches.
  A mask's path depends only on its image, so a retried batch rewrites the same file, and
  this process keeps one index row per image id: no duplicates.
- Interruption (Ctrl-C or SIGTERM): every file is written atomically (temporary name, then
  `os.replace`), the index is saved in small shards as results arrive, and the index and
  summary are written for what is done. Run the same command again and it skips every
  image whose mask exists and whose index row says ok, and does the rest.

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
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from utils.config import DEFAULT_MODEL, get_config
from utils.images import inspect_image, list_files
from utils.tools.segment import files as sio
from utils.tools.segment.files import ResultWriter, UsageError, say
from utils.tools.segment.pipeline import (
    MODEL_DIR,
    Terminated,
    run_pipeline,
    shutdown_ray,
    stop_on_sigterm,
)

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
MANIFEST_FILE = "run.json"
PREVIEWS_DIR = "previews"
SUMMARY_LINES = 25  # rejections and notes listed in the summary (all are in the index)


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    config = get_config()
    parser = argparse.ArgumentParser(
        prog="python -m utils.segment",
        description="Segment every image under SOURCE (recursively) with SegFormer on Ray Data; "
        "write one PNG mask per image and a Parquet index to --out.",
    )
    parser.add_argument("source", type=Path, help="folder of images (searched recursively)")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (created); run again with the same arguments to resume",
    )
    parser.add_argument(
        "--model",
        default=config.model,
        help=f"hub model id or local folder (default: COURSE_MODEL or {DEFAULT_MODEL})",
    )
    # On a CPU, throughput hardly changes with the batch size (notebook 08), but each model
    # actor's working memory grows with it (about 140 MB per image, measured on the course's
    # photos): 500 images on 2 cores, two actors, batches of 2 against 4: 3.13 against 3.06
    # images/s, a peak of 3.50 against 4.09 GiB for the whole run.
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        help="images per model call (default 2 on CPUs, 4 on GPUs; larger batches use more "
        "memory, and help mostly on a GPU)",
    )
    parser.add_argument(
        "--actors",
        type=_positive,
        default=None,
        help="model replicas (default: one per GPU, else one single-threaded replica per CPU)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=config.device,
        help="auto uses GPUs when the Ray cluster has them (default: COURSE_DEVICE or auto)",
    )
    parser.add_argument(
        "--preprocess",
        choices=("auto", "tasks", "actors"),
        default="auto",
        help="where images are resized and normalised for the model: in the CPU tasks that "
        "decode them, or in the model actors (default auto: tasks when the actors use GPUs)",
    )
    parser.add_argument(
        "--preview",
        type=_non_negative,
        default=4,
        metavar="N",
        help="write overlay previews of the first N images (default 4)",
    )
    parser.add_argument(
        "--dashboard", action="store_true", help="start Ray's dashboard (on 127.0.0.1 only)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own log lines and its workers' output (always kept in Ray's log files)",
    )
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
    stop_on_sigterm()
    try:
        return run(args)
    except UsageError as error:
        print(f"segment: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as stop:  # before the pipeline started: nothing was written yet
        print("\nsegment: stopped before any image was processed", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED


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
        raise UsageError(
            f"output folder {out} cannot be written ({error.strerror or type(error).__name__})"
        ) from None
    return out.resolve()


def load_job_model(name: str) -> tuple[Any, Any, str]:
    """`(model, image_processor, description)` on the CPU, or `UsageError` for an unknown model.

    Same rules as `utils.load_model` (safetensors only, no remote code, a local folder or a
    hub id, the local cache when the hub cannot be used): the DEFAULT model falls back to the
    random-weight stand-in (with its banner) when it cannot be loaded. A model you name
    explicitly never falls back (`load_model` hands it to `load_named_model`): if it is
    neither a folder, nor on a reachable hub, nor in the local cache, that is an error, not a
    silent stand-in producing meaningless masks.
    """
    from utils.hub import SourceUnavailableError, short_error
    from utils.model import is_offline_model, load_model

    config = dataclasses.replace(get_config(), model=name)
    folder = Path(name).expanduser()
    if folder.is_file():
        raise UsageError(f"--model {name} is a file; give a hub id or a model folder")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    if not folder.is_dir() and looks_like_path:
        raise UsageError(f"model folder {name} does not exist")
    try:
        model, processor = load_model(config, device="cpu")  # a named model never falls back
    except SourceUnavailableError as error:
        hint = (
            ""
            if folder.is_dir()
            else f" (only the default model {DEFAULT_MODEL} has an offline stand-in)"
        )
        raise UsageError(f"unknown model {name!r}: {error}{hint}") from None
    except Exception as error:  # noqa: BLE001 - not a SegFormer, a broken folder, ...
        raise UsageError(f"unknown model {name!r} ({short_error(error)})") from None
    description = (
        "offline stand-in (random weights)"
        if is_offline_model(model)
        else str(model.config.name_or_path or name)
    )
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
            raise UsageError(
                f"{out} holds results for {key} {previous.get(key)!r}, not "
                f"{manifest[key]!r}; use another --out folder"
            )


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    source = check_source(args.source)
    inputs, hidden = list_files(source, exclude=[args.out.expanduser()])
    if not inputs:
        raise UsageError(
            f"source folder {source} has no files"
            + (f" ({hidden} hidden entries skipped)" if hidden else "")
        )
    out = check_out(args.out)
    if args.device == "cuda" and not get_config().ray_address:
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
    sio.write_atomic(
        out / MANIFEST_FILE,
        json.dumps({**manifest, "model_loaded": model_description}, indent=2).encode(),
    )
    say(
        f"{len(inputs)} input files under {source}"
        + (f" ({hidden} hidden entries skipped)" if hidden else "")
    )
    say(f"model {args.model} ({model_description})")
    if done:
        say(f"resuming: {len(done)} files already done, {len(todo)} to go")

    results: dict[str, dict[str, Any]] = {}
    stopped: KeyboardInterrupt | None = None
    if todo:
        writer = ResultWriter(out)
        try:
            run_pipeline(todo, model, processor, args, writer, results)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
            stopped = stop
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001 - report it; what was written stays valid
            print(
                f"segment: the pipeline failed ({type(error).__name__}: {error}); "
                f"{len(results)} results were saved, run again to resume",
                file=sys.stderr,
            )
            return EXIT_INCOMPLETE
        finally:
            writer.flush()
            shutdown_ray()
            shutil.rmtree(out / MODEL_DIR, ignore_errors=True)
            sio.remove_temporary_files(out)

    final = {**done, **results}
    rows = [final[image_id] for image_id, _ in inputs if image_id in final]
    sio.write_atomic(out / sio.INDEX_FILE, sio.table_bytes(sio.rows_to_table(rows)))
    for shard in (out / sio.PARTS_DIR).glob("*.parquet"):
        shard.unlink(missing_ok=True)  # all of them are in the index now
    if stopped is not None:
        signal_name = "SIGTERM" if isinstance(stopped, Terminated) else "Ctrl-C"
        seconds = time.perf_counter() - started
        summarise(inputs, final, done, out, seconds, ran=len(results), stopped=True)
        print(
            f"segment: stopped by {signal_name} after {len(results)} of {len(todo)} files "
            "this run; every file written is complete. Run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(stopped, Terminated) else EXIT_INTERRUPTED
    write_previews(rows, out, args.preview)
    return summarise(inputs, final, done, out, time.perf_counter() - started, ran=len(results))


def is_done(row: Mapping[str, Any], path: Path, out: Path) -> bool:
    """Whether an earlier run's `row` still stands for the file at `path`, unchanged since
    (same size and modification time): ok with its mask on disk, or rejected for its content.
    A rejection for access (permission, a vanished file) is tried again."""
    size, mtime = sio.file_signature(path)
    if size is None or size != row.get("source_bytes") or mtime != row.get("source_mtime_ns"):
        return False
    if row.get("status") == sio.REJECTED:
        return not str(row.get("reason", "")).startswith(sio.RETRIED_REJECTIONS)
    return (
        row.get("status") == sio.OK
        and bool(row.get("mask_path"))
        and (out / row["mask_path"]).is_file()
    )


def load_previous_rows(out: Path) -> dict[str, dict[str, Any]]:
    """Index rows of earlier runs: the final index, then the shards of unfinished runs."""
    rows: dict[str, dict[str, Any]] = {}
    files = [out / sio.INDEX_FILE] if (out / sio.INDEX_FILE).is_file() else []
    files += sorted((out / sio.PARTS_DIR).glob("*.parquet"))
    for file in files:
        try:
            for row in sio.read_rows(file):
                rows[row["image_id"]] = row
        except Exception as error:  # noqa: BLE001 - an unreadable file only costs redoing work
            print(
                f"segment: ignoring {file.name} ({type(error).__name__}); its images are "
                "done again",
                file=sys.stderr,
            )
    return rows


# --- after the run ----------------------------------------------------------------------------


def write_previews(rows: list[dict[str, Any]], out: Path, n: int) -> list[Path]:
    """Overlay previews (image blended with its coloured mask) of the first `n` ok images."""
    if n == 0:
        return []
    from PIL import Image

    from utils.masks import read_mask
    from utils.visualisation import overlay

    written = []
    for row in [r for r in rows if r["status"] == sio.OK][:n]:
        found = inspect_image(row["source_path"])
        mask = read_mask(out / row["mask_path"])
        if not found.ok or found.image.size != (mask.shape[1], mask.shape[0]):
            continue  # the file changed since; the index row stands, the preview is skipped
        picture = Image.fromarray(overlay(found.image, mask.astype(np.int64)))
        picture.thumbnail((800, 800))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
        path = out / PREVIEWS_DIR / f"{row['image_id']}.jpg"
        written.append(sio.write_atomic(path, buffer.getvalue()))
    return written


def summarise(
    inputs: list[tuple[str, Path]],
    final: Mapping[str, Mapping[str, Any]],
    done: Mapping[str, Any],
    out: Path,
    seconds: float,
    ran: int,
    stopped: bool = False,
) -> int:
    """Print the summary; return 0 when `inputs = written + rejected` holds, else 1.

    After a stop (`stopped`), inputs not reached yet are counted as "not done", not missing.
    """
    ids = [image_id for image_id, _ in inputs]
    written = [
        i
        for i in ids
        if i in final and final[i]["status"] == sio.OK and (out / final[i]["mask_path"]).is_file()
    ]
    rejected = [i for i in ids if i in final and final[i]["status"] == sio.REJECTED]
    accounted = set(written) | set(rejected)
    missing = [i for i in ids if i not in accounted]
    print()
    print(
        f"Summary: {len(ids)} inputs = {len(written)} written + {len(rejected)} rejected"
        + ("" if not missing else f" + {len(missing)} {'not done' if stopped else 'MISSING'}")
    )
    print(f"  this run: {ran} files in {seconds:.1f} s; skipped as already done: {len(done)}")
    for title, chosen, column in (
        ("rejected", rejected, "reason"),
        ("notes", [i for i in written if final[i].get("note")], "note"),
    ):
        if chosen:
            print(f"  {title}:")
            for image_id in chosen[:SUMMARY_LINES]:
                print(f"    {image_id}: {final[image_id][column]}")
            if len(chosen) > SUMMARY_LINES:
                print(f"    ... and {len(chosen) - SUMMARY_LINES} more (see the index)")
    print(f"  index: {out / sio.INDEX_FILE}")
    print(f"  masks: {out / 'masks'}")
    if missing and not stopped:
        print(
            f"segment: INCOMPLETE: {len(missing)} inputs have neither a mask nor a "
            f"rejection, e.g. {missing[:3]}",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return EXIT_OK
