import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from PIL import Image

from utils import ade20k_palette, display_example_images, visualize_predictions
from utils.config import CourseConfig
from utils.data import load_test_images
from utils.visualisation import colorize, overlay


def test_class_k_is_painted_in_the_colour_of_class_k():
    palette = ade20k_palette()
    segmentation = np.array([[0, 2], [149, 7]], dtype=np.uint8)
    picture = colorize(segmentation)
    assert picture[0, 0].tolist() == palette[0].tolist() == [120, 120, 120]  # wall
    assert picture[0, 1].tolist() == [6, 230, 230]  # sky, in RGB order
    assert picture[1, 0].tolist() == palette[149].tolist()


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="class id 150"):
        colorize(np.array([[150]]))


def test_overlay_works_for_grayscale_and_checks_the_shape():
    gray = Image.new("L", (3, 2), 100)
    blended = overlay(gray, np.zeros((2, 3), dtype=np.uint8), alpha=0.5)
    assert blended.shape == (2, 3, 3) and blended[0, 0].tolist() == [110, 110, 110]
    with pytest.raises(ValueError, match="does not fit"):
        overlay(gray, np.zeros((3, 2), dtype=np.uint8))


def test_figures_have_a_legend_of_present_classes():
    image = Image.new("RGBA", (8, 4))
    segmentation = np.zeros((4, 8), dtype=np.uint8)
    segmentation[:, 2:] = 2
    figure = visualize_predictions(image, segmentation_map=segmentation)
    labels = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    assert labels == ["sky (75%)", "wall (25%)"]  # largest first, not in the order of ids


def test_example_grid_titles_are_image_ids():
    dataset = load_test_images(4, CourseConfig(hub_offline=True))
    figure = display_example_images(dataset, n=2, seed=0, columns=2)
    titles = [ax.get_title().split("\n")[0] for ax in figure.axes if ax.get_title()]
    assert len(titles) == 2 and set(titles) <= set(dataset["image_id"])
