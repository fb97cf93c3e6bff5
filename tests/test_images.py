import io

import numpy as np
import pytest
from PIL import Image

from utils import convert_image_to_rgb


def rgb_pixel(image, xy=(0, 0)):
    return convert_image_to_rgb(image).getpixel(xy)


def test_rgb_is_returned_unchanged():
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    assert convert_image_to_rgb(image) is image


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("L", 128, (128, 128, 128)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ],
)
def test_plain_modes(mode, value, expected):
    result = rgb_pixel(Image.new(mode, (4, 4), value))
    assert result == expected


def test_alpha_is_composited_on_white():
    image = Image.new("RGBA", (2, 1), (200, 0, 0, 255))
    image.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent black shows as white
    rgb = convert_image_to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (200, 0, 0) and rgb.getpixel((1, 0)) == (255, 255, 255)


def test_la_half_transparent():
    image = Image.new("LA", (1, 1), (0, 128))
    assert rgb_pixel(image)[0] in (127, 128)


def test_palette_with_transparency():
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 1
    rgb = convert_image_to_rgb(image)
    assert rgb.getpixel((0, 0)) == (255, 0, 0) and rgb.getpixel((1, 0)) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_not_clipped():
    pixels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    rgb = np.asarray(convert_image_to_rgb(image))
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_32_bit_grayscale_is_read_as_16_bit_data_and_floats_as_0_to_1():
    pixels = np.array([[0, 32768, 65535, 70000, -5]], dtype=np.int32)
    image = Image.fromarray(pixels, mode="I")
    assert np.asarray(convert_image_to_rgb(image))[0, :, 0].tolist() == [0, 128, 255, 255, 0]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32), mode="F")
    assert np.asarray(convert_image_to_rgb(floats))[0, :, 0].tolist() == [0, 128, 255, 255]


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert convert_image_to_rgb(Image.open(buffer)).size == (2, 4)


def test_works_as_a_datasets_map_function():
    import datasets

    dataset = datasets.Dataset.from_dict(
        {"image": [Image.new("L", (3, 3), 7)], "image_id": ["a"]},
        features=datasets.Features(
            {"image": datasets.Image(), "image_id": datasets.Value("string")}
        ),
    )
    mapped = dataset.map(convert_image_to_rgb)
    assert mapped[0]["image"].mode == "RGB" and mapped[0]["image_id"] == "a"


def test_other_input_is_refused():
    with pytest.raises(TypeError, match="PIL image"):
        convert_image_to_rgb(np.zeros((2, 2, 3)))
