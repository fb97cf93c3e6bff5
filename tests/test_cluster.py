"""Running the course on an existing Ray cluster (RAY_ADDRESS), proved on a real two-node cluster.

The unit tests at the top check `utils.cluster` without Ray. The `cluster` tests start a
Ray cluster on this machine with `ray start`, the way an administrator would:

- a head node with no CPUs for work (so every task and actor must run elsewhere),
- a worker node with 2 CPUs whose Python environment has Ray, torch and the other
  packages but NOT the course: it has never seen this repository,
- token authentication on, with a token made for this cluster by `ray get-auth-token
  --generate` and handed to every process with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH,

then show that `utils` reaches the worker only through `course_runtime_env()`, run the
production job on it and lose a node, and (`make test-cluster` only: minutes more, so not in
`make test`) run the Actors and Ray Data notebooks against it through nbval with RAY_ADDRESS set.
The cluster uses its own ports and temp dir, and the teardown stops exactly its processes
(never `ray stop`, which would stop every Ray on the machine), even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from helpers import job_maps, photo

from utils import assert_same_maps
from utils.cluster import (
    EXCLUDED_FROM_UPLOAD,
    PACKAGE_DIR,
    course_runtime_env,
    forwarded_env_vars,
    gpu_share,
)
from utils.images import inspect_image
from utils.masks import read_mask

REPO = Path(__file__).resolve().parent.parent
# The Actors and Ray Data notebooks (actors, an actor pool, blocks, CPU reservations) by default;
# CLUSTER_TEST_NOTEBOOKS="02_x.ipynb ..." runs others.
CLUSTER_NOTEBOOKS = tuple(os.environ.get("CLUSTER_TEST_NOTEBOOKS", "").split()) or (
    "03_ray_actors.ipynb",
    "05_ray_data.ipynb",
)
NOTEBOOK_IMAGES = "8"
WORKER_CPUS = 2
START_TIMEOUT_S = 240  # `ray start` on a busy 2-core machine can take a minute
NOTEBOOKS_TIMEOUT_S = 900
# A cell waiting for resources the cluster cannot give waits forever: fail it instead.
CELL_TIMEOUT_S = 240


# ---------------------------------------------------------------- utils.cluster, without Ray


def test_runtime_env_ships_utils_and_course_settings(monkeypatch):
    monkeypatch.setenv("COURSE_NUM_IMAGES", "8")
    monkeypatch.setenv("COURSE_DATA_DIR", "/data/photos")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    env = course_runtime_env()
    assert env["py_modules"] == [str(PACKAGE_DIR)]
    assert Path(env["py_modules"][0], "__init__.py").is_file()
    assert env["excludes"] == EXCLUDED_FROM_UPLOAD
    assert env["env_vars"]["COURSE_NUM_IMAGES"] == "8"
    assert env["env_vars"]["COURSE_DATA_DIR"] == "/data/photos"
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert "HF_TOKEN" not in env["env_vars"]  # a runtime_env is visible to the whole cluster


def test_forwarded_env_vars_picks_course_and_hub_settings_only():
    environ = {
        "COURSE_SEED": "7",
        "HF_HOME": "/cache",
        "HF_TOKEN": "x",
        "PATH": "/bin",
        "RAY_ADDRESS": "head:6379",
    }
    assert forwarded_env_vars(environ) == {"COURSE_SEED": "7", "HF_HOME": "/cache"}


@pytest.mark.parametrize(
    ("gpus", "workers", "share"),
    [
        (0, 4, 0),
        (0.5, 1, 0),
        (1, 1, 1.0),
        (4, 2, 1.0),
        (1, 2, 0.5),
        (1, 3, 0.3333),
        (2, 3, 0.5),  # not 0.67: three 0.67 shares cannot fit on two GPUs
        (1, 6, 0.1666),
        (8, 20, 0.3333),
    ],
)
def test_gpu_shares_pack_onto_whole_gpus(gpus, workers, share):
    got = gpu_share(gpus, workers)
    assert got == share
    if got:
        per_gpu = int(1 / got + 1e-9)
        assert per_gpu * got <= 1 and per_gpu * int(gpus) >= workers


def test_gpu_share_needs_a_worker():
    with pytest.raises(ValueError, match="at least 1"):
        gpu_share(1, 0)


# ---------------------------------------------------------------- a real two-node cluster


@dataclass
class Cluster:
    root: Path
    address: str = ""
    token_path: Path | None = None
    worker_python: Path | None = None
    worker_env: dict[str, str] = field(default_factory=dict)
    client_env: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    wrong_token_probe: subprocess.Popen | None = None

    def run(self, args, *, env, timeout, cwd=None, check=True) -> subprocess.CompletedProcess:
        """Run a command (default cwd: outside the repository), keeping its output for reports."""
        started = time.perf_counter()
        done = subprocess.run(
            [str(a) for a in args],
            env=env,
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.log.append(
            f"$ {' '.join(map(str, args))}  ({time.perf_counter() - started:.1f} s, "
            f"exit {done.returncode})\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
        if check and done.returncode != 0:
            pytest.fail("command failed:\n" + self.log[-1])
        return done

    def start_node(
        self, temp_dir: Path, args: list, env: dict[str, str], attempts: int = 3
    ) -> subprocess.CompletedProcess:
        """`ray start` with its own --temp-dir; on a busy machine a raylet may miss Ray's
        30-second registration deadline, so a failed start is cleaned up and tried again."""
        for attempt in range(1, attempts + 1):
            done = self.run(
                [*args, f"--temp-dir={temp_dir}"],
                env=env,
                timeout=START_TIMEOUT_S,
                check=attempt == attempts,
            )
            if done.returncode == 0:
                return done
            stop_cluster(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise AssertionError("unreachable")


NODE_OPTIONS = ("--object-store-memory=500000000", "--disable-usage-stats")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Ray settings or PYTHONPATH (which could smuggle the repo in)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAY_") and k not in {"PYTHONPATH", "PYTHONHOME"}
    }
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


def make_worker_python(root: Path) -> Path:
    """A venv that sees the main environment's packages but not the editable course install.

    Its site-packages holds a .pth file naming the main site-packages. Python adds that
    directory to sys.path but does not process the .pth files inside it, so the
    `__editable__` hook that makes `import utils` work in the main environment never runs.
    """
    venv = root / "worker-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    shared = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    Path(own, "course_cluster_test_deps.pth").write_text("\n".join(shared) + "\n")
    return python


def cluster_processes(root: Path) -> list:
    """Every process of the test cluster: those naming its temp dir, and their descendants."""
    import psutil

    found = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(root) in part for part in process.info["cmdline"] or []):
                found[process.pid] = process
                for child in process.children(recursive=True):
                    found[child.pid] = child
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_cluster(root: Path) -> int:
    """Terminate this cluster's processes (then kill what is left); return how many there were."""
    import psutil

    processes = cluster_processes(root)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    # The raylet and the GCS server take more than a few seconds to stop on SIGTERM; nothing
    # of theirs outlives the test's temp dir, so what is still running after 1 s is killed.
    _, alive = psutil.wait_procs(processes, timeout=1)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=10)
    return len(processes)


