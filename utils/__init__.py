"""Helpers for the course "Scalable Batch Inference with Ray".

They hide what is not the lesson (loading data and the model, plotting, timing);
the Ray code lives in the open, in the notebooks.
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
