"""Shared fixtures: the offline model and a few small images of every kind."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from utils.model import image_processor_class, offline_model


@pytest.fixture(scope="session")
def model():
    return offline_model(seed=201)


@pytest.fixture(scope="session")
def image_processor():
    return image_processor_class()()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB picture (gradients plus noise), cheap to make and to predict."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def mixed_images() -> list[Image.Image]:
    """Different sizes and modes in one batch, as a real photo folder has."""
    return [
        photo(96, 64, seed=1),
        photo(50, 120, seed=2).convert("L"),
        photo(130, 77, seed=3).convert("RGBA"),
        photo(64, 64, seed=4).convert("P"),
    ]
