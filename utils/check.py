"""Check cells: do two sets of predictions agree, image by image?"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def assert_same_maps(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Fail unless `got` has exactly the ids of `expected`, each with an identical map.

    The message names the first missing, extra or different images, so a wrong
    answer is easy to trace back.
    """
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise AssertionError(
            f"{len(missing)} image(s) without a prediction {missing[:3]}, "
            f"{len(extra)} unexpected prediction(s) {extra[:3]}"
        )
    different = []
    for image_id, want in expected.items():
        have = np.asarray(got[image_id])
        if have.shape != want.shape:
            different.append(f"{image_id}: shape {have.shape} instead of {want.shape}")
        elif not np.array_equal(have, want):
            share = float(np.mean(have != want))
            different.append(f"{image_id}: {share:.2%} of pixels differ")
    if different:
        raise AssertionError(f"{len(different)} map(s) differ: " + "; ".join(different[:3]))
    print(f"OK: all {len(expected)} images predicted exactly once, identical to the reference.")
