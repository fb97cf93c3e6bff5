import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from utils import assert_same_maps, predict
from utils.inference import reference_predict, upsample_argmax


def test_predict_equals_transformers_on_mixed_sizes_and_modes(model, image_processor, mixed_images):
    got = predict(model, image_processor, mixed_images)
    want = reference_predict(model, image_processor, mixed_images)
    assert [m.shape for m in got] == [(im.height, im.width) for im in mixed_images]
    for mine, theirs in zip(got, want, strict=True):
        assert mine.dtype == np.uint8
        np.testing.assert_array_equal(mine, theirs)


def test_predict_of_nothing_is_nothing(model, image_processor):
    assert predict(model, image_processor, []) == []


def reference(logits, size):
    return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [(37, 53), (128, 128), (300, 451), (20, 9)])
def test_upsample_argmax_is_exact(channels_last, size):
    generator = torch.Generator().manual_seed(sum(size))
    logits = torch.randn(1, 150, 32, 32, generator=generator) * 3
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        upsample_argmax(logits[0], size), reference(logits[0], size), rtol=0, atol=0
    )


def test_upsample_argmax_peaky_logits_keep_few_classes():
    logits = torch.full((150, 16, 16), -5.0)
    logits[7, :, :8] = 5.0
    logits[42, :, 8:] = 5.0
    result = upsample_argmax(logits, (64, 64))
    assert set(result.unique().tolist()) == {7, 42}
    torch.testing.assert_close(result, reference(logits, (64, 64)), rtol=0, atol=0)


def test_exact_ties_go_to_the_lowest_class_like_the_reference():
    logits = torch.zeros(150, 4, 4)
    logits[[3, 90, 149]] = 1.0
    assert upsample_argmax(logits, (100, 100)).unique().tolist() == [3]  # plane by plane
    # torch's channels-last kernel (also used for small outputs) sums the SIMD tail's
    # classes in another order: class 149 comes out one ulp higher at a few pixels.
    for size in [(10, 10), (100, 100)]:
        for layout in (logits, logits[None].contiguous(memory_format=torch.channels_last)[0]):
            result = upsample_argmax(layout, size)
            torch.testing.assert_close(result, reference(layout, size), rtol=0, atol=0)
            assert 90 not in result
    single = torch.zeros(150, 4, 4)
    single[12] = 2.0
    assert upsample_argmax(single, (5, 7)).unique().tolist() == [12]


