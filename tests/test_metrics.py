"""Prometheus metrics: the contract names, with their labels, updated from finished journals."""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pggit_chaos import metrics
from pggit_chaos.engine.journal import CheckFailureSummary, ChecksSummary, Journal, Phase

sys.path.insert(0, str(Path(__file__).parent))
from test_report import MANIFEST, make_journal

pytestmark = pytest.mark.unit
RUNS = "pggit_chaos_experiments_total"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def _exposed_names(registry: CollectorRegistry) -> set[str]:
    """Sample names as a Prometheus server would scrape them."""
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text)
            for sample in family.samples}


def test_contract_names_are_exposed_exactly(registry: CollectorRegistry) -> None:
    metrics.record_journal(make_journal("Pass"), registry)
    metrics.fault_started("pod-kill", registry)
    names = _exposed_names(registry)
    for name in ("pggit_chaos_experiments_total", "pggit_chaos_checks_total",
                 "pggit_chaos_lost_acknowledged_writes_total",
                 "pggit_chaos_workload_operations_total", "pggit_chaos_active_faults",
                 "pggit_chaos_recovery_seconds_bucket", "pggit_chaos_recovery_seconds_count",
                 "pggit_chaos_experiment_duration_seconds_sum"):
        assert name in names, name
    assert not any(name.endswith("_total_total") for name in names)
    for name in metrics.NAMES:
        assert name in names or f"{name}_bucket" in names, name


def test_record_journal_updates_every_metric(registry: CollectorRegistry) -> None:
    passed, failed = make_journal("Pass"), make_journal("Fail")
    assert metrics.record_journal(passed, registry)
    assert metrics.record_journal(failed, registry)
    value = registry.get_sample_value

    assert value(RUNS, {"fault": "pod-kill", "verdict": "Pass", "schedule": ""}) == 1
    assert value(RUNS, {"fault": "pod-kill", "verdict": "Fail", "schedule": ""}) == 1
    assert value("pggit_chaos_lost_acknowledged_writes_total", {"fault": "pod-kill"}) == 37
    assert value("pggit_chaos_workload_operations_total", {"outcome": "ok"}) == 2 * 11_702
    assert value("pggit_chaos_workload_operations_total", {"outcome": "fail"}) == 2 * 231
    assert value("pggit_chaos_workload_operations_total", {"outcome": "info"}) == 2 * 17

    assert value("pggit_chaos_recovery_seconds_count", {"fault": "pod-kill"}) == 2
    assert value("pggit_chaos_recovery_seconds_sum", {"fault": "pod-kill"}) == pytest.approx(4.6)
    # 2.3 s (the outage of the journal's pod-kill) lands in the 3 s bucket, not in the 2 s one.
    assert value("pggit_chaos_recovery_seconds_bucket", {"fault": "pod-kill", "le": "2.0"}) == 0
    assert value("pggit_chaos_recovery_seconds_bucket", {"fault": "pod-kill", "le": "3.0"}) == 2
    assert value("pggit_chaos_recovery_seconds_bucket",
                 {"fault": "pod-kill", "le": "0.1"}) == 0
    assert value("pggit_chaos_experiment_duration_seconds_count", {"fault": "pod-kill"}) == 2
    assert value("pggit_chaos_experiment_duration_seconds_sum",
                 {"fault": "pod-kill"}) == pytest.approx(59.0)

    checks = "pggit_chaos_checks_total"
    assert value(checks, {"check": "test_commit_roundtrip", "outcome": "passed"}) == 2
    assert value(checks, {"check": "test_trinity_unique", "outcome": "passed"}) == 1
    assert value(checks, {"check": "test_trinity_unique", "outcome": "failed"}) == 1
    assert value(checks, {"check": "test_destructive_vacuum", "outcome": "skipped"}) == 2
    # A failure the per-check results did not list still counts.
    assert value(checks, {"check": "test_schema_hash_stable", "outcome": "failed"}) == 1


