"""Shared fixtures. Helpers live in ``tests/helpers.py`` (importable: pytest puts tests/ on the
path because it has no ``__init__.py``)."""

from __future__ import annotations

import pytest
import torch
from helpers import load_timm_optim
from pg_server import session_postgres
from slurm_cluster import session_cluster

# Small models: one thread is as fast and keeps results independent of the machine's cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def timm_optim():
    """timm's ``Lamb`` and ``Lars`` classes, imported without timm's package ``__init__``."""
    return load_timm_optim()


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory):
    """A cache folder holding the embedded corpus, built once per test session (~15-30 s)."""
    from ablations.data import build_embedded

    cache = tmp_path_factory.mktemp("embedded-cache")
    entry = build_embedded(cache)
    assert entry.built
    return cache, entry


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A running one-node SLURM cluster (``tests/slurm_cluster.py``), shared by the session."""
    yield from session_cluster(tmp_path_factory)


@pytest.fixture(scope="session")
def postgres():
    """A running PostgreSQL server (``tests/pg_server.py``); yields its SQLAlchemy URL."""
    yield from session_postgres()
