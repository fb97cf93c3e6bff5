import matplotlib

matplotlib.use("Agg")
import pytest

from utils.timing import (
    Span,
    Stopwatch,
    plot_timeline,
    results_table,
    save_results,
    saved_results,
    timed,
)


def test_stopwatch_measures_elapsed_time():
    with Stopwatch() as watch:
        sum(range(10000))
    assert 0 < watch.seconds < 5


def test_timed_records_where_and_how_many():
    result, span = timed(lambda n: list(range(n)), 3)
    assert result == [0, 1, 2] and span.n_images == 3 and span.end >= span.start
    assert ":" in span.worker


def test_results_table_computes_rates_and_ratios():
    table = results_table(
        [
            {"approach": "sequential", "images": 10, "seconds": 5.0},
            {"approach": "actors", "images": 10, "seconds": 2.5},
        ],
        baseline="sequential",
    )
    assert table["images/s"].tolist() == [2.0, 4.0]
    assert table["vs sequential"].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="baseline"):
        results_table([{"approach": "a", "images": 1, "seconds": 1}], baseline="b")


def test_timeline_has_one_row_per_worker():
    spans = [Span("h:1", 0, 1, 4), Span("h:2", 0.5, 2, 4), Span("h:1", 1, 2, 4)]
    figure = plot_timeline(spans)
    assert len(figure.axes[0].get_yticklabels()) == 2
    assert len(figure.axes[0].patches) == 3
    with pytest.raises(ValueError):
        plot_timeline([])


def test_timeline_from_the_submission_shows_the_start_up():
    spans = [Span("h:1", 103.0, 104.0, 4), Span("h:2", 103.5, 105.0, 4)]
    ax = plot_timeline(spans, started=100.0).axes[0]
    bars = [p for p in ax.patches if p.get_width() in (1.0, 1.5)]
    assert sorted(bar.get_x() for bar in bars) == [3.0, 3.5]  # seconds since the submission
    band = [p for p in ax.patches if p not in bars]
    assert len(band) == 1 and band[0].get_x() == 0  # the start-up: 0 to 3 s
    assert "start-up, 3.0 s" in ax.get_xlabel()
    assert plot_timeline(spans).axes[0].patches[0].get_x() == 0  # without: from the first bar


def test_saved_results_read_back_each_notebooks_latest_runs_at_one_image_count(tmp_path):
    def runs(seconds: float, images: int = 8) -> list[dict]:
        return [
            {"approach": "sequential", "images": images, "seconds": 4.0},
            {"approach": "Ray Tasks", "images": images, "seconds": seconds},
        ]

    assert saved_results(8, cache_dir=tmp_path).empty  # nothing saved yet
    save_results("02_ray_tasks", runs(9.0), cache_dir=tmp_path)
    save_results("02_ray_tasks", runs(5.0), cache_dir=tmp_path)  # run again: replaces
    save_results("02_ray_tasks", runs(50.0, images=160), cache_dir=tmp_path)  # another count
    save_results(
        "03_ray_actors", [{"approach": "Ray Actors", "images": 8, "seconds": 2.0}], tmp_path
    )
    table = saved_results(8, cache_dir=tmp_path)
    assert table[["notebook", "approach", "seconds"]].values.tolist() == [
        ["02_ray_tasks", "sequential", 4.0],
        ["02_ray_tasks", "Ray Tasks", 5.0],
        ["03_ray_actors", "Ray Actors", 2.0],
    ]
    assert (table["images"] == 8).all() and table["measured_at"].str.match(r"\d{4}-").all()
    assert saved_results(160, cache_dir=tmp_path)["seconds"].tolist() == [4.0, 50.0]
    assert not list(tmp_path.rglob("*.tmp"))
