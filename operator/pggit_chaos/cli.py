"""The ``pggit-chaos`` command line: the boundary where every error becomes one line and exit 2.

Subcommands: ``run`` (experiments on the embedded PostgreSQL or a ``--dsn``), ``validate``
(experiment files, nothing run), ``checks`` (the verification suite), ``install-pggit``,
``cleanup`` (revert what a crashed run left) and ``crd`` (print the generated
CustomResourceDefinition). Errors print as ``pggit-chaos: error: <what>: <what to do>`` on
stderr (:func:`pggit_chaos.errors.error_lines`), never a traceback or a repr.

Start-up is kept short on purpose: this module imports only the standard library and
:mod:`pggit_chaos.errors`; each command imports what it needs when it runs, so ``--help`` and a
bad experiment file answer before psycopg, matplotlib, hypothesis or rich are loaded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from pggit_chaos import __version__
from pggit_chaos.errors import EXIT_ERROR, PROG, ChaosError, error_line, error_lines, message_of

EXIT_OK, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED = 0, 1, 3, 130

#: The exit codes, as every ``--help`` shows them.
EXIT_CODES = (
    "exit codes: 0 Pass, 1 Fail, 2 invalid input or error (one line on stderr saying what and "
    "what to do), 3 Inconclusive (nothing failed, but the fault did not bite or a check could "
    "not run), 130 interrupted (the fault is reverted and the journal still written)"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (fault revert, cleanup) runs."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def install_signal_handlers() -> None:
    """Make SIGTERM unwind the stack like Ctrl-C does (reverts and cleanup run), and make
    SIGINT do so too when started as a background job (which inherits SIGINT ignored)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)


