"""Where the ADE20K test images come from online: a hub dataset's Parquet files, or a zip
archive read as a stream. Internal to `utils.data`, whose `load_ade20k_test_split` tries these
sources in order; each reader returns `(file name, original bytes)` pairs, never re-encoded.
"""

from __future__ import annotations

import posixpath
import re
import struct
import urllib.request
import zlib
from collections.abc import Iterable

from .images import IMAGE_SUFFIXES

# The hub's Parquet export of a dataset: `<config>/<split>/0000.parquet`, `0001.parquet`, ...
EXPORT_REVISION = "refs%2Fconvert%2Fparquet"  # refs/convert/parquet, as HfFileSystem paths spell it
ADE20K_CONFIG = "scene_parsing"  # scene_parse_150's export also has `instance_segmentation`
ADE20K_SPLIT = "test"
_EXPORT_FILE = re.compile(r"\d{4}\.parquet")
# A Parquet dataset pushed to the hub: `data/test-00000-of-00002.parquet` (maybe `-<hash>` too)
_PUSHED_FILE = re.compile(ADE20K_SPLIT + r"-\d{5}-of-\d{5}(-[0-9a-f]+)?\.parquet")


def is_archive_url(source: str) -> bool:
    """True for a source given as a URL (a zip archive), False for a hub dataset id."""
    return "://" in source


def read_hub_images(
    repo: str, n: int, fs: object | None = None
) -> tuple[list[tuple[str | None, bytes]], str]:
    """The first `n` images of the test split of hub dataset `repo`, and where they came from.

    Reads the hub's Parquet export (`refs/convert/parquet`), which is how a loading-script
    dataset such as `scene_parse_150` can still be read: `datasets` 4 and later refuse to run
    scripts. Without an export, reads a Parquet dataset pushed to the hub (`data/test-*`).
    Only the needed row groups of the `image` column are fetched.
    """
    if fs is None:
        from huggingface_hub import HfFileSystem, constants

        fs = HfFileSystem(endpoint=constants.ENDPOINT, skip_instance_cache=True)
    files, where = find_test_parquet_files(fs, repo)
    return read_parquet_images(fs, files, n), where


def find_test_parquet_files(fs: object, repo: str) -> tuple[list[str], str]:
    """The Parquet files of `repo`'s test split, in order, found by listing what is there.

    In the export, one config's `test` folder: `scene_parsing` when the dataset has it (the
    export of `scene_parse_150` also has `instance_segmentation`, with other columns), else the
    dataset's only config. Else a pushed dataset's `data/test-*.parquet`. Raises
    `FileNotFoundError` saying what was found instead.
    """
    problems = []
    export = f"datasets/{repo}@{EXPORT_REVISION}"
    configs = _listing(fs, export, "directory")
    if configs is None:
        problems.append("no Parquet export (refs/convert/parquet)")
    elif ADE20K_CONFIG in configs or len(configs) == 1:
        config = ADE20K_CONFIG if ADE20K_CONFIG in configs else configs[0]
        folder = f"{export}/{config}/{ADE20K_SPLIT}"
        names = _listing(fs, folder, "file") or []
        files = [name for name in names if _EXPORT_FILE.fullmatch(name)]
        if files:
            where = f"{repo} ({config}/{ADE20K_SPLIT}, Parquet export)"
            return [f"{folder}/{name}" for name in files], where
        problems.append(f"no {config}/{ADE20K_SPLIT}/0000.parquet in the export")
    else:
        problems.append(f"the export has configs {configs}, none named {ADE20K_CONFIG}")
    pushed = f"datasets/{repo}/data"
    files = [name for name in _listing(fs, pushed, "file") or [] if _PUSHED_FILE.fullmatch(name)]
    if files:
        return [f"{pushed}/{name}" for name in files], f"{repo} (data/{ADE20K_SPLIT}-*.parquet)"
    problems.append(f"no data/{ADE20K_SPLIT}-*.parquet")
    raise FileNotFoundError(f"{repo} has no {ADE20K_SPLIT} split in Parquet: {'; '.join(problems)}")


def _listing(fs: object, folder: str, kind: str) -> list[str] | None:
    """The names of the entries of one `kind` ("file" or "directory") directly in `folder`, or
    None when there is no such folder (or repository, or revision)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        entries = fs.ls(folder, detail=True)
    except (FileNotFoundError, EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return sorted(posixpath.basename(entry["name"]) for entry in entries if entry["type"] == kind)


def read_parquet_images(fs: object, files: list[str], n: int) -> list[tuple[str | None, bytes]]:
    """`(file name, bytes)` of the first `n` images in `files`, row group by row group.

    The `image` column of a Parquet file written by `datasets` holds each image's original file
    bytes and name; they are kept as they are (never decoded and encoded again).
    """
    import pyarrow.parquet as pq

    found: list[tuple[str | None, bytes]] = []
    for path in files:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            if "image" not in parquet.schema_arrow.names:
                raise ValueError(f"{path} has no image column")
            for group in range(parquet.num_row_groups):
                cells = parquet.read_row_group(group, columns=["image"]).column("image")
                for cell in cells.to_pylist():
                    if cell and cell.get("bytes"):
                        found.append((cell.get("path"), cell["bytes"]))
                    if len(found) == n:
                        return found
    return found


def read_archive_images(url: str, n: int, timeout: float) -> tuple[list[tuple[str, bytes]], str]:
    """The first `n` images (by order in the archive) of the zip archive at `url`, and a label.

    The archive is read as a stream, from its start, and only as far as the `n`-th image: the
    ADE20K test archive (`release_test.zip`, about 200 MB, images in `release_test/testing/`)
    costs a few MB for a workshop's worth of images, and the server need not support ranges.
    Hidden files and other members than images (`list.txt`, `readme.txt`) are skipped.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "ray-batch-inference-course"})
    found: list[tuple[str, bytes]] = []
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for name, data in zip_members(response):
            base = posixpath.basename(name)
            if (
                base.startswith(".")
                or "__MACOSX/" in name
                or posixpath.splitext(base)[1].lower() not in IMAGE_SUFFIXES
            ):
                continue
            found.append((name, data))
            if len(found) == n:
                break
    return found, f"the archive {url}"