def test_record_journal_counts_a_run_once(registry: CollectorRegistry) -> None:
    journal = make_journal("Fail")
    assert metrics.record_journal(journal, registry)
    assert not metrics.record_journal(Journal.from_json(journal.to_json()), registry)
    assert registry.get_sample_value("pggit_chaos_lost_acknowledged_writes_total",
                                     {"fault": "pod-kill"}) == 37


def test_aborted_run_and_counts_only_checks(registry: CollectorRegistry) -> None:
    aborted = Journal(experiment="no-pggit", spec=MANIFEST)
    aborted.enter_phase(Phase.SteadyState)
    aborted.finish(Phase.Aborted, "pgGit missing")
    metrics.record_journal(aborted, registry)
    value = registry.get_sample_value
    assert value("pggit_chaos_experiments_total",
                 {"fault": "pod-kill", "verdict": "Aborted", "schedule": ""}) == 1
    assert value("pggit_chaos_recovery_seconds_count", {"fault": "pod-kill"}) is None
    assert value("pggit_chaos_lost_acknowledged_writes_total", {"fault": "pod-kill"}) == 0

    counted = Journal(experiment="counts", spec={"spec": {"fault": {"type": "trigger-disable"}}},
                      checks=ChecksSummary(passed=5, failed=3, skipped=2, failures=[
                          CheckFailureSummary(name="test_a", seed=1)]))
    counted.finish(Phase.Failed, "3 checks failed")
    metrics.record_journal(counted, registry)
    checks = "pggit_chaos_checks_total"
    assert value(checks, {"check": "test_a", "outcome": "failed"}) == 1
    assert value(checks, {"check": "suite", "outcome": "failed"}) == 2
    assert value(checks, {"check": "suite", "outcome": "passed"}) == 5
    assert value(checks, {"check": "suite", "outcome": "skipped"}) == 2
    assert value("pggit_chaos_experiments_total",
                 {"fault": "trigger-disable", "verdict": "Fail", "schedule": ""}) == 1


def test_active_faults_gauge(registry: CollectorRegistry) -> None:
    value = registry.get_sample_value
    metrics.fault_started("cpu-throttle", registry)
    metrics.fault_started("cpu-throttle", registry)
    assert value("pggit_chaos_active_faults", {"fault": "cpu-throttle"}) == 2
    metrics.fault_ended("cpu-throttle", registry)
    assert value("pggit_chaos_active_faults", {"fault": "cpu-throttle"}) == 1
    with pytest.raises(RuntimeError), metrics.active_fault("network-partition", registry):
        assert value("pggit_chaos_active_faults", {"fault": "network-partition"}) == 1
        raise RuntimeError("revert still lowers the gauge")
    assert value("pggit_chaos_active_faults", {"fault": "network-partition"}) == 0
    metrics.fault_ended("cpu-throttle", registry)
    metrics.fault_ended("cpu-throttle", registry)  # unmatched: stays at zero
    assert value("pggit_chaos_active_faults", {"fault": "cpu-throttle"}) == 0


def test_registries_are_independent(registry: CollectorRegistry) -> None:
    other = CollectorRegistry()
    metrics.record_journal(make_journal("Fail"), registry)
    assert other.get_sample_value("pggit_chaos_lost_acknowledged_writes_total",
                                  {"fault": "pod-kill"}) is None
    assert metrics.metrics_for(registry) is metrics.metrics_for(registry)


