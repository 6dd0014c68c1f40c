"""The invariant checker: a workload's history against what the database holds afterwards.

The engine calls :func:`check_invariants` after recovery (the workload stopped); the durability
tests call it after a crash. It reads pgGit's tables and the catalog with a handful of
set-based queries and reports, Jepsen style, acknowledged operations that are missing
(lost), Trinity IDs stored twice (duplicated), rows nobody invoked (unexpected) and the fate
of every operation whose outcome the client never learned (indeterminate), plus structural
invariants: DDL tracked and in the catalog, schema hashes equal the live ones or reported as
drift, event triggers enabled, branch heads valid, one linear commit chain per run branch.

:func:`cleanup_run` removes everything a run left in the target (schema, branch, commits,
history rows); the engine calls it only when asked to keep the target clean.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from pggit_chaos.engine.history import DDL_FUNCTIONS, History, Pair
from pggit_chaos.engine.workload import (
    commit_message_prefix,
    run_branch,
    run_schema,
    validate_run_id,
)
from pggit_chaos.errors import TargetUnavailable
from pggit_chaos.sweep import Footprint, purge

#: pgGit's event triggers; both must exist and be enabled after an experiment.
EVENT_TRIGGERS: tuple[str, ...] = ("pggit_ddl_trigger", "pggit_drop_trigger")
#: How many examples an invariant names.
MAX_EXAMPLES = 5
TRIGGER_DISABLE = "trigger-disable"

_CHANGE_OF = {"create_table": "CREATE", "alter_table": "ALTER", "drop_table": "DROP"}
_QUOTED_IDENT = re.compile(r'"((?:[^"]|"")+)"')


@dataclass
class InvariantResult:
    """One invariant: did it hold, why not, and the first examples."""

    name: str
    passed: bool
    message: str
    examples: list[str] = field(default_factory=list)


@dataclass
class DriftItem:
    """A tracked table whose recorded hash is not the live one (or tracking and catalog differ).

    ``kind``: ``hash-mismatch`` (recorded != live), ``missing`` (tracked as active but gone
    from the catalog), ``untracked`` (in the catalog but not tracked as active).
    """

    schema: str
    table: str
    kind: str
    recorded_hash: str | None = None
    live_hash: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.schema}.{self.table}: {self.kind} "
            f"(recorded {self.recorded_hash}, live {self.live_hash})"
        )


@dataclass
class IndeterminateOutcome:
    """An operation whose outcome the client never learned, and what the database says."""

    index: int
    process: int
    f: str
    key: str
    present: bool | None
    """True/False: it did/didn't take effect (both legal); None: the database cannot tell."""


@dataclass
class InvariantCounts:
    """The workload counts of the verdict (the journal's ``workload`` block)."""

    invoked: int = 0
    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0


@dataclass
class InvariantReport:
    """Everything the checker found; ``passed`` is the invariant part of the verdict."""

    run_id: str
    counts: InvariantCounts
    invariants: list[InvariantResult]
    drift: list[DriftItem] = field(default_factory=list)
    indeterminate: list[IndeterminateOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        c = self.counts
        if c.lost or c.duplicated or c.unexpected:
            return False
        return all(result.passed for result in self.invariants)

    @property
    def failures(self) -> list[InvariantResult]:
        return [result for result in self.invariants if not result.passed]

    def invariant(self, name: str) -> InvariantResult:
        for result in self.invariants:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "passed": self.passed,
            "counts": asdict(self.counts),
            "invariants": [asdict(result) for result in self.invariants],
            "drift": [asdict(item) for item in self.drift],
            "indeterminate": [asdict(item) for item in self.indeterminate],
        }


