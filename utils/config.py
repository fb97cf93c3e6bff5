"""Course settings, read from environment variables in this one place.

Every variable is optional; the defaults serve a learner on a laptop.

- COURSE_NUM_IMAGES: how many test images the notebooks use (default 160)
- COURSE_DATA_DIR: a folder of images used instead of ADE20K (searched recursively)
- COURSE_MODEL: hub model id or local directory (default nvidia/segformer-b0-finetuned-ade-512-512)
- COURSE_DATASET: hub dataset holding the ADE20K test split (default zhoubolei/scene_parse_150)
- COURSE_DATASET_FALLBACKS: comma-separated sources tried, in order, when the default
  COURSE_DATASET cannot serve the test split: hub dataset ids, or URLs of zip archives
  (default: the original ADE20K release archive, then merve/scene_parse_150; "none" for none)
- COURSE_SEED: seed for image sampling and the offline model (default 201)
- COURSE_DEVICE: "auto", "cpu" or "cuda" (default auto)
- COURSE_HUB_TIMEOUT: seconds to wait for the hub before falling back (default 5)
- COURSE_CACHE_DIR: where `make prefetch` keeps test images and notebooks keep the baseline
  (default ~/.cache/ray-batch-inference-course)
- COURSE_SEGMENT_DELAY_S: seconds each model batch of the production job waits before the
  model runs, so tests and demonstrations can interrupt a run (default 0)
- HF_HUB_OFFLINE: "1" never contacts the hub (standard meaning)
- TRANSFORMERS_OFFLINE: "1" means the same (huggingface_hub honours it too)
- RAY_ADDRESS: connect to this Ray cluster (standard meaning)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "nvidia/segformer-b0-finetuned-ade-512-512"
DEFAULT_DATASET = "zhoubolei/scene_parse_150"
DEFAULT_DATASET_FALLBACKS = (
    "http://data.csail.mit.edu/places/ADEchallenge/release_test.zip",
    "merve/scene_parse_150",
)
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class CourseConfig:
    """The settings every notebook, test and script shares."""

    num_images: int = 160
    data_dir: Path | None = None
    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    dataset_fallbacks: tuple[str, ...] = DEFAULT_DATASET_FALLBACKS
    seed: int = 201
    device: str = "auto"
    hub_timeout_s: float = 5.0
    hub_offline: bool = False
    transformers_offline: bool = False
    ray_address: str | None = None
    segment_delay_s: float = 0.0
    cache_dir: Path = Path("~/.cache/ray-batch-inference-course").expanduser()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CourseConfig:
        """Build the config from `env` (default: `os.environ`), validating each value."""
        env = os.environ if env is None else env

        def read(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        num_images = _parse_int("COURSE_NUM_IMAGES", read("COURSE_NUM_IMAGES", "160"), low=1)
        device = read("COURSE_DEVICE", "auto").lower()
        if device not in {"auto", "cpu", "cuda"}:
            raise ValueError(f"COURSE_DEVICE must be auto, cpu or cuda, not {device!r}")
        data_dir = read("COURSE_DATA_DIR", "")
        return cls(
            num_images=num_images,
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            model=read("COURSE_MODEL", DEFAULT_MODEL),
            dataset=read("COURSE_DATASET", DEFAULT_DATASET),
            dataset_fallbacks=_parse_sources(read("COURSE_DATASET_FALLBACKS", "")),
            seed=_parse_int("COURSE_SEED", read("COURSE_SEED", "201"), low=0),
            device=device,
            hub_timeout_s=float(read("COURSE_HUB_TIMEOUT", "5")),
            hub_offline=read("HF_HUB_OFFLINE", "0").lower() in _TRUE,
            transformers_offline=read("TRANSFORMERS_OFFLINE", "0").lower() in _TRUE,
            ray_address=read("RAY_ADDRESS", "") or None,
            segment_delay_s=float(read("COURSE_SEGMENT_DELAY_S", "0")),
            cache_dir=Path(read("COURSE_CACHE_DIR", str(cls.cache_dir))).expanduser(),
        )


def _parse_int(name: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if number < low:
        raise ValueError(f"{name} must be at least {low}, not {number}")
    return number


def _parse_sources(value: str) -> tuple[str, ...]:
    """COURSE_DATASET_FALLBACKS: unset means the defaults, "none" means no fallback source."""
    if not value:
        return DEFAULT_DATASET_FALLBACKS
    if value.lower() == "none":
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def get_config() -> CourseConfig:
    """The current settings (re-read each call, so a notebook can change os.environ)."""
    return CourseConfig.from_env()
