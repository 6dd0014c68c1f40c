"""The ``pggit-chaos`` command line: the boundary where errors become one line and exit code 2.

Subcommands: ``run`` (experiments on the embedded PostgreSQL or a ``--dsn``), ``checks`` (the
verification suite), ``install-pggit``, ``cleanup`` (revert what a crashed run left) and ``crd``
(print the generated CustomResourceDefinition).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from rich.console import Console

from pggit_chaos import __version__
from pggit_chaos.errors import ChaosError

EXIT_OK, EXIT_FAIL, EXIT_ERROR = 0, 1, 2

err_console = Console(stderr=True, highlight=False)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (fault revert, cleanup) runs."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def install_signal_handlers() -> None:
    """Make SIGTERM unwind the stack like Ctrl-C does (reverts and cleanup run)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _cmd_install(args: argparse.Namespace) -> int:
    from pggit_chaos.pggit import install

    version = install(args.dsn)
    print(f"pgGit core {version} installed")
    return EXIT_OK


def _cmd_checks(args: argparse.Namespace, rest: list[str]) -> int:
    from pggit_chaos.checks.runner import main as checks_main

    return checks_main(rest)


def _cmd_run(args: argparse.Namespace) -> int:
    from pggit_chaos.runner import run_files

    return run_files(
        args.files,
        dsn=args.dsn,
        report_dir=args.report_dir,
        dry_run=args.dry_run,
        quiet=args.quiet,
    )


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from pggit_chaos.config import load_settings
    from pggit_chaos.faults.cleanup import cleanup
    from pggit_chaos.faults.state import StateFile

    state_dir = args.state_dir or load_settings().state_dir
    lines = cleanup(StateFile.in_dir(state_dir), force=args.force)
    for line in lines:
        print(line)
    if not lines:
        print("nothing to clean up")
    return EXIT_ERROR if any(line.startswith("FAILED") for line in lines) else EXIT_OK


def _cmd_crd(args: argparse.Namespace) -> int:
    import yaml

    from pggit_chaos.spec import build_crd

    sys.stdout.write(yaml.safe_dump(build_crd(), sort_keys=False))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pggit-chaos",
        description="Chaos experiments for PostgreSQL with pgGit: real faults, a verdict.",
    )
    parser.add_argument("--version", action="version", version=f"pggit-chaos {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run experiments (embedded PostgreSQL unless --dsn)")
    run.add_argument("files", nargs="+", metavar="FILE", help="experiment YAML files")
    run.add_argument("--dsn", help="an existing database with pgGit (SQL-level faults only)")
    run.add_argument("--report-dir", help="folder for the report folders (default ./chaos-reports)")
    run.add_argument("--dry-run", action="store_true", help="resolve targets, print the plan only")
    run.add_argument("--quiet", action="store_true", help="no live progress line")
    run.set_defaults(handler=_cmd_run)

    checks = sub.add_parser(
        "checks", add_help=False, help="run the verification checks (see `checks --help`)"
    )
    checks.set_defaults(handler=_cmd_checks, passthrough=True)

    install = sub.add_parser("install-pggit", help="install or upgrade the pgGit core")
    install.add_argument("--dsn", required=True, help="libpq connection string or URL")
    install.set_defaults(handler=_cmd_install)

    cleanup = sub.add_parser("cleanup", help="revert faults and remove what crashed runs left")
    cleanup.add_argument("--state-dir", help="state folder (default: PGGIT_CHAOS_STATE_DIR)")
    cleanup.add_argument(
        "--force", action="store_true", help="also revert intents of runs that are still alive"
    )
    cleanup.set_defaults(handler=_cmd_cleanup)

    crd = sub.add_parser(
        "crd", help="print the PgGitChaosExperiment CRD (generated from the model)"
    )
    crd.set_defaults(handler=_cmd_crd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    install_signal_handlers()
    if args_list[:1] == ["checks"]:
        args, rest = parser.parse_known_args(args_list[:1])
        rest = args_list[1:]
    else:
        args, rest = parser.parse_args(args_list), []
    handler: Callable[..., int] = args.handler
    try:
        if getattr(args, "passthrough", False):
            return handler(args, rest)
        return handler(args)
    except ChaosError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            err_console.print(f"[bold red]error:[/] {line}", soft_wrap=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: faults reverted, resources removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())
