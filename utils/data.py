"""Test images: from your folder, from the ADE20K test split on the hub, or bundled photos.

`load_test_images()` returns a `datasets.Dataset` with an `image` column (PIL
images, decoded on access) and a stable, unique `image_id` column. Sources, in order:

1. `COURSE_DATA_DIR`, when set: every readable image under it (searched recursively).
2. The ADE20K (SceneParse150) test split: from the local copy `make prefetch` saved, else
   from the first source that serves it (`ade20k_sources`): `COURSE_DATASET` on the hub, then
   `COURSE_DATASET_FALLBACKS` (the original release archive, another hub copy), each image with
   its original bytes.
3. When none of them can (offline, no network, every source failing) and `COURSE_DATASET` is
   the default: the photographs bundled in `assets/images/`, topped up with deterministic
   variants (flips, crops, resizes) when more are asked for. A `COURSE_DATASET` you named
   raises `SourceUnavailableError` instead.
"""

from __future__ import annotations

import io
import posixpath
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageOps

from ._ade20k import is_archive_url, read_archive_images, read_hub_images
from .config import DEFAULT_DATASET, CourseConfig, get_config
from .hub import SourceUnavailableError, hub_unavailable_reason, offline_reason, short_error
from .images import IMAGE_SUFFIXES, inspect_image, list_files

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "images"
FEATURES = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("string")})


def load_test_images(n: int | None = None, config: CourseConfig | None = None) -> datasets.Dataset:
    """Load `n` test images (default `COURSE_NUM_IMAGES`) and say where they came from.

    Raises `SourceUnavailableError` when a `COURSE_DATASET` you named cannot be loaded; only
    the default dataset falls back to the bundled photographs.
    """
    config = config or get_config()
    n = config.num_images if n is None else n
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if config.data_dir is not None:
        return load_image_folder(config.data_dir, n)
    cached = prefetched_images_dir(config)
    if (cached / "dataset_info.json").exists():
        saved = datasets.load_from_disk(str(cached))
        if len(saved) >= n:
            origin = saved.info.description or f"the {config.dataset} test split"
            print(f"Test images: {n} prefetched in {cached}, from {origin}")
            return saved.select(range(n))
    try:
        return load_ade20k_test_split(n, config)
    except SourceUnavailableError as error:
        if config.dataset != DEFAULT_DATASET:
            raise SourceUnavailableError(
                f"COURSE_DATASET={config.dataset} cannot be loaded: {error}"
            ) from None
        print(f"Test images: {error}; using the bundled sample photographs instead.")
    return load_bundled_images(n)


def prefetched_images_dir(config: CourseConfig) -> Path:
    """Where `make prefetch` saves the test images of `config.dataset` for offline use."""
    return config.cache_dir / (config.dataset.replace("/", "__") + "-test")


