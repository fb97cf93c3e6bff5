"""The online path, tested without a network: a fake hub on 127.0.0.1 (see fake_hub.py).

What is checked: the ADE20K test images come from the `scene_parsing` config's `test` split of
the Parquet export and from nothing else, across several files, with their original bytes; when
the export is gone, the next sources serve (the release archive, a pushed Parquet copy), and the
loader says which one did; the default model and images fall back within seconds, saying why,
for a timeout, a refused connection, a proxy's 407, a server's 500, HF_HUB_OFFLINE and
TRANSFORMERS_OFFLINE; a model or dataset named explicitly gives a clear error instead.
"""

from __future__ import annotations

import dataclasses
import io
import time
import zipfile
from pathlib import Path

import datasets
import pytest
import torch
from fake_hub import FakeHub, point_libraries_at, refused_url
from helpers import photo

from utils._ade20k import zip_members
from utils.config import DEFAULT_DATASET, DEFAULT_MODEL, CourseConfig
from utils.data import load_ade20k_test_split, load_test_images
from utils.hub import SourceUnavailableError
from utils.model import OFFLINE_BANNER, is_offline_model, load_model, load_named_model

SCENE_CATEGORIES = ["bathroom", "bedroom", "kitchen"]
FAST = 1.0  # seconds the quick hub check waits in these tests


# --- building the fake hub's content -----------------------------------------------------------


def jpeg(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    """A small photo-like JPEG at quality 95: decoding and encoding it again changes its bytes."""
    buffer = io.BytesIO()
    photo(*size, seed=seed).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def images(prefix: str, first: int, count: int) -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}_{i:08d}.jpg", jpeg(seed=sum(prefix.encode()) + i))
        for i in range(first, first + count)
    ]


def write_parquet(path: Path, rows: list[tuple[str, bytes]], scene_category: bool) -> None:
    """One Parquet file as the hub's export writes it (datasets' features in the metadata)."""
    columns = {
        "image": [{"bytes": data, "path": name} for name, data in rows],
        "annotation": [None] * len(rows),
    }
    features = {"image": datasets.Image(), "annotation": datasets.Image()}
    if scene_category:
        columns["scene_category"] = [i % len(SCENE_CATEGORIES) for i in range(len(rows))]
        features["scene_category"] = datasets.ClassLabel(names=SCENE_CATEGORIES)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    table.to_parquet(str(path), batch_size=2)  # row groups of 2: reads are made row group by group


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub()
    point_libraries_at(fake, monkeypatch, tmp_path)
    yield fake
    fake.close()


@pytest.fixture
def export(hub, tmp_path):
    """scene_parse_150's export as it is laid out: two configs (different columns), several
    splits; the test split of `scene_parsing` needs two files. Returns its test images."""
    root = tmp_path / "export"
    test = images("ADE_test", 1, 6)
    write_parquet(root / "instance_segmentation/test/0000.parquet", images("inst", 1, 4), False)
    write_parquet(root / "instance_segmentation/validation/0000.parquet", images("v", 1, 2), False)
    write_parquet(root / "scene_parsing/test/0000.parquet", test[:3], True)
    write_parquet(root / "scene_parsing/test/0001.parquet", test[3:], True)
    write_parquet(root / "scene_parsing/validation/0000.parquet", images("ADE_val", 1, 2), True)
    (root / "scene_parsing/test/README.md").write_text("not data")
    hub.serve_repo("dataset", DEFAULT_DATASET, "refs/convert/parquet", root)
    return test


def course(**settings) -> CourseConfig:
    """Settings as a learner's, with a short hub timeout and an empty image cache."""
    settings.setdefault("dataset_fallbacks", ())
    return CourseConfig(hub_timeout_s=FAST, cache_dir=Path("/no-course-cache"), **settings)


def original_bytes(dataset: datasets.Dataset) -> list[bytes]:
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    return [cell["bytes"] for cell in raw["image"]]


