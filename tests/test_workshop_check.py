"""The workshop check: each finding, the verdict and the exit code, all without network or Ray."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import pytest

from utils.config import CourseConfig
from utils.tools import workshop_check as wc


@pytest.fixture
def context(tmp_path):
    return wc.Context(
        config=CourseConfig(cache_dir=tmp_path / "cache", num_images=3),
        requirements=tmp_path / "requirements.txt",
        notebooks_dir=tmp_path,
    )


def test_by_default_it_reads_this_repository():
    """The requirements and notebooks the check reads unless told otherwise are the course's."""
    repo = Path(__file__).resolve().parent.parent
    assert repo / "requirements.txt" == wc.REQUIREMENTS and wc.REQUIREMENTS.is_file()
    assert repo / "notebooks" == wc.NOTEBOOKS_DIR
    assert len(list(wc.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))) == 10


def test_read_pins_keeps_name_version_pairs_only(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nray[data]==2.60.0\nNumPy == 2.4.6  # why\npip>=24\n\n")
    assert wc.read_pins(path) == {"ray": "2.60.0", "numpy": "2.4.6"}
    conda = tmp_path / "environment.yml"
    conda.write_text("dependencies:\n  - python=3.11\n  - pip:\n      - huggingface_hub==2.4.0\n")
    assert wc.read_pins(conda) == {"huggingface-hub": "2.4.0"}


def test_packages_ok_when_every_pin_matches(context, monkeypatch):
    context.requirements.write_text("numpy==2.4.6\ntorch==2.13.0\n")
    versions = {"numpy": "2.4.6", "torch": "2.13.0+cpu"}  # a CPU build's local label is fine
    monkeypatch.setattr(importlib.metadata, "version", versions.__getitem__)
    monkeypatch.setattr(wc.importlib, "import_module", lambda name: None)
    result = wc.check_packages(context)
    assert result.status == "OK" and "all 2 pinned" in result.detail


def test_packages_name_what_is_missing_wrong_or_broken(context, monkeypatch):
    context.requirements.write_text("numpy==2.4.6\npandas==3.1.1\npillow==13.0.0\n")

    def version(dist):
        if dist == "pandas":
            raise importlib.metadata.PackageNotFoundError(dist)
        return {"numpy": "2.3.0", "pillow": "13.0.0"}[dist]

    def import_module(name):
        if name == "PIL":
            raise ImportError("libjpeg missing")

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(wc.importlib, "import_module", import_module)
    result = wc.check_packages(context)
    assert result.status == "FAIL"
    assert "not installed: pandas" in result.detail
    assert "numpy 2.3.0 (pinned 2.4.6)" in result.detail
    assert "PIL (ImportError: libjpeg missing)" in result.detail
    assert "make setup" in result.advice


def test_packages_without_requirements_file_warn(context):
    assert wc.check_packages(context).status == "WARN"


def test_model_lookup_is_local_only_and_fails_clearly(context, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def snapshot_download(**kwargs):
        calls.append(kwargs)
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    result = wc.check_model(context)
    assert result.status == "FAIL" and "not in the Hugging Face cache" in result.detail
    assert "utils.tools.prefetch" in result.advice
    assert calls and all(call["local_files_only"] for call in calls)


def test_model_cached_with_weights_is_ok(context, monkeypatch, tmp_path):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (snapshot / name).write_text("{}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: str(snapshot))
    assert wc.check_model(context).status == "OK"
    (snapshot / "model.safetensors").unlink()
    result = wc.check_model(context)
    assert result.status == "FAIL" and "*.safetensors" in result.detail


def test_model_from_a_local_folder(context, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    context.config = CourseConfig(model=str(folder))
    assert "config.json" in wc.check_model(context).detail
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (folder / name).write_text("{}")
    assert wc.check_model(context).status == "OK"


def test_images_not_prefetched_fail_then_enough_pass(context):
    from utils.data import load_bundled_images, prefetched_images_dir

    result = wc.check_images(context)
    assert result.status == "FAIL" and "bundled photographs" in result.detail
    assert "utils.tools.prefetch --images 3" in result.advice
    load_bundled_images(2).save_to_disk(str(prefetched_images_dir(context.config)))
    result = wc.check_images(context)
    assert result.status == "FAIL" and "2 prefetched" in result.detail
    context.config = CourseConfig(cache_dir=context.config.cache_dir, num_images=2)
    assert wc.check_images(context).status == "OK"


def test_images_from_a_data_dir_are_counted(context, tmp_path):
    from helpers import photo

    folder = tmp_path / "photos"
    folder.mkdir()
    photo(20, 16).save(folder / "a.png")
    (folder / "broken.jpg").write_text("not an image")
    context.config = CourseConfig(data_dir=folder, num_images=1)
    assert wc.check_images(context).status == "OK"
    context.config = CourseConfig(data_dir=folder, num_images=5)
    assert "1 readable images" in wc.check_images(context).detail


def test_every_notebook_of_the_course_has_its_work_counted():
    notebooks = sorted(p.stem for p in wc.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 10 and sorted(wc.NOTEBOOK_WORK) == notebooks


def test_estimate_adds_each_notebooks_passes_and_start_ups(context, monkeypatch):
    for name in ("00_overview.ipynb", "01_a.ipynb", "02_b.ipynb", "notes.ipynb"):
        (context.notebooks_dir / name).write_text("{}")
    monkeypatch.setattr(
        wc,
        "NOTEBOOK_WORK",
        {
            "00_overview": wc.NotebookWork(0, fixed_images=2, ray_starts=0),
            "01_a": wc.NotebookWork(2, process_starts=3, rebuilds=10, waits_s=1.0),
        },
    )
    context.config = CourseConfig(num_images=100)
    costs = wc.Costs(images_per_s=2.0, process_start_s=5.0, ray_start_s=8.0, rebuild_s=0.5)
    estimate = wc.estimate_course(costs, context)
    first = (2 * 100 / 2.0 + 3 * 5.0 + 8.0 + 10 * 0.5 + 1.0) / 60
    overview = (2 / 2.0 + 5.0) / 60
    mean = wc.NotebookWork(1, fixed_images=1, process_starts=2, ray_starts=0.5, rebuilds=5)
    unknown = (1 * 100 / 2.0 + 1 / 2.0 + 2 * 5.0 + 0.5 * 8.0 + 5 * 0.5 + 0.5) / 60
    assert mean.passes == 1  # what the unknown notebook 02_b is estimated as
    assert estimate["minutes"] == pytest.approx(
        {"00_overview": overview, "01_a": first, "02_b": unknown}
    )
    assert estimate["total_minutes"] == pytest.approx(overview + first + unknown)
    # 01_a is the limit: 180 s minus its fixed 29 s, at 2 images/s, over 2 passes.
    assert estimate["comfortable_images"] == int((180 - 29.0) * 2.0 / 2)


def test_speed_times_predict_offline_and_advises(context, monkeypatch):
    import utils.data
    import utils.model
    from utils.data import load_bundled_images

    predict_module = importlib.import_module("utils.inference")

    seen = {}

    def load_model(config, device=None):
        seen["offline"] = config.hub_offline
        return utils.model.offline_model(), None

    monkeypatch.setattr(utils.model, "load_model", load_model)
    monkeypatch.setattr(utils.data, "load_test_images", lambda n, config: load_bundled_images(n))
    monkeypatch.setattr(predict_module, "predict", lambda model, processor, images: images)
    monkeypatch.setattr(wc, "measure_process_start", lambda: 5.0)
    context.timing_images = 4
    result = wc.check_speed(context)
    assert seen["offline"] is True
    assert result.status == "OK" and "4 images in" in result.detail
    assert "random-weight offline model" in result.detail
    context.config = CourseConfig(num_images=10**9)
    slow = wc.check_speed(context)
    assert slow.status == "WARN" and "COURSE_NUM_IMAGES=" in slow.advice


def test_main_exit_code_and_verdict(monkeypatch, capsys):
    def ok(context):
        print("loader chatter that must not reach the report")
        return wc.Check("Alpha", "OK", "fine")

    def broken(context):
        raise RuntimeError("boom")

    monkeypatch.setattr(wc, "CHECKS", (ok, lambda context: wc.Check("Beta", "WARN", "slow")))
    assert wc.main([]) == 0
    out = capsys.readouterr().out
    assert "[ OK ] Alpha: fine" in out and "READY" in out and "look at: Beta" in out
    assert "chatter" not in out

    monkeypatch.setattr(wc, "CHECKS", (ok, broken))
    assert wc.main([]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] Broken: the check itself failed: RuntimeError: boom" in out
    assert "NOT READY: fix Broken" in out


def test_make_run_executes_the_solutions_of_the_exercise_notebooks_in_course_order():
    from utils.tools.run_notebooks import course_notebooks

    paths = course_notebooks()
    assert [p.stem for p in paths] == sorted(wc.NOTEBOOK_WORK)
    assert {p.parent.name for p in paths if p.stem[:2] in {"02", "03", "04", "05", "06"}} == {
        "solutions"
    }
    assert paths[0].parent == wc.NOTEBOOKS_DIR


def test_the_timings_table_sets_each_measurement_beside_its_estimate():
    from utils.tools.run_notebooks import timings_table

    table = timings_table({"01_a": 120.0, "02_b": 30.0}, {"01_a": 60.0, "02_b": 60.0})
    assert table.loc["01_a", "measured / estimated"] == 2.0
    assert table.loc["02_b", "measured / estimated"] == 0.5
    assert table.loc["all", "measured min"] == 2.5 and table.loc["all", "estimated min"] == 2.0
    # Without an estimate the ratios are unknown, not zero.
    assert timings_table({"01_a": 60.0}, {})["measured / estimated"].isna().all()
