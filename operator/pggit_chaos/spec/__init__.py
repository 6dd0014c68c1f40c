"""The experiment spec: the ``PgGitChaosExperiment`` model, its loader and its CRD.

Imported by the CLI, the engine, the substrates and the operator. Public API::

    from pggit_chaos.spec import (Experiment, load_experiments, load_experiments_text,
                                  build_crd, write_crd, Duration, FaultType)

* ``load_experiments(path)`` / ``load_experiments_text(text, source)`` -> ``list[Experiment]``;
  any problem raises :class:`pggit_chaos.errors.InvalidExperiment` with every
  ``(field path, reason)`` at once (paths use the YAML's camelCase names, ``spec.fault.type``).
* ``experiment.name``, ``experiment.spec.fault.type`` (a :class:`FaultType`, a ``str`` enum:
  ``== "pod-kill"`` holds), ``experiment.spec.fault.settings`` (the section of that type, with
  defaults), ``experiment.spec.fault.level`` (process | resource | network | sql | storage
  | workload).
* **Durations** (``spec.duration``, ``recovery.timeout``, ``recovery.probe_interval``,
  ``workload.operation_timeout``, ``verification.timeout``, ``podKill.restartDelay``,
  ``connectionKill.interval``) are :class:`Duration`: a ``float`` subclass holding seconds, so
  ``asyncio.sleep(spec.duration)`` works; ``.seconds`` gives a plain float, ``.nanoseconds``
  the exact int, ``str()`` the text as written ("250ms"). Memory sizes are :class:`Quantity`
  (an ``int`` of bytes, ``.bytes``, ``str()`` -> "256Mi").
* ``experiment.to_manifest()`` -> the resource as plain camelCase data (defaults written out).
* ``build_crd()`` -> the CRD as data; ``write_crd(path)`` writes it as YAML.
"""

from pggit_chaos.spec.crd import build_crd, crd_yaml, schema_of, write_crd
from pggit_chaos.spec.loader import load_experiment_object, load_experiments, load_experiments_text
from pggit_chaos.spec.model import (
    API_VERSION,
    GROUP,
    KIND,
    VERSION,
    ConnectionKill,
    CpuThrottle,
    DatabaseSecretRef,
    Experiment,
    ExperimentSpec,
    Fault,
    FaultLevel,
    FaultType,
    LabelSelector,
    LabelSelectorRequirement,
    Local,
    LockContention,
    MemoryPressure,
    Metadata,
    NetworkPartition,
    PodKill,
    PodPause,
    Recovery,
    Target,
    TriggerDisable,
    Verification,
    Workload,
    WorkloadMix,
)
from pggit_chaos.spec.units import Duration, Quantity, format_duration, parse_duration

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "VERSION",
    "ConnectionKill",
    "CpuThrottle",
    "DatabaseSecretRef",
    "Duration",
    "Experiment",
    "ExperimentSpec",
    "Fault",
    "FaultLevel",
    "FaultType",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Local",
    "LockContention",
    "MemoryPressure",
    "Metadata",
    "NetworkPartition",
    "PodKill",
    "PodPause",
    "Quantity",
    "Recovery",
    "Target",
    "TriggerDisable",
    "Verification",
    "Workload",
    "WorkloadMix",
    "build_crd",
    "crd_yaml",
    "format_duration",
    "load_experiment_object",
    "load_experiments",
    "load_experiments_text",
    "parse_duration",
    "schema_of",
    "write_crd",
]
