"""The exercises: learner copies made from their solutions, and stubs that fail their checks.

nbval runs the solution notebooks, so each solution passes the check cell after it. These tests
cover the other half: the learner's copy is exactly its solution with the answers cleared, and
an untouched stub fails the check cell after it with a sentence that names the stub.
"""

import ast
import builtins
from pathlib import Path

import nbformat
import pytest

from utils.check import run_exercise
from utils.tools.exercises import BEGIN, END, STUB, clear_solutions, learner_copy, main

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
# The core notebooks where the learner writes Ray code, as the course outline promises.
EXERCISE_NOTEBOOKS = [
    "02_ray_tasks.ipynb",
    "03_ray_actors.ipynb",
    "04_actor_pool.ipynb",
    "05_ray_data.ipynb",
    "06_checkpoint_predictor.ipynb",
]


def test_each_ray_notebook_has_a_solution_with_an_exercise():
    assert [path.name for path in SOLUTIONS] == EXERCISE_NOTEBOOKS
    for path in SOLUTIONS:
        assert BEGIN in path.read_text(encoding="utf-8"), f"{path.name} has no exercise"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_the_learner_copy_is_the_solution_with_its_answers_cleared(solution):
    learner = ROOT / "notebooks" / solution.name
    expected = learner_copy(nbformat.read(solution, 4), solution.name)
    assert nbformat.read(learner, 4) == expected, (
        f"notebooks/{solution.name} is not its solution with the answers cleared: "
        "run `python -m utils.tools.exercises`"
    )


def test_the_generator_reports_nothing_out_of_date():
    assert main(["--check"]) == 0


def test_clear_solutions_keeps_the_indentation_and_everything_outside():
    source = f"def f(x):\n    '''Doc.'''\n    {BEGIN}\n    return x + 1\n    {END}\n\nf(1)"
    lines = clear_solutions(source).splitlines()
    assert lines == ["def f(x):", "    '''Doc.'''", *("    " + s for s in STUB), "", "f(1)"]


@pytest.mark.parametrize(
    "source", [f"{BEGIN}\nx = 1", f"x = 1\n{END}", f"{BEGIN}\n{BEGIN}\n{END}\n{END}"]
)
def test_clear_solutions_refuses_unbalanced_markers(source):
    with pytest.raises(ValueError, match="cell 7"):
        clear_solutions(source, "cell 7")


def test_run_exercise_names_the_stub_and_passes_other_errors_through():
    def segment(images):
        # YOUR CODE HERE
        raise NotImplementedError()

    with pytest.raises(AssertionError, match=r"`.*segment` is still the stub"):
        run_exercise(segment, [])
    with pytest.raises(ZeroDivisionError):
        run_exercise(lambda: 1 / 0)
    assert run_exercise(len, [1, 2]) == 2


def test_run_exercise_names_a_stub_that_raised_inside_a_ray_worker():
    class ActorDied(Exception):
        """What Ray raises when an actor's constructor failed: the worker's traceback as text."""

    message = (
        "died in its creation task, \x1b[36mray::Segmenter.__init__()\x1b[39m\nNotImplementedError"
    )

    def make_actor():
        raise ActorDied(message)

    with pytest.raises(AssertionError, match=r"`Segmenter.__init__` is still the stub"):
        run_exercise(make_actor)


class Placeholder:
    """Stands for whatever an earlier cell would have made; every use of it gives another."""

    def __getattr__(self, name):
        return Placeholder()

    def __call__(self, *args, **kwargs):
        return Placeholder()

    def __getitem__(self, key):
        return Placeholder()

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __index__(self):
        return 1

    __int__ = __index__

    def __float__(self):
        return 1.0


class CellNames(dict):
    """Names for exec: the notebook's imports and the stub cell's definitions, else placeholders."""

    def __missing__(self, name):
        if hasattr(builtins, name):
            raise KeyError(name)  # let exec fall back to the builtins
        return Placeholder()


def stub_and_check_cells(notebook):
    """(stub cell, check cell) pairs: each cell holding a stub and the code cell after it."""
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    return [(cell, code[i + 1]) for i, cell in enumerate(code) if STUB[1] in cell]


def notebook_imports(notebook):
    """The notebook's top-level import statements, as one piece of code."""
    lines = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            lines += [
                ast.unparse(node)
                for node in tree.body
                if isinstance(node, ast.Import | ast.ImportFrom)
            ]
    return "\n".join(lines)


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_an_untouched_stub_fails_the_check_after_it_and_names_itself(name):
    """Run each stub cell, then its check cell, without the cells before: the check must stop
    at the stub (before any Ray work starts) with the sentence `run_exercise` writes."""
    notebook = nbformat.read(ROOT / "notebooks" / name, 4)
    pairs = stub_and_check_cells(notebook)
    assert pairs, f"{name} has no stub"
    for stub, check in pairs:
        names = CellNames()
        exec(notebook_imports(notebook), {"__builtins__": builtins}, names)
        exec(stub, {"__builtins__": builtins}, names)
        with pytest.raises(AssertionError, match="is still the stub") as failure:
            exec(check, {"__builtins__": builtins}, names)
        stubbed = str(failure.value).split("`")[1].split(".")[0]
        assert stubbed in names, f"the check names `{stubbed}`, which the stub cell does not define"
