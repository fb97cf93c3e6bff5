"""The benchmark command end to end, tiny, plus its pure helpers."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from utils.tools.benchmark import COLUMNS, markdown_table


def test_markdown_table_formats_floats():
    frame = pd.DataFrame({"a": [1.234], "b": ["x"]}, index=pd.Index(["row"], name="name"))
    assert markdown_table(frame, ".1f").splitlines() == [
        "| name | a | b |",
        "|---|---|---|",
        "| row | 1.2 | x |",
    ]


@pytest.mark.slow
def test_benchmark_command_writes_its_report(tmp_path):
    """The command end to end on one Ray approach (notebook 07 runs all of them, live)."""
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "utils.tools.benchmark",
            "--images",
            "2",
            "--batch-size",
            "2",
            "--approaches",
            "tasks",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out / "benchmark.csv")
    assert list(table.columns) == list(COLUMNS)
    assert list(table["approach"]) == ["sequential", "tasks"]  # the reference always runs
    assert (table["n_images"] == 2).all() and (table["images_per_s"] > 0).all()
    assert (table["peak_rss_mb"] > 100).all()
    report = (out / "benchmark.md").read_text()
    for heading in ("Images per second", "ms per image", "Hardware ceiling", "GFLOP"):
        assert heading in report
    assert (out / "benchmark.png").stat().st_size > 1000
    machine = json.loads((out / "machine.json").read_text())
    assert machine["cpu_count"] >= 1 and machine["speed"]["predict_vs_forward"] > 0
    assert set(machine["stage_ms_per_image"]) >= {"preprocess", "model forward"}


@pytest.mark.slow
def test_job_memory_run_accounts_for_every_image(tmp_path):
    """The production job on generated files (bundled photos, then variants), memory sampled."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "utils.tools.benchmark",
            "--job-memory",
            "13",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    measured = json.loads((tmp_path / "job_memory.json").read_text())
    assert measured["masks_written"] == measured["images_done"] == measured["images"] == 13
    # The driver alone holds torch and a model; shared pages make RSS sums exceed PSS sums.
    assert 0.2 < measured["peak_pss_gib"] <= measured["peak_rss_gib"] < 16
    assert measured["int64_maps_in_driver_gib"] == pytest.approx(
        8 * measured["uint8_maps_gib"], abs=0.02
    )
    assert "would need" in result.stdout
