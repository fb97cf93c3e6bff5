"""Test images: from your folder, from the ADE20K test split on the hub, or bundled photos.

`load_test_images()` returns a `datasets.Dataset` with an `image` column (PIL
images, decoded on access) and a stable, unique `image_id` column. Sources, in order:

1. `COURSE_DATA_DIR`, when set: every readable image under it (searched recursively).
2. The ADE20K (SceneParse150) test split: from the local copy `make prefetch` saved,
   else from the hub's Parquet export.
3. When the hub cannot be used: the photographs bundled in `assets/images/`,
   topped up with deterministic variants (flips, crops, resizes) when more are asked for.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageOps

from .config import CourseConfig, get_config
from .hub import hub_unavailable_reason
from .images import inspect_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "images"
FEATURES = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("string")})


def load_test_images(n: int | None = None, config: CourseConfig | None = None) -> datasets.Dataset:
    """Load `n` test images (default `COURSE_NUM_IMAGES`) and say where they came from."""
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
            print(f"Test images: {n} from the prefetched {config.dataset} test split in {cached}")
            return saved.select(range(n))
    reason = hub_unavailable_reason(config)
    if reason is None:
        try:
            return load_ade20k_test_split(config.dataset, n)
        except Exception as error:  # noqa: BLE001 - any hub failure falls back, and says why
            reason = f"loading {config.dataset} failed: {type(error).__name__}: {error}"
    print(f"Test images: {reason}; using the bundled sample photographs instead.")
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


def load_ade20k_test_split(name: str, n: int) -> datasets.Dataset:
    """The first `n` images of the test split of hub dataset `name`, from its Parquet export.

    `scene_parse_150` is a loading-script dataset, which `datasets` 4 and later refuse
    to run. The hub publishes a Parquet copy of datasets on the `refs/convert/parquet`
    revision; streaming those files reads only the first `n` rows, not all 3,352 images.
    """
    from huggingface_hub import HfFileSystem

    pattern = f"datasets/{name}@refs%2Fconvert%2Fparquet/*/test/*.parquet"
    files = sorted(HfFileSystem().glob(pattern))
    if not files:
        raise FileNotFoundError(f"no Parquet export of the test split found at hf://{pattern}")
    stream = datasets.load_dataset(
        "parquet", data_files=[f"hf://{f}" for f in files], split="train", streaming=True
    )
    rows = list(itertools.islice(stream, n))
    print(f"Test images: {len(rows)} from the {name} test split (Parquet export)")
    return datasets.Dataset.from_dict(
        {"image": [row["image"] for row in rows],
         "image_id": [f"test-{i:05d}" for i in range(len(rows))]},
        features=FEATURES,
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
        print(f"Test images: {len(paths)} bundled photographs plus {n - len(paths)} "
              f"deterministic variants (crops, resizes, flips) to reach {n}.")
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
        raise ValueError(f"cannot pick {n} images from a dataset of {len(dataset)}; "
                         f"choose 1 <= n <= {len(dataset)} (or raise COURSE_NUM_IMAGES)")
    rng = np.random.default_rng(get_config().seed if seed is None else seed)
    return sorted(int(i) for i in rng.choice(len(dataset), size=n, replace=False))


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


def printable_id(image_id: str) -> str:
    """`image_id` with undecodable bytes escaped, so it can be printed and stored."""
    return os.fsencode(image_id).decode("utf-8", "backslashreplace")
