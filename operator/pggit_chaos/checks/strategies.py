"""Hypothesis strategies for the checks suite: identifiers, table definitions, messages, branches.

Used by the check modules of :mod:`pggit_chaos.checks` (and by the project's own tests). Every
strategy is an ``@st.composite`` whose arguments are strategies (or ``None`` for "vary"), per
CONVENTIONS.md #11. Generated values are plain dataclasses; SQL is built from them with
:mod:`psycopg.sql` so identifiers are always quoted and values always passed as literals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st
from psycopg import sql

#: PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
MAX_IDENTIFIER_BYTES = 63
#: pgGit's limits on commit messages and branch names.
MAX_MESSAGE_CHARS = 10_000
MAX_BRANCH_CHARS = 255

#: Column names PostgreSQL reserves for system columns (a user column may not take them).
SYSTEM_COLUMNS = frozenset({"oid", "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})

_IDENT_FIRST = "abcdefghijklmnopqrstuvwxyz_"
_IDENT_REST = _IDENT_FIRST + "0123456789"


@dataclass(frozen=True)
class ColumnType:
    """A column type: its SQL spelling and a literal default that fits it."""

    name: str
    default: str  # an SQL expression valid as a DEFAULT for this type

    def sql(self) -> sql.SQL:
        return sql.SQL(self.name)  # from the fixed list below only, never user input


#: The common types table definitions draw from (fixed strings, never user input).
COMMON_TYPES: tuple[ColumnType, ...] = (
    ColumnType("integer", "0"),
    ColumnType("bigint", "42"),
    ColumnType("smallint", "7"),
    ColumnType("numeric(12,2)", "1.50"),
    ColumnType("double precision", "0.5"),
    ColumnType("boolean", "false"),
    ColumnType("text", "'x'"),
    ColumnType("varchar(40)", "'it''s'"),
    ColumnType("character(3)", "'abc'"),
    ColumnType("date", "'2024-01-01'"),
    ColumnType("timestamp with time zone", "now()"),
    ColumnType("uuid", "'00000000-0000-0000-0000-000000000000'"),
    ColumnType("jsonb", "'{}'"),
    ColumnType("bytea", "'\\x00'"),
    ColumnType("text[]", "'{}'"),
)


@dataclass(frozen=True)
class ColumnDefinition:
    """One column of a generated table."""

    name: str
    type: ColumnType
    not_null: bool = False
    has_default: bool = False

    def sql(self) -> sql.Composed:
        parts: list[sql.Composable] = [sql.Identifier(self.name), self.type.sql()]
        if self.not_null:
            parts.append(sql.SQL("NOT NULL"))
        if self.has_default:
            parts.append(sql.SQL("DEFAULT ") + sql.SQL(self.type.default))
        return sql.SQL(" ").join(parts)


@dataclass(frozen=True)
class TableDefinition:
    """A generated table: name, columns, and whether the first column is the primary key."""

    name: str
    columns: tuple[ColumnDefinition, ...]
    primary_key: bool = False

    def create_sql(self, schema: str, name: str | None = None) -> sql.Composed:
        """``CREATE TABLE schema.name (...)`` with every identifier quoted."""
        items: list[sql.Composable] = [c.sql() for c in self.columns]
        if self.primary_key and self.columns:
            items.append(sql.SQL("PRIMARY KEY ({})").format(sql.Identifier(self.columns[0].name)))
        return sql.SQL("CREATE TABLE {} ({})").format(
            sql.Identifier(schema, name or self.name), sql.SQL(", ").join(items)
        )

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def fit_identifier(name: str, suffix: str = "") -> str:
    """``name`` shortened so that ``name + suffix`` fits PostgreSQL's 63-byte limit."""
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode())
    encoded = name.encode()[:room]
    return encoded.decode(errors="ignore") + suffix


@st.composite
def pg_identifier(
    draw: st.DrawFn,
    max_length: int = MAX_IDENTIFIER_BYTES,
    alphabet: st.SearchStrategy[str] | None = None,
) -> str:
    """A PostgreSQL identifier of 1..``max_length`` bytes (lower-case by default).

    ``alphabet`` draws single characters for the tail (the first is always a letter or
    ``_``); identifiers are always quoted by the checks, so reserved words are fine.
    """
    max_length = min(max_length, MAX_IDENTIFIER_BYTES)
    first = draw(st.sampled_from(_IDENT_FIRST))
    tail_chars = alphabet if alphabet is not None else st.sampled_from(_IDENT_REST)
    tail = draw(st.lists(tail_chars, max_size=max(0, max_length - 1)))
    return fit_identifier(first + "".join(tail)) if max_length > 0 else first