WRONG_TOKEN_PROBE = """
import logging, ray
try:
    ray.init(logging_level=logging.ERROR)
except Exception as error:
    print("REFUSED", type(error).__name__, error)
else:
    print("ACCEPTED", ray.cluster_resources())
"""


@pytest.fixture(scope="module")
def cluster():
    # A short path: Ray's Unix socket paths under the temp dir must stay under 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="raycl-", dir="/tmp"))
    handle = Cluster(root=root)
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    try:
        # 1. A token for this cluster only, the documented way: `ray get-auth-token --generate`
        #    writes ~/.ray/auth_token; with HOME pointed at the temp dir it is not the user's.
        home = root / "home"
        home.mkdir()
        handle.run(
            [*ray_cli, "get-auth-token", "--generate"], env=clean_env(HOME=str(home)), timeout=120
        )
        handle.token_path = home / ".ray" / "auth_token"
        handle.token_path.chmod(0o600)
        printed = handle.run(
            [*ray_cli, "get-auth-token"], env=clean_env(HOME=str(home)), timeout=120
        ).stdout.strip()
        assert printed and printed == handle.token_path.read_text().strip()
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(handle.token_path)}

        # 2. The head: no CPUs for work, no dashboard (the test needs none), its own ports.
        port = free_port()
        head = handle.start_node(
            root / "head",
            [
                *ray_cli,
                "start",
                "--head",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=0",
                "--num-gpus=0",
                "--include-dashboard=false",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                *NODE_OPTIONS,
            ],
            env=clean_env(**auth),
        )
        # The GCS address `ray start` prints for joining: the value RAY_ADDRESS takes.
        printed_address = re.search(r"ray start --address='([^']+)'", head.stdout + head.stderr)
        handle.address = printed_address.group(1) if printed_address else f"127.0.0.1:{port}"
        assert handle.address.endswith(f":{port}"), handle.log[-1]

        # 3. The worker node, from an environment without the course, outside the repository.
        handle.worker_python = make_worker_python(root)
        # As the README advises for small nodes: keep idle workers (see the job's start_ray).
        handle.worker_env = clean_env(**auth, RAY_num_workers_soft_limit=str(WORKER_CPUS))
        handle.start_node(
            root / "worker",
            [
                handle.worker_python,
                "-m",
                "ray.scripts.scripts",
                "start",
                f"--address={handle.address}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={WORKER_CPUS}",
                f"--dashboard-agent-listen-port={free_port()}",
                *NODE_OPTIONS,
            ],
            env=handle.worker_env,
        )

        handle.client_env = clean_env(**auth, RAY_ADDRESS=handle.address)
        if "PYTHONPATH" in os.environ:  # the driver may have it; only the worker node may not
            handle.client_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        # A driver with a wrong token must be refused; Ray retries for about 20 s before
        # giving up, so this runs in the background while the other tests use the cluster.
        handle.wrong_token_probe = subprocess.Popen(
            [sys.executable, "-c", WRONG_TOKEN_PROBE],
            cwd=root,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={
                **clean_env(RAY_ADDRESS=handle.address),
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": "0" * 64,
            },
        )
        yield handle
    finally:
        if handle.wrong_token_probe is not None and handle.wrong_token_probe.poll() is None:
            handle.wrong_token_probe.kill()
            handle.wrong_token_probe.communicate()
        stopped = stop_cluster(root)
        left = cluster_processes(root)
        shutil.rmtree(root, ignore_errors=True)
        print(f"test cluster: stopped {stopped} processes; {len(left)} left")
        assert not left, f"test cluster processes survived the teardown: {left}"


