"""Write the learner's notebooks from their solutions, by nbgrader's convention.

Each notebook with an exercise has its source of truth in `notebooks/solutions/`. There, the
answer to an exercise sits between a `### BEGIN SOLUTION` line and an `### END SOLUTION` line;
in the learner's copy (same name, in `notebooks/`) that region becomes `# YOUR CODE HERE` and
`raise NotImplementedError()`, at the indentation of the first marker, as nbgrader writes it.
Nothing else differs. nbval runs the solutions; the tests check that every learner copy is what
this script writes and that each stub fails the check cell after it.

    python -m utils.tools.exercises          # rewrite the learner notebooks
    python -m utils.tools.exercises --check  # exit 1 if a learner notebook is out of date
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")


def clear_solutions(source: str, where: str = "cell") -> str:
    """`source` with each solution region replaced by the stub; `where` names it in errors."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another region")
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + stub for stub in STUB]
            inside = True
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} is never closed")
    return "\n".join(out)


def learner_copy(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The learner's version of a solution notebook: every solution region cleared."""
    notebook = copy.deepcopy(solution)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.source = clear_solutions(cell.source, f"{name}, cell {index}")
    return notebook


def solution_notebooks(notebooks: Path = NOTEBOOKS) -> list[Path]:
    """The solution notebooks, in course order."""
    return sorted((notebooks / "solutions").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date copies")
    args = parser.parse_args(argv)
    stale = []
    for solution_path in solution_notebooks():
        target = NOTEBOOKS / solution_path.name
        wanted = nbformat.writes(learner_copy(nbformat.read(solution_path, 4), solution_path.name))
        wanted += "\n"
        if target.is_file() and target.read_text(encoding="utf-8") == wanted:
            continue
        stale.append(target)
        if not args.check:
            target.write_text(wanted, encoding="utf-8")
            print(f"wrote {target.relative_to(NOTEBOOKS.parent)}")
    if args.check and stale:
        names = ", ".join(path.name for path in stale)
        print(f"out of date: {names}; run `python -m utils.tools.exercises`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
