"""Plots shared by the notebooks, and the headless runner of the notebooks (``make figures``).

The notebooks in ``notebooks/`` read results through :mod:`ablations.results` and draw with the
functions here, so every figure has the same look: one colour per variant (in the experiment's
order), a panel per phase, labelled axes, a legend of the variants, and the unigram-entropy
reference line on MLM-loss panels.

Runner::

    python -m ablations.analysis.figures run --results results --out results/figures [--experiment
    NAME ...]

executes each notebook with a real Jupyter kernel (papermill), injecting ``experiment``,
``results_dir`` and ``figures_dir`` into its ``parameters`` cell. ``figure2_prenorm``,
``figure3_decay`` and ``bias_correction`` run against the experiment of the same name (skipped,
with a message, when it is absent); ``regime_map`` once against ``lr_sensitivity`` (reading the
other experiments of the regime map beside it); ``batch_scaling`` once against ``batch_nvlamb``
(reading every ``batch_*`` beside it); ``compare_variants`` against every experiment.
Figures go to ``<out>/<experiment>/<notebook>[_<panel>].png``. The kernel is ``python3`` as shipped
by ipykernel inside this environment (Jupyter starts ``python`` as ``sys.executable``), so no
user-level kernel install is needed. The kernel imports ``ablations`` the one way every process of
the harness does: the ``.pth`` that ``make setup`` puts in the environment (the repository is not an
installed package); notebooks opened in ``jupyter lab notebooks/`` find it the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablations import results as res
from ablations.analysis import stats
from ablations.core.errors import fail, one_line
from ablations.core.fileio import FrozenError, check_writable
from ablations.core.status import Status

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
#: Notebooks reproducing one claim, each run against the experiment of the same name.
CLAIM_NOTEBOOKS = ("figure2_prenorm", "figure3_decay", "bias_correction")
#: Notebooks that read several experiments of one folder, run once against the named one when
#: it is present: ``regime_map`` (sweeps/regime_map.yaml) and ``batch_scaling``
#: (sweeps/batch_scaling.yaml) read their siblings too.
MAP_NOTEBOOKS = {"regime_map": "lr_sensitivity", "batch_scaling": "batch_nvlamb"}
#: Notebooks run against every experiment present.
EVERY_EXPERIMENT = ("compare_variants",)

_LABELS = {
    "train/loss": "training loss (MLM + NSP, nats)",
    "train/mlm_loss": "training MLM loss (nats)",
    "val/loss": "validation loss (MLM + NSP, nats)",
    "val/mlm_loss": "validation MLM loss (nats)",
    "val/nsp_loss": "validation NSP loss (nats)",
    "val/mlm_acc": "validation MLM accuracy",
    "optim/grad_norm": "global gradient norm",
    "optim/lr": "learning rate",
    "phase_step": "optimizer step",
    "step": "optimizer step (run)",
    "samples": "samples seen",
    "wall_time": "training time (s)",
}


class FiguresError(RuntimeError):
    """A notebook run that cannot start (no kernel, no results); one line."""


# --- plotting -----------------------------------------------------------------------------------


def setup() -> None:
    """The shared seaborn theme (white grid, notebook context)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def label(name: str) -> str:
    """An axis label for a metric or coordinate name."""
    return _LABELS.get(name, name)


def paths(
    experiment: str, results_dir: str | Path | None = None, figures_dir: str | Path | None = None
) -> tuple[Path, Path]:
    """``(exp_dir, figures_dir)`` from a notebook's parameters. ``results_dir=None`` means the
    repository's ``results/`` (your sweeps) when it holds the experiment, else the committed
    ``reproduction/``; ``figures_dir=None`` means ``<results_dir>/figures/<experiment>``, or
    ``results/reproduction-figures/[<folder>/]<experiment>`` for the committed results (any
    folder under ``reproduction/``, which a notebook never writes). Nothing is hard-coded
    elsewhere."""
    if results_dir is None:
        mine = REPO / "results"
        base = mine if (mine / experiment).is_dir() else REPO / "reproduction"
    else:
        base = Path(results_dir)
    out = Path(figures_dir) if figures_dir is not None else figures_root(base) / experiment
    return base / experiment, out


