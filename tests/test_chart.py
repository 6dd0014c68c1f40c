"""The Helm chart charts/pggit-chaos: linted, rendered, validated, and held to the contract.

Offline, with the helm binary scripts/setup installs: ``helm lint --strict`` and ``helm
template`` for the default, demo and all-options values; every rendered built-in object passes
``kubernetes-validate --strict`` for the pinned Kubernetes version (the builders' 1.33). The
ServiceMonitor and PrometheusRule are custom resources whose CRD schemas are not available
offline here: they are parsed and checked for the fields that matter (selector, port, alert
expressions on the metric names the operator really exposes). The RBAC equals the recorded API
calls (charts/pggit-chaos/api-calls.yaml) both ways. The demo target is what experiments/*.yaml
expect (their admission by the CRD's schema and CEL rules is tests/test_crd.py's). The hook
scripts (namespace opt-in, the helm test's dry run) run for real against the test API server,
the dry run through the real operator. Each validator is shown failing on a broken input.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from cluster import api_calls
from pggit_chaos.config import Settings
from pggit_chaos.kube import builders, names
from pggit_chaos.metrics import ChaosMetrics

pytestmark = pytest.mark.chart

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "pggit-chaos"
VERSION = builders.KUBERNETES_VERSION
RELEASE, RELEASE_NS = "pggit-chaos", "pggit-chaos-system"
Doc = dict[str, Any]

DEFAULT: dict[str, Any] = {}
DEMO: dict[str, Any] = {"demo": {"enabled": True}, "exec": {"enabled": True}}
ALL_OPTIONS: dict[str, Any] = {
    "namespaces": ["default", "staging"],
    "watchAllNamespaces": True,
    "requireNamespaceOptIn": False,
    "maxTargetPods": 3,
    "podPause": {"enabled": True},  # the deprecated name of exec.enabled still allows exec
    "statusInterval": 0.5,
    "sweepInterval": 30,
    "expiryMargin": 60,
    "pushgateway": "pushgateway.monitoring:9091",
    "debug": True,
    "image": {"repository": "registry.example/pggit-chaos", "tag": "e2e", "pullPolicy": "Never"},
    "imagePullSecrets": [{"name": "registry"}],
    "operator": {"podAnnotations": {"team": "db"}, "nodeSelector": {"kubernetes.io/os": "linux"},
                 "tolerations": [{"key": "chaos", "operator": "Exists"}],
                 "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                     "nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/arch", "operator": "In",
                          "values": ["amd64"]}]}]}}},
                 "serviceAccount": {"name": "chaos-op", "annotations": {"team": "db"}}},
    "runner": {"serviceAccount": {"name": "chaos-runner", "annotations": {"team": "db"}}},
    "metrics": {"port": 9090, "serviceMonitor": {"enabled": True, "interval": "15s",
                                                 "labels": {"release": "prom"}}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "faultActiveFor": "45m"},
    "grafanaDashboard": {"enabled": True},
    "tests": {"namespace": "staging", "timeoutSeconds": 60},
    "demo": {"enabled": True, "namespace": "staging",
             "postgres": {"password": "s3cret", "storage": {"storageClassName": "standard"}}},
}
VALUES = {"default": DEFAULT, "demo": DEMO, "all-options": ALL_OPTIONS}


def exec_allowed(values: dict[str, Any]) -> bool:
    """exec.enabled, or its deprecated old name podPause.enabled."""
    return any(bool(values.get(key, {}).get("enabled")) for key in ("exec", "podPause"))
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


# -- helpers -------------------------------------------------------------------------------------
def _helm() -> str:
    found = shutil.which("helm") or str(Path.home() / ".local" / "bin" / "helm")
    if not Path(found).exists():
        pytest.fail("helm is missing: scripts/setup installs it")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120,
                         check=False)
    if check and run.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run


def _values_file(values: dict[str, Any], folder: Path) -> Path:
    path = folder / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(values: dict[str, Any], folder: Path, *, chart: Path = CHART,
           crds: bool = False) -> list[Doc]:
    args = ["template", RELEASE, str(chart), "-n", RELEASE_NS,
            "-f", str(_values_file(values, folder))]
    out = helm(*args, *(["--include-crds"] if crds else [])).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in find(docs, kind)])
    return found[0]


def granted(docs: list[Doc], account: str, where: str) -> dict[str | None, set[tuple[str, ...]]]:
    """Scope (a namespace, or None for cluster-wide) -> (group, resource, verb) granted to the
    ServiceAccount ``where/account`` by the rendered Roles, ClusterRoles and their bindings."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d["rules"]
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    result: dict[str | None, set[tuple[str, ...]]] = {}
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account
                   and s["namespace"] == where for s in binding["subjects"]):
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        key = (ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{binding['metadata']['name']} binds a missing {key}"
        for rule in roles[key]:
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        result.setdefault(scope, set()).add((group, resource, verb))
    return result


def rbac_differences(docs: list[Doc], account: str, where: str, identity: str,
                     namespaces: list[str], pod_pause: bool,
                     everywhere: bool) -> list[str]:
    """How the chart's grants to ``account`` differ from what ``identity`` was recorded doing
    (empty: equal). Namespaced calls must be granted in each namespace (cluster-wide with
    ``everywhere``), cluster-scoped ones cluster-wide; pods/exec only with ``pod_pause``."""
    recorded = {call for call in api_calls.load()[identity]
                if pod_pause or call[1] != "pods/exec"}
    namespaced = {c for c in recorded if api_calls.namespaced(c[0], c[1])}
    wanted: dict[str | None, set[tuple[str, ...]]] = {None: recorded - namespaced}
    if everywhere:
        wanted[None] |= namespaced
    else:
        wanted.update({ns: set(namespaced) for ns in namespaces})
    wanted = {scope: calls for scope, calls in wanted.items() if calls}
    have = granted(docs, account, where)
    problems = []
    for scope in sorted(set(wanted) | set(have), key=str):
        where_text = f"in namespace {scope}" if scope else "cluster-wide"
        for call in sorted(have.get(scope, set()) - wanted.get(scope, set())):
            problems.append(f"{account} is granted {call} {where_text}: no test made that call")
        for call in sorted(wanted.get(scope, set()) - have.get(scope, set())):
            problems.append(f"{account} lacks {call} {where_text}: a test made that call")
    return problems


def effective_namespaces(values: dict[str, Any]) -> list[str]:
    """namespaces, plus demo.namespace with the demo (in that order, without repeats)."""
    namespaces = list(values.get("namespaces", ["default"]))
    demo = values.get("demo", {})
    if demo.get("enabled"):
        namespaces.append(demo.get("namespace", "default"))
    return list(dict.fromkeys(namespaces))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    return {name: render(values, tmp_path_factory.mktemp(name), crds=True)
            for name, values in VALUES.items()}


# -- lint and validation ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VALUES))
def test_helm_lint_strict_passes(name: str, tmp_path: Path) -> None:
    run = helm("lint", "--strict", str(CHART), "-f", str(_values_file(VALUES[name], tmp_path)))
    assert "0 chart(s) failed" in run.stdout


def test_helm_lint_strict_fails_a_broken_chart(tmp_path: Path) -> None:
    chart = tmp_path / "pggit-chaos"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "broken.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n")
    run = helm("lint", "--strict", str(chart), check=False)
    assert run.returncode != 0 and "nil pointer" in run.stdout + run.stderr