PROBE = """
import json, logging, sys
import ray
from utils.cluster import course_runtime_env, describe_cluster

def where():
    import sys
    context = ray.get_runtime_context()
    try:
        import utils
        found = utils.__file__
    except ImportError as error:
        found = f"{type(error).__name__}: {error}"
    return {"node": context.get_node_id(), "python": sys.executable, "utils": found}

report = {}
for label, runtime_env in (("bare", None), ("course", course_runtime_env())):
    ray.init(runtime_env=runtime_env, logging_level=logging.WARNING)
    report[label] = ray.get(ray.remote(where).remote(), timeout=300)
    report[label]["driver_node"] = ray.get_runtime_context().get_node_id()
    report[label]["described"] = describe_cluster()
    report[label]["nodes"] = [{"id": n["NodeID"], "cpus": n["Resources"].get("CPU", 0)}
                              for n in ray.nodes() if n["Alive"]]
    ray.shutdown()
print("REPORT" + json.dumps(report))
"""


@pytest.mark.cluster
def test_worker_environment_has_packages_but_not_the_course(cluster):
    imports = cluster.run(
        [cluster.worker_python, "-c", "import ray, torch"],
        env=cluster.worker_env,
        timeout=180,
        check=False,
    )
    assert imports.returncode == 0, cluster.log[-1]
    course = cluster.run(
        [cluster.worker_python, "-c", "import utils"],
        env=cluster.worker_env,
        timeout=60,
        check=False,
    )
    assert "No module named 'utils'" in course.stderr, cluster.log[-1]


