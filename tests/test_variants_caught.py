"""The checks catch bugs: every deliberately broken pgGit variant fails the named checks.

The storage variant (a pgGit index corrupted on disk, :data:`STORAGE_VARIANTS`) needs a
server of its own, stopped and started again: against the embedded core and the
upstream-shaped pgGit alike, the sound install passes the corruption checks (amcheck
installed), and after the damage exactly the amcheck index checks fail, naming the index —
every other corruption check still passes, which is why amcheck is needed at all.

For each variant in tests/pggit_variants: a fresh database with the sound core
(``pggit_dsn``), the variant applied on top, the whole suite run at profile ci through
:func:`pggit_chaos.checks.runner.run_checks` (a real pytest subprocess). The run must exit 1,
the failures must include the checks that target the variant, and every failure must carry
the run's seed (hypothesis failures also the shrunk example). The sound core passing every
check is proven in tests/test_checks_suite.py.
"""

from __future__ import annotations

import os
import re

import psycopg
import pytest

from pggit_chaos.checks.amcheck import create_amcheck
from pggit_chaos.checks.runner import run_checks
from pggit_chaos.local import EmbeddedPostgres
from pggit_chaos.pggit import install
from pggit_upstream import install_upstream
from pggit_variants import (
    STORAGE_VARIANTS,
    VARIANTS,
    apply_storage_variant,
    apply_variant,
    crash_index,
    describe,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: Variant -> checks that must fail against it (others may fail too).
EXPECTED: dict[str, set[str]] = {
    # Its commit_changes generates the ID under the branch row lock, so colliding commits need
    # two commits within one millisecond: speed, not overlap. generate_trinity_id has no lock:
    # the workers released together every round collide whatever the machine's speed.
    "trinity_collide": {
        "test_generated_trinity_ids_unique_across_workers[20]",
        "test_generated_trinity_ids_unique_across_workers[10]",
        "test_generated_trinity_ids_unique_across_workers[5]",
        "test_generated_trinity_ids_unique_in_one_statement",
        "test_trinity_ids_unique_1000_in_a_row",
    },
    "message_trimmed": {"test_commit_message_stored_exactly"},
    "hash_type_blind": {"test_schema_hash_follows_structure"},
    "tracking_off": {"test_table_definition_tracked", "test_wide_table_tracked"},
    "history_on_rollback": {
        "test_failed_transaction_leaves_no_pggit_rows",
        "test_savepoint_rollback_is_partial",
        "test_constraint_violation_rolls_back",
    },
    "version_wrong": {"test_increment_version_is_semver", "test_schema_hash_follows_structure"},
    "branch_dup": {"test_concurrent_branch_creation_yields_one_branch"},
    "rollback_burns_id": {"test_rolled_back_commit_burns_no_visible_id"},
}
#: Checks that use hypothesis: their failures must show the falsifying example.
#: How hypothesis introduces the shrunk input (the wording changed in 6.16x).
SHRUNK_HEADER = re.compile(
    r"^(Falsifying (explicit )?example|Failing (test case|explicit example))", re.MULTILINE
)

HYPOTHESIS_CHECKS = {
    "test_commit_message_stored_exactly",
    "test_schema_hash_follows_structure",
    "test_table_definition_tracked",
    "test_increment_version_is_semver",
    "test_failed_transaction_leaves_no_pggit_rows",
    "test_generated_trinity_ids_unique_in_one_statement",
}


def test_every_variant_has_expectations() -> None:
    assert set(EXPECTED) == set(VARIANTS), "a variant without expected checks (or vice versa)"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_is_caught(pggit_dsn: str, variant: str) -> None:
    apply_variant(pggit_dsn, variant)
    result = run_checks(pggit_dsn, profile="ci", include_destructive=True, quiet=True)
    failed = {f.name for f in result.failures}
    assert result.exit_code == 1, f"{variant} ({describe(variant)}) passed every check"
    assert EXPECTED[variant] <= failed, f"{variant}: missing {EXPECTED[variant] - failed}"
    for failure in result.failures:
        assert failure.seed == result.seed and failure.message, failure
        if failure.name in HYPOTHESIS_CHECKS and failure.name in EXPECTED[variant]:
            assert SHRUNK_HEADER.search(failure.example), f"{failure.name}: no shrunk example"


#: Storage variant -> checks that must fail against it: exactly these, in category corruption.
EXPECTED_STORAGE: dict[str, set[str]] = {
    "index_corruption": {
        "test_pggit_btree_indexes_pass_amcheck",
        "test_pggit_btree_parents_pass_amcheck",
    },
}


def test_every_storage_variant_has_expectations() -> None:
    assert set(EXPECTED_STORAGE) == set(STORAGE_VARIANTS)


def _user_history(dsn: str) -> None:
    """A user's tables, DDL history and enough commits to fill a leaf page with entries."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, item text NOT NULL)")
        for i in range(25):
            conn.execute(f"ALTER TABLE shop.orders ADD COLUMN c{i} int")
            conn.execute("SELECT pggit.commit_changes('main', %s)", (f"user commit {i}",))


@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded server runs as postgres: root only")
@pytest.mark.parametrize("shape", ["embedded", "upstream"])
@pytest.mark.parametrize("variant", sorted(STORAGE_VARIANTS))
def test_storage_variant_is_caught(variant: str, shape: str) -> None:
    with EmbeddedPostgres() as server:
        dsn = server.create_database("pggit")
        if shape == "embedded":
            install(dsn)
        else:
            install_upstream(dsn)
        assert create_amcheck(dsn)
        _user_history(dsn)
        sound = run_checks(dsn, categories=["corruption"], include_destructive=True, quiet=True)
        assert sound.exit_code == 0, [(f.name, f.message) for f in sound.failures]
        passed = {c.name for c in sound.checks if c.outcome == "passed"}
        assert EXPECTED_STORAGE[variant] <= passed, sound.checks

        damaged = apply_storage_variant(server, "pggit", variant)
        result = run_checks(dsn, categories=["corruption"], include_destructive=True,
                            quiet=True)
        failed = {f.name: f.message for f in result.failures}
        assert result.exit_code == 1, f"{variant} ({STORAGE_VARIANTS[variant]}) passed"
        assert set(failed) == EXPECTED_STORAGE[variant], failed
        assert result.errors == 0
        for message in failed.values():
            assert f"{damaged}: item order invariant violated" in message, message
        assert result.passed == sound.passed - len(EXPECTED_STORAGE[variant])


@pytest.mark.skipif(os.geteuid() != 0, reason="the embedded server runs as postgres: root only")
def test_index_that_crashes_amcheck_is_a_fail_naming_it() -> None:
    """48 zeroed bytes in the leaf tuples of a text-keyed pgGit index make bt_index_check crash
    the backend: the check fails naming that index (not Inconclusive), the server recovers,
    the other indexes are still checked, and the run's cleanup still works (no error)."""
    with EmbeddedPostgres() as server:
        dsn = server.create_database("pggit")
        install(dsn)
        assert create_amcheck(dsn)
        _user_history(dsn)
        crashed = crash_index(server, "pggit")
        result = run_checks(dsn, categories=["corruption"], quiet=True)
        failed = {f.name: f.message for f in result.failures}
        assert result.verdict == "Fail" and result.exit_code == 1, failed
        assert result.errors == 0, failed
        message = failed["test_pggit_btree_indexes_pass_amcheck"]
        assert f"{crashed}: the server process crashed while bt_index_check checked it" in (
            message), message
        assert {c.name for c in result.checks if c.outcome == "passed"} >= {
            "test_pggit_tables_pass_verify_heapam"}