def load_image_folder(folder: Path | str, n: int | None = None) -> datasets.Dataset:
    """Every usable image under `folder` (sorted by path), ids relative to `folder`.

    Files are listed with `list_files` and checked with `inspect_image`, as the production
    job does: files that cannot be used are reported by name with the reason, not dropped
    silently.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"COURSE_DATA_DIR {folder} is not a folder")
    files, _ = list_files(folder)
    ids, paths, rejected = [], [], 0
    for image_id, path in files:
        if n is not None and len(paths) == n:
            break
        found = inspect_image(path)
        if found.ok:
            ids.append(image_id)
            paths.append(str(path))
        else:
            rejected += 1
            print(f"Rejected {path}: {found.reason}")
    if not paths:
        raise FileNotFoundError(f"no usable images under {folder} ({rejected} rejected)")
    if n is not None and n > len(paths):
        print(f"Asked for {n} images; {folder} has {len(paths)} usable ones: using all of them.")
    print(f"Test images: {len(paths)} from {folder}")
    return datasets.Dataset.from_dict({"image": paths, "image_id": ids}, features=FEATURES)


def ade20k_sources(config: CourseConfig) -> tuple[str, ...]:
    """The sources of the ADE20K test split, in the order they are tried.

    `COURSE_DATASET` first; when it is the default, `COURSE_DATASET_FALLBACKS` after it. A
    dataset you named is the only source tried, so a problem with it is reported, not hidden.
    """
    if config.dataset != DEFAULT_DATASET:
        return (config.dataset,)
    return (config.dataset, *config.dataset_fallbacks)


def load_ade20k_test_split(n: int, config: CourseConfig | None = None) -> datasets.Dataset:
    """The first `n` images of the ADE20K test split, byte for byte, from the first source
    (`ade20k_sources`) that serves them; prints which one served and why earlier ones did not.

    A source is a hub dataset id (`read_hub_images`) or the URL of a zip archive
    (`read_archive_images`). The test split has no annotations; only the images are read. Raises
    `SourceUnavailableError`, with every source's reason, when none serves (and at once when an
    offline setting forbids the network).
    """
    config = config or get_config()
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    offline = offline_reason(config)
    if offline is not None:
        raise SourceUnavailableError(offline)
    failures: list[str] = []
    hub_reason: str | None = None
    hub_checked = False
    for source in ade20k_sources(config):
        try:
            if is_archive_url(source):
                found, where = read_archive_images(source, n, config.hub_timeout_s)
            else:
                if not hub_checked:
                    hub_reason, hub_checked = hub_unavailable_reason(config), True
                if hub_reason is not None:
                    if hub_reason not in failures:
                        failures.append(hub_reason)
                    continue
                found, where = read_hub_images(source, n)
            if not found:
                raise FileNotFoundError(f"no images in {where}")
        except Exception as error:  # noqa: BLE001 - any failure: say why, try the next source
            failures.append(f"{source}: {short_error(error)}")
            continue
        if failures:
            print(f"Test images: {'; '.join(failures)}")
        return ade20k_dataset(found, where, n)
    raise SourceUnavailableError("; ".join(failures))


def ade20k_dataset(found: list[tuple[str | None, bytes]], where: str, n: int) -> datasets.Dataset:
    """`(file name, original bytes)` pairs as a dataset in the course's layout, `where` recorded.

    Ids are the file names when every image has a distinct one (`ADE_test_00000001.jpg`),
    otherwise `test-00000`, `test-00001`, ...; the bytes are stored as they came.
    """
    names = [posixpath.basename(name or "") for name, _ in found]
    if not all(names) or len(set(names)) != len(names):
        names = [f"test-{i:05d}" for i in range(len(found))]
    if len(found) < n:
        print(f"Asked for {n} images; {where} has {len(found)}: using all of them.")
    print(f"Test images: {len(found)} from {where}")
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": data, "path": None} for _, data in found], "image_id": names},
        info=datasets.DatasetInfo(description=where, features=FEATURES),
    )


def bundled_image_paths() -> list[Path]:
    """The bundled photographs, sorted by name (see assets/images/SOURCES.md)."""
    paths = sorted(p for p in BUNDLED_DIR.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no bundled images in {BUNDLED_DIR}: is the repository complete?")
    return paths


def load_bundled_images(n: int) -> datasets.Dataset:
    """`n` images: the bundled photographs, then deterministic variants of them."""
    paths = bundled_image_paths()
    originals = paths[:n]
    images: list[str | dict] = [str(p) for p in originals]
    ids = [p.name for p in originals]
    for index in range(len(paths), n):
        source = paths[index % len(paths)]
        image, how = make_variant(source, index // len(paths), seed=index)
        images.append({"bytes": png_bytes(image), "path": None})
        ids.append(f"{source.name}~{index}-{how}")  # the index keeps ids unique
    if n > len(paths):
        print(
            f"Test images: {len(paths)} bundled photographs plus {n - len(paths)} "
            f"deterministic variants (crops, resizes, flips) to reach {n}."
        )
    else:
        print(f"Test images: {n} bundled photographs")
    return datasets.Dataset.from_dict({"image": images, "image_id": ids}, features=FEATURES)


def make_variant(path: Path, round_: int, seed: int) -> tuple[Image.Image, str]:
    """A cropped and resized (and, every other round, mirrored) copy of the image at `path`.

    Parameters come from `seed`, so every machine builds the same variant.
    """
    rng = np.random.default_rng(seed)
    with Image.open(path) as original:
        image = original.copy()
    width, height = image.size
    crop = rng.uniform(0.6, 0.95)
    w, h = max(1, int(width * crop)), max(1, int(height * crop))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    image = image.crop((left, top, left + w, top + h))
    scale = rng.uniform(0.6, 1.4)
    image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))))
    how = f"crop{crop:.2f}-resize{scale:.2f}"
    if round_ % 2:
        image, how = ImageOps.mirror(image), f"flip-{how}"
    return image, how


def file_bytes(cell):
    """The bytes of an image file, from a `datasets.Image(decode=False)` cell."""
    return cell["bytes"] if cell["bytes"] is not None else Path(cell["path"]).read_bytes()


def write_images_parquet(dataset, folder, rows_per_file):
    """`dataset`'s images as Parquet files of `rows_per_file` rows: image_id, the file's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    encoded = dataset.cast_column("image", datasets.Image(decode=False))  # {"bytes", "path"}
    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(encoded), rows_per_file)):
        part = encoded[start : start + rows_per_file]
        table = pa.table(
            {
                "image_id": pa.array(part["image_id"], pa.string()),
                "image": pa.array([file_bytes(c) for c in part["image"]], pa.binary()),
            }
        )
        pq.write_table(table, folder / f"part-{number:05d}.parquet")
    return folder


def png_bytes(image: Image.Image) -> bytes:
    """`image` encoded as PNG, with fast (level 1) compression."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def get_image_indices(dataset: datasets.Dataset, n: int, seed: int | None = None) -> list[int]:
    """`n` distinct row indices of `dataset`, drawn at random but the same for the same seed.

    The seed defaults to `COURSE_SEED`, so every notebook picks the same images.
    """
    if n < 1 or n > len(dataset):
        raise ValueError(
            f"cannot pick {n} images from a dataset of {len(dataset)}; "
            f"choose 1 <= n <= {len(dataset)} (or raise COURSE_NUM_IMAGES)"
        )
    rng = np.random.default_rng(get_config().seed if seed is None else seed)
    return sorted(int(i) for i in rng.choice(len(dataset), size=n, replace=False))