def figures_root(results_dir: str | Path) -> Path:
    """Where figures of ``results_dir`` go by default: ``<results_dir>/figures``, or for a
    folder under the committed ``reproduction/`` (never written by a notebook or the runner)
    ``results/reproduction-figures/<its path inside reproduction/>``."""
    base = Path(results_dir).resolve()
    committed = (REPO / "reproduction").resolve()
    if base == committed or committed in base.parents:
        return REPO / "results" / "reproduction-figures" / base.relative_to(committed)
    return Path(results_dir) / "figures"


def palette(variants: Sequence[str] | pd.Series) -> dict[str, Any]:
    """One colour per variant, in the variants' (categorical) order: stable across figures."""
    import seaborn as sns

    names = _order(variants)
    return dict(zip(names, sns.color_palette(n_colors=max(len(names), 1)), strict=False))


def _order(variants: Sequence[str] | pd.Series) -> list[str]:
    if isinstance(variants, pd.Series) and isinstance(variants.dtype, pd.CategoricalDtype):
        present = set(variants.dropna().astype(str))
        return [str(c) for c in variants.cat.categories if str(c) in present]
    return list(dict.fromkeys(str(v) for v in variants))


def _trials(runs: pd.DataFrame | None, stage: str | None) -> set[int] | None:
    return None if runs is None else set(stats.select_runs(runs, stage)["trial"])


def loss_panels(
    curves: pd.DataFrame,
    metrics: Sequence[str] = ("train/loss", "val/mlm_loss"),
    *,
    phases: Sequence[int] | None = None,
    runs: pd.DataFrame | None = None,
    stage: str | None = "auto",
    reference: pd.DataFrame | None = None,
    x: str = "phase_step",
    smooth: int = 1,
    errorbar: Any = ("ci", 95),
    title: str | None = None,
) -> Any:
    """Curves per variant, a row per metric and a column per phase; bands over seeds.

    Args:
        curves: :func:`ablations.results.load_curves`.
        metrics: curve metrics, one row of panels each.
        phases: phases to show (default: every phase in the data).
        runs: with ``stage``, which trials to draw (:func:`ablations.analysis.stats.select_runs`):
            by default the seed reruns if any, so a band is seed-to-seed spread.
        reference: :func:`ablations.results.reference_lines`, drawn on MLM-loss panels.
        x: ``phase_step``, ``step``, ``samples`` or ``wall_time``.
        smooth: rolling mean over this many steps of each trial, for the (noisy, per-step)
            ``train/`` metrics only.
        errorbar: seaborn's (``("ci", 95)``: mean and a 95% bootstrap band over trials).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    keep = _trials(runs, stage)
    data = curves[curves["metric"].astype(str).isin(metrics)]
    if keep is not None:
        data = data[data["trial"].isin(keep)]
    phases = sorted(int(p) for p in data["phase"].dropna().unique()) if phases is None else phases
    phases = list(phases) or [1]
    colors = palette(curves["variant"])
    fig, axes = plt.subplots(
        len(metrics), len(phases), figsize=(5.2 * len(phases), 3.6 * len(metrics)), squeeze=False
    )
    for row, metric in enumerate(metrics):
        for col, phase in enumerate(phases):
            ax = axes[row][col]
            d = data[(data["metric"].astype(str) == metric) & (data["phase"] == phase)]
            d = _smoothed(d, x, smooth if metric.startswith("train/") else 1)
            order = [v for v in colors if v in set(d["variant"].astype(str))]
            if len(d):
                sns.lineplot(
                    data=d.assign(variant=d["variant"].astype(str)),
                    x=x,
                    y="value",
                    hue="variant",
                    hue_order=order,
                    palette=colors,
                    errorbar=errorbar,
                    seed=0,
                    ax=ax,
                )
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            if metric.endswith("mlm_loss"):
                _reference(ax, reference, phase)
            xlabel = f"{label(x)} (phase {phase})" if x == "phase_step" else label(x)
            ax.set(xlabel=xlabel, ylabel=label(metric), title=f"phase {phase}")
    _one_legend(axes.flat, on=axes[0][-1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _smoothed(d: pd.DataFrame, x: str, window: int) -> pd.DataFrame:
    if window <= 1 or d.empty:
        return d
    d = d.sort_values(["trial", x])
    rolled = d.groupby("trial")["value"].transform(
        lambda v: v.rolling(window, min_periods=1).mean()
    )
    return d.assign(value=rolled)


def _reference(ax: Any, reference: pd.DataFrame | None, phase: int) -> None:
    if reference is None or reference.empty:
        return
    for _, line in reference.iterrows():
        if pd.isna(line["phase"]) or int(line["phase"]) == phase:
            ax.axhline(line["value"], color="0.3", ls="--", lw=1, label=line["label"])


def _one_legend(axes: Sequence[Any], on: Any) -> None:
    """One legend for a figure, on ``on``: every variant and reference line of ``axes``."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        on.legend(list(handles.values()), list(handles), title="variant", fontsize="small")


