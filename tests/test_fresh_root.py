"""The README's two commands on a stock Debian 12 (tier ``freshroot``: ``.ci/run`` runs it).

A Debian 12 root made by ``debootstrap --variant=minbase bookworm`` from the mirror the host's apt
uses, cached as a tarball (``/var/cache/pggit-chaos/debian12-root.tar``, or
``$PGGIT_CHAOS_FRESHROOT_CACHE``) and unpacked afresh for each session. The tests enter it with
chroot (``/proc``, ``/sys`` and ``/dev`` bound, unbound on every path) and work in a git clone
of this checkout's commit, with a cleared environment: nothing of the host's Python, only
Debian's own ``python3`` that ``scripts/setup`` installs from apt (3.11.2; the project is
developed on 3.11.7). The host reaches PyPI through a TLS-intercepting proxy: its CA bundle
(the one pip is configured with) is copied into the root for the session and named in a
``pip.conf`` there; nothing of it is in the repository.

Selected only with ``-m freshroot`` (minutes long; needs root, debootstrap and the Debian and
PyPI registries).
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PGGIT_CHAOS_FRESHROOT_CACHE",
                            "/var/cache/pggit-chaos/debian12-root.tar"))
CHECKOUT = "/srv/pggit-chaos"  # where the clone sits inside the root
HOST_CA = "/etc/pggit-chaos-host-ca.pem"  # the host's CA bundle, inside the root
DEFAULT_MIRROR = "http://deb.debian.org/debian"

pytestmark = [
    pytest.mark.freshroot,
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and debootstrap need root"),
]


def host_mirror() -> str:
    """The Debian archive the host's apt uses for bookworm (not its security archive)."""
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            suites = fields.get("Suites", "").split()
            if "bookworm" in suites and fields.get("Enabled", "yes") != "no":
                return fields.get("URIs", DEFAULT_MIRROR).split()[0]
    listing = Path("/etc/apt/sources.list")
    lines = listing.read_text().splitlines() if listing.exists() else []
    for line in lines:
        match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


