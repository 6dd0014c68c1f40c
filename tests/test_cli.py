"""The console script: every error path prints one line on stderr and exits 2; help and validate.

Each test runs the real CLI in a subprocess (``python -m pggit_chaos.cli``) and looks at what
a user sees: the exit code, stderr (one ``pggit-chaos: error: ...`` line, no traceback, no
repr) and stdout (no verdict table for a run that never started).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from pggit_chaos.local import free_port
from pggit_chaos.pggit import health
from pggit_chaos.spec import build_crd
from pggit_chaos.spec.crd import build_schedule_crd

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
PREFIX = "pggit-chaos: error: "
COMMANDS = ("run", "validate", "install-pggit", "cleanup", "crd")
#: What a reader of the CLI must never see.
NEVER = ("Traceback", "internal error", "Error(", "Errno", "\\n", "\\t")


def cli(
    *args: str, env: dict[str, str] | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    extra = {"PGGIT_CHAOS_STATE_DIR": str(tmp / "state")} if tmp else {}
    if tmp and args[:1] == ("run",):
        args = (*args, "--report-dir", str(tmp / "reports"))
    return subprocess.run(
        [sys.executable, "-m", "pggit_chaos.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120", **extra, **(env or {})},
    )


def one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of a failed command; asserts exit 2, the prefix and the needles."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith(PREFIX), line
    for needle in needles:
        assert needle in line, (needle, line)
    for never in NEVER:
        assert never not in result.stderr, (never, result.stderr)
    return line.removeprefix(PREFIX)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def experiment(path: Path, source: str = "01-pod-kill.yaml", **changes: object) -> Path:
    document = yaml.safe_load((EXPERIMENTS / source).read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = document
        for key in parents:
            node = node[key]
        node[last] = value
    return write(path, yaml.safe_dump(document))


def closed_dsn() -> str:
    return f"postgresql://chaos:secret@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"


# -- input errors (no server) --------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ((), ("required: COMMAND", "pggit-chaos --help")),
        (("bogus",), ("invalid choice: 'bogus'",)),
        (("run",), ("give experiment files or folders", "pggit-chaos run --help")),
        (("run", "--bogus", "x.yaml"), ("unrecognized arguments: --bogus",)),
        (("validate",), ("required: FILE|DIR",)),
        (("install-pggit",), ("--dsn",)),
        (("checks", "--seed", "abc"), ("invalid int value", "pggit-chaos checks --help")),
        (("checks", "--category", "property,nonsense"), ("unknown check category 'nonsense'",)),
    ],
)
def test_bad_command_line_is_one_line(args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    one_error_line(cli(*args), *needles)


@pytest.mark.unit
def test_missing_file_names_it_without_errno(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    line = one_error_line(cli("run", str(missing), tmp=tmp_path))
    assert line == f"{missing}: no such file: check the path"


@pytest.mark.unit
def test_yaml_syntax_error_names_the_line_of_the_mistake(tmp_path: Path) -> None:
    text = "metadata:\n  name: x\nspec:\n  fault: {type: pod-kill\n"  # '}' missing on line 4
    broken = write(tmp_path / "broken.yaml", text)
    one_error_line(cli("run", str(broken), tmp=tmp_path), f"{broken}: YAML syntax error at line 4,")


@pytest.mark.unit
def test_bad_field_names_file_and_field(tmp_path: Path) -> None:
    bad = experiment(tmp_path / "bad.yaml", **{"spec.workload.clients": 0})
    line = one_error_line(cli("run", str(bad), tmp=tmp_path))
    assert line.startswith(f"{bad}: spec.workload.clients: must be at least 1"), line
    assert not (tmp_path / "reports").exists(), "nothing runs when a file is invalid"


@pytest.mark.unit
def test_several_problems_one_line_each(tmp_path: Path) -> None:
    bad = experiment(tmp_path / "bad.yaml", **{"spec.duration": "soon", "spec.workload.clients": 0})
    result = cli("run", str(bad), str(tmp_path / "gone.yaml"), tmp=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith(PREFIX) for line in lines), lines
    assert "spec.duration" in lines[0] and "spec.workload.clients" in lines[1]
    assert "gone.yaml: no such file" in lines[2]


@pytest.mark.unit
def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = cli(
        "run",
        "--dry-run",
        str(EXPERIMENTS / "01-pod-kill.yaml"),
        env={"PGGIT_CHAOS_METRICS_PORT": "many"},
        tmp=tmp_path,
    )
    one_error_line(result, "PGGIT_CHAOS_METRICS_PORT=many: input should be a valid integer")


@pytest.mark.unit
def test_unreachable_dsn_is_one_line_in_run_dry_run_and_checks(tmp_path: Path) -> None:
    """The issue's case: a dry run against a closed port printed Python reprs twice."""
    dsn = closed_dsn()
    connection_kill = str(EXPERIMENTS / "06-connection-kill.yaml")
    dry = one_error_line(cli("run", "--dry-run", "--dsn", dsn, connection_kill, tmp=tmp_path))
    real = one_error_line(cli("run", "--quiet", "--dsn", dsn, connection_kill, tmp=tmp_path))
    checks = one_error_line(cli("checks", "--dsn", dsn))
    assert dry == real == checks, (dry, real, checks)
    assert dry.startswith("cannot connect to 127.0.0.1:") and "secret" not in dry
    assert not (tmp_path / "reports").exists(), "a run that cannot start writes no report"


