"""Files for the batch-segmentation job (`utils.segment`): inputs, checks, masks, the index.

Nothing here needs Ray, so each piece can be tested (and reused) on its own:

- `find_inputs`: every file under a folder, with a stable id (its path relative to the folder)
- `inspect_image`: decide, cheaply and without ever raising, whether a file is a usable image;
  return it as displayed (EXIF rotation applied, any mode converted to RGB) or the reason it is not
- `write_atomic`: write a file so that it is either complete or absent, never half-written
- `encode_mask` / `read_mask`: class-id maps as lossless PNG
- `INDEX_SCHEMA`, `rows_to_table`, `read_rows`: the Parquet index, one row per input file
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from .images import ORIENTATION, convert_image_to_rgb

MIN_SIDE = 16  # pixels; anything smaller has no scene to segment (a 1x1 "image" is a placeholder)
TOP_K = 3  # how many classes the index lists per image, largest first
TMP_MARK = ".tmp-"  # temporary files are named ".<name>.tmp-<pid>" next to their target

OK, REJECTED = "ok", "rejected"

INDEX_SCHEMA = pa.schema([
    ("image_id", pa.string()),         # path relative to SOURCE, with "/" separators
    ("source_path", pa.string()),      # absolute path of the input file
    ("status", pa.string()),           # "ok" or "rejected"
    ("reason", pa.string()),           # why it was rejected ("" when ok)
    ("note", pa.string()),             # what was done to an accepted image, e.g. "animated GIF..."
    ("height", pa.int32()),            # of the image as displayed = of the mask (null if unknown)
    ("width", pa.int32()),
    ("top_classes", pa.list_(pa.string())),   # the TOP_K largest classes, largest first
    ("top_shares", pa.list_(pa.float32())),   # their share of the pixels
    ("mask_path", pa.string()),        # relative to the output folder (null when rejected)
    ("source_bytes", pa.int64()),      # size and modification time of the input when it was
    ("source_mtime_ns", pa.int64()),   # processed: a changed file is processed again on resume
])


# --- inputs -------------------------------------------------------------------------------


def find_inputs(source: Path, exclude: Iterable[Path] = ()) -> tuple[list[tuple[str, Path]], int]:
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


def printable_id(image_id: str) -> str:
    """`image_id` with undecodable bytes escaped, so it can be printed and stored."""
    return os.fsencode(image_id).decode("utf-8", "backslashreplace")


def mask_relpath(image_id: str) -> str:
    """Where the mask of `image_id` goes, relative to the output folder.

    The full source name is kept and `.png` appended (`a/b.jpg` -> `masks/a/b.jpg.png`),
    so `b.jpg` and `b.png` in one folder cannot overwrite each other's mask.
    """
    return f"masks/{image_id}.png"


# --- checking and reading one image ---------------------------------------------------------


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


# Rejections that depend on access rather than on the file's content: the next run tries again.
RETRIED_REJECTIONS = ("permission denied", "file not found", "cannot read the file")


def file_signature(path: Path) -> tuple[int | None, int | None]:
    """`(size in bytes, modification time in ns)` of `path`, or `(None, None)`."""
    try:
        info = os.stat(path)
    except OSError:
        return None, None
    return info.st_size, info.st_mtime_ns


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
        return Inspection(None, f"too large to decode safely, not decoded: {error} "
                                "(Pillow's decompression-bomb limit)", **signature)
    except UnidentifiedImageError:
        return Inspection(None, "not an image (Pillow does not recognise the file format)",
                          **signature)
    except Exception as error:  # noqa: BLE001 - every decoder failure is a rejection reason
        return Inspection(None, f"corrupt or truncated image data ({type(error).__name__}: "
                                f"{error})", **signature)


def _inspect_open_image(image: Image.Image, signature: dict[str, int]) -> Inspection:
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return Inspection(None, f"too large to decode safely, not decoded: {width}x{height} = "
                                f"{width * height:,} pixels, above Pillow's decompression-bomb "
                                f"limit of {limit:,}", height=height, width=width,
                          **signature)
    if min(width, height) < MIN_SIDE:
        return Inspection(None, f"too small: {width}x{height} pixels (at least "
                                f"{MIN_SIDE}x{MIN_SIDE} needed)", height=height, width=width,
                          **signature)
    notes = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        image.seek(0)
        notes.append(f"{image.format} with {frames} frames: segmented the first frame only")
    image.load()  # decodes every pixel: truncated or corrupt data fails here
    orientation = image.getexif().get(ORIENTATION, 1)
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied: the mask matches the image "
                     "as displayed")
    if image.mode != "RGB":
        notes.append(f"converted from mode {image.mode} to RGB")
    rgb = convert_image_to_rgb(image)
    if rgb is image:
        rgb = image.copy()  # detach it from the file, which is closed on return
    return Inspection(rgb, "", "; ".join(notes), height=rgb.height, width=rgb.width,
                      **signature)


# --- writing files safely -------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` so that `path` is either absent or complete, never partial.

    The bytes go to a temporary file beside it (same folder, so same file system), are
    flushed to disk, and then `os.replace` swaps the name in one step. An interruption at
    any moment leaves the old file (or none) and at most a temporary file, which this
    function removes on the way out and `remove_temporary_files` removes after a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove_temporary_files(folder: Path) -> int:
    """Delete temporary files a killed run left under `folder`; return how many."""
    removed = 0
    for path in Path(folder).rglob(f".*{TMP_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# --- masks ------------------------------------------------------------------------------------


def encode_mask(mask: np.ndarray) -> bytes:
    """A class-id map as PNG bytes: lossless, 8-bit grayscale (16-bit above 256 classes)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (height, width), not {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 65535:
            raise ValueError("class ids must lie in 0..65535 to be stored as PNG")
        mask = mask.astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


def read_mask(path: Path | str) -> np.ndarray:
    """A mask written by the job, back as a (height, width) array of class ids."""
    with Image.open(path) as image:
        return np.asarray(image).copy()


def top_classes(mask: np.ndarray, id2label: Mapping[int, str],
                k: int = TOP_K) -> tuple[list[str], list[float]]:
    """Names and pixel shares of the `k` largest classes in `mask`, largest first."""
    counts = np.bincount(np.asarray(mask).ravel())
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")][:k]
    names = [str(id2label.get(int(c), f"class {int(c)}")).strip() for c in order]
    return names, [round(float(counts[c]) / mask.size, 4) for c in order]


# --- the index --------------------------------------------------------------------------------


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Index rows (dicts with the `INDEX_SCHEMA` columns) as an Arrow table."""
    rows = list(rows)
    return pa.table({field.name: pa.array([row.get(field.name) for row in rows], field.type)
                     for field in INDEX_SCHEMA}, schema=INDEX_SCHEMA)


def table_bytes(table: pa.Table) -> bytes:
    """`table` as the bytes of a Parquet file (to be written with `write_atomic`)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one index file (the final index or a shard) as dicts."""
    table = pq.read_table(path)
    missing = [name for name in INDEX_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not an index written by this job: it lacks {missing}")
    return table.select(INDEX_SCHEMA.names).to_pylist()
