"""disk-pressure's evidence in a cluster: PostgreSQL's own answer to a write on the full disk.

On the real node the probe's new session was refused with ``FATAL: could not write init file``
(the relation-cache init file of a new backend cannot be written on a full disk); the run ended
Inconclusive ("did not bite") although the disk was full and 174 writes failed.
"""

from __future__ import annotations

import pytest

from pggit_chaos.faults.base import WorkloadWindow
from pggit_chaos.kube.disk_pressure import DiskPressure

pytestmark = pytest.mark.unit

POD = {"metadata": {"name": "pg-0"}, "spec": {"containers": [{"name": "postgres"}]}}


def filled(error: str) -> DiskPressure:
    fault = DiskPressure(None, "default", [POD], True, "dbname=unused",  # type: ignore[arg-type]
                         "data", "enospc", 1024)
    fault.filled = {"pg-0": {"total": "1000", "used": "1000", "avail": "0", "written": "900",
                             "refused": "cat: write error: No space left on device"}}
    fault.postgres_error = error
    return fault


@pytest.mark.parametrize("error", [
    'ERROR: could not extend file "base/5/16384": No space left on device',
    'ERROR: connection failed: connection to server at "10.96.0.63", port 5432 failed: '
    "FATAL: could not write init file",
])
def test_postgresqls_words_for_a_full_disk_count_as_the_bite(error: str) -> None:
    evidence = filled(error).evidence(WorkloadWindow(seconds=5.0, failed=174))
    assert evidence.bit, evidence.summary
    assert error in evidence.summary


@pytest.mark.parametrize("error", ["", "ERROR: canceling statement due to statement timeout"])
def test_no_full_disk_error_is_no_bite(error: str) -> None:
    evidence = filled(error).evidence(WorkloadWindow(seconds=5.0))
    assert not evidence.bit
    assert "did not bite" in evidence.summary
