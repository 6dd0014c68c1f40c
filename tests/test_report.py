"""The run journal (models, status block, percentiles) and the report files written from it."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from junitparser import Error, Failure, JUnitXml, Skipped
from pydantic import ValidationError
from rich.console import Console

from pggit_chaos.engine.journal import (
    CheckFailureSummary,
    CheckResultSummary,
    ChecksSummary,
    FaultEvidenceSummary,
    FaultWindow,
    InvariantSummary,
    Journal,
    Phase,
    PhaseRecord,
    TimelineSeries,
    WorkloadSummary,
    bucket_series,
    percentiles,
)
from pggit_chaos.engine.report import (
    TIMELINE_SIZE_PX,
    build_timeline_figure,
    render_verdict_table,
    replay_command,
    write_report,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)
CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

MANIFEST = {
    "apiVersion": "chaos.pggit.io/v1alpha1",
    "kind": "PgGitChaosExperiment",
    "metadata": {"name": "primary-pod-kill", "namespace": "staging"},
    "spec": {
        "target": {"selector": {"matchLabels": {"app.kubernetes.io/name": "pggit-postgres"}}},
        "fault": {"type": "pod-kill", "podKill": {"gracePeriodSeconds": 0}},
        "duration": "10s",
        "workload": {"clients": 4, "rate": 0},
    },
}


def _phases(bounds: list[tuple[Phase, float, float]], terminal: Phase) -> list[PhaseRecord]:
    records = [
        PhaseRecord(phase=phase, started_at=T0 + timedelta(seconds=start),
                    ended_at=T0 + timedelta(seconds=end), elapsed_seconds=end - start,
                    start_offset=start, end_offset=end, detail=f"{phase.value} detail")
        for phase, start, end in bounds
    ]
    last = bounds[-1][2]
    records.append(PhaseRecord(phase=terminal, started_at=T0 + timedelta(seconds=last),
                               ended_at=T0 + timedelta(seconds=last), elapsed_seconds=0.0,
                               start_offset=last, end_offset=last))
    return records


def _series(end: float, fault: tuple[float, float], recovered: float, seed: int) -> TimelineSeries:
    """Realistic ops/s: steady ~420/s, zero while the server is down, a burst of errors."""
    rng = random.Random(seed)
    samples: list[tuple[float, str]] = []
    t = 0.0
    while t < end:
        t += rng.expovariate(420.0)
        if fault[0] <= t < recovered:
            if t < fault[0] + 0.4 and rng.random() < 0.3:
                samples.append((t, "info" if rng.random() < 0.5 else "fail"))
            elif rng.random() < 0.02:
                samples.append((t, "fail"))
            continue
        samples.append((t, "ok" if rng.random() > 0.002 else "fail"))
    return bucket_series(samples, bucket_seconds=0.5, end=end)


def make_journal(verdict: str) -> Journal:
    """A finished pod-kill journal as the engine would write it: Pass or Fail."""
    fail = verdict == "Fail"
    bounds = [
        (Phase.SteadyState, 0.0, 1.6),
        (Phase.Injecting, 1.6, 13.2),
        (Phase.Recovering, 13.2, 13.3),
        (Phase.Verifying, 13.3, 29.5),
    ]
    fault = (3.1, 13.1)
    recovered = 5.4  # pod-kill: healthy again 2.3 s after the kill, during the 10 s hold
    checks = ChecksSummary(
        passed=23 if fail else 25, failed=2 if fail else 0, skipped=1, seed=90210,
        profile="ci", hypothesis_examples=1840,
        results=[
            CheckResultSummary(name="test_commit_roundtrip", outcome="passed",
                               duration_seconds=1.2),
            CheckResultSummary(name="test_trinity_unique",
                               outcome="failed" if fail else "passed", duration_seconds=0.8),
            CheckResultSummary(name="test_destructive_vacuum", outcome="skipped",
                               message="destructive checks not requested"),
        ],
        failures=[
            CheckFailureSummary(name="test_trinity_unique", message="duplicate trinity id",
                                seed=424242, example="messages=['a', 'a']"),
            CheckFailureSummary(name="test_schema_hash_stable", message="hash changed",
                                seed=None),
        ] if fail else [],
    )
    invariants = [
        InvariantSummary(name="acknowledged-commits-present", passed=not fail,
                         message="37 acknowledged commits missing" if fail else "4210 present",
                         examples=["commit c2-0017 'wl-2-17'", "commit c0-0031 'wl-0-31'"]
                         if fail else []),
        InvariantSummary(name="trinity-ids-unique", passed=True, message="no duplicates"),
        InvariantSummary(name="event-triggers-enabled", passed=True),
    ]
    workload = WorkloadSummary.from_counts(
        invoked=11_950, ok=11_702, failed=231, indeterminate=17, lost=37 if fail else 0,
        latencies_ms=[2.0 + (i % 50) * 0.2 for i in range(1000)], elapsed_seconds=29.5,
    )
    return Journal(
        experiment="primary-pod-kill" if not fail else "pod-kill-async-commit",
        namespace="staging",
        spec=MANIFEST,
        run_id="r" + ("f" if fail else "p") * 11,
        substrate="local",
        phases=_phases(bounds, Phase.Failed if fail else Phase.Passed),
        started_at=T0,
        injected_at=T0 + timedelta(seconds=fault[0]),
        reverted_at=T0 + timedelta(seconds=fault[1]),
        recovered_at=T0 + timedelta(seconds=recovered),
        finished_at=T0 + timedelta(seconds=29.5),
        fault_intent={"type": "pod-kill", "target": "postmaster pid 4242",
                      "undo": {"kind": "restart"}},
        fault_window=FaultWindow(fault_type="pod-kill", start_offset=fault[0],
                                 end_offset=fault[1], started_at=T0 + timedelta(seconds=3.1),
                                 ended_at=T0 + timedelta(seconds=13.1),
                                 outage_end_offset=recovered),
        fault_evidence=FaultEvidenceSummary(
            bit=True,
            summary="postmaster 4242 and 6 backend(s) SIGKILLed; restarted as pid 4310 after "
                    "1.05 s down; crash recovery ran (log: redo starts at 0/1A2B3C4)",
            figures={"killed_postmaster_pid": 4242, "killed_backends": 6, "down_seconds": 1.05,
                     "postmaster_start_after": "2025-03-14 09:26:57+00"},
            read_at=T0 + timedelta(seconds=13.3)),
        workload=workload,
        recovery_seconds=recovered - fault[0],
        recovery_from="injection",
        recovery_timeout_seconds=120.0,
        recovered_offset=recovered,
        invariants=invariants,
        drift=["table public.wl_t3: recorded hash 9f2c != live 11ab"] if fail else [],
        checks=checks,
        verdict="Fail" if fail else "Pass",
        reason=("37 acknowledged commits lost (first: c2-0017); 2 checks failed"
                if fail else "every invariant and check held"),
        series=_series(29.5, fault, recovered, seed=7 if fail else 3),
    )


# -- journal -------------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", ["Pass", "Fail"])
def test_journal_json_round_trip(verdict: str) -> None:
    journal = make_journal(verdict)
    text = journal.to_json()
    loaded = Journal.from_json(text)
    assert loaded == journal
    assert loaded.to_json() == text
    data = json.loads(text)
    assert data["verdict"] == verdict
    assert data["phases"][1]["phase"] == "Injecting"
    assert data["fault_window"]["start_offset"] == pytest.approx(3.1)
    assert loaded.fault_type == "pod-kill"  # taken from the manifest


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    experiment=names.filter(bool),
    reason=names,
    lost=st.integers(0, 10**9),
    recovery=st.none() | st.floats(0, 1e6, allow_nan=False),
    seed=st.none() | st.integers(0, 2**64 - 1),
    drift=st.lists(names, max_size=4),
    intent=st.none() | st.dictionaries(names, st.integers() | names, max_size=3),
)
def test_journal_round_trip_property(experiment: str, reason: str, lost: int,
                                     recovery: float | None, seed: int | None,
                                     drift: list[str], intent: dict[str, object] | None) -> None:
    journal = Journal(experiment=experiment, reason=reason, recovery_seconds=recovery,
                      workload=WorkloadSummary(lost=lost), drift=drift, fault_intent=intent,
                      checks=ChecksSummary(seed=seed, failures=[
                          CheckFailureSummary(name=experiment, message=reason, seed=seed)]))
    journal.enter_phase(Phase.SteadyState, reason)
    loaded = Journal.from_json(journal.to_json())
    assert loaded == journal
    assert loaded.checks.failures[0].seed == seed
    assert loaded.phases[0].detail == reason


def test_journal_rejects_inconsistent_values() -> None:
    with pytest.raises(ValidationError):
        Journal(experiment="x", verdict="Maybe")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TimelineSeries(t=[0.0, 1.0], ok_per_s=[1.0], errors_per_s=[0.0, 0.0])
    with pytest.raises(ValidationError):
        WorkloadSummary(ok=-1)
    with pytest.raises(ValueError, match="terminal"):
        Journal(experiment="x").finish(Phase.Verifying)


def test_phase_lifecycle_closes_previous_records() -> None:
    journal = Journal(experiment="lifecycle", spec=MANIFEST)
    assert journal.current_phase is Phase.Pending
    with journal.phase(Phase.SteadyState, "probing") as record:
        time.sleep(0.01)
        assert record.open
    assert not record.open and record.elapsed_seconds is not None
    assert record.elapsed_seconds > 0
    journal.enter_phase(Phase.Injecting)
    journal.mark_injected({"type": "pod-kill", "target": "pid 1", "undo": {}})
    assert journal.to_status()["faultIntent"] == {"type": "pod-kill", "target": "pid 1",
                                                  "undo": {}}
    journal.mark_reverted()
    journal.enter_phase(Phase.Recovering)
    assert journal.phases[1].ended_at is not None  # Injecting closed by the next phase
    assert journal.phases[2].open
    journal.mark_recovered(0.75)
    journal.enter_phase(Phase.Verifying)
    journal.finish(Phase.Failed, "2 acknowledged\n commits lost")
    assert journal.verdict == "Fail"
    assert journal.reason == "2 acknowledged commits lost"
    assert journal.current_phase is Phase.Failed
    assert all(not r.open for r in journal.phases)
    assert [p for p, _ in journal.phase_durations()] == [
        Phase.SteadyState, Phase.Injecting, Phase.Recovering, Phase.Verifying]
    window = journal.fault_window
    assert window is not None and window.end_offset is not None
    assert window.fault_type == "pod-kill"
    assert window.start_offset <= window.end_offset
    assert journal.started_at is not None and journal.finished_at is not None
    assert journal.started_at <= journal.injected_at <= journal.reverted_at  # type: ignore[operator]
    assert journal.recovery_state == "recovered"
    # The fault intent stays in the journal, but the status clears it after revert.
    assert journal.fault_intent is not None
    assert journal.to_status()["faultIntent"] is None


def test_phase_context_closes_on_exception() -> None:
    journal = Journal(experiment="x")
    with pytest.raises(RuntimeError), journal.phase(Phase.Injecting):
        raise RuntimeError("boom")
    assert journal.phases[0].ended_at is not None
    journal.finish(Phase.Error, "injection failed", error="RuntimeError: boom")
    assert journal.verdict is None and journal.error == "RuntimeError: boom"


# -- status --------------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", ["Pass", "Fail"])
def test_to_status_shape(verdict: str) -> None:
    status = make_journal(verdict).to_status()
    assert set(status) == {
        "phase", "verdict", "startedAt", "injectedAt", "revertedAt", "recoveredAt",
        "finishedAt", "recoverySeconds", "faultIntent", "faultEvidence", "workload", "checks",
        "assertions", "conditions"}
    assert status["phase"] == ("Passed" if verdict == "Pass" else "Failed")
    assert status["verdict"] == verdict
    for key in ("startedAt", "injectedAt", "revertedAt", "recoveredAt", "finishedAt"):
        assert RFC3339_Z.match(status[key]), status[key]
    assert status["startedAt"] == "2025-03-14T09:26:53Z"
    assert status["recoverySeconds"] == pytest.approx(2.3)
    assert status["faultEvidence"]["bit"] is True
    assert "crash recovery ran" in status["faultEvidence"]["summary"]
    assert status["faultIntent"] is None  # reverted
    assert set(status["workload"]) == {"invoked", "ok", "failed", "indeterminate", "lost",
                                       "duplicated", "unexpected"}
    assert status["workload"]["lost"] == (37 if verdict == "Fail" else 0)
    assert set(status["checks"]) == {"passed", "failed", "skipped", "errors", "differs", "seed",
                                     "target", "failures"}
    if verdict == "Fail":
        assert status["checks"]["failures"] == [
            {"name": "test_trinity_unique", "message": "duplicate trinity id", "seed": 424242,
             "outcome": "failed"},
            {"name": "test_schema_hash_stable", "message": "hash changed", "seed": None,
             "outcome": "failed"}]
    json.dumps(status)  # plain data only

    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"FaultActive", "Recovered", "Completed", "Passed"}
    for condition in status["conditions"]:
        assert set(condition) == {"type", "status", "reason", "message", "lastTransitionTime"}
        assert condition["status"] in ("True", "False", "Unknown")
        assert CONDITION_REASON.match(condition["reason"]), condition["reason"]
        assert RFC3339_Z.match(condition["lastTransitionTime"])
    assert conditions["Completed"]["status"] == "True"
    assert conditions["Recovered"]["status"] == "True"
    assert conditions["FaultActive"]["status"] == "False"
    assert conditions["Passed"]["status"] == ("True" if verdict == "Pass" else "False")
    if verdict == "Fail":
        assert "37 acknowledged commits lost" in conditions["Passed"]["message"]


def test_status_while_running_and_after_timeout() -> None:
    journal = Journal(experiment="x", spec=MANIFEST, recovery_timeout_seconds=30)
    journal.enter_phase(Phase.SteadyState)
    journal.fault_intent = {"type": "pod-kill"}
    journal.enter_phase(Phase.Injecting)
    journal.mark_injected()
    status = journal.to_status()
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Injecting" and status["verdict"] is None
    assert status["faultIntent"] == {"type": "pod-kill"}
    assert conditions["FaultActive"]["status"] == "True"
    assert conditions["Completed"] == {**conditions["Completed"], "status": "False",
                                       "reason": "InProgress"}
    assert conditions["Passed"]["status"] == "Unknown"
    journal.mark_reverted()
    journal.enter_phase(Phase.Recovering)
    journal.finish(Phase.Failed, "not healthy within 30s")
    conditions = {c["type"]: c for c in journal.to_status()["conditions"]}
    assert journal.recovery_state == "timed-out"
    assert conditions["Recovered"]["status"] == "False"
    assert conditions["Recovered"]["reason"] == "RecoveryTimeout"


# -- percentiles and series ----------------------------------------------------------------


def test_percentiles_known_values() -> None:
    assert percentiles(range(1, 101)) == pytest.approx((50.5, 95.05, 99.01))
    assert percentiles([7.0]) == (7.0, 7.0, 7.0)
    assert percentiles([1.0, 2.0]) == pytest.approx((1.5, 1.95, 1.99))
    assert percentiles([10, 0, 5]) == pytest.approx((5.0, 9.5, 9.9))
    with pytest.raises(ValueError):
        percentiles([])
    with pytest.raises(ValueError):
        percentiles([1.0, math.nan])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_properties(values: list[float]) -> None:
    p50, p95, p99 = percentiles(values)
    assert min(values) <= p50 <= p95 <= p99 <= max(values)
    if len(values) >= 2:
        expected = statistics.quantiles(values, n=100, method="inclusive")
        assert p50 == pytest.approx(expected[49], rel=1e-9, abs=1e-6)
        assert p95 == pytest.approx(expected[94], rel=1e-9, abs=1e-6)
        assert p99 == pytest.approx(expected[98], rel=1e-9, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100, allow_nan=False),
                          st.sampled_from(["ok", "fail", "info"])), max_size=200),
       st.sampled_from([0.25, 0.5, 1.0, 2.0]))
def test_bucket_series_conserves_operations(samples: list[tuple[float, str]],
                                            bucket: float) -> None:
    series = bucket_series(samples, bucket_seconds=bucket)
    ok = sum(v * bucket for v in series.ok_per_s)
    errors = sum(v * bucket for v in series.errors_per_s)
    assert ok == pytest.approx(sum(1 for _, o in samples if o == "ok"))
    assert errors == pytest.approx(sum(1 for _, o in samples if o != "ok"))
    assert series.t == [i * bucket for i in range(len(series.t))]
    for offset, _ in samples:
        assert series.t and offset >= series.t[0]
        assert offset < series.t[-1] + bucket or offset == pytest.approx(series.t[-1] + bucket)


def test_workload_summary_from_counts() -> None:
    summary = WorkloadSummary.from_counts(invoked=12, ok=10, failed=1, indeterminate=1,
                                          latencies_ms=[1, 2, 3, 4], elapsed_seconds=5.0)
    assert summary.throughput_ops_s == pytest.approx(2.0)
    assert summary.latency_p50_ms == pytest.approx(2.5)
    empty = WorkloadSummary.from_counts(invoked=0, ok=0, failed=0, indeterminate=0)
    assert empty.latency_p99_ms is None and empty.throughput_ops_s == 0.0


# -- report files --------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("verdict", ["Pass", "Fail"])
def test_write_report_files(tmp_path: Path, verdict: str) -> None:
    journal = make_journal(verdict)
    history = tmp_path / "src-history.jsonl"
    history.write_text('{"op": "invoke"}\n', encoding="utf-8")
    files = write_report(journal, tmp_path / "report", history_jsonl=history)

    for path in (files.journal, files.junit, files.summary, files.timeline):
        assert path.parent == tmp_path / "report" and path.stat().st_size > 0
    assert files.history is not None and files.history.read_text() == '{"op": "invoke"}\n'
    assert Journal.from_json(files.journal.read_text()) == journal

    # The PNG: a real PNG of the promised size, with coloured content.
    assert _png_size(files.timeline) == TIMELINE_SIZE_PX
    pixels = mpimg.imread(files.timeline)
    assert pixels.shape[:2] == (TIMELINE_SIZE_PX[1], TIMELINE_SIZE_PX[0])
    assert pixels[..., :3].std() > 0.05

    summary = files.summary.read_text()
    first_line = summary.splitlines()[0]
    assert verdict.upper() in first_line and journal.experiment in first_line
    assert journal.reason in summary
    assert "![timeline](timeline.png)" in summary
    assert "| Verifying |" in summary
    assert "[history.jsonl](history.jsonl)" in summary
    if verdict == "Fail":
        assert "424242" in summary
        assert replay_command(424242) in summary
        assert replay_command(90210) in summary  # the suite's seed for a failure without one
        assert "commit c2-0017" in summary
        assert "messages=['a', 'a']" in summary
    else:
        assert "Failing checks" not in summary


def _junit_cases(path: Path) -> dict[str, object]:
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    return {case.name: case for case in suites[0]}


@pytest.mark.parametrize("verdict", ["Pass", "Fail"])
def test_junit_failures_match_journal(tmp_path: Path, verdict: str) -> None:
    journal = make_journal(verdict)
    files = write_report(journal, tmp_path)
    xml = JUnitXml.fromfile(str(files.junit))
    (suite,) = list(xml)
    assert suite.name == f"pggit-chaos.{journal.experiment}"
    cases = {case.name: case for case in suite}

    failing = {name for name, case in cases.items()
                if any(isinstance(r, Failure) for r in case.result)}
    skipped = {name for name, case in cases.items()
               if any(isinstance(r, Skipped) for r in case.result)}
    expected_failing = {inv.name for inv in journal.invariants if not inv.passed}
    expected_failing |= {f.name for f in journal.checks.failures}
    if journal.verdict == "Fail":
        expected_failing.add("verdict")
    assert failing == expected_failing
    assert skipped == {"test_destructive_vacuum"}
    assert {"recovery", "verdict", "trinity-ids-unique",
            "test_commit_roundtrip"} <= set(cases)
    assert suite.failures == len(expected_failing)
    assert suite.tests == len(cases)
    if verdict == "Fail":
        failure = next(r for r in cases["test_trinity_unique"].result if isinstance(r, Failure))
        assert failure.message == "duplicate trinity id"
        assert "424242" in (failure.text or "")
        leftover = cases["test_schema_hash_stable"].result[0]
        assert "--seed 90210" in (leftover.text or "")  # the suite's seed when none of its own
        verdict_failure = cases["verdict"].result[0]
        assert verdict_failure.message == journal.reason


def test_junit_recovery_timeout_and_abort(tmp_path: Path) -> None:
    timed_out = Journal(experiment="slow", spec=MANIFEST, recovery_timeout_seconds=5)
    for phase in (Phase.SteadyState, Phase.Injecting, Phase.Recovering):
        timed_out.enter_phase(phase)
    timed_out.finish(Phase.Failed, "not healthy within 5s")
    cases = _junit_cases(write_report(timed_out, tmp_path / "a").junit)
    recovery = cases["recovery"].result  # type: ignore[attr-defined]
    assert isinstance(recovery[0], Failure) and "within 5 s" in recovery[0].message

    aborted = Journal(experiment="no-pggit", spec=MANIFEST)
    aborted.enter_phase(Phase.SteadyState)
    aborted.finish(Phase.Aborted, "pgGit health_check() unhealthy: triggers disabled")
    files = write_report(aborted, tmp_path / "b")
    cases = _junit_cases(files.junit)
    assert isinstance(cases["recovery"].result[0], Skipped)  # type: ignore[attr-defined]
    assert isinstance(cases["verdict"].result[0], Error)  # type: ignore[attr-defined]
    assert _png_size(files.timeline) == TIMELINE_SIZE_PX
    assert "ABORTED" in files.summary.read_text().splitlines()[0]


def test_verdict_table_renders_everything() -> None:
    console = Console(width=160, record=True, color_system="truecolor")
    console.print(render_verdict_table(make_journal("Fail")))
    text = console.export_text(clear=False)
    for needle in ("Injecting", "Verifying", "11,702 ok", "37 lost", "FAIL", "2.30 s",
                   "acknowledged-commits-present", "test_trinity_unique", "--seed 424242",
                   "37 acknowledged commits lost", "recorded hash 9f2c"):
        assert needle in text, needle
    assert "timed out" not in text
    styled = console.export_text(styles=True)
    assert "\x1b[" in styled  # coloured

    console = Console(width=160, record=True)
    console.print(render_verdict_table(make_journal("Pass")))
    text = console.export_text()
    assert "PASS" in text and "FAIL" not in text


# -- what the displays say: fault evidence, recovery, outage, dry runs, long names ----------


LONG_CHECK = "test_trinity_ids_unique_under_concurrent_commits_released_by_a_barrier"


def test_verdict_table_never_cuts_a_name_at_80_columns() -> None:
    journal = make_journal("Fail")
    journal.checks.failures = [
        CheckFailureSummary(name=f"{LONG_CHECK}_{n}", message="two commits share a Trinity ID",
                            seed=424242)
        for n in range(3)
    ]
    console = Console(width=80, record=True)
    console.print(render_verdict_table(journal))
    text = console.export_text()
    lines = [line.strip() for line in text.splitlines()]
    for n in range(3):
        assert f"{LONG_CHECK}_{n}" in lines  # whole, on a line of its own
    assert "failed: two commits share a Trinity ID" in lines
    assert "acknowledged-commits-present" in text  # an invariant name: not folded at 80
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "--seed 424242" in text


def test_verdict_table_shows_the_evidence_and_what_recovery_counts_from() -> None:
    console = Console(width=140, record=True)
    console.print(render_verdict_table(make_journal("Pass")))
    text = " ".join(console.export_text().split())
    assert "fault bit │ yes" in text
    assert "crash recovery ran" in text
    assert "2.30 s from the kill to the first healthy probe" in text
    assert "pod-kill held 10.0 s, database down 2.30 s of it" in text

    journal = make_journal("Pass")
    journal.fault_evidence = FaultEvidenceSummary(
        bit=False, summary="memory-pressure did not bite: peak 31.0 MiB of a 128.0 MiB limit, "
                           "memory.failcnt 0")
    journal.recovery_from = "revert"
    journal.finish(Phase.Inconclusive, journal.fault_evidence.summary)
    console = Console(width=140, record=True)
    console.print(render_verdict_table(journal))
    text = " ".join(console.export_text().split())
    assert "fault bit │ NO" in text and "INCONCLUSIVE" in text
    assert "from the revert to the first healthy probe" in text


def test_summary_and_junit_carry_the_evidence(tmp_path: Path) -> None:
    files = write_report(make_journal("Pass"), tmp_path / "bit")
    summary = files.summary.read_text()
    assert "## Fault evidence" in summary and "✅ **The fault bit**" in summary
    assert "| killed_backends | 6 |" in summary and "| down_seconds | 1.05 |" in summary
    assert "2.30 s from the kill to the first healthy probe" in summary
    assert "The database was down 2.30 s of the 10.0 s the fault was held." in summary
    cases = _junit_cases(files.junit)
    assert "crash recovery ran" in (cases["fault-bit"].system_out or "")  # type: ignore[attr-defined]
    assert not cases["fault-bit"].result  # type: ignore[attr-defined]

    journal = make_journal("Pass")
    reason = "cpu-throttle did not bite: the server never used up a quota of 90% of one core"
    journal.fault_evidence = FaultEvidenceSummary(bit=False, summary=reason,
                                                  figures={"nr_throttled": 0})
    journal.finish(Phase.Inconclusive, reason)
    files = write_report(journal, tmp_path / "no-bite")
    summary = files.summary.read_text()
    assert summary.splitlines()[0].startswith("# ⚠️ INCONCLUSIVE")
    assert "⚠️ **The fault did not bite**" in summary
    cases = _junit_cases(files.junit)
    for name in ("fault-bit", "verdict"):  # never a green CI for a run that proved nothing
        (result,) = cases[name].result  # type: ignore[attr-defined]
        assert isinstance(result, Skipped) and "did not bite" in result.message


def _texts(figure: object) -> list[str]:
    from matplotlib.figure import Figure

    assert isinstance(figure, Figure)
    found = [t.get_text() for t in figure.texts]
    for ax in figure.axes:
        found += [t.get_text() for t in ax.texts]
    return found


def test_timeline_band_is_the_outage_and_the_hold_is_lighter() -> None:
    import matplotlib.pyplot as plt

    journal = make_journal("Pass")
    figure = build_timeline_figure(journal)
    try:
        texts = _texts(figure)
        assert "pod-kill: down 2.3 s (held 10.0 s)" in texts
        assert any(t.startswith("fault bit: postmaster 4242") for t in texts)
        ops = figure.axes[1]
        spans = [p for p in ops.patches if p.get_alpha() in (0.18, 0.05)]
        extents = sorted((round(p.get_extents().x0), round(p.get_extents().x1), p.get_alpha())
                         for p in spans)
        to_px = ops.transData.transform
        x_kill, x_up, x_revert = (round(to_px((x, 0))[0]) for x in (3.1, 5.4, 13.1))
        assert extents == [(x_kill, x_up, 0.18), (x_up, x_revert, 0.05)]
    finally:
        plt.close(figure)

    journal.fault_window = journal.fault_window.model_copy(  # type: ignore[union-attr]
        update={"outage_end_offset": None})
    figure = build_timeline_figure(journal)
    try:
        assert "pod-kill (10.0 s)" in _texts(figure)
    finally:
        plt.close(figure)


def test_dry_run_reads_as_a_plan(tmp_path: Path) -> None:
    journal = Journal(experiment="cpu-throttle", spec=MANIFEST)
    journal.enter_phase(Phase.Pending, "fault pod-kill, substrate local")
    journal.dry_run_plan = ["start an embedded PostgreSQL with settings: defaults",
                            "inject cpu-throttle: cpuPercent 10", "hold for 10s, then revert"]
    journal.finish(Phase.Aborted, "dry run: nothing injected")
    files = write_report(journal, tmp_path)
    summary = files.summary.read_text()
    assert summary.splitlines()[0] == "# ⚠️ PLANNED (DRY RUN): cpu-throttle"
    assert "2. inject cpu-throttle: cpuPercent 10" in summary
    assert "| planned (dry run) |" in summary and "| Aborted |" not in summary
    assert "{" not in summary
    (result,) = _junit_cases(files.junit)["verdict"].result  # type: ignore[attr-defined]
    assert isinstance(result, Skipped) and "dry run" in result.message


def test_report_carries_every_outcome(tmp_path: Path) -> None:
    """Invariants not checked / not evaluated, checks that errored or differ: each says so."""
    journal = make_journal("Pass")
    journal.invariants = [
        InvariantSummary(name="acknowledged-commits-present", passed=True, message="4 present"),
        InvariantSummary(name="schema-hashes", passed=True, outcome="skipped",
                         message="not checked: no recorded hash"),
        InvariantSummary(name="ddl-tracked", passed=True, outcome="error",
                         message="not checked: could not be evaluated (UndefinedColumn)"),
    ]
    journal.checks = ChecksSummary(
        passed=1, failed=0, skipped=0, errors=1, differs=1, seed=7, profile="ci",
        target="upstream pgGit 0.1.3",
        results=[
            CheckResultSummary(name="test_ok", outcome="passed"),
            CheckResultSummary(name="test_broken_shape", outcome="error"),
            CheckResultSummary(name="test_trim", outcome="differs", message="trims messages"),
        ],
        failures=[CheckFailureSummary(name="test_broken_shape", message="UndefinedColumn x",
                                      seed=7, outcome="error")],
    )
    journal.finish(Phase.Inconclusive, "1 check(s) could not run: test_broken_shape")
    write_report(journal, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "not checked" in summary and "could not evaluate" in summary
    assert "1 could not run, 1 differ" in summary and "upstream pgGit 0.1.3" in summary
    cases = _junit_cases(tmp_path / "junit.xml")
    results = {name: [type(r) for r in case.result] for name, case in cases.items()}  # type: ignore[attr-defined]
    assert results["schema-hashes"] == [Skipped] and results["ddl-tracked"] == [Error]
    assert results["test_broken_shape"] == [Error] and results["test_trim"] == [Skipped]
    assert results["test_ok"] == []
    assert journal.verdict == "Inconclusive" and journal.to_status()["phase"] == "Inconclusive"
