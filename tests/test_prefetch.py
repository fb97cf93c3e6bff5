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
    assert calls == [{"repo_id": "nvidia/segformer-b0-finetuned-ade-512-512",
                      "allow_patterns": ["*.json", "*.safetensors", "*.txt"]}]


def test_prefetch_images_reads_the_parquet_export(monkeypatch, tmp_path):
    globbed = []

    class FakeFileSystem:
        def glob(self, pattern):
            globbed.append(pattern)
            return []

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfFileSystem", FakeFileSystem)
    with pytest.raises(FileNotFoundError, match="no Parquet export"):
        prefetch.prefetch_images(CourseConfig(cache_dir=tmp_path), 4)
    export = "datasets/zhoubolei/scene_parse_150@refs%2Fconvert%2Fparquet"
    assert globbed == [export + "/*/test/*.parquet"]


def test_prefetched_images_are_used_offline(tmp_path, capsys):
    from utils.data import load_bundled_images, load_test_images, prefetched_images_dir

    config = CourseConfig(hub_offline=True, cache_dir=tmp_path)
    load_bundled_images(3).save_to_disk(str(prefetched_images_dir(config)))
    dataset = load_test_images(2, config)
    assert len(dataset) == 2 and "prefetched" in capsys.readouterr().out
