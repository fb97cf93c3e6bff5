"""Helpers the tests import (`from helpers import photo`); fixtures live in conftest.py."""

from __future__ import annotations

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB picture (gradients plus noise), cheap to make and to predict."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def job_maps(images: list[Image.Image], threads: int) -> list[np.ndarray]:
    """What the production job's model actors predict for `images` with the offline model:
    each image alone (the job tests run batches of one) on `threads` torch threads, as each
    actor runs (float sums in another order can flip a near-tie pixel of the random-weight
    model). Torch's thread count is restored afterwards."""
    import torch

    from utils.config import get_config
    from utils.inference import predict
    from utils.model import image_processor_class, offline_model

    model, processor = offline_model(get_config().seed), image_processor_class()()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [predict(model, processor, [image])[0] for image in images]
    finally:
        torch.set_num_threads(before)


def ray_auth_token() -> str:
    """This machine's Ray token, as `ray get-auth-token` prints it: the dashboard asks for it."""
    import subprocess
    import sys
    from pathlib import Path

    ray_command = Path(sys.executable).with_name("ray")  # the `ray` of this environment
    return subprocess.run(
        [ray_command, "get-auth-token"], capture_output=True, text=True, check=True
    ).stdout.strip()
