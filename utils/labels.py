"""The 150 ADE20K (SceneParse150) classes and their colours, shipped with the package."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

import numpy as np


@cache
def _ade20k() -> dict:
    return json.loads(files("utils").joinpath("ade20k.json").read_text(encoding="utf-8"))


def get_labels() -> tuple[dict[int, str], dict[str, int]]:
    """Return `(id2label, label2id)` for the 150 ADE20K classes (0 is "wall", 149 is "flag").

    Names are verbatim from the SegFormer ADE20K config, including the trailing
    space in "bed ", so they round-trip with a hub model's own `id2label`.
    """
    id2label = dict(enumerate(_ade20k()["labels"]))
    label2id = {name: index for index, name in id2label.items()}
    return id2label, label2id


def ade20k_palette() -> np.ndarray:
    """RGB colour of each class as a (150, 3) uint8 array: row k is the colour of class id k.

    There is no background row: predictions start at class 0 ("wall"), and so does
    the palette. (The 2022 original prepended a background colour and painted every
    class in its neighbour's colour.)
    """
    return np.asarray(_ade20k()["palette"], dtype=np.uint8)
