"""Segmentation masks: one file format (PNG), one Parquet layout, one ranking of classes.

A mask is a (height, width) array of class ids, as `predict` returns per image. It is
always stored as a PNG file: lossless, 8-bit grayscale for `uint8` maps (up to 256
classes) and 16-bit above, with its size in its own header, so any image library opens
it. `encode_mask` and `decode_mask` convert; `read_mask` reads one PNG file, as the
production job writes them.

Pipelines that write Parquet (Ray Data's `write_parquet`) put the same PNG bytes in one
row per image:

- `image_id` (string): the image's stable id
- `mask` (binary): the mask as PNG bytes

`masks_to_batch` builds that layout in a `map_batches` function, `write_masks` writes it
from a dict, and `read_masks` reads it back with plain `pyarrow`: pandas, DuckDB or Spark
read the files too, without Ray's extension types. Other columns (for example which
worker made a prediction) may sit alongside; the reader ignores them.

`class_shares` ranks the classes of a mask by area; the job's index and
`visualize_predictions` both use it.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

MASK_COLUMNS = ("image_id", "mask")
MAX_CLASS_ID = 65535  # the largest id a 16-bit PNG holds
# The PNG modes `encode_mask` writes (Pillow opens 16-bit grayscale as "I;16", or "I" in
# older versions) and the dtype each decodes to.
_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.uint16}
# What Pillow raises on a damaged file: truncated, bad chunks, bad compressed data.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, zlib.error)


def encode_mask(mask: np.ndarray) -> bytes:
    """A mask as PNG bytes: lossless, 8-bit grayscale for uint8, 16-bit otherwise.

    Raises `ValueError` for what PNG cannot hold: a shape other than (height, width), an
    empty mask, ids that are not integers or lie outside 0..65535.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must have shape (height, width), not {mask.shape}")
    if mask.size == 0:
        raise ValueError(f"an empty mask (shape {mask.shape}) cannot be stored as PNG")
    if mask.dtype == np.bool_ or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"a mask holds integer class ids, not {mask.dtype} values")
    if mask.dtype != np.uint8:
        low, high = int(mask.min()), int(mask.max())
        if low < 0 or high > MAX_CLASS_ID:
            raise ValueError(
                f"class ids must lie in 0..{MAX_CLASS_ID} to be stored as PNG; "
                f"this mask holds {low}..{high}"
            )
        mask = mask.astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    """PNG bytes made by `encode_mask` back to the mask: uint8 (8-bit) or uint16 (16-bit).

    Raises `ValueError` when `data` is not a complete grayscale PNG.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise ValueError(f"a mask is stored as PNG, this is {image.format}")
            if image.mode not in _MODES:
                raise ValueError(f"a mask is a grayscale PNG, this one has mode {image.mode}")
            pixels = np.asarray(image)  # decodes every pixel: a truncated file fails here
            dtype = _MODES[image.mode]
    except UnidentifiedImageError:
        raise ValueError("not an image file, so not a PNG mask") from None
    except _DECODE_ERRORS as error:
        raise ValueError(f"not a readable PNG ({type(error).__name__}: {error})") from error
    return pixels.astype(dtype)


def read_mask(path: str | Path) -> np.ndarray:
    """One mask file (a PNG written by the job) as a (height, width) array of class ids.

    Raises `FileNotFoundError` when the file is missing and `ValueError`, naming the file,
    when it is not a complete mask (for example a partly written one).
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return decode_mask(data)
    except ValueError as error:
        raise ValueError(f"{path} is not a mask: {error}") from error


def class_shares(mask: np.ndarray) -> list[tuple[int, float]]:
    """`(class_id, share of the pixels)` for each class present in `mask`, largest first.

    Classes of equal area keep the order of their ids, so the ranking is the same on every run.
    """
    mask = np.asarray(mask)
    if mask.size == 0:
        return []
    counts = np.bincount(mask.ravel())
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    return [(int(k), float(counts[k]) / mask.size) for k in order]


def masks_to_batch(image_ids: Iterable[str], maps: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """A batch (dict of numpy columns) holding `maps` in the row layout above.

    This is what a `map_batches` function returns so that `write_parquet` writes the
    layout `read_masks` expects.
    """
    ids = [str(image_id) for image_id in image_ids]
    if len(ids) != len(maps):
        raise ValueError(f"{len(ids)} image ids but {len(maps)} masks")
    encoded = np.empty(len(ids), dtype=object)
    for i, (image_id, mask) in enumerate(zip(ids, maps)):
        try:
            encoded[i] = encode_mask(mask)
        except ValueError as error:
            raise ValueError(f"mask for {image_id!r}: {error}") from error
    return {"image_id": np.array(ids, dtype=object), "mask": encoded}


def write_masks(masks: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write `{image_id: mask}` to the Parquet file `path` (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = masks_to_batch(list(masks), list(masks.values()))
    table = pa.table(
        {
            "image_id": pa.array(list(batch["image_id"]), pa.string()),
            "mask": pa.array(list(batch["mask"]), pa.binary()),
        }
    )
    pq.write_table(table, path)
    return path


def read_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Read masks written in the layout above: `{image_id: (height, width) array}`.

    `path` is one Parquet file or a folder of them (as `Dataset.write_parquet` makes).
    Raises `FileNotFoundError` when there is nothing to read and `ValueError`, naming the
    image, when a row is malformed or an id appears twice.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no masks at {path}: it does not exist")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no masks at {path}: the folder holds no .parquet files")
    masks: dict[str, np.ndarray] = {}
    for file in files:
        table = pq.read_table(file)
        missing = [c for c in MASK_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{file} lacks column(s) {missing}; found {table.column_names}")
        ids, data = (table.column(name).to_pylist() for name in MASK_COLUMNS)
        for image_id, png in zip(ids, data):
            if image_id is None:
                raise ValueError(f"{file} has a row without an image_id")
            if image_id in masks:
                raise ValueError(f"image {image_id!r} appears more than once under {path}")
            if png is None:
                raise ValueError(f"the row of image {image_id!r} in {file} has no mask")
            try:
                masks[image_id] = decode_mask(png)
            except ValueError as error:
                raise ValueError(f"the mask of image {image_id!r} in {file}: {error}") from error
    return masks
