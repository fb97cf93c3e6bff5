"""Check cells: do two sets of predictions agree, image by image? Is an exercise still a stub?

`add_predictions` (taught in the tasks notebook) collects batches so that none counts twice;
`expected_for` picks the reference maps of a run over some of the images only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


MIN_AGREEMENT = 0.9999  # share of identical pixels for two maps of the same image to match


def add_predictions(results, batch_maps):
    """Merge one batch's {image_id: map} into `results`; an image predicted twice is an error."""
    repeated = sorted(results.keys() & batch_maps.keys())
    if repeated:
        raise ValueError(f"predicted more than once: {repeated}")
    results.update(batch_maps)


def expected_for(expected, batches):
    """The maps in `expected` of the images in `batches` (for exercises on fewer images)."""
    return {image_id: expected[image_id] for batch_ids, _ in batches for image_id in batch_ids}


def assert_same_maps(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Fail unless `got` has exactly the ids of `expected`, each with its own image's map.

    Two maps match when they have the same shape and agree on at least 99.99% of pixels:
    two runs of the same model may differ in the last bit of a score (torch picks its
    kernels by thread count and batch size, on CPU and GPU), which flips a pixel on a
    near-tie, while an image given another image's map agrees on far fewer. The message
    names the first missing, extra or different images, so a wrong answer is easy to trace.
    """
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise AssertionError(
            f"{len(missing)} image(s) without a prediction {missing[:3]}, "
            f"{len(extra)} unexpected prediction(s) {extra[:3]}"
        )
    different, lowest = [], 1.0
    for image_id, want in expected.items():
        have = np.asarray(got[image_id])
        if have.shape != want.shape:
            different.append(f"{image_id}: shape {have.shape} instead of {want.shape}")
            continue
        agreement = float(np.mean(have == want))
        lowest = min(lowest, agreement)
        if agreement < MIN_AGREEMENT:
            different.append(f"{image_id}: only {agreement:.2%} of pixels agree")
    if different:
        raise AssertionError(
            f"{len(different)} map(s) are not their image's (at least {MIN_AGREEMENT:.2%} of "
            "pixels must agree): " + "; ".join(different[:3])
        )
    print(
        f"OK: all {len(expected)} images predicted exactly once, each with its own map "
        f"(lowest agreement with the reference: {lowest:.4%} of pixels)."
    )


def run_exercise(code: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the learner's `code`; if a stub is still in place, say which one, in one sentence.

    An exercise's stub raises `NotImplementedError`, in this process or inside a Ray worker
    (Ray re-raises a task's error as an instance of the same class, and names the failed
    actor constructor in the message). Any other error is the learner's own and is raised
    unchanged, with its traceback.
    """
    try:
        return code(*args, **kwargs)
    except Exception as error:
        stub = _stub_in(error)
        if stub is None:
            raise
        raise AssertionError(
            f"{stub} is still the stub: replace `raise NotImplementedError()` there with your "
            "code (the markdown cell above says what it should do)."
        ) from None


def _stub_in(error: BaseException) -> str | None:
    """The function whose stub raised `error`, or None when `error` did not come from a stub."""
    # An error from a Ray worker names the task or actor method that raised it: "ray::A.f()".
    match = re.search(r"ray::([\w.]+)\(\).*?NotImplementedError", str(error), re.DOTALL)
    if match:
        return f"`{match.group(1)}`"
    if not isinstance(error, NotImplementedError):
        return None
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return f"`{frame.tb_frame.f_code.co_qualname}`" if frame else "a function"
