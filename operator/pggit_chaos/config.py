"""One settings object: every knob of pggit-chaos, read from ``PGGIT_CHAOS_*`` variables.

Used by the CLI, the local substrate and the operator; the Helm chart's ``env:`` uses the same
names. A bad value raises :class:`~pggit_chaos.errors.ConfigurationError` naming the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pggit_chaos.errors import ConfigurationError

#: Environment variable naming the folder of the local state file (``state.json``).
STATE_DIR_ENV = "PGGIT_CHAOS_STATE_DIR"


def default_state_dir() -> Path:
    """``$PGGIT_CHAOS_STATE_DIR``, else ``/var/lib/pggit-chaos`` (root) or
    ``~/.local/state/pggit-chaos``.

    Here rather than in :mod:`pggit_chaos.local.state` (which uses it) so that reading the
    settings never imports the local substrate.
    """
    if env := os.environ.get(STATE_DIR_ENV):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/pggit-chaos")
    return Path.home() / ".local" / "state" / "pggit-chaos"


class Settings(BaseSettings):
    """Every setting, each from the environment variable ``PGGIT_CHAOS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PGGIT_CHAOS_", extra="ignore")

    #: Folder of the state file recording fault intents and throwaway resources.
    state_dir: Path = Field(default_factory=default_state_dir)
    #: Folder under which each run writes its report folder.
    report_dir: Path = Path("chaos-reports")
    #: Folder holding initdb and postgres (default: found via pg_config / Debian's layout).
    pg_bindir: Path | None = None
    #: Port of the Prometheus metrics endpoint (0 = no endpoint).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Hypothesis profile when an experiment does not name one.
    hypothesis_profile: str = Field(default="ci", pattern="^(ci|dev|thorough)$")
    #: Print the traceback of an internal error (a bug) after its one-line message.
    debug: bool = False

    # -- in a cluster: the operator and the Jobs it starts ---------------------------------
    #: Namespaces whose experiments the operator runs, comma-separated (empty = every
    #: namespace: the chart then grants a ClusterRole).
    namespaces: str = ""
    #: A target namespace must carry the label ``chaos.pggit.io/enabled: "true"``.
    require_namespace_opt_in: bool = True
    #: Most pods one experiment may hit.
    max_target_pods: int = Field(default=5, ge=1, le=1000)
    #: Allow the faults that need ``pods/exec`` in the target pod: pod-pause (SIGSTOP/SIGCONT)
    #: and disk-pressure (its balloon file). The chart's ``exec.enabled``.
    allow_exec: bool = False
    #: Experiments on one target (the same database Secret, or a shared target pod) run one
    #: at a time, oldest first; the others wait in phase Pending saying for which. Off: they
    #: run at once, and one's fault can decide another's verdict.
    one_experiment_per_target: bool = True
    #: Image of the runner and verification Jobs (the operator's own image).
    image: str = "ghcr.io/pggit-chaos/pggit-chaos:0.1.0"
    #: Image pull policy of the Jobs.
    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    #: ServiceAccount of the runner and verification Jobs (its Role is the runner's).
    runner_service_account: str = "pggit-chaos-runner"
    #: Namespace the operator runs in (its own pods are never targets).
    operator_namespace: str = "pggit-chaos"
    #: Labels of the operator's own pods (``key=value,...``): never targets.
    operator_pod_labels: str = "app.kubernetes.io/name=pggit-chaos"
    #: Seconds between two progress patches of an experiment's status.
    status_interval: float = Field(default=2.0, ge=0.1, le=60.0)
    #: Seconds between two sweeps for orphaned fault objects (NetworkPolicies, labels).
    sweep_interval: float = Field(default=60.0, ge=1.0, le=3600.0)
    #: Seconds a fault may outlive its experiment's duration + recovery timeout before the
    #: operator reverts it on its own (``expiresAt`` of the intent).
    expiry_margin: float = Field(default=120.0, ge=0.0, le=86400.0)
    #: Pushgateway address (host:port) the runner pushes its run's metrics to (empty = none).
    pushgateway: str = ""
    #: Largest gzipped workload history a cluster run keeps for ``pggit-chaos report``, in
    #: ConfigMaps of at most 1 MB each beside the journal (0 = keep none; a larger history
    #: is not kept, and the journal says so).
    history_max_bytes: int = Field(default=8_000_000, ge=0, le=100_000_000)
    #: Where a verification Job writes its results for the kubelet to hand back.
    termination_message_path: Path = Path("/dev/termination-log")

    def namespace_allowlist(self) -> list[str]:
        """The allowed namespaces (empty: every namespace)."""
        return [name.strip() for name in self.namespaces.split(",") if name.strip()]

    def operator_labels(self) -> dict[str, str]:
        """``operator_pod_labels`` as a dict."""
        pairs = (item.split("=", 1) for item in self.operator_pod_labels.split(",") if "=" in item)
        return {key.strip(): value.strip() for key, value in pairs}


def load_settings() -> Settings:
    """Read the settings; a bad value becomes one ConfigurationError line per variable."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"PGGIT_CHAOS_{'_'.join(str(p) for p in err['loc']).upper()}={err['input']!s}: "
            f"{err['msg'][:1].lower()}{err['msg'][1:]}"
            for err in exc.errors()
        ]
        raise ConfigurationError("; ".join(lines)) from None
