"""Shared fixtures: one embedded PostgreSQL per test session, a fresh database per test.

A template database with pgGit installed is cloned for every test that asks for
``pggit_dsn`` (``CREATE DATABASE ... TEMPLATE``), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from pggit_chaos.local import EmbeddedPostgres

TEMPLATE_DB = "pggit_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """The session's embedded PostgreSQL (removed at the end, also after failures)."""
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def pggit_template(pg_server: EmbeddedPostgres) -> str:
    """Name of a template database holding the sound pgGit core."""
    from pggit_chaos.pggit import install

    install(pg_server.create_database(TEMPLATE_DB))
    return TEMPLATE_DB


def _fresh_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pggit_dsn(pg_server: EmbeddedPostgres, pggit_template: str) -> Iterator[str]:
    """DSN of a fresh database with the sound pgGit core installed."""
    name = _fresh_name()
    dsn = pg_server.create_database(name, template=pggit_template)
    yield dsn
    pg_server.drop_database(name)


@pytest.fixture
def empty_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """DSN of a fresh database without pgGit."""
    name = _fresh_name()
    dsn = pg_server.create_database(name)
    yield dsn
    pg_server.drop_database(name)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")
    # The slice scripts/test runs again on each extra PostgreSQL version (PGGIT_CHAOS_PG_BINDIR).
    config.addinivalue_line(
        "markers", "versions: the slice also run on PostgreSQL 16 and 18 (scripts/test)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fresh-root tier (minutes, a whole Debian root) runs only when ``-m`` names it."""
    if "freshroot" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="the fresh-root tier runs only with -m freshroot (.ci/run)")
    for item in items:
        if item.get_closest_marker("freshroot"):
            item.add_marker(skip)


UPSTREAM_TEMPLATE = "upstream_shape_template"


@pytest.fixture(scope="session")
def upstream_template(pg_server: EmbeddedPostgres) -> str:
    """Name of a template database holding the sound upstream-shaped pgGit."""
    from pggit_upstream import install_upstream

    install_upstream(pg_server.create_database(UPSTREAM_TEMPLATE))
    return UPSTREAM_TEMPLATE


@pytest.fixture
def upstream_dsn(pg_server: EmbeddedPostgres, upstream_template: str) -> Iterator[str]:
    """DSN of a fresh database with the sound upstream-shaped pgGit installed."""
    name = _fresh_name()
    dsn = pg_server.create_database(name, template=upstream_template)
    yield dsn
    pg_server.drop_database(name)
