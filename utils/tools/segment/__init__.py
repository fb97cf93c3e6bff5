"""The production job: segment every image under a folder on Ray Data.

- `job`: the command line, the checks before any work, resume, the summary
- `pipeline`: the Ray Data stages (decode, predict, write) and the progress line
- `files`: inputs, the Parquet index and atomic writes, none of which needs Ray
"""

from .job import main

__all__ = ["main"]
