"""Shared fixtures: the offline model, a few small images of every kind, a local Ray instance,
and a guard that fails any test that leaves torch on another number of threads than it found.

Helper functions live in helpers.py (`from helpers import photo`), not here.
"""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import photo
from PIL import Image

from utils.model import image_processor_class, offline_model


@pytest.fixture(autouse=True)
def torch_threads_unchanged():
    """Fail a test that changes torch's thread count and leaves it changed for the next tests."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)  # so that the tests after this one are not affected
        pytest.fail(
            f"the test left torch on {after} thread(s) instead of {before}; restore "
            "it (for example with try/finally) after torch.set_num_threads",
            pytrace=False,
        )


@pytest.fixture
def local_ray():
    """A local Ray instance (2 CPUs, the dashboard on 127.0.0.1, token authentication on).

    Starting Ray takes seconds, so the tests that ask for it run one after another and share
    one instance, stopped after the last of them (`pytest_runtest_teardown`): an idle Ray and
    its dashboard would take CPU from the tests after them.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, logging_level=logging.ERROR)
    return ray


def _uses_local_ray(item: pytest.Item | None) -> bool:
    return item is not None and "local_ray" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list) -> None:
    """Move the tests that use `local_ray` next to the first of them (others keep their order)."""
    users = [item for item in items if _uses_local_ray(item)]
    if users:
        first = items.index(users[0])
        others = [item for item in items if not _uses_local_ray(item)]
        items[:] = others[:first] + users + others[first:]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared Ray instance after the last test that uses it."""
    if _uses_local_ray(item) and not _uses_local_ray(nextitem):
        import ray

        ray.shutdown()


@pytest.fixture(scope="session")
def model():
    return offline_model(seed=201)


@pytest.fixture(scope="session")
def image_processor():
    return image_processor_class()()


@pytest.fixture
def mixed_images() -> list[Image.Image]:
    """Different sizes and modes in one batch, as a real photo folder has."""
    return [
        photo(96, 64, seed=1),
        photo(50, 120, seed=2).convert("L"),
        photo(130, 77, seed=3).convert("RGBA"),
        photo(64, 64, seed=4).convert("P"),
    ]