@pytest.mark.cluster
def test_utils_reaches_the_worker_through_the_runtime_env(cluster):
    done = cluster.run(
        [sys.executable, "-c", textwrap.dedent(PROBE)], env=cluster.client_env, timeout=600
    )
    report = json.loads(done.stdout.split("REPORT", 1)[1])
    bare, course = report["bare"], report["course"]
    cpus = {node["id"]: node["cpus"] for node in course["nodes"]}
    assert len(cpus) == 2 and sorted(cpus.values()) == [0, WORKER_CPUS], course["nodes"]
    for run in (bare, course):
        assert run["node"] != run["driver_node"] and cpus[run["node"]] == WORKER_CPUS
        assert run["python"] == str(cluster.worker_python)
    assert "No module named 'utils'" in bare["utils"], bare  # the worker never saw the repo
    shipped = Path(course["utils"])
    assert shipped.is_relative_to(cluster.root / "worker") and "py_modules" in str(shipped), course
    assert f"connected to the Ray cluster at {cluster.address}" in course["described"]
    assert "2 node(s), 2 CPU(s)" in course["described"], course["described"]


def runnable_notebook(name):
    """The copy nbval runs: the solution where a notebook has exercises (the learner's stops)."""
    solution = REPO / "notebooks" / "solutions" / name
    return solution if solution.is_file() else REPO / "notebooks" / name


@pytest.mark.cluster
@pytest.mark.cluster_notebooks
def test_notebooks_run_on_the_cluster(cluster):
    notebooks = [runnable_notebook(name) for name in CLUSTER_NOTEBOOKS]
    missing = [n.name for n in notebooks if not n.is_file()]
    assert not missing, f"notebooks to run on the cluster are missing: {missing}"
    env = {**cluster.client_env, "COURSE_NUM_IMAGES": NOTEBOOK_IMAGES}
    done = cluster.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "-p",
            "no:cacheprovider",
            f"--nbval-cell-timeout={CELL_TIMEOUT_S}",
            "-q",
            *notebooks,
        ],
        env=env,
        cwd=REPO,
        timeout=NOTEBOOKS_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, "nbval on the cluster failed:\n" + cluster.log[-1]
    # Each notebook's kernel joined this cluster as a driver (a job), not a Ray of its own.
    count = cluster.run(
        [
            sys.executable,
            "-c",
            (
                "import logging, ray; ray.init(logging_level=logging.ERROR); "
                "print('KERNELS', sum('ipykernel' in (job.get('Entrypoint') or '') "
                "for job in ray._private.state.jobs()))"
            ),
        ],
        env=cluster.client_env,
        timeout=300,
    )
    kernels = int(count.stdout.split("KERNELS", 1)[1])
    assert kernels >= len(notebooks), f"only {kernels} notebook kernel(s) joined the cluster"


# ---------------------------------------------------------------- the production job


def job_command(source: Path, out: Path, *extra: str) -> list:
    return [sys.executable, "-m", "utils.segment", source, "--out", out, "--preview", "0", *extra]


