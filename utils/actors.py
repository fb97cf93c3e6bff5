"""The actors notebook's `PredictionActor`, kept for the later notebooks and the benchmark.

`03_ray_actors` writes it out and explains it; `04_actor_pool` and `make bench` import it from
here, so the benchmark times the actor the course teaches. A test fails when the notebook's
copy and this one drift apart.
"""

from __future__ import annotations

import ray

from .cluster import match_threads_to_cpus
from .inference import predict
from .model import load_model
from .timing import timed, worker_name


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
