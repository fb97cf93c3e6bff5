"""The batch-segmentation job (`python -m utils.segment`): bad input, reconciliation,
atomic outputs, resume after SIGTERM, and completeness after a worker is killed.

The bad-input corpus is built on the fly in a temporary folder; nothing binary is committed.
The job runs as a subprocess, as a user runs it, with the offline model.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import job_maps, photo
from PIL import Image

from utils.check import assert_same_maps
from utils.images import inspect_image, list_files, printable_id
from utils.masks import read_mask
from utils.tools.segment import files as sio

REPO = Path(__file__).resolve().parent.parent
SECRET = "hf_TEST_SECRET_do_not_print_0123456789"


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# What each bad file must be rejected for (a fragment of its reason).
EXPECTED_REJECTIONS = {
    "broken/truncated.jpg": "corrupt or truncated",
    "broken/corrupt.jpg": "corrupt or truncated",
    "broken/truncated.png": "corrupt or truncated",
    "broken/corrupt.png": "corrupt or truncated",
    "broken/notes.jpg": "not an image",
    "broken/empty.png": "empty file",
    "broken/tiny.png": "too small",
    "broken/bomb.png": "too large to decode safely",
}
# Odd but valid: segmented, with a note where something was done to them.
EXPECTED_NOTES = {
    "odd/animated.gif": "first frame",
    "odd/rotated.jpg": "EXIF orientation 6",
}


def make_corpus(folder: Path) -> dict[str, Image.Image]:
    """Good, odd and broken files under `folder`; returns the good ones as displayed (RGB)."""
    good = {
        "photo one.jpg": photo(40, 30, 1),  # a space in the name
        "données/été.png": photo(33, 47, 2),  # non-ASCII folder and name
        "nested/deeper/plain.png": photo(24, 24, 3),
    }
    for name, image in good.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(
            encoded(
                image,
                "PNG" if name.endswith(".png") else "JPEG",
                **({} if name.endswith(".png") else {"quality": 95}),
            )
        )
    shown = {name: Image.open(folder / name).convert("RGB") for name in good}

    odd = folder / "odd"
    odd.mkdir()
    base = photo(40, 24, 4)
    (odd / "gray16.png").write_bytes(
        encoded(Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257), "PNG")
    )
    (odd / "cmyk.jpg").write_bytes(encoded(base.convert("CMYK"), "JPEG"))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    (odd / "palette_transparent.png").write_bytes(encoded(palette, "PNG", transparency=0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    (odd / "rotated.jpg").write_bytes(encoded(base, "JPEG", exif=exif.tobytes()))
    frames = [photo(32, 20, seed) for seed in (5, 6, 7)]
    (odd / "animated.gif").write_bytes(
        encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    )
    for name in (
        "gray16.png",
        "cmyk.jpg",
        "palette_transparent.png",
        "rotated.jpg",
        "animated.gif",
    ):
        shown[f"odd/{name}"] = inspect_image(odd / name).image
    # A name that is not valid UTF-8 (a Latin-1 "é", as old cameras and zip files write it).
    latin1 = odd / os.fsdecode(b"caf\xe9 latin1.png")
    latin1.write_bytes(encoded(photo(30, 20, 9), "PNG"))
    shown["odd/caf\\xe9 latin1.png"] = inspect_image(latin1).image

    broken = folder / "broken"
    broken.mkdir()
    jpeg, png = encoded(photo(64, 48, 8), "JPEG"), encoded(photo(64, 48, 8), "PNG")
    (broken / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    rng = np.random.default_rng(0)
    scan = jpeg.index(b"\xff\xda") + 20  # headers intact, entropy-coded data replaced
    (broken / "corrupt.jpg").write_bytes(
        jpeg[:scan] + rng.integers(0, 256, 2000, np.uint8).tobytes()
    )
    (broken / "truncated.png").write_bytes(png[: len(png) // 2])
    corrupt_png = bytearray(png)
    corrupt_png[200:260] = bytes(60)
    (broken / "corrupt.png").write_bytes(bytes(corrupt_png))
    (broken / "notes.jpg").write_text("these are my notes, not a photo\n")
    (broken / "empty.png").write_bytes(b"")
    (broken / "tiny.png").write_bytes(encoded(Image.new("RGB", (1, 1), "red"), "PNG"))
    side = int((Image.MAX_IMAGE_PIXELS or 89_478_485) ** 0.5) + 100
    (broken / "bomb.png").write_bytes(encoded(Image.new("1", (side, side)), "PNG"))
    (folder / ".hidden_thumbnail.db").write_bytes(b"ignored")
    return shown


def job_env(extra: dict | None = None) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_TOKEN": SECRET,
        "PYTHONUNBUFFERED": "1",
        "RAY_ADDRESS": "",
        **(extra or {}),
    }
    env.pop("RAY_ADDRESS")  # always a fresh local Ray instance
    return env


def read_index(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "index.parquet")


def assert_complete(source: Path, out: Path) -> pd.DataFrame:
    """One row per input file, one mask per ok row, no duplicates, no temporary files."""
    index = read_index(out)
    inputs, _ = list_files(source, exclude=[out])
    assert sorted(index["image_id"]) == sorted(image_id for image_id, _ in inputs)
    assert index["image_id"].is_unique
    ok = index[index["status"] == "ok"]
    assert set(index["status"]) <= {"ok", "rejected"}
    masks = sorted(
        printable_id(p.relative_to(out).as_posix()) for p in (out / "masks").rglob("*.png")
    )
    assert masks == sorted(ok["mask_path"]), "masks on disk differ from the index's ok rows"
    for row in ok.itertuples():
        mask = read_mask(out / row.mask_path)
        assert mask.shape == (row.height, row.width) and mask.dtype == np.uint8
    assert not list(out.rglob(f"*{sio.TMP_MARK}*")), "a temporary file was left behind"
    return index


# --- fast unit tests (no Ray) -----------------------------------------------------------------


def test_inspect_image_reasons(tmp_path):
    make_corpus(tmp_path)
    for image_id, fragment in EXPECTED_REJECTIONS.items():
        found = inspect_image(tmp_path / image_id)
        assert not found.ok and fragment in found.reason, (image_id, found.reason)
    bomb = inspect_image(tmp_path / "broken/bomb.png")
    assert "decompression-bomb" in bomb.reason and bomb.width > 9000


def test_inspect_image_odd_but_valid(tmp_path):
    make_corpus(tmp_path)
    rotated = inspect_image(tmp_path / "odd/rotated.jpg")
    assert rotated.ok and rotated.image.size == (24, 40), "EXIF rotation must be applied"
    for image_id, fragment in EXPECTED_NOTES.items():
        assert fragment in inspect_image(tmp_path / image_id).note
    for name in ("gray16.png", "cmyk.jpg", "palette_transparent.png"):
        found = inspect_image(tmp_path / "odd" / name)
        assert found.ok and found.image.mode == "RGB", (name, found.reason)


def test_unreadable_file_is_rejected(tmp_path, monkeypatch):
    path = tmp_path / "secret.png"
    path.write_bytes(encoded(photo(32, 32), "PNG"))
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make open() fail as it would for a user
        real_open = open

        def refusing_open(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", refusing_open)
    found = inspect_image(path)
    assert not found.ok and "permission denied" in found.reason


def test_a_rerun_skips_what_still_stands_and_retries_access_problems(tmp_path):
    from utils.tools.segment.job import is_done

    image_file, out = tmp_path / "a.png", tmp_path / "out"
    image_file.write_bytes(encoded(photo(24, 20), "PNG"))
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png").write_bytes(b"mask")
    size, mtime = sio.file_signature(image_file)
    ok = {
        "status": "ok",
        "mask_path": "masks/a.png",
        "source_bytes": size,
        "source_mtime_ns": mtime,
    }
    assert is_done(ok, image_file, out)
    assert not is_done({**ok, "mask_path": "masks/gone.png"}, image_file, out)
    # The reasons as the read stage words them: a rejection for content stands, one for
    # access is retried.
    (tmp_path / "notes.png").write_text("not a picture")
    for_content = inspect_image(tmp_path / "notes.png").reason
    for_access = inspect_image(tmp_path / "vanished.png").reason
    assert for_content.startswith("not an image") and for_access.startswith("file not found")
    rejected = {**ok, "status": "rejected", "mask_path": None}
    assert is_done({**rejected, "reason": for_content}, image_file, out)
    assert not is_done({**rejected, "reason": for_access}, image_file, out)
    assert not is_done(
        {**rejected, "reason": "permission denied (the file is not readable)"}, image_file, out
    )
    os.utime(image_file, ns=(mtime + 10**9, mtime + 10**9))  # the file changed since: redo it
    assert not is_done(ok, image_file, out)
    assert not is_done({**rejected, "reason": for_content}, image_file, out)


def test_write_atomic_leaves_nothing_partial(tmp_path):
    target = tmp_path / "a" / "mask.png"
    sio.write_atomic(target, b"first")
    with pytest.raises(TypeError):
        sio.write_atomic(target, object())  # fails mid-write
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.png"]


def test_usage_errors_exit_2_before_any_work(tmp_path):
    from utils.tools.segment import main

    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(encoded(photo(32, 32), "PNG"))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cases = {
        "does not exist": [str(tmp_path / "missing"), "--out", str(tmp_path / "o1")],
        "has no files": [str(empty), "--out", str(tmp_path / "o2")],
        "cannot be written": [str(tmp_path / "photos"), "--out", str(blocker / "sub")],
    }
    for fragment, argv in cases.items():
        assert main(argv) == 2, fragment
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_unknown_model_exits_2(tmp_path, capsys, monkeypatch):
    from utils import segment

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "a.png").write_bytes(encoded(photo(32, 32), "PNG"))
    argv = [str(tmp_path), "--out", str(tmp_path / "out"), "--model", "nobody/no-such-model"]
    assert segment.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "unknown model 'nobody/no-such-model'" in error[0]

    # With the hub reachable, a model it does not have is an error too (never a stand-in).
    def not_found(*args, **kwargs):
        raise OSError(
            "nobody/no-such-model is not a local folder and is not a valid model "
            "identifier listed on the hub"
        )

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("utils.hub.hub_unavailable_reason", lambda config: None)
    monkeypatch.setattr("utils.model.hub_unavailable_reason", lambda config: None)
    monkeypatch.setattr("utils.model.hub_file_unavailable_reason", lambda *args: None)
    monkeypatch.setattr("utils.model._from_pretrained", not_found)
    assert segment.main(argv) == 2
    assert "unknown model" in capsys.readouterr().err


# --- the job, end to end (starts Ray) ---------------------------------------------------------


@pytest.mark.slow
def test_job_survives_bad_input_sigterm_and_a_killed_worker(tmp_path):
    """The whole life of a run: bad files rejected with their reasons; SIGTERM leaves only
    complete files; the same command resumes, survives a model worker killed mid-run, and ends
    complete (one mask or one rejection per input, no duplicates). (A run with nothing left
    to do, which starts no Ray, is shown and checked at the end of notebook 09.)"""
    source, out = tmp_path / "photos", tmp_path / "out"
    source.mkdir()
    shown = make_corpus(source)
    n_inputs = len(shown) + len(EXPECTED_REJECTIONS)
    marker = f"kill-test-{os.getpid()}-{time.time_ns()}"
    env = job_env({"COURSE_SEGMENT_DELAY_S": "1", "COURSE_SEGMENT_TEST_MARKER": marker})
    command = [
        sys.executable,
        "-m",
        "utils.segment",
        str(source),
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--actors",
        "1",
        "--preview",
        "2",
    ]

    # 1. SIGTERM (what kill, timeout, Kubernetes and Slurm send) once the job has saved rows
    # (masks land before their index rows reach the job). Ctrl-C stops it the same way, with
    # exit code 130: notebook 09 shows that, and the resume after it.
    first = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: count_masks(out) >= 2 and saved_rows(out), 180, "saved rows", first)
        first.terminate()
        first_out, first_err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, first_out + first_err
    assert "stopped by SIGTERM" in first_err and "Run the same command again to resume" in first_err
    quiet = ("ERROR", "WARNING", "(raylet)", "core_worker")  # Ray's own lines stay in its logs
    for noise in (*quiet, "SIGTERM received", "PC: @", "Traceback"):  # nor a crash report
        assert noise not in first_out + first_err, first_out + first_err
    wait_for(lambda: not model_actor_pids(marker), 60, "the stopped job's Ray workers to exit")
    already = assert_stopped_cleanly(out, first_out, n_inputs, len(shown))

    # 2. Resume; kill the model actor once the resumed run has written a mask. Ray restarts
    # the actor and retries its batch, and this run must still end complete.
    before = count_masks(out)
    resumed = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: count_masks(out) > before, 180, "a resumed mask", resumed)
        pids = model_actor_pids(marker)
        assert pids, "no model actor process found"
        os.kill(pids[0], signal.SIGKILL)
        stdout, stderr = resumed.communicate(timeout=240)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 0, stdout + stderr
    wait_for(lambda: not model_actor_pids(marker), 60, "the job's Ray workers to exit")
    assert f"resuming: {len(already)} files already done, {n_inputs - len(already)} to go" in stdout
    index = assert_complete(source, out)
    assert (
        f"Summary: {n_inputs} inputs = {len(shown)} written + "
        f"{len(EXPECTED_REJECTIONS)} rejected" in stdout
    )

    rows = index.set_index("image_id")
    for image_id, fragment in EXPECTED_REJECTIONS.items():
        assert rows.loc[image_id, "status"] == "rejected"
        assert fragment in rows.loc[image_id, "reason"], rows.loc[image_id, "reason"]
    for image_id, fragment in EXPECTED_NOTES.items():
        assert rows.loc[image_id, "status"] == "ok" and fragment in rows.loc[image_id, "note"]
    assert rows.loc["broken/bomb.png", "width"] > 9000  # known from the header, never decoded

    # The masks are the model's own predictions for the images as displayed; the job's one
    # actor runs one torch thread.
    expected = job_maps(list(shown.values()), threads=1)
    assert_same_maps(
        {image_id: read_mask(out / rows.loc[image_id, "mask_path"]) for image_id in shown},
        dict(zip(shown, expected)),
    )
    assert rows.loc["odd/rotated.jpg", "height"] == 40  # rotated: as displayed
    assert len(list((out / "previews").rglob("*.jpg"))) == 2
    assert all(len(t) >= 1 for t in rows[rows.status == "ok"]["top_classes"])

    # Secure defaults: no secret anywhere in what the job printed or wrote.
    assert SECRET not in first_out + first_err + stdout + stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def assert_stopped_cleanly(out: Path, printed: str, n_inputs: int, n_images: int) -> set[str]:
    """After Ctrl-C or SIGTERM: complete files only, an index and a summary of what is done.

    Returns the image ids the index holds (masks and rejections), which a rerun skips.
    """
    assert not list(out.rglob(f"*{sio.TMP_MARK}*")), "a temporary file was left behind"
    masks = sorted((out / "masks").rglob("*.png"))
    assert 1 <= len(masks) < n_images
    for path in masks:  # every mask on disk is a complete PNG
        read_mask(path)
    index = pd.read_parquet(out / "index.parquet")
    assert index["image_id"].is_unique
    written = index[index.status == "ok"]
    assert all((out / path).is_file() for path in written["mask_path"])
    not_done = n_inputs - len(index)
    assert not_done > 0
    assert (
        f"Summary: {n_inputs} inputs = {len(written)} written + {len(index) - len(written)} "
        f"rejected + {not_done} not done" in printed
    ), printed
    return set(index["image_id"])


def wait_for(condition, timeout: float, what: str, job: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if job is not None and job.poll() is not None:
            stdout, stderr = job.communicate()
            raise AssertionError(
                f"the job exited ({job.returncode}) before {what}:\n{stdout}\n{stderr}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def saved_rows(out: Path) -> bool:
    """Whether the running job has saved index rows (shards; an ended run consolidates them)."""
    return any((out / sio.PARTS_DIR).glob("*.parquet"))


def count_masks(out: Path) -> int:
    return sum(1 for _ in (out / "masks").rglob("*.png")) if (out / "masks").exists() else 0


def model_actor_pids(marker: str) -> list[int]:
    """Ray Data model actors started by the job whose environment holds `marker`."""
    import psutil

    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if (
                "Segmenter" in " ".join(process.info["cmdline"] or [])
                and process.environ().get("COURSE_SEGMENT_TEST_MARKER") == marker
            ):
                pids.append(process.info["pid"])
        except (psutil.Error, OSError):
            continue
    return pids


def test_only_a_local_instance_gets_the_small_object_store(monkeypatch):
    from utils.tools.segment.pipeline import LOCAL_OBJECT_STORE_BYTES, local_object_store

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert local_object_store() == {"object_store_memory": LOCAL_OBJECT_STORE_BYTES}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert local_object_store() == {}  # a cluster keeps its own setting


def test_gpu_actors_get_shares_that_pack_onto_whole_gpus():
    from utils.tools.segment.pipeline import plan_actors

    three_on_two = plan_actors([8, 8], gpus=2, device="auto", actors=3)
    assert three_on_two.actors == 3 and three_on_two.gpus == 0.5  # 0.67 would leave one waiting
    assert plan_actors([8, 8], 2, "auto", None).gpus == 1.0  # one actor per GPU by default
    assert plan_actors([8, 8], 2, "cpu", None).gpus == 0  # --device cpu ignores the GPUs
    with pytest.raises(sio.UsageError, match="no GPU"):
        plan_actors([2], 0, "cuda", None)


@pytest.mark.parametrize(
    ("node_cpus", "actors", "plan"),
    [
        ([2], None, (2, 0.75)),  # the prepare tasks keep 0.5; one actor per CPU left
        ([8], None, (8, 7.5 / 8)),
        ([0, 2, 2], None, (4, 0.75)),  # a head without CPUs; two actors per worker node
        ([3.25], None, (3, 2.75 / 3)),  # a part CPU counts as one
        ([0, 2, 2], 1, (1, 1.5)),  # never more than one node has to give
        ([4, 2], 3, (3, 5 / 3)),  # 3.5 + 1.5 CPUs to spare
    ],
)
def test_cpu_actors_leave_every_node_room_for_the_prepare_tasks(node_cpus, actors, plan):
    from utils.tools.segment.pipeline import PREPARE_CPUS, plan_actors

    chosen = plan_actors(node_cpus, 0, "auto", actors)
    assert (chosen.actors, chosen.cpus, chosen.gpus) == (*plan, 0)
    assert chosen.cpus <= max(node_cpus) - PREPARE_CPUS


def test_progress_is_a_bar_in_a_terminal_and_plain_lines_elsewhere():
    from utils.tools.segment.pipeline import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = io.StringIO()
    progress = Progress(4, stream=log, every_s=0)
    for done in range(1, 5):
        progress.update(done, rejected=1)
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in log.getvalue()
    assert lines[-1].startswith("100%") and "4/4" in lines[-1] and "rejected=1" in lines[-1]

    terminal = Terminal()
    progress = Progress(4, stream=terminal, every_s=0)
    progress.update(4)
    progress.close()
    assert "\r" in terminal.getvalue() and "4/4" in terminal.getvalue()


@pytest.mark.parametrize("verbose", [False, True])
def test_ray_speaks_only_with_verbose(monkeypatch, verbose):
    import ray

    from utils.tools.segment import job
    from utils.tools.segment.pipeline import start_ray

    started = {}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # start_ray sets it; undone after the test
    monkeypatch.setattr(ray, "init", lambda **kwargs: started.update(kwargs))
    monkeypatch.setattr("utils.tools.segment.pipeline.quiet_ray", lambda: started.update(q=1))
    monkeypatch.setattr("utils.tools.segment.pipeline.stop_on_sigterm", lambda: None)
    argv = ["photos", "--out", "masks", *(["--verbose"] if verbose else [])]
    start_ray(job.parse_args(argv))
    assert started["log_to_driver"] is verbose  # workers' output: only with --verbose
    assert ("q" in started) is not verbose  # Ray's own log lines: in its log files only


@pytest.mark.parametrize("cluster", [False, True])
def test_model_actors_allocate_torch_buffers_in_huge_pages(monkeypatch, cluster):
    """torch reads THP_MEM_ALLOC_ENABLE once, when a process starts: the job sets it before Ray
    starts (local workers inherit it) and passes it in a cluster's runtime environment; a value
    the user set stands."""
    import ray

    from utils.tools.segment import job
    from utils.tools.segment.pipeline import start_ray

    started = {}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.setenv("RAY_num_workers_soft_limit", "2")  # start_ray's default; undone after
    if cluster:
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: started.update(kwargs))
    monkeypatch.setattr("utils.tools.segment.pipeline.quiet_ray", lambda: None)
    monkeypatch.setattr("utils.tools.segment.pipeline.stop_on_sigterm", lambda: None)
    start_ray(job.parse_args(["photos", "--out", "masks"]))
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    if cluster:
        env_vars = started["runtime_env"]["env_vars"]
        assert env_vars["THP_MEM_ALLOC_ENABLE"] == "1" and started["runtime_env"]["py_modules"]
    else:
        assert started["runtime_env"] is None  # the workers inherit this process's environment

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")  # the user's choice
    start_ray(job.parse_args(["photos", "--out", "masks"]))
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    if cluster:
        assert started["runtime_env"]["env_vars"]["THP_MEM_ALLOC_ENABLE"] == "0"
