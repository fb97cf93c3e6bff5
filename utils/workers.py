"""What the course runs in Ray's workers, kept for the later notebooks and the benchmark.

Each piece is written out and explained in the notebook that teaches it: the remote function
`predict_batch` in `02_ray_tasks`, `PredictionActor` and `run_on_actors` in `03_ray_actors`,
`predict_on` (what an `ActorPool` calls) in `04_actor_pool`, `SegmentImages` (a Ray Data
callable class) in `05_ray_data`. Later notebooks and `make bench` import them from here, so
the benchmark times the code the course teaches. A test fails when a notebook's copy and this
one drift apart.
"""

from __future__ import annotations

import io
import time
from collections import deque

import numpy as np
import ray
import torch
from PIL import Image

from .check import add_predictions
from .cluster import match_threads_to_cpus
from .inference import predict
from .masks import encode_mask
from .model import build_replica, load_model
from .timing import timed, worker_name


@ray.remote
def predict_batch(recipe, processor, batch_ids, batch_images):
    match_threads_to_cpus()

    def build_and_predict():
        return predict(build_replica(recipe), processor, batch_images)

    maps, span = timed(build_and_predict)  # the span covers rebuilding the model, too
    return dict(zip(batch_ids, maps)), span


@ray.remote(num_cpus=1)
class PredictionActor:
    def __init__(self):
        self.threads = match_threads_to_cpus()
        # Once per actor, on this worker's GPU when Ray assigned one.
        self.model, self.image_processor = load_model()

    def describe(self):
        return {
            "worker": worker_name(),
            "device": str(next(self.model.parameters()).device),
            "torch threads": self.threads,
            "resources": ray.get_runtime_context().get_assigned_resources(),
        }

    def predict(self, batch_ids, batch_images):
        maps, span = timed(predict, self.model, self.image_processor, batch_images)
        return dict(zip(batch_ids, maps)), span


def run_on_actors(actors, batches):
    """Predict every batch on `actors`; returns ({image_id: map}, spans)."""
    todo = deque(batches)
    idle = list(actors)
    in_flight = {}  # ObjectRef -> (actor, batch)
    results, spans = {}, []
    while todo or in_flight:
        while idle and todo:  # one batch per idle actor
            actor, batch = idle.pop(), todo.popleft()
            in_flight[actor.predict.remote(*batch)] = (actor, batch)
        [done], _ = ray.wait(list(in_flight), num_returns=1)
        actor, batch = in_flight.pop(done)
        batch_maps, span = ray.get(done)
        add_predictions(results, batch_maps)
        spans.append(span)
        idle.append(actor)
    return results, spans


def predict_on(actor, batch):
    """What the pool calls for each item: start the work, return the ObjectRef."""
    batch_ids, batch_images = batch
    return actor.predict.remote(batch_ids, batch_images)


class SegmentImages:
    def __init__(self, threads):
        torch.set_num_threads(threads)
        self.model, self.image_processor = load_model()  # on its GPU when the actor has one
        self.worker = worker_name()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.time()
        pictures = [Image.open(io.BytesIO(data)) for data in batch["image"]]
        maps = predict(self.model, self.image_processor, pictures)
        end, n = time.time(), len(maps)
        return {
            "image_id": batch["image_id"],
            "mask": np.array([encode_mask(m) for m in maps], dtype=object),
            "worker": np.full(n, self.worker),
            "start": np.full(n, start),
            "end": np.full(n, end),
        }
