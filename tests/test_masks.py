"""Masks: PNG encoding, mask files, the Parquet layout and the ranking of classes.

Every expected value is written out by hand, so a test compares what the code produced with
what it should have produced, never with a copy of its own output.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from utils.masks import (
    MASK_COLUMNS,
    class_shares,
    decode_mask,
    encode_mask,
    masks_to_batch,
    read_mask,
    read_masks,
    write_masks,
)

# The masks the Parquet tests write, as plain lists. "a.png" and "d.png" have the same shape,
# so a reader that gave one image's mask to another would fail on their values.
HAND_MADE = {
    "a.png": [[0, 1, 2], [3, 4, 5]],
    "d.png": [[5, 4, 3], [2, 1, 0]],
    "sub/dir/b.jpg": [[7]],
    "c.png~flip-crop0.71-resize1.12": [[9, 9], [9, 9], [0, 149]],
    "übung 4.png": [[149, 0, 149, 0]],
}


def hand_made() -> dict[str, np.ndarray]:
    """Fresh uint8 arrays of HAND_MADE, as `predict` returns them."""
    return {image_id: np.array(rows, dtype=np.uint8) for image_id, rows in HAND_MADE.items()}


def assert_hand_made(got: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(HAND_MADE)
    for image_id, rows in HAND_MADE.items():
        assert got[image_id].dtype == np.uint8, image_id
        assert got[image_id].tolist() == rows, image_id


def png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """An image file made with Pillow alone, independently of `encode_mask`."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def noisy_png() -> bytes:
    """A mask PNG of a few kilobytes (noise does not compress), to cut short."""
    return encode_mask(np.random.default_rng(0).integers(0, 150, (40, 50), dtype=np.uint8))


# --- one mask as PNG ----------------------------------------------------------------------------


def test_a_uint8_mask_is_an_8_bit_grayscale_png():
    data = encode_mask(np.array([[0, 1, 2], [3, 4, 149]], dtype=np.uint8))
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (3, 2))
        assert np.asarray(image).tolist() == [[0, 1, 2], [3, 4, 149]]


def test_ids_above_255_are_a_16_bit_png():
    data = encode_mask(np.array([[0, 255], [256, 65535]], dtype=np.int32))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode.startswith("I")
        assert np.asarray(image).tolist() == [[0, 255], [256, 65535]]


def test_decoding_gives_back_the_ids_and_a_dtype_that_holds_them():
    eight = decode_mask(png(np.array([[3, 0], [0, 150]], dtype=np.uint8)))
    assert eight.dtype == np.uint8 and eight.tolist() == [[3, 0], [0, 150]]
    sixteen = decode_mask(encode_mask(np.array([[1, 300, 65535]], dtype=np.int64)))
    assert sixteen.dtype == np.uint16 and sixteen.tolist() == [[1, 300, 65535]]


@pytest.mark.parametrize(
    ("mask", "problem"),
    [
        (np.zeros((2, 2, 3), np.uint8), r"shape \(height, width\), not \(2, 2, 3\)"),
        (np.zeros((0, 4), np.uint8), r"empty mask \(shape \(0, 4\)\)"),
        (np.zeros((2, 2), np.float32), "integer class ids, not float32"),
        (np.zeros((2, 2), bool), "integer class ids, not bool"),
        (np.array([[0, 70_000]]), r"0\.\.65535 .* holds 0\.\.70000"),
        (np.array([[-1, 3]]), r"0\.\.65535 .* holds -1\.\.3"),
    ],
)
def test_what_png_cannot_hold_is_refused_by_name(mask, problem):
    with pytest.raises(ValueError, match=problem):
        encode_mask(mask)


