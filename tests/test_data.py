import time

import pytest
from PIL import Image

from utils import get_image_indices
from utils.config import CourseConfig
from utils.data import bundled_image_paths, load_image_folder, load_test_images, make_variant

OFFLINE = CourseConfig(hub_offline=True, cache_dir=CourseConfig().cache_dir / "none")


def test_bundled_set_is_real_and_varied():
    paths = bundled_image_paths()
    assert len(paths) >= 12
    modes, sizes = set(), set()
    for path in paths:
        with Image.open(path) as image:
            modes.add(image.mode)
            sizes.add(image.size)
    assert {"RGB", "L", "RGBA"} <= modes
    assert len(sizes) >= 4
    sources = (paths[0].parent / "SOURCES.md").read_text()
    assert all(path.name in sources for path in paths), "every image needs a source and licence"


def test_offline_fallback_is_quick_and_says_why(capsys):
    start = time.perf_counter()
    dataset = load_test_images(5, OFFLINE)
    assert time.perf_counter() - start < 10
    assert "HF_HUB_OFFLINE" in capsys.readouterr().out
    assert dataset.column_names == ["image", "image_id"] and len(dataset) == 5


def test_variants_fill_the_count_deterministically(capsys):
    first = load_test_images(30, OFFLINE)
    assert "variants" in capsys.readouterr().out
    second = load_test_images(30, OFFLINE)
    assert len(set(first["image_id"])) == 30
    assert first["image_id"] == second["image_id"]
    assert first[25]["image"].tobytes() == second[25]["image"].tobytes()


def test_variant_ids_stay_unique_when_parameters_repeat():
    # Around 300 images, two variants of one photo drew the same rounded crop and resize.
    ids = load_test_images(300, OFFLINE)["image_id"]
    assert len(set(ids)) == 300


def test_variant_differs_from_its_source():
    path = bundled_image_paths()[0]
    variant, how = make_variant(path, round_=1, seed=12)
    with Image.open(path) as original:
        assert variant.size != original.size or variant.tobytes() != original.tobytes()
    assert how.startswith("flip")


def test_image_folder_reports_bad_files_and_keeps_the_rest(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (32, 24), "red").save(tmp_path / "sub" / "good photo.png")
    Image.new("L", (20, 20)).save(tmp_path / "b.jpg")
    Image.new("L", (5, 5)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "notes.txt").write_text("a text file is rejected like any other non-image")
    (tmp_path / ".hidden.png").write_bytes(b"hidden files are not inputs")
    dataset = load_image_folder(tmp_path)
    assert sorted(dataset["image_id"]) == ["b.jpg", "sub/good photo.png"]
    out = capsys.readouterr().out
    assert "broken.jpg: not an image" in out and "notes.txt: not an image" in out
    assert "tiny.png: too small" in out and ".hidden" not in out


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_image_folder(tmp_path)


def test_data_dir_setting_wins(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    config = CourseConfig(data_dir=tmp_path, hub_offline=True)
    assert load_test_images(config=config)["image_id"] == ["x.png"]


def test_indices_are_reproducible_by_seed():
    dataset = load_test_images(20, OFFLINE)
    first = get_image_indices(dataset, 6, seed=1)
    assert first == get_image_indices(dataset, 6, seed=1)
    assert first != get_image_indices(dataset, 6, seed=2)
    assert len(set(first)) == 6 and all(0 <= i < 20 for i in first)


def test_too_many_indices_is_a_clear_error():
    dataset = load_test_images(3, OFFLINE)
    with pytest.raises(ValueError, match="cannot pick 4 images from a dataset of 3"):
        get_image_indices(dataset, 4)
