"""Plots: example images and prediction overlays, in ADE20K's own colours."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from .data import get_image_indices
from .images import convert_image_to_rgb
from .labels import ade20k_palette, get_labels
from .masks import class_shares


def colorize(segmentation_map: np.ndarray) -> np.ndarray:
    """RGB picture of a class-id map: class k is painted in ADE20K's colour for class k."""
    palette = ade20k_palette()
    if segmentation_map.size and int(segmentation_map.max()) >= len(palette):
        raise ValueError(f"class id {int(segmentation_map.max())} has no ADE20K colour")
    return palette[segmentation_map]


def overlay(image: Image.Image, segmentation_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised map over the image (any PIL mode), as an (H, W, 3) uint8 array."""
    rgb = np.asarray(convert_image_to_rgb(image), dtype=np.float32)
    if rgb.shape[:2] != segmentation_map.shape:
        raise ValueError(
            f"map of shape {segmentation_map.shape} does not fit an image of shape {rgb.shape[:2]}"
        )
    blended = (1 - alpha) * rgb + alpha * colorize(segmentation_map).astype(np.float32)
    return np.round(blended).astype(np.uint8)


def display_example_images(
    dataset, n: int = 6, seed: int | None = None, columns: int = 3
) -> Figure:
    """Show `n` images of a `datasets.Dataset` (drawn with `get_image_indices`) with their ids."""
    indices = get_image_indices(dataset, n, seed=seed)
    rows = -(-n // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, indices):
        row = dataset[index]
        image = row["image"]
        ax.imshow(convert_image_to_rgb(image))
        ax.set_title(f"{row['image_id']}\n{image.width}x{image.height} {image.mode}", fontsize=9)
    figure.tight_layout()
    return figure


def visualize_predictions(
    image: Image.Image,
    segmentation_map: np.ndarray,
    alpha: float = 0.5,
    max_legend: int = 10,
    title: str | None = None,
) -> Figure:
    """Show an image beside its predicted classes, with a legend of the largest classes present.

    `segmentation_map` is one (height, width) class-id map, as `predict` returns per image.
    """
    id2label, _ = get_labels()
    palette = ade20k_palette()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    left.imshow(convert_image_to_rgb(image))
    left.set_title(title or "image")
    right.imshow(overlay(image, segmentation_map, alpha))
    right.set_title("predicted classes")
    for ax in (left, right):
        ax.axis("off")
    present = class_shares(segmentation_map)
    handles = [
        Patch(color=palette[k] / 255, label=f"{id2label[k].strip()} ({share:.0%})")
        for k, share in present[:max_legend]
    ]
    if len(present) > max_legend:
        handles.append(Patch(color="white", label=f"+ {len(present) - max_legend} more classes"))
    right.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    figure.tight_layout()
    return figure


def show_grid(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4) -> Figure:
    """Show arrays (for example several overlays) in a grid with titles."""
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, text in zip(axes.flat, images, titles):
        ax.imshow(picture)
        ax.set_title(text, fontsize=8)
    figure.tight_layout()
    return figure
