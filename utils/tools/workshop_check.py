"""Is this machine ready for a workshop without internet? Check it before the room fills.

    python -m utils.tools.workshop_check [--images 10]

Checks, without any network access, that:

1. the Python packages pinned in requirements.txt are installed at those versions and import;
2. the model (`COURSE_MODEL`) is in the Hugging Face cache, or is a local folder;
3. the test images (`COURSE_NUM_IMAGES` of them) were saved by `python -m utils.tools.prefetch`,
   or `COURSE_DATA_DIR` holds enough readable images;
4. Ray starts (or, with RAY_ADDRESS, connects) and a worker can import `utils`;

then times `utils.predict` on a few images, a fresh process's start and a model rebuild, and
estimates from them how long running every notebook takes here (`NOTEBOOK_WORK` counts what
each notebook does; `make run` executes them all and prints the estimate beside the measured
time). Prints one line per check; exits 0 when ready, 1 when something is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import io
import math
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.config import CourseConfig, get_config

REPO_DIR = Path(__file__).resolve().parents[2]  # utils/tools/ -> the repository
REQUIREMENTS = REPO_DIR / "requirements.txt"
NOTEBOOKS_DIR = REPO_DIR / "notebooks"
# Distribution name -> module to import, where they differ.
IMPORT_NAMES = {"pillow": "PIL", "pyyaml": "yaml", "scikit-learn": "sklearn"}
MODEL_FILES = ("config.json", "preprocessor_config.json")
# Beyond this many minutes of computing for one notebook, the room waits too long.
COMFORTABLE_MINUTES_PER_NOTEBOOK = 3.0


@dataclass(frozen=True)
class NotebookWork:
    """What executing one notebook costs, counted from its code (on 2 cores: 2 workers).

    `passes`: predictions of all COURSE_NUM_IMAGES images, wherever they run; `fixed_images`:
    predictions of sets that do not grow with it (exercises, demos; the plain post-processing
    counted at its cost); `process_starts`: new processes that import torch and transformers
    and load the model (the kernel; each group of actors, or task workers, started together;
    each Ray Data run twice: its read and write workers, then its actors; each job run);
    `ray_starts`: Ray started and stopped, in the notebook or by a job run; `rebuilds`: tasks
    that rebuild the model from its recipe; `waits_s`: waits written in the code.
    """

    passes: float
    fixed_images: int = 0
    process_starts: int = 1
    ray_starts: int = 1
    rebuilds: int = 0
    waits_s: float = 0.0


# Counted from the notebooks as they run in order (the solutions of 02 to 06). The sequential
# baseline is computed in 02 and read back later; tests/test_workshop_check.py fails when a
# notebook is missing here.
NOTEBOOK_WORK = {
    "00_overview": NotebookWork(0, fixed_images=1, ray_starts=0),
    "01_sequential_inference": NotebookWork(2, fixed_images=72, ray_starts=0),
    # baseline + tasks; thread demo, one-image exercise; 40 tasks rebuild the model
    "02_ray_tasks": NotebookWork(2, fixed_images=44, process_starts=2, rebuilds=40),
    # two runs; actors, a replacement, the counting actors
    "03_ray_actors": NotebookWork(2, fixed_images=48, process_starts=4),
    # map_unordered, map, restarts, complete(), a growing pool; a 2 s ray.wait timeout
    "04_actor_pool": NotebookWork(5, fixed_images=32, process_starts=5, waits_s=2),
    # three Ray Data runs (one pass each)
    "05_ray_data": NotebookWork(3, fixed_images=2, process_starts=7),
    "06_checkpoint_predictor": NotebookWork(1, fixed_images=2, process_starts=3),
    # tasks that only read image sizes; `ray status`; polling the state API
    "07_recap": NotebookWork(0, waits_s=5),
    # three actor splits and the loop again; profiles and the matmul ceiling
    "08_performance_tuning": NotebookWork(4, fixed_images=89, process_starts=2, waits_s=3),
    # three job runs on 14 photos (two start Ray and two actors each); 1 s delay per batch
    "09_production_job": NotebookWork(
        0, fixed_images=30, process_starts=6, ray_starts=2, waits_s=2
    ),
}


@dataclass(frozen=True)
class Costs:
    """What this machine was measured to take for each kind of work `NotebookWork` counts."""

    images_per_s: float
    process_start_s: float
    ray_start_s: float
    rebuild_s: float

    def seconds(self, work: NotebookWork, images: int) -> float:
        """The estimated seconds of computing for `work` at `images` images."""
        return (
            (work.passes * images + work.fixed_images) / self.images_per_s
            + work.process_starts * self.process_start_s
            + work.ray_starts * self.ray_start_s
            + work.rebuilds * self.rebuild_s
            + work.waits_s
        )


@dataclass
class Check:
    """The outcome of one check: `status` is OK, WARN (works, but look) or FAIL."""

    name: str
    status: str
    detail: str
    advice: str = ""

    def line(self) -> str:
        text = f"[{self.status:^4}] {self.name}: {self.detail}"
        return text + (f"\n         -> {self.advice}" if self.advice else "")


@dataclass
class Context:
    """What the checks share: settings, and measurements made on the way."""

    config: CourseConfig
    timing_images: int = 10
    requirements: Path = REQUIREMENTS
    notebooks_dir: Path = NOTEBOOKS_DIR
    measured: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the checks


def read_pins(path: Path) -> dict[str, str]:
    """`{distribution: version}` for every `name==version` line of a requirements file or of
    the pip list of a conda `environment.yml` (`- name==version`). Names are normalised as
    pip does (lower case, `_` and `.` as `-`); extras such as `[data]` are dropped."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip().removeprefix("- ")
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return pins