# --- defect 1 and 2: the right files, the original bytes ---------------------------------------


def test_reads_the_scene_parsing_test_split_only(export, capsys):
    dataset = load_test_images(2, course())
    assert dataset["image_id"] == [name for name, _ in export[:2]]
    assert original_bytes(dataset) == [data for _, data in export[:2]]
    out = capsys.readouterr().out
    assert f"Test images: 2 from {DEFAULT_DATASET} (scene_parsing/test, Parquet export)" in out
    assert "bundled" not in out


def test_more_images_than_one_file_holds(export, capsys):
    dataset = load_test_images(5, course())
    assert dataset["image_id"] == [name for name, _ in export[:5]]
    assert original_bytes(dataset) == [data for _, data in export[:5]]
    assert "bundled" not in capsys.readouterr().out


def test_original_bytes_are_kept_and_decode(export):
    dataset = load_test_images(6, course())
    assert original_bytes(dataset) == [data for _, data in export]
    first = dataset[0]["image"]
    assert first.size == (48, 32) and first.format == "JPEG"


def test_asking_for_more_than_the_split_has_uses_all(export, capsys):
    dataset = load_ade20k_test_split(9, course())
    assert len(dataset) == 6
    assert "Asked for 9 images" in capsys.readouterr().out


# --- defect 4: the export may be gone ------------------------------------------------------------


def archive(members: list[tuple[str, bytes]], streamed: bool = False) -> bytes:
    """A zip like release_test.zip; `streamed` writes it to a pipe-like stream, so that sizes
    follow the data (data descriptors), as zip tools do when they cannot seek."""

    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.buffer = io.BytesIO()

        def writable(self):
            return True

        def write(self, data):
            return self.buffer.write(data)

    target = Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("release_test/", b"")
        bundle.writestr("release_test/readme.txt", b"ADE20K test images")
        for index, (name, data) in enumerate(members):
            stored = index % 2 and not streamed  # streaming zip tools deflate every file
            method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            bundle.writestr(f"release_test/testing/{name}", data, compress_type=method)
        bundle.writestr("release_test/list.txt", b"\n".join(n.encode() for n, _ in members))
    return (target.buffer if streamed else target).getvalue()


@pytest.mark.parametrize("streamed", [False, True])
def test_export_gone_the_release_archive_serves(hub, capsys, streamed):
    members = images("ADE_test", 1, 5)
    url = hub.serve_file("release_test.zip", archive(members, streamed))
    dataset = load_test_images(4, course(dataset_fallbacks=(url,)))
    assert dataset["image_id"] == [name for name, _ in members[:4]]
    assert original_bytes(dataset) == [data for _, data in members[:4]]
    out = capsys.readouterr().out
    assert f"{DEFAULT_DATASET}: FileNotFoundError" in out  # why the first source did not serve
    assert f"Test images: 4 from the archive {url}" in out


def test_zip_reader_skips_folders_and_text_and_checks_crc():
    members = images("ADE_test", 1, 2)
    names = [name for name, _ in zip_members(io.BytesIO(archive(members)))]
    assert names == [
        "release_test/readme.txt",
        *[f"release_test/testing/{n}" for n, _ in members],
        "release_test/list.txt",
    ]
    broken = bytearray(archive(members))
    broken[broken.index(members[1][1][-40:]) + 5] ^= 0xFF  # the second image is stored as is
    with pytest.raises(ValueError, match="ADE_test_00000002.jpg is corrupt"):
        list(zip_members(io.BytesIO(bytes(broken))))


def test_a_login_page_instead_of_the_archive_is_reported(hub, capsys):
    url = hub.serve_file("release_test.zip", b"<!DOCTYPE html><title>Wi-Fi login</title>")
    dataset = load_test_images(2, course(dataset_fallbacks=(url,)))
    out = capsys.readouterr().out
    assert "ValueError: not a zip archive (it starts with b'<!DOCTYPE" in out
    assert "using the bundled sample photographs instead" in out
    assert dataset["image_id"][0] == "astronaut.png"


