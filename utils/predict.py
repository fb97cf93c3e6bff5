"""`predict`: images in, one class-id map per image out, at each image's own size."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.overrides import TorchFunctionMode

from .images import convert_image_to_rgb


def predict(
    model: torch.nn.Module,
    image_processor,
    images: Sequence[Image.Image],
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """Segment `images` and return one (height, width) class-id map per image.

    The maps equal transformers' `post_process_semantic_segmentation` with each
    image's own size as target, pixel for pixel, but post-processing does less work
    (see `upsample_argmax`) and maps are uint8 (150 classes fit), 8x smaller than the
    int64 tensors transformers returns. On the CPU they are also the same whatever the
    thread count or batch split (see `ReproducibleConvolutions`), so a Ray worker and
    a plain loop agree bit for bit. Images of different sizes and modes may share a
    batch. `device` defaults to the model's device.
    """
    if not images:
        return []
    device = torch.device(device) if device is not None else next(model.parameters()).device
    register_unpickled_model(model)
    rgb = [convert_image_to_rgb(image) for image in images]
    pixel_values = image_processor(images=rgb, return_tensors="pt")["pixel_values"]
    dtype = np.uint8 if model.config.num_labels <= 256 else np.int32
    if len(rgb) == 1 and device.type == "cpu":  # see ReproducibleConvolutions
        pixel_values = pixel_values.repeat(2, 1, 1, 1)
    with torch.inference_mode(), ReproducibleConvolutions():
        logits = model(pixel_values=pixel_values.to(device)).logits
        return [
            upsample_argmax(logits[i], (image.height, image.width)).cpu().numpy().astype(dtype)
            for i, image in enumerate(rgb)
        ]


class ReproducibleConvolutions(TorchFunctionMode):
    """Run dense CPU convolutions on PyTorch's own kernels instead of oneDNN's or NNPACK's.

    oneDNN picks its convolution algorithm by thread count and batch size, and PyTorch
    switches to NNPACK from 16 images a batch, so the same image could get scores
    differing in the last bit on a 1-thread Ray worker and in a 2-thread loop, or in
    batches of 8 and of 16, and a pixel on a near-tie could change class. PyTorch's own
    kernels (matrix multiplies) give the same bits for any thread count and any batch of
    two or more images (a single image is therefore predicted as a batch of two), at
    about the same speed. Depthwise convolutions keep oneDNN: they are reproducible already.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
            if groups == 1 and args[0].device.type == "cpu":
                # Only the `enabled` switch: `mkldnn.flags()` also resets TF32 and warns.
                onednn = torch.backends.mkldnn.enabled
                torch.backends.mkldnn.enabled = False
                (nnpack,) = torch.backends.nnpack.set_flags(False)
                try:
                    return func(*args, **kwargs)
                finally:
                    torch.backends.mkldnn.enabled = onednn
                    torch.backends.nnpack.set_flags(nnpack)
        return func(*args, **kwargs)


