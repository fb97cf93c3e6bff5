import numpy as np

from utils import ade20k_palette, get_labels


def test_150_labels_in_hub_order():
    id2label, label2id = get_labels()
    assert len(id2label) == 150
    assert (id2label[0], id2label[1], id2label[2], id2label[149]) == (
        "wall",
        "building",
        "sky",
        "flag",
    )
    assert all(label2id[name] == index for index, name in id2label.items())


def test_palette_row_k_is_the_colour_of_class_k():
    palette = ade20k_palette()
    assert palette.shape == (150, 3) and palette.dtype == np.uint8
    # wall, building, sky: the first ADE20K colours; no background row in front
    assert palette[:3].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230]]
    assert palette[149].tolist() == [92, 0, 255]
