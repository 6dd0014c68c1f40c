"""The user's assertions (``spec.verification.assertions``) against a real PostgreSQL.

Each query runs read-only with a statement timeout, as one statement; its single value is
compared as PostgreSQL's text with ``expect``; anything else is "could not evaluate".
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pggit_chaos.engine.assertions import STEADY_STATE, evaluate
from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.spec import load_experiment_object
from pggit_chaos.spec.model import Assertion

pytestmark = pytest.mark.postgres


def assertion(sql: str, expect: str = "0", name: str = "a", **more: Any) -> Assertion:
    return Assertion.model_validate({"name": name, "sql": sql, "expect": expect, **more})


def one(dsn: str, sql: str, expect: str = "0", **more: Any) -> Any:
    (result,) = evaluate(dsn, [assertion(sql, expect, **more)], STEADY_STATE)
    return result


@pytest.fixture
def orders(empty_dsn: str) -> str:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int)")
        conn.execute("INSERT INTO customers VALUES (1), (2)")
        conn.execute("INSERT INTO orders VALUES (10, 1), (11, 2), (12, 3)")
    return empty_dsn


ORPHANS = ("SELECT count(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id "
           "WHERE c.id IS NULL")


def test_a_value_equal_to_expect_passes_and_another_fails_with_the_value(orders: str) -> None:
    held = one(orders, "SELECT count(*) FROM customers", "2")
    assert (held.outcome, held.got) == ("passed", "2")
    broken = one(orders, ORPHANS, "0")
    assert (broken.outcome, broken.got) == ("failed", "1")
    assert broken.line == "assertion a failed at the steady state: got '1', expected '0'"


def test_values_compare_as_postgresql_text(orders: str) -> None:
    assert one(orders, "SELECT true", "t").outcome == "passed"
    assert one(orders, "SELECT 1.50::numeric", "1.50").outcome == "passed"
    assert one(orders, "SELECT 'a%b'::text", "a%b").outcome == "passed"  # '%' is the query's
    null = one(orders, "SELECT NULL::int", "0")
    assert (null.outcome, null.got, null.message) == ("failed", None, "got NULL, expected '0'")


def test_a_write_is_refused_and_could_not_evaluate(orders: str) -> None:
    result = one(orders, "INSERT INTO customers VALUES (99) RETURNING 1", "1")
    assert result.outcome == "error"
    assert "read-only transaction" in result.message, result.message
    assert result.line.startswith("could not evaluate assertion a at the steady state: ")
    with psycopg.connect(orders) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE id = 99").fetchone() == (0,)


def test_a_second_statement_cannot_leave_the_read_only_transaction(orders: str) -> None:
    sneaky = "SELECT 1; COMMIT; INSERT INTO customers VALUES (98); SELECT 1"
    result = one(orders, sneaky, "1")
    assert result.outcome == "error", result
    assert "multiple commands" in result.message
    ended = one(orders, "COMMIT", "1")
    assert ended.outcome == "error"
    with psycopg.connect(orders) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE id = 98").fetchone() == (0,)


def test_the_statement_timeout_holds(orders: str) -> None:
    result = one(orders, "SELECT pg_sleep(5)::text", "", timeout="200ms")
    assert result.outcome == "error"
    assert "statement timeout" in result.message


@pytest.mark.parametrize(("sql", "said"), [
    ("SELECT id FROM customers", "2 row(s) of 1 column(s)"),
    ("SELECT 1, 2", "1 row(s) of 2 column(s)"),
    ("SELECT 1 WHERE false", "0 row(s) of 1 column(s)"),
    ("SELECT * FROM nowhere", 'relation "nowhere" does not exist'),
])
def test_anything_but_one_value_could_not_evaluate(orders: str, sql: str, said: str) -> None:
    result = one(orders, sql)
    assert result.outcome == "error"
    assert said in result.message


def test_each_assertion_is_evaluated_after_one_that_errors(orders: str) -> None:
    results = evaluate(orders, [assertion("SELECT 1/0", name="first"),
                                assertion("SELECT count(*) FROM customers", "2", name="then")],
                       STEADY_STATE)
    assert [(r.name, r.outcome) for r in results] == [("first", "error"), ("then", "passed")]


def test_no_connection_could_not_evaluate() -> None:
    (result,) = evaluate("postgresql://nobody@127.0.0.1:1/x", [assertion("SELECT 1", "1")],
                         STEADY_STATE, connect_timeout=2)
    assert result.outcome == "error" and "no connection" in result.message


def _document(assertions: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos.pggit.io/v1alpha1", "kind": "PgGitChaosExperiment",
        "metadata": {"name": "x"},
        "spec": {"target": {"selector": {"matchLabels": {"app": "pg"}}},
                 "fault": {"type": "connection-kill"},
                 "verification": {"assertions": assertions}},
    }


@pytest.mark.unit
@pytest.mark.parametrize(("assertions", "said"), [
    ([{"name": "a", "sql": "SELECT 1", "expect": "1"},
      {"name": "a", "sql": "SELECT 2", "expect": "2"}], "assertion names must be unique: a"),
    ([{"name": "a", "sql": "  \n", "expect": "1"}], "spec.verification.assertions[0].sql"),
    ([{"name": "a", "sql": "", "expect": "1"}], "spec.verification.assertions[0].sql"),
    ([{"name": "Not A Name", "sql": "SELECT 1", "expect": "1"}],
     "spec.verification.assertions[0].name"),
    ([{"name": "a", "sql": "SELECT 1", "expect": 1}], "spec.verification.assertions[0].expect"),
    ([{"name": "a", "sql": "SELECT 1"}], "spec.verification.assertions[0].expect"),
])
def test_bad_assertions_are_refused(assertions: Any, said: str) -> None:
    with pytest.raises(InvalidExperiment) as error:
        load_experiment_object(_document(assertions))
    assert said in str(error.value)


@pytest.mark.unit
def test_status_and_events_name_the_assertions() -> None:
    from pggit_chaos.engine.journal import AssertionSummary, Journal, Phase
    from pggit_chaos.kube.handlers import event_reasons
    from pggit_chaos.spec.status import ExperimentStatus

    journal = Journal(experiment="x")
    journal.enter_phase(Phase.SteadyState)
    journal.assertions = [
        AssertionSummary(name="held", phase="steady state", outcome="passed", got="0",
                         expect="0"),
        AssertionSummary(name="broke", phase="after recovery", outcome="failed", got="3",
                         expect="0", message="got '3', expected '0'"),
        AssertionSummary(name="broken-sql", phase="steady state", outcome="error", expect="0",
                         message='relation "nowhere" does not exist'),
    ]
    journal.finish(Phase.Failed, journal.assertions[1].line)
    status = ExperimentStatus.model_validate(journal.to_status()).to_patch()
    assert [(a["name"], a["phase"], a["outcome"], a["got"]) for a in status["assertions"]] == [
        ("held", "steady state", "passed", "0"), ("broke", "after recovery", "failed", "3"),
        ("broken-sql", "steady state", "error", None)]
    events = {reason: message for reason, _, message in event_reasons(status, "pod-kill")}
    assert events["AssertionFailed"] == (
        "assertion broke failed after recovery: got '3', expected '0'")
    assert events["AssertionNotEvaluated"] == ('assertion broken-sql could not evaluate at the '
                                               'steady state: relation "nowhere" does not exist')


def test_an_assertion_that_ends_its_connection_does_not_stop_the_next(orders: str) -> None:
    results = evaluate(orders, [
        assertion("SELECT pg_terminate_backend(pg_backend_pid())::text", "t", name="suicide"),
        assertion("SELECT count(*) FROM customers", "2", name="then")], STEADY_STATE)
    assert [(r.name, r.outcome) for r in results] == [("suicide", "error"), ("then", "passed")]
    assert "terminat" in results[0].message, results[0].message


@pytest.mark.unit
def test_assertions_alone_are_something_to_verify() -> None:
    from test_crd import admit

    only = _document([{"name": "a", "sql": "SELECT 1", "expect": "1"}])
    only["spec"]["verification"].update({"checks": [], "invariants": False})
    assert load_experiment_object(only).spec.verification.assertions[0].name == "a"
    admit(only)  # and the API server agrees
    nothing = _document([])
    nothing["spec"]["verification"].update({"checks": [], "invariants": False})
    with pytest.raises(InvalidExperiment, match="nothing to verify"):
        load_experiment_object(nothing)