def check_packages(context: Context) -> Check:
    """Every pinned distribution installed at its pinned version, and importable."""
    name = "Python packages"
    if not context.requirements.is_file():
        return Check(name, "WARN", f"{context.requirements} not found: versions not checked")
    pins = read_pins(context.requirements)
    missing, wrong, broken = [], [], []
    for dist, pinned in sorted(pins.items()):
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
            continue
        if not _same_version(installed, pinned):
            wrong.append(f"{dist} {installed} (pinned {pinned})")
        module = IMPORT_NAMES.get(dist, dist.replace("-", "_"))
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any import failure is the finding
            broken.append(f"{module} ({type(error).__name__}: {error})")
    problems = (
        ([f"not installed: {', '.join(missing)}"] if missing else [])
        + ([f"other versions: {', '.join(wrong)}"] if wrong else [])
        + ([f"fail to import: {', '.join(broken)}"] if broken else [])
    )
    if problems:
        return Check(
            name,
            "FAIL",
            "; ".join(problems),
            "run `make setup` (or `pip install -r requirements.txt`) while online",
        )
    return Check(
        name,
        "OK",
        f"all {len(pins)} pinned in {context.requirements.name} "
        "are installed at those versions and import",
    )


def _same_version(installed: str, pinned: str) -> bool:
    try:
        from packaging.version import Version

        have, want = Version(installed), Version(pinned)
        # A local label such as torch's "+cpu" names the build, not another version.
        return have == want or (not want.local and have.public == want.public)
    except Exception:  # noqa: BLE001 - no packaging, or a non-PEP 440 version
        return installed == pinned


def check_model(context: Context) -> Check:
    """The model's configs and safetensors weights are on disk (hub cache or a folder)."""
    model = context.config.model
    name = "Model"
    local = Path(model).expanduser()
    if local.is_dir():
        folder, where = local, "local folder"
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        from utils.tools.prefetch import MODEL_FILES as PATTERNS

        try:  # local_files_only: looks in the cache, never on the network
            folder = Path(
                snapshot_download(repo_id=model, allow_patterns=PATTERNS, local_files_only=True)
            )
        except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
            return Check(
                name,
                "FAIL",
                f"{model} is not in the Hugging Face cache "
                f"({type(error).__name__}); the notebooks would use random weights",
                "run `python -m utils.tools.prefetch` (or `make prefetch`) where the hub "
                "is reachable, with the same HF_HOME",
            )
        where = "Hugging Face cache"
    absent = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if not any(folder.glob("*.safetensors")):
        absent.append("*.safetensors")
    if absent:
        return Check(
            name,
            "FAIL",
            f"{model} in the {where} lacks {', '.join(absent)}",
            "run `python -m utils.tools.prefetch` again where the hub is reachable",
        )
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20
    return Check(name, "OK", f"{model} in the {where} ({folder}, weights {size:.0f} MB)")


