"""Deliberately broken variants of the embedded pgGit core, for proving that checks catch them.

Each ``<name>.sql`` here is applied AFTER the sound install (``pggit_chaos.pggit.install``)
and replaces one function, trigger or constraint; its header comment says what it breaks.
Used by tests/test_pggit_core.py (each variant really misbehaves) and by the checks-suite
tests (each check fails against the variant it targets). Re-running the sound install repairs
the function-only variants; throw the database away after the others. :data:`STORAGE_VARIANTS`
are no SQL: they damage pgGit's files on disk (an index), which no SQL variant can.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from pggit_chaos.local.index_corruption import corrupt_index
from pggit_chaos.local.server import EmbeddedPostgres

_HERE = Path(__file__).resolve().parent

#: Variant name -> SQL file.
VARIANTS: dict[str, Path] = {path.stem: path for path in sorted(_HERE.glob("*.sql"))}


def describe(name: str) -> str:
    """The variant's ``Breaks:`` header text on one line."""
    header = VARIANTS[name].read_text(encoding="utf-8").split("\n\n", 1)[0]
    lines = [line.removeprefix("--").strip() for line in header.splitlines()]
    text = " ".join(line for line in lines if line)
    return text.split("Breaks:", 1)[-1].strip()


def apply_variant(dsn: str, name: str) -> None:
    """Apply variant ``name`` to the database at ``dsn`` (which holds the sound core)."""
    if name not in VARIANTS:
        known = ", ".join(sorted(VARIANTS))
        raise KeyError(f"unknown pgGit variant {name!r}; known: {known}")
    script = VARIANTS[name].read_text(encoding="utf-8")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(script.encode("utf-8"))


#: Variants that are no SQL: damage to pgGit's files, made while the server is stopped.
#: Name -> what it breaks. Apply with :func:`apply_storage_variant` to a server of the test's
#: own (it is stopped and started again); throw the database away afterwards.
STORAGE_VARIANTS: dict[str, str] = {
    "index_corruption": (
        "two adjacent entries of a leaf page of pgGit's busiest btree index are swapped in its "
        "relation file (server stopped cleanly, page checksum kept valid, server restarted): "
        "every SQL query still answers, so every check that only queries pgGit passes"
    ),
}


def apply_storage_variant(server: EmbeddedPostgres, dbname: str, name: str) -> str:
    """Apply storage variant ``name`` to database ``dbname`` of ``server``; what it damaged."""
    if name not in STORAGE_VARIANTS:
        known = ", ".join(sorted(STORAGE_VARIANTS))
        raise KeyError(f"unknown storage variant {name!r}; known: {known}")
    return corrupt_index(server, dbname).index