_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # signature, version, flags, method, time, date,
# crc-32, compressed size, size, name length, extra length
_STORED, _DEFLATED = 0, 8


def zip_members(stream: object) -> Iterable[tuple[str, bytes]]:
    """`(name, contents)` of each file in a zip archive read front to back from `stream`.

    Follows the local headers, so no seeking is needed; stops at the central directory. Handles
    stored and deflated members, sizes given after the data (flag 3), and zip64 sizes; checks
    every member's CRC-32. Raises `ValueError` for a member it cannot read (encrypted, another
    compression method) and `EOFError` for a truncated archive.
    """
    reader = _StreamReader(stream)
    first = True
    while True:
        header = reader.read(_LOCAL_HEADER.size)
        if first and header[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            # for example a captive portal's login page, served in place of the file
            raise ValueError(f"not a zip archive (it starts with {header[:16]!r})")
        first = False
        if header[:4] != b"PK\x03\x04":
            return  # the central directory (or the end): no more members
        if len(header) < _LOCAL_HEADER.size:
            raise EOFError("the archive ends inside a member's header")
        _, _, flags, method, _, _, crc, size_in, _, name_length, extra_length = (
            _LOCAL_HEADER.unpack(header)
        )
        raw_name = reader.read_exact(name_length)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        extra = reader.read_exact(extra_length)
        zip64 = _zip64_sizes(extra)
        if flags & 0x1:
            raise ValueError(f"{name} is encrypted")
        if method not in (_STORED, _DEFLATED):
            raise ValueError(f"{name} uses compression method {method}; only 0 and 8 are read")
        if flags & 0x8:  # the sizes and CRC follow the data, in a data descriptor
            if method == _DEFLATED:
                data = reader.inflate()
            elif name.endswith("/"):
                data = b""  # a folder: nothing stored
            else:
                raise ValueError(f"{name} is stored with its size after the data; cannot stream it")
            first = reader.read_exact(4)
            crc_bytes = reader.read_exact(4) if first == b"PK\x07\x08" else first
            crc = struct.unpack("<I", crc_bytes)[0]
            reader.read_exact(16 if zip64 is not None else 8)
        else:
            if size_in == 0xFFFFFFFF and zip64 is not None:
                size_in = zip64
            packed = reader.read_exact(size_in)
            data = packed if method == _STORED else zlib.decompress(packed, -15)
        if zlib.crc32(data) != crc:
            raise ValueError(f"{name} is corrupt (CRC-32 mismatch)")
        if not name.endswith("/"):
            yield name, data


def _zip64_sizes(extra: bytes) -> int | None:
    """The compressed size from a zip64 extra field, or None when there is none."""
    offset = 0
    while offset + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, offset)
        if tag == 0x0001:
            body = extra[offset + 4 : offset + 4 + length]
            return struct.unpack_from("<Q", body, 8)[0] if len(body) >= 16 else None
        offset += 4 + length
    return None


class _StreamReader:
    """Exact reads, and inflating to the end of a deflate stream, over a file-like stream."""

    def __init__(self, stream: object, chunk: int = 1 << 16):
        self.stream, self.chunk, self.buffer = stream, chunk, b""

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; fewer only at the end of the stream."""
        parts, have = [self.buffer], len(self.buffer)
        while have < size:
            more = self.stream.read(max(self.chunk, size - have))
            if not more:
                break
            parts.append(more)
            have += len(more)
        data = b"".join(parts)
        self.buffer = data[size:]
        return data[:size]

    def read_exact(self, size: int) -> bytes:
        data = self.read(size)
        if len(data) < size:
            raise EOFError("the archive ends inside a member")
        return data

    def inflate(self) -> bytes:
        """Decompress a raw deflate stream that starts here; leave what follows it unread."""
        inflater, parts = zlib.decompressobj(-15), []
        while not inflater.eof:
            data, self.buffer = self.buffer or self.stream.read(self.chunk), b""
            if not data:
                raise EOFError("the archive ends inside a compressed member")
            parts.append(inflater.decompress(data))
        self.buffer = inflater.unused_data
        return b"".join(parts)
