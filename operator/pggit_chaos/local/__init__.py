"""The embedded PostgreSQL: a throwaway cluster for local runs, checks and tests."""

from pggit_chaos.local.server import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    destroy_all,
    embedded_pggit,
    find_bindir,
    free_port,
)

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "destroy_all",
    "embedded_pggit",
    "find_bindir",
    "free_port",
]
