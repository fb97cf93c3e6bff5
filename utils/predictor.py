"""A predictor built from a directory checkpoint: today's form of Ray AIR's `Predictor`.

`save_checkpoint` writes the model and its image processor with `save_pretrained`
(safetensors weights, JSON configs) into a directory and wraps it in a
`ray.train.Checkpoint`. `SegmentationPredictor.from_checkpoint` loads them back (in
any process that can read the path) and `__call__` turns a Ray Data batch of images
into a batch of masks in the Parquet layout of `utils.masks`. `batch_predict` runs a
predictor class over a Ray Data dataset on an actor pool, each actor building its predictor
from the checkpoint once (`PredictFromCheckpoint`): both are written out in the checkpoint
predictor notebook and kept here for the benchmark.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from PIL import Image
from ray.train import Checkpoint
from transformers import SegformerForSemanticSegmentation

from .cluster import actor_cpus
from .inference import predict
from .masks import masks_to_batch
from .model import image_processor_class, pick_device
from .timing import worker_name

MODEL_CONFIG = "config.json"
PROCESSOR_CONFIG = "preprocessor_config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # single file or sharded


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names its path and the reason."""


def save_checkpoint(
    model: torch.nn.Module,
    image_processor: Any,
    directory: str | Path,
    metadata: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Save `model` and `image_processor` into `directory` and return it as a Checkpoint.

    Weights go to `model.safetensors` (no pickle, so loading runs no code), the model
    and processor configs to JSON. `metadata` (JSON-serialisable) is stored with the
    checkpoint and comes back from `checkpoint.get_metadata()`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    checkpoint = Checkpoint.from_directory(str(directory))
    checkpoint.set_metadata(
        {
            "model_class": type(model).__name__,
            "processor_class": type(image_processor).__name__,
            "num_labels": int(model.config.num_labels),
            "source": str(getattr(model.config, "name_or_path", "")),
            **dict(metadata or {}),
        }
    )
    return checkpoint


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why `directory` is not a loadable model checkpoint (first reason found), or None."""
    directory = Path(directory)
    if not directory.exists():
        return "the directory does not exist"
    if not directory.is_dir():
        return "it is a file, not a directory"
    missing = [
        name for name in (MODEL_CONFIG, PROCESSOR_CONFIG) if not (directory / name).is_file()
    ]
    if not any((directory / name).is_file() for name in WEIGHTS):
        missing.append(WEIGHTS[0])
    if missing:
        present = sorted(p.name for p in directory.iterdir())
        return f"missing {', '.join(missing)} (the directory holds {present or 'nothing'})"
    return None


def load_checkpoint(checkpoint: Checkpoint) -> tuple[SegformerForSemanticSegmentation, Any]:
    """Load `(model, image_processor)` from `checkpoint`, on the CPU, in eval mode.

    Raises `CheckpointError` naming the checkpoint's path when files are missing,
    unreadable or corrupt, or when the weights do not match the model: transformers
    would otherwise fill missing weights with random values and only log a warning.
    """
    where = f"{checkpoint.path} ({type(checkpoint.filesystem).__name__})"
    try:
        with checkpoint.as_directory() as directory:  # a local checkpoint is used in place
            problem = checkpoint_problem(directory)
            if problem is not None:
                raise CheckpointError(f"cannot load the checkpoint at {where}: {problem}")
            try:
                model, info = SegformerForSemanticSegmentation.from_pretrained(
                    directory,
                    use_safetensors=True,
                    local_files_only=True,
                    trust_remote_code=False,
                    output_loading_info=True,
                )
                processor = image_processor_class().from_pretrained(
                    directory, local_files_only=True, trust_remote_code=False
                )
            except Exception as error:  # every loader failure gets the path
                raise CheckpointError(
                    f"cannot load the checkpoint at {where}: {type(error).__name__}: {error}"
                ) from error
    except CheckpointError:
        raise
    except Exception as error:  # e.g. a remote checkpoint that cannot be fetched
        raise CheckpointError(
            f"cannot read the checkpoint at {where}: {type(error).__name__}: {error}"
        ) from error
    mismatches = {
        key: list(info.get(key) or [])
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    mismatches = {key: value for key, value in mismatches.items() if value}
    if mismatches:
        summary = "; ".join(
            f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in mismatches.items()
        )
        raise CheckpointError(
            f"the weights in the checkpoint at {where} do not fit {type(model).__name__}: {summary}"
        )
    return model.eval(), processor


def decode_image(cell: Any) -> Image.Image:
    """One value of a Ray Data image column as a PIL image.

    Accepts encoded file bytes (`read_parquet` of an image-bytes column), a
    `{"bytes": ..., "path": ...}` struct (Hugging Face Parquet exports,
    `from_huggingface`), a numpy array (`read_images`) or a PIL image.
    """
    if isinstance(cell, Image.Image):
        return cell
    if isinstance(cell, Mapping):
        if cell.get("bytes") is not None:
            return decode_image(cell["bytes"])
        if cell.get("path"):
            return Image.open(cell["path"])
        raise ValueError("image struct has neither bytes nor a path")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(cell)))
    if isinstance(cell, np.ndarray):
        return Image.fromarray(cell)
    raise TypeError(f"cannot read an image from a {type(cell).__name__}")


class SegmentationPredictor:
    """Images in, masks out, for a model loaded from a checkpoint.

    `__call__` takes a Ray Data batch `{"image_id": ..., "image": ...}` (any image
    form `decode_image` accepts) and returns `{"image_id", "mask"}` columns, each mask as
    PNG bytes (see `utils.masks`), one row per input image, in input order.
    """

    def __init__(
        self, model: torch.nn.Module, image_processor: Any, device: torch.device | str | None = None
    ) -> None:
        self.device = torch.device(device) if device is not None else pick_device()
        self.model = model.to(self.device).eval()
        self.image_processor = image_processor

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: torch.device | str | None = None
    ) -> SegmentationPredictor:
        """Build a predictor from a checkpoint made by `save_checkpoint`."""
        model, image_processor = load_checkpoint(checkpoint)
        return cls(model, image_processor, device=device)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [column for column in ("image_id", "image") if column not in batch]
        if missing:
            raise KeyError(f"batch lacks column(s) {missing}; it has {list(batch)}")
        images = [decode_image(cell) for cell in batch["image"]]
        maps = predict(self.model, self.image_processor, images, device=self.device)
        return masks_to_batch(batch["image_id"], maps)


class PredictFromCheckpoint:
    def __init__(self, checkpoint, predictor_cls, threads):
        """Once per actor: set torch's threads, build the predictor from the checkpoint."""
        torch.set_num_threads(threads)
        self.predictor = predictor_cls.from_checkpoint(checkpoint)
        self.worker = worker_name()

    def __call__(self, batch):
        """Per batch: the predictor's columns, plus `worker`, `start` and `end` for each row."""
        start = time.time()
        out = self.predictor(batch)
        n = len(out["image_id"])
        out.update(
            worker=np.full(n, self.worker), start=np.full(n, start), end=np.full(n, time.time())
        )
        return out


def batch_predict(ds, checkpoint, predictor_cls, *, batch_size, actors=2, threads=1, num_gpus=0):
    """`ds` mapped to masks by `actors` actors, each building `predictor_cls` from `checkpoint`."""
    return ds.map_batches(
        PredictFromCheckpoint,
        fn_constructor_args=(checkpoint, predictor_cls, threads),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus(actors, threads),
        num_gpus=num_gpus,
    )
