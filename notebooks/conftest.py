"""nbval runs the solution of each exercise notebook (`solutions/`), not the learner's copy.

The learner's copies are tested another way (`tests/test_exercises.py`): each is its solution
with the answers cleared, and each of its stubs fails the check cell that follows it.
"""

from pathlib import Path

collect_ignore = [path.name for path in Path(__file__).parent.glob("solutions/*.ipynb")]
