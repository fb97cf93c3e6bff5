"""Download the model and the test images once, for a workshop without internet.

    python -m utils.tools.prefetch [--images N]

Afterwards the course runs with HF_HUB_OFFLINE=1: `load_model()` finds the model in
the Hugging Face cache, `load_test_images()` the images in COURSE_CACHE_DIR. The images come
from the first ADE20K source that serves them (see `utils.data.ade20k_sources`), unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.config import CourseConfig, get_config
from utils.data import load_ade20k_test_split, prefetched_images_dir
from utils.hub import hub_unavailable_reason

MODEL_FILES = ["*.json", "*.safetensors", "*.txt"]  # config, weights, processor; no code, no .bin


def prefetch_model(config: CourseConfig) -> Path:
    """Download `config.model` (safetensors weights and configs only) into the hub cache."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=config.model, allow_patterns=MODEL_FILES))


def prefetch_images(config: CourseConfig, n: int) -> Path:
    """Save the first `n` ADE20K test images where `load_test_images` looks, original bytes.

    They come from the first source that serves them (`utils.data.ade20k_sources`); which one
    is recorded with them. Never saves the bundled photographs: when no source serves, raises
    `SourceUnavailableError` with every source's reason.
    """
    target = prefetched_images_dir(config)
    load_ade20k_test_split(n, config).save_to_disk(str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    """Prefetch both; print what was saved where, or why it failed. Returns the exit code."""
    config = get_config()
    parser = argparse.ArgumentParser(
        prog="python -m utils.tools.prefetch", description="Download the model and test images."
    )
    parser.add_argument(
        "--images",
        type=int,
        default=config.num_images,
        help="how many test images to save (default: COURSE_NUM_IMAGES)",
    )
    args = parser.parse_args(argv)
    reason = hub_unavailable_reason(config)
    if reason is not None:
        print(
            f"prefetch: cannot download: {reason}. Run it where the Hugging Face Hub is "
            "reachable; the course still runs offline on the bundled photographs.",
            file=sys.stderr,
        )
        return 1
    failures = 0
    for what, step in (
        ("model", lambda: prefetch_model(config)),
        ("test images", lambda: prefetch_images(config, args.images)),
    ):
        try:
            print(f"prefetch: {what} saved in {step()}")
        except Exception as error:  # noqa: BLE001 - report each failure and go on
            failures += 1
            print(f"prefetch: {what} failed: {type(error).__name__}: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