@pytest.mark.parametrize("name", list(VALUES))
def test_every_rendered_object_passes_kubernetes_validate_strict(
        name: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[name]
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, VERSION, strict=True)
    assert {"Deployment", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "Service",
            "CustomResourceDefinition", "Pod"} <= kinds
    if name != "default":
        assert {"StatefulSet", "Secret", "Job"} <= kinds
    if name == "all-options":
        assert CUSTOM_KINDS | {"ConfigMap"} <= kinds


def test_kubernetes_validate_fails_a_broken_object(rendered: dict[str, list[Doc]]) -> None:
    deployment = json.loads(json.dumps(one(rendered["default"], "Deployment")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # a typo: wrong case
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, VERSION, strict=True)
    container["securityContext"].pop("readOnlyRootFileSystem")
    container["ports"][0]["containerPort"] = "metrics"  # a string where an integer belongs
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


# -- RBAC ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VALUES))
def test_rbac_equals_the_recorded_calls(name: str, rendered: dict[str, list[Doc]]) -> None:
    values = VALUES[name]
    docs = rendered[name]
    namespaces = effective_namespaces(values)
    pod_pause = exec_allowed(values)
    everywhere = bool(values.get("watchAllNamespaces"))
    operator_sa = values.get("operator", {}).get("serviceAccount", {}).get(
        "name", "pggit-chaos-operator")
    runner_sa = values.get("runner", {}).get("serviceAccount", {}).get(
        "name", "pggit-chaos-runner")
    assert rbac_differences(docs, operator_sa, RELEASE_NS, "operator", namespaces, pod_pause,
                            everywhere) == []
    for ns in namespaces:  # the runner's Role is per namespace, also with watchAllNamespaces
        differences = rbac_differences(docs, runner_sa, ns, "runner", [ns], pod_pause, False)
        assert differences == []
        one([d for d in docs if d["metadata"].get("namespace") == ns], "ServiceAccount",
            runner_sa)
    exec_granted = any("pods/exec" in rule["resources"] for doc in docs
                       if doc["kind"] in ("Role", "ClusterRole") for rule in doc["rules"])
    assert exec_granted == pod_pause
    for doc in docs:
        for rule in doc.get("rules") or []:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            if doc["metadata"]["name"].startswith(RELEASE + "-") and "test" not in doc[
                    "metadata"]["name"]:
                assert "secrets" not in rule["resources"], doc["metadata"]["name"]


def test_the_recorded_calls_hold_what_the_chart_must_grant() -> None:
    """Calls the product makes that a real API server authorizes: kopf's scanning, the owner
    references' finalizers check, pods/exec for pod-pause (``get``: the websocket upgrade is a
    GET; ``create``: 1.35+ checks it too), the operator's revert of a resize from the intent;
    and none the harness made."""
    calls = api_calls.load()
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "watch") in calls["operator"]
    assert {("", "namespaces", "list"), ("", "namespaces", "watch")} <= calls["operator"]
    for identity in api_calls.IDENTITIES:
        assert ("chaos.pggit.io", "pggitchaosexperiments/finalizers", "update") in calls[identity]
        assert {("", "pods/exec", "get"), ("", "pods/exec", "create")} <= calls[identity]
        assert ("", "pods/resize", "patch") in calls[identity]
    # The operator creates and deletes experiments only as a schedule's runs (owned by it,
    # blockOwnerDeletion: the finalizers check on the schedule); the runner never.
    assert {("chaos.pggit.io", "pggitchaosexperiments", "create"),
            ("chaos.pggit.io", "pggitchaosexperiments", "delete"),
            ("chaos.pggit.io", "pggitchaosschedules/finalizers", "update"),
            ("chaos.pggit.io", "pggitchaosschedules/status", "patch")} <= calls["operator"]
    assert not {call for call in calls["runner"] if call[1].startswith("pggitchaosschedules")}
    assert ("chaos.pggit.io", "pggitchaosexperiments", "create") not in calls["runner"]
    assert ("", "pods", "create") not in calls["runner"]


