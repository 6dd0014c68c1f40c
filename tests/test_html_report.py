"""``report.html`` (one run, self-contained) and ``index.html`` (the runs of a report folder)."""

from __future__ import annotations

import base64
import copy
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pggit_chaos.engine.html_report import render_report, write_index
from pggit_chaos.engine.journal import AssertionSummary, Journal
from pggit_chaos.engine.report import write_report
from test_report import make_journal

pytestmark = pytest.mark.unit

SCRIPT = "<script>alert('x')</script>"


class _Resources(HTMLParser):
    """Every URL the page would load (src, href of stylesheets) and the tags it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag in ("img", "script", "iframe") and values.get("src"):
            self.loads.append(str(values["src"]))
        if tag == "link":
            self.loads.append(str(values.get("href")))


def _parse(text: str) -> _Resources:
    parser = _Resources()
    parser.feed(text)
    return parser


@pytest.mark.parametrize("verdict", ["Pass", "Fail"])
def test_report_html_is_self_contained_and_says_what_summary_says(
        tmp_path: Path, verdict: str) -> None:
    journal = make_journal(verdict)
    files = write_report(journal, tmp_path / "run")
    assert files.html == tmp_path / "run" / "report.html"
    page = files.html.read_text()
    parsed = _parse(page)
    # Nothing is fetched from elsewhere: the picture is inside, as the PNG written beside it.
    (image,) = parsed.loads
    assert image.startswith("data:image/png;base64,")
    assert base64.b64decode(image.split(",", 1)[1]) == files.timeline.read_bytes()
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert f">{verdict.upper()}<" in page
    assert journal.experiment in page
    assert "The fault bit" in page and "crash recovery ran" in page
    assert "Healthy again after" in page
    assert 'href="summary.md"' in page and 'href="journal.json"' in page
    if verdict == "Fail":
        assert "test_trinity_unique" in page and "duplicate trinity id" in page
        assert "pggit-chaos checks --dsn &#34;$DSN&#34; --seed 424242" in page
        assert "commit c2-0017" in page  # the invariant's examples
    # summary.md links the page.
    assert "[report.html](report.html)" in files.summary.read_text()


def test_names_messages_and_sql_are_escaped(tmp_path: Path) -> None:
    journal = make_journal("Fail")
    journal.experiment = SCRIPT
    journal.reason = f"assertion x failed after recovery: got '{SCRIPT}', expected '0'"
    spec = copy.deepcopy(journal.spec)
    spec.setdefault("spec", {}).setdefault("verification", {})["assertions"] = [
        {"name": "x", "sql": f"SELECT '{SCRIPT}'", "expect": "0"}]
    journal.spec = spec
    journal.assertions = [
        AssertionSummary(name="x", phase="steady state", outcome="passed", got="0", expect="0"),
        AssertionSummary(name="x", phase="after recovery", outcome="failed", got=SCRIPT,
                         expect="0", message=f"got '{SCRIPT}', expected '0'")]
    page = render_report(journal, b"\x89PNG", ["summary.md"])
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert page.count("&lt;script&gt;") >= 4  # title, heading, reason, assertion, its SQL
    assert "script" not in _parse(page).tags
    # The index escapes too.
    write_report(journal, tmp_path / "run")
    index = write_index(tmp_path).read_text()
    assert "<script" not in index and "&lt;script&gt;" in index


def test_the_assertions_table_shows_each_moment(tmp_path: Path) -> None:
    journal = make_journal("Pass")
    journal.assertions = [
        AssertionSummary(name="orders-have-customers", phase="steady state", outcome="passed",
                         got="0", expect="0"),
        AssertionSummary(name="orders-have-customers", phase="after recovery",
                         outcome="error", expect="0", message="canceling statement due to "
                         "statement timeout")]
    page = render_report(journal, None)
    row = re.search(r"<tr><td><code>orders-have-customers</code></td>(.*?)</tr>", page, re.S)
    assert row is not None
    cells = re.findall(r"<td class=\"(\w+)\">([^<]*)</td>", row.group(1))
    assert cells == [("passed", "✅ held"), ("error", "⚠️ could not evaluate")]
    assert "after recovery: canceling statement due to statement timeout" in row.group(1)
    assert "no timeline picture" in page


def test_index_lists_every_run_newest_first(tmp_path: Path) -> None:
    older, newer = make_journal("Pass"), make_journal("Fail")
    assert older.started_at is not None
    newer.started_at = older.started_at + timedelta(hours=1)
    write_report(older, tmp_path / "a-older")
    write_report(newer, tmp_path / "b-newer")
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "journal.json").write_text("{", encoding="utf-8")
    index = write_index(tmp_path)
    assert index == tmp_path / "index.html"
    page = index.read_text()
    links = re.findall(r'<a href="([^"]+)">', page)
    assert links == ["b-newer/report.html", "a-older/report.html"]
    assert "2 run(s) in this folder" in page
    assert "1 FAIL, 1 PASS" in page
    assert Journal.from_json((tmp_path / "b-newer" / "journal.json").read_text()) == newer
