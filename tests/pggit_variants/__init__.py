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

from pggit_chaos.local.index_corruption import choose_target, corrupt_index, pggit_btree_indexes
from pggit_chaos.local.server import EmbeddedPostgres

_HERE = Path(__file__).resolve().parent

#: Variant name -> SQL file.
VARIANTS: dict[str, Path] = {path.stem: path for path in sorted(_HERE.glob("*.sql"))}


#: Variants that pass every check while the server's clock runs forwards and break only when it
#: jumps (clock-skew): name -> SQL file (tests/pggit_variants/clock/). Applied like VARIANTS.
CLOCK_VARIANTS: dict[str, Path] = {
    path.stem: path for path in sorted((_HERE / "clock").glob("*.sql"))}


def describe(name: str) -> str:
    """The variant's ``Breaks:`` header text on one line."""
    header = VARIANTS[name].read_text(encoding="utf-8").split("\n\n", 1)[0]
    lines = [line.removeprefix("--").strip() for line in header.splitlines()]
    text = " ".join(line for line in lines if line)
    return text.split("Breaks:", 1)[-1].strip()


def apply_variant(dsn: str, name: str) -> None:
    """Apply variant ``name`` to the database at ``dsn`` (which holds the sound core)."""
    variants = {**VARIANTS, **CLOCK_VARIANTS}
    if name not in variants:
        known = ", ".join(sorted(variants))
        raise KeyError(f"unknown pgGit variant {name!r}; known: {known}")
    script = variants[name].read_text(encoding="utf-8")
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


#: The index whose leaf tuples :func:`crash_index` zeroes: text keys (Trinity IDs), so that
#: amcheck reads a zeroed varlena header and the backend dies instead of reporting an error.
CRASH_INDEX = "pggit.commits_hash_key"
#: How many bytes :func:`crash_index` zeroes, starting at a leaf entry in the page's middle.
CRASH_BYTES = 48


def crash_index(server: EmbeddedPostgres, dbname: str, index: str = CRASH_INDEX) -> str:
    """Zero :data:`CRASH_BYTES` bytes of the tuples of a leaf page of ``index`` (server stopped
    cleanly, then started): ``bt_index_check`` on it crashes the backend. Returns the index."""
    with psycopg.connect(server.socket_dsn(dbname), autocommit=True, connect_timeout=10) as conn:
        indexes = pggit_btree_indexes(conn)
        conn.execute("CHECKPOINT")
    process = server.process
    server.stop()
    try:
        assert process is not None and process.returncode == 0, "unclean shutdown"
        target, block, items = choose_target(server.data_dir, indexes, 8192, index)
        middle = sorted(items, key=lambda item: item.start)[len(items) // 2]
        with open(server.data_dir / target.path, "r+b") as handle:
            handle.seek(block * 8192 + middle.start)
            handle.write(bytes(CRASH_BYTES))
            handle.flush()
    finally:
        server.start()
    return target.name
