"""The production job: segment every image under a folder on Ray Data.

- `job`: the command line, the checks before any work, resume, the summary
- `pipeline`: the Ray Data stages (decode, predict, write) and the progress line
- `files`: inputs, the Parquet index and atomic writes, none of which needs Ray
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The job's command line (`job.main`). Imported when called, not with the package: a Ray
    worker that unpickles a stage of `pipeline` then imports only what that stage needs."""
    from .job import main as run

    return run(argv)


__all__ = ["main"]