@st.composite
def column_type(draw: st.DrawFn, types: st.SearchStrategy[ColumnType] | None = None) -> ColumnType:
    """One of :data:`COMMON_TYPES` (or a draw from ``types``)."""
    return draw(types if types is not None else st.sampled_from(COMMON_TYPES))


@st.composite
def column_definitions(
    draw: st.DrawFn,
    min_size: int = 1,
    max_size: int = 10,
    names: st.SearchStrategy[str] | None = None,
    types: st.SearchStrategy[ColumnType] | None = None,
) -> tuple[ColumnDefinition, ...]:
    """Columns with distinct names that are not PostgreSQL system column names."""
    name_strategy = (names if names is not None else pg_identifier(max_length=40)).filter(
        lambda n: n not in SYSTEM_COLUMNS
    )
    col_names = draw(st.lists(name_strategy, min_size=min_size, max_size=max_size, unique=True))
    columns = []
    for name in col_names:
        columns.append(
            ColumnDefinition(
                name=name,
                type=draw(column_type(types)),
                not_null=draw(st.booleans()),
                has_default=draw(st.booleans()),
            )
        )
    return tuple(columns)


@st.composite
def table_definition(
    draw: st.DrawFn,
    columns: st.SearchStrategy[Sequence[ColumnDefinition]] | None = None,
    name: st.SearchStrategy[str] | None = None,
    primary_key: st.SearchStrategy[bool] | None = None,
) -> TableDefinition:
    """A valid table: 1-10 columns of common types by default (pass ``columns`` for more)."""
    cols = tuple(draw(columns if columns is not None else column_definitions()))
    return TableDefinition(
        name=draw(name if name is not None else pg_identifier()),
        columns=cols,
        primary_key=bool(cols) and draw(primary_key if primary_key is not None else st.booleans()),
    )


def wide_table_definition(
    min_columns: int = 100, max_columns: int = 130
) -> st.SearchStrategy[TableDefinition]:
    """A table with 100+ columns (the resource category's variant of :func:`table_definition`)."""
    return table_definition(
        columns=column_definitions(
            min_size=min_columns, max_size=max_columns, names=pg_identifier(max_length=20)
        )
    )


#: Characters that break naive quoting, trimming or escaping.
AWKWARD_FRAGMENTS = ("'", '"', "\\", "$$", "%s", "--", "/*", "\n", "\r\n", "\t", " ", "é", "🐘")
_WHITESPACE = ("", " ", "  ", "\n", "\t", " \n")


@st.composite
def commit_message(
    draw: st.DrawFn,
    min_size: int = 1,
    max_size: int = MAX_MESSAGE_CHARS,
    alphabet: st.SearchStrategy[str] | None = None,
) -> str:
    """Unicode text of ``min_size``..``max_size`` characters: no NUL, no surrogates.

    Biased towards what breaks message handling: quotes, backslashes, dollar quotes, leading
    and trailing whitespace, non-ASCII, and long messages up to the limit.
    """
    chars = (
        alphabet
        if alphabet is not None
        else st.characters(codec="utf-8", exclude_characters="\x00")
    )
    body = draw(
        st.lists(
            st.one_of(st.text(chars, min_size=1, max_size=20), st.sampled_from(AWKWARD_FRAGMENTS)),
            max_size=12,
        ).map("".join)
    )
    text = draw(st.sampled_from(_WHITESPACE)) + body + draw(st.sampled_from(_WHITESPACE))
    if draw(st.integers(0, 4)) == 0:  # sometimes a long one, up to the limit
        target = draw(st.integers(min_size, max_size))
        seed_text = text or "x"
        text = (seed_text * (target // len(seed_text) + 1))[:target]
    if len(text) < min_size:
        text = text + "m" * (min_size - len(text))
    return text[:max_size]


@st.composite
def git_branch_name(
    draw: st.DrawFn,
    prefix: st.SearchStrategy[str] | None = None,
    max_length: int = MAX_BRANCH_CHARS,
    alphabet: st.SearchStrategy[str] | None = None,
) -> str:
    """A branch name pgGit accepts: 1-255 chars, no whitespace or control characters.

    Git-like segments joined by ``/``; ``prefix`` (a strategy, e.g. ``st.just(scratch prefix)``)
    is prepended so that the checks can find and remove their branches.
    """
    chars = (
        alphabet
        if alphabet is not None
        else st.one_of(
            st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."),
            st.characters(categories=("L", "N")),
        )
    )
    segment = st.text(chars, min_size=1, max_size=30)
    body = "/".join(draw(st.lists(segment, min_size=1, max_size=4)))
    head = draw(prefix) if prefix is not None else ""
    name = (head + body)[:max_length]
    return name if name.strip() else head + "b"