# -- small helpers ------------------------------------------------------------------------
class _Findings:
    """Collects problems of one invariant: a count and the first examples."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def result(self, name: str, ok_message: str, problem: str) -> InvariantResult:
        if self.count == 0:
            return InvariantResult(name, True, ok_message)
        return InvariantResult(name, False, f"{self.count} {problem}", list(self.examples))


def _ddl_key(pair: Pair) -> tuple[str, str, str | None]:
    value = pair.invoke.value
    change = _CHANGE_OF[pair.invoke.f]
    return change, value["table"], value.get("column") if change == "ALTER" else None


def _describe(pair: Pair) -> str:
    value = pair.invoke.value
    if pair.invoke.f == "commit":
        result = pair.completion.result if pair.completion is not None else None
        suffix = f" as {result}" if result else ""
        where = f"op {pair.invoke.index}, client {pair.invoke.process}"
        return f"commit {value['message']!r}{suffix} ({where})"
    column = f" column {value['column']}" if "column" in value else ""
    return (
        f"{pair.invoke.f} {value['schema']}.{value['table']}{column} "
        f"(op {pair.invoke.index}, client {pair.invoke.process})"
    )


def _window_position(pair: Pair, window: tuple[float, float]) -> str:
    """``inside``, ``outside`` or ``straddle`` of the fault window (by invoke/complete times)."""
    start, end = window
    begin = pair.invoke.time
    finish = pair.completion.time if pair.completion is not None else float("inf")
    if begin >= start and finish <= end:
        return "inside"
    if finish < start or begin > end:
        return "outside"
    return "straddle"


def _alter_column(sql_text: str | None, known: set[str]) -> str | None:
    """The column an ``ALTER TABLE ... ADD COLUMN "c3"`` statement added, if recognisable."""
    if not sql_text or "ADD COLUMN" not in sql_text.upper():
        return None
    names: list[str] = [str(m).replace('""', '"') for m in _QUOTED_IDENT.findall(sql_text)]
    for name in reversed(names):
        if name in known:
            return name
    return names[-1] if names else None


# -- the checker --------------------------------------------------------------------------
def check_invariants(
    dsn: str,
    history: History,
    run_id: str,
    *,
    fault_window: tuple[float, float] | None = None,
    fault_type: str | None = None,
    connect_timeout: float = 10.0,
) -> InvariantReport:
    """Compare ``history`` with the database at ``dsn`` (run after recovery).

    ``fault_window`` is (start, end) in the history's clock (seconds since its start, as
    ``History.now()`` returns); with ``fault_type == "trigger-disable"`` DDL acknowledged inside
    it may be untracked as long as the difference shows up as drift.
    """
    validate_run_id(run_id)
    pairs = history.pairs()
    try:
        conn = psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(2, int(connect_timeout)),
            application_name="pggit-chaos-invariants",
        )
    except psycopg.Error as exc:
        raise TargetUnavailable(f"invariant checker cannot connect: {exc}") from exc
    with conn:
        conn.execute("SET statement_timeout = '120s'")
        missing = conn.execute(
            "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NULL",
            (["pggit.commits", "pggit.branches", "pggit.objects", "pggit.history"],),
        ).fetchall()
        if missing:
            raise TargetUnavailable(
                "invariant checker: pgGit tables missing: " + ", ".join(r[0] for r in missing)
            )
        return _Checker(conn, pairs, run_id, fault_window, fault_type).run()


class _Checker:
    """One checker pass over one connection."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        pairs: list[Pair],
        run_id: str,
        window: tuple[float, float] | None,
        fault_type: str | None,
    ) -> None:
        self.conn = conn
        self.pairs = pairs
        self.run_id = run_id
        self.schema = run_schema(run_id)
        self.branch = run_branch(run_id)
        self.prefix = commit_message_prefix(run_id)
        self.window = window if fault_type == TRIGGER_DISABLE else None
        self.fault_type = fault_type
        self.lost: set[int] = set()
        self.duplicated = 0
        self.unexpected = 0
        self.results: list[InvariantResult] = []
        self.indeterminate: list[IndeterminateOutcome] = []
        self.drift: list[DriftItem] = []
        self._catalog_tables: dict[str, set[str]] = {}
        self._tracked: set[int] = set()  # indices of acknowledged DDL found in pggit.history

    def run(self) -> InvariantReport:
        commits = [p for p in self.pairs if p.invoke.f == "commit"]
        ddl = [p for p in self.pairs if p.invoke.f in DDL_FUNCTIONS]
        run_hashes = self._check_commits(commits)
        self._check_chain(run_hashes)
        self._check_branch_heads()
        self._check_event_triggers()
        self.drift = self._compute_drift()
        untracked_in_window = self._check_ddl_history(ddl)
        self._check_catalog(ddl)
        self._check_drift(ddl)
        if self.window is not None:
            self._check_tracking_window(ddl, untracked_in_window)
        outcomes = Counter(p.outcome for p in self.pairs)
        counts = InvariantCounts(
            invoked=len(self.pairs),
            ok=outcomes["ok"],
            failed=outcomes["fail"],
            indeterminate=outcomes["info"],
            lost=len(self.lost),
            duplicated=self.duplicated,
            unexpected=self.unexpected,
        )
        return InvariantReport(
            self.run_id,
            counts,
            self.results,
            self.drift,
            sorted(self.indeterminate, key=lambda i: i.index),
        )

    # -- commits ----------------------------------------------------------------------------
    def _check_commits(self, commits: list[Pair]) -> dict[str, str | None]:
        """Lost / duplicated / unexpected commits; returns the run branch's hash → parent."""
        acked = [
            p.completion.result
            for p in commits
            if p.outcome == "ok" and p.completion and p.completion.result
        ]
        branch_row = self.conn.execute(
            "SELECT id FROM pggit.branches WHERE name = %s", (self.branch,)
        ).fetchone()
        branch_id = branch_row[0] if branch_row else None
        rows = self.conn.execute(
            """
            SELECT c.id, c.hash, c.message, c.parent_commit_hash, b.name
              FROM pggit.commits c LEFT JOIN pggit.branches b ON b.id = c.branch_id
             WHERE c.branch_id = %s OR c.hash = ANY(%s) OR left(c.message, %s) = %s
            """,
            (branch_id, acked, len(self.prefix), self.prefix),
        ).fetchall()
        by_hash: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
        by_message: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
        run_hashes: dict[str, str | None] = {}
        for cid, chash, message, parent, bname in rows:
            by_hash[chash].append((cid, message, bname))
            if bname == self.branch or message.startswith(self.prefix):
                by_message[message].append((cid, chash, bname))
            if bname == self.branch:
                run_hashes[chash] = parent

        lost = _Findings()
        unexpected = _Findings()
        invoked: dict[str, Pair] = {p.invoke.value["message"]: p for p in commits}
        for pair in commits:
            message = pair.invoke.value["message"]
            stored = by_message.get(message, [])
            if pair.outcome == "ok":
                result = pair.completion.result if pair.completion else None
                hit = [
                    r
                    for r in by_hash.get(result or "", [])
                    if r[1] == message and r[2] == self.branch
                ]
                if not hit:
                    self.lost.add(pair.invoke.index)
                    where = f"; stored as {stored[0][1]} on branch {stored[0][2]}" if stored else ""
                    lost.add(f"{_describe(pair)}: missing from pggit.commits{where}")
            elif pair.outcome == "fail":
                if stored:
                    self.unexpected += len(stored)
                    unexpected.add(f"{_describe(pair)} failed but is present as {stored[0][1]}")
            else:
                self.indeterminate.append(
                    IndeterminateOutcome(
                        pair.invoke.index, pair.invoke.process, "commit", message, bool(stored)
                    )
                )
        for message, stored in by_message.items():
            if message not in invoked:
                self.unexpected += len(stored)
                unexpected.add(f"commit {stored[0][1]} with message {message!r} was never invoked")
                continue
            for _cid, chash, bname in stored:
                if bname != self.branch:
                    self.unexpected += 1
                    unexpected.add(
                        f"commit {chash} ({message!r}) is on branch {bname}, not {self.branch}"
                    )

        # Duplicates: any Trinity ID stored twice (anywhere), or one invocation stored twice.
        dup = _Findings()
        extra: set[int] = set()
        for chash, ids in self.conn.execute(
            "SELECT hash, array_agg(id ORDER BY id) FROM pggit.commits"
            " GROUP BY hash HAVING count(*) > 1"
        ).fetchall():
            extra.update(ids[1:])
            dup.add(f"Trinity ID {chash} stored {len(ids)} times")
        for message, stored in by_message.items():
            if len(stored) > 1 and message in invoked:
                ids = sorted(cid for cid, _h, _b in stored)
                extra.update(ids[1:])
                dup.add(f"commit {message!r} invoked once, stored {len(stored)} times")
        self.duplicated += len(extra)

        n_ok = sum(1 for p in commits if p.outcome == "ok")
        self.results.append(
            lost.result(
                "commits-durable",
                f"all {n_ok} acknowledged commits are in pggit.commits",
                "acknowledged commit(s) lost",
            )
        )
        self.results.append(
            dup.result(
                "trinity-ids-unique", "no Trinity ID or commit is stored twice", "duplicate(s)"
            )
        )
        self.results.append(
            unexpected.result(
                "no-unexpected-commits",
                "every stored commit of the run was invoked",
                "unexpected commit(s)",
            )
        )
        return run_hashes

    def _check_chain(self, run_hashes: dict[str, str | None]) -> None:
        problems = _Findings()
        row = self.conn.execute(
            "SELECT head_commit_hash FROM pggit.branches WHERE name = %s", (self.branch,)
        ).fetchone()
        if row is None:
            if run_hashes or any(p.invoke.f == "commit" and p.outcome == "ok" for p in self.pairs):
                problems.add(f"branch {self.branch} does not exist")
        else:
            head = row[0]
            seen: set[str] = set()
            current = head if head in run_hashes else None
            if head is not None and head not in run_hashes and run_hashes:
                problems.add(f"head {head} of {self.branch} is not a commit of the branch")
            if head is None and run_hashes:
                problems.add(f"{self.branch} has {len(run_hashes)} commits but no head")
            root_parent: str | None = None
            while current is not None:
                if current in seen:
                    problems.add(f"cycle in the parent chain at {current}")
                    break
                seen.add(current)
                parent = run_hashes[current]
                if parent is not None and parent in run_hashes:
                    current = parent
                else:
                    root_parent = parent
                    current = None
            off_chain = [h for h in run_hashes if h not in seen]
            for chash in off_chain:
                problems.add(f"commit {chash} is not on the chain from the head (history forks)")
            parents = {p for p in run_hashes.values() if p is not None and p not in run_hashes}
            if root_parent is not None:
                parents.add(root_parent)
            if parents:
                present = {
                    r[0]
                    for r in self.conn.execute(
                        "SELECT hash FROM pggit.commits WHERE hash = ANY(%s)", (sorted(parents),)
                    ).fetchall()
                }
                for parent in sorted(parents - present):
                    problems.add(f"parent commit {parent} does not exist")
        self.results.append(
            problems.result(
                "commit-chain-linear",
                f"the {len(run_hashes)} commits of {self.branch} form one chain from its head",
                "problem(s) in the run branch's commit chain",
            )
        )

    def _check_branch_heads(self) -> None:
        problems = _Findings()
        for name, head in self.conn.execute(
            """
            SELECT b.name, b.head_commit_hash FROM pggit.branches b
             WHERE b.head_commit_hash IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM pggit.commits c WHERE c.hash = b.head_commit_hash)
             ORDER BY b.name
            """
        ).fetchall():
            problems.add(f"branch {name} points at missing commit {head}")
        self.results.append(
            problems.result(
                "branch-heads-valid",
                "every branch head points at an existing commit",
                "branch head(s) point at missing commits",
            )
        )

    def _check_event_triggers(self) -> None:
        problems = _Findings()
        found = dict(
            self.conn.execute(
                "SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname = ANY(%s)",
                (list(EVENT_TRIGGERS),),
            ).fetchall()
        )
        for name in EVENT_TRIGGERS:
            if name not in found:
                problems.add(f"event trigger {name} is missing")
            elif found[name] == "D":
                problems.add(f"event trigger {name} is disabled")
        self.results.append(
            problems.result(
                "event-triggers-enabled",
                "pgGit's event triggers exist and are enabled",
                "event trigger problem(s)",
            )
        )

    # -- DDL --------------------------------------------------------------------------------
    def _catalog(self) -> dict[str, set[str]]:
        """Live tables of the run schema and their columns."""
        rows = self.conn.execute(
            """
            SELECT c.relname, coalesce(array_agg(a.attname::text) FILTER (WHERE a.attnum > 0), '{}')
              FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
             GROUP BY c.relname
            """,
            (self.schema,),
        ).fetchall()
        return {name: set(cols) for name, cols in rows}

    def _compute_drift(self) -> list[DriftItem]:
        tracked = self.conn.execute(
            """
            SELECT o.object_name, o.schema_hash,
                   CASE WHEN c.oid IS NULL THEN NULL
                        ELSE pggit.calculate_schema_hash(
                                 format('%%I.%%I', o.schema_name, o.object_name))
                   END
              FROM pggit.objects o
              LEFT JOIN pg_namespace n ON n.nspname = o.schema_name
              LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = o.object_name
                                  AND c.relkind IN ('r', 'p')
             WHERE o.is_active AND o.object_type = 'TABLE' AND o.schema_name = %s
             ORDER BY o.object_name
            """,
            (self.schema,),
        ).fetchall()
        self._catalog_tables = self._catalog()
        drift: list[DriftItem] = []
        tracked_names: set[str] = set()
        for name, recorded, live in tracked:
            tracked_names.add(name)
            if live is None:
                drift.append(DriftItem(self.schema, name, "missing", recorded, None))
            elif recorded != live:
                drift.append(DriftItem(self.schema, name, "hash-mismatch", recorded, live))
        for name in sorted(set(self._catalog_tables) - tracked_names):
            live = self.conn.execute(
                "SELECT pggit.calculate_schema_hash(format('%%I.%%I', %s::text, %s::text))",
                (self.schema, name),
            ).fetchone()
            drift.append(DriftItem(self.schema, name, "untracked", None, live[0] if live else None))
        return drift

    def _check_ddl_history(self, ddl: list[Pair]) -> list[Pair]:
        """Acknowledged DDL in pggit.history; returns untracked ops inside the window."""
        rows = self.conn.execute(
            """
            SELECT id, change_type, object_type, object_name, sql_executed
              FROM pggit.history WHERE schema_name = %s ORDER BY id
            """,
            (self.schema,),
        ).fetchall()
        columns_by_table: dict[str, set[str]] = defaultdict(set)
        for pair in ddl:
            if pair.invoke.f == "alter_table":
                columns_by_table[pair.invoke.value["table"]].add(pair.invoke.value["column"])
        invoked_keys = Counter(_ddl_key(p) for p in ddl)
        row_keys: Counter[tuple[str, str, str | None]] = Counter()
        unknown_alters: Counter[str] = Counter()  # ALTER rows whose column we cannot tell
        lost = _Findings()
        unexpected = _Findings()
        dup = _Findings()
        for rid, change, otype, name, statement in rows:
            if otype != "TABLE":
                self.unexpected += 1
                unexpected.add(
                    f"history row {rid}: {change} {otype} {self.schema}.{name} never invoked"
                )
                continue
            column = None
            if change == "ALTER":
                column = _alter_column(statement, columns_by_table.get(name, set()))
                if column is None:
                    unknown_alters[name] += 1
                    continue
            row_keys[(change, name, column)] += 1
        # ALTER rows without a recognisable column (e.g. no sql_executed): match by count.
        for name, n in unknown_alters.items():
            candidates = sorted(
                (k for k in invoked_keys if k[0] == "ALTER" and k[1] == name and row_keys[k] == 0),
                key=lambda k: k[2] or "",
            )
            for key in candidates[:n]:
                row_keys[key] += 1
            if n > len(candidates):
                self.unexpected += n - len(candidates)
                unexpected.add(
                    f"{n - len(candidates)} ALTER row(s) of {self.schema}.{name} never invoked"
                )

        untracked_in_window: list[Pair] = []
        for pair in ddl:
            key = _ddl_key(pair)
            found = row_keys.get(key, 0)
            outcome = pair.outcome
            if found > 1:
                self.duplicated += found - 1
                dup.add(f"{_describe(pair)} recorded {found} times in pggit.history")
            if outcome == "ok":
                if found:
                    self._tracked.add(pair.invoke.index)
                    continue
                position = _window_position(pair, self.window) if self.window else "outside"
                if position == "outside" and self._never_tracked_drop(pair, key, row_keys, ddl):
                    untracked_in_window.append(pair)  # a consequence of the window
                elif position == "outside":
                    self.lost.add(pair.invoke.index)
                    lost.add(f"{_describe(pair)}: acknowledged but not in pggit.history")
                else:
                    untracked_in_window.append(pair)
            elif outcome == "fail":
                if found:
                    self.unexpected += found
                    unexpected.add(f"{_describe(pair)} failed but is recorded in pggit.history")
            else:
                self.indeterminate.append(
                    IndeterminateOutcome(
                        pair.invoke.index,
                        pair.invoke.process,
                        pair.invoke.f,
                        f"{key[0]} {self.schema}.{key[1]}" + (f" {key[2]}" if key[2] else ""),
                        found > 0,
                    )
                )
        for key, n in row_keys.items():
            if key not in invoked_keys:
                self.unexpected += n
                column = f" column {key[2]}" if key[2] else ""
                unexpected.add(f"history: {key[0]} {self.schema}.{key[1]}{column} never invoked")

        n_ok = sum(1 for p in ddl if p.outcome == "ok")
        result = lost.result(
            "ddl-tracked",
            f"all {n_ok} acknowledged DDL operations are in pggit.history",
            "acknowledged DDL operation(s) missing from pggit.history",
        )
        extra = [*unexpected.examples, *dup.examples]
        if unexpected.count or dup.count:
            result = InvariantResult(
                "ddl-tracked",
                False,
                "; ".join(
                    filter(
                        None,
                        [
                            result.message if not result.passed else "",
                            f"{unexpected.count} unexpected history row(s)"
                            if unexpected.count
                            else "",
                            f"{dup.count} duplicated history row(s)" if dup.count else "",
                        ],
                    )
                ),
                (result.examples + extra)[:MAX_EXAMPLES]
                if not result.passed
                else extra[:MAX_EXAMPLES],
            )
        self.results.append(result)
        return untracked_in_window

    def _never_tracked_drop(
        self,
        pair: Pair,
        key: tuple[str, str, str | None],
        row_keys: Counter[tuple[str, str, str | None]],
        ddl: list[Pair],
    ) -> bool:
        """A DROP of a table pgGit never knew (created inside the window): nothing to record.

        pgGit writes a DROP row only for a tracked object; a table created while the triggers
        were off and never altered since is not tracked, so its later DROP leaves no row.
        """
        if self.window is None or key[0] != "DROP":
            return False
        table = key[1]
        if any(k[1] == table and k[0] in ("CREATE", "ALTER") and n for k, n in row_keys.items()):
            return False
        return any(
            p.invoke.value["table"] == table
            and p.invoke.index < pair.invoke.index
            and _window_position(p, self.window) != "outside"
            for p in ddl
        )

    def _check_catalog(self, ddl: list[Pair]) -> None:
        """Acknowledged DDL reflected in the catalog; failed DDL not."""
        live = self._catalog_tables
        state: dict[str, bool | None] = {}
        first_op: dict[str, Pair] = {}
        added: dict[str, set[str]] = defaultdict(set)
        failed_columns: dict[str, set[str]] = defaultdict(set)
        for pair in sorted(ddl, key=lambda p: p.invoke.index):
            value = pair.invoke.value
            table = value["table"]
            first_op.setdefault(table, pair)
            outcome = pair.outcome
            f = pair.invoke.f
            if f == "create_table":
                if outcome == "ok":
                    state[table] = True
                elif outcome == "info":
                    state[table] = None
                else:
                    state.setdefault(table, False)
            elif f == "drop_table":
                if outcome == "ok":
                    state[table] = False
                elif outcome == "info":
                    state[table] = None
            elif f == "alter_table":
                if outcome == "ok":
                    added[table].add(value["column"])
                elif outcome == "fail":
                    failed_columns[table].add(value["column"])
        problems = _Findings()
        for table, exists in sorted(state.items()):
            if exists is True:
                if table not in live:
                    self.lost.add(first_op[table].invoke.index)
                    problems.add(
                        f"table {self.schema}.{table} was created (acknowledged) but is missing"
                    )
                    continue
                for column in sorted(added[table] - live[table]):
                    alter = next(
                        p
                        for p in ddl
                        if p.invoke.f == "alter_table"
                        and p.invoke.value["table"] == table
                        and p.invoke.value["column"] == column
                    )
                    self.lost.add(alter.invoke.index)
                    problems.add(
                        f"column {column} of {self.schema}.{table} was added (acknowledged) "
                        "but is missing"
                    )
            elif exists is False and table in live:
                self.unexpected += 1
                problems.add(
                    f"table {self.schema}.{table} should not exist "
                    "(dropped or never created) but does"
                )
            if table in live:
                for column in sorted(failed_columns[table] & live[table]):
                    self.unexpected += 1
                    problems.add(
                        f"column {column} of {self.schema}.{table} failed to be added but exists"
                    )
        invoked_tables = {p.invoke.value["table"] for p in ddl}
        for table in sorted(set(live) - invoked_tables):
            self.unexpected += 1
            problems.add(
                f"table {self.schema}.{table} exists but was never created by the workload"
            )
        self.results.append(
            problems.result(
                "ddl-in-catalog",
                "the catalog reflects every acknowledged DDL operation",
                "catalog problem(s)",
            )
        )

    def _check_drift(self, ddl: list[Pair]) -> None:
        """Drift is reported; outside a trigger-disable window it means pgGit lost track."""
        allowed: set[str] = set()
        if self.window is not None:
            allowed = {
                p.invoke.value["table"]
                for p in ddl
                if _window_position(p, self.window) in ("inside", "straddle")
            }
        unexplained = [d for d in self.drift if d.table not in allowed]
        problems = _Findings()
        for item in unexplained:
            problems.add(str(item))
        reported = self._pggit_reported_drift()
        if reported is not None:
            for item in self.drift:
                if item.kind == "hash-mismatch" and item.table not in reported:
                    problems.add(f"{item}: not reported by pggit.detect_drift()")
        explained = len(self.drift) - len(unexplained)
        ok_message = (
            "recorded schema hashes equal the live ones"
            if not self.drift
            else f"{explained} drifted table(s), all from DDL inside the {self.fault_type} window"
        )
        self.results.append(
            problems.result(
                "schema-hashes",
                ok_message,
                "drift problem(s) (recorded schema hash is not the live one)",
            )
        )

    def _pggit_reported_drift(self) -> set[str] | None:
        exists = self.conn.execute(
            "SELECT to_regprocedure('pggit.detect_drift()') IS NOT NULL"
        ).fetchone()
        if not exists or not exists[0]:
            return None
        return {
            r[0]
            for r in self.conn.execute(
                "SELECT object_name FROM pggit.detect_drift() WHERE schema_name = %s",
                (self.schema,),
            ).fetchall()
        }

    def _check_tracking_window(self, ddl: list[Pair], untracked_in_window: list[Pair]) -> None:
        """trigger-disable: untracked DDL shows as drift, tracking works again after revert."""
        assert self.window is not None
        problems = _Findings()
        drifted = {d.table for d in self.drift}
        for pair in untracked_in_window:
            table = pair.invoke.value["table"]
            if table in drifted:
                continue
            # No drift left for the table: fine only if nothing of it diverges any more
            # (created and dropped inside the window, or re-tracked by a later DDL).
            later_tracked = any(
                p.invoke.value["table"] == table
                and p.outcome == "ok"
                and p.invoke.time > self.window[1]
                and p.invoke.index > pair.invoke.index
                for p in ddl
            )
            gone = table not in self._catalog_tables
            if not (later_tracked or gone):
                problems.add(
                    f"{_describe(pair)}: untracked inside the window and not reported as drift"
                )
        after = [
            p
            for p in ddl
            if p.outcome == "ok"
            and _window_position(p, self.window) == "outside"
            and p.invoke.time > self.window[1]
        ]
        tracked_after = [p for p in after if p.invoke.index in self._tracked]
        if after and not tracked_after:
            problems.add(
                f"none of the {len(after)} acknowledged DDL operations after the window was tracked"
            )
        n_inside = sum(
            1 for p in ddl if p.outcome == "ok" and _window_position(p, self.window) == "inside"
        )
        self.results.append(
            problems.result(
                "tracking-window",
                f"{len(untracked_in_window)} untracked DDL explained by the window "
                f"({n_inside} acknowledged inside it); "
                f"{len(tracked_after)} of {len(after)} after the window tracked",
                "trigger-disable problem(s)",
            )
        )


# -- cleanup --------------------------------------------------------------------------------
def cleanup_run(dsn: str, run_id: str, *, connect_timeout: float = 10.0) -> Footprint:
    """Remove the run's schema, branch, commits and every pgGit row naming or hanging off them.

    One transaction, through :func:`pggit_chaos.sweep.purge`, so it works on any pgGit's
    shape (upstream pgGit copies objects into branches and logs DDL in side tables).
    """
    validate_run_id(run_id)
    try:
        conn = psycopg.connect(dsn, connect_timeout=max(2, int(connect_timeout)), autocommit=True)
    except psycopg.Error as exc:
        raise TargetUnavailable(f"cleanup cannot connect: {exc}") from exc
    with conn:
        conn.execute("SET statement_timeout = '120s'")
        return purge(conn, run_schema(run_id))


__all__ = [
    "EVENT_TRIGGERS",
    "DriftItem",
    "IndeterminateOutcome",
    "InvariantCounts",
    "InvariantReport",
    "InvariantResult",
    "check_invariants",
    "cleanup_run",
]
