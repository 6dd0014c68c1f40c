"""The image's entry points run as the image's uid, which has no passwd entry.

The image runs as uid 65532 (``USER 65532:65532``, the Jobs' ``runAsUser``) with ``HOME=/tmp``
and no ``USER``/``LOGNAME``; nothing in ``/etc/passwd`` names that uid. On a real node the
operator crash-looped there: kopf's default peering identity asks ``getpass.getuser()``,
``KeyError: 'getpwuid(): uid not found: 65532'``. Each entry point the chart and the Jobs use
(``operator``, ``run --in-cluster``, ``checks``, ``install-pggit``) is run here as a real
process under ``setpriv`` as that uid, against the test API server and a real PostgreSQL.

One liberty: the interpreter of these tests lives under ``/root`` (mode 0700), which uid 65532
cannot enter, so the process keeps the one capability ``CAP_DAC_READ_SEARCH`` (read any file,
enter any folder). It changes no identity: ``getuid()`` is 65532 and every passwd lookup fails
as in the image.

Why here as well as on the real node (where the operator and every Job run as that uid in the
image): each entry point is a process started here, so a failure names it within seconds in the
README's test command rather than as a crash-looping pod in CI.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.emulator import EmulatorServer, namespace
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import EXPERIMENTS, KubeClient
from pggit_chaos.spec.model import API_VERSION, KIND
from waits import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.postgres]

UID = builders.NONROOT_ID
ROOT = Path(__file__).resolve().parents[2]
PASSWD_ERROR = "getpwuid(): uid not found"


def _no_passwd_entry() -> bool:
    try:
        pwd.getpwuid(UID)
    except KeyError:
        return True
    return False


needs_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not _no_passwd_entry(),
    reason=f"needs root, setpriv and no passwd entry for uid {UID}")


def image_env(**extra: str) -> dict[str, str]:
    """The image's environment (operator/Dockerfile ENV): no USER, LOGNAME, HOME from passwd."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PYTHONPATH": str(ROOT / "operator"), **extra}


def as_image_user(argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--",
            sys.executable, "-m", "pggit_chaos.cli", *argv]


def run_as_image_user(argv: list[str], env: dict[str, str],
                      timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_image_user(argv), env=env, cwd="/tmp", capture_output=True,
                          text=True, timeout=timeout, check=False)


@needs_setpriv
def test_the_harness_really_has_no_user_name() -> None:
    """What broke kopf breaks here too: no user name can be found for the uid."""
    run = subprocess.run(
        ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
         "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--",
         sys.executable, "-c", "import getpass, os; print(os.getuid()); getpass.getuser()"],
        env=image_env(), capture_output=True, text=True, timeout=60, check=False)
    assert run.stdout.strip() == str(UID)
    assert run.returncode != 0 and PASSWD_ERROR in run.stderr, run.stderr


@needs_setpriv
def test_the_operator_starts_as_the_image_user(emulator_server: EmulatorServer,
                                               kubeconfigs: dict[str, Path]) -> None:
    """``pggit-chaos operator`` gets past kopf's identity and runs its startup handler
    (it failed before: ``internal error (KeyError: 'getpwuid(): uid not found: 65532')``)."""
    log = Path(kubeconfigs["operator"]).parent / "operator.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            as_image_user(["operator", "--kubeconfig", str(kubeconfigs["operator"])]),
            env=image_env(PGGIT_CHAOS_METRICS_PORT="0"), cwd="/tmp", stdout=out,
            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "active faults from status" in log.read_text()
                   or process.poll() is not None, "the operator's startup handler", 60)
        assert process.poll() is None, log.read_text()
        # kopf's watch of the experiments is up, made by the operator's identity.
        wait_until(lambda: ("chaos.pggit.io", "pggitchaosexperiments", "watch")
                   in emulator_server.emulator.rbac_rules("operator"), "kopf's watch", 60)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    text = log.read_text()
    assert PASSWD_ERROR not in text and "Traceback" not in text, text


@needs_setpriv
def test_the_runner_runs_as_the_image_user(kubeconfigs: dict[str, Path],
                                           admin_client: KubeClient, pggit_dsn: str) -> None:
    """``pggit-chaos run --in-cluster``: reads the experiment, connects to the database,
    ends the run with a reason in status and stores its journal (here: no pod matches)."""
    namespace(admin_client, "apps", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    admin_client.create(EXPERIMENTS, "apps", {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "nobody"},
        "spec": {"target": {"selector": {"matchLabels": {"app": "none"}},
                            "databaseSecretRef": {"name": "db"}},
                 "fault": {"type": "connection-kill"}, "duration": "1s",
                 "verification": {"checks": []}}})
    run = run_as_image_user(
        ["run", "--in-cluster", "apps/nobody", "--run-id", "r1"],
        image_env(KUBECONFIG=str(kubeconfigs["runner"]), PGGIT_CHAOS_DSN=pggit_dsn,
                  PGGIT_CHAOS_STATE_DIR="/tmp/pggit-chaos-state-test",
                  PGGIT_CHAOS_REPORT_DIR="/tmp/chaos-reports-test"))
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert PASSWD_ERROR not in output and "Traceback" not in output, output
    status = admin_client.get(EXPERIMENTS, "apps", "nobody")["status"]
    assert status["phase"] in ("Aborted", "Error") and status.get("journalConfigMap"), status
    assert PASSWD_ERROR not in str(status), status


@needs_setpriv
def test_install_pggit_and_the_checks_run_as_the_image_user(empty_dsn: str,
                                                            tmp_path: Path) -> None:
    """``install-pggit`` (the demo target's init) and ``checks`` (the verification Job)."""
    env = image_env()
    install = run_as_image_user(["install-pggit", "--dsn", empty_dsn], env)
    assert install.returncode == 0, install.stdout + install.stderr
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, UID, UID)
    started = time.monotonic()
    checks = run_as_image_user(["checks", "--dsn", empty_dsn, "--category", "transaction",
                                "--json", str(out / "checks.json")], env)
    output = checks.stdout + checks.stderr
    assert checks.returncode == 0, output[-3000:]
    assert PASSWD_ERROR not in output, output
    assert (out / "checks.json").exists(), (output[-3000:], time.monotonic() - started)
