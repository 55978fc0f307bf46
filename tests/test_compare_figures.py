"""The comparison figures at many variants, on the committed 36-variant experiment
``reproduction/regime_map/lr_sensitivity`` (a grid of 6 learning rates x 2 modes x 3 named
variants, 2 seeds each): drawn in seconds, at most ``style.MAX_WIDTH`` wide, faceted by the
toggles, the legend off the data, the bands the harness's t-intervals; and the comparison
command's ``--baseline``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scipy.stats  # noqa: E402
from PIL import Image  # noqa: E402

from ablations import results  # noqa: E402
from ablations.analysis import compare, facets, figures, stats, style  # noqa: E402
from ablations.core.status import Status  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WIDE = REPO / "reproduction" / "regime_map" / "lr_sensitivity"
LRS = ["0.0015", "0.003", "0.006", "0.012", "0.024", "0.048"]


@pytest.fixture(scope="module")
def wide():
    return results.load_runs(WIDE), results.load_curves(WIDE), results.reference_lines(WIDE)


def test_the_grid_is_read_from_the_toggle_columns(wide):
    _, curves, _ = wide
    factors = facets.toggle_factors(curves)
    assert list(factors) == ["lr", "named variant", "preset"]  # most values first
    assert list(factors["lr"].cat.categories) == LRS
    assert set(factors["named variant"]) == {"baseline", "no_prenorm", "no_bias_correction"}
    assert len(factors.drop_duplicates()) == 36  # the toggles tell every variant apart
    # two named variants: no grid, one colour per variant
    named = results.load_curves(REPO / "reproduction" / "figure2_prenorm")
    assert facets.toggle_factors(named).empty


def test_the_36_variant_figure_is_fast_narrow_faceted_and_its_legend_off_the_data(wide, tmp_path):
    runs, curves, reference = wide
    figures.setup()
    start = time.perf_counter()
    fig = figures.loss_panels(curves, runs=runs, reference=reference, smooth=10, title="lr")
    path = figures.save(fig, tmp_path, "compare")
    elapsed = time.perf_counter() - start
    assert elapsed < 30, elapsed  # seaborn's bootstrap took minutes here
    with Image.open(path) as image:
        width = image.size[0]
    assert width <= style.MAX_WIDTH * style.DPI
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert titles == sorted(f"lr = {lr}" for lr in LRS)  # a column per lr, a row per metric
    assert len(fig.axes) == 12
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    texts = {t.get_text() for legend in legends for t in legend.get_texts()}
    assert {"baseline", "no_prenorm", "no_bias_correction", "apex", "nvlamb"} <= texts
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


def test_the_band_is_the_t_interval_over_seeds(wide):
    runs, curves, _ = wide
    variant, step = "no_prenorm,preset=apex,lr=0.012", 300
    bands = facets.seed_bands(curves[curves["metric"] == "val/mlm_loss"])
    row = bands[(bands["variant"] == variant) & (bands["phase_step"] == step)].iloc[0]
    values = curves[
        (curves["variant"] == variant)
        & (curves["metric"] == "val/mlm_loss")
        & (curves["phase_step"] == step)
    ]["value"].to_numpy()
    assert len(values) == 2 == row["n"]
    low, high = scipy.stats.t.interval(
        0.95, len(values) - 1, loc=values.mean(), scale=scipy.stats.sem(values)
    )
    assert row["mean"] == pytest.approx(values.mean())
    assert (row["low"], row["high"]) == pytest.approx((low, high))
    # and the figure draws that band: a polygon spanning [low, high] at that step
    fig = figures.loss_panels(curves, ["val/mlm_loss"], runs=runs)
    ax = next(a for a in fig.axes if a.get_title() == "lr = 0.012")
    spans = []
    for band in ax.collections:
        xy = np.concatenate([p.vertices for p in band.get_paths()])
        at = xy[np.isclose(xy[:, 0], step)][:, 1]
        if len(at):
            spans.append((at.min(), at.max()))
    assert any(np.allclose(s, (low, high)) for s in spans)


def _paired(runs: pd.DataFrame, a: str, b: str) -> float:
    done = runs[(runs["status"] == Status.COMPLETE) & (runs["stage"] == "seed")]
    table = done.pivot_table(index="seed", columns="variant", values="final_val_mlm_loss")
    return float((table[a] - table[b]).mean())


def test_baseline_changes_what_differences_are_taken_from(wide):
    runs, _, _ = wide
    base = "baseline,preset=nvlamb,lr=0.006"
    table = compare.comparison_table(runs, baseline=base)
    column = f"minus {base}"
    assert column in table and "minus baseline,preset=apex,lr=0.0015" not in table
    for v in ("no_prenorm,preset=nvlamb,lr=0.006", "baseline,preset=apex,lr=0.048"):
        assert table.loc[v, column] == pytest.approx(_paired(runs, v, base))
    assert np.isnan(table.loc[base, column])
    first = compare.comparison_table(runs)
    v = "no_prenorm,preset=nvlamb,lr=0.006"
    assert first.loc[v, "minus baseline,preset=apex,lr=0.0015"] == pytest.approx(
        _paired(runs, v, "baseline,preset=apex,lr=0.0015")
    )
    assert stats.paired_difference(runs, v, base)["mean"] == pytest.approx(table.loc[v, column])


def test_a_bad_baseline_is_one_error_line_naming_the_flag_and_the_variants(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ablations.analysis.compare", str(WIDE), "--out", str(tmp_path)]
        + ["--baseline", "no_such_variant"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --baseline 'no_such_variant'")
    assert "baseline,preset=apex,lr=0.0015" in lines[0]
    assert not list(tmp_path.rglob("*.png"))


def test_the_final_metric_figure_puts_variants_on_the_y_axis_without_collisions(wide):
    runs, _, _ = wide
    summary = stats.summarize(runs, "final_val_mlm_loss")
    fig = figures.final_metric_plot(runs, summary, "final_val_mlm_loss", baseline=None)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert len(labels) == 36
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert fig.get_size_inches()[0] * style.DPI <= style.MAX_WIDTH * style.DPI