@pytest.mark.unit
def test_dsn_refuses_process_faults_before_connecting(tmp_path: Path) -> None:
    result = cli("run", "--dsn", closed_dsn(), str(EXPERIMENTS / "01-pod-kill.yaml"), tmp=tmp_path)
    one_error_line(
        result, "experiment pod-kill: spec.fault.type: pod-kill needs the embedded PostgreSQL"
    )


@pytest.mark.unit
def test_install_pggit_unreachable_is_one_line_without_password() -> None:
    result = cli("install-pggit", "--dsn", "postgresql://nobody:secret@127.0.0.1:1/none")
    line = one_error_line(result, "127.0.0.1")
    assert "secret" not in line


@pytest.mark.unit
def test_run_that_never_starts_prints_one_line_and_no_table(tmp_path: Path) -> None:
    """An Error before anything was injected: no verdict table, no 'lost/dup: pass'."""
    result = cli(
        "run",
        str(EXPERIMENTS / "01-pod-kill.yaml"),
        env={"PGGIT_CHAOS_PG_BINDIR": str(tmp_path / "no-postgres-here")},
        tmp=tmp_path,
    )
    one_error_line(result, "pod-kill: PGGIT_CHAOS_PG_BINDIR=", "holds no initdb")
    assert "verdict" not in result.stdout.lower() and "lost" not in result.stdout
    assert "report:" not in result.stdout


