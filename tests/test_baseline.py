"""The sequential baseline: measured once per configuration, then read back unchanged."""

import copy

import numpy as np
import torch

from utils import predict
from utils.baseline import sequential_baseline


def test_measured_once_then_read_back(model, image_processor, mixed_images, tmp_path):
    mixed_images = mixed_images[:3]
    ids = [f"img{i}" for i in range(len(mixed_images))]
    first = sequential_baseline(ids, mixed_images, model, image_processor, cache_dir=tmp_path)
    again = sequential_baseline(ids, mixed_images, model, image_processor, cache_dir=tmp_path)
    assert not first.reused and again.reused
    assert "measured just now" in str(first) and f"measured {first.measured_at}" in str(again)
    assert (again.seconds, again.threads, again.device) == (first.seconds, first.threads, "cpu")
    assert list(again.maps) == ids
    for image_id, image_map in zip(ids, predict(model, image_processor, mixed_images)):
        np.testing.assert_array_equal(again.maps[image_id], first.maps[image_id])
        assert again.maps[image_id].shape == image_map.shape


def test_other_images_or_weights_are_measured_anew(model, image_processor, mixed_images, tmp_path):
    mixed_images = mixed_images[:3]
    ids = [f"img{i}" for i in range(len(mixed_images))]
    sequential_baseline(ids, mixed_images, model, image_processor, cache_dir=tmp_path)
    fewer = sequential_baseline(
        ids[:2], mixed_images[:2], model, image_processor, cache_dir=tmp_path
    )
    assert not fewer.reused and len(fewer.maps) == 2
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        next(tuned.parameters()).add_(1e-3)  # one weight changed: another model
    other = sequential_baseline(ids, mixed_images, tuned, image_processor, cache_dir=tmp_path)
    assert not other.reused
    forced = sequential_baseline(
        ids, mixed_images, model, image_processor, recompute=True, cache_dir=tmp_path
    )
    assert not forced.reused


def test_an_unreadable_saved_copy_is_measured_again(model, image_processor, mixed_images, tmp_path):
    mixed_images = mixed_images[:2]
    ids = [f"img{i}" for i in range(len(mixed_images))]
    sequential_baseline(ids, mixed_images, model, image_processor, cache_dir=tmp_path)
    [saved] = (tmp_path / "baselines").glob("*.npz")
    saved.write_bytes(b"not a zip file")
    again = sequential_baseline(ids, mixed_images, model, image_processor, cache_dir=tmp_path)
    assert not again.reused and len(again.maps) == len(ids)
    assert sequential_baseline(ids, mixed_images, model, image_processor, cache_dir=tmp_path).reused