def register_unpickled_model(model: torch.nn.Module) -> None:
    """Let a model that arrived pickled (through `ray.put` or a task argument) run.

    transformers 5 records which layer outputs each model class can capture in a
    registry filled when a model is constructed. A process that only unpickled a
    model never constructed one, finds no entry, and the forward pass fails with
    "'NoneType' object is not subscriptable". Registering the classes again fixes it.
    """
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # other transformers versions have no such registry
        return
    for module in model.modules():
        if hasattr(module, "_can_record_outputs") and not _CAN_RECORD_REGISTRY.get(module):
            _CAN_RECORD_REGISTRY[module] = module._can_record_outputs


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class of each pixel after bilinear upsampling of `logits` (classes, h, w) to `size`.

    Returns exactly `F.interpolate(logits[None], size, mode="bilinear").argmax(1)[0]`,
    the post-processing transformers does, without upsampling every class channel.

    Why it is exact: an upsampled pixel is a weighted average of the 2x2 low-resolution
    logits around it, so it lies between their minimum and maximum. A class whose
    maximum over every 2x2 window stays below the best class's minimum over that
    window (by a margin far above float rounding) can never win a pixel, so only the
    remaining "contender" classes are upsampled. They are laid out so that torch's
    kernel computes each with the same float operations as in the full tensor
    (`_contender_layout`), and kept in class order, so ties still go to the lowest id.
    """
    padded = F.pad(logits[None], (0, 1, 0, 1), mode="replicate")
    window_max = F.max_pool2d(padded, kernel_size=2, stride=1)[0]
    window_min = -F.max_pool2d(-padded, kernel_size=2, stride=1)[0]
    best_floor = window_min.max(dim=0).values
    margin = 1e-4 * max(1.0, float(logits.abs().max()))
    contenders = (window_max >= best_floor - margin).flatten(1).any(dim=1).nonzero().flatten()
    if contenders.numel() == 1:
        return contenders.expand(*size).clone()
    order = _contender_layout(logits, contenders)
    if order is None:  # no layout known to be bit-exact here: take the plain path
        return _upsample_all(logits, size).argmax(dim=0)
    subset = logits[order][None]
    if _is_channels_last(logits):
        subset = subset.contiguous(memory_format=torch.channels_last)
    upsampled = F.interpolate(subset, size=size, mode="bilinear", align_corners=False)[0]
    return order[upsampled.argmax(dim=0)]


def _upsample_all(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]


def _is_channels_last(logits: torch.Tensor) -> bool:
    return logits.dim() == 3 and logits.shape[0] > 1 and logits.stride(0) == 1


def _contender_layout(logits: torch.Tensor, contenders: torch.Tensor) -> torch.Tensor | None:
    """Channel order for the contender subset that keeps each channel's float arithmetic.

    Planar (NCHW) logits are interpolated plane by plane, so any subset is exact. For
    channels-last logits (SegFormer's on CPU) torch's kernel runs SIMD vectors over the
    channels and a scalar loop over the last `C % lanes`, which can round differently;
    each contender must stay in the same part, so the vector part is padded with
    repeats of its first channel (a repeat after the original never wins a tie).
    """
    if logits.device.type != "cpu" or not _is_channels_last(logits):
        return contenders if logits.device.type == "cpu" else None
    lanes = _simd_lanes()
    if lanes is None:
        return None
    boundary = logits.shape[0] - logits.shape[0] % lanes
    vector, tail = contenders[contenders < boundary], contenders[contenders >= boundary]
    if vector.numel() % lanes:
        if vector.numel() == 0:
            return None
        pad = vector[:1].expand(lanes - vector.numel() % lanes)
        vector = torch.cat([vector, pad])
    return torch.cat([vector, tail])


@cache
def _simd_lanes() -> int | None:
    """How many float channels torch's channels-last bilinear kernel handles per vector here.

    Found by experiment rather than assumed from the CPU's name: the first lane count
    for which contender-style subsets reproduce a full interpolation bit for bit.
    """
    channels = 45  # splits differently for 16, 8 and 4 lanes: 32|13, 40|5, 44|1
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, channels, 9, 11, generator=generator)
    probe = probe.contiguous(memory_format=torch.channels_last)
    full = F.interpolate(probe, size=(29, 31), mode="bilinear", align_corners=False)[0]
    picks = [torch.tensor(p) for p in ([0, 31], [32, 35, 39], [40, 44], [1, 2, 33, 41, 43])]
    for lanes in (16, 8, 4):
        if all(_layout_matches(probe[0], full, p, lanes) for p in picks):
            return lanes
    return None


def _layout_matches(logits: torch.Tensor, full: torch.Tensor, picks: torch.Tensor,
                    lanes: int) -> bool:
    boundary = logits.shape[0] - logits.shape[0] % lanes
    vector, tail = picks[picks < boundary], picks[picks >= boundary]
    if vector.numel() % lanes:
        vector = torch.cat([vector, vector[:1].expand(lanes - vector.numel() % lanes)])
    order = torch.cat([vector, tail])
    subset = logits[order][None].contiguous(memory_format=torch.channels_last)
    upsampled = F.interpolate(subset, size=full.shape[1:], mode="bilinear",
                              align_corners=False)[0]
    return all(torch.equal(upsampled[i], full[c]) for i, c in enumerate(order.tolist()))


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
    if len(rgb) == 1 and device.type == "cpu":
        pixel_values = pixel_values.repeat(2, 1, 1, 1)
    with torch.inference_mode(), ReproducibleConvolutions():
        outputs = model(pixel_values=pixel_values.to(device))
        outputs.logits = outputs.logits[: len(rgb)]
        maps = image_processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(image.height, image.width) for image in rgb]
        )
    return [m.cpu().numpy() for m in maps]
