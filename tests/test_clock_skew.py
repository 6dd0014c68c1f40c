"""clock-skew: the embedded server's clock moved by libfaketime, a pgGit that trusts the clock.

Real parts: the embedded server runs with Debian's libfaketime preloaded, the offset is
written into the file it reads at every clock call, and the server's clock_timestamp() is
read back. The clock-trusting variant (tests/pggit_variants/clock/parent_by_time.sql) passes
the invariants under the same workload without the fault and fails them under it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from pggit_chaos.engine.history import History
from pggit_chaos.engine.invariants import check_invariants
from pggit_chaos.engine.lifecycle import Run
from pggit_chaos.engine.workload import Workload
from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.kube.substrate import CLOCK_SKEW_REFUSAL, KubeSubstrate
from pggit_chaos.local.clock import find_libfaketime, server_skew
from pggit_chaos.local.server import embedded_pggit
from pggit_chaos.local.state import StateFile
from pggit_chaos.local.substrate import LocalSubstrate
from pggit_chaos.spec import load_experiment_object, load_experiments
from pggit_chaos.spec.model import clock_offset_seconds
from pggit_variants import apply_variant

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = next((ROOT / "experiments").glob("*-clock-skew.yaml"))

needs_faketime = pytest.mark.skipif(
    not any(Path(d, "libfaketime.so.1").is_file()
            for d in ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime")),
    reason="libfaketime is not installed (apt-get install faketime; scripts/setup does)")


def _experiment(**changes: Any) -> Any:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].update(changes)
    return load_experiment_object(doc)


@pytest.mark.unit
@pytest.mark.parametrize(("text", "seconds"), [("-1h", -3600.0), ("+90s", 90.0),
                                                ("30m", 1800.0), ("-1h30m", -5400.0)])
def test_offsets_are_signed_durations(text: str, seconds: float) -> None:
    assert clock_offset_seconds(text) == seconds
    fault = {"type": "clock-skew", "clockSkew": {"offset": text}}
    assert _experiment(fault=fault).spec.fault.settings.offset == text


@pytest.mark.unit
@pytest.mark.parametrize("text", ["0s", "-500ms", "+721h", "1 hour", "--1h"])
def test_bad_offsets_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidExperiment, match=r"spec\.fault\.clockSkew\.offset"):
        _experiment(fault={"type": "clock-skew", "clockSkew": {"offset": text}})


@pytest.mark.unit
def test_a_cluster_refuses_clock_skew_before_injection() -> None:
    experiment = load_experiments(EXAMPLE)[0]
    substrate = KubeSubstrate(None, None, "host=x", "uid", "run", lambda _: None)  # type: ignore[arg-type]
    with pytest.raises(InvalidExperiment, match="needs a privileged daemon on the node"):
        substrate.build_fault(experiment)
    assert "privileged daemon" in CLOCK_SKEW_REFUSAL


@needs_faketime
def test_the_offset_moves_the_servers_clock_without_a_restart(tmp_path: Path) -> None:
    substrate = LocalSubstrate(state=StateFile.in_dir(tmp_path / "state"))
    experiment = load_experiments(EXAMPLE)[0]
    try:
        substrate.prepare(experiment)
        assert substrate.server is not None
        pid = substrate.server.pid
        fault = substrate.build_fault(experiment)
        assert abs(server_skew(substrate.dsn)) < 2
        fault.inject()
        assert abs(server_skew(substrate.dsn) + 3600) < 5
        fault.revert()
        fault.revert()  # idempotent
        assert abs(server_skew(substrate.dsn)) < 2
        assert substrate.server.pid == pid  # the same postmaster: no restart
    finally:
        substrate.close()
    assert find_libfaketime().name == "libfaketime.so.1"


def _variant_run(tmp_path: Path, variant: str | None) -> Any:
    """Experiment 14 (2 s of skew) through the real lifecycle, the variant applied first."""
    experiment = _experiment(duration="2s", verification={"checks": [], "invariants": True})
    substrate = LocalSubstrate(state=StateFile.in_dir(tmp_path / "state"))
    try:
        substrate.prepare(experiment)
        if variant is not None:
            apply_variant(substrate.dsn, variant)
        return asyncio.run(Run(experiment, substrate, None).execute())
    finally:
        substrate.close()


@needs_faketime
def test_the_sound_core_keeps_one_chain_and_unique_ids_across_a_backwards_jump(
        tmp_path: Path) -> None:
    journal = _variant_run(tmp_path, None)
    assert journal.verdict == "Pass", journal.reason
    passed = {inv.name for inv in journal.invariants if inv.passed}
    assert {"trinity-ids-unique", "commit-chain-linear", "branch-heads-valid"} <= passed
    assert journal.fault_evidence is not None and journal.fault_evidence.bit


@needs_faketime
def test_a_pggit_that_orders_commits_by_the_clock_fails_under_clock_skew(
        tmp_path: Path) -> None:
    journal = _variant_run(tmp_path, "parent_by_time")
    assert journal.verdict == "Fail", journal.reason
    failed = {inv.name for inv in journal.invariants if not inv.passed}
    assert "commit-chain-linear" in failed, journal.reason


def test_the_clock_trusting_pggit_passes_without_the_fault() -> None:
    # The same workload, no fault: the clock only runs forwards, the variant is not caught.
    with embedded_pggit() as (_, dsn):
        apply_variant(dsn, "parent_by_time")
        history = History()
        load = Workload(dsn, clients=4, rate=50, history=history)

        async def run() -> None:
            async with load:
                await asyncio.sleep(4.0)

        asyncio.run(run())
        report = check_invariants(dsn, history, load.run_id)
    assert history.counts().ok > 50
    assert report.passed, [f"{r.name}: {r.message}" for r in report.failures]
