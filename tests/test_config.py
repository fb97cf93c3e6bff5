from pathlib import Path

import pytest

from utils.config import DEFAULT_MODEL, CourseConfig


def test_defaults_serve_a_learner():
    config = CourseConfig.from_env({})
    assert config.num_images == 160
    assert config.model == DEFAULT_MODEL
    assert config.data_dir is None and config.ray_address is None
    assert not config.hub_offline


def test_values_are_read_from_the_environment():
    config = CourseConfig.from_env(
        {
            "COURSE_NUM_IMAGES": "8",
            "COURSE_DATA_DIR": "/data/pics",
            "COURSE_MODEL": "./m",
            "HF_HUB_OFFLINE": "1",
            "RAY_ADDRESS": "ray://head:10001",
            "COURSE_SEED": "7",
        }
    )
    assert config.num_images == 8 and config.seed == 7
    assert config.data_dir == Path("/data/pics") and config.model == "./m"
    assert config.hub_offline and config.ray_address == "ray://head:10001"


@pytest.mark.parametrize(
    "name, value",
    [
        ("COURSE_NUM_IMAGES", "many"),
        ("COURSE_NUM_IMAGES", "0"),
        ("COURSE_DEVICE", "tpu"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        CourseConfig.from_env({name: value})
