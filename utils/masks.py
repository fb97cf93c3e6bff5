"""Segmentation masks in Parquet: one row per image, readable by any Parquet tool.

Row layout (the columns a batch job writes and `read_masks` reads back):

- `image_id` (string): the image's stable id
- `height`, `width` (int32): the mask's shape, which is the image's size
- `mask` (binary): the class-id map's raw bytes, row-major, one byte per pixel
  (uint8; 2 or 4 bytes per pixel for models with more than 256 classes)

Masks are stored as plain bytes plus their shape, not as a Ray tensor column, so
pandas, DuckDB, Spark or `pyarrow` can read the files without Ray's extension
types; Parquet's column compression keeps them small. Other columns (for example
which worker made a prediction) may sit alongside; the reader ignores them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MASK_COLUMNS = ("image_id", "height", "width", "mask")
# How a stored mask's bytes per pixel map back to a dtype.
_DTYPES = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.int32)}
_SUPPORTED = ", ".join(str(d) for d in _DTYPES.values())


def masks_to_batch(image_ids: Iterable[str], maps: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """A batch (dict of numpy columns) holding `maps` in the row layout above.

    This is what a `map_batches` function returns so that `write_parquet` writes the
    layout `read_masks` expects.
    """
    ids = [str(image_id) for image_id in image_ids]
    if len(ids) != len(maps):
        raise ValueError(f"{len(ids)} image ids but {len(maps)} masks")
    encoded = [_encode(image_id, mask) for image_id, mask in zip(ids, maps)]
    mask_bytes = np.empty(len(encoded), dtype=object)
    mask_bytes[:] = [data for data, _ in encoded]
    return {
        "image_id": np.array(ids, dtype=object),
        "height": np.array([shape[0] for _, shape in encoded], dtype=np.int32),
        "width": np.array([shape[1] for _, shape in encoded], dtype=np.int32),
        "mask": mask_bytes,
    }


def _encode(image_id: str, mask: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask for {image_id!r} has shape {mask.shape}; expected (height, width)")
    if mask.dtype not in _DTYPES.values():
        raise ValueError(f"mask for {image_id!r} has dtype {mask.dtype}; supported: {_SUPPORTED}")
    return np.ascontiguousarray(mask).tobytes(), mask.shape


def write_masks(masks: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write `{image_id: mask}` to the Parquet file `path` (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = masks_to_batch(list(masks), list(masks.values()))
    table = pa.table({
        "image_id": pa.array(list(batch["image_id"]), pa.string()),
        "height": pa.array(batch["height"], pa.int32()),
        "width": pa.array(batch["width"], pa.int32()),
        "mask": pa.array(list(batch["mask"]), pa.binary()),
    })
    pq.write_table(table, path)
    return path


def read_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Read masks written in the layout above: `{image_id: (height, width) array}`.

    `path` is one Parquet file or a folder of them (as `Dataset.write_parquet` makes).
    Raises `FileNotFoundError` when there is nothing to read and `ValueError`, naming
    the image, when a row is malformed or an id appears twice.
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
        columns = {name: table.column(name).to_pylist() for name in MASK_COLUMNS}
        for image_id, height, width, data in zip(*columns.values()):
            if image_id in masks:
                raise ValueError(f"image {image_id!r} appears more than once under {path}")
            masks[image_id] = decode_mask(image_id, height, width, data)
    return masks


def decode_mask(image_id: str, height: int, width: int, data: bytes) -> np.ndarray:
    """One stored row back to its (height, width) mask; the dtype follows from the size."""
    if data is None or height is None or width is None or height < 1 or width < 1:
        raise ValueError(f"row for {image_id!r} is incomplete (height={height}, width={width})")
    pixels = height * width
    if len(data) % pixels or len(data) // pixels not in _DTYPES:
        raise ValueError(f"mask of {image_id!r} has {len(data)} bytes, which does not fit "
                         f"{height}x{width} pixels of {_SUPPORTED}")
    dtype = _DTYPES[len(data) // pixels]
    return np.frombuffer(data, dtype=dtype).reshape(height, width).copy()
