"""Actors that die mid-run must cost nothing: every image predicted exactly once.

Mirrors the recovery patterns the actors and ActorPool notebooks teach, on a few
small images with the offline (seeded random-weight) model, so it runs anywhere.
"""

from __future__ import annotations

import logging
import sys
from collections import deque

import numpy as np
import pytest
import torch
from PIL import Image

from utils import assert_same_maps, offline_model, predict
from utils.model import image_processor_class

ray = pytest.importorskip("ray")
from ray.util.actor_pool import ActorPool  # noqa: E402

pytestmark = pytest.mark.slow

N_IMAGES = 6
BATCH_SIZE = 2


def build_replica(recipe):
    """The notebooks' way to get a model into a worker: rebuild it from config and weights."""
    from transformers import SegformerForSemanticSegmentation

    replica = SegformerForSemanticSegmentation(recipe["config"])
    replica.load_state_dict(recipe["weights"])
    return replica.eval()


@ray.remote(num_cpus=1)
class PredictionActor:
    def __init__(self, recipe, image_processor):
        torch.set_num_threads(1)
        self.model = build_replica(recipe)
        self.image_processor = image_processor

    def predict(self, batch_ids, batch_images):
        maps = predict(self.model, self.image_processor, batch_images)
        return dict(zip(batch_ids, maps))


def started(actors):
    """`actors`, once each has finished `__init__`. Killing an actor that is still starting is
    racy in Ray 2.60: the kill can reach its worker before the actor does and be ignored, and
    that worker then keeps its CPU, so a replacement actor waits forever."""
    ray.get([actor.__ray_ready__.remote() for actor in actors], timeout=300)
    return actors


def add_predictions(results, batch_maps):
    repeated = sorted(results.keys() & batch_maps.keys())
    if repeated:
        raise AssertionError(f"predicted more than once: {repeated}")
    results.update(batch_maps)


@pytest.fixture(scope="module")
def setting():
    """A private 2-CPU Ray, small images, their reference maps and the shared model refs."""
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8))
        for i in range(N_IMAGES)
    ]
    ids = [f"img-{i}" for i in range(N_IMAGES)]
    model, processor = offline_model(seed=201), image_processor_class()()
    expected = dict(zip(ids, predict(model, processor, images)))
    batches = [
        (tuple(ids[i : i + BATCH_SIZE]), images[i : i + BATCH_SIZE])
        for i in range(0, N_IMAGES, BATCH_SIZE)
    ]
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    # Workers cannot import this test module: ship its classes and functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        recipe_ref = ray.put({"config": model.config, "weights": model.state_dict()})
        processor_ref = ray.put(processor)
        yield {"batches": batches, "expected": expected, "refs": (recipe_ref, processor_ref)}
    finally:
        ray.shutdown()


def test_loop_replaces_killed_actor_and_loses_nothing(setting):
    """The scheduling loop of the actors notebook, with a busy actor killed mid-run."""
    refs = setting["refs"]
    idle = started([PredictionActor.remote(*refs) for _ in range(2)])
    todo = deque(enumerate(setting["batches"]))
    in_flight, results, replaced, killed = {}, {}, 0, []
    try:
        while todo or in_flight:
            while idle and todo:
                actor, (number, batch) = idle.pop(), todo.popleft()
                in_flight[actor.predict.remote(*batch)] = (actor, (number, batch))
                if number == 1 and not killed:
                    ray.kill(actor)  # busy: its batch was just submitted
                    killed.append(number)
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            actor, (number, batch) = in_flight.pop(done)
            try:
                batch_maps = ray.get(done)
            except ray.exceptions.RayActorError:
                replaced += 1
                assert replaced <= 2, "actors keep dying"
                todo.appendleft((number, batch))
                idle.append(PredictionActor.remote(*refs))
                continue
            add_predictions(results, batch_maps)
            idle.append(actor)
    finally:
        for actor in idle:
            ray.kill(actor)

    assert killed == [1]
    assert replaced == 1, "the killed actor's batch must fail and be resubmitted once"
    assert_same_maps(results, setting["expected"])


def test_pool_drops_items_when_last_actor_dies(setting):
    """Documented ActorPool behaviour the notebook warns about; a completeness check catches it."""
    [actor] = started([PredictionActor.remote(*setting["refs"])])
    pool = ActorPool([actor])
    pool.map_unordered(lambda a, b: a.predict.remote(*b), setting["batches"])
    ray.kill(actor)
    results, failures = {}, 0
    while pool.has_next():
        try:
            add_predictions(results, pool.get_next_unordered())
        except ray.exceptions.ActorDiedError:
            failures += 1
    assert failures == 1
    assert not pool.has_next()
    assert len(results) < N_IMAGES, "some items were dropped without an error"


def test_restartable_pool_completes_after_a_crash(setting):
    """max_restarts + max_task_retries: the crashed call is retried, nothing is duplicated."""
    actors = started(
        [
            PredictionActor.options(max_restarts=1, max_task_retries=1).remote(*setting["refs"])
            for _ in range(2)
        ]
    )
    try:
        pool = ActorPool(actors)
        work = pool.map_unordered(lambda a, b: a.predict.remote(*b), setting["batches"])
        ray.kill(actors[0], no_restart=False)  # a crash while it holds a batch
        results = {}
        for batch_maps in work:
            add_predictions(results, batch_maps)
    finally:
        for actor in actors:
            ray.kill(actor)
    assert_same_maps(results, setting["expected"])