def check_images(context: Context) -> Check:
    """`COURSE_NUM_IMAGES` images are on disk: prefetched, or in COURSE_DATA_DIR."""
    config, name = context.config, "Test images"
    wanted = config.num_images
    if config.data_dir is not None:
        from utils.images import inspect_image, list_files

        folder = config.data_dir
        if not folder.is_dir():
            return Check(name, "FAIL", f"COURSE_DATA_DIR {folder} is not a folder")
        files, _ = list_files(folder)
        readable = sum(inspect_image(path).ok for _, path in files)
        if readable < wanted:
            return Check(
                name,
                "WARN",
                f"{readable} readable images in COURSE_DATA_DIR {folder},"
                f" fewer than COURSE_NUM_IMAGES={wanted}: the notebooks use them all",
            )
        return Check(name, "OK", f"{readable} readable images in COURSE_DATA_DIR {folder}")
    from utils.data import prefetched_images_dir

    folder = prefetched_images_dir(config)
    if not (folder / "dataset_info.json").is_file():
        return Check(
            name,
            "FAIL",
            f"no prefetched {config.dataset} test images in {folder}: "
            "offline, the notebooks would use the 12 bundled photographs",
            f"run `python -m utils.tools.prefetch --images {wanted}` where the hub is "
            "reachable, with the same COURSE_CACHE_DIR",
        )
    import datasets

    saved = len(datasets.load_from_disk(str(folder)))
    if saved < wanted:
        return Check(
            name,
            "FAIL",
            f"{saved} prefetched in {folder}, but COURSE_NUM_IMAGES="
            f"{wanted}: the notebooks would fall back to the bundled photographs",
            f"run `python -m utils.tools.prefetch --images {wanted}` where the hub is "
            "reachable, or lower COURSE_NUM_IMAGES",
        )
    return Check(
        name, "OK", f"{saved} test images prefetched in {folder} (COURSE_NUM_IMAGES={wanted})"
    )


def check_ray(context: Context) -> Check:
    """Ray starts (or connects to RAY_ADDRESS) and a worker imports `utils`."""
    import logging

    import ray

    from utils.cluster import course_runtime_env, describe_cluster
    from utils.timing import Stopwatch

    name = "Ray"
    stopping = Stopwatch()
    try:
        with Stopwatch() as start_up:
            ray.init(runtime_env=course_runtime_env(), logging_level=logging.WARNING)
        started = start_up.seconds
        where = describe_cluster()

        @ray.remote(num_cpus=0.1)
        def utils_location() -> str:
            import utils

            return utils.__file__

        with Stopwatch() as task:
            ray.get(utils_location.remote(), timeout=180)
        first_task = task.seconds
    except Exception as error:  # noqa: BLE001 - report any failure to start
        return Check(
            name,
            "FAIL",
            f"{type(error).__name__}: {error}",
            "see `ray start --help`; on a laptop, free some memory and disk in /tmp",
        )
    finally:
        with stopping:
            ray.shutdown()
    context.measured["ray_start_s"] = started + first_task + stopping.seconds
    return Check(
        name,
        "OK",
        f"{where}; ready in {started:.1f} s, a worker imported utils {first_task:.1f} s later",
    )


def check_speed(context: Context) -> Check:
    """Time `predict` on a few images here; estimate the time to run every notebook."""
    from utils.data import load_test_images
    from utils.images import convert_image_to_rgb
    from utils.inference import predict
    from utils.model import build_replica, is_offline_model, load_model, model_recipe, pick_device
    from utils.timing import Stopwatch

    name, n = "Speed", context.timing_images
    offline = dataclasses.replace(context.config, hub_offline=True)  # never the network
    device = pick_device(offline)
    model, processor = load_model(offline, device=device)
    dataset = load_test_images(n, offline)
    images = [convert_image_to_rgb(image) for image in dataset["image"]]
    predict(model, processor, images[:1])  # warm-up: first-call costs are not throughput
    with Stopwatch() as watch:
        for start in range(0, len(images), 16):
            predict(model, processor, images[start : start + 16])
    rate = len(images) / watch.seconds
    with Stopwatch() as rebuild:
        build_replica(model_recipe(model))
    costs = Costs(
        images_per_s=rate,
        process_start_s=measure_process_start(),
        ray_start_s=context.measured.get("ray_start_s", 10.0),
        rebuild_s=rebuild.seconds,
    )
    context.measured["costs"] = costs
    source = "random-weight offline model" if is_offline_model(model) else context.config.model
    measured = (
        f"{len(images)} images in {watch.seconds:.1f} s = {rate:.2f} images/s on "
        f"{device.type} ({source}); a process starts in {costs.process_start_s:.1f} s"
    )
    estimate = estimate_course(costs, context)
    longest = max(estimate["minutes"], key=estimate["minutes"].get)
    slowest = estimate["minutes"][longest]
    status = "WARN" if slowest > COMFORTABLE_MINUTES_PER_NOTEBOOK else "OK"
    advice = ""
    if status == "WARN":
        advice = (
            f"{longest} alone takes about {slowest:.1f} min of computing; "
            f"COURSE_NUM_IMAGES={estimate['comfortable_images']} keeps every notebook under "
            f"{COMFORTABLE_MINUTES_PER_NOTEBOOK:g} min"
        )
    return Check(
        name,
        status,
        f"{measured} -> running the {len(estimate['minutes'])} notebooks at "
        f"COURSE_NUM_IMAGES={context.config.num_images} takes about "
        f"{estimate['total_minutes']:.0f} min of computing here (plus teaching; the longest, "
        f"{longest}, {slowest:.1f} min)",
        advice,
    )


