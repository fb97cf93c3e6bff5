"""Loading SegFormer: from a local folder, the hub or its local cache, or (default model only)
with seeded random weights when none of those works."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from .config import DEFAULT_MODEL, CourseConfig, get_config
from .hub import (
    SourceUnavailableError,
    hub_file_unavailable_reason,
    hub_unavailable_reason,
    short_error,
)
from .labels import get_labels

OFFLINE_BANNER = (
    "OFFLINE MODEL: SegFormer-b0 architecture with seeded random weights "
    "(timings are real, predictions are not)."
)


def image_processor_class() -> type:
    """`SegformerImageProcessor`, or its Pillow twin when torchvision is not installed.

    transformers 5 backs `SegformerImageProcessor` with torchvision and, without it,
    falls back to `SegformerImageProcessorPil` with a warning; asking for the Pillow
    class directly gives the same processing without the warning.
    """
    import importlib.util

    import transformers

    if importlib.util.find_spec("torchvision") is not None:
        return transformers.SegformerImageProcessor
    return transformers.SegformerImageProcessorPil


def pick_device(config: CourseConfig | None = None) -> torch.device:
    """CUDA when available (or asked for with COURSE_DEVICE=cuda), otherwise the CPU."""
    wanted = (config or get_config()).device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("COURSE_DEVICE=cuda, but torch sees no CUDA device")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def load_model(
    config: CourseConfig | None = None, device: torch.device | str | None = None
) -> tuple[SegformerForSemanticSegmentation, object]:
    """Return `(model, image_processor)` for `COURSE_MODEL`, in eval mode on `device`.

    Loads safetensors weights only and never runs code from the hub. The default model falls
    back to `offline_model()`, printing why and `OFFLINE_BANNER`, when it can be loaded neither
    from the hub nor from the local cache, whatever the failure (offline settings, no network,
    a proxy or server error, a broken download). A model you named (`COURSE_MODEL` set to a
    local folder or to another hub id) never falls back: `load_named_model` raises instead.
    """
    config = config or get_config()
    device = torch.device(device) if device is not None else pick_device(config)
    if config.model != DEFAULT_MODEL or Path(config.model).expanduser().is_dir():
        model, processor = load_named_model(config.model, config)
    else:
        try:
            model, processor = load_named_model(config.model, config)
        except SourceUnavailableError as error:
            print(f"Model: {error}.")
            print(OFFLINE_BANNER)
            model, processor = offline_model(config.seed), image_processor_class()()
    return model.to(device).eval(), processor


def load_named_model(
    name: str, config: CourseConfig | None = None
) -> tuple[SegformerForSemanticSegmentation, object]:
    """`(model, image_processor)` for `name`, a local folder or a hub id, on the CPU; no stand-in.

    A folder is read as it is. A hub id is loaded from the hub when the quick checks of
    `utils.hub` find the hub and the model's `config.json` reachable, otherwise (or when that
    load fails for any reason) from the local Hugging Face cache, saying so. Raises
    `SourceUnavailableError`, with the reason, when neither works.
    """
    config = config or get_config()
    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            return _from_pretrained(str(folder), local_only=True)
        except Exception as error:  # not a SegFormer folder, missing weights, ...: say so
            raise SourceUnavailableError(
                f"the model folder {name} cannot be loaded ({short_error(error)})"
            ) from error
    reason = hub_unavailable_reason(config) or hub_file_unavailable_reason(
        config, name, "config.json"
    )
    if reason is None:
        try:
            return _from_pretrained(name, local_only=False)
        except Exception as error:  # noqa: BLE001 - any failure to load from the hub
            reason = f"loading {name} from {hub_constants.ENDPOINT} failed ({short_error(error)})"
    try:
        model, processor = _from_pretrained(name, local_only=True)
    except Exception:  # noqa: BLE001 - not in the cache, or an incomplete copy there
        raise SourceUnavailableError(
            f"{reason}, and {name} is not in the local Hugging Face cache"
        ) from None
    print(f"Model: {reason}; using the copy of {name} in the local Hugging Face cache.")
    return model, processor


def _from_pretrained(
    name: str, local_only: bool
) -> tuple[SegformerForSemanticSegmentation, object]:
    model = SegformerForSemanticSegmentation.from_pretrained(
        name, use_safetensors=True, trust_remote_code=False, local_files_only=local_only
    )
    processor = image_processor_class().from_pretrained(
        name, trust_remote_code=False, local_files_only=local_only
    )
    print(f"Model: {name} ({model.num_parameters() / 1e6:.2f} M parameters)")
    return model, processor


def offline_model(seed: int = 201) -> SegformerForSemanticSegmentation:
    """SegFormer-b0 for the 150 ADE20K classes with random weights drawn from `seed`.

    Same architecture and compute as `nvidia/segformer-b0-finetuned-ade-512-512`
    (transformers' default `SegformerConfig` is the MiT-b0 configuration), so timings
    are representative; the predicted classes are meaningless. The same seed gives
    the same weights in every process, so Ray workers can build it themselves.
    """
    id2label, label2id = get_labels()
    config = SegformerConfig(num_labels=len(id2label), id2label=id2label, label2id=label2id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SegformerForSemanticSegmentation(config)
    model.config.name_or_path = "offline-random-segformer-b0"
    return model.eval()


def is_offline_model(model: torch.nn.Module) -> bool:
    """True for a model built by `offline_model()`."""
    return getattr(model.config, "name_or_path", "") == "offline-random-segformer-b0"


def model_recipe(model):
    """What a worker needs to rebuild `model`: its configuration and its weights (CPU tensors)."""
    return {"config": model.config, "weights": model.state_dict()}


def build_replica(recipe):
    """Rebuild the model inside a worker, on that worker's GPU when Ray gave it one."""
    replica = SegformerForSemanticSegmentation(recipe["config"])
    replica.load_state_dict(recipe["weights"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return replica.to(device).eval()
