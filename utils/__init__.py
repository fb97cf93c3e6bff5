"""Helpers for the course "Scalable Batch Inference with Ray".

The notebooks import these modules; each does one job:

- `config`: the settings, read from the environment in one place
- `data`, `images`: test images (ADE20K, your folder, or bundled photos), checked and in RGB
- `model`, `inference`: load SegFormer; `predict` images to one class-id map each
- `masks`: store and read maps (PNG, alone or in Parquet), rank the classes in a map
- `check`, `timing`, `visualisation`: check cells, measurements, plots
- `cluster`, `predictor`, `labels`: what Ray workers need, the checkpoint predictor, ADE20K names

The commands (production job, benchmark, workshop check, prefetch) live in `utils.tools`;
modules whose names start with `_` are internals. The Ray code is in the notebooks.
"""

from .check import assert_same_maps
from .config import CourseConfig, get_config
from .data import get_image_indices, load_test_images
from .images import convert_image_to_rgb
from .inference import predict
from .labels import ade20k_palette, get_labels
from .model import OFFLINE_BANNER, is_offline_model, load_model, offline_model, pick_device
from .visualisation import display_example_images, visualize_predictions

__all__ = [
    "OFFLINE_BANNER",
    "CourseConfig",
    "assert_same_maps",
    "ade20k_palette",
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
    "visualize_predictions",
]
