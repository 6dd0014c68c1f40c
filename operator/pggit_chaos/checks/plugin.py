"""Optional pytest plugin adding command-line options to the checks suite.

The runner loads it (``-p pggit_chaos.checks.plugin``); by hand it is optional, since the
suite's conftest reads the same settings from ``PGGIT_CHAOS_*`` environment variables.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pggit-chaos", "pggit-chaos checks")
    group.addoption("--dsn", default=None, help="target database (default: $PGGIT_CHAOS_DSN)")
    group.addoption(
        "--destructive",
        action="store_true",
        default=False,
        help="also run checks that need superuser or disturb other sessions",
    )
    group.addoption("--checks-json", default=None, help="write the checks report (JSON) here")