def wrap_variant_ticks(ax: Any) -> None:
    """Grid variant names (``prenorm=none,eps=1e-06``) one toggle per line, so that a dozen
    variants stay readable side by side."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    if any("," in name for name in labels):
        ax.set_xticks(ax.get_xticks(), [n.replace(",", "\n") for n in labels], fontsize="small")


def final_metric_plot(runs: pd.DataFrame, summary: pd.DataFrame, metric: str) -> Any:
    """Each complete run's final ``metric`` (dots) and the mean with its 95% t-interval."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    colors = palette(runs["variant"])
    order = [v for v in colors if v in summary.index.astype(str)]
    done = runs[runs["status"] == Status.COMPLETE]
    done = done.assign(variant=lambda d: d["variant"].astype(str))
    fig, ax = plt.subplots(figsize=(1.4 * max(len(order), 2) + 2.5, 3.8))
    if order:
        sns.stripplot(
            data=done, x="variant", y=metric, hue="variant", order=order, palette=colors, ax=ax
        )
        s = summary.copy()
        s.index = s.index.astype(str)
        s = s.loc[order]
        xs = np.arange(len(order))
        err = np.vstack([s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]])
        ax.errorbar(xs + 0.25, s["mean"], yerr=np.nan_to_num(err), fmt="o", color="k", capsize=4)
        ax.plot([], [], "ko", label="mean, 95% t-interval")
        ax.legend(fontsize="small")
    name = label(metric.removeprefix("final_").replace("_", "/", 1))
    ax.set(xlabel="variant", ylabel=f"final {name}", title="final value of each complete run")
    wrap_variant_ticks(ax)
    fig.tight_layout()
    return fig