def test_settings_for_the_sources_and_transformers_offline():
    assert CourseConfig.from_env({}).dataset_fallbacks[0].endswith("/release_test.zip")
    assert CourseConfig.from_env({"COURSE_DATASET_FALLBACKS": "none"}).dataset_fallbacks == ()
    listed = CourseConfig.from_env({"COURSE_DATASET_FALLBACKS": " a/b , https://x/y.zip,"})
    assert listed.dataset_fallbacks == ("a/b", "https://x/y.zip")
    assert CourseConfig.from_env({"TRANSFORMERS_OFFLINE": "1"}).transformers_offline
    assert not CourseConfig.from_env({}).transformers_offline


def test_export_and_archive_gone_a_pushed_parquet_copy_serves(hub, tmp_path, capsys):
    root = tmp_path / "copy"
    test = images("ADE_test", 1, 5)
    write_parquet(root / "data/test-00000-of-00002.parquet", test[:3], True)
    write_parquet(root / "data/test-00001-of-00002.parquet", test[3:], True)
    write_parquet(root / "data/train-00000-of-00001.parquet", images("ADE_train", 1, 3), True)
    write_parquet(root / "data/validation-00000-of-00001.parquet", images("ADE_val", 1, 2), True)
    hub.serve_repo("dataset", "someone/scene_parse_150", "main", root)
    sources = (f"{hub.url}/files/missing.zip", "someone/scene_parse_150")
    dataset = load_test_images(4, course(dataset_fallbacks=sources))
    assert dataset["image_id"] == [name for name, _ in test[:4]]
    assert original_bytes(dataset) == [data for _, data in test[:4]]
    out = capsys.readouterr().out
    assert "missing.zip: HTTPError: HTTP Error 404" in out
    assert "Test images: 4 from someone/scene_parse_150 (data/test-*.parquet)" in out


def test_a_named_dataset_with_one_config_is_read_from_its_export(hub, tmp_path, capsys):
    root = tmp_path / "mine"
    test = images("mine", 1, 3)
    write_parquet(root / "default/test/0000.parquet", test, False)
    write_parquet(root / "default/train/0000.parquet", images("other", 1, 3), False)
    hub.serve_repo("dataset", "me/my-scenes", "refs/convert/parquet", root)
    dataset = load_test_images(3, course(dataset="me/my-scenes"))
    assert original_bytes(dataset) == [data for _, data in test]
    assert "me/my-scenes (default/test, Parquet export)" in capsys.readouterr().out


def test_an_export_with_several_other_configs_is_not_guessed_from(hub, tmp_path):
    root = tmp_path / "two"
    write_parquet(root / "a/test/0000.parquet", images("a", 1, 2), False)
    write_parquet(root / "b/test/0000.parquet", images("b", 1, 2), False)
    hub.serve_repo("dataset", "me/two-configs", "refs/convert/parquet", root)
    with pytest.raises(SourceUnavailableError, match=r"configs \['a', 'b'\], none named scene"):
        load_test_images(2, course(dataset="me/two-configs"))


# --- defect 3: every failure falls back, quickly, and says why ----------------------------------

FAILURES = {
    "timeout": ("hang", "did not answer within"),
    "refused": ("refused", "is unreachable"),
    "proxy 407": (407, "answered HTTP 407 (Proxy Authentication Required)"),
    "server 500": (500, "answered HTTP 500 (Internal Server Error)"),
    "HF_HUB_OFFLINE": ("HF_HUB_OFFLINE", "HF_HUB_OFFLINE=1 is set"),
    "TRANSFORMERS_OFFLINE": ("TRANSFORMERS_OFFLINE", "TRANSFORMERS_OFFLINE=1 is set"),
}