class UsageError(Exception):
    """A bad command line; argparse's complaint, printed as one error line."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Formatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description or epilog; indented lines (examples) stay as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith("  ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(
                    textwrap.fill(
                        " ".join(paragraph.split()),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                    )
                )
        return "\n\n".join(paragraphs)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and examples kept as written."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def _epilog(*examples: str, codes: bool = True) -> str:
    lines = ["examples:", *(f"  {example}" for example in examples)]
    return "\n".join(lines) + (f"\n\n{EXIT_CODES}" if codes else "")


# -- commands -----------------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    if args.in_cluster:
        if args.files or args.dsn or args.dry_run:
            raise UsageError("--in-cluster takes no files, --dsn or --dry-run (the experiment "
                             "comes from the API, the database from PGGIT_CHAOS_DSN)",
                             f"{PROG} run")
        from pggit_chaos.config import load_settings
        from pggit_chaos.kube.runner import run_in_cluster

        return run_in_cluster(args.in_cluster, args.run_id, load_settings())
    if not args.files:
        raise UsageError("give experiment files or folders (or --in-cluster NAMESPACE/NAME)",
                         f"{PROG} run")
    from pggit_chaos.spec.loader import load_paths

    # Validate every file before importing the runner (psycopg, rich, the engine): a bad file
    # is reported in a fraction of a second.
    notes: list[str] = []
    experiments = load_paths(args.files, notes)
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    from pggit_chaos.runner import run_experiments

    return run_experiments(
        experiments,
        dsn=args.dsn,
        report_dir=args.report_dir,
        dry_run=args.dry_run,
        quiet=args.quiet,
        keep_evidence=args.keep_evidence,
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from pggit_chaos.spec.loader import load_each
    from pggit_chaos.spec.model import KIND

    loaded = load_each(args.files)
    experiments = sum(len(item.experiments) for item in loaded)
    bad = [item for item in loaded if item.error is not None]
    for note in (note for item in loaded for note in item.skipped if experiments or bad):
        print(f"{PROG}: note: {note}", file=sys.stderr)
    for item in bad:
        assert item.error is not None
        for line in error_lines(item.error):
            print(line, file=sys.stderr)
    files = len(loaded)
    noun = "experiment" if experiments == 1 else "experiments"
    in_files = f"in {files} file{'' if files == 1 else 's'}"
    skipped = sum(len(item.skipped) for item in loaded)
    others = f" ({skipped} other object{'' if skipped == 1 else 's'} skipped)" if skipped else ""
    if not bad and experiments:
        print(f"ok: {experiments} {noun} {in_files}{others}")
        return EXIT_OK
    if not bad:
        print(error_line(f"{', '.join(args.files)}: no {KIND} in it{others}"), file=sys.stderr)
        return EXIT_ERROR
    problems = sum(len(item.error.problems) for item in bad if item.error is not None)
    print(
        f"invalid: {problems} problem{'' if problems == 1 else 's'} in {len(bad)} of {files} "
        f"file{'' if files == 1 else 's'}; {experiments} valid {noun} in the others"
    )
    return EXIT_ERROR


def _cmd_install(args: argparse.Namespace) -> int:
    from pggit_chaos.pggit import describe_target, install_or_update

    version, changed = install_or_update(args.dsn)
    where = describe_target(args.dsn)
    if changed:
        print(f"pgGit core {version} installed in {where}")
    else:
        print(f"pgGit core {version} already up to date in {where}: nothing changed")
    return EXIT_OK


def _cmd_checks(args: argparse.Namespace, rest: list[str]) -> int:
    from pggit_chaos.checks.runner import main as checks_main

    return checks_main(rest)


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from pggit_chaos.config import load_settings
    from pggit_chaos.local.cleanup import cleanup
    from pggit_chaos.local.state import StateFile

    state_dir = args.state_dir or load_settings().state_dir
    lines = cleanup(StateFile.in_dir(state_dir), force=args.force)
    if args.dsn:
        from pggit_chaos.target_cleanup import sweep_target

        lines += sweep_target(args.dsn, force=args.force)
    for line in lines:
        print(line)
    if not lines:
        print("nothing to clean up")
    failed = [line for line in lines if line.startswith("FAILED")]
    if failed:
        print(
            error_line(
                f"cleanup: {len(failed)} of {len(lines)} could not be reverted (the FAILED "
                "lines say why): fix that and run `pggit-chaos cleanup` again"
            ),
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def _cmd_crd(args: argparse.Namespace) -> int:
    from pggit_chaos.spec.crd import crds_yaml

    sys.stdout.write(crds_yaml())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Chaos experiments for PostgreSQL databases running pgGit: inject a real fault "
            "while a workload runs, wait for recovery, prove nothing was lost or corrupted."
        ),
        epilog=_epilog(
            "pggit-chaos run experiments/01-pod-kill.yaml",
            "pggit-chaos validate experiments/",
            "pggit-chaos checks --dsn postgresql://me@db/app",
            "pggit-chaos COMMAND --help    # what a command does, its options and examples",
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run experiments (embedded PostgreSQL unless --dsn)",
        description=(
            "Run each experiment: start a throwaway PostgreSQL with pgGit (or use --dsn), run "
            "a workload, inject the fault, revert it, wait for recovery, verify, and print a "
            "verdict per experiment with the folder of its report. Every file is validated "
            "first; a folder stands for its *.yaml and *.yml files in name order. Each outcome "
            "is compared with the one the file expects (annotation chaos.pggit.io/expect; "
            "default Passed): the exit code is 0 when every experiment got what it expects. "
            "Several experiments end with one table (expected, got, time, report) and one "
            "JUnit file in the report folder."
        ),
        epilog=_epilog(
            "pggit-chaos run experiments/01-pod-kill.yaml",
            "pggit-chaos run experiments/              # every experiment, then one table",
            "pggit-chaos run --dry-run experiments/02-cpu-throttle.yaml",
            "pggit-chaos run --dsn postgresql://me@db/app experiments/08-trigger-disable.yaml",
            codes=False,
        )
        + "\n\nexit codes: 0 every experiment got the outcome it expects (Pass, unless its "
        "chaos.pggit.io/expect annotation says otherwise), else the worst of: 1 Fail (or a Pass "
        "where something else was expected), 2 invalid input or error (one line on stderr "
        "saying what and what to do), 3 Inconclusive (nothing failed, but the fault did not "
        "bite or a check could not run); 130 interrupted (the fault is reverted and the "
        "journal still written)",
    )
    run.add_argument(
        "files", nargs="*", metavar="FILE|DIR", help="experiment YAML files or folders of them"
    )
    run.add_argument(
        "--in-cluster", metavar="NAMESPACE/NAME",
        help="run the PgGitChaosExperiment NAMESPACE/NAME inside a cluster (the runner Job's "
        "command; the database DSN comes from PGGIT_CHAOS_DSN)",
    )
    run.add_argument("--run-id", help=argparse.SUPPRESS)
    run.add_argument(
        "--dsn", help="an existing database with pgGit (SQL-level faults only)"
    )
    run.add_argument("--report-dir", help="folder for the report folders (default ./chaos-reports)")
    run.add_argument("--dry-run", action="store_true", help="resolve targets, print the plan only")
    run.add_argument("--quiet", action="store_true", help="no live progress line")
    run.add_argument(
        "--keep-evidence",
        action="store_true",
        help="with --dsn: keep the workload's schema, branch and commits in the target"
        " (by default they are removed once the verdict is recorded)",
    )
    run.set_defaults(handler=_cmd_run)

    validate = sub.add_parser(
        "validate",
        help="check experiment files without running them",
        description=(
            "Validate experiment files as `run` and `kubectl apply` would, without running "
            "anything: every problem of every file, one line each (file, field, reason). "
            "A folder stands for its *.yaml and *.yml files in name order."
        ),
        epilog=_epilog(
            "pggit-chaos validate experiments/",
            "pggit-chaos validate my-experiment.yaml other.yaml",
            codes=False,
        )
        + "\n\nexit codes: 0 every experiment is valid, 2 a problem was found",
    )
    validate.add_argument(
        "files", nargs="+", metavar="FILE|DIR", help="experiment YAML files or folders of them"
    )
    validate.set_defaults(handler=_cmd_validate)

    checks = sub.add_parser(
        "checks",
        add_help=False,
        help="run the verification checks suite (see `pggit-chaos checks --help`)",
    )
    checks.set_defaults(handler=_cmd_checks, passthrough=True)

    install = sub.add_parser(
        "install-pggit",
        help="install or upgrade the pgGit core",
        description=(
            "Install the embedded pgGit core into a database, or upgrade or repair it; "
            "recorded history is kept. Needs a superuser (pgGit creates event triggers)."
        ),
        epilog=_epilog("pggit-chaos install-pggit --dsn postgresql://postgres@db/app", codes=False)
        + "\n\nexit codes: 0 installed or already up to date, 2 error (one line on stderr)",
    )
    install.add_argument("--dsn", required=True, help="libpq connection string or URL")
    install.set_defaults(handler=_cmd_install)

    cleanup = sub.add_parser(
        "cleanup",
        help="revert faults and remove what crashed runs left",
        description=(
            "Revert every fault a crashed or killed run left in place (cgroups, network "
            "namespaces, iptables rules, disabled triggers) and remove its throwaway "
            "PostgreSQL, from the intents recorded in the state folder. With --dsn, also "
            "remove from that database what runs left there: workloads kept with "
            "--keep-evidence or of killed runs (chaos_run_*), scratch areas of killed checks "
            "runs (chaos_check_*), with every pgGit row they caused. Runs that are still "
            "alive are skipped unless --force."
        ),
        epilog=_epilog(
            "pggit-chaos cleanup",
            "pggit-chaos cleanup --dsn postgresql://postgres@db/app",
            "pggit-chaos cleanup --state-dir /var/lib/pggit-chaos --force",
            codes=False,
        )
        + "\n\nexit codes: 0 nothing left, 2 something could not be reverted",
    )
    cleanup.add_argument("--state-dir", help="state folder (default: PGGIT_CHAOS_STATE_DIR)")
    cleanup.add_argument(
        "--dsn", help="also remove what dead or kept runs left in this database"
    )
    cleanup.add_argument(
        "--force", action="store_true", help="also revert intents of runs that are still alive"
    )
    cleanup.set_defaults(handler=_cmd_cleanup)

    crd = sub.add_parser(
        "crd",
        help="print the PgGitChaosExperiment and PgGitChaosSchedule CRDs (from the model)",
        description=(
            "Print the PgGitChaosExperiment and PgGitChaosSchedule CustomResourceDefinitions "
            "as YAML, one document each. They are generated from the same model `run` and "
            "`validate` use, so the API server rejects what they reject."
        ),
        epilog=_epilog("pggit-chaos crd > crd.yaml && kubectl apply -f crd.yaml", codes=False)
        + "\n\nexit codes: 0 printed, 2 error (one line on stderr)",
    )
    crd.set_defaults(handler=_cmd_crd)

    report = sub.add_parser(
        "report",
        help="render the report of an experiment that ran in a cluster",
        description=(
            "Fetch the journal of the PgGitChaosExperiment NAMESPACE/NAME (the ConfigMap its "
            "runner Job wrote) and render summary.md, junit.xml and timeline.png, as a local "
            "run does. As with kubectl: NAME alone is in -n NAMESPACE, else the current "
            "kubeconfig context's namespace, else default."
        ),
        epilog=_epilog("pggit-chaos report staging/primary-pod-kill", codes=False)
        + "\n  pggit-chaos report -n staging primary-pod-kill"
        + "\n  pggit-chaos report staging/primary-pod-kill --run 3f2a9c1b   (a run kept in "
        "status.history)"
        + "\n  pggit-chaos report staging/nightly-failover --schedule   (every run a schedule "
        "keeps, and index.html)"
        + "\n\nexit codes: 0 written, 2 error (one line on stderr)",
    )
    report.add_argument("experiment", metavar="[NAMESPACE/]NAME")
    report.add_argument("-n", "--namespace", help="namespace of NAME (as with kubectl)")
    report.add_argument("--output", "-o", help="folder (default ./chaos-reports/NAMESPACE-NAME, "
                        "with --run: NAMESPACE-NAME-RUN)")
    report.add_argument("--run", help="a run id (or its first characters) of the current run or "
                        "of one in status.history, kept when the experiment was run again "
                        "(chaos.pggit.io/rerun); default: the current run")
    report.add_argument("--schedule", action="store_true",
                        help="NAME is a PgGitChaosSchedule: render each of its runs still kept "
                        "(its history) into a folder of its own, and index.html of them")
    report.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else "
                        "~/.kube/config, else the pod's service account)")
    report.set_defaults(handler=_cmd_report)

    operator = sub.add_parser(
        "operator",
        help="run the kopf operator that runs PgGitChaosExperiments in a cluster",
        description=(
            "Watch PgGitChaosExperiment resources and run each in a runner Job, with the "
            "safety gates, Events and Prometheus metrics of the PGGIT_CHAOS_* settings. "
            "Uses the pod's service account in a cluster, else the kubeconfig."
        ),
        epilog=_epilog("pggit-chaos operator --kubeconfig ~/.kube/config --namespace staging",
                       codes=False),
    )
    operator.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, KUBECONFIG)")
    operator.add_argument("--namespace", action="append", default=[],
                          help="watch only this namespace (repeatable; default: "
                          "PGGIT_CHAOS_NAMESPACES, else all)")
    operator.add_argument("--liveness", help="serve kopf's liveness probe, e.g. "
                          "http://0.0.0.0:8081/healthz")
    operator.set_defaults(handler=_cmd_operator)
    return parser


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pggit_chaos.kube.client import KubeClient
    from pggit_chaos.kube.report import fetch_report

    given_namespace, slash, name = args.experiment.rpartition("/")
    if slash and (not given_namespace or not name or "/" in given_namespace):
        raise UsageError(f"give NAME or NAMESPACE/NAME, not {args.experiment!r}", f"{PROG} report")
    if slash and args.namespace and args.namespace != given_namespace:
        raise UsageError(f"{args.experiment} names namespace {given_namespace}, -n says "
                         f"{args.namespace}: give one", f"{PROG} report")
    if args.schedule and args.run:
        raise UsageError("--run names a run of an experiment: give it without --schedule",
                         f"{PROG} report")
    client = KubeClient.from_environment(args.kubeconfig)
    ref = f"{given_namespace or args.namespace or client.namespace}/{name}"
    default = ref.replace("/", "-") + (f"-{args.run}" if args.run else "")
    folder = Path(args.output or Path("chaos-reports") / default)
    if args.schedule:
        from pggit_chaos.kube.report import fetch_schedule_report

        made = fetch_schedule_report(ref, folder, client)
        print(f"report of schedule {ref}: {made.index} ({len(made.runs)} run(s), each in a "
              f"folder of its own in {folder})")
        if made.unfinished:
            print(f"{PROG}: note: no journal yet for {', '.join(made.unfinished)} (still "
                  "running, or ended before its runner wrote one)", file=sys.stderr)
        return 0
    files = fetch_report(ref, folder, client, run=args.run)
    which = f" run {args.run}" if args.run else ""
    print(f"report of {ref}{which}: {files.html} (and summary.md, timeline.png, junit.xml in "
          f"{folder})")
    if files.history_note:
        print(f"{PROG}: note: {files.history_note}", file=sys.stderr)
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from pggit_chaos.config import load_settings
    from pggit_chaos.kube.operator import run_operator

    return run_operator(load_settings(), kubeconfig=args.kubeconfig,
                        namespaces=args.namespace, liveness=args.liveness)


def _print_error(error: BaseException) -> None:
    for line in error_lines(error):
        print(line, file=sys.stderr)


def _debug() -> bool:
    try:
        from pggit_chaos.config import load_settings

        return load_settings().debug
    except Exception:
        return False


def _left_by_this_process() -> str:
    """What an interrupt left: said only from the state file, never assumed."""
    try:
        from pggit_chaos.config import load_settings
        from pggit_chaos.local.state import StateFile

        state = StateFile.in_dir(load_settings().state_dir)
        left = [e.intent for e in state.entries() if e.owner_pid == os.getpid()]
    except Exception as exc:  # the state file cannot tell: say so, do not claim a revert
        return f"the state file could not be read ({message_of(exc)}): run `{PROG} cleanup`"
    if not left:
        return "faults reverted, resources removed"
    what = ", ".join(f"{intent.type} {intent.target}" for intent in left)
    return (f"NOT everything was undone, still recorded in {state.path}: {what}: "
            f"run `{PROG} cleanup`")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    install_signal_handlers()
    try:
        if args_list[:1] == ["checks"]:
            args, rest = parser.parse_args(args_list[:1]), args_list[1:]
        else:
            args, rest = parser.parse_args(args_list), []
        handler: Callable[..., int] = args.handler
        if getattr(args, "passthrough", False):
            return handler(args, rest)
        return handler(args)
    except UsageError as exc:
        print(error_line(f"{exc}: see `{exc.prog} --help`"), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: {_left_by_this_process()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ChaosError as exc:  # one line per problem, saying what to do
        _print_error(exc)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, the traceback only when asked for
        _print_error(exc)
        if _debug():
            import traceback

            traceback.print_exception(exc)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
