"""`predict`: images in, one class-id map per image out, at each image's own size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ._upsample import upsample_argmax
from .images import convert_image_to_rgb

PREDICT_BATCH = 8  # images per forward pass inside `predict`: bounds its working memory


def predict(
    model: torch.nn.Module,
    image_processor,
    images: Sequence[Image.Image],
    device: torch.device | str | None = None,
    batch_size: int = PREDICT_BATCH,
) -> list[np.ndarray]:
    """Segment `images` and return one (height, width) class-id map per image.

    Given the same scores, the maps equal transformers' `post_process_semantic_segmentation`
    with each image's own size as target, pixel for pixel, but post-processing does less
    work (see `upsample_argmax`) and maps are uint8 (150 classes fit), 8x smaller than the
    int64 tensors transformers returns. The forward pass runs torch's default kernels, which
    choose their algorithm by thread count and batch size: two runs may differ in the last
    bit of a score, enough to flip a pixel on a near-tie (`assert_same_maps` allows for
    that). Images of different sizes and modes may share a batch. `device` defaults to the
    model's device.

    A long list is run `batch_size` images at a time: the scores of one forward pass take
    about 140 MB per image on a CPU, so memory stays bounded however many images you pass.
    """
    maps: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        pixel_values, sizes = preprocess(image_processor, images[start : start + batch_size])
        maps += predict_preprocessed(model, pixel_values, sizes, device)
    return maps


def preprocess(
    image_processor, images: Sequence[Image.Image]
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The model's input for `images` and each image's (height, width) as displayed.

    The first half of `predict`, for a pipeline that prepares images on CPU workers and
    runs the model elsewhere (the production job).
    """
    rgb = [convert_image_to_rgb(image) for image in images]
    if not rgb:
        return torch.empty(0, 3, 1, 1), []
    pixel_values = image_processor(images=rgb, return_tensors="pt")["pixel_values"]
    return pixel_values, [(image.height, image.width) for image in rgb]


def predict_preprocessed(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """The second half of `predict`: one forward pass, then one map per (height, width)."""
    if not len(sizes):
        return []
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = np.uint8 if model.config.num_labels <= 256 else np.int32
    with torch.inference_mode():
        logits = model(pixel_values=pixel_values.to(device)).logits
        return [
            upsample_argmax(logits[i], (height, width)).cpu().numpy().astype(dtype)
            for i, (height, width) in enumerate(sizes)
        ]


def reference_predict(
    model: torch.nn.Module,
    image_processor,
    images: Sequence[Image.Image],
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """The same forward pass, post-processed by transformers itself, for comparison."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rgb = [convert_image_to_rgb(image) for image in images]
    pixel_values = image_processor(images=rgb, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values.to(device))
        maps = image_processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(image.height, image.width) for image in rgb]
        )
    return [m.cpu().numpy() for m in maps]
