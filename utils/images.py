"""Turning any PIL image into the 8-bit RGB image the model expects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ORIENTATION = 0x0112  # the EXIF tag saying how a camera was held
BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as most viewers do


def convert_image_to_rgb(
    image: Image.Image | Mapping[str, Any],
) -> Image.Image | dict[str, Any]:
    """Return an RGB copy of `image`, as it looks when displayed.

    Accepts a PIL image, or a `datasets` row (a dict with an "image" key), so it
    works both on its own and as `dataset.map(convert_image_to_rgb)`.

    Handles every mode a photo collection contains: EXIF rotation is applied;
    alpha (RGBA, LA, palette with transparency) is composited on white; CMYK,
    palette, 1-bit and grayscale are converted; 16- and 32-bit grayscale are scaled
    to 8 bits by their full range instead of being clipped.
    """
    if isinstance(image, Mapping):
        return {"image": convert_image_to_rgb(image["image"])}
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a dict with an 'image', not {type(image)!r}")

    if image.getexif().get(ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        image = _to_8bit_gray(image)
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float grayscale image to 0..255 by its type's full range."""
    pixels = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = pixels.astype(np.uint16) >> 8
    elif image.mode == "I":
        scaled = np.clip(pixels, 0, 65535).astype(np.uint32) >> 8
    else:  # "F": assume 0..1 floats, as image libraries write them
        scaled = np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5
    return Image.fromarray(scaled.astype(np.uint8), mode="L")