def test_a_model_travels_as_its_recipe_and_predicts_in_a_fresh_process(
    tmp_path, model, image_processor
):
    """What the course ships to workers: never the model object (a used transformers model
    cannot be pickled at all), its recipe (config and weights), rebuilt where it runs."""
    import subprocess
    import sys

    from ray import cloudpickle  # what ray.put uses

    from utils.model import model_recipe

    with torch.inference_mode():
        model(pixel_values=torch.zeros(1, 3, 64, 64))  # a used model carries unpicklable hooks
    with pytest.raises(TypeError, match="ContextVar"):
        cloudpickle.dumps(model)
    (tmp_path / "recipe.pkl").write_bytes(cloudpickle.dumps(model_recipe(model)))
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), np.uint8)).save(image)
    code = (
        "import pickle\nimport numpy as np\nfrom PIL import Image\nfrom utils import predict\n"
        "from utils.model import build_replica, image_processor_class\n"
        f"recipe = pickle.loads(open({str(tmp_path / 'recipe.pkl')!r}, 'rb').read())\n"
        f"mask = predict(build_replica(recipe), image_processor_class()(), "
        f"[Image.open({str(image)!r})])[0]\n"
        f"np.save({str(tmp_path / 'mask.npy')!r}, mask)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    here = predict(model, image_processor, [Image.open(image)])[0]
    assert_same_maps({"image": np.load(tmp_path / "mask.npy")}, {"image": here})


def test_maps_agree_across_threads_and_batch_splits(model, image_processor, mixed_images):
    """A 1-thread Ray worker with small batches agrees with a multi-thread loop, within the
    check cells' tolerance: default kernels may flip a pixel on a near-tie, no more."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = predict(model, image_processor, mixed_images)
        torch.set_num_threads(1)
        apart = [m for image in mixed_images for m in predict(model, image_processor, [image])]
    finally:
        torch.set_num_threads(threads)
    assert_same_maps(dict(enumerate(apart)), dict(enumerate(together)))


def tricky_logits(kind, classes, h, w, seed):
    """Scores full of ties and near-ties, where only exact arithmetic gets every pixel."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(classes, h, w, generator=generator)
    if kind == "quantised":  # exact ties between classes, and between pixels' candidates
        return (logits * 2).round()
    if kind == "duplicated":  # whole classes tied with a later twin
        twins = torch.randint(0, classes, (classes // 3,), generator=generator)
        logits[classes - twins.numel() :] = logits[twins]
        return logits
    if kind == "close":  # a few classes within float rounding of each other
        leader = logits[:1] * 0.1 + 5
        nudges = torch.randint(-3, 4, (5, h, w), generator=generator) * 2e-7
        logits[::31][:5] = leader + nudges[: logits[::31].shape[0]]
        return logits
    return logits * 3


@pytest.mark.parametrize("channels_last", [False, True], ids=["planar", "channels_last"])
@pytest.mark.parametrize("kind", ["quantised", "duplicated", "close", "plain"])
@pytest.mark.parametrize(
    ("classes", "grid", "size"),
    [
        (150, (32, 29), (300, 451)),  # upsampling by odd factors
        (150, (24, 24), (50, 70)),  # small output: torch's channels-last kernel for both layouts
        (45, (20, 33), (13, 9)),  # downsampling
        (21, (9, 40), (1, 123)),  # a single row
        (
            13,
            (16, 12),
            (400, 1),
        ),  # a single column, from 16 rows (torch's index unsure: plain path)
        (150, (17, 19), (17, 19)),  # same size: torch copies
    ],
)
def test_upsample_argmax_is_exact_on_ties_and_near_ties(
    channels_last, kind, classes, grid, size, monkeypatch
):
    monkeypatch.setattr(importlib.import_module("utils._upsample"), "_PLAIN_UP_TO", 0)  # fast path
    logits = tricky_logits(kind, classes, *grid, seed=classes + size[0])
    if channels_last:
        logits = logits[None].contiguous(memory_format=torch.channels_last)[0]
    torch.testing.assert_close(
        upsample_argmax(logits, size), reference(logits, size), rtol=0, atol=0
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_upsample_argmax_takes_the_plain_path_for_non_finite_scores(bad):
    logits = torch.randn(20, 8, 8, generator=torch.Generator().manual_seed(3))
    logits[4, 2, 3] = bad
    torch.testing.assert_close(
        upsample_argmax(logits, (30, 30)), reference(logits, (30, 30)), rtol=0, atol=0
    )


@pytest.fixture(scope="module")
def model_logits(model, image_processor):
    """SegFormer's channels-last logits for a few photos, as `predict` computes them."""
    from helpers import photo

    images = [photo(683, 512, seed=5), photo(451, 300, seed=6)]
    pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        return model(pixel_values=pixels).logits


@pytest.mark.parametrize("size", [(512, 683), (300, 451), (64, 64), (97, 31)])
def test_upsample_argmax_is_exact_on_model_logits(model_logits, size, monkeypatch):
    module = importlib.import_module("utils._upsample")
    monkeypatch.setattr(module, "_PLAIN_UP_TO", 0)  # the fast path even for small outputs
    calls = {"_exact": 0, "_upsample_all": 0}

    def counted(name):
        original = getattr(module, name)

        def spy(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return spy

    for name in calls:
        monkeypatch.setattr(module, name, counted(name))
    for logits in model_logits:
        assert logits.stride(0) == 1  # channels-last, as on the CPU
        for layout in (logits, logits.contiguous()):
            torch.testing.assert_close(
                upsample_argmax(layout, size), reference(layout, size), rtol=0, atol=0
            )
    assert calls["_upsample_all"] == 0  # the fast path did all the work...
    if size[0] > 200:  # ...with exact passes for unsettled pixels at full size
        assert calls["_exact"] > 2 * len(model_logits)


PEAK_MEMORY_PROBE = """
import resource, sys
sys.path.insert(0, "tests")
from helpers import photo
from utils.inference import PREDICT_BATCH, predict
from utils.model import image_processor_class, offline_model

def peak_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

model, processor = offline_model(seed=1), image_processor_class()()
images = [photo(512, 384, seed=i) for i in range(2 * PREDICT_BATCH)]
predict(model, processor, images[:2])  # allocator and kernels warm
before = peak_kb()
one = predict(model, processor, images[:PREDICT_BATCH])
after_one = peak_kb()
two = predict(model, processor, images)
print("PEAK_KB", before, after_one, peak_kb(), len(one), len(two))
"""


@pytest.mark.slow
def test_predict_memory_does_not_grow_with_the_number_of_images():
    """A caller may pass hundreds of images; `predict` runs them PREDICT_BATCH at a time, so its
    peak memory for 2 batches' worth is that of one batch (one pass over 16 images would need
    about 140 MB more per extra image). Measured in a fresh process: its peak is its own."""
    import subprocess
    import sys
    from pathlib import Path

    from utils.inference import PREDICT_BATCH

    done = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_PROBE],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    before, after_one, after_two, one, two = map(int, done.stdout.split("PEAK_KB", 1)[1].split())
    assert (one, two) == (PREDICT_BATCH, 2 * PREDICT_BATCH)
    growth = {"one batch": (after_one - before) / 1024, "two batches": (after_two - before) / 1024}
    extra = growth["two batches"] - growth["one batch"]
    assert extra < 300, f"peak memory grew by {extra:.0f} MB for one more batch: {growth}"
