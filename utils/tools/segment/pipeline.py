"""The job's Ray Data pipeline: decode, predict and write masks on the workers."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
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
from utils.data import printable_id
from utils.images import Inspection, inspect_image
from utils.tools.segment import files as sio
from utils.tools.segment.files import ResultWriter, UsageError, say

LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # ample for a few batches in flight; see local_object_store
READ_CPUS = 0.5  # CPUs reserved by the reader actor (decoding is light next to the model)

# --- Ray Data ---------------------------------------------------------------------------------


def read_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read stage: check and decode each file; bad ones become rejections, never exceptions.

    Paths arrive as bytes (a file name need not be valid UTF-8; Arrow strings must be).
    Accepted images travel as raw RGB bytes plus their size (any size, no padding).
    """
    columns: dict[str, list] = {
        name: []
        for name in (
            "image_id",
            "path",
            "status",
            "reason",
            "note",
            "height",
            "width",
            "pixels",
            "source_bytes",
            "source_mtime_ns",
        )
    }
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
        columns["pixels"].append(found.image.tobytes() if found.ok else b"")
        columns["source_bytes"].append(-1 if found.source_bytes is None else found.source_bytes)
        columns["source_mtime_ns"].append(
            -1 if found.source_mtime_ns is None else found.source_mtime_ns
        )
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
        from utils.labels import get_labels

        self.id2label = dict(self.model.config.id2label or get_labels()[0])
        self.delay = get_config().segment_delay_s

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from PIL import Image

        from utils.masks import class_shares, encode_mask

        if self.delay:
            time.sleep(self.delay)
        status = list(batch["status"])
        reason = list(batch["reason"])
        accepted = [i for i, s in enumerate(status) if s == sio.OK]
        images = [
            Image.frombytes(
                "RGB", (int(batch["width"][i]), int(batch["height"][i])), batch["pixels"][i]
            )
            for i in accepted
        ]
        maps = self._predict(images)
        masks: list[bytes] = [b""] * len(status)
        tops: list[str] = ["[[], []]"] * len(status)
        for i, result in zip(accepted, maps):
            if isinstance(result, str):
                status[i], reason[i] = sio.REJECTED, result
                continue
            masks[i] = encode_mask(result)
            top = class_shares(result)[: sio.TOP_K]
            names = [str(self.id2label.get(k, f"class {k}")).strip() for k, _ in top]
            tops[i] = json.dumps([names, [round(share, 4) for _, share in top]])
        return {
            "image_id": batch["image_id"],
            "path": batch["path"],
            "status": _column(status),
            "reason": _column(reason),
            "note": batch["note"],
            "height": batch["height"],
            "width": batch["width"],
            "source_bytes": batch["source_bytes"],
            "source_mtime_ns": batch["source_mtime_ns"],
            "top": _column(tops),
            "mask_png": _column(masks),
        }

    def _predict(self, images: list) -> list:
        """One map per image; when the batch fails, each image alone (a failure: its reason).

        `predict` gives the same mask whatever batch an image falls in (after a rejection,
        or on resume), so retrying image by image changes no result.
        """
        from utils.inference import predict

        try:
            return predict(self.model, self.image_processor, images, device=self.device)
        except Exception:  # noqa: BLE001 - find the culprit image by image
            results: list = []
            for image in images:
                try:
                    results.extend(
                        predict(self.model, self.image_processor, [image], device=self.device)
                    )
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
    """Segment `todo` on Ray Data; write each result through `writer` as it arrives."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] != "token":
        print(
            f"segment: warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']} turns Ray's token "
            "authentication off",
            file=sys.stderr,
        )
    import ray

    from utils.cluster import course_runtime_env

    # Workers of a local instance share this environment; a cluster's need utils shipped.
    cluster = get_config().ray_address
    runtime_env = course_runtime_env() if cluster else None
    for attempt in (1, 2):
        try:
            ray.init(
                runtime_env=runtime_env,
                logging_level=logging.WARNING,
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
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # ours instead

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    say(
        f"Ray {ray.__version__} on {cluster or 'a local instance'}: {cpus:g} CPU(s), "
        f"{gpus:g} GPU(s)"
    )
    largest_node = max(
        (node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=cpus
    )
    plan = plan_actors(cpus, gpus, largest_node, args.device, args.actors)
    batch_size = min(args.batch_size, len(todo))
    say(
        f"{len(todo)} files to do; {plan.actors} model actor(s) on "
        f"{f'{plan.gpus:g} GPU' if plan.gpus else f'{plan.cpus:g} CPU(s)'} each, "
        f"batches of {batch_size}"
    )

    items = [{"image_id": image_id, "path": os.fsencode(path)} for image_id, path in todo]
    model_ref = ray.put(model)  # held here for the whole run, so restarted actors can fetch it
    dataset = (
        ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / batch_size))
        .map_batches(
            Reader,
            batch_size=batch_size,
            num_cpus=READ_CPUS,
            compute=ray.data.ActorPoolStrategy(size=1),
        )
        .map_batches(
            Segmenter,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            fn_constructor_kwargs={
                "model_ref": model_ref,
                "image_processor": processor,
                "use_gpu": plan.gpus > 0,
            },
        )
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


@dataclass(frozen=True)
class ActorPlan:
    """How many model actors to start, and what each one reserves."""

    actors: int
    cpus: float
    gpus: float


def plan_actors(
    cpus: float, gpus: float, largest_node_cpus: float, device: str, actors: int | None
) -> ActorPlan:
    """Model actors for a cluster with `cpus` and `gpus` in all (`actors`: the user's count).

    With GPUs (unless `device` is cpu), one actor per GPU by default, each with a share that
    packs onto whole GPUs (`cluster.gpu_share`: 3 actors on 2 GPUs get 0.5 each, so all three
    start). On CPUs, one actor per CPU but the reader's; the actors share what is left, never
    more than the largest node has.
    """
    if device == "cuda" and gpus < 1:
        raise UsageError("--device cuda, but the Ray cluster has no GPU")
    if device != "cpu" and gpus >= 1:
        count = actors or int(gpus)
        return ActorPlan(count, 1.0, gpu_share(gpus, count))
    count = actors or max(1, int(cpus) - 1)
    # Leave room for the reader, or the read stage could never be scheduled; give the actors
    # the rest (on 2 CPUs: one actor with 1.5 CPUs, so 2 torch threads).
    share = min(largest_node_cpus, max(0.1, (cpus - READ_CPUS) / count))
    return ActorPlan(count, share, 0.0)


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
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


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
