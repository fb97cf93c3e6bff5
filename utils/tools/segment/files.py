"""The production job's files and shared vocabulary; nothing here needs Ray.

- `UsageError`, `say`, `OK` / `REJECTED`: how the job's parts report to the user
- `write_atomic`: write a file so that it is either complete or absent, never half-written
- `INDEX_SCHEMA`, `rows_to_table`, `read_rows`, `ResultWriter`: the Parquet index, one row
  per input file, saved in shards as results arrive

Inputs are listed by `utils.images.list_files` and checked by `utils.images.inspect_image`, as
the notebooks' own images are.

The masks themselves are PNG files made and read by `utils.masks`, like every mask in the course.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TOP_K = 3  # how many classes the index lists per image, largest first (masks.class_shares)
TMP_MARK = ".tmp-"  # temporary files are named ".<name>.tmp-<pid>" next to their target

OK, REJECTED = "ok", "rejected"
INDEX_FILE = "index.parquet"
PARTS_DIR = ".index-parts"  # index shards of runs not yet consolidated
FLUSH_ROWS, FLUSH_SECONDS = 64, 5.0  # save an index shard this often


class UsageError(Exception):
    """A problem with the command line, its folders or the cluster, found before any work."""


def say(message: str) -> None:
    """Print one of the job's own lines on stdout (progress and errors go to stderr)."""
    print(f"segment: {message}", flush=True)


INDEX_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # path relative to SOURCE, with "/" separators
        ("source_path", pa.string()),  # absolute path of the input file
        ("status", pa.string()),  # "ok" or "rejected"
        ("reason", pa.string()),  # why it was rejected ("" when ok)
        ("note", pa.string()),  # what was done to an accepted image, e.g. "animated GIF..."
        ("height", pa.int32()),  # of the image as displayed = of the mask (null if unknown)
        ("width", pa.int32()),
        ("top_classes", pa.list_(pa.string())),  # the TOP_K largest classes, largest first
        ("top_shares", pa.list_(pa.float32())),  # their share of the pixels
        ("mask_path", pa.string()),  # relative to the output folder (null when rejected)
        ("source_bytes", pa.int64()),  # size and modification time of the input when it was
        ("source_mtime_ns", pa.int64()),  # processed: a changed file is processed again on resume
    ]
)


# --- inputs -------------------------------------------------------------------------------


def mask_relpath(image_id: str) -> str:
    """Where the mask of `image_id` goes, relative to the output folder.

    The full source name is kept and `.png` appended (`a/b.jpg` -> `masks/a/b.jpg.png`),
    so `b.jpg` and `b.png` in one folder cannot overwrite each other's mask.
    """
    return f"masks/{image_id}.png"


# Rejections that depend on access rather than on the file's content: the next run tries again.
RETRIED_REJECTIONS = ("permission denied", "file not found", "cannot read the file")


def file_signature(path: Path) -> tuple[int | None, int | None]:
    """`(size in bytes, modification time in ns)` of `path`, or `(None, None)`."""
    try:
        info = os.stat(path)
    except OSError:
        return None, None
    return info.st_size, info.st_mtime_ns


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


# --- the index --------------------------------------------------------------------------------


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Index rows (dicts with the `INDEX_SCHEMA` columns) as an Arrow table."""
    rows = list(rows)
    return pa.table(
        {
            field.name: pa.array([row.get(field.name) for row in rows], field.type)
            for field in INDEX_SCHEMA
        },
        schema=INDEX_SCHEMA,
    )


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


class ResultWriter:
    """Saves index rows as they arrive, in small shards, so an interrupted run can resume.

    A row reaches it only after its mask is complete on disk (the model actors write masks).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pending: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.run_tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.shards = 0

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        if len(self.pending) >= FLUSH_ROWS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            name = f"part-{self.run_tag}-{self.shards:05d}.parquet"
            table = rows_to_table(self.pending)
            write_atomic(self.out / PARTS_DIR / name, table_bytes(table))
            self.shards += 1
            self.pending = []
        self.last_flush = time.monotonic()
