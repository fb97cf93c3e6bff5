"""nbval runs the solution of each exercise notebook (`solutions/`), not the learner's copy.

The learner's copies are tested another way (`tests/test_exercises.py`): each is its solution
with the answers cleared, and each of its stubs fails the check cell that follows it.
"""

from pathlib import Path

collect_ignore = [path.name for path in Path(__file__).parent.glob("solutions/*.ipynb")]


def pytest_collection_modifyitems(items: list) -> None:
    """Run the notebooks in course order, wherever they sit (the solutions of 02 to 06 are in a
    subfolder): the recap, 07, reads back the runs that 02 to 06 saved. Other tests keep their
    places, and each notebook's cells their order."""
    places = [i for i, item in enumerate(items) if item.path.suffix == ".ipynb"]
    in_order = sorted((items[i] for i in places), key=lambda item: item.path.name)
    for place, item in zip(places, in_order):
        items[place] = item
