"""Helpers for the course "Scalable Batch Inference with Ray".

The notebooks import these modules; each does one job:

- `config`: the settings, read from the environment in one place
- `data`, `images`: test images (ADE20K, your folder, or bundled photos), checked and in RGB
- `model`, `inference`: load SegFormer; `predict` images to one class-id map each
- `masks`: store and read maps (PNG, alone or in Parquet), rank the classes in a map
- `baseline`: the plain loop's maps and time, measured once per machine and reused
- `check`, `timing`, `visualisation`: check cells and exercises, measurements, plots
- `cluster`, `predictor`, `labels`: what Ray workers need, the checkpoint predictor, ADE20K names
- `workers`: what runs in Ray's workers, as notebooks 02 to 05 teach it, for later notebooks
  and the benchmark

The commands (production job, benchmark, workshop check, prefetch) live in `utils.tools`;
modules whose names start with `_` are internals. The Ray code is in the notebooks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each helper is imported on first use (PEP 562), not with the package: a Ray worker that
# unpickles a function of `utils.inference` then imports torch, not also datasets,
# transformers and matplotlib, and starts seconds sooner.
_HELPERS = {
    "assert_same_maps": "check",
    "run_exercise": "check",
    "CourseConfig": "config",
    "get_config": "config",
    "get_image_indices": "data",
    "load_test_images": "data",
    "convert_image_to_rgb": "images",
    "predict": "inference",
    "ade20k_palette": "labels",
    "get_labels": "labels",
    "OFFLINE_BANNER": "model",
    "is_offline_model": "model",
    "load_model": "model",
    "offline_model": "model",
    "pick_device": "model",
    "display_example_images": "visualisation",
    "visualize_predictions": "visualisation",
}
__all__ = [  # the same names, spelled out for tools that read __all__ without running it
    "OFFLINE_BANNER",
    "CourseConfig",
    "ade20k_palette",
    "assert_same_maps",
    "convert_image_to_rgb",
    "display_example_images",
    "get_config",
    "get_image_indices",
    "get_labels",
    "is_offline_model",
    "load_model",
    "load_test_images",
    "offline_model",
    "pick_device",
    "predict",
    "run_exercise",
    "visualize_predictions",
]

if TYPE_CHECKING:  # what editors and type checkers see
    from .check import assert_same_maps, run_exercise
    from .config import CourseConfig, get_config
    from .data import get_image_indices, load_test_images
    from .images import convert_image_to_rgb
    from .inference import predict
    from .labels import ade20k_palette, get_labels
    from .model import OFFLINE_BANNER, is_offline_model, load_model, offline_model, pick_device
    from .visualisation import display_example_images, visualize_predictions


def __getattr__(name: str) -> Any:
    """Import the module that defines helper `name` and return the helper."""
    if name not in _HELPERS:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HELPERS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HELPERS})