def test_what_is_not_a_complete_grayscale_png_is_refused():
    good = noisy_png()
    cases = {
        "not an image file": b"these are notes",
        "truncated": good[: len(good) // 2],
        "stored as PNG, this is JPEG": png(np.zeros((4, 4), np.uint8), "JPEG"),
        "mode RGB": png(np.zeros((4, 4, 3), np.uint8)),
    }
    for problem, data in cases.items():
        with pytest.raises(ValueError, match=problem):
            decode_mask(data)


def test_a_mask_file_is_read_and_a_partial_one_is_named(tmp_path):
    path = tmp_path / "masks" / "a.jpg.png"
    path.parent.mkdir()
    path.write_bytes(png(np.array([[1, 2], [3, 4]], dtype=np.uint8)))
    assert read_mask(path).tolist() == [[1, 2], [3, 4]]
    path.write_bytes(noisy_png()[:300])
    with pytest.raises(ValueError, match=r"a\.jpg\.png is not a mask: .*truncated"):
        read_mask(path)
    with pytest.raises(FileNotFoundError):
        read_mask(tmp_path / "gone.png")


# --- ranking classes ----------------------------------------------------------------------------


def test_class_shares_are_largest_first_with_their_share():
    assert class_shares(np.array([[3, 3, 3, 1]], np.uint8)) == [(3, 0.75), (1, 0.25)]
    assert class_shares(np.array([[0], [2], [2], [2], [5]])) == [(2, 0.6), (0, 0.2), (5, 0.2)]
    shares = class_shares(np.array([[149, 7]], np.uint16))
    assert all(type(k) is int and type(share) is float for k, share in shares)


def test_classes_of_equal_area_keep_the_order_of_their_ids():
    assert class_shares(np.array([[9, 4, 9, 4, 1, 1]])) == [(1, 1 / 3), (4, 1 / 3), (9, 1 / 3)]
    assert class_shares(np.zeros((0, 3), np.uint8)) == []


# --- the Parquet layout -------------------------------------------------------------------------


def test_round_trip_gives_every_image_its_own_mask(tmp_path):
    path = write_masks(hand_made(), tmp_path / "out" / "masks.parquet")
    assert path.is_file()
    assert_hand_made(read_masks(path))


def test_the_files_hold_ids_and_png_bytes_that_any_reader_can_decode(tmp_path):
    """The layout the module documents, read with pyarrow and Pillow, not with read_masks."""
    write_masks(hand_made(), tmp_path / "masks.parquet")
    table = pq.read_table(tmp_path / "masks.parquet")
    assert table.column_names == list(MASK_COLUMNS) == ["image_id", "mask"]
    assert table.schema.field("mask").type == pa.binary()
    for image_id, data in zip(*(table.column(c).to_pylist() for c in MASK_COLUMNS)):
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            assert np.asarray(image).tolist() == HAND_MADE[image_id]


def test_batches_written_as_a_folder_of_parts_read_back_as_one_dict(tmp_path):
    """Part files, as Dataset.write_parquet leaves them; extra columns are ignored."""
    masks = hand_made()
    ids = list(masks)
    for part, (start, stop) in enumerate([(0, 1), (1, len(ids))]):
        batch = masks_to_batch(ids[start:stop], [masks[i] for i in ids[start:stop]])
        assert sorted(batch) == ["image_id", "mask"] and batch["mask"].dtype == object
        assert all(data.startswith(b"\x89PNG") for data in batch["mask"])
        batch["worker"] = np.array(["w1"] * (stop - start))
        pq.write_table(pa.table(batch), tmp_path / f"part-{part}.parquet")
    assert_hand_made(read_masks(tmp_path))


def test_wide_class_ids_survive_the_round_trip(tmp_path):
    wide = {"x": np.array([[0, 300], [65535, 7]], dtype=np.int32)}
    got = read_masks(write_masks(wide, tmp_path / "m.parquet"))
    assert got["x"].dtype == np.uint16 and got["x"].tolist() == [[0, 300], [65535, 7]]


def test_duplicate_ids_are_reported(tmp_path):
    write_masks(hand_made(), tmp_path / "one.parquet")
    write_masks({"a.png": np.zeros((2, 3), np.uint8)}, tmp_path / "two.parquet")
    with pytest.raises(ValueError, match=r"'a\.png' appears more than once"):
        read_masks(tmp_path)


def test_malformed_rows_are_reported_with_their_image(tmp_path):
    pixel = png(np.zeros((1, 1), np.uint8))
    cases = {
        "not_png": ({"image_id": ["x"], "mask": [b"12345"]}, r"image 'x' .*not an image file"),
        "no_mask": (
            {"image_id": ["y"], "mask": pa.array([None], pa.binary())},
            r"image 'y' .* has no mask",
        ),
        "no_id": (
            {"image_id": pa.array([None], pa.string()), "mask": [pixel]},
            r"no_id\.parquet has a row without an image_id",
        ),
    }
    for name, (columns, problem) in cases.items():
        pq.write_table(pa.table(columns), tmp_path / f"{name}.parquet")
        with pytest.raises(ValueError, match=problem):
            read_masks(tmp_path / f"{name}.parquet")


def test_missing_column_names_the_file(tmp_path):
    pq.write_table(pa.table({"image_id": ["x"], "png": [b"1"]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p\.parquet lacks column\(s\) \['mask'\]"):
        read_masks(tmp_path)


def test_nothing_to_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_masks(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no .parquet files"):
        read_masks(tmp_path)


def test_bad_masks_are_refused_when_writing_with_their_image():
    with pytest.raises(ValueError, match="2 image ids but 1 masks"):
        masks_to_batch(["a", "b"], [np.zeros((2, 2), np.uint8)])
    with pytest.raises(ValueError, match=r"mask for 'b': .*shape \(height, width\)"):
        masks_to_batch(["a", "b"], [np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(ValueError, match="mask for 'a': .*not float32"):
        masks_to_batch(["a"], [np.zeros((2, 2), np.float32)])


@pytest.mark.slow
def test_ray_data_writes_the_layout_read_masks_reads(tmp_path, local_ray):
    masks = hand_made()
    source = local_ray.data.from_items([{"image_id": i} for i in masks])
    source.map_batches(
        lambda batch: masks_to_batch(batch["image_id"], [masks[i] for i in batch["image_id"]]),
        batch_size=2,
    ).write_parquet(str(tmp_path / "ray"))
    assert_hand_made(read_masks(tmp_path / "ray"))
