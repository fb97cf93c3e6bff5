"""Connecting to Ray: what workers need shipped to them, and what the cluster offers.

With `RAY_ADDRESS` set (the `host:port` that `ray start --head` prints), `ray.init()`
connects to that cluster instead of starting a local instance. Workers on other machines
have never seen this repository, so everything the remote code imports from the course
travels with the job: `course_runtime_env()` is the one place that says what.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .config import get_config

PACKAGE_DIR = Path(__file__).resolve().parent
# Settings the workers must see to load the same data and model as the driver. Every
# COURSE_* variable is forwarded too; secrets such as HF_TOKEN never are (a runtime_env
# is stored in the cluster and shown by the dashboard).
FORWARDED_VARIABLES = (
    "COURSE_MODEL",
    "COURSE_SEED",
    "COURSE_DEVICE",
    "COURSE_HUB_TIMEOUT",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
)
FORWARDED_PREFIX = "COURSE_"
# Ray uploads the package as a zip; compiled files are rebuilt on the worker anyway.
EXCLUDED_FROM_UPLOAD = ["__pycache__", "*.pyc"]


def forwarded_env_vars(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The course settings of `environ` (default `os.environ`) that workers must share."""
    environ = dict(os.environ if environ is None else environ)
    return {
        name: value
        for name, value in sorted(environ.items())
        if name in FORWARDED_VARIABLES or name.startswith(FORWARDED_PREFIX)
    }


def course_runtime_env() -> dict[str, Any]:
    """The `runtime_env` for `ray.init`: ship this `utils` package and the course settings.

    Workers on other machines have never seen this repository; `py_modules` uploads
    the package to the cluster so `import utils` works there too. On a single machine
    it costs a second and changes nothing.
    """
    return {
        "py_modules": [str(PACKAGE_DIR)],
        "excludes": list(EXCLUDED_FROM_UPLOAD),
        "env_vars": forwarded_env_vars(),
    }


def _started_by_this_process() -> bool:
    """True when `ray.init()` in this process started Ray, False when it joined a cluster."""
    import ray

    try:
        node = ray._private.worker._global_node  # private: Ray has no public "who started it"
    except AttributeError:
        node = None
    if node is not None and hasattr(node, "head"):
        return bool(node.head)
    return not get_config().ray_address


def describe_cluster() -> str:
    """One line on where Ray runs (joined cluster or local instance) and what it offers."""
    import ray

    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    address = ray.get_runtime_context().gcs_address
    named_cluster = get_config().ray_address
    if _started_by_this_process():
        hint = "" if named_cluster else " (set RAY_ADDRESS to use a cluster)"
        where = f"a local Ray instance started here at {address}{hint}"
    else:
        named = " named by RAY_ADDRESS" if named_cluster else ""
        where = f"connected to the Ray cluster at {address}{named}"
    url = dashboard_url()
    return (
        f"Ray {ray.__version__}, {where}: {len(nodes)} node(s), "
        f"{resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)"
        + (f"; dashboard at {url} (it asks for the token: `ray get-auth-token`)" if url else "")
    )


def dashboard_url() -> str | None:
    """The address of the dashboard's web pages, or None where Ray runs without them.

    `ray.init` returns it in its context; called again with `ignore_reinit_error=True`, it
    returns the context of the Ray this process already uses and starts nothing (and, with
    `configure_logging=False`, leaves Ray's log level as the first call set it). Without
    `ray[default]` the dashboard runs without a web server and the address is empty.
    """
    import ray

    if not ray.is_initialized():
        return None
    address = ray.init(ignore_reinit_error=True, configure_logging=False).dashboard_url
    return f"http://{address}" if address else None


def gpus_per_worker(n_workers: int) -> float:
    """GPU share for each of `n_workers` model replicas: 0 without GPUs, else a fair fraction.

    Decide in the driver: a GPU request no node can satisfy waits forever instead of
    falling back to the CPU. With fewer workers than GPUs each gets a whole GPU;
    otherwise each gets `1/k` of one, with k the replicas per GPU, so that the shares
    pack onto whole GPUs (0.66 each for 3 workers on 2 GPUs would leave the third
    waiting; 0.5 fits).
    """
    import ray

    return gpu_share(ray.cluster_resources().get("GPU", 0), n_workers)


def gpu_share(gpus: float, n_workers: int) -> float:
    """`gpus_per_worker` for a cluster with `gpus` GPUs (pure arithmetic, for tests)."""
    if n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, not {n_workers}")
    whole_gpus = math.floor(gpus)
    if whole_gpus < 1:
        return 0
    if n_workers <= whole_gpus:
        return 1.0
    per_gpu = math.ceil(n_workers / whole_gpus)
    # Ray counts resources in steps of 0.0001: round down so k shares never exceed 1.
    return math.floor(10_000 / per_gpu) / 10_000


def actor_cpus(actors: int, threads: int) -> float:
    """CPUs to reserve per actor: its threads, but never the one CPU the file listing needs."""
    import ray

    return min(threads, (ray.cluster_resources().get("CPU", 1) - 1) / actors)


def match_threads_to_cpus():
    """Use as many torch threads as CPUs Ray assigned to this worker (at least one)."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return torch.get_num_threads()
