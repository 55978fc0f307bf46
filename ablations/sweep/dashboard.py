"""``python -m ablations dashboard`` (``make dashboard``): optuna-dashboard on one experiment's
study, bound to 127.0.0.1 only (a study is not something to serve to the network by default).

Where the study is: with a sweep file (``--file``), the experiment's journal or the file's RDB
URL; with only a results folder (``--results DIR``, e.g. a committed study under
``reproduction/``), the journal in ``DIR/<experiment>/``: a journal study needs nothing else, so
no sweep file has to be guessed. Without ``--experiment`` it lists the experiments it can show.

The view is read-only (:class:`~ablations.sweep.study.ReadOnlyStorage`): a write the dashboard
tries (create, delete, rename a study, a note) is answered with HTTP 403 and one log line, not a
500 and a traceback (optuna-dashboard's JSON views turn bottle's ``HTTPError`` into its status).
"""

from __future__ import annotations

import sys
from pathlib import Path

from bottle import HTTPError
from optuna_dashboard import run_server

from ablations.config import ConfigError
from ablations.core.errors import fail
from ablations.core.journal import open_journal
from ablations.sweep import study as studies


class DashboardStorage(studies.ReadOnlyStorage):
    """The read-only storage, refusing a write as HTTP 403 with one line on stderr."""

    def refuse(self, name: str) -> None:
        print(f"dashboard: refused {name}: the study is read-only here", file=sys.stderr)
        raise HTTPError(403, f"the study is read-only here: {name} refused")


def experiments(results: Path) -> list[str]:
    """The experiments under ``results`` that have a journal study, sorted."""
    return sorted(p.parent.name for p in results.glob("*/study.journal"))


def serve_folder(results: Path, names: list[str], port: int) -> int:
    """The dashboard of ``results/<name>``'s journal; the list of experiments without a name."""
    found = experiments(results)
    if not found:
        return fail(ConfigError(f"--results {results}: no experiment with a study.journal"))
    if not names:
        print(f"experiments in {results} (name one: EXPERIMENT=<name>, or --experiment):")
        for name in found:
            print(f"  {name}")
        return 0
    if len(names) != 1 or names[0] not in found:
        return fail(ConfigError(f"--experiment {' '.join(names)}: expected one of {found}"))
    return serve(DashboardStorage(open_journal(results / names[0])), names[0], port)


def serve(storage: DashboardStorage, name: str, port: int) -> int:
    print(f"optuna-dashboard of {name}: http://127.0.0.1:{port}/ (Ctrl-C stops it)", flush=True)
    run_server(storage, host="127.0.0.1", port=port)
    return 0
