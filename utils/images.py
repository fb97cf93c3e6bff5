"""Images: any PIL image to the 8-bit RGB the model expects, images in batches with their ids,
whether a file is usable, and the files of a folder to try."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ORIENTATION = 0x0112  # the EXIF tag saying how a camera was held
BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as most viewers do
# Names that mark image files where a folder or archive may hold other files too.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MIN_SIDE = 16  # pixels; anything smaller has no scene to segment (a 1x1 "image" is a placeholder)


def convert_image_to_rgb(
    image: Image.Image | Mapping[str, Any],
) -> Image.Image | dict[str, Any]:
    """Return an RGB copy of `image`, as it looks when displayed.

    Accepts a PIL image, or a `datasets` row (a dict with an "image" key), so it
    works both on its own and as `dataset.map(convert_image_to_rgb)`.

    Handles every mode a photo collection contains: EXIF rotation is applied;
    alpha (RGBA, LA, palette with transparency) is composited on white; CMYK,
    palette, 1-bit and grayscale are converted. Deeper grayscale is scaled to 8 bits,
    not clipped at 255: 16-bit by its full range; 32-bit integers (mode I, which is how
    Pillow opens many 16-bit files) as 16-bit data, values above 65535 clipped; floats
    (mode F) as 0..1.
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


def make_batches(image_ids, images, batch_size):
    """(image ids, images) pairs of up to `batch_size` images: each batch carries its ids along."""
    return [
        (tuple(image_ids[i : i + batch_size]), images[i : i + batch_size])
        for i in range(0, len(image_ids), batch_size)
    ]


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer (read as 16-bit data) or 0..1 float grayscale to 0..255."""
    pixels = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = pixels.astype(np.uint16) >> 8
    elif image.mode == "I":
        scaled = np.clip(pixels, 0, 65535).astype(np.uint32) >> 8
    else:  # "F": assume 0..1 floats, as image libraries write them
        scaled = np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


@dataclass
class Inspection:
    """The verdict on one input file: an RGB image (as displayed) or the reason there is none."""

    image: Image.Image | None
    reason: str = ""
    note: str = ""
    height: int | None = None
    width: int | None = None
    source_bytes: int | None = None
    source_mtime_ns: int | None = None

    @property
    def ok(self) -> bool:
        return self.image is not None


def inspect_image(path: Path | str) -> Inspection:
    """Open `path` and return the image as displayed, in RGB, or why it cannot be used.

    Never raises for a bad file: every problem becomes a `reason`. The checks, cheapest
    first: a regular, non-empty, readable file; a format Pillow recognises; a size within
    Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, checked from the header,
    before any pixel is decoded) and at least `MIN_SIDE` pixels a side; pixel data that
    decodes completely (a truncated or corrupt file fails here). Accepted images are
    converted with `convert_image_to_rgb` (EXIF rotation, 16-bit, CMYK, transparency);
    multi-frame files (animated GIF) give their first frame, and the `note` says so.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except PermissionError:
        return Inspection(None, "permission denied (cannot stat the file)")
    except FileNotFoundError:
        return Inspection(None, "file not found (removed during the run, or a broken link)")
    except OSError as error:
        return Inspection(None, f"cannot read the file ({error.strerror or error})")
    signature = {"source_bytes": info.st_size, "source_mtime_ns": info.st_mtime_ns}
    if not stat.S_ISREG(info.st_mode):
        return Inspection(None, "not a regular file", **signature)
    if info.st_size == 0:
        return Inspection(None, "empty file (0 bytes)", **signature)
    try:
        with warnings.catch_warnings():
            # Between MAX_IMAGE_PIXELS and twice that Pillow only warns (above, it raises):
            # the size check in `_inspect_open_image` rejects those before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open(path, "rb") as file, Image.open(file) as image:
                return _inspect_open_image(image, signature)
    except PermissionError:
        return Inspection(None, "permission denied (the file is not readable)", **signature)
    except Image.DecompressionBombError as error:
        return Inspection(
            None,
            f"too large to decode safely, not decoded: {error} (Pillow's decompression-bomb limit)",
            **signature,
        )
    except UnidentifiedImageError:
        return Inspection(
            None, "not an image (Pillow does not recognise the file format)", **signature
        )
    except Exception as error:  # noqa: BLE001 - every decoder failure is a rejection reason
        return Inspection(
            None, f"corrupt or truncated image data ({type(error).__name__}: {error})", **signature
        )


def _inspect_open_image(image: Image.Image, signature: dict[str, int]) -> Inspection:
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return Inspection(
            None,
            f"too large to decode safely, not decoded: {width}x{height} = "
            f"{width * height:,} pixels, above Pillow's decompression-bomb "
            f"limit of {limit:,}",
            height=height,
            width=width,
            **signature,
        )
    if min(width, height) < MIN_SIDE:
        return Inspection(
            None,
            f"too small: {width}x{height} pixels (at least {MIN_SIDE}x{MIN_SIDE} needed)",
            height=height,
            width=width,
            **signature,
        )
    notes = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        image.seek(0)
        notes.append(f"{image.format} with {frames} frames: segmented the first frame only")
    image.load()  # decodes every pixel: truncated or corrupt data fails here
    orientation = image.getexif().get(ORIENTATION, 1)
    if orientation != 1:
        notes.append(
            f"EXIF orientation {orientation} applied: the mask matches the image as displayed"
        )
    if image.mode != "RGB":
        notes.append(f"converted from mode {image.mode} to RGB")
    rgb = convert_image_to_rgb(image)
    if rgb is image:
        rgb = image.copy()  # detach it from the file, which is closed on return
    return Inspection(rgb, "", "; ".join(notes), height=rgb.height, width=rgb.width, **signature)


def printable_id(image_id: str) -> str:
    """`image_id` with undecodable bytes escaped, so it can be printed and stored."""
    return os.fsencode(image_id).decode("utf-8", "backslashreplace")


def list_files(
    source: Path | str, exclude: Iterable[Path] = ()
) -> tuple[list[tuple[str, Path]], int]:
    """Every file under `source` (recursively, sorted) as `(image_id, path)`, and the number
    of hidden entries skipped. Bytes of a file name that are not UTF-8 are escaped in its id.

    Every file is an input, whatever its name: a photo named `.txt` is still segmented and a
    text file named `.jpg` is rejected, with its reason. Hidden files and folders (`.name`,
    such as `.DS_Store` or `.ipynb_checkpoints`) are skipped and counted, and so are the
    folders in `exclude` (the job's own output folder when it lies inside `source`).
    """
    source = Path(source)
    excluded = {Path(p).resolve() for p in exclude}
    inputs: list[tuple[str, Path]] = []
    hidden = 0
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        kept = []
        for name in sorted(dirs):
            if name.startswith("."):
                hidden += 1
            elif (here / name).resolve() not in excluded:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith("."):
                hidden += 1
                continue
            path = here / name
            inputs.append((printable_id(path.relative_to(source).as_posix()), path))
    inputs.sort(key=lambda item: item[0])
    return inputs, hidden
