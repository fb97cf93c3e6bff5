"""Parquet round trip of masks: ids, shapes, dtypes and values survive; bad files fail clearly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from utils.masks import MASK_COLUMNS, decode_mask, masks_to_batch, read_masks, write_masks


def random_masks(seed: int = 0, dtype=np.uint8, high: int = 150) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(5, 7), (1, 1), (13, 4), (6, 6)]
    ids = ["a.png", "sub/dir/b.jpg", "c.png~flip-crop0.71-resize1.12", "übung 4.png"]
    return {i: rng.integers(0, high, size=s).astype(dtype) for i, s in zip(ids, shapes)}


def assert_equal_masks(got: dict, want: dict) -> None:
    assert list(got) == list(want) or set(got) == set(want)
    for image_id, mask in want.items():
        assert got[image_id].dtype == mask.dtype, image_id
        assert got[image_id].shape == mask.shape, image_id
        np.testing.assert_array_equal(got[image_id], mask)


def test_round_trip_keeps_ids_shapes_and_values(tmp_path):
    masks = random_masks()
    path = write_masks(masks, tmp_path / "out" / "masks.parquet")
    assert path.is_file()
    assert_equal_masks(read_masks(path), masks)


def test_round_trip_of_wide_class_ids(tmp_path):
    masks = random_masks(seed=1, dtype=np.int32, high=70_000)
    assert_equal_masks(read_masks(write_masks(masks, tmp_path / "m.parquet")), masks)


def test_masks_changed_by_one_pixel_are_told_apart(tmp_path):
    masks = random_masks()
    stored = read_masks(write_masks(masks, tmp_path / "m.parquet"))
    masks["a.png"][2, 3] += 1
    assert not np.array_equal(stored["a.png"], masks["a.png"])


def test_batch_layout_and_folder_of_files(tmp_path):
    """A folder of part files, as Dataset.write_parquet leaves, reads back as one dict."""
    masks = random_masks()
    ids, maps = list(masks), list(masks.values())
    for part, (start, stop) in enumerate([(0, 1), (1, 4)]):
        batch = masks_to_batch(ids[start:stop], maps[start:stop])
        assert set(batch) == set(MASK_COLUMNS)
        assert batch["height"].dtype == np.int32 and batch["mask"].dtype == object
        batch["worker"] = np.array(["w1"] * (stop - start))  # extra columns are ignored
        pq.write_table(pa.table(batch), tmp_path / f"part-{part}.parquet")
    assert_equal_masks(read_masks(tmp_path), masks)


def test_duplicate_ids_are_reported(tmp_path):
    masks = random_masks()
    write_masks(masks, tmp_path / "one.parquet")
    write_masks({"a.png": masks["a.png"]}, tmp_path / "two.parquet")
    with pytest.raises(ValueError, match=r"'a\.png' appears more than once"):
        read_masks(tmp_path)


def test_mask_bytes_that_do_not_fit_the_shape(tmp_path):
    table = pa.table({"image_id": ["x"], "height": pa.array([3], pa.int32()),
                      "width": pa.array([3], pa.int32()), "mask": [b"12345"]})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="'x' has 5 bytes"):
        read_masks(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="incomplete"):
        decode_mask("y", 0, 3, b"")


def test_missing_column_names_the_file(tmp_path):
    pq.write_table(pa.table({"image_id": ["x"], "mask": [b"1"]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p\.parquet lacks column\(s\) \['height', 'width'\]"):
        read_masks(tmp_path)


def test_nothing_to_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_masks(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no .parquet files"):
        read_masks(tmp_path)


def test_bad_masks_are_refused_when_writing():
    with pytest.raises(ValueError, match="2 image ids but 1 masks"):
        masks_to_batch(["a", "b"], [np.zeros((2, 2), np.uint8)])
    with pytest.raises(ValueError, match="expected \\(height, width\\)"):
        masks_to_batch(["a"], [np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(ValueError, match="dtype float32"):
        masks_to_batch(["a"], [np.zeros((2, 2), np.float32)])


@pytest.mark.slow
def test_ray_data_writes_the_layout_read_masks_reads(tmp_path):
    ray = pytest.importorskip("ray")
    masks = random_masks()
    ids = list(masks)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        source = ray.data.from_items([{"image_id": i} for i in ids])
        source.map_batches(
            lambda batch: masks_to_batch(batch["image_id"], [masks[i] for i in batch["image_id"]]),
            batch_size=2,
        ).write_parquet(str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    assert_equal_masks(read_masks(tmp_path / "ray"), masks)