def test_metrics_server_serves_the_contract(registry: CollectorRegistry) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.record_journal(make_journal("Pass"), registry)
    server, thread = metrics.start_metrics_server(port, addr="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            body = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert 'pggit_chaos_experiments_total{fault="pod-kill",schedule="",verdict="Pass"} 1.0' in body
    assert "pggit_chaos_active_faults" in body


# -- the operator's view: metrics from an experiment's status -------------------------------

#: A finished run's status as the runner Job writes it (camelCase, RFC 3339 times).
FAILED_STATUS = {
    "phase": "Failed", "verdict": "Fail", "runId": "0123456789ab",
    "startedAt": "2026-01-01T10:00:00Z", "finishedAt": "2026-01-01T10:01:30Z",
    "recoverySeconds": 2.3,
    "workload": {"invoked": 120, "ok": 100, "failed": 12, "indeterminate": 3, "lost": 2},
    "checks": {"passed": 7, "failed": 3, "skipped": 1, "errors": 1, "failures": [
        {"name": "test_trinity_unique", "message": "duplicate", "seed": 4, "outcome": "failed"},
        {"name": "test_broken", "message": "UndefinedColumn", "outcome": "error"}]},
}


def test_record_status_counts_every_metric_once(registry: CollectorRegistry) -> None:
    assert metrics.metrics_for(registry).record_status("0123456789ab", "network-partition",
                                                       FAILED_STATUS)
    # Seen again (the operator restarted, the same run): nothing counted twice.
    assert not metrics.metrics_for(registry).record_status("0123456789ab", "network-partition",
                                                           FAILED_STATUS)
    value = registry.get_sample_value
    fault = {"fault": "network-partition"}
    assert value("pggit_chaos_experiments_total", {**fault, "verdict": "Fail", "schedule": ""}) == 1
    assert value("pggit_chaos_experiment_duration_seconds_sum", fault) == pytest.approx(90.0)
    assert value("pggit_chaos_recovery_seconds_bucket", {**fault, "le": "3.0"}) == 1
    assert value("pggit_chaos_recovery_seconds_bucket", {**fault, "le": "2.0"}) == 0
    assert value("pggit_chaos_lost_acknowledged_writes_total", fault) == 2
    assert value("pggit_chaos_workload_operations_total", {"outcome": "ok"}) == 100
    assert value("pggit_chaos_workload_operations_total", {"outcome": "fail"}) == 12
    assert value("pggit_chaos_workload_operations_total", {"outcome": "info"}) == 3
    checks = "pggit_chaos_checks_total"
    assert value(checks, {"check": "test_trinity_unique", "outcome": "failed"}) == 1
    assert value(checks, {"check": "test_broken", "outcome": "error"}) == 1
    assert value(checks, {"check": "suite", "outcome": "failed"}) == 2
    assert value(checks, {"check": "suite", "outcome": "passed"}) == 7
    assert value(checks, {"check": "suite", "outcome": "skipped"}) == 1
    assert value(checks, {"check": "suite", "outcome": "error"}) is None


def test_record_status_of_a_refused_experiment(registry: CollectorRegistry) -> None:
    """No verdict, no times, no workload: the terminal phase is the verdict label."""
    refused = {"phase": "Aborted", "message": "refused by the namespace opt-in gate"}
    assert metrics.metrics_for(registry).record_status("uid-1", "pod-kill", refused)
    assert metrics.metrics_for(registry).record_status("uid-2", "", {"phase": "Running?"})
    value = registry.get_sample_value
    assert value(RUNS, {"fault": "pod-kill", "verdict": "Aborted", "schedule": ""}) == 1
    assert value(RUNS, {"fault": "unknown", "verdict": "Error", "schedule": ""}) == 1
    assert value("pggit_chaos_experiment_duration_seconds_count", {"fault": "pod-kill"}) is None
    assert metrics.status_verdict_label({"phase": "Passed", "verdict": "Pass"}) == "Pass"


def test_set_active_faults_is_a_level(registry: CollectorRegistry) -> None:
    chaos = metrics.metrics_for(registry)
    value = registry.get_sample_value
    chaos.set_active_faults({"network-partition": 2, "cpu-throttle": 1})
    assert value("pggit_chaos_active_faults", {"fault": "network-partition"}) == 2
    chaos.set_active_faults({"cpu-throttle": 1})
    assert value("pggit_chaos_active_faults", {"fault": "network-partition"}) == 0
    assert value("pggit_chaos_active_faults", {"fault": "cpu-throttle"}) == 1
    chaos.set_active_faults({})
    assert value("pggit_chaos_active_faults", {"fault": "cpu-throttle"}) == 0