def test_the_rbac_comparison_fails_on_an_extra_or_a_missing_grant(
        rendered: dict[str, list[Doc]]) -> None:
    docs = json.loads(json.dumps(rendered["default"]))
    role = next(d for d in docs if d["kind"] == "Role"
                and d["metadata"]["name"] == "pggit-chaos-runner")
    role["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["deletecollection"]})
    dropped = role["rules"].pop(0)
    problems = rbac_differences(docs, "pggit-chaos-runner", "default", "runner", ["default"],
                                False, False)
    assert any("deletecollection" in p and "no test made" in p for p in problems), problems
    assert any(dropped["resources"][0] in p and "a test made" in p for p in problems), problems
    assert rbac_differences(docs, "pggit-chaos-runner", "default", "runner", ["default"], True,
                            False)  # pods/exec recorded, not granted without podPause


#: How a message names a chart value: "set X=Y in the chart", "the chart's X", "--set 'X=",
#: "chart value X".
CHART_VALUE_IN_TEXT = [re.compile(pattern) for pattern in (
    r"\bset `?([A-Za-z][\w.]*)`?(?:=\S+)? in the chart",
    r"\bthe chart's `?([A-Za-z][\w.]*)",
    r"--set '?([A-Za-z][\w.]*)=",
    r"\bchart value `?([A-Za-z][\w.]*)",
)]


def _string_literals(root: Path) -> Iterator[tuple[Path, str]]:
    """Every string literal of the package (an f-string with ``{}`` for its fields)."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield path, node.value
            elif isinstance(node, ast.JoinedStr):
                yield path, "".join(part.value if isinstance(part, ast.Constant) else "{}"
                                    for part in node.values)


def _has_value(values: Any, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


def test_every_chart_value_a_message_names_exists() -> None:
    """A refusal that says "set allowExec in the chart" sent users to a value that does not
    exist: every chart value a message of the operator or runner names is in values.yaml, and
    every PGGIT_CHAOS_* setting named beside it is a setting the chart's Deployment sets."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    named: dict[str, list[str]] = {}
    for path, text in _string_literals(ROOT / "operator" / "pggit_chaos"):
        found = [m.group(1).rstrip(".") for p in CHART_VALUE_IN_TEXT for m in p.finditer(text)]
        for key in found:
            named.setdefault(key, []).append(f"{path.name}: {text[:80]}")
        for env in re.findall(r"PGGIT_CHAOS_[A-Z_]+", text) if found else []:
            assert env.removeprefix("PGGIT_CHAOS_").lower() in Settings.model_fields, (env, text)
            assert f"name: {env}\n" in deployment, (env, "not set by the chart")
    assert {"exec.enabled", "maxTargetPods", "namespaces"} <= set(named), named
    missing = {key: where for key, where in named.items() if not _has_value(values, key)}
    assert not missing, f"messages name chart values that values.yaml lacks: {missing}"


def test_the_exec_switch_and_its_deprecated_name_both_allow_exec(tmp_path: Path) -> None:
    """exec.enabled is the one switch of the exec faults (pod-pause, disk-pressure);
    podPause.enabled, its old name, still works, and the install notes say it is deprecated."""
    for values, allowed in (({}, False), ({"exec": {"enabled": True}}, True),
                            ({"podPause": {"enabled": True}}, True)):
        docs = render(values, tmp_path)
        container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        assert _env(container)["PGGIT_CHAOS_ALLOW_EXEC"] == str(allowed).lower(), values
        granted = any("pods/exec" in rule["resources"] for doc in docs
                      if doc["kind"] in ("Role", "ClusterRole") for rule in doc["rules"])
        assert granted is allowed, values
    notes = helm("install", RELEASE, str(CHART), "--dry-run=client", "-n", RELEASE_NS,
                 "--set", "podPause.enabled=true").stdout
    assert "podPause.enabled is deprecated; set exec.enabled=true" in notes
    refused = helm("install", RELEASE, str(CHART), "--dry-run=client", "-n", RELEASE_NS).stdout
    assert "disk-pressure experiments are refused (set exec.enabled=true" in refused


# -- the operator Deployment --------------------------------------------------------------------
def _env(container: Doc) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def settings_of(container: Doc, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("PGGIT_CHAOS_")]:
        monkeypatch.delenv(key)
    for key, value in _env(container).items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_the_operator_deployment_is_hardened_and_probed(rendered: dict[str, list[Doc]]) -> None:
    deployment = one(rendered["default"], "Deployment", "pggit-chaos-operator")
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": builders.NONROOT_ID, "runAsGroup": builders.NONROOT_ID,
        "fsGroup": builders.NONROOT_ID, "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == builders.NONROOT_ID
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    # the probes ask kopf's health endpoint, which --liveness serves on that port
    args = container["args"]
    assert args[0] == "operator"
    liveness = urlparse(args[args.index("--liveness") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == liveness.path == "/healthz"
        assert ports[get["port"]] == liveness.port
    # the read-only root filesystem leaves /tmp writable (HOME, matplotlib cache)
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("name", list(VALUES))
def test_the_values_reach_the_operator_as_its_settings(
        name: str, rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch) -> None:
    values, docs = VALUES[name], rendered[name]
    deployment = one(docs, "Deployment", "pggit-chaos-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    fields = set(Settings.model_fields)
    assert {key.removeprefix("PGGIT_CHAOS_").lower() for key in env} <= fields, env
    settings = settings_of(container, monkeypatch)
    everywhere = bool(values.get("watchAllNamespaces"))
    assert settings.namespace_allowlist() == ([] if everywhere else effective_namespaces(values))
    assert settings.allow_exec is exec_allowed(values)
    assert settings.require_namespace_opt_in is values.get("requireNamespaceOptIn", True)
    assert settings.max_target_pods == values.get("maxTargetPods", 5)
    assert settings.image == container["image"]
    assert settings.image_pull_policy == container["imagePullPolicy"]
    assert settings.operator_namespace == RELEASE_NS
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert settings.operator_labels().items() <= pod_labels.items()
    assert settings.operator_labels()["app.kubernetes.io/component"] == "operator"
    runner_sa = settings.runner_service_account
    for ns in effective_namespaces(values):
        assert find([d for d in docs if d["metadata"].get("namespace") == ns], "ServiceAccount",
                    runner_sa)
    assert settings.metrics_port == values.get("metrics", {}).get("port", 8080)
    service = one(docs, "Service", "pggit-chaos-metrics")
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == settings.metrics_port
    assert {p["name"]: p["containerPort"] for p in container["ports"]}[
        port["targetPort"]] == settings.metrics_port
    assert service["spec"]["selector"].items() <= pod_labels.items()
    if name == "all-options":
        assert settings.pushgateway == "pushgateway.monitoring:9091" and settings.debug
        assert (settings.status_interval, settings.sweep_interval,
                settings.expiry_margin) == (0.5, 30.0, 60.0)


def test_the_image_tag_defaults_to_the_app_version(rendered: dict[str, list[Doc]]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == chart["version"] == package
    assert chart["apiVersion"] == "v2"
    deployment = one(rendered["default"], "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/pggit-chaos/pggit-chaos:{package}" == Settings().image


# -- values.schema.json -------------------------------------------------------------------------
@pytest.mark.parametrize(("values", "message"), [
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"maxTargetPods": 0}, "/maxTargetPods"),
    ({"namespaces": []}, "/namespaces"),
    ({"namespaces": ["Not_A_Name"]}, "/namespaces/0"),
    ({"watchAllNamespaces": "yes"}, "/watchAllNamespaces"),
    ({"podPause": {"enabled": True, "exec": True}}, "exec"),
    ({"exec": {"enabled": "yes"}}, "/exec/enabled"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"statusInterval": 0}, "/statusInterval"),
    ({"demo": {"enabled": True, "postgres": {"image": "postgres:latest"}}},
     "/demo/postgres/image"),
    ({"prometheusRule": {"faultActiveFor": "soon"}}, "/prometheusRule/faultActiveFor"),
    ({"replicas": 2}, "replicas"),
])
def test_the_values_schema_rejects_bad_values(values: dict[str, Any], message: str,
                                              tmp_path: Path) -> None:
    run = helm("template", RELEASE, str(CHART), "-f", str(_values_file(values, tmp_path)),
               check=False)
    assert run.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in run.stderr
    assert message in run.stderr, run.stderr


def test_every_value_is_in_the_schema_and_typed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        assert "type" in node or "anyOf" in node, f"{path} has no type"
        if isinstance(value, dict) and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in the schema"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "values")
    assert schema["properties"]["image"]["properties"]["pullPolicy"]["enum"]


# -- the CRD ------------------------------------------------------------------------------------
def test_the_chart_crds_are_the_generated_ones_and_kept(rendered: dict[str, list[Doc]]) -> None:
    run = subprocess.run([sys.executable, "-m", "pggit_chaos.cli", "crd"], capture_output=True,
                         text=True, timeout=120, check=True)
    generated = list(yaml.safe_load_all(run.stdout))
    files = ["pggitchaosexperiments.yaml", "pggitchaosschedules.yaml"]
    committed = [yaml.safe_load((CHART / "crds" / name).read_text()) for name in files]
    assert committed == generated
    for crd in committed:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    crds = [doc for doc in rendered["default"] if doc.get("kind") == "CustomResourceDefinition"]
    assert sorted(crds, key=lambda c: c["metadata"]["name"]) == committed
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == files


# -- monitoring ---------------------------------------------------------------------------------
def exposed_metric_names() -> set[str]:
    """Every sample name the operator's registry exposes (histograms: _bucket, _sum, _count)."""
    registry = CollectorRegistry()
    metrics = ChaosMetrics(registry)
    metrics.experiments.labels(fault="pod-kill", verdict="Pass", schedule="").inc()
    metrics.recovery.labels(fault="pod-kill").observe(1)
    metrics.duration.labels(fault="pod-kill").observe(1)
    metrics.checks.labels(check="suite", outcome="failed").inc()
    metrics.lost.labels(fault="pod-kill").inc()
    metrics.active.labels(fault="pod-kill").set(1)
    metrics.operations.labels(outcome="ok").inc()
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\bpggit_chaos_[a-z_]+\b", expression))


def test_the_service_monitor_scrapes_the_metrics_service(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["all-options"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = one(docs, "Service", "pggit-chaos-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NS]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s"}
    assert not find(rendered["default"], "ServiceMonitor")


def test_the_alerts_watch_the_metrics_the_operator_exposes(
        rendered: dict[str, list[Doc]]) -> None:
    rule = one(rendered["all-options"], "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"PggitChaosLostAcknowledgedWrites", "PggitChaosFaultStuck",
                           "PggitChaosExperimentError"}
    exposed = exposed_metric_names()
    for alert in alerts.values():
        used = metric_names(alert["expr"])
        assert used and used <= exposed, (alert["alert"], used - exposed)
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert "{{ $labels.fault }}" in alert["annotations"]["summary"]
    assert "pggit_chaos_lost_acknowledged_writes_total" in alerts[
        "PggitChaosLostAcknowledgedWrites"]["expr"]
    assert alerts["PggitChaosLostAcknowledgedWrites"]["expr"].endswith("> 0")
    assert alerts["PggitChaosFaultStuck"]["for"] == "45m"
    assert 'verdict="Error"' in alerts["PggitChaosExperimentError"]["expr"]
    assert not find(rendered["default"], "PrometheusRule")


def test_the_dashboard_has_the_panels_on_the_exposed_metrics(
        rendered: dict[str, list[Doc]]) -> None:
    config_map = one(rendered["all-options"], "ConfigMap", "pggit-chaos-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["pggit-chaos.json"])
    titles = {panel["title"]: panel for panel in dashboard["panels"]}
    for title in ("Verdicts over time", "Recovery seconds", "Lost acknowledged writes",
                  "Checks failures", "Active faults", "Verdicts over time per schedule"):
        assert title in titles, title
    [per_schedule] = titles["Verdicts over time per schedule"]["targets"]
    assert "by (schedule, verdict)" in per_schedule["expr"]
    assert titles["Recovery seconds"]["type"] == "heatmap"
    exposed = exposed_metric_names()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used and used <= exposed, (panel["title"], used - exposed)


def test_metric_names_outside_the_exposed_ones_are_caught() -> None:
    assert metric_names("rate(pggit_chaos_lost_writes_total[5m])") - exposed_metric_names()


# -- README and NOTES ---------------------------------------------------------------------------
def _render_readme(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "render-chart-readme"), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_chart_readme_is_generated_from_the_values(tmp_path: Path) -> None:
    run = _render_readme("--check")
    assert run.returncode == 0, run.stderr
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("image.repository", "namespaces", "watchAllNamespaces", "exec.enabled",
                "metrics.port", "demo.enabled", "demo.namespace"):
        assert f"| `{key}` |" in readme, key
    assert values["demo"]["namespace"] == "default"
    # stale: a value's comment changed, README not regenerated
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = (chart / "values.yaml").read_text()
    (chart / "values.yaml").write_text(text.replace("# -- Port of the operator's /metrics",
                                                    "# -- The port of /metrics"))
    stale = _render_readme("--check", "--chart", str(chart))
    assert stale.returncode == 1 and "stale" in stale.stderr
    assert _render_readme("--chart", str(chart)).returncode == 0
    assert "The port of /metrics" in (chart / "README.md").read_text()
    assert _render_readme("--check", "--chart", str(chart)).returncode == 0
    # an undocumented value
    (chart / "values.yaml").write_text(text + "undocumented: 1\n")
    missing = _render_readme("--check", "--chart", str(chart))
    assert missing.returncode == 1 and "undocumented has no '# --' comment" in missing.stderr


def test_notes_tell_the_next_command(tmp_path: Path) -> None:
    for values, expected in ((DEFAULT, "kubectl label namespace NAMESPACE"),
                             (DEMO, "kubectl apply -f experiments/")):
        run = helm("install", RELEASE, str(CHART), "-n", RELEASE_NS, "--dry-run=client",
                   "-f", str(_values_file(values, tmp_path)))
        notes = run.stdout.split("NOTES:", 1)[1]
        assert expected in notes and f"helm test {RELEASE} -n {RELEASE_NS}" in notes


# -- the demo target and experiments/ -----------------------------------------------------------
def experiments() -> list[Doc]:
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "experiments").glob("*.yaml"))]


def test_the_demo_target_is_what_the_experiments_expect(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["demo"]
    demo_ns = yaml.safe_load((CHART / "values.yaml").read_text())["demo"]["namespace"]
    statefulset = one(docs, "StatefulSet", "pggit-postgres")
    assert statefulset["metadata"]["namespace"] == demo_ns
    template = statefulset["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (postgres,) = template["spec"]["containers"]
    assert re.fullmatch(r"postgres:\d+", postgres["image"]), postgres["image"]  # official, major
    assert template["spec"]["shareProcessNamespace"] is True  # pod-pause: postmaster not PID 1
    assert {p["resourceName"]: p["restartPolicy"] for p in postgres["resizePolicy"]} == {
        "cpu": "NotRequired", "memory": "RestartContainer"}
    # cpu-throttle and memory-pressure lower limits it has (a limit they added could never be
    # removed again by their revert): the runner's pre-injection check lets them run here
    from pggit_chaos.kube.faults import resize_refusal
    from pggit_chaos.kube.substrate import resize_limits
    from pggit_chaos.spec import Experiment

    assert set(postgres["resources"]["limits"]) == {"cpu", "memory"}
    demo_pod = {"metadata": {"name": "pggit-postgres-0", "namespace": demo_ns},
                "spec": template["spec"]}
    resized = [e for e in experiments()
               if e["spec"]["fault"]["type"] in ("cpu-throttle", "memory-pressure")]
    assert len(resized) == 2
    for manifest in resized:
        limits = resize_limits(Experiment.model_validate(manifest))
        assert limits is not None
        assert resize_refusal(demo_pod, "postgres", manifest["spec"]["fault"]["type"],
                              *limits) is None, manifest["metadata"]["name"]
    assert statefulset["spec"]["volumeClaimTemplates"]  # the data outlives a pod-kill
    secret = one(docs, "Secret", "pggit-db")
    dsn = urlparse(secret["stringData"]["dsn"])
    service = one(docs, "Service", "pggit-postgres")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert dsn.hostname == f"pggit-postgres.{demo_ns}.svc" and dsn.port == 5432
    assert dsn.username == "postgres" and dsn.password == secret["stringData"]["password"]
    password_env = next(e for e in postgres["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert password_env["valueFrom"]["secretKeyRef"] == {"name": "pggit-db", "key": "password"}
    runnable = [e for e in experiments()
                if e["spec"]["fault"]["type"] not in ("index-corruption",)]
    assert len(runnable) >= 8
    for experiment in runnable:
        target = experiment["spec"]["target"]
        assert experiment["metadata"]["namespace"] == demo_ns
        assert target["selector"]["matchLabels"].items() <= pod_labels.items()
        assert not target["selector"].get("matchExpressions")
        ref = target["databaseSecretRef"]
        assert ref["name"] == "pggit-db" and ref.get("key", "dsn") in secret["stringData"]
        assert dsn.path == "/" + target.get("database", "postgres")
    # pgGit installed by our image's install-pggit with that DSN, after install and upgrades
    job = one(docs, "Job", "pggit-chaos-demo-install-pggit")
    (install,) = job["spec"]["template"]["spec"]["containers"]
    deployment = one(docs, "Deployment")
    assert install["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert install["args"] == ["install-pggit", "--dsn", "$(PGGIT_DSN)"]
    dsn_env = next(e for e in install["env"] if e["name"] == "PGGIT_DSN")
    assert dsn_env["valueFrom"]["secretKeyRef"] == {"name": "pggit-db", "key": "dsn"}
    assert "post-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    # the namespace opt-in: a hook Job allowed to patch only that Namespace
    opt_in = one(docs, "Job", "pggit-chaos-demo-opt-in")
    (container,) = opt_in["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [(CHART / "files" / "opt-in.py").read_text(), demo_ns]
    role = one(docs, "Role", "pggit-chaos-demo-opt-in")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"],
                              "resourceNames": [demo_ns], "verbs": ["patch"]}]
    assert not find(rendered["default"], "StatefulSet")


def test_the_demo_password_is_kept_or_given(rendered: dict[str, list[Doc]]) -> None:
    secret = one(rendered["all-options"], "Secret", "pggit-db")
    assert secret["stringData"]["password"] == "s3cret"
    assert secret["metadata"]["namespace"] == "staging"
    generated = one(rendered["demo"], "Secret", "pggit-db")["stringData"]["password"]
    assert len(generated) == 24 and generated.isalnum()


# -- the hook scripts, for real against the test API server --------------------------------------
@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[Any, dict[str, Path]]]:
    from cluster.emulator import EmulatorServer, KubeEmulator, write_kubeconfig

    with EmulatorServer(KubeEmulator()) as server:
        configs = {who: write_kubeconfig(tmp_path / f"{who}.yaml", server.url,
                                         server.emulator.token_for(who))
                   for who in ("operator", "admin", "chart-hook")}
        yield server, configs


def _run_script(script: Path, kubeconfig: Path, *args: str,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    environment.update(env or {}, KUBECONFIG=str(kubeconfig))
    return subprocess.run([sys.executable, "-c", script.read_text(), *args], env=environment,
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.kube
def test_the_opt_in_hook_labels_the_namespace(
        api_server: tuple[Any, dict[str, Path]]) -> None:
    server, configs = api_server
    run = _run_script(CHART / "files" / "opt-in.py", configs["chart-hook"], "default")
    assert run.returncode == 0, run.stderr
    labels = server.emulator.get_object("namespaces", None, "default")["metadata"]["labels"]
    assert labels[names.NAMESPACE_OPT_IN_LABEL] == "true"
    assert server.emulator.rbac_rules("chart-hook") == {("", "namespaces", "patch")}
    assert _run_script(CHART / "files" / "opt-in.py", configs["chart-hook"],
                       "missing").returncode != 0


@pytest.mark.kube
def test_the_helm_test_runs_a_dry_run_through_the_operator(
        api_server: tuple[Any, dict[str, Path]], rendered: dict[str, list[Doc]]) -> None:
    from cluster.emulator import apply_manifest, namespace
    from pggit_chaos.kube.client import PODS, KubeClient
    from pggit_chaos.kube.operator import run_operator

    server, configs = api_server
    docs = rendered["demo"]
    pod = one(docs, "Pod", "pggit-chaos-test")
    (container,) = pod["spec"]["containers"]
    assert container["args"] == [(CHART / "files" / "dry-run-test.py").read_text()]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = _env(container)
    experiment = json.loads(env["EXPERIMENT"])
    from kube_schema import admit

    admit(experiment)  # the server would take it
    assert experiment["spec"]["dryRun"] is True
    role = one(docs, "Role", "pggit-chaos-test")
    assert {tuple(r["verbs"]) for r in role["rules"]} == {("create", "get", "delete")}

    admin = KubeClient.from_environment(str(configs["admin"]))
    namespace(admin, "default", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    accounts = [d for d in find(docs, "ServiceAccount")
                if d["metadata"].get("namespace") == "default"]
    assert "pggit-chaos-runner" in [d["metadata"]["name"] for d in accounts]
    for account in accounts:  # the runner identity gate asks for the runner's, as on a cluster
        apply_manifest(admin, account)
    script = CHART / "files" / "dry-run-test.py"
    deployment = one(docs, "Deployment")
    operator_env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
    settings = Settings(namespaces=operator_env["PGGIT_CHAOS_NAMESPACES"], allow_exec=True)
    assert settings.namespace_allowlist() == ["default"]
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def operate() -> None:
        try:
            run_operator(settings, str(configs["operator"]), metrics_port=0, scanning=False,
                         registry=CollectorRegistry(), stop_flag=stop, ready_flag=ready)
        except BaseException as exc:  # reported below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=operate, daemon=True)
    thread.start()
    try:
        assert ready.wait(30) and not errors, errors
        # no pod selected yet: the script fails and says so
        lonely = _run_script(script, configs["chart-hook"],
                             env={"EXPERIMENT": env["EXPERIMENT"], "TIMEOUT_SECONDS": "60"})
        assert lonely.returncode != 0 and "did not come back with its targets" in lonely.stderr
        admin.create(PODS, "default", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pggit-postgres-0",
                         "labels": dict(one(docs, "StatefulSet")["spec"]["template"][
                             "metadata"]["labels"])},
            "spec": {"containers": [{"name": "postgres", "image": "postgres:17"}]}})
        admin.patch(PODS, "default", "pggit-postgres-0", {"status": {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
            subresource="status")
        run = _run_script(script, configs["chart-hook"],
                          env={"EXPERIMENT": env["EXPERIMENT"], "TIMEOUT_SECONDS": "60"})
        assert run.returncode == 0, run.stdout + run.stderr
        assert "phase=Aborted targets=['pggit-postgres-0'] message=dry run:" in run.stdout
    finally:
        stop.set()
        thread.join(30)
    assert server.emulator.rbac_rules("chart-hook") == {
        ("chaos.pggit.io", "pggitchaosexperiments", verb) for verb in ("create", "get", "delete")}
    assert not server.emulator.list_objects("pggitchaosexperiments", "default")


def test_the_demo_namespace_joins_the_namespaces(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"demo": {"enabled": True, "namespace": "chaos-demo"}}
    docs = render(values, tmp_path)
    assert effective_namespaces(values) == ["default", "chaos-demo"]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert settings_of(container, monkeypatch).namespace_allowlist() == ["default", "chaos-demo"]
    assert rbac_differences(docs, "pggit-chaos-operator", RELEASE_NS, "operator",
                            ["default", "chaos-demo"], False, False) == []
    assert rbac_differences(docs, "pggit-chaos-runner", "chaos-demo", "runner", ["chaos-demo"],
                            False, False) == []
    assert one(docs, "StatefulSet")["metadata"]["namespace"] == "chaos-demo"


def test_runner_image_pull_secrets_reach_every_pod_in_the_experiments_namespaces(
        tmp_path: Path) -> None:
    """The runner's ServiceAccount in each namespace (its Jobs' pods get them from it), the
    demo's Jobs and the helm test pod pull with runner.imagePullSecrets; the operator's pod
    keeps its own imagePullSecrets. Nothing of it without the value."""
    secrets = [{"name": "regcred"}]
    docs = render({"namespaces": ["default", "staging"], "demo": {"enabled": True},
                   "imagePullSecrets": [{"name": "operator-only"}],
                   "runner": {"imagePullSecrets": secrets}}, tmp_path)
    runners = [d for d in find(docs, "ServiceAccount")
               if d["metadata"]["labels"].get("app.kubernetes.io/component") == "runner"]
    assert sorted(d["metadata"]["namespace"] for d in runners) == ["default", "staging"]
    assert all(d["imagePullSecrets"] == secrets for d in runners)
    pods = [d["spec"]["template"]["spec"] for d in find(docs, "Job")] + [
        d["spec"] for d in find(docs, "Pod")]
    assert len(pods) == 3 and all(p["imagePullSecrets"] == secrets for p in pods), pods
    operator = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert operator["imagePullSecrets"] == [{"name": "operator-only"}]
    (tmp_path / "plain").mkdir()
    plain = render({"demo": {"enabled": True}}, tmp_path / "plain")
    assert not any("imagePullSecrets" in d for d in find(plain, "ServiceAccount"))
    assert not any("imagePullSecrets" in d["spec"]["template"]["spec"]
                   for d in find(plain, "Job"))
