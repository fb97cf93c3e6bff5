"""GPU runtime checks, run by scripts/test_gpu.sh (`make test-gpu`); skipped without CUDA.

They check what the notebooks rely on when a GPU is present: the GPU is picked without
being asked for, Ray sees it, fractional GPU shares pack onto it, and a Ray worker given
a share can run the model there.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers import photo

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU visible to torch"
)


def test_the_gpu_is_picked_automatically(monkeypatch):
    from utils.model import load_model, pick_device

    monkeypatch.setenv("COURSE_DEVICE", "auto")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pick_device().type == "cuda"
    model, _ = load_model()
    assert next(model.parameters()).device.type == "cuda"


def test_predict_on_the_gpu_gives_maps_of_every_image(model, image_processor, mixed_images):
    from utils import predict
    from utils.model import build_replica, model_recipe

    on_gpu = build_replica(model_recipe(model))  # on the GPU: one is visible here
    gpu_maps = predict(on_gpu, image_processor, mixed_images)
    cpu_maps = predict(model, image_processor, mixed_images)
    for image, got, cpu in zip(mixed_images, gpu_maps, cpu_maps):
        assert got.shape == (image.height, image.width) and got.dtype == np.uint8
        # Not asserted equal: GPU kernels (TF32 convolutions) may flip near-tied pixels.
        print(f"GPU vs CPU: {np.mean(got != cpu):.4%} of pixels differ")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from utils.cluster import course_runtime_env

    ray.init(address="local", runtime_env=course_runtime_env(), logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def test_ray_sees_the_gpus_and_shares_pack(local_ray):
    from utils.cluster import describe_cluster, gpus_per_worker

    gpus = local_ray.cluster_resources().get("GPU", 0)
    assert gpus >= 1, describe_cluster()
    assert gpus_per_worker(1) == 1.0
    share = gpus_per_worker(3 * int(gpus))
    assert 0 < share < 1 and int(1 / share) * int(gpus) >= 3 * int(gpus)


def test_workers_with_fractional_shares_run_on_the_gpu(local_ray, model, image_processor):
    from utils.cluster import gpus_per_worker
    from utils.model import build_replica, model_recipe

    n_workers = 2 * int(local_ray.cluster_resources()["GPU"])
    share = gpus_per_worker(n_workers)
    recipe_ref = local_ray.put(model_recipe(model))  # CPU weights: never ray.put a CUDA model

    @local_ray.remote(num_gpus=share)
    def segment(recipe, image):
        import torch

        from utils import predict

        assert torch.cuda.is_available(), "a worker given a GPU share sees no GPU"
        replica = build_replica(recipe)
        assert next(replica.parameters()).device.type == "cuda"
        return predict(replica, image_processor, [image])[0].shape

    images = [photo(64, 48, seed=seed) for seed in range(n_workers)]
    shapes = local_ray.get([segment.remote(recipe_ref, image) for image in images])
    assert shapes == [(48, 64)] * n_workers