def divergence_plot(summary: pd.DataFrame) -> Any:
    """Divergence rate per variant (diverged / finished runs), annotated with the counts."""
    import matplotlib.pyplot as plt

    s = summary.copy()
    s.index = s.index.astype(str)
    colors = palette(list(s.index))
    fig, ax = plt.subplots(figsize=(1.4 * max(len(s), 2) + 2.5, 3.4))
    if s.empty:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        s = pd.DataFrame(columns=["divergence_rate", "complete", "diverged"])
    bars = ax.bar(s.index, s["divergence_rate"].fillna(0), color=[colors[v] for v in s.index])
    for bar, (_, row) in zip(bars, s.iterrows(), strict=True):
        finished = row["complete"] + row["diverged"]
        ax.annotate(
            f"{row['diverged']:.0f}/{finished:.0f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set(xlabel="variant", ylabel="divergence rate (diverged / finished)", ylim=(0, 1.1))
    ax.set_title("diverged runs per variant")
    wrap_variant_ticks(ax)
    fig.tight_layout()
    return fig


def trust_ratio_panels(
    layers: pd.DataFrame,
    *,
    runs: pd.DataFrame | None = None,
    stage: str | None = "auto",
    weights_only: bool = True,
) -> Any:
    """Per-layer trust-ratio telemetry: top row, the median trust ratio of each block of the
    model (embeddings, encoder layers, heads; median over the run's logged steps, tensors and
    seeds) per variant; bottom row, the trust ratio over training (median over tensors, band:
    interquartile range). One column per phase; log scale."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    keep = _trials(runs, stage)
    data = layers if keep is None else layers[layers["trial"].isin(keep)]
    if weights_only:
        data = data[data["tensor"].astype(str).str.endswith(".weight")]
        data = data[~data["tensor"].astype(str).str.contains("LayerNorm")]
    data = data[np.isfinite(data["trust_ratio"]) & (data["trust_ratio"] > 0)]
    data = data.assign(variant=data["variant"].astype(str), block=data["block"].astype(str))
    phases = sorted(int(p) for p in data["phase"].dropna().unique()) or [1]
    colors = palette(layers["variant"])
    order = [v for v in colors if v in set(data["variant"])]
    fig, axes = plt.subplots(2, len(phases), figsize=(6 * len(phases), 7.2), squeeze=False)
    blocks = list(data.sort_values("index")["block"].drop_duplicates())
    for col, phase in enumerate(phases):
        d = data[data["phase"] == phase]
        top, bottom = axes[0][col], axes[1][col]
        if len(d):
            sns.pointplot(
                data=d,
                x="block",
                y="trust_ratio",
                hue="variant",
                order=blocks,
                hue_order=order,
                palette=colors,
                estimator="median",
                errorbar=None,
                dodge=0.3,
                ax=top,
            )
            sns.lineplot(
                data=d,
                x="phase_step",
                y="trust_ratio",
                hue="variant",
                hue_order=order,
                palette=colors,
                estimator="median",
                errorbar=("pi", 50),
                ax=bottom,
            )
            top.set_yscale("log")
            bottom.set_yscale("log")
        top.tick_params(axis="x", labelrotation=45)
        top.set(xlabel="block of the model", ylabel="trust ratio (median)", title=f"phase {phase}")
        bottom.set(xlabel=f"optimizer step (phase {phase})", ylabel="trust ratio (median, IQR)")
    _one_legend(axes.flat, on=axes[0][-1])
    fig.tight_layout()
    return fig


def profile_plot(profile: pd.DataFrame, scores: pd.Series | None = None) -> Any:
    """Performance profiles ``rho(tau)`` per variant (AlgoPerf); the legend gives each score."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    colors = palette(profile["variant"]) if "variant" in profile else {}
    for name, group in profile.groupby("variant", observed=True, sort=False):
        text = str(name)
        if scores is not None and name in scores.index:
            text += f" (score {scores[name]:.2f})"
        ax.step(group["tau"], group["rho"], where="post", label=text, color=colors.get(str(name)))
    ax.set(
        xlabel="τ: time to target / fastest variant's",
        ylabel="fraction of problems within τ",
        ylim=(-0.02, 1.05),
        title="performance profile",
    )
    ax.legend(title="variant", fontsize="small")
    fig.tight_layout()
    return fig


def save(fig: Any, figures_dir: Path | str, name: str) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` (folder created) and return the path."""
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


# --- running the notebooks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One notebook executed against one experiment."""

    notebook: str
    experiment: str


def experiments(results_dir: Path | str) -> list[str]:
    """The experiment directories under ``results_dir`` (sorted)."""
    base = Path(results_dir)
    found = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if path.is_dir() and not path.name.startswith(".") and _is_experiment(path):
            found.append(path.name)
    return found


def _is_experiment(path: Path) -> bool:
    marks = ("sweep.json", "study.journal", res.RUNS)
    return any((path / m).exists() for m in marks) or any(
        p.is_dir() and p.name.isdigit() for p in path.iterdir()
    )


def plan(results_dir: Path | str, only: Sequence[str] | None = None) -> tuple[list[Job], list[str]]:
    """The jobs to run and a message for every notebook skipped.

    Args:
        results_dir: the folder holding ``<experiment>/`` directories.
        only: restrict to these experiments (``--experiment``).
    """
    present = experiments(results_dir)
    wanted = present if not only else [e for e in present if e in only]
    skipped = [
        f"--experiment {e}: no experiment directory in {results_dir}"
        for e in only or ()
        if e not in present
    ]
    jobs = []
    for notebook in CLAIM_NOTEBOOKS:
        if notebook in wanted:
            jobs.append(Job(notebook, notebook))
        elif not only or notebook in only:
            skipped.append(
                f"{notebook}.ipynb: skipped, no experiment {notebook!r} in {results_dir}"
            )
    jobs += [Job(nb, e) for nb, e in MAP_NOTEBOOKS.items() if e in wanted]
    jobs += [Job(nb, e) for nb in EVERY_EXPERIMENT for e in wanted]
    return jobs, skipped


def execute(
    job: Job,
    results_dir: Path | str,
    out: Path | str,
    *,
    notebooks_dir: Path | str = NOTEBOOKS,
    executed_dir: Path | str | None = None,
    kernel_name: str = "python3",
    timeout: int = 900,
) -> Path:
    """Run one notebook headless with a real kernel; returns its figures folder.

    Raises:
        FiguresError: no usable kernel.
        papermill.PapermillExecutionError: a cell raised (the message names cell and error).
    """
    import papermill

    check_kernel(kernel_name)
    figures_dir = Path(out).resolve() / job.experiment
    source = Path(notebooks_dir) / f"{job.notebook}.ipynb"
    parameters = {
        "experiment": job.experiment,
        "results_dir": str(Path(results_dir).resolve()),
        "figures_dir": str(figures_dir),
    }
    with contextlib.ExitStack() as stack:
        if executed_dir is None:
            executed_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="notebooks-"))
        target = Path(executed_dir) / f"{job.notebook}-{job.experiment}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name=kernel_name,
            cwd=str(REPO),
            progress_bar=False,
            request_save_on_cell_execute=False,
            execution_timeout=timeout,
        )
    return figures_dir


def check_kernel(kernel_name: str = "python3") -> None:
    """Fail early, in one line, unless ``kernel_name`` runs this environment's Python.

    ipykernel ships a ``python3`` kernelspec inside the environment (``share/jupyter/kernels``,
    preferred over user-level ones in a virtualenv) whose command ``python`` Jupyter replaces
    with ``sys.executable``; ``python -m ipykernel install --sys-prefix`` writes the same.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise FiguresError(
            f"no Jupyter kernel {kernel_name!r}: install ipykernel into {sys.prefix} "
            "(make setup), or run python -m ipykernel install --sys-prefix"
        ) from None
    exe = spec.argv[0] if spec.argv else ""
    generic = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}
    if exe not in generic and Path(exe).absolute() != Path(sys.executable).absolute():
        raise FiguresError(
            f"Jupyter kernel {kernel_name!r} runs {exe}, not {sys.executable}: run "
            f"{sys.executable} -m ipykernel install --sys-prefix"
        )


def run(
    results_dir: Path | str,
    out: Path | str,
    only: Sequence[str] | None = None,
    *,
    notebooks_dir: Path | str = NOTEBOOKS,
    executed_dir: Path | str | None = None,
    log: Any = print,
) -> int:
    """Plan and execute every notebook (see the module doc); 0 if all ran, 1 if one failed,
    2 (one ``error:`` line on stderr) if ``results_dir`` is not a folder, ``out`` is committed
    (frozen) or no kernel can be started. Experiments whose tables are stale are collected
    first, once."""
    if not Path(results_dir).is_dir():
        return fail(FiguresError(f"{results_dir}: no such results directory"))
    try:
        check_writable(out)
        check_kernel()
    except (FiguresError, FrozenError) as e:
        return fail(e)
    jobs, skipped = plan(results_dir, only)
    for message in skipped:
        log(message)
    for experiment in dict.fromkeys(job.experiment for job in jobs):
        exp_dir = Path(results_dir) / experiment
        if res.is_stale(exp_dir):  # once here, not in every notebook
            log(str(res.collect(exp_dir)))
    failed = 0
    for job in jobs:
        try:
            figures_dir = execute(
                job, results_dir, out, notebooks_dir=notebooks_dir, executed_dir=executed_dir
            )
        except Exception as e:  # report every notebook, then fail
            failed += 1
            # papermill's message ends with the exception raised in the cell
            error = one_line(e, line="last")
            log(f"{job.notebook}.ipynb on {job.experiment}: FAILED: {error}")
            continue
        pngs = sorted(p.name for p in figures_dir.glob(f"{job.notebook}*.png"))
        log(f"{job.notebook}.ipynb on {job.experiment}: {figures_dir} ({', '.join(pngs)})")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ablations.analysis.figures run --results DIR --out DIR [--experiment NAME
    ...]``."""
    parser = argparse.ArgumentParser(prog="python -m ablations.analysis.figures")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="execute the notebooks headless; figures as PNG")
    p.add_argument("--results", type=Path, default=REPO / "results", help="results folder")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="figures folder (<results>/figures; results/reproduction-figures for reproduction/)",
    )
    p.add_argument("--experiment", nargs="+", metavar="NAME", help="only these experiments")
    p.add_argument("--executed", type=Path, help="keep the executed notebooks in this folder")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else figures_root(args.results)
    return run(args.results, out, args.experiment, executed_dir=args.executed)


if __name__ == "__main__":
    sys.exit(main())
