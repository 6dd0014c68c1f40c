"""``primary-failover`` on the embedded target: a primary and a streaming standby, end to end.

Each run is the real CLI on its own primary + standby pair (as in ``test_run.py``): the
standby is promoted for real (its timeline goes up), the clients follow it through the
multi-host DSN, and the proof that the verdict means something is the pair of outcomes under
the same lag: asynchronous replication loses acknowledged commits (Fail, the commits named),
synchronous replication loses none (Pass), each run twice. The old primary is rewound into a
standby or left down, as the spec says, and nothing is left on the machine afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import leftovers
from pggit_chaos.local.state import RESOURCE_TYPES, StateFile
from pggit_chaos.spec import Experiment
from test_run import Runner, write_experiment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "experiments" / "12-primary-failover.yaml"
IS_ROOT = os.geteuid() == 0


def spec_with(section: dict[str, Any]) -> Experiment:
    return Experiment.new("failover", {
        "target": {"selector": {"matchLabels": {"app": "pg"}}},
        "fault": {"type": "primary-failover", "primaryFailover": section},
    })


@pytest.mark.unit
def test_the_section_defaults_to_sync_rewind_and_cloudnative_pg() -> None:
    section = spec_with({}).spec.fault.settings
    assert section.model_dump(by_alias=True, mode="json") == {
        "replication": "sync", "standbyLag": "0s", "oldPrimary": "rewind",
        "primaryLabel": "cnpg.io/instanceRole=primary"}
    patroni = spec_with({"primaryLabel": "spilo-role=master", "standbyLag": "2s"})
    assert patroni.spec.fault.settings.primary_label == "spilo-role=master"  # type: ignore[attr-defined]


@pytest.mark.unit
@pytest.mark.parametrize("section", [
    {"primaryLabel": "spilo-role"},  # no value separator
    {"primaryLabel": "=primary"},  # no key
    {"replication": "semi"},
    {"oldPrimary": "keep"},
    {"standbyLag": "2m"},
])
def test_bad_sections_are_refused(section: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec_with(section)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    runner = Runner(tmp_path)
    yield runner
    runner.close()


def failover_run(runner: Runner, replication: str, old_primary: str) -> dict[str, Any]:
    experiment = write_experiment(
        runner.tmp / "failover.yaml", EXAMPLE, **{
            "metadata.name": f"failover-{replication}-{old_primary}",
            "spec.duration": "2s",
            "spec.fault.primaryFailover": {"replication": replication, "standbyLag": "2s",
                                           "oldPrimary": old_primary},
            "spec.workload.rate": 100,
            "spec.workload.mix": {"commit": 1, "ddl": 0},
            "spec.verification.checks": [],  # the invariant checker is the point here
        })
    result = runner.run("run", str(experiment))
    (journal,) = runner.journals()
    journal["returncode"] = result.returncode
    journal["output"] = result.stdout[-3000:] + result.stderr[-3000:]
    return journal


def assert_failed_over(journal: dict[str, Any], old_primary: str) -> dict[str, Any]:
    evidence = journal["fault_evidence"]
    assert evidence is not None and evidence["bit"], journal["output"]
    figures = evidence["figures"]
    # The standby really became a primary: it writes on a new timeline.
    assert figures["timeline_after"] > figures["timeline_before"] >= 1, figures
    assert 0 < figures["kill_to_write_seconds"] < 60
    # The lag was real: WAL the primary wrote never reached the standby (async), or commits
    # were held waiting for the standby's confirmation (sync).
    assert figures["sender_frozen_seconds"] >= 1.9
    if figures["replication"] == "async":
        assert figures["unreplicated_wal_bytes_at_kill"] > 0, figures
        assert figures["commits_waiting_for_standby_at_kill"] == 0, figures
    else:
        assert figures["commits_waiting_for_standby_at_kill"] > 0, figures
    if old_primary == "rewind":
        assert str(figures["old_primary"]).startswith("rewound (pg_rewind), streaming"), figures
    else:
        assert figures["old_primary"] == "left down", figures
    assert journal["recovery_seconds"] is not None
    # The workload carried on against the new primary after the kill.
    after = [p for p in journal["workload"]["phases"] if p["phase"] in ("Recovering", "Verifying")]
    assert sum(p["ok"] for p in after) > 0, journal["workload"]["phases"]
    return dict(figures)


@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.skipif(not IS_ROOT, reason="the standby lag uses the cgroup freezer: needs root")
@pytest.mark.parametrize("old_primary", ["rewind", "down"])
def test_async_replication_under_lag_loses_acknowledged_commits(
    runner: Runner, old_primary: str
) -> None:
    journal = failover_run(runner, "async", old_primary)
    assert journal["returncode"] == 1, journal["output"]
    assert journal["verdict"] == "Fail"
    assert journal["workload"]["lost"] > 0
    durable = {i["name"]: i for i in journal["invariants"]}["commits-durable"]
    assert not durable["passed"] and "acknowledged commit(s) lost" in durable["message"]
    assert durable["examples"] and all("missing from pggit.commits" in example
                                       for example in durable["examples"])
    assert_failed_over(journal, old_primary)
    runner.assert_nothing_left()


@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.skipif(not IS_ROOT, reason="the standby lag uses the cgroup freezer: needs root")
@pytest.mark.parametrize("old_primary", ["rewind", "down"])
def test_sync_replication_under_the_same_lag_loses_nothing(
    runner: Runner, old_primary: str
) -> None:
    journal = failover_run(runner, "sync", old_primary)
    assert journal["returncode"] == 0, journal["output"]
    assert journal["verdict"] == "Pass", journal["reason"]
    assert journal["workload"]["lost"] == 0
    assert all(inv["passed"] for inv in journal["invariants"])
    assert journal["workload"]["ok"] > 0
    assert_failed_over(journal, old_primary)
    runner.assert_nothing_left()


@pytest.mark.postgres
def test_dry_run_plans_a_standby_and_injects_nothing(runner: Runner) -> None:
    result = runner.run("run", "--dry-run", str(EXAMPLE))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "a streaming standby (pg_basebackup, replication slot)" in result.stdout
    assert "inject primary-failover: replication sync, standbyLag 2s" in result.stdout
    runner.assert_nothing_left()


@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.skipif(not IS_ROOT, reason="the standby lag uses the cgroup freezer: needs root")
def test_cleanup_after_the_runner_is_killed_while_the_sender_is_frozen(runner: Runner) -> None:
    """SIGKILL mid-lag leaves the WAL sender frozen and both servers running; `cleanup` thaws
    and removes the freezer cgroup and removes primary and standby."""
    experiment = write_experiment(
        runner.tmp / "failover.yaml", EXAMPLE, **{
            "spec.fault.primaryFailover.standbyLag": "60s", "spec.verification.checks": []})
    proc = runner.popen("run", str(experiment))
    deadline = time.monotonic() + 120
    frozen: Path | None = None
    while time.monotonic() < deadline and frozen is None:
        assert proc.poll() is None, proc.communicate()
        for intent in StateFile.in_dir(runner.state).pending():
            path = Path(str(intent.undo.get("path", "")))
            if intent.type == "primary-failover" and (path / "cgroup.procs").exists() \
                    and leftovers.cgroups() and (path / "cgroup.procs").read_text().strip():
                frozen = path
        time.sleep(0.1)
    assert frozen is not None, "the WAL sender was never frozen"
    proc.kill()
    proc.wait(30)
    assert frozen.exists(), "the freezer cgroup stays after SIGKILL"
    servers = leftovers.postgres_processes(str(runner.tmpdir))
    assert servers, "the orphaned primary and standby still run"
    pending = StateFile.in_dir(runner.state).pending()
    assert sorted(i.type for i in pending if i.type in RESOURCE_TYPES) == [
        "embedded-postgres", "embedded-postgres"]  # the primary and the standby
    result = runner.run("cleanup", "--state-dir", str(runner.state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout
    assert not frozen.exists()
    runner.assert_nothing_left()
