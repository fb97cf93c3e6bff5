import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils import predict
from utils.predict import reference_predict, upsample_argmax


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
    torch.testing.assert_close(upsample_argmax(logits[0], size), reference(logits[0], size),
                               rtol=0, atol=0)


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
    assert upsample_argmax(logits, (10, 10)).unique().tolist() == [3]
    single = torch.zeros(150, 4, 4)
    single[12] = 2.0
    assert upsample_argmax(single, (5, 7)).unique().tolist() == [12]


def test_a_model_unpickled_in_a_fresh_process_still_predicts(tmp_path, model):
    """What Ray does with `ray.put(model)`: transformers 5 needs the model class re-registered."""
    import subprocess
    import sys

    from utils.model import shippable_copy

    with torch.inference_mode():
        model(pixel_values=torch.zeros(1, 3, 64, 64))  # a used model carries unpicklable hooks
    from ray import cloudpickle  # what ray.put uses

    with pytest.raises(TypeError, match="ContextVar"):
        cloudpickle.dumps(model)
    (tmp_path / "model.pkl").write_bytes(cloudpickle.dumps(shippable_copy(model)))
    code = (
        "import pickle, sys\nfrom PIL import Image\nfrom utils import predict\n"
        "from utils.model import image_processor_class\n"
        f"model = pickle.loads(open({str(tmp_path / 'model.pkl')!r}, 'rb').read())\n"
        "print(predict(model, image_processor_class()(), [Image.new('RGB', (40, 30))])[0].shape)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "(30, 40)", result.stderr[-2000:]


def test_maps_do_not_depend_on_threads_or_batch_split(model, image_processor, mixed_images):
    """A 1-thread Ray worker with small batches must agree with a multi-thread loop."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = predict(model, image_processor, mixed_images)
        torch.set_num_threads(1)
        apart = [m for image in mixed_images for m in predict(model, image_processor, [image])]
        pairs = predict(model, image_processor, mixed_images[:2])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(together, apart, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(together[:2], pairs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_scores_are_bit_identical_across_thread_counts(model):
    from utils.predict import ReproducibleConvolutions

    pixels = torch.randn(3, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode(), ReproducibleConvolutions():
            torch.set_num_threads(2)
            two = model(pixel_values=pixels).logits
            torch.set_num_threads(1)
            one = model(pixel_values=pixels).logits
            pair = model(pixel_values=pixels[:2]).logits
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert torch.equal(pair, two[:2])


def test_scores_do_not_change_from_16_images_a_batch(model):
    """From 16 images a batch PyTorch would switch convolutions to NNPACK, other bits."""
    from utils.predict import ReproducibleConvolutions

    pixels = torch.randn(16, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), ReproducibleConvolutions():
        sixteen = model(pixel_values=pixels).logits
        pair = model(pixel_values=pixels[:2]).logits
    assert torch.equal(sixteen[:2], pair)
