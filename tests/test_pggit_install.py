"""Installing the embedded pgGit core and the pggit.py client, against a real PostgreSQL.

Idempotent and concurrent installs, upgrade of an older install, the non-superuser error, and
the client functions (capabilities, health, connect_check, DSN masking).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos import pggit
from pggit_chaos.errors import ChaosError, TargetUnavailable
from pggit_chaos.local import EmbeddedPostgres
from pggit_chaos.local.server import free_port

pytestmark = pytest.mark.postgres


def one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def snapshot(dsn: str) -> dict[str, Any]:
    """What an install owns, to compare before/after a re-install."""
    with psycopg.connect(dsn) as conn:
        return {
            "triggers": conn.execute(
                "SELECT evtname, evtevent, evtenabled, evtfoid::regproc::text FROM pg_event_trigger"
                " ORDER BY 1"
            ).fetchall(),
            "branches": conn.execute(
                "SELECT id, name, head_commit_hash FROM pggit.branches ORDER BY 1"
            ).fetchall(),
            "commits": one(conn, "SELECT count(*) FROM pggit.commits"),
            "objects": conn.execute(
                "SELECT id, version, schema_hash FROM pggit.objects ORDER BY 1"
            ).fetchall(),
            "history": one(conn, "SELECT count(*) FROM pggit.history"),
            "columns": conn.execute(
                "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
                " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " WHERE c.relnamespace = 'pggit'::regnamespace"
                " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'pggit' ORDER BY 1"
            ).fetchall(),
            "constraints": conn.execute(
                "SELECT conname FROM pg_constraint"
                " WHERE connamespace = 'pggit'::regnamespace ORDER BY 1"
            ).fetchall(),
            "info": conn.execute("SELECT component, version FROM pggit.install_info").fetchall(),
        }


def test_core_version_matches_script() -> None:
    text = pggit.sql_path().read_text()
    assert pggit.sql_path().name == "pggit.sql"
    assert re.search(r"pggit-core-version: (\S+)", text).group(1) == pggit.CORE_VERSION  # type: ignore[union-attr]
    assert f"VALUES ('core', '{pggit.CORE_VERSION}', now())" in text


def test_install_into_empty_database(empty_dsn: str) -> None:
    assert pggit.install(empty_dsn) == pggit.CORE_VERSION
    with psycopg.connect(empty_dsn) as conn:
        caps = pggit.capabilities(conn)
    assert caps.installed and caps.embedded and caps.core_version == pggit.CORE_VERSION
    for name in (*pggit.TABLES, *pggit.FUNCTIONS, *pggit.EVENT_TRIGGERS, *pggit.SEQUENCES):
        assert caps.missing(name) is None, name
    assert [row.status for row in pggit.health(empty_dsn)] == ["healthy"] * 5
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT name, head_commit_hash FROM pggit.branches").fetchall() == [
            ("main", None)
        ]


def test_install_is_idempotent(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE user_t (id serial PRIMARY KEY)")
        conn.execute("SELECT pggit.commit_changes('main', 'before reinstall')")
    before = snapshot(pggit_dsn)
    assert pggit.install(pggit_dsn) == pggit.CORE_VERSION
    assert pggit.install(pggit_dsn) == pggit.CORE_VERSION
    assert snapshot(pggit_dsn) == before


def test_reinstall_repairs_disabled_triggers_and_replaced_functions(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
        conn.execute("DROP EVENT TRIGGER pggit_drop_trigger")
        conn.execute(
            "CREATE OR REPLACE FUNCTION pggit.increment_version("
            "major int, minor int, patch int, kind text)"
            " RETURNS text LANGUAGE sql AS $$ SELECT 'broken' $$"
        )
    pggit.install(pggit_dsn)
    assert {r.component: r.status for r in pggit.health(pggit_dsn)}["event_triggers"] == "healthy"
    with psycopg.connect(pggit_dsn) as conn:
        assert one(conn, "SELECT pggit.increment_version(1, 2, 3, 'minor')") == "1.3.0"


def test_upgrade_from_an_older_install(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE up_t (a int)")
        # what an older core looked like: no version_after / object_oid / column_types,
        # no history index, an older version in install_info
        conn.execute("ALTER TABLE pggit.history DROP COLUMN version_after")
        conn.execute("ALTER TABLE pggit.objects DROP COLUMN object_oid")
        conn.execute("ALTER TABLE pggit.objects DROP COLUMN column_types")
        conn.execute("DROP INDEX pggit.history_transaction_id_idx")
        conn.execute("ALTER TABLE pggit.install_info DROP COLUMN previous_version")
        conn.execute("UPDATE pggit.install_info SET version = '0.9.0' WHERE component = 'core'")
    assert pggit.install(pggit_dsn) == pggit.CORE_VERSION
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        caps = pggit.capabilities(conn)
        for column in (
            "history.version_after",
            "objects.object_oid",
            "objects.column_types",
            "install_info.previous_version",
        ):
            assert caps.missing(column) is None, column
        assert (
            one(conn, "SELECT to_regclass('pggit.history_transaction_id_idx') IS NOT NULL") is True
        )
        assert conn.execute(
            "SELECT version, previous_version FROM pggit.install_info"
        ).fetchall() == [(pggit.CORE_VERSION, "0.9.0")]
        # the existing row got its OID back-filled: tracking and drift detection still work
        assert one(
            conn,
            "SELECT object_oid = 'up_t'::regclass FROM pggit.objects WHERE object_name = 'up_t'",
        )
        conn.execute("ALTER TABLE up_t ADD COLUMN b int")
        assert one(conn, "SELECT pggit.get_version('up_t')") == "1.0.1"
        assert conn.execute("SELECT * FROM pggit.detect_drift()").fetchall() == []
        conn.execute("ALTER TABLE up_t ADD COLUMN c int")
        assert one(conn, "SELECT pggit.get_version('up_t')") == "1.1.0"


def test_concurrent_installs(empty_dsn: str) -> None:
    barrier = threading.Barrier(2)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(30)
            results.append(pggit.install(empty_dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert results == [pggit.CORE_VERSION] * 2
    with psycopg.connect(empty_dsn) as conn:
        assert one(conn, "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pggit%%'") == 2
        assert one(conn, "SELECT count(*) FROM pggit.branches") == 1
        assert one(conn, "SELECT count(*) FROM pggit.install_info") == 1


@pytest.fixture
def plain_role(pg_server: EmbeddedPostgres, empty_dsn: str) -> Iterator[str]:
    """DSN of ``empty_dsn``'s database for a fresh login role that is not a superuser."""
    role = f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.socket_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
    try:
        yield psycopg.conninfo.make_conninfo(empty_dsn, user=role)
    finally:
        with psycopg.connect(pg_server.socket_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_install_needs_a_superuser(plain_role: str) -> None:
    with pytest.raises(pggit.NotSuperuser) as info:
        pggit.install(plain_role)
    message = str(info.value)
    assert isinstance(info.value, ChaosError)
    assert "\n" not in message and "superuser" in message and "plain_" in message
    # the script's own guard says the same when run directly (e.g. with psql -f)
    with psycopg.connect(plain_role, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as raw:
            conn.execute(pggit.install_sql().encode())
        assert "needs a superuser" in str(raw.value)
    with psycopg.connect(plain_role) as conn:
        assert one(conn, "SELECT to_regnamespace('pggit') IS NULL") is True


# -- client functions ----------------------------------------------------------------------
def test_capabilities_of_an_empty_database(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn) as conn:
        caps = pggit.capabilities(conn)
    assert not caps.installed and not caps.schema and caps.core_version is None
    reason = caps.missing("commit_changes")
    assert reason is not None and "schema pggit missing" in reason


def test_capabilities_report_what_is_missing(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("DROP FUNCTION pggit.detect_drift() CASCADE")
        conn.execute("ALTER EVENT TRIGGER pggit_drop_trigger DISABLE")
        conn.execute("ALTER TABLE pggit.objects DROP COLUMN version_patch")
        conn.execute("DELETE FROM pggit.install_info")
        caps = pggit.capabilities(conn)
    assert caps.installed and not caps.embedded
    assert caps.missing("pggit.commit_changes") is None
    assert (
        caps.missing("detect_drift")
        == f"database {caps.database} has no function pggit.detect_drift"
    )
    assert caps.missing("pggit_drop_trigger") == (
        f"event trigger pggit_drop_trigger is disabled in database {caps.database}"
    )
    assert caps.missing("pggit_ddl_trigger") is None
    assert caps.missing("objects.version_patch") == (
        f"pggit.objects in database {caps.database} has no column version_patch"
    )
    assert caps.missing("objects.version_major") is None
    assert caps.has("branches") and not caps.has("nonexistent_table.x")


def test_capabilities_without_history_is_not_installed(pggit_dsn: str) -> None:
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE pggit.history")
        caps = pggit.capabilities(conn)
    assert caps.schema and not caps.installed
    with pytest.raises(TargetUnavailable, match="has no pgGit"):
        pggit.connect_check(pggit_dsn)


def test_health_rows(pggit_dsn: str) -> None:
    rows = pggit.health(pggit_dsn)
    assert [r.component for r in rows] == [
        "schema",
        "event_triggers",
        "trinity_sequence",
        "branches",
        "tracking",
    ]
    assert all(r.healthy for r in rows)
    with psycopg.connect(pggit_dsn, autocommit=True) as conn:
        conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
        statuses = {r.component: r.status for r in pggit.health(conn)}
    assert statuses["event_triggers"] == "critical"


def test_health_without_pggit(empty_dsn: str) -> None:
    with pytest.raises(TargetUnavailable, match=r"has no pggit\.health_check"):
        pggit.health(empty_dsn)


def test_connect_check_closed_port() -> None:
    port = free_port()
    dsn = f"host=127.0.0.1 port={port} dbname=somedb user=someone password=s3cr3t-value"
    with pytest.raises(TargetUnavailable) as info:
        pggit.connect_check(dsn, timeout=2)
    message = str(info.value)
    assert message.startswith(f"cannot connect to 127.0.0.1:{port}/somedb: ")
    assert "\n" not in message and "s3cr3t-value" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_connect_check_url_dsn_masks_password() -> None:
    port = free_port()
    with pytest.raises(TargetUnavailable) as info:
        pggit.connect_check(f"postgresql://u:topsecret@127.0.0.1:{port}/db1", timeout=2)
    assert "topsecret" not in str(info.value) and f"127.0.0.1:{port}/db1" in str(info.value)


def test_connect_check_without_pggit(empty_dsn: str) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(empty_dsn)["dbname"]
    with pytest.raises(TargetUnavailable) as info:
        pggit.connect_check(empty_dsn + " password=hunter22")
    message = str(info.value)
    assert message.startswith(f"database {dbname} has no pgGit (schema pggit missing): ")
    assert "pggit-chaos install-pggit --dsn" in message
    assert "hunter22" not in message and "\n" not in message


def test_connect_check_sound(pggit_dsn: str) -> None:
    pggit.connect_check(pggit_dsn)


def test_install_unreachable() -> None:
    with pytest.raises(TargetUnavailable, match="cannot connect to"):
        pggit.install(f"host=127.0.0.1 port={free_port()} dbname=x user=y connect_timeout=2")


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("host=h port=1 dbname=d user=u password=pw", "password=***"),
        ("postgresql://u:pw@h:1/d", "password=***"),
        ("host=h dbname=d", "dbname=d"),
    ],
)
def test_mask_dsn(dsn: str, expected: str) -> None:
    masked = pggit.mask_dsn(dsn)
    assert expected in masked and "pw" not in masked.replace("password", "")


def resolver_busy_twice(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """psycopg.connect fails with libpq's own EAI_AGAIN error twice, then connects for real;
    the list returned grows by one per try."""
    real_connect = psycopg.connect
    tries: list[str] = []

    def connect(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        tries.append("try")
        if len(tries) <= 2:
            raise psycopg.OperationalError(
                "failed to resolve host 'pggit-postgres.default.svc': [Errno -3] Temporary "
                "failure in name resolution")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", connect)
    return tries


def test_a_dns_server_that_does_not_answer_yet_is_waited_for(
        pggit_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """EAI_AGAIN ("Temporary failure in name resolution") is no answer about the name: the
    connection is tried again. On a real node a runner's first connection failed that way
    once and its experiment ended Error; the next one resolved the name at once. Here the
    resolver's silence is libpq's own error for the first two tries, then the real server."""
    tries = resolver_busy_twice(monkeypatch)
    pggit.connect_check(pggit_dsn)
    assert len(tries) == 3


def test_the_runners_lease_waits_for_a_resolver_that_does_not_answer_yet(
        pggit_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's first connection is its lease (target_cleanup): on the real node it failed
    after 20 s of DNS silence and ended 12-primary-failover Error, since only pggit's own
    connections waited for the resolver."""
    from pggit_chaos.target_cleanup import lease

    tries = resolver_busy_twice(monkeypatch)
    with lease(pggit_dsn, "0123456789abcdef"):
        assert len(tries) == 3


def test_a_name_the_resolver_does_not_know_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real_connect = psycopg.connect
    tries: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        tries.append("try")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", counted)
    with pytest.raises(TargetUnavailable, match=r"cannot connect to no-such-host\.invalid"):
        pggit.connect_check("host=no-such-host.invalid port=5432 dbname=db user=u", timeout=2)
    assert len(tries) == 1
