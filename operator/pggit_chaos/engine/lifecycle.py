"""The experiment lifecycle: steady state, workload, inject, hold, revert, recover, verify, verdict.

Called by the CLI's runner (local substrate) and, later, by the kopf operator (kubernetes
substrate). It knows nothing of either: a :class:`~pggit_chaos.engine.substrate.Substrate`
resolves targets, builds the fault and probes health; a :data:`ChecksRunner` runs the checks
suite (in-process subprocess locally, a verification Job in a cluster). The fault is reverted on
every path out of the hold — success, exception, Ctrl-C, SIGTERM (task cancellation).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from pggit_chaos.engine.history import History, percentile
from pggit_chaos.engine.journal import (
    AFTER_RECOVERY,
    STEADY_STATE,
    AssertionSummary,
    FaultEvidenceSummary,
    FaultStep,
    InvariantSummary,
    Journal,
    Phase,
    WorkloadSummary,
    bucket_series,
    phase_latencies,
)
from pggit_chaos.engine.workload import Workload, new_run_id
from pggit_chaos.errors import ChaosError, FaultError, NoTargets, PgGitDefect
from pggit_chaos.faults.base import DrivesWorkload, FaultEvidence, WorkloadWindow

if TYPE_CHECKING:
    from pggit_chaos.engine.guards import Trip
    from pggit_chaos.engine.invariants import InvariantReport
    from pggit_chaos.engine.journal import ChecksSummary
    from pggit_chaos.engine.substrate import Substrate
    from pggit_chaos.faults.base import Fault, FaultIntent
    from pggit_chaos.spec import Experiment

#: Seconds of workload before the fault is injected, so the timeline shows a baseline.
BASELINE_SECONDS = 1.0
#: Seconds of workload after recovery, so the timeline shows the workload resumed.
SETTLE_SECONDS = 1.0
#: Width of the timeline's buckets.
BUCKET_SECONDS = 0.5
#: The reason a dry run ends with (its phase is Aborted: nothing was injected).
DRY_RUN_REASON = "dry run: nothing injected"


def _in_thread(call: Callable[[], None]) -> concurrent.futures.Future[None]:
    """Start ``call`` in a thread of its own; its future says when it has returned (an
    asyncio task wrapping it can be cancelled, the thread cannot)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="pggit-chaos-inject")
    try:
        return pool.submit(call)
    finally:
        pool.shutdown(wait=False)


@dataclass
class Progress:
    """What the live progress line shows."""

    phase: Phase
    elapsed: float
    ops_per_s: float
    ok: int
    errors: int


class Observer(Protocol):
    """Told about phase changes and progress (CLI progress line, CR status patches)."""

    def on_phase(self, journal: Journal) -> None: ...

    def on_progress(self, progress: Progress) -> None: ...


class ChecksRunner(Protocol):
    """Runs the checks suite at the experiment's categories and profile against ``dsn``."""

    def __call__(self, dsn: str, experiment: Experiment) -> ChecksSummary: ...


class _Silent:
    def on_phase(self, journal: Journal) -> None:
        pass

    def on_progress(self, progress: Progress) -> None:
        pass


