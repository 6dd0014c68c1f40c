"""Names the checks share with their runner: settings, markers, profiles, scratch prefixes.

Imported by the runner (which must start fast: ``pggit-chaos checks --help``) and by the suite;
nothing here imports psycopg or hypothesis.
"""

from __future__ import annotations

import os
import secrets

#: Environment variables the runner passes to the pytest subprocess.
ENV_DSN = "PGGIT_CHAOS_DSN"
ENV_DESTRUCTIVE = "PGGIT_CHAOS_DESTRUCTIVE"
ENV_REPORT = "PGGIT_CHAOS_CHECKS_REPORT"
ENV_PROFILE = "HYPOTHESIS_PROFILE"

#: Every schema, table and branch a check creates starts with this.
SCRATCH_PREFIX = "chaos_check_"
#: Check categories (pytest markers) a user can select.
CATEGORIES = ("property", "concurrent", "transaction", "resource", "corruption", "security")
#: Further markers: long checks, and checks that need superuser or disturb other sessions.
EXTRA_MARKERS = ("slow", "destructive")
PROFILES = ("ci", "dev", "thorough")

#: Guards so that a hang becomes an error, never a stuck verification Job.
STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 10_000
APPLICATION_NAME = "pggit-chaos-checks"
#: Names one run's sessions (``application_name``) so the runner can end them after a kill.
ENV_RUN_ID = "PGGIT_CHAOS_CHECKS_RUN_ID"


_MANUAL_RUN = secrets.token_hex(4)


def run_id() -> str:
    """This run's id (the runner's, or one per process for a run by hand)."""
    return os.environ.get(ENV_RUN_ID) or _MANUAL_RUN


def application_name(run: str | None = None) -> str:
    """``pggit-chaos-checks/<run id>``: the application_name of every session of one run."""
    return f"{APPLICATION_NAME}/{run or run_id()}"


def run_prefix(run: str | None = None) -> str:
    """``chaos_check_<run id>_``: the start of every scratch name of one run."""
    return f"{SCRATCH_PREFIX}{run or run_id()}_"
