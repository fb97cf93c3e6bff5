"""Connecting to Ray: what workers need shipped to them, and what the cluster offers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
# Settings the workers must see to load the same data and model as the driver.
FORWARDED_VARIABLES = ("COURSE_MODEL", "COURSE_SEED", "COURSE_DEVICE", "COURSE_HUB_TIMEOUT",
                       "HF_HUB_OFFLINE", "HF_HOME")


def course_runtime_env() -> dict[str, Any]:
    """The `runtime_env` for `ray.init`: ship this `utils` package and the course settings.

    Workers on other machines have never seen this repository; `py_modules` uploads
    the package to the cluster so `import utils` works there too. On a single machine
    it costs a second and changes nothing.
    """
    env_vars = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
    return {"py_modules": [str(PACKAGE_DIR)], "env_vars": env_vars}


def describe_cluster() -> str:
    """One line on where Ray runs and what it offers (CPUs, GPUs, nodes)."""
    import ray

    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    where = os.environ.get("RAY_ADDRESS") or "a local Ray instance started by this notebook"
    return (f"Ray {ray.__version__} on {where}: {len(nodes)} node(s), "
            f"{resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)")


def gpus_per_worker(n_workers: int) -> float:
    """GPU share for each of `n_workers` model replicas: 0 without GPUs, else a fair fraction.

    Decide in the driver: a GPU request no node can satisfy waits forever instead of
    falling back to the CPU.
    """
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus == 0:
        return 0
    return min(1.0, gpus / n_workers)
