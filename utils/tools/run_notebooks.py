"""Execute every notebook of the course as a learner would, and time each one.

    python -m utils.tools.run_notebooks [NAME ...] [--out build/executed] [--no-estimate]

Runs the notebooks in course order (or only those named, such as `07_recap`), each in a fresh
kernel started in its own folder (for the exercise notebooks, their solutions, so that every
check passes), and writes the executed copies to `--out`. Before the first one it measures this
machine as `make check-workshop` does and estimates each notebook's minutes; afterwards it
prints the estimate beside the measured time for each notebook (also written to
`--out`/timings.md), so an instructor sees how far to trust the check's estimate. Exits 1 when
a notebook fails; the others still run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from utils.tools import workshop_check as wc

NOTEBOOKS_DIR = wc.NOTEBOOKS_DIR


def course_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Every numbered notebook in course order, the solution copy where there is one."""
    found = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        solution = folder / "solutions" / path.name
        found.append(solution if solution.exists() else path)
    return found


def execute(path: Path, out: Path, timeout_s: int = 1800) -> tuple[float, str | None]:
    """Run `path` in a fresh kernel in its folder; write the executed copy into `out`.

    Returns (seconds, None) or (seconds, the error's first line) when a cell failed.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from utils.timing import Stopwatch

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    error = None
    with Stopwatch() as watch:
        try:
            client.execute()
        except CellExecutionError as failure:
            error = str(failure).strip().splitlines()[-1][:200]
    nbformat.write(notebook, out / path.name)
    return watch.seconds, error


def timings_table(measured: dict[str, float], estimated: dict[str, float]) -> pd.DataFrame:
    """Minutes per notebook, measured and estimated, their ratio, and a total row."""
    rows = [
        {
            "notebook": name,
            "estimated min": estimated.get(name, float("nan")) / 60,
            "measured min": seconds / 60,
        }
        for name, seconds in measured.items()
    ]
    table = pd.DataFrame(rows).set_index("notebook")
    table.loc["all"] = table.sum(skipna=False)
    table["measured / estimated"] = table["measured min"] / table["estimated min"]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.tools.run_notebooks", description=__doc__
    )
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all), e.g. 07_recap")
    parser.add_argument("--out", type=Path, default=Path("build/executed"))
    parser.add_argument(
        "--no-estimate", action="store_true", help="skip measuring this machine first"
    )
    args = parser.parse_args(argv)
    notebooks = [p for p in course_notebooks() if not args.names or p.stem in args.names]
    unknown = sorted(set(args.names) - {p.stem for p in notebooks})
    if unknown:
        parser.error(f"no such notebook: {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    config = wc.get_config()
    estimated: dict[str, float] = {}
    if not args.no_estimate:
        print("Measuring this machine first, as `make check-workshop` does:", flush=True)
        context = wc.Context(config=config)
        wc.run_checks(context, checks=(wc.check_ray, wc.check_speed))
        costs = context.measured.get("costs")
        if costs is not None:
            minutes = wc.estimate_course(costs, context)["minutes"]
            estimated = {name: 60 * minutes[name] for name in minutes}
    measured, failed = {}, []
    for path in notebooks:
        print(f"{path.stem} ...", end=" ", flush=True)
        seconds, error = execute(path, args.out)
        measured[path.stem] = seconds
        print(f"{seconds / 60:.1f} min" + (f", FAILED: {error}" if error else ""), flush=True)
        if error:
            failed.append(path.stem)
    table = timings_table(measured, estimated)
    text = (
        f"Notebooks at COURSE_NUM_IMAGES={config.num_images}, executed one after another:\n\n"
        + table.round(2).to_string()
    )
    print("\n" + text)
    (args.out / "timings.md").write_text(f"```\n{text}\n```\n")
    print(f"Executed notebooks and timings.md are in {args.out}/")
    if failed:
        print(f"FAILED: {', '.join(failed)} (see the executed copies)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
