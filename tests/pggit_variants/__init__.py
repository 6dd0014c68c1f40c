"""Deliberately broken variants of the embedded pgGit core, for proving that checks catch them.

Each ``<name>.sql`` here is applied AFTER the sound install (``pggit_chaos.pggit.install``)
and replaces one function, trigger or constraint; its header comment says what it breaks.
Used by tests/test_pggit_core.py (each variant really misbehaves) and by the checks-suite
tests (each check fails against the variant it targets). Re-running the sound install repairs
the function-only variants; throw the database away after the others.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

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