class Run:
    """One experiment run; :meth:`execute` drives it and always returns the journal."""

    def __init__(
        self,
        experiment: Experiment,
        substrate: Substrate,
        checks_runner: ChecksRunner | None,
        observer: Observer | None = None,
        *,
        run_id: str | None = None,
        baseline: float = BASELINE_SECONDS,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.experiment = experiment
        self.substrate = substrate
        self.checks_runner = checks_runner
        self.observer: Observer = observer or _Silent()
        self.run_id = run_id or new_run_id()
        self.baseline = baseline
        self.settle = settle
        self.journal = Journal(
            experiment=experiment.name,
            namespace=experiment.namespace,
            spec=experiment.to_manifest(),
            run_id=self.run_id,
            substrate=substrate.name,
        )
        self.history = History(start=self.journal.origin)
        self.workload: Workload | None = None
        self.invariant_report: InvariantReport | None = None
        #: (start, end) of the fault on the history's clock, for the invariant checker.
        self.fault_window: tuple[float, float] | None = None
        #: (step, seconds) of the Verifying phase: settle, invariant checker, checks suite.
        self._verify_steps: list[tuple[str, float]] = []
        #: A defect of the installed pgGit the steady-state probe found (a failing
        #: health_check()): the run goes on with the fallback steady state, and fails on it.
        self.health_finding = ""
        #: The guard that stopped the hold early (the run then ends Aborted), if any.
        self.tripped: Trip | None = None

    # -- phases ---------------------------------------------------------------------------------
    def _enter(self, phase: Phase, detail: str = "") -> None:
        self.journal.enter_phase(phase, detail)
        self.observer.on_phase(self.journal)

    def _finish(self, phase: Phase, reason: str = "", error: str | None = None) -> Journal:
        self.journal.finish(phase, reason, error)
        self.observer.on_phase(self.journal)
        return self.journal

    async def execute(self) -> Journal:
        """Run the experiment to a terminal phase; interrupts propagate after the revert."""
        spec = self.experiment.spec
        self._enter(Phase.Pending, f"fault {spec.fault.type}, substrate {self.substrate.name}")
        if spec.dry_run:
            # The phase is Aborted (a terminal phase: nothing was injected); the displays say
            # "planned (dry run)" from the plan the journal carries.
            self.journal.dry_run_plan = self._plan()
            return self._finish(Phase.Aborted, DRY_RUN_REASON)
        # Progress ticks through every phase, the long synchronous ones included (they run
        # in threads, so the event loop stays free).
        ticker = asyncio.create_task(self._tick())
        try:
            return await self._execute()
        except NoTargets as exc:  # nothing was injected: not an error of the run
            return self._finish(Phase.Aborted, str(exc).splitlines()[0])
        except PgGitDefect as exc:  # pgGit cannot do what the run needs: a finding about it
            self._summarise_workload()
            return self._finish(Phase.Failed, str(exc).splitlines()[0])
        except ChaosError as exc:
            return self._finish(Phase.Error, str(exc).splitlines()[0], error=str(exc))
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Stopped by the user (Ctrl-C, SIGTERM): Aborted, as a stop by the abort annotation
            # is in a cluster; not an Error of the run.
            self._summarise_workload()
            journal = self.journal
            done = ("nothing was injected" if journal.injected_at is None
                    else "fault reverted" if journal.reverted_at is not None
                    else "fault NOT reverted: run `pggit-chaos cleanup`")
            self._finish(Phase.Aborted, f"interrupted: {done}", error="interrupted")
            raise
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self._stop_workload()

    def _plan(self) -> list[str]:
        """The substrate's plan; a scenario's: the first step's whole, then each next step's
        own lines (its refusals, inject and hold)."""
        scenario = self.experiment.spec.scenario
        if scenario is None:
            return self.substrate.plan(self.experiment)
        lines = [f"scenario ({scenario.mode}) of {len(scenario.steps)} faults, planned "
                 f"{self.experiment.spec.hold_seconds():g} s from the first injection to the "
                 "last revert; each fault's intent recorded before its inject"]
        for number, (step, sub) in enumerate(zip(scenario.steps,
                                                 step_experiments(self.experiment),
                                                 strict=True), start=1):
            own = self.substrate.plan(sub)
            if number > 1:
                own = [line for line in own if line.startswith(("inject", "refused", "hold"))]
            delay = f" after {step.delay}" if step.delay.seconds else ""
            lines += [f"step {number} ({step.fault.type}{delay}): {line}" for line in own]
        return lines

    async def _execute(self) -> Journal:
        spec = self.experiment.spec
        # Steady state: the target is up and pgGit healthy, and the fault can be built
        # (privileges are checked here, before anything is injected).
        self._enter(Phase.SteadyState, "target reachable and pgGit healthy?")
        await asyncio.to_thread(self.substrate.prepare, self.experiment)
        # Every fault is built (and its checks run) before anything is injected: a scenario
        # one of whose faults would be refused injects none.
        steps = [self.substrate.build_fault(sub) for sub in step_experiments(self.experiment)]
        fault = steps[0]
        probe = await asyncio.to_thread(self.substrate.probe, 5.0)
        if not (probe.reachable and probe.healthy):
            return self._finish(Phase.Aborted, f"steady state not reached: {probe.detail}")
        self.health_finding = probe.finding
        if probe.detail != "healthy":
            self.journal.phases[-1].detail = f"steady state: {probe.detail}"
        if spec.verification.assertions:
            steady = await self._evaluate_assertions(STEADY_STATE)
            failed = [result for result in steady if result.outcome == "failed"]
            if failed:
                # The user's own invariant does not hold before any fault: nothing to learn
                # from breaking the database now, and the run fails on it.
                lines = "; ".join(result.line for result in failed)
                return self._finish(Phase.Failed, f"{lines} (nothing injected)")

        self.workload = Workload(
            self.substrate.workload_dsn,
            clients=spec.workload.clients,
            rate=spec.workload.rate,
            op_timeout=spec.workload.operation_timeout.seconds,
            mix={"commit": spec.workload.mix.commit, "ddl": spec.workload.mix.ddl},
            run_id=self.run_id,
            history=self.history,
        )
        for built in steps:
            if isinstance(built, DrivesWorkload):  # load-spike: the fault acts through it
                built.attach_workload(self.workload)
        await self.workload.start()
        try:
            await asyncio.sleep(self.baseline)
            if spec.scenario is not None:
                recovered = await self._scenario_revert_recover(steps)
            else:
                recovered = await self._inject_hold_revert_recover(fault)
            if recovered and self.tripped is None:
                # Recovery is over once the database is healthy: the settle (the workload
                # shown running again) belongs to verification, not to the recovery time.
                self._enter(Phase.Verifying, f"the workload settles {self.settle:g} s and "
                            "stops; then the invariant checker and the checks suite")
                started = time.monotonic()
                await asyncio.sleep(self.settle)
        finally:
            await self._stop_workload()
        self._summarise_workload()
        if self.tripped is not None:
            held = self.journal.fault_window.seconds if self.journal.fault_window else None
            after = f" after {held:.1f} s" if held is not None else ""
            health = ("" if recovered else "; the database was NOT healthy within the "
                      f"recovery timeout of {spec.recovery.timeout}")
            return self._finish(Phase.Aborted,
                                f"{self.tripped.line}: fault reverted{after}{health}")
        if not recovered:
            return self._finish(
                Phase.Failed,
                f"not healthy within the recovery timeout of {spec.recovery.timeout}",
            )
        self._verify_steps.append(("workload settled and stopped", time.monotonic() - started))
        return await self._verify()

    async def _inject_hold_revert_recover(self, fault: Fault) -> bool:
        spec = self.experiment.spec
        timeout = spec.recovery.timeout.seconds
        intent = fault.intent()
        self._enter(Phase.Injecting, f"{fault.type}: {intent.target}")
        self.substrate.record_intent(intent)
        injected_at = time.monotonic()
        # The checker's window opens before inject() and closes after revert() returns: a
        # fault takes effect before its call returns (trigger-disable's ALTER, for one).
        window_start = self.history.now()
        watcher: asyncio.Task[float | None] | None = None
        injecting = _in_thread(fault.inject)
        try:
            await asyncio.wrap_future(injecting)
            self.journal.mark_injected(intent.to_dict())
            self.observer.on_phase(self.journal)
            if fault.recovery_from_injection:
                # pod-kill: the server comes back while the fault is held, so recovery is
                # measured from the injection by probing during the hold.
                watcher = asyncio.create_task(self._first_healthy(injected_at + timeout))
            await self._hold(spec.duration.seconds, window_start)
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
            # Interrupted mid-inject: the inject still runs in its thread and cannot be stopped.
            # Wait for it (blocking, uncancellable) before reverting: a revert that ran first
            # would find nothing to undo, and the fault would be made after it, with the intent
            # cleared and "fault reverted" reported.
            if not injecting.cancel():
                concurrent.futures.wait([injecting])
                if self.journal.injected_at is None and injecting.exception() is None:
                    self.journal.mark_injected(intent.to_dict())
            # Revert in this thread, uncancellable: a second Ctrl-C must not skip it. Only a
            # confirmed revert clears the intent: after a failed one it stays recorded (state
            # file, experiment status) for `pggit-chaos cleanup` / the operator to revert.
            try:
                fault.revert()
            except Exception as exc:
                self.fault_window = (window_start, self.history.now())
                error = (str(exc).splitlines() or [type(exc).__name__])[0]
                self.journal.mark_revert_failed(error)
                raise FaultError(
                    f"the revert of {fault.type} failed, so it may still be active ({error}); "
                    "its intent stays recorded: the operator reverts it in a cluster, "
                    "`pggit-chaos cleanup` on one machine") from exc
            self.journal.mark_reverted()
            self.fault_window = (window_start, self.history.now())
            self.substrate.clear_intent(intent)
        first_healthy = None
        if watcher is not None and watcher.done() and not watcher.cancelled():
            first_healthy = watcher.result()
        since = injected_at if fault.recovery_from_injection else time.monotonic()
        self._enter(Phase.Recovering, "waiting for the database and a healthy health_check()")
        deadline = since + timeout
        if first_healthy is not None:  # confirm it is still healthy after the revert
            deadline = max(deadline, time.monotonic() + timeout)
        healthy_at = await self._first_healthy(deadline)
        if healthy_at is not None:
            recovered_at = first_healthy or healthy_at
            self.journal.mark_recovered(
                recovered_at - since, at=recovered_at,
                since="injection" if fault.recovery_from_injection else "revert")
            self.observer.on_phase(self.journal)
        await self._record_evidence(fault)
        return healthy_at is not None

    async def _scenario_revert_recover(self, faults: list[Fault]) -> bool:
        """A scenario: inject, hold and revert each fault on its own schedule, then recover.

        Each fault's intent is recorded before its inject and cleared after its confirmed
        revert; on any way out (error, guard, interrupt) every injected fault is reverted,
        the last injected first.
        """
        spec = self.experiment.spec
        scenario = spec.scenario
        assert scenario is not None
        parallel = scenario.mode == "parallel"
        # Parallel: (offset from the scenario's start, 0 = revert before 1 = inject, step).
        # Serial: each step's offsets count from the previous step's (actual) revert.
        events: list[tuple[float, int, int]] = []
        for index, step in enumerate(scenario.steps):
            start = step.delay.seconds
            events += [(start, 1, index), (start + step.duration.seconds, 0, index)]
        if parallel:
            events.sort()
        active: dict[int, tuple[Fault, FaultIntent, FaultStep]] = {}
        names = ", ".join(f.type for f in faults)
        self._enter(Phase.Injecting, f"scenario ({scenario.mode}): {names}")
        began = time.monotonic()
        window_start = self.history.now()
        try:
            for at, kind, index in events:
                remaining = began + at - time.monotonic()
                if remaining > 0:
                    await self._hold(remaining, window_start)
                    if self.tripped is not None:
                        break
                fault = faults[index]
                if kind == 1:
                    await self._inject_step(fault, active, index)
                else:
                    self._revert_step(*active.pop(index))
                    if not parallel:
                        began = time.monotonic()
        finally:
            # Uncancellable, in this thread, the last injected first.
            errors: list[str] = []
            for index in sorted(active, key=lambda i: active[i][2].start_offset, reverse=True):
                try:
                    self._revert_step(*active.pop(index))
                except FaultError as exc:
                    errors.append(str(exc))
            if self.journal.injected_at is not None and not self.journal.active_steps:
                self.journal.mark_reverted()
            self.fault_window = (window_start, self.history.now())
            if errors:
                raise FaultError("; ".join(errors))
        self._enter(Phase.Recovering, "waiting for the database and a healthy health_check()")
        since = time.monotonic()
        healthy_at = await self._first_healthy(since + spec.recovery.timeout.seconds)
        if healthy_at is not None:
            self.journal.mark_recovered(healthy_at - since, at=healthy_at)
            self.observer.on_phase(self.journal)
        await self._record_step_evidence(faults)
        return healthy_at is not None

    async def _inject_step(self, fault: Fault,
                           active: dict[int, tuple[Fault, FaultIntent, FaultStep]],
                           index: int) -> None:
        """Record the intent, inject in a thread (waited for even when interrupted)."""
        intent = fault.intent()
        self.substrate.record_intent(intent)
        self.journal.phases[-1].detail += f"; {fault.type} injected"
        since = self.journal.offset()  # its window opens before the call, as the checker's
        injecting = _in_thread(fault.inject)
        try:
            await asyncio.wrap_future(injecting)
        finally:
            if injecting.cancel():  # interrupted before the inject began: nothing was made
                self.substrate.clear_intent(intent)
            else:
                # Running or done (even failed part-way): waited for, then reverted like any.
                concurrent.futures.wait([injecting])
                step = self.journal.mark_step_injected(fault.type, intent.target,
                                                       intent.to_dict(), since)
                active[index] = (fault, intent, step)
                self.observer.on_phase(self.journal)

    def _revert_step(self, fault: Fault, intent: FaultIntent, step: FaultStep) -> None:
        """Revert one fault; only a confirmed revert clears its intent."""
        try:
            fault.revert()
        except Exception as exc:
            error = (str(exc).splitlines() or [type(exc).__name__])[0]
            step.revert_error = error
            self.journal.mark_revert_failed(error)
            raise FaultError(
                f"the revert of {fault.type} failed, so it may still be active ({error}); "
                "its intent stays recorded: the operator reverts it in a cluster, "
                "`pggit-chaos cleanup` on one machine") from exc
        self.journal.mark_step_reverted(step)
        self.substrate.clear_intent(intent)
        self.observer.on_phase(self.journal)

    async def _record_step_evidence(self, faults: list[Fault]) -> None:
        """Each fault's evidence over its own window; the run's is the first that did not
        bite (else the first)."""
        by_type = {f.type: f for f in faults}
        summaries: list[FaultEvidenceSummary] = []
        for step in self.journal.fault_steps:
            fault = by_type[step.fault_type]
            window = self._workload_window(self._history_window(step))
            try:
                evidence = await asyncio.to_thread(fault.evidence, window)
            except Exception as exc:
                evidence = FaultEvidence.unreadable(fault.type, exc)
            summary = evidence.summary
            if not summary.startswith(f"{fault.type}:"):
                summary = f"{fault.type}: {summary}"
            step.evidence = FaultEvidenceSummary(
                bit=evidence.bit, summary=summary,
                figures=dict(evidence.figures), read_at=datetime.now(UTC))
            summaries.append(step.evidence)
        if summaries:
            self.journal.fault_evidence = next((e for e in summaries if not e.bit),
                                               summaries[0])

    def _history_window(self, step: FaultStep) -> tuple[float, float]:
        """A step's window on the history's clock (the journal's offsets, shifted)."""
        shift = self.history.now() - self.journal.offset()
        end = step.end_offset if step.end_offset is not None else self.journal.offset()
        return (step.start_offset + shift, end + shift)

    async def _hold(self, seconds: float, since: float) -> None:
        """Hold the fault ``seconds``, or less if a guard trips (:attr:`tripped`).

        ``since`` is the injection on the history's clock: the error rate counts from there.
        """
        guards = self.experiment.spec.guards
        if guards.max_error_rate is None and guards.max_lost_writes is None:
            await asyncio.sleep(seconds)
            return
        from pggit_chaos.engine import guards as guard

        end = time.monotonic() + seconds
        next_lost_look = time.monotonic()
        while (remaining := end - time.monotonic()) > 0:
            await asyncio.sleep(min(guard.CHECK_INTERVAL, remaining))
            trip = guard.error_rate(self.history, guards, since)
            if trip is None and guards.max_lost_writes is not None \
                    and time.monotonic() >= next_lost_look:
                next_lost_look = time.monotonic() + guard.LOST_WRITES_INTERVAL
                trip = await asyncio.to_thread(guard.lost_writes, self.substrate.dsn,
                                               self.history, guards)
            if trip is not None:
                self.tripped = trip
                self.journal.phases[-1].detail += f"; {trip.line}: stopped early"
                self.observer.on_phase(self.journal)
                return

    async def _record_evidence(self, fault: Fault) -> None:
        """Ask the fault what the system showed of it (after the revert, counters read)."""
        window = self._workload_window(self.fault_window)
        try:
            evidence = await asyncio.to_thread(fault.evidence, window)
        except Exception as exc:  # a reading that failed proves nothing: not a bite
            evidence = FaultEvidence.unreadable(fault.type, exc)
        self.journal.fault_evidence = FaultEvidenceSummary(
            bit=evidence.bit, summary=evidence.summary, figures=dict(evidence.figures),
            read_at=datetime.now(UTC),
        )

    def _workload_window(self, span: tuple[float, float] | None) -> WorkloadWindow:
        """What the workload saw during ``span`` (history clock), from its history."""
        if span is None:
            return WorkloadWindow(seconds=0.0)
        start, end = span
        outcomes: dict[str, int] = {"ok": 0, "fail": 0, "info": 0}
        acks: list[float] = []
        before = 0
        baseline_start = max(0.0, start - self.baseline)
        for op in self.history.ops:
            if op.type == "invoke":
                continue
            if start <= op.time <= end:
                outcomes[op.type] += 1
                if op.type == "ok":
                    acks.append(op.time)
            elif op.type == "ok" and baseline_start <= op.time < start:
                before += 1
        points = [start, *sorted(acks), end]
        gap = max((b - a for a, b in itertools.pairwise(points)), default=0.0)
        baseline = start - baseline_start
        during_ms: list[float] = []
        before_ms: list[float] = []
        for pair in self.history.pairs():
            if (pair.completion is None or pair.completion.type != "ok"
                    or pair.latency is None):
                continue
            if start <= pair.invoke.time <= end:
                during_ms.append(1000.0 * pair.latency)
            elif baseline_start <= pair.invoke.time < start:
                before_ms.append(1000.0 * pair.latency)
        stats = self.workload.stats if self.workload is not None else None
        return WorkloadWindow(
            seconds=end - start, ok=outcomes["ok"], failed=outcomes["fail"],
            indeterminate=outcomes["info"],
            baseline_ok_per_s=before / baseline if baseline > 0 else 0.0,
            longest_ack_gap_seconds=gap,
            p50_ms=percentile(during_ms, 50), p95_ms=percentile(during_ms, 95),
            baseline_p50_ms=percentile(before_ms, 50), baseline_p95_ms=percentile(before_ms, 95),
            refused_connections=0 if stats is None
            else sum(1 for t in stats.refused if start <= t <= end),
            peak_connections=0 if stats is None else stats.peak_connected,
        )

    async def _first_healthy(self, deadline: float) -> float | None:
        """Probe every ``probeInterval`` until healthy (its monotonic time) or the deadline."""
        interval = self.experiment.spec.recovery.probe_interval.seconds
        while True:
            started = time.monotonic()
            remaining = deadline - started
            if remaining <= 0:
                return None
            probe = await asyncio.to_thread(self.substrate.probe, max(0.5, min(2.0, remaining)))
            if probe.reachable and probe.healthy:
                return time.monotonic()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _evaluate_assertions(self, phase: str) -> list[AssertionSummary]:
        """The user's assertions at ``phase``, recorded in the journal."""
        from pggit_chaos.engine.assertions import evaluate

        results = await asyncio.to_thread(
            evaluate, self.substrate.dsn, self.experiment.spec.verification.assertions, phase)
        self.journal.assertions = [*self.journal.assertions, *results]
        return results

    async def _verify(self) -> Journal:
        verification = self.experiment.spec.verification
        if self.journal.current_phase is not Phase.Verifying:
            self._enter(Phase.Verifying, "invariant checker, then the checks suite")
        reasons: list[str] = [self.health_finding] if self.health_finding else []
        if self.workload is not None and self.workload.setup_finding:
            reasons.append(self.workload.setup_finding)
        #: Why the run cannot say Pass although nothing failed (the verdict is Inconclusive).
        unsure: list[str] = []
        if verification.assertions:
            started = time.monotonic()
            await self._evaluate_assertions(AFTER_RECOVERY)
            self._verify_steps.append(("assertions", time.monotonic() - started))
            for result in self.journal.assertions:
                if result.outcome == "failed":
                    reasons.append(result.line)
                elif result.outcome == "error":
                    unsure.append(result.line)
        evidence = self.journal.fault_evidence
        if evidence is not None and not evidence.bit:
            unsure.append(evidence.summary)
        if verification.invariants:
            started = time.monotonic()
            report = await asyncio.to_thread(self._check_invariants)
            self._verify_steps.append(("invariant checker", time.monotonic() - started))
            self.invariant_report = report
            self.journal.invariants = [
                InvariantSummary(
                    name=r.name,
                    passed=r.passed,
                    message=r.message,
                    examples=list(r.examples),
                    outcome=r.outcome,
                )
                for r in report.invariants
            ]
            self.journal.drift = [str(d) for d in report.drift]
            self.journal.workload.lost = report.counts.lost
            self.journal.workload.duplicated = report.counts.duplicated
            self.journal.workload.unexpected = report.counts.unexpected
            unsure.extend(report.unsure)  # invariants that could not be evaluated
            if not report.passed:
                failing = report.failures
                reasons.append(
                    f"invariant {failing[0].name} violated: {failing[0].message}"
                    if failing
                    else "invariants violated"
                )
        if verification.checks and self.checks_runner is not None:
            started = time.monotonic()
            summary = await asyncio.to_thread(
                self.checks_runner, self.substrate.dsn, self.experiment
            )
            self._verify_steps.append(("checks suite", time.monotonic() - started))
            self.journal.checks = summary
            failed = [f for f in summary.failures if f.outcome == "failed"]
            if failed:
                names = ", ".join(f.name for f in failed[:3])
                reasons.append(f"{len(failed)} check(s) failed: {names} (seed {summary.seed})")
            errored = [f for f in summary.failures if f.outcome == "error"]
            if errored:
                names = ", ".join(f.name for f in errored[:3])
                unsure.append(f"{len(errored)} check(s) could not run: {names}")
        record = self.journal.phases[-1]
        if record.phase is Phase.Verifying and self._verify_steps:
            record.detail = "; ".join(f"{step} {seconds:.1f} s"
                                      for step, seconds in self._verify_steps)
        if reasons:
            return self._finish(Phase.Failed, "; ".join(reasons))
        if unsure:
            return self._finish(Phase.Inconclusive, "; ".join(unsure))
        return self._finish(Phase.Passed, "nothing lost, nothing corrupted")

    def _check_invariants(self) -> InvariantReport:
        from pggit_chaos.engine.invariants import check_invariants

        window, fault_type = self.fault_window, str(self.experiment.spec.fault.type)
        # A scenario: the checker excuses DDL unrecorded inside a trigger-disable's own window.
        disabled = next((step for step in self.journal.fault_steps
                         if step.fault_type == "trigger-disable"), None)
        if disabled is not None:
            window, fault_type = self._history_window(disabled), disabled.fault_type
        return check_invariants(
            self.substrate.dsn,
            self.history,
            self.run_id,
            fault_window=window,
            fault_type=fault_type,
        )

    # -- workload -------------------------------------------------------------------------------
    async def _stop_workload(self) -> None:
        if self.workload is not None and self.workload.running:
            await self.workload.stop()

    def _summarise_workload(self) -> None:
        counts = self.history.counts()
        latencies = [1000.0 * s for s in self.history.latencies()]
        self.journal.workload = WorkloadSummary.from_counts(
            invoked=counts.invoked,
            ok=counts.ok,
            failed=counts.failed,
            indeterminate=counts.indeterminate,
            latencies_ms=latencies,
            elapsed_seconds=self.history.span(),
        )
        self.journal.workload.phases = phase_latencies(self.journal.phases, [
            (pair.invoke.time, 1000.0 * pair.latency) for pair in self.history.pairs()
            if pair.completion is not None and pair.completion.type == "ok"
            and pair.latency is not None])
        samples = [(op.time, op.type) for op in self.history.ops if op.type != "invoke"]
        self.journal.series = bucket_series(samples, BUCKET_SECONDS, end=self.journal.offset())

    async def _tick(self, every: float = 0.5) -> None:
        last_ok, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(every)
            counts = self.history.counts()
            now = time.monotonic()
            rate = (counts.ok - last_ok) / max(1e-6, now - last_t)
            last_ok, last_t = counts.ok, now
            self.observer.on_progress(
                Progress(
                    phase=self.journal.current_phase,
                    elapsed=self.journal.offset(),
                    ops_per_s=rate,
                    ok=counts.ok,
                    errors=counts.failed + counts.indeterminate,
                )
            )


def step_experiments(experiment: Experiment) -> list[Experiment]:
    """One single-fault experiment per fault of the run (the substrates build each fault
    from one of these: its ``spec.fault`` and ``spec.duration`` are the step's)."""
    spec = experiment.spec
    if spec.scenario is None:
        return [experiment]
    return [experiment.model_copy(update={"spec": spec.model_copy(update={
        "single_fault": step.fault, "scenario": None, "duration": step.duration})})
        for step in spec.scenario.steps]


async def execute_until_signalled(run: Run) -> Journal:
    """Run in a task that SIGTERM and SIGINT cancel (so the revert runs and the journal is kept).

    Used by the local runner and the runner Job alike.
    """
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run.execute())
    signals = (signal.SIGTERM, signal.SIGINT)
    before = {signum: signal.getsignal(signum) for signum in signals}
    for signum in signals:
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
            # remove_signal_handler leaves SIGTERM at SIG_DFL: a SIGTERM while the caller
            # removes its resources would then kill the process outright. Put back what was.
            previous = before[signum]
            if previous is not None:
                signal.signal(signum, previous)
