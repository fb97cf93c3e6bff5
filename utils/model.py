"""Loading SegFormer: from a local folder, from the hub, or (offline) with seeded random weights."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from .config import CourseConfig, get_config
from .hub import hub_unavailable_reason
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

    Loads safetensors weights only and never runs code from the hub. When the hub
    cannot be used and the model is not a local folder, falls back to
    `offline_model()` and prints `OFFLINE_BANNER`.
    """
    config = config or get_config()
    device = torch.device(device) if device is not None else pick_device(config)
    source = Path(config.model).expanduser()
    if source.is_dir():
        model, processor = _from_pretrained(str(source), local_only=True)
    else:
        reason = hub_unavailable_reason(config)
        try:
            # Offline, a model cached earlier (for example by `make prefetch`) still loads.
            model, processor = _from_pretrained(config.model, local_only=reason is not None)
        except OSError as error:
            if reason is None:
                raise
            print(f"Model: {reason} and {config.model} is not cached ({type(error).__name__}).")
            print(OFFLINE_BANNER)
            model, processor = offline_model(config.seed), image_processor_class()()
    return model.to(device).eval(), processor


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


def shippable_copy(model: SegformerForSemanticSegmentation) -> SegformerForSemanticSegmentation:
    """A copy of `model` (same config and weights, on the CPU) that Ray can pickle.

    transformers 5 installs output-capturing hooks on a model the first time it runs,
    and those hooks hold a `ContextVar`, which cannot be pickled: `ray.put(model)` of a
    model that has already predicted fails. A fresh copy has no hooks yet.
    """
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to("cpu").eval()
