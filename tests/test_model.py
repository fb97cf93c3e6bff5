import pytest
import torch

from utils import OFFLINE_BANNER, is_offline_model, load_model, offline_model
from utils import model as model_module
from utils.config import CourseConfig
from utils.hub import SourceUnavailableError


def test_offline_model_is_segformer_b0_for_ade20k(model):
    assert model.config.num_labels == 150
    assert list(model.config.hidden_sizes) == [32, 64, 160, 256]
    assert model.config.id2label[0] == "wall"
    assert 3.5e6 < model.num_parameters() < 4e6  # the hub model has 3.75 M
    assert is_offline_model(model) and not model.training


def test_same_seed_same_weights_in_every_process():
    first, second, other = offline_model(5), offline_model(5), offline_model(6)
    pairs = zip(first.state_dict().values(), second.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(first.decode_head.classifier.weight, other.decode_head.classifier.weight)


@pytest.fixture
def empty_hub_cache(monkeypatch, tmp_path):
    """No model in the Hugging Face cache, whatever this machine's cache holds."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))


def test_offline_fallback_announces_itself(capsys, empty_hub_cache):
    model, processor = load_model(CourseConfig(hub_offline=True), device="cpu")
    out = capsys.readouterr().out
    assert OFFLINE_BANNER in out and "HF_HUB_OFFLINE" in out
    assert is_offline_model(model) and processor.size == {"height": 512, "width": 512}


def test_a_named_model_never_falls_back(capsys, empty_hub_cache):
    config = CourseConfig(hub_offline=True, model="some-org/not-cached-model")
    with pytest.raises(SourceUnavailableError, match="HF_HUB_OFFLINE=1 is set, and some-org"):
        load_model(config, device="cpu")
    assert OFFLINE_BANNER not in capsys.readouterr().out


def test_local_directory_loads_safetensors(tmp_path, model, image_processor):
    model.save_pretrained(tmp_path)
    image_processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded, _ = load_model(CourseConfig(model=str(tmp_path)), device="cpu")
    assert not loaded.training
    assert torch.equal(loaded.decode_head.classifier.weight, model.decode_head.classifier.weight)


def test_hub_path_asks_for_safetensors_without_remote_code(monkeypatch):
    calls = []

    def fake_from_pretrained(name, **kwargs):
        calls.append((name, kwargs))
        raise OSError("network call reached")

    monkeypatch.setattr(model_module, "hub_unavailable_reason", lambda config: None)
    monkeypatch.setattr(model_module, "hub_file_unavailable_reason", lambda config, *_: None)
    monkeypatch.setattr(
        model_module.SegformerForSemanticSegmentation, "from_pretrained", fake_from_pretrained
    )
    with pytest.raises(SourceUnavailableError, match="network call reached"):
        load_model(CourseConfig(model="some-org/segformer"), device="cpu")
    (name, kwargs), (_, cached) = calls  # from the hub, then from the local cache
    assert name == "some-org/segformer"
    assert kwargs["use_safetensors"] is True and kwargs["trust_remote_code"] is False
    assert kwargs["local_files_only"] is False and cached["local_files_only"] is True


def test_cuda_request_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="COURSE_DEVICE=cuda"):
        model_module.pick_device(CourseConfig(device="cuda"))
    assert model_module.pick_device(CourseConfig()).type == "cpu"
