"""Check cells: `assert_same_maps` accepts a last-bit flip and refuses another image's map."""

import numpy as np
import pytest

from utils.check import MIN_AGREEMENT, assert_same_maps


@pytest.fixture
def reference():
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 150, (100, 100), dtype=np.uint8) for name in "abc"}


def test_identical_maps_pass_and_say_so(reference, capsys):
    assert_same_maps({k: v.copy() for k, v in reference.items()}, reference)
    assert "all 3 images predicted exactly once" in capsys.readouterr().out


def test_a_pixel_flipped_on_a_near_tie_is_allowed(reference):
    got = {k: v.copy() for k, v in reference.items()}
    flips = round((1 - MIN_AGREEMENT) * got["b"].size)  # exactly the allowance: 1 of 10,000
    got["b"].flat[:flips] += 1
    assert_same_maps(got, reference)
    got["b"].flat[flips] += 1  # one more is too many
    with pytest.raises(AssertionError, match=r"b: only 99\.98% of pixels agree"):
        assert_same_maps(got, reference)


def test_an_image_given_another_images_map_fails(reference):
    swapped = {**reference, "a": reference["c"], "c": reference["a"]}
    with pytest.raises(AssertionError, match=r"2 map\(s\) are not their image's.*a: only"):
        assert_same_maps(swapped, reference)


def test_missing_extra_and_misshapen_maps_are_named(reference):
    with pytest.raises(AssertionError, match=r"1 image\(s\) without a prediction \['c'\]"):
        assert_same_maps({"a": reference["a"], "b": reference["b"]}, reference)
    with pytest.raises(AssertionError, match=r"1 unexpected prediction\(s\) \['d'\]"):
        assert_same_maps({**reference, "d": reference["a"]}, reference)
    with pytest.raises(AssertionError, match=r"a: shape \(100, 99\) instead of \(100, 100\)"):
        assert_same_maps({**reference, "a": reference["a"][:, :99]}, reference)
