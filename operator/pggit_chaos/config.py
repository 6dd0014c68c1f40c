"""One settings object: every knob of pggit-chaos, read from ``PGGIT_CHAOS_*`` variables.

Used by the CLI, the local substrate and the operator; the Helm chart's ``env:`` uses the same
names. A bad value raises :class:`~pggit_chaos.errors.ConfigurationError` naming the variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pggit_chaos.errors import ConfigurationError


def _default_state_dir() -> Path:
    # Imported here: the faults package is heavy (psycopg) and most commands never need it.
    from pggit_chaos.faults.state import default_state_dir

    return default_state_dir()


class Settings(BaseSettings):
    """Every setting, each from the environment variable ``PGGIT_CHAOS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PGGIT_CHAOS_", extra="ignore")

    #: Folder of the state file recording fault intents and throwaway resources.
    state_dir: Path = Field(default_factory=_default_state_dir)
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
