"""The invariant checker: a workload's history against what the database holds afterwards.

The engine calls :func:`check_invariants` after recovery (the workload stopped); the durability
tests call it after a crash. It reads pgGit's tables and the catalog with a handful of
set-based queries and reports, Jepsen style, acknowledged operations that are missing
(lost), Trinity IDs stored twice (duplicated), rows nobody invoked (unexpected) and the fate
of every operation whose outcome the client never learned (indeterminate), plus structural
invariants: DDL tracked and in the catalog, schema hashes equal the live ones or reported as
drift, event triggers enabled, branch heads valid, one linear commit chain per run branch.

The same invariants hold for any pgGit: the checker reads the installed pgGit's shape once
(:func:`pggit_chaos.pggit.capabilities`: the embedded core, upstream pgGit, or unknown) and
reads each record where that shape keeps it (history named by its own columns or through
``object_id`` → objects, the recorded hash in ``schema_hash`` or ``content_hash``, the live
object row on branch ``main``, tracking triggers whatever their names). An invariant the shape
gives nothing to check against (no recorded hash, no ``detect_drift()``) is *skipped* with the
reason; one that cannot be evaluated (an SQL error, a shape nobody foresaw) is an *error*: it
violates nothing, and :attr:`InvariantReport.unsure` says why the verdict cannot be Pass.

:func:`cleanup_run` removes everything a run left in the target (schema, branch, commits,
history rows); the engine calls it only when asked to keep the target clean.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import psycopg

from pggit_chaos.engine.history import DDL_FUNCTIONS, History, Pair
from pggit_chaos.engine.workload import (
    commit_message_prefix,
    run_branch,
    run_schema,
    validate_run_id,
)
from pggit_chaos.errors import TargetUnavailable, one_line
from pggit_chaos.pggit import Capabilities, capabilities
from pggit_chaos.sweep import Footprint, purge

#: The embedded core's event triggers (names of the contract); any pgGit must have an enabled
#: trigger calling a pggit function on each of :data:`TRACKING_EVENTS`, whatever its name.
EVENT_TRIGGERS: tuple[str, ...] = ("pggit_ddl_trigger", "pggit_drop_trigger")
#: The events pgGit's tracking needs a trigger on, with the embedded core's trigger for each.
TRACKING_EVENTS: dict[str, str] = {
    "ddl_command_end": "pggit_ddl_trigger",
    "sql_drop": "pggit_drop_trigger",
}
#: How many examples an invariant names.
MAX_EXAMPLES = 5
TRIGGER_DISABLE = "trigger-disable"

_CHANGE_OF = {"create_table": "CREATE", "alter_table": "ALTER", "drop_table": "DROP"}
_QUOTED_IDENT = re.compile(r'"((?:[^"]|"")+)"')


#: ``passed`` / ``failed``: the invariant was evaluated. ``skipped``: the installed pgGit keeps
#: nothing to check it against (no recorded hash, no ``detect_drift()``): no effect on the
#: verdict. ``error``: it could not be evaluated (an SQL error, a shape nobody foresaw): nothing
#: was violated, but the verdict cannot be Pass (:attr:`InvariantReport.unsure`).
Outcome = Literal["passed", "failed", "skipped", "error"]
#: How the message of a skipped or errored invariant starts.
NOT_CHECKED = "not checked: "


@dataclass
class InvariantResult:
    """One invariant: did it hold, why not, and the first examples.

    ``passed`` is False only for a violation; a skipped or errored invariant has ``passed``
    True, an ``outcome`` saying so and a message starting with :data:`NOT_CHECKED`.
    """

    name: str
    passed: bool
    message: str
    examples: list[str] = field(default_factory=list)
    outcome: Outcome | None = None

    def __post_init__(self) -> None:
        if self.outcome is None:
            self.outcome = "passed" if self.passed else "failed"

    @classmethod
    def not_checked(
        cls, name: str, reason: str, *, error: bool, examples: list[str] | None = None
    ) -> InvariantResult:
        """An invariant that was not evaluated: ``error`` (could not be) or skipped (nothing
        to check it against in this pgGit)."""
        return cls(
            name, True, NOT_CHECKED + reason, list(examples or []), "error" if error else "skipped"
        )


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
    #: The installed pgGit the checker read (``Capabilities.describe()``).
    shape: str = ""

    @property
    def passed(self) -> bool:
        c = self.counts
        if c.lost or c.duplicated or c.unexpected:
            return False
        return all(result.passed for result in self.invariants)

    @property
    def failures(self) -> list[InvariantResult]:
        return [result for result in self.invariants if not result.passed]

    @property
    def unsure(self) -> list[str]:
        """Why the verdict cannot be Pass although nothing was violated: one line per invariant
        that could not be evaluated (``error``). The lifecycle makes these Inconclusive."""
        return [f"invariant {r.name} {r.message}" for r in self.invariants if r.outcome == "error"]

    @property
    def skipped(self) -> list[str]:
        """Invariants the installed pgGit gives nothing to check against, with the reason."""
        return [
            f"invariant {r.name} {r.message}" for r in self.invariants if r.outcome == "skipped"
        ]

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
            "shape": self.shape,
            "unsure": self.unsure,
            "skipped": self.skipped,
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


# -- the installed pgGit's shape -------------------------------------------------------------
class _Shape:
    """Where the installed pgGit keeps what the checker reads (from its capabilities, once).

    Every SQL fragment built here is made of fixed names only (never user input).
    """

    def __init__(self, caps: Capabilities) -> None:
        self.caps = caps
        self.name = caps.shape
        self.embedded = caps.embedded
        #: History rows carry the object's names (embedded) or link to objects only by id.
        self.history_names = all(
            caps.has(f"history.{c}") for c in ("schema_name", "object_type", "object_name")
        )
        #: Upstream pgGit trims the spaces around commit messages (documented, no defect).
        self.trims_messages = not caps.embedded
        self.hash_column = caps.hash_column
        sig = caps.signature("detect_drift", 0)
        self.drift_report = sig is not None and {"schema_name", "object_name"} <= set(sig.columns)
        if sig is None:
            self.drift_report_missing = "pgGit has no detect_drift()"
        elif not self.drift_report:
            self.drift_report_missing = (
                f"detect_drift() returns {sig.result}, not (schema_name, object_name, ...)"
            )
        else:
            self.drift_report_missing = ""

    def message(self, text: str | None) -> str:
        """A commit message as this pgGit stores it (trimmed of spaces unless embedded)."""
        text = text or ""
        return text.strip(" ") if self.trims_messages else text

    def live_row_order(self, alias: str = "o") -> str:
        """ORDER BY tail picking an object's live row: the one on ``main``, else the lowest id.

        Upstream pgGit's ``create_branch`` copies every object row into the new branch.
        """
        if self.caps.has("objects.branch_name"):
            return f"({alias}.branch_name IS DISTINCT FROM 'main'), {alias}.id"
        return f"{alias}.id"

    def live_hash_sql(self, schema: str, name: str) -> str | None:
        """SQL computing a table's structure hash now (``schema``/``name``: SQL expressions).

        The embedded core's ``calculate_schema_hash`` takes ``schema.table``; upstream's hashes
        only bare names of schema public, and ``compute_ddl_hash`` any schema's tables.
        """
        qualified = f"pggit.calculate_schema_hash(format('%%I.%%I', {schema}, {name}))"
        by_type = f"pggit.compute_ddl_hash('TABLE', {schema}, {name})"
        calc = self.caps.signature("calculate_schema_hash", 1) is not None
        ddl = self.caps.signature("compute_ddl_hash", 3) is not None
        if calc and (self.embedded or not ddl):
            return qualified
        if calc and ddl:
            return f"coalesce({qualified}, {by_type})"
        return by_type if ddl else None


T = TypeVar("T")

#: What an unforeseen shape makes the checker raise: SQL errors, and data it cannot read.
_SHAPE_ERRORS: tuple[type[Exception], ...] = (
    psycopg.Error,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
)


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
        try:
            caps = capabilities(conn)
        except psycopg.Error as exc:
            raise TargetUnavailable(
                f"invariant checker cannot read the installed pgGit: {one_line(exc)}"
            ) from exc
        return _Checker(conn, pairs, run_id, fault_window, fault_type, _Shape(caps)).run()


class _Checker:
    """One checker pass over one connection."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        pairs: list[Pair],
        run_id: str,
        window: tuple[float, float] | None,
        fault_type: str | None,
        shape: _Shape,
    ) -> None:
        self.conn = conn
        self.shape = shape
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
        #: Hash of the run branch's newest commit (highest id), for "the head is the newest".
        self._newest: str | None = None
        #: Why recorded hashes were not compared with live ones ("" when they were).
        self._hash_unchecked = ""
        #: Tracked live tables of the run without a recorded hash (another pgGit than the
        #: embedded core: not compared).
        self._hashes_unrecorded = 0

    def _guard(self, names: tuple[str, ...], step: Callable[[], T]) -> T | None:
        """Run one step; if the installed pgGit's shape defeats it, the invariants ``names``
        it has not reported yet become ``error`` results (the run cannot Pass), not a crash.

        A connection that died is no shape problem: that stays :class:`TargetUnavailable`.
        """
        try:
            return step()
        except _SHAPE_ERRORS as exc:
            if self.conn.closed or self.conn.broken:
                raise TargetUnavailable(
                    f"invariant checker lost its connection: {one_line(exc)}"
                ) from exc
            reason = (
                f"could not be evaluated against this pgGit ({self.shape.name} shape): "
                f"{type(exc).__name__}: {one_line(exc)[:300]}"
            )
            self._not_evaluated(names, reason)
            return None

    def _not_evaluated(self, names: tuple[str, ...], reason: str) -> None:
        done = {r.name for r in self.results}
        for name in names:
            if name not in done:
                self.results.append(InvariantResult.not_checked(name, reason, error=True))

    def run(self) -> InvariantReport:
        commits = [p for p in self.pairs if p.invoke.f == "commit"]
        ddl = [p for p in self.pairs if p.invoke.f in DDL_FUNCTIONS]
        commit_names = ("commits-durable", "trinity-ids-unique", "no-unexpected-commits")
        run_hashes = self._guard(commit_names, lambda: self._check_commits(commits))
        if run_hashes is None:
            self._not_evaluated(("commit-chain-linear",), "the run's commits could not be read")
        else:
            self._guard(("commit-chain-linear",), lambda: self._check_chain(run_hashes))
        self._guard(("branch-heads-valid",), self._check_branch_heads)
        self._guard(("event-triggers-enabled",), self._check_event_triggers)
        window_names: tuple[str, ...] = ("tracking-window",) if self.window is not None else ()
        ddl_names = ("ddl-tracked", "ddl-in-catalog", "schema-hashes", *window_names)
        catalog = self._guard(ddl_names, self._catalog)
        if catalog is not None:
            self._catalog_tables = catalog
            drift = self._guard(("schema-hashes", *window_names), self._compute_drift)
            untracked_in_window = self._guard(
                ("ddl-tracked", *window_names), lambda: self._check_ddl_history(ddl)
            )
            self._guard(("ddl-in-catalog",), lambda: self._check_catalog(ddl))
            if drift is not None:
                self.drift = drift
                self._guard(("schema-hashes",), lambda: self._check_drift(ddl))
            if self.window is not None and drift is not None and untracked_in_window is not None:
                window_pairs = untracked_in_window
                self._guard(
                    ("tracking-window",),
                    lambda: self._check_tracking_window(ddl, window_pairs),
                )
            self._not_evaluated(ddl_names, "a step it depends on could not be evaluated")
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
            self.shape.caps.describe(),
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
        # Messages are compared as this pgGit stores them (upstream trims spaces), and the
        # prefix is matched on the trimmed text too.
        message_sql = "ltrim(c.message::text, ' ')" if self.shape.trims_messages else "c.message"
        rows = self.conn.execute(
            f"""
            SELECT c.id, c.hash, c.message::text, c.parent_commit_hash, b.name
              FROM pggit.commits c LEFT JOIN pggit.branches b ON b.id = c.branch_id
             WHERE c.branch_id = %s OR c.hash = ANY(%s) OR left({message_sql}, %s) = %s
             ORDER BY c.id
            """,  # noqa: S608 - fixed SQL fragments only
            (branch_id, acked, len(self.prefix), self.prefix),
        ).fetchall()
        by_hash: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
        by_message: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
        run_hashes: dict[str, str | None] = {}
        for cid, chash, raw_message, parent, bname in rows:
            message = self.shape.message(raw_message)
            by_hash[chash].append((cid, message, bname))
            if bname == self.branch or message.startswith(self.prefix):
                by_message[message].append((cid, chash, bname))
            if bname == self.branch:
                run_hashes[chash] = parent
                self._newest = chash  # rows come in id order

        lost = _Findings()
        unexpected = _Findings()
        invoked: dict[str, Pair] = {
            self.shape.message(p.invoke.value["message"]): p for p in commits
        }
        for pair in commits:
            message = self.shape.message(pair.invoke.value["message"])
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
        """One linear chain per run branch, its head at the newest commit.

        A pgGit that keeps no chain at all (every commit a root, the head never moving) fails
        here with that evidence: it is a defect, not a shape to skip.
        """
        problems = _Findings()
        row = self.conn.execute(
            "SELECT head_commit_hash FROM pggit.branches WHERE name = %s", (self.branch,)
        ).fetchone()
        n = len(run_hashes)
        no_chain = False
        head: str | None = None
        if row is None:
            if run_hashes or any(p.invoke.f == "commit" and p.outcome == "ok" for p in self.pairs):
                problems.add(f"branch {self.branch} does not exist")
        else:
            head = row[0]
            roots = [h for h, parent in run_hashes.items() if parent not in run_hashes]
            no_chain = n > 1 and len(roots) == n
            if no_chain:
                orphans = sum(1 for parent in run_hashes.values() if parent is None)
                problems.add(
                    f"commits carry no parent: none of the {n} commits of {self.branch} has "
                    f"its parent among them ({orphans} with parent_commit_hash NULL, e.g. "
                    f"{', '.join(roots[:3])}): pgGit keeps no commit chain"
                )
            if head is None and run_hashes:
                problems.add(
                    f"head never moves: {self.branch} has {n} commits but its head is NULL"
                )
            elif head is not None and head not in run_hashes and run_hashes:
                problems.add(
                    f"head {head} of {self.branch} is not a commit of the branch"
                    + (f": the head never moved in {n} commits" if no_chain else "")
                )
            # Parents outside the branch (where it started) must exist; a missing one is the
            # cause of the forks below, so it is named first.
            parents = {p for p in run_hashes.values() if p is not None and p not in run_hashes}
            if parents:
                present = {
                    r[0]
                    for r in self.conn.execute(
                        "SELECT hash FROM pggit.commits WHERE hash = ANY(%s)", (sorted(parents),)
                    ).fetchall()
                }
                for parent in sorted(parents - present):
                    problems.add(f"parent commit {parent} does not exist")
            if not no_chain:
                self._walk_chain(head, run_hashes, problems)
            if (
                head is not None
                and head in run_hashes
                and self._newest is not None
                and head != self._newest
            ):
                problems.add(
                    f"head {head} of {self.branch} is not its newest commit {self._newest}"
                )
        result = problems.result(
            "commit-chain-linear",
            f"the {n} commits of {self.branch} form one chain from its head",
            "problem(s) in the run branch's commit chain",
        )
        if no_chain:  # say it in the message too: the verdict's reason quotes it
            result.message = (
                f"pgGit keeps no commit chain: the {n} commits of {self.branch} carry no parent"
                + (" and its head never moves" if head not in run_hashes else "")
                + f" ({result.message})"
            )
        self.results.append(result)

    def _walk_chain(
        self, head: str | None, run_hashes: dict[str, str | None], problems: _Findings
    ) -> None:
        """Follow parents from the head: every commit of the branch on the way, no cycle."""
        seen: set[str] = set()
        current = head if head in run_hashes else None
        while current is not None:
            if current in seen:
                problems.add(f"cycle in the parent chain at {current}")
                break
            seen.add(current)
            parent = run_hashes[current]
            current = parent if parent is not None and parent in run_hashes else None
        if head is None or head not in run_hashes:
            return  # already reported: no head, or a head off the branch
        for chash in run_hashes:
            if chash not in seen:
                problems.add(f"commit {chash} is not on the chain from the head (history forks)")

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
        """An enabled trigger calling a pggit function on each tracking event, whatever its name.

        Read from the catalog once, with the shape (``Capabilities.tracking_triggers``).
        """
        problems = _Findings()
        triggers = self.shape.caps.tracking_triggers
        for event, contract_name in TRACKING_EVENTS.items():
            on_event = [t for t in triggers if t.event == event]
            if any(t.enabled for t in on_event):
                continue
            if on_event:
                for trigger in on_event:
                    problems.add(f"event trigger {trigger.name} is disabled")
            elif self.shape.embedded:
                problems.add(f"event trigger {contract_name} is missing")
            else:
                problems.add(f"no event trigger on {event} calls a pggit function")
        names = ", ".join(f"{t.name} ({t.event})" for t in triggers if t.enabled)
        self.results.append(
            problems.result(
                "event-triggers-enabled",
                f"pgGit's event triggers exist and are enabled: {names}",
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
        """Tracked tables against the catalog, and recorded hashes against live ones.

        Tracking vs catalog (``missing``, ``untracked``) needs no hash. A recorded hash is
        compared only where the shape records one: the embedded core always does (NULL there is
        a mismatch); another pgGit's NULL means "not recorded" (upstream leaves
        ``content_hash`` NULL at DDL) and, if every row of the run is NULL, the comparison is
        skipped with the reason (``self._hash_unchecked``).
        """
        shape = self.shape
        recorded_sql = f"o.{shape.hash_column}::text" if shape.hash_column else "NULL::text"
        tracked = self.conn.execute(
            f"""
            SELECT object_name, recorded FROM (
                SELECT DISTINCT ON (o.object_name) o.object_name, {recorded_sql} AS recorded,
                       o.is_active
                  FROM pggit.objects o
                 WHERE o.object_type::text = 'TABLE' AND o.schema_name = %s
                 ORDER BY o.object_name, {shape.live_row_order()}
            ) live
             WHERE is_active ORDER BY object_name
            """,  # noqa: S608 - fixed SQL fragments only
            (self.schema,),
        ).fetchall()
        live_sql = shape.live_hash_sql("n.nspname", "c.relname")
        live: dict[str, str | None] = {name: None for name in self._catalog_tables}
        if live_sql is not None and live:
            live.update(
                self.conn.execute(
                    f"""
                    SELECT c.relname, {live_sql}
                      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
                    """,  # noqa: S608 - fixed SQL fragments only
                    (self.schema,),
                ).fetchall()
            )
        recorded_any = any(recorded is not None for _name, recorded in tracked)
        if shape.hash_column is None:
            self._hash_unchecked = "pggit.objects has no hash column (schema_hash, content_hash)"
        elif live_sql is None:
            self._hash_unchecked = (
                "pgGit has no function computing a table's hash now "
                "(calculate_schema_hash, compute_ddl_hash)"
            )
        elif tracked and not recorded_any and not shape.embedded:
            self._hash_unchecked = (
                f"pggit.objects.{shape.hash_column} is NULL for all {len(tracked)} tracked "
                "table(s) of the run: this pgGit records no hash at DDL"
            )
        drift: list[DriftItem] = []
        tracked_names: set[str] = set()
        for name, recorded in tracked:
            tracked_names.add(name)
            if name not in self._catalog_tables:
                drift.append(DriftItem(self.schema, name, "missing", recorded, None))
                continue
            if self._hash_unchecked:
                continue
            if recorded is None and not shape.embedded:
                self._hashes_unrecorded += 1
                continue
            if recorded != live.get(name):
                drift.append(DriftItem(self.schema, name, "hash-mismatch", recorded, live[name]))
        for name in sorted(set(self._catalog_tables) - tracked_names):
            drift.append(DriftItem(self.schema, name, "untracked", None, live.get(name)))
        return drift

    def _check_ddl_history(self, ddl: list[Pair]) -> list[Pair]:
        """Acknowledged DDL in pggit.history; returns untracked ops inside the window."""
        has_statement = self.shape.caps.has("history.sql_executed")
        statement = "h.sql_executed::text" if has_statement else "NULL::text"
        if self.shape.history_names:
            query = f"""
                SELECT h.id, h.change_type::text, h.object_type::text, h.object_name, {statement}
                  FROM pggit.history h WHERE h.schema_name = %s ORDER BY h.id
            """  # noqa: S608 - fixed SQL fragments only
        else:
            # History names its object only by object_id: read the names on the object's live
            # row (branch main, or the lowest id: upstream copies objects into new branches).
            query = f"""
                SELECT h.id, h.change_type::text, o.object_type::text, o.object_name, {statement}
                  FROM pggit.history h JOIN pggit.objects o ON o.id = h.object_id
                 WHERE o.schema_name = %s
                   AND o.id = (SELECT l.id FROM pggit.objects l
                                WHERE l.object_type = o.object_type
                                  AND l.schema_name = o.schema_name
                                  AND l.object_name = o.object_name
                                ORDER BY {self.shape.live_row_order("l")}
                                LIMIT 1)
                 ORDER BY h.id
            """  # noqa: S608 - fixed SQL fragments only
        rows = self.conn.execute(query, (self.schema,)).fetchall()
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
        """Drift is reported; outside a trigger-disable window it means pgGit lost track.

        Tracking vs catalog is checked on any shape; recorded vs live hashes and pgGit's own
        ``detect_drift()`` report only where the shape has them — otherwise the result says
        what was not checked, and is ``skipped`` when nothing but that was left to check.
        """
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
        unchecked: list[str] = []
        if self._hash_unchecked:
            unchecked.append(f"recorded vs live hash ({self._hash_unchecked})")
        if reported is None:
            unchecked.append(f"pgGit's own drift report ({self.shape.drift_report_missing})")
        explained = len(self.drift) - len(unexplained)
        if self._hash_unchecked:
            ok_message = (
                f"tracking agrees with the catalog for the run's {len(self._catalog_tables)} "
                "table(s)"
                if not self.drift
                else ""
            )
        elif not self.drift:
            ok_message = "recorded schema hashes equal the live ones"
            if self._hashes_unrecorded:
                ok_message += f" ({self._hashes_unrecorded} table(s) record no hash)"
        else:
            ok_message = ""
        if explained:
            ok_message = (
                f"{ok_message}; " if ok_message else ""
            ) + f"{explained} drifted table(s), all from DDL inside the {self.fault_type} window"
        problem = (
            "drift problem(s) (recorded schema hash is not the live one)"
            if not self._hash_unchecked
            else "drift problem(s) (tracking and catalog differ)"
        )
        result = problems.result("schema-hashes", ok_message, problem)
        if result.passed and self._hash_unchecked:
            result = InvariantResult.not_checked(
                "schema-hashes", f"{'; '.join(unchecked)}; {ok_message}", error=False
            )
        elif result.passed and unchecked:
            result.message += f" (not checked: {'; '.join(unchecked)})"
        self.results.append(result)

    def _pggit_reported_drift(self) -> set[str] | None:
        """Tables of the run ``pggit.detect_drift()`` reports; None when the shape has none."""
        if not self.shape.drift_report:
            return None
        return {
            str(r[0])
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
        unverifiable: list[Pair] = []
        for pair in untracked_in_window:
            table = pair.invoke.value["table"]
            if table in drifted:
                continue
            if self._hash_unchecked and pair.invoke.f == "alter_table":
                # Only a recorded hash could show an untracked ALTER of a tracked table.
                unverifiable.append(pair)
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
        result = problems.result(
            "tracking-window",
            f"{len(untracked_in_window)} untracked DDL explained by the window "
            f"({n_inside} acknowledged inside it); "
            f"{len(tracked_after)} of {len(after)} after the window tracked",
            "trigger-disable problem(s)",
        )
        if result.passed and unverifiable:
            result.message += (
                f" (not checked: whether {len(unverifiable)} untracked ALTER(s) show as drift: "
                f"{self._hash_unchecked})"
            )
        self.results.append(result)


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
