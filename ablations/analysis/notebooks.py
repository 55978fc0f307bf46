"""The headless runner of the notebooks (``make figures``): each notebook of ``notebooks/``
executed with a real Jupyter kernel (papermill), its figures written as PNG.

Command (its name predates this module; :mod:`ablations.analysis.figures` hands it here)::

    python -m ablations.analysis.figures run --results results --out results/figures [--experiment
    NAME ...]

executes each notebook, injecting ``experiment``, ``results_dir`` and ``figures_dir`` into its
``parameters`` cell. ``figure2_prenorm``, ``figure3_decay`` and ``bias_correction`` run against
the experiment of the same name (skipped, with a message, when it is absent); ``regime_map`` once
against ``lr_sensitivity`` (reading the other experiments of the regime map beside it);
``batch_scaling`` once against ``batch_nvlamb`` (reading every ``batch_*`` beside it);
``compare_variants`` against every experiment. Figures go to
``<out>/<experiment>/<notebook>[_<panel>].png``. The kernel is ``python3`` as shipped by
ipykernel inside this environment (Jupyter starts ``python`` as ``sys.executable``), so no
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

import papermill
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from ablations import results as res
from ablations.analysis.locations import REPO, experiments, figures_root
from ablations.core.errors import fail, one_line
from ablations.core.fileio import FrozenError, check_writable

NOTEBOOKS = REPO / "notebooks"
#: Notebooks reproducing one claim, each run against the experiment of the same name.
CLAIM_NOTEBOOKS = ("figure2_prenorm", "figure3_decay", "bias_correction")
#: Notebooks that read several experiments of one folder, run once against the named one when
#: it is present: ``regime_map`` (sweeps/regime_map.yaml) and ``batch_scaling``
#: (sweeps/batch_scaling.yaml, and its rerun sweeps/batch_resolved.yaml) read their siblings too.
MAP_NOTEBOOKS = {
    "regime_map": ("lr_sensitivity",),
    "batch_scaling": ("batch_nvlamb", "resolved_nvlamb"),
}
#: Notebooks run against every experiment present.
EVERY_EXPERIMENT = ("compare_variants",)


class FiguresError(RuntimeError):
    """A notebook run that cannot start (no kernel, no results); one line."""


@dataclass(frozen=True)
class Job:
    """One notebook executed against one experiment."""

    notebook: str
    experiment: str


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
    jobs += [Job(nb, e) for nb, hubs in MAP_NOTEBOOKS.items() for e in hubs if e in wanted]
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
