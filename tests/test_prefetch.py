import pytest

from utils.config import CourseConfig
from utils.tools import prefetch


def test_prefetch_offline_says_why_and_fails(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert prefetch.main([]) == 1
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_prefetch_asks_the_hub_for_weights_and_configs_only(monkeypatch):
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("network call reached")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ConnectionError, match="network call reached"):
        prefetch.prefetch_model(CourseConfig())
    assert calls == [
        {
            "repo_id": "nvidia/segformer-b0-finetuned-ade-512-512",
            "allow_patterns": ["*.json", "*.safetensors", "*.txt"],
        }
    ]


def test_prefetch_images_saves_the_scene_parsing_test_split_unchanged(monkeypatch, tmp_path):
    """More images than the export's first file holds, from one config only, byte for byte."""
    import datasets
    from fake_hub import FakeHub, point_libraries_at
    from test_online import images, write_parquet

    hub = FakeHub()
    try:
        point_libraries_at(hub, monkeypatch, tmp_path)
        export, test = tmp_path / "export", images("ADE_test", 1, 5)
        write_parquet(export / "instance_segmentation/test/0000.parquet", images("i", 1, 5), False)
        write_parquet(export / "scene_parsing/test/0000.parquet", test[:3], True)
        write_parquet(export / "scene_parsing/test/0001.parquet", test[3:], True)
        hub.serve_repo("dataset", "zhoubolei/scene_parse_150", "refs/convert/parquet", export)
        config = CourseConfig(cache_dir=tmp_path / "cache", hub_timeout_s=2)
        saved = datasets.load_from_disk(str(prefetch.prefetch_images(config, 4)))
    finally:
        hub.close()
    assert saved["image_id"] == [name for name, _ in test[:4]]
    raw = saved.cast_column("image", datasets.Image(decode=False))["image"]
    assert [cell["bytes"] for cell in raw] == [data for _, data in test[:4]]
    assert "scene_parsing/test" in saved.info.description


def test_prefetch_never_saves_the_bundled_photos(monkeypatch, tmp_path):
    from utils.hub import SourceUnavailableError

    config = CourseConfig(cache_dir=tmp_path, hub_offline=True)
    with pytest.raises(SourceUnavailableError, match="HF_HUB_OFFLINE=1"):
        prefetch.prefetch_images(config, 4)
    assert not any(tmp_path.iterdir())


def test_prefetched_images_are_used_offline(tmp_path, capsys):
    from utils.data import load_bundled_images, load_test_images, prefetched_images_dir

    config = CourseConfig(hub_offline=True, cache_dir=tmp_path)
    load_bundled_images(3).save_to_disk(str(prefetched_images_dir(config)))
    dataset = load_test_images(2, config)
    assert len(dataset) == 2 and "prefetched" in capsys.readouterr().out


def test_prefetch_then_a_room_without_internet(monkeypatch, tmp_path, capsys):
    """`make prefetch` against a (fake) hub, then the course with HF_HUB_OFFLINE=1: the model
    comes from the Hugging Face cache and the images from COURSE_CACHE_DIR, nothing falls back."""
    import torch
    from fake_hub import FakeHub, point_libraries_at
    from huggingface_hub import constants
    from test_online import images, write_parquet

    from utils import OFFLINE_BANNER, is_offline_model, load_model, load_test_images
    from utils.model import image_processor_class, offline_model

    hub = FakeHub()
    try:
        point_libraries_at(hub, monkeypatch, tmp_path)
        weights = tmp_path / "model"
        offline_model(seed=3).save_pretrained(weights)
        image_processor_class()().save_pretrained(weights)
        hub.serve_repo("model", "nvidia/segformer-b0-finetuned-ade-512-512", "main", weights)
        export, test = tmp_path / "export", images("ADE_test", 1, 4)
        write_parquet(export / "scene_parsing/test/0000.parquet", test, True)
        hub.serve_repo("dataset", "zhoubolei/scene_parse_150", "refs/convert/parquet", export)
        monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "course-cache"))
        assert prefetch.main(["--images", "3"]) == 0
    finally:
        hub.close()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    capsys.readouterr()
    model, _ = load_model(device="cpu")
    dataset = load_test_images(3)
    out = capsys.readouterr().out
    assert not is_offline_model(model) and OFFLINE_BANNER not in out
    expected = offline_model(seed=3).decode_head.classifier.weight
    assert torch.equal(model.decode_head.classifier.weight, expected)
    assert dataset["image_id"] == [name for name, _ in test[:3]] and "prefetched" in out