def host_pip_cert() -> Path | None:
    """The CA bundle pip uses on the host (its environment, then /etc/pip.conf), if any."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name])
    config = configparser.ConfigParser()
    config.read(["/etc/pip.conf", "/etc/xdg/pip/pip.conf"])
    cert = config.get("global", "cert", fallback="")
    if cert and Path(cert).is_file():
        return Path(cert)
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def build_cache() -> None:
    """debootstrap a minbase bookworm root and keep it as a tarball (1-2 minutes)."""
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is missing: `bash scripts/setup --dev` installs it")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    work = CACHE.parent / f".debian12-root.{os.getpid()}"
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(work), host_mirror()],
                       check=True, capture_output=True, text=True)
        subprocess.run(["tar", "-C", str(work), "-cf", f"{CACHE}.partial", "."], check=True)
        os.replace(f"{CACHE}.partial", CACHE)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Chroot:
    """An unpacked Debian 12 root with /proc, /sys and /dev bound; :meth:`close` undoes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted: list[Path] = []

    def mount(self) -> None:
        for name, args in (("proc", ["-t", "proc", "proc"]), ("sys", ["--rbind", "/sys"]),
                           ("dev", ["--rbind", "/dev"])):
            target = self.path / name
            subprocess.run(["mount", *args, str(target)], check=True)
            self.mounted.append(target)
            if args[0] == "--rbind":  # an unmount inside must not reach the host's mounts
                subprocess.run(["mount", "--make-rslave", str(target)], check=True)

    def prepare(self, commit: str) -> None:
        """DNS, the host's apt and pip trust settings, and a clone of ``commit``."""
        shutil.copy2("/etc/resolv.conf", self.path / "etc/resolv.conf")
        host_conf = Path("/etc/apt/apt.conf.d")
        for conf in sorted(host_conf.glob("*")) if host_conf.is_dir() else []:
            if conf.is_file() and "Acquire::" in conf.read_text(errors="replace"):
                shutil.copy2(conf, self.path / "etc/apt/apt.conf.d" / conf.name)
        cert = host_pip_cert()
        if cert is not None:
            shutil.copyfile(cert, self.path / HOST_CA.lstrip("/"))
            (self.path / "etc/pip.conf").write_text(f"[global]\ncert = {HOST_CA}\n")
        clone = self.path / CHECKOUT.lstrip("/")
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)],
                       check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", commit],
                       check=True)

    def run(self, script: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """``bash -c script`` inside the root, in the clone, with a cleared environment."""
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "COLUMNS=120"]
        return subprocess.run(
            ["chroot", str(self.path), "/usr/bin/env", "-i", *env, "bash", "-c",
             f"cd {CHECKOUT} && {script}"],
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            capture_output=True, text=True, timeout=timeout)

    def processes(self) -> list[int]:
        """PIDs of processes whose root is this root."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "root") == str(self.path):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def close(self) -> None:
        """Kill what still runs inside, unmount, remove the root."""
        for _ in range(50):
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for target in reversed(self.mounted):
            if subprocess.run(["umount", "-R", str(target)], capture_output=True).returncode:
                subprocess.run(["umount", "-R", "-l", str(target)], check=True)
        self.mounted.clear()
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    """A fresh Debian 12 root from the cache (made first if missing), with this commit cloned."""
    if not CACHE.exists():
        build_cache()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    root = Chroot(tmp_path_factory.mktemp("debian12") / "root")
    root.path.mkdir()
    try:
        subprocess.run(["tar", "-C", str(root.path), "-xf", str(CACHE)], check=True)
        root.mount()
        root.prepare(commit)
        yield root
    finally:
        root.close()
    assert not root.path.exists()


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-4000:]}"


def test_the_demo_passes_with_debians_own_python(debian: Chroot) -> None:
    """``bash scripts/demo`` on a minbase root: apt brings python3, python3-venv, PostgreSQL
    and iptables, pip the runtime package into .venv (no dev tools, no helm, no other
    PostgreSQL), and pod-kill Passes."""
    assert debian.run("command -v python3 || echo none").stdout.strip() == "none"
    result = debian.run("bash scripts/demo")
    assert result.returncode == 0, _output(result)
    assert re.search(r"verdict\W+Pass", result.stdout, re.I), _output(result)
    assert f"virtual environment {CHECKOUT}/.venv" in result.stdout
    venv = debian.run(".venv/bin/python -c 'import sys; print(sys.version.split()[0]);"
                      " print(sys.base_prefix)'").stdout.split()
    debians = debian.run("/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])'")
    assert venv == [debians.stdout.strip(), "/usr"], venv
    assert debians.stdout.strip().startswith("3.11.")
    # The demo installed what a run needs only.
    dev_tools = debian.run("ls .venv/bin/ruff .venv/bin/mypy .venv/bin/helm /usr/local/bin/helm"
                           " /opt/pggit-chaos 2>&1 || true").stdout
    assert dev_tools.count("No such file") == 5, dev_tools
    # The cluster Debian's postgresql package made is not left running.
    clusters = [line.split() for line in debian.run("pg_lsclusters -h").stdout.splitlines()]
    assert clusters and all(fields[3] == "down" for fields in clusters), clusters


def test_setup_leaves_a_running_cluster_running(debian: Chroot) -> None:
    """A cluster that was running before ``scripts/setup`` installed a missing package is
    still running after it: setup stops only a cluster its own install created."""
    first = debian.run("bash scripts/setup")
    assert first.returncode == 0, _output(first)
    started = debian.run("pg_lsclusters -h | awk '{print $1, $2}' | head -1")
    version, name = started.stdout.split()
    try:
        on = debian.run(f"pg_ctlcluster {version} {name} start && "
                        "DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq iptables")
        assert on.returncode == 0, _output(on)
        again = debian.run("bash scripts/setup")
        assert again.returncode == 0, _output(again)
        assert "installing system packages: iptables" in again.stdout
        assert "stopping PostgreSQL cluster" not in again.stdout
        status = debian.run(f"pg_lsclusters -h | grep '^{version} *{name} '").stdout.split()
        assert status[3] == "online", status
    finally:
        debian.run(f"pg_ctlcluster {version} {name} stop || true")


def test_the_unit_tier_on_debians_python(debian: Chroot) -> None:
    """``bash scripts/test -m unit`` (setup --dev, lint, the unit tests) passes in the root,
    on Debian's 3.11."""
    result = debian.run("bash scripts/test -m unit -q")
    assert result.returncode == 0, _output(result)
    assert re.search(r"\d+ passed", result.stdout), _output(result)
    assert ".venv/bin/python -m pytest -m unit" in result.stdout, _output(result)