def break_the_hub(hub: FakeHub, how, monkeypatch) -> CourseConfig:
    """Make the hub fail the way `how` says; return the settings a learner would then have.

    The release archive is served by the same (broken) server, so every source fails.
    """
    from huggingface_hub import constants

    server = hub.url
    if how in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        # What a process started with the variable set gets: huggingface_hub reads both
        # variables at import, and the course reads them from the environment.
        monkeypatch.setenv(how, "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    elif how == "refused":
        server = refused_url()
        monkeypatch.setattr(constants, "ENDPOINT", server)
    else:
        hub.mode = how
    monkeypatch.setenv("COURSE_HUB_TIMEOUT", str(FAST))
    monkeypatch.setenv("COURSE_CACHE_DIR", "/no-course-cache")
    monkeypatch.setenv("COURSE_DATASET_FALLBACKS", f"{server}/files/release_test.zip")
    hub.serve_file("release_test.zip", archive(images("ADE_test", 1, 2)))
    return CourseConfig.from_env()


@pytest.mark.parametrize("how, says", FAILURES.values(), ids=FAILURES.keys())
def test_default_images_fall_back_quickly_and_say_why(hub, export, monkeypatch, capsys, how, says):
    config = break_the_hub(hub, how, monkeypatch)
    start = time.perf_counter()
    dataset = load_test_images(3, config)
    assert time.perf_counter() - start < 10 * FAST
    out = capsys.readouterr().out
    assert says in out and "using the bundled sample photographs instead" in out
    assert len(dataset) == 3 and dataset["image_id"][0] == "astronaut.png"


@pytest.mark.parametrize("how, says", FAILURES.values(), ids=FAILURES.keys())
def test_default_model_falls_back_quickly_and_says_why(hub, monkeypatch, capsys, how, says):
    config = break_the_hub(hub, how, monkeypatch)
    start = time.perf_counter()
    model, processor = load_model(config, device="cpu")
    assert time.perf_counter() - start < 10 * FAST + 5  # building the stand-in takes a moment
    out = capsys.readouterr().out
    assert says in out and OFFLINE_BANNER in out
    assert is_offline_model(model) and processor.size == {"height": 512, "width": 512}


def test_hub_unreachable_the_archive_on_another_server_still_serves(hub, monkeypatch, capsys):
    from huggingface_hub import constants

    members = images("ADE_test", 1, 3)
    url = hub.serve_file("release_test.zip", archive(members))
    monkeypatch.setattr(constants, "ENDPOINT", refused_url())
    dataset = load_test_images(3, course(dataset_fallbacks=(url,)))
    assert original_bytes(dataset) == [data for _, data in members]
    out = capsys.readouterr().out
    assert "is unreachable" in out and f"Test images: 3 from the archive {url}" in out


def test_a_hub_that_answers_but_cannot_serve_still_falls_back(hub, export, monkeypatch, capsys):
    hub.api_status = 500  # the front page is fine; every repository request fails
    config = course()
    start = time.perf_counter()
    model, _ = load_model(config, device="cpu")
    dataset = load_test_images(2, config)
    assert time.perf_counter() - start < 10 * FAST + 5  # not huggingface_hub's 20 s of retries
    out = capsys.readouterr().out
    assert is_offline_model(model) and "config.json answered HTTP 500" in out
    assert f"{DEFAULT_DATASET}: HfHubHTTPError" in out
    assert "using the bundled sample photographs instead" in out
    assert dataset["image_id"][0] == "astronaut.png"


def test_a_model_load_that_fails_after_the_checks_still_falls_back(hub, tmp_path, capsys):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    hub.serve_repo("model", DEFAULT_MODEL, "main", broken)
    model, _ = load_model(course(), device="cpu")
    out = capsys.readouterr().out
    assert is_offline_model(model) and OFFLINE_BANNER in out
    assert f"loading {DEFAULT_MODEL} from {hub.url} failed" in out


def test_the_model_loads_from_a_working_hub(hub, tmp_path, capsys):
    from utils.model import image_processor_class, offline_model

    served = tmp_path / "served-model"
    offline_model(seed=11).save_pretrained(served)
    image_processor_class()().save_pretrained(served)
    hub.serve_repo("model", DEFAULT_MODEL, "main", served)
    model, _ = load_model(course(), device="cpu")
    assert not is_offline_model(model)
    expected = offline_model(seed=11).decode_head.classifier.weight
    assert torch.equal(model.decode_head.classifier.weight, expected)
    assert f"Model: {DEFAULT_MODEL} (3.7" in capsys.readouterr().out


def put_in_cache(cache: Path, name: str, seed: int) -> None:
    """A model snapshot in the Hugging Face cache layout, as `make prefetch` leaves it."""
    from utils.model import image_processor_class, offline_model

    folder = cache / f"models--{name.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("5eed" + "0" * 36)
    offline_model(seed).save_pretrained(snapshot)
    image_processor_class()().save_pretrained(snapshot)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("5eed" + "0" * 36)


@pytest.mark.parametrize("how", ["hang", 500, "HF_HUB_OFFLINE"])
def test_a_cached_model_is_used_when_the_hub_fails(hub, monkeypatch, tmp_path, capsys, how):
    from huggingface_hub import constants

    put_in_cache(Path(constants.HF_HUB_CACHE), DEFAULT_MODEL, seed=7)
    config = break_the_hub(hub, how, monkeypatch)
    model, _ = load_model(config, device="cpu")
    out = capsys.readouterr().out
    assert not is_offline_model(model) and OFFLINE_BANNER not in out
    assert f"using the copy of {DEFAULT_MODEL} in the local Hugging Face cache" in out
    from utils.model import offline_model

    expected = offline_model(7).decode_head.classifier.weight
    assert torch.equal(model.decode_head.classifier.weight, expected)


# --- named explicitly: a clear error, never a silent stand-in -----------------------------------


@pytest.mark.parametrize("how", [500, "refused", "HF_HUB_OFFLINE"])
def test_a_named_model_that_cannot_be_loaded_is_an_error(hub, monkeypatch, capsys, how):
    config = dataclasses.replace(break_the_hub(hub, how, monkeypatch), model="someone/segformer")
    with pytest.raises(SourceUnavailableError, match="someone/segformer is not in the local"):
        load_model(config, device="cpu")
    with pytest.raises(SourceUnavailableError, match="not in the local Hugging Face cache"):
        load_named_model("someone/segformer", config)
    assert OFFLINE_BANNER not in capsys.readouterr().out


def test_the_job_exits_2_for_a_named_model_the_hub_cannot_serve(hub, tmp_path, capsys):
    from utils import segment

    hub.mode = 500
    (tmp_path / "in").mkdir()
    photo(32, 32).save(tmp_path / "in" / "a.png")
    argv = [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", "someone/segformer"]
    assert segment.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "unknown model 'someone/segformer'" in error[0]
    assert "HTTP 500" in error[0]


@pytest.mark.parametrize("how", [500, "refused", "HF_HUB_OFFLINE"])
def test_a_named_dataset_that_cannot_be_loaded_is_an_error(hub, export, monkeypatch, capsys, how):
    config = dataclasses.replace(break_the_hub(hub, how, monkeypatch), dataset="someone/ade")
    with pytest.raises(SourceUnavailableError, match="COURSE_DATASET=someone/ade cannot be"):
        load_test_images(2, config)
    assert "bundled" not in capsys.readouterr().out


def test_a_named_dataset_missing_on_the_hub_is_an_error_naming_it(hub, export, capsys):
    url = hub.serve_file("release_test.zip", archive(images("ADE_test", 1, 2)))
    config = course(dataset="someone/ade", dataset_fallbacks=(url,))
    with pytest.raises(SourceUnavailableError, match="someone/ade: FileNotFoundError"):
        load_test_images(2, config)
    assert not any("release_test.zip" in line for line in hub.requests)  # no fallback tried