# -- validate ------------------------------------------------------------------------------------
@pytest.mark.unit
def test_validate_the_shipped_experiments() -> None:
    result = cli("validate", str(EXPERIMENTS))
    count = len(sorted(EXPERIMENTS.glob("*.yaml")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok: {count} experiments in {count} files"
    assert result.stderr == ""


@pytest.mark.unit
def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    experiment(folder / "a.yaml", **{"spec.duration": "soon"})
    experiment(folder / "b.yml", **{"metadata.name": "fine"})
    write(folder / "c.yaml", "spec: [\n")
    result = cli("validate", str(folder), str(tmp_path / "gone.yaml"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        str(folder / "a.yaml"),
        str(folder / "c.yaml"),
        str(tmp_path / "gone.yaml"),
    ]
    assert all(line.startswith(PREFIX) for line in lines)
    assert result.stdout.strip() == (
        "invalid: 3 problems in 3 of 4 files; 1 valid experiment in the others"
    )


@pytest.mark.unit
def test_validate_and_dry_run_skip_other_kinds_with_a_note(tmp_path: Path) -> None:
    """A ConfigMap kept beside the experiments no longer rejects the folder (it did before)."""
    folder = tmp_path / "exp"
    folder.mkdir()
    experiment(folder / "01.yaml")
    write(folder / "config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n")
    note = (f"pggit-chaos: note: {folder / 'config.yaml'}: skipped ConfigMap s (v1): "
            "not a PgGitChaosExperiment")
    result = cli("validate", str(folder))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [note]
    assert result.stdout.strip() == "ok: 1 experiment in 2 files (1 other object skipped)"
    result = cli("run", "--dry-run", str(folder), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == note and "planned (dry run)" in result.stdout
    one_error_line(cli("validate", str(folder / "config.yaml")),
                   "no PgGitChaosExperiment in it (1 other object skipped)")


@pytest.mark.unit
def test_validate_an_empty_folder(tmp_path: Path) -> None:
    one_error_line(cli("validate", str(tmp_path)), f"{tmp_path}: no *.yaml or *.yml file")


def _kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    return write(path, yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "contexts": [{"name": "here", "context": context}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))


@pytest.mark.unit
@pytest.mark.parametrize("ref", [("-n", "default", "connection-kill"),
                                 ("default/connection-kill",),
                                 ("--namespace=default", "connection-kill")])
def test_report_takes_kubectls_forms_and_names_an_unreachable_server(
    tmp_path: Path, ref: tuple[str, ...]
) -> None:
    """``report -n NS NAME`` was refused and an unreachable server printed a raw MaxRetryError;
    now the kubectl forms are taken and the error is one line naming the server."""
    server = f"https://127.0.0.1:{free_port()}"
    config = _kubeconfig(tmp_path / "config", server)
    one_error_line(cli("report", *ref, "--kubeconfig", str(config), "-o", str(tmp_path / "r")),
                   f"cannot reach the Kubernetes API server {server} (connection refused)")
    assert not (tmp_path / "r").exists()
    for never in ("MaxRetryError", "HTTPSConnectionPool", "object at 0x"):
        assert never not in cli("report", *ref, env={"KUBECONFIG": str(config)}).stderr


@pytest.mark.unit
def test_report_without_kubeconfig_says_where_it_looked(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": ""}
    line = one_error_line(cli("report", "default/x", env={**home, "KUBECONFIG": ""}))
    assert line == (
        "no Kubernetes configuration found; looked at $KUBECONFIG (not set), ~/.kube/config "
        f"({tmp_path}/.kube/config: no such file), in-cluster service account "
        "(KUBERNETES_SERVICE_HOST not set: not in a pod): set KUBECONFIG or pass --kubeconfig FILE"
    )
    missing = tmp_path / "nowhere.yaml"
    one_error_line(cli("report", "default/x", env={**home, "KUBECONFIG": str(missing)}),
                   f"$KUBECONFIG={missing} (no such file;")
    one_error_line(cli("report", "x", "--kubeconfig", str(missing), env=home),
                   f"no kubeconfig at --kubeconfig {missing} (no such file)")


@pytest.mark.unit
def test_report_refuses_an_ambiguous_reference(tmp_path: Path) -> None:
    one_error_line(cli("report", "a/b/c"), "give NAME or NAMESPACE/NAME, not 'a/b/c'")
    one_error_line(cli("report", "-n", "prod", "staging/x"),
                   "staging/x names namespace staging, -n says prod: give one")


@pytest.mark.unit
def test_a_name_alone_is_in_the_contexts_namespace(tmp_path: Path) -> None:
    """As kubectl: NAME without -n is in the current context's namespace, else default."""
    from pggit_chaos.kube.client import KubeClient

    server = f"https://127.0.0.1:{free_port()}"
    with_ns = _kubeconfig(tmp_path / "a", server, namespace="staging")
    assert KubeClient.from_environment(str(with_ns)).namespace == "staging"
    assert KubeClient.from_environment(str(_kubeconfig(tmp_path / "b", server))).namespace == (
        "default")


# -- help ----------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_says_what_the_command_does_with_an_example(command: str) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: pggit-chaos {command}".rstrip())
    assert len(description.split()) >= 8, description
    examples = text.split("examples:\n", 1)[1]
    assert examples.startswith(f"  pggit-chaos {command}".rstrip()), examples
    assert "exit codes: 0" in text


@pytest.mark.unit
def test_checks_help() -> None:
    result = cli("checks", "--help")
    assert result.returncode == 0 and "--dsn" in result.stdout


@pytest.mark.unit
def test_validation_loads_no_heavy_package(tmp_path: Path) -> None:
    """What makes `run bad.yaml` answer fast: nothing heavy is imported to validate a file."""
    bad = experiment(tmp_path / "bad.yaml", **{"spec.duration": "soon"})
    code = (
        "import sys\n"
        "from pggit_chaos.cli import main\n"
        f"assert main(['validate', {str(EXPERIMENTS)!r}]) == 0\n"
        f"assert main(['run', {str(bad)!r}]) == 2\n"
        "heavy = ('matplotlib', 'hypothesis', 'psycopg_pool', 'psycopg', 'pytest', 'rich',"
        " 'prometheus_client', 'pggit_chaos.runner', 'pggit_chaos.engine')\n"
        "print('loaded:', *(name for name in heavy if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "loaded:", result.stdout


# -- against a real PostgreSQL -------------------------------------------------------------------
@pytest.mark.postgres
def test_no_pggit_is_worded_the_same_by_run_and_checks(empty_dsn: str, tmp_path: Path) -> None:
    trigger_disable = str(EXPERIMENTS / "08-trigger-disable.yaml")
    run = one_error_line(cli("run", "--quiet", "--dsn", empty_dsn, trigger_disable, tmp=tmp_path))
    checks = one_error_line(cli("checks", "--dsn", empty_dsn))
    assert run == checks, (run, checks)
    assert "has no pgGit" in run and "pggit-chaos install-pggit --dsn" in run


@pytest.mark.postgres
def test_install_pggit_twice_is_harmless_and_healthy(empty_dsn: str) -> None:
    first = cli("install-pggit", "--dsn", empty_dsn)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int)")
    assert "pgGit core " in first.stdout and " installed in 127.0.0.1:" in first.stdout
    second = cli("install-pggit", "--dsn", empty_dsn)
    assert second.returncode == 0, second.stderr
    # Nothing changed: it says so (it said "installed" before).
    assert "already up to date in 127.0.0.1:" in second.stdout, second.stdout
    assert "nothing changed" in second.stdout and " installed" not in second.stdout
    assert {row.status for row in health(empty_dsn)} == {"healthy"}
    with psycopg.connect(empty_dsn, autocommit=True) as conn:  # broken: a repair is a change
        conn.execute("ALTER EVENT TRIGGER pggit_ddl_trigger DISABLE")
    third = cli("install-pggit", "--dsn", empty_dsn)
    assert third.returncode == 0 and " installed in " in third.stdout, third.stdout
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pggit.history WHERE object_name = 'kept'"
        ).fetchone()
    assert rows == (1,), "reinstalling must keep the recorded history"


@pytest.mark.unit
def test_crd_command_prints_the_generated_crds() -> None:
    result = cli("crd")
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load_all(result.stdout)) == [build_crd(), build_schedule_crd()]


@pytest.mark.unit
def test_cleanup_with_nothing_recorded(tmp_path: Path) -> None:
    result = cli("cleanup", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nothing to clean up" in result.stdout


@pytest.mark.unit
def test_a_signal_during_resource_removal_is_held_until_it_is_over() -> None:
    """A second Ctrl-C or a SIGTERM while the run removes its resources waits for the removal
    and is then delivered to the handler there was (it cut close() short before)."""
    import signal

    from pggit_chaos.cli import Terminated, install_signal_handlers
    from pggit_chaos.runner import signals_held

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    install_signal_handlers()
    done: list[str] = []
    try:
        with pytest.raises(Terminated), signals_held():
            signal.raise_signal(signal.SIGTERM)
            done.append("removed")  # reached: the signal did not interrupt the block
        assert done == ["removed"]
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.mark.unit
def test_a_run_gives_back_the_signal_handlers_it_replaced(tmp_path: Path) -> None:
    """After a run, SIGTERM is the CLI's again (it was left at SIG_DFL: a SIGTERM while the
    resources were being removed killed the process outright, leaving them)."""
    import asyncio
    import signal

    from pggit_chaos.cli import _raise_terminated
    from pggit_chaos.engine.lifecycle import Run, execute_until_signalled
    from pggit_chaos.local import StateFile
    from pggit_chaos.local.substrate import LocalSubstrate
    from pggit_chaos.spec import Experiment

    experiment = Experiment.new("dry", {
        "target": {"selector": {"matchLabels": {"app": "pg"}}},
        "fault": {"type": "pod-kill"}, "dryRun": True,
    })
    before = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        run = Run(experiment, LocalSubstrate(StateFile(tmp_path / "state.json")), None)
        asyncio.run(execute_until_signalled(run))
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.unit
def test_an_interrupt_says_what_is_still_recorded(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """'faults reverted, resources removed' only when the state file holds nothing of this
    process (it was printed on every interrupt, whatever was left)."""
    from pggit_chaos.cli import _left_by_this_process
    from pggit_chaos.faults import FaultIntent
    from pggit_chaos.local import StateFile

    monkeypatch.setenv("PGGIT_CHAOS_STATE_DIR", str(tmp_path))
    assert _left_by_this_process() == "faults reverted, resources removed"
    folder = "/tmp/pggit-chaos-pg-0123456789ab/data"
    StateFile.in_dir(tmp_path).record(FaultIntent(
        type="embedded-postgres", target=folder, undo={"kind": "embedded-postgres"}))
    said = _left_by_this_process()
    assert said.startswith("NOT everything was undone") and folder in said, said
    assert said.endswith("run `pggit-chaos cleanup`"), said



def test_report_of_a_schedule_takes_no_run(capsys: pytest.CaptureFixture[str]) -> None:
    from pggit_chaos.cli import main

    code = main(["report", "staging/nightly", "--schedule", "--run", "3f2a"])
    assert code == 2
    assert "--run names a run of an experiment" in capsys.readouterr().err
