"""SegmentationPredictor and its checkpoint: exact reload, batch contract, clear failures.

A tiny SegFormer keeps these tests fast; the course model behaves the same.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from utils.check import assert_same_maps
from utils.inference import predict
from utils.masks import decode_mask
from utils.model import image_processor_class
from utils.predictor import (
    CheckpointError,
    SegmentationPredictor,
    decode_image,
    load_checkpoint,
    save_checkpoint,
)


def tiny_model(num_labels: int = 5, seed: int = 0) -> SegformerForSemanticSegmentation:
    config = SegformerConfig(
        num_labels=num_labels,
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SegformerForSemanticSegmentation(config).eval()


def tiny_processor():
    return image_processor_class()(size={"height": 64, "width": 64})


def sample_images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (25, 50), dtype=np.uint8)),  # grayscale
        Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)),  # RGBA
    ]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def saved(tmp_path):
    model, processor = tiny_model(), tiny_processor()
    checkpoint = save_checkpoint(model, processor, tmp_path / "ckpt", metadata={"run": "test"})
    return model, processor, checkpoint, tmp_path / "ckpt"


def test_save_writes_safetensors_configs_and_metadata(saved):
    _, _, checkpoint, directory = saved
    names = {p.name for p in directory.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    metadata = checkpoint.get_metadata()
    assert metadata["num_labels"] == 5 and metadata["run"] == "test"
    assert metadata["model_class"] == "SegformerForSemanticSegmentation"


def test_reload_is_exact(saved):
    model, processor, checkpoint, _ = saved
    loaded, loaded_processor = load_checkpoint(checkpoint)
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert loaded_processor.size == processor.size
    images = sample_images()
    for a, b in zip(predict(model, processor, images), predict(loaded, loaded_processor, images)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("form", ["bytes", "struct", "array"])
def test_call_returns_one_mask_row_per_image_in_order(saved, form):
    model, processor, checkpoint, _ = saved
    predictor = SegmentationPredictor.from_checkpoint(checkpoint, device="cpu")
    images = sample_images()
    cells = {
        "bytes": [png_bytes(im) for im in images],
        "struct": [{"bytes": png_bytes(im), "path": None} for im in images],
        "array": [np.asarray(im) for im in images],
    }[form]
    column = np.empty(len(cells), dtype=object)
    column[:] = cells
    ids = np.array(["z", "a", "m"], dtype=object)
    out = predictor({"image_id": ids, "image": column})
    assert set(out) == {"image_id", "mask"}
    assert list(out["image_id"]) == ["z", "a", "m"]
    got = [decode_mask(data) for data in out["mask"]]
    assert [mask.shape for mask in got] == [(40, 30), (25, 50), (32, 32)]
    for mask, wanted in zip(got, predict(model, processor, images)):
        np.testing.assert_array_equal(mask, wanted)


def test_call_names_missing_columns(saved):
    predictor = SegmentationPredictor(*saved[:2], device="cpu")
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['image'\]"):
        predictor({"image_id": np.array(["a"])})


def test_decode_image_rejects_what_it_cannot_read():
    with pytest.raises(TypeError, match="from a int"):
        decode_image(3)
    with pytest.raises(ValueError, match="neither bytes nor a path"):
        decode_image({"bytes": None, "path": None})


def test_missing_directory(tmp_path):
    from ray.train import Checkpoint

    where = tmp_path / "never-saved"
    with pytest.raises(CheckpointError, match=f"{where}.*does not exist"):
        SegmentationPredictor.from_checkpoint(Checkpoint.from_directory(str(where)))


def test_missing_weights_file(saved):
    _, _, checkpoint, directory = saved
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{directory}.*missing model.safetensors"):
        SegmentationPredictor.from_checkpoint(checkpoint)


def test_truncated_weights(saved):
    _, _, checkpoint, directory = saved
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"cannot load the checkpoint at {directory}"):
        SegmentationPredictor.from_checkpoint(checkpoint)


def test_garbled_config(saved):
    _, _, checkpoint, directory = saved
    (directory / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{directory}.*Error"):
        SegmentationPredictor.from_checkpoint(checkpoint)


def test_weights_missing_a_tensor_are_not_silently_randomised(saved):
    _, _, checkpoint, directory = saved
    weights = load_file(directory / "model.safetensors")
    dropped = sorted(k for k in weights if k.endswith("classifier.weight"))
    assert dropped
    for key in dropped:
        del weights[key]
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing keys"):
        SegmentationPredictor.from_checkpoint(checkpoint)


def test_config_that_does_not_fit_the_weights(saved):
    _, _, checkpoint, directory = saved
    config = json.loads((directory / "config.json").read_text())
    config["num_labels"] = 7
    config["id2label"] = {str(i): f"c{i}" for i in range(7)}
    config["label2id"] = {f"c{i}": i for i in range(7)}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=str(directory)):
        SegmentationPredictor.from_checkpoint(checkpoint)


@pytest.fixture
def one_torch_thread():
    """Torch on one thread during the test, as in the actors; as many as before afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_actor_pool_predicts_from_the_checkpoint(saved, one_torch_thread, local_ray):
    """The notebook's pattern: each actor loads the checkpoint itself; results match."""
    ray = local_ray
    model, processor, checkpoint, _ = saved
    images = sample_images()
    ids = ["z", "a", "m"]

    class FromCheckpoint:
        def __init__(self, checkpoint):
            torch.set_num_threads(1)
            self.predictor = SegmentationPredictor.from_checkpoint(checkpoint, device="cpu")

        def __call__(self, batch):
            return self.predictor(batch)

    rows = [{"image_id": i, "image": png_bytes(im)} for i, im in zip(ids, images)]
    out = (
        ray.data.from_items(rows)
        .map_batches(
            FromCheckpoint,
            fn_constructor_args=(checkpoint,),
            batch_size=2,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
            num_cpus=1,
        )
        .take_all()
    )
    want = dict(zip(ids, predict(model, processor, images)))
    assert sorted(r["image_id"] for r in out) == sorted(ids)
    assert_same_maps({row["image_id"]: decode_mask(row["mask"]) for row in out}, want)
