"""The benchmark command end to end, tiny, plus its pure helpers."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from utils.timing import Span
from utils.tools.benchmark import COLUMNS, PeakMemory, markdown_table, startup_and_steady


def test_markdown_table_formats_floats():
    frame = pd.DataFrame({"a": [1.234], "b": ["x"]}, index=pd.Index(["row"], name="name"))
    assert markdown_table(frame, ".1f").splitlines() == [
        "| name | a | b |",
        "|---|---|---|",
        "| row | 1.2 | x |",
    ]


def test_start_up_ends_at_the_first_finished_batch_and_the_steady_rate_counts_later_work():
    # Two workers: batches of 4 on each. The first finishes 2 s after the start; the other
    # worker's first batch ran from 1.5 to 3.5 s, so only its last 1.5 s of 2 count as steady.
    spans = [
        Span("a", 100.0, 102.0, 4),
        Span("b", 101.5, 103.5, 4),
        Span("a", 102.0, 104.0, 4),
    ]
    first, steady = startup_and_steady(100.0, 105.0, spans)
    assert first == 2.0 and steady == pytest.approx((4 * 1.5 / 2 + 4) / 3)
    # Batches that finished together: nothing is left after the first, so no rate.
    first, steady = startup_and_steady(100.0, 101.5, [Span("a", 100.5, 101.0, 2)] * 2)
    assert first == 1.0 and steady != steady


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
    # Two batches of one image each: a start-up within the run, and a rate after it.
    assert ((table["first_batch_s"] > 0) & (table["first_batch_s"] < table["seconds"])).all()
    assert (table["steady_images_per_s"] > 0).all()
    report = (out / "benchmark.md").read_text()
    for heading in ("Images per second", "Start-up and steady", "ms per image", "Hardware ceiling"):
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
    assert 1 <= measured["pss_samples"] <= measured["rss_samples"]


class _CostlyProcess:
    """Stands in for a process whose PSS takes 20 ms of CPU to read, as one with torch does."""

    def memory_info(self):
        return SimpleNamespace(rss=300 * 2**20)

    def memory_full_info(self):
        started = time.thread_time()
        while time.thread_time() - started < 0.02:
            pass
        return SimpleNamespace(pss=100 * 2**20)


def test_peak_memory_reads_pss_only_as_often_as_its_cpu_budget_allows(monkeypatch):
    """Two processes cost 40 ms of CPU per PSS sweep; at 10% of a CPU that is one sweep every
    0.4 s, while the cheap RSS sum is read every 10 ms."""
    monkeypatch.setattr(PeakMemory, "_processes", lambda self: [_CostlyProcess()] * 2)
    with PeakMemory(interval_s=0.01, proportional=True, pss_budget=0.1) as memory:
        time.sleep(1.0)
    assert 1 <= memory.pss_samples <= 4, memory.pss_samples
    assert memory.samples >= 10 * memory.pss_samples, (memory.samples, memory.pss_samples)
    assert memory.peak_pss_bytes == 200 * 2**20 and memory.peak_bytes == 600 * 2**20
    assert memory.cpu_seconds < 0.3  # no more than the sweeps allowed, plus the RSS reads