def make_job_corpus(folder: Path, n: int) -> int:
    """`n` small photos and one file that is not an image; returns the number of inputs."""
    folder.mkdir(parents=True)
    for i in range(n):
        photo(96 + 8 * i, 64, seed=i).save(folder / f"scene_{i:02d}.jpg")
    (folder / "notes.jpg").write_text("not an image")
    return n + 1


@pytest.mark.cluster
def test_the_job_runs_on_the_cluster_and_survives_a_lost_node(cluster, tmp_path):
    """The job joins the cluster through RAY_ADDRESS, prints only its own lines, and loses a
    worker node mid-run: it still ends complete, each image once, every mask the model's own."""
    source, out = tmp_path / "photos", tmp_path / "out"
    n_inputs = make_job_corpus(source, 12)
    # A second worker node joins. Two model actors of 1.5 CPUs each: one per worker node (two
    # do not fit on one, and the head has no CPUs), so losing a node leaves one.
    spare = cluster.root / "spare"
    cluster.start_node(
        spare,
        [
            cluster.worker_python,
            "-m",
            "ray.scripts.scripts",
            "start",
            f"--address={cluster.address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={WORKER_CPUS}",
            f"--dashboard-agent-listen-port={free_port()}",
            *NODE_OPTIONS,
        ],
        env=cluster.worker_env,
    )
    job = subprocess.Popen(
        # Preprocessing in the CPU tasks, as with GPU actors: the model input crosses nodes.
        [
            str(a)
            for a in job_command(
                source, out, "--batch-size", "1", "--preprocess", "tasks", "--actors", "2"
            )
        ],
        cwd=REPO,
        env={**cluster.client_env, "COURSE_SEGMENT_DELAY_S": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 400
        while len(list(out.glob("masks/*.png"))) < 3:
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline, "the job wrote no masks on the 3-node cluster"
            time.sleep(0.2)
        lost = stop_cluster(spare)  # the node's raylet, object store and workers, mid-run
        stdout, stderr = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert lost > 0
    assert job.returncode == 0, stdout + stderr
    assert f"on {cluster.address}: 3 node(s), {2 * WORKER_CPUS} CPU(s)" in stdout, stdout
    assert "2 model actor(s) on 1.5 CPU(s)" in stdout and "preprocessing in the tasks" in stdout
    assert f"Summary: {n_inputs} inputs = {n_inputs - 1} written + 1 rejected" in stdout, stdout
    # Quiet: the job's own lines, and the raylet's reports of the lost node's work that Ray
    # retries ("(raylet) Task ... will be retried"); no error, warning or traceback of Ray's.
    noise = [
        line
        for line in (stdout + stderr).splitlines()
        if re.search(r"\b(ERROR|WARNING|Traceback)\b|core_worker", line) and "(raylet)" not in line
    ]
    assert not noise, "the run printed Ray's log lines:\n" + "\n".join(noise)
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index["image_id"]) == sorted(p.name for p in source.iterdir())  # each once
    assert not list(out.rglob(".*.tmp-*")) and not (out / ".model").exists()
    # The masks are the model's own maps: each actor has 1.5 CPUs, so 2 torch threads.
    scenes = sorted(source.glob("scene_*.jpg"))
    expected = dict(
        zip((p.name for p in scenes), job_maps([inspect_image(p).image for p in scenes], 2))
    )
    written = index[index["status"] == "ok"]
    assert_same_maps(
        {r.image_id: read_mask(out / r.mask_path) for r in written.itertuples()}, expected
    )


# Last: the probe started with the cluster retries for a while before Ray refuses it; by now it
# has finished, so no test waits for it.
@pytest.mark.cluster
def test_a_driver_without_the_token_is_refused(cluster):
    output, _ = cluster.wrong_token_probe.communicate(timeout=180)
    assert "REFUSED" in output and "ACCEPTED" not in output, output[-3000:]
    assert "InvalidAuthToken" in output, output[-3000:]  # refused for its token, not its address