def measure_process_start() -> float:
    """Seconds for a fresh Python process to import torch and transformers and build the model:
    what every kernel, actor, task worker and job run pays before its first image."""
    from utils.timing import Stopwatch

    code = "from utils.model import offline_model; offline_model()"
    with Stopwatch() as watch:
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return watch.seconds


def estimate_course(costs: Costs, context: Context) -> dict[str, Any]:
    """Minutes of computing to run each notebook once at COURSE_NUM_IMAGES, from `costs`.

    Notebooks on disk that `NOTEBOOK_WORK` does not know are estimated as the mean of the
    known ones (the test suite fails when the table misses one of the course's). Also the
    largest image count that keeps every notebook within `COMFORTABLE_MINUTES_PER_NOTEBOOK`.
    """
    images = context.config.num_images
    on_disk = sorted(p.stem for p in context.notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    names = on_disk or sorted(NOTEBOOK_WORK)  # installed without the notebooks: the course's
    mean = NotebookWork(
        *(
            sum(getattr(w, f.name) for w in NOTEBOOK_WORK.values()) / len(NOTEBOOK_WORK)
            for f in dataclasses.fields(NotebookWork)
        )
    )
    work = {name: NOTEBOOK_WORK.get(name, mean) for name in names}
    minutes = {name: costs.seconds(w, images) / 60 for name, w in work.items()}
    budget_s = COMFORTABLE_MINUTES_PER_NOTEBOOK * 60
    limits = [
        (budget_s - costs.seconds(w, 0)) * costs.images_per_s / w.passes
        for w in work.values()
        if w.passes > 0
    ]
    comfortable = max(1, math.floor(min(limits))) if limits else images
    return {
        "minutes": minutes,
        "total_minutes": sum(minutes.values()),
        "comfortable_images": comfortable,
    }


CHECKS: tuple[Callable[[Context], Check], ...] = (
    check_packages,
    check_model,
    check_images,
    check_ray,
    check_speed,
)


# ---------------------------------------------------------------- the command


def run_checks(context: Context, checks=None) -> list[Check]:
    """Run each check, turning an unexpected exception into a FAIL line, and print it."""
    results = []
    for check in CHECKS if checks is None else checks:
        chatter = io.StringIO()  # what loaders print ("Model: ...") would bury the verdicts
        try:
            with contextlib.redirect_stdout(chatter):
                result = check(context)
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others
            label = check.__name__.removeprefix("check_").capitalize()
            said = " | ".join(chatter.getvalue().strip().splitlines()[-3:])
            result = Check(
                label,
                "FAIL",
                f"the check itself failed: {type(error).__name__}: "
                f"{error}" + (f" (it printed: {said})" if said else ""),
            )
        print(result.line(), flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    """Print one line per check and a verdict; return 0 when ready, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.tools.workshop_check",
        description="Check, offline, that this machine is ready to teach the course.",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=10,
        help="how many images the quick speed test uses (default: 10)",
    )
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    config = get_config()
    context = Context(config=config, timing_images=args.images)
    print(
        f"Workshop check: COURSE_NUM_IMAGES={config.num_images}, model {config.model}, "
        f"images from {config.data_dir or config.dataset} (no network used)",
        flush=True,
    )
    results = run_checks(context)
    failed = [r.name for r in results if r.status == "FAIL"]
    if failed:
        print(f"NOT READY: fix {', '.join(failed)} (see -> above), then run this check again.")
        return 1
    warned = [r.name for r in results if r.status == "WARN"]
    note = f" (look at: {', '.join(warned)})" if warned else ""
    print(f"READY: teach with HF_HUB_OFFLINE=1 and COURSE_NUM_IMAGES={config.num_images}{note}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
