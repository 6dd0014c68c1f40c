"""An upstream-shaped pgGit for the tests: SQL that behaves like upstream pgGit's public API.

``sound.sql`` installs, into an EMPTY database (no embedded core), pgGit as upstream shapes it
(github.com/evoludigit/pgGit: its tables, enums, functions and event triggers), written from
observed behaviour only, with upstream's real defects fixed. Each other ``<name>.sql`` is
applied AFTER it and re-introduces exactly one real upstream defect; its header comment says
which (``-- Breaks: ...``), and ``expected_check`` names the test of the checks suite that
should fail against it. Throw the database away after applying a defect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

_HERE = Path(__file__).resolve().parent

#: The sound, upstream-shaped install.
SOUND: Path = _HERE / "sound.sql"


@dataclass(frozen=True)
class Defect:
    """One real upstream defect, re-introduced by an SQL file applied after ``SOUND``."""

    name: str
    path: Path
    breaks: str
    expected_check: str


#: Defect name -> the check that must fail against it.
_EXPECTED_CHECKS: dict[str, str] = {
    "no_commit_chain": "test_commit_chain_follows_branch_head",
    "negative_version": "test_increment_version_rejects_bad_input",
    "health_check_errors": "test_health_check_healthy",
    "first_branch_fails": "test_first_branch_can_be_created",
    "columns_stay_active": "test_dropped_objects_stop_being_active",
    "dangling_branch_head": "test_new_branch_head_points_at_a_commit",
    "definer_search_path": "test_security_definer_functions_pin_search_path",
    "public_writable": "test_no_pggit_object_writable_by_public",
    "ddl_needs_privileges": "test_ordinary_role_can_run_ddl",
    "rename_keeps_old": "test_renamed_objects_leave_no_active_old_name",
    "retryable_wrapped": "test_lock_timeout_reaches_client_unchanged",
    "tracking_error_logged": "test_ddl_tracking_logs_no_errors",
}


def _breaks(path: Path) -> str:
    """The file's ``Breaks:`` header text on one line."""
    header = path.read_text(encoding="utf-8").split("\n\n", 1)[0]
    lines = [line.removeprefix("--").strip() for line in header.splitlines()]
    text = " ".join(line for line in lines if line)
    if "Breaks:" not in text:
        raise ValueError(f"{path.name}: no '-- Breaks: ...' header")
    return text.split("Breaks:", 1)[1].strip()


def _load() -> dict[str, Defect]:
    defects: dict[str, Defect] = {}
    for name, check in _EXPECTED_CHECKS.items():
        path = _HERE / f"{name}.sql"
        defects[name] = Defect(name=name, path=path, breaks=_breaks(path), expected_check=check)
    return defects


#: Defect name -> defect, one per real upstream defect.
DEFECTS: dict[str, Defect] = _load()


def _run_script(dsn: str, path: Path) -> None:
    script = path.read_text(encoding="utf-8")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(script.encode("utf-8"))


def install_upstream(dsn: str) -> None:
    """Install the sound upstream-shaped pgGit into the (fresh, empty) database at ``dsn``."""
    _run_script(dsn, SOUND)


def apply_defect(dsn: str, name: str) -> None:
    """Re-introduce defect ``name`` into the database at ``dsn`` (holding ``SOUND``)."""
    if name not in DEFECTS:
        known = ", ".join(sorted(DEFECTS))
        raise KeyError(f"unknown upstream pgGit defect {name!r}; known: {known}")
    _run_script(dsn, DEFECTS[name].path)
