"""A run against a user's database leaves nothing there unless asked, and `cleanup` finds leftovers.

The real console script (`pggit-chaos run --dsn`) runs a short trigger-disable experiment (its
workload creates a schema, tables, a branch, commits and history rows) against a database of the
session's embedded PostgreSQL that holds a user's own pgGit rows; afterwards every pgGit row
and schema is as it was. With --keep-evidence the workload stays, and `pggit-chaos cleanup
--dsn` removes it, and the scratch areas a killed checks run left, but nothing of a live run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos import sweep
from pggit_chaos.local.substrate import LocalSubstrate
from pggit_chaos.pggit import describe_target
from pggit_chaos.target_cleanup import LEASE_PREFIX, RUN_PREFIX, lease
from test_run import ROOT, Runner, write_experiment

pytestmark = [pytest.mark.postgres]

EXPERIMENT = ROOT / "experiments" / "08-trigger-disable.yaml"


def _user_data(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, item text)")
        conn.execute("SELECT pggit.commit_changes('main', 'user commit')")


def _state(dsn: str) -> dict[str, Any]:
    """Every pgGit row and schema; a derived table (the core's tree-hash parts) by what it
    means — the tree hash, the number of active objects and of its rows — not by row ids,
    which a fold renews."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        state: dict[str, Any] = {
            table: [
                row[0]
                for row in conn.execute(
                    sql.SQL("SELECT x::text FROM {} AS x ORDER BY 1").format(
                        sql.Identifier("pggit", table)
                    )
                )
            ]
            for table in sweep.pggit_tables(conn)
            if table not in sweep.DERIVED_TABLES
        }
        if conn.execute("SELECT to_regclass('pggit.tree_parts') IS NOT NULL").fetchone() == (
                True,):
            state["tree_parts"] = conn.execute(
                "SELECT pggit._tree_hash(), sum(active), count(*) FROM pggit.tree_parts"
            ).fetchone()
        state["schemas"] = sorted(
            r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_'")
        )
    return state


def _runs_in(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return sweep.prefixes_in(conn, RUN_PREFIX)


@pytest.fixture
def short_experiment(tmp_path: Path) -> Path:
    return write_experiment(tmp_path / "short.yaml", EXPERIMENT, **{"spec.duration": "2s"})


def test_dsn_run_leaves_nothing_in_the_target(
    tmp_path: Path, pggit_dsn: str, short_experiment: Path
) -> None:
    _user_data(pggit_dsn)
    before = _state(pggit_dsn)
    runner = Runner(tmp_path)
    done = runner.run("run", "--quiet", "--dsn", pggit_dsn, str(short_experiment))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "removed the workload from the target" in done.stdout
    journal = runner.journals()[0]
    assert journal["workload"]["ok"] > 0, "the workload did nothing: nothing to clean up"
    # The journal names the user's database, not "local" (the embedded server), never a password.
    target = f"dsn {describe_target(pggit_dsn)}"
    assert journal["substrate"] == target and "127.0.0.1:" in target
    assert journal["phases"][0]["detail"] == f"fault trigger-disable, substrate {target}"
    assert _state(pggit_dsn) == before
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        unhealthy = conn.execute(
            "SELECT component, status, details FROM pggit.health_check()"
            " WHERE status <> 'healthy'").fetchall()
    assert not unhealthy, unhealthy


def test_a_dsn_substrate_is_named_by_its_host_never_its_password() -> None:
    named = LocalSubstrate(dsn="postgresql://app:s3cret@db.example:6543/shop").name
    assert named == "dsn db.example:6543/shop" and "s3cret" not in named
    assert LocalSubstrate().name == "local"


def test_kept_evidence_is_removed_by_cleanup_and_a_live_run_is_not(
    tmp_path: Path, pggit_dsn: str, short_experiment: Path
) -> None:
    runner = Runner(tmp_path)
    done = runner.run(
        "run", "--quiet", "--keep-evidence", "--dsn", pggit_dsn, str(short_experiment)
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    kept = _runs_in(pggit_dsn)
    assert len(kept) == 1, kept
    (area,) = kept
    run_id = area[len(RUN_PREFIX) :]
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        assert sweep.footprint(conn, area).total > 0
    with lease(pggit_dsn, run_id):  # the run looks alive: cleanup leaves it alone
        alive = runner.run("cleanup", "--dsn", pggit_dsn)
        assert alive.returncode == 0, alive.stderr
        assert f"skipped {area}" in alive.stdout and _runs_in(pggit_dsn) == {area}
    gone = runner.run("cleanup", "--dsn", pggit_dsn)
    assert gone.returncode == 0, gone.stderr
    assert f"removed {area}" in gone.stdout
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        left = sweep.audit(conn, RUN_PREFIX)
        leases = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE left(application_name, %s) = %s",
            (len(LEASE_PREFIX), LEASE_PREFIX),
        ).fetchone()
    assert left.total == 0 and left.schemas == [], left.describe()
    assert leases == (0,)
