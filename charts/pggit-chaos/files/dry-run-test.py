"""helm test: a dry-run experiment goes through the operator and comes back with its targets.

Run by the chart's test Pod as ``python -c <this file>`` in the pggit-chaos image; the
experiment comes as JSON in $EXPERIMENT and the time limit in $TIMEOUT_SECONDS. Passes when the
operator admitted the experiment, resolved its target pods and injected nothing (phase Aborted
with the dry-run message and the pods in status.targets); exits 1 with what it saw otherwise.
"""

import json
import os
import sys
import time

from pggit_chaos.kube.client import EXPERIMENTS, KubeClient

body = json.loads(os.environ["EXPERIMENT"])
timeout = float(os.environ.get("TIMEOUT_SECONDS", "120"))
namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
client = KubeClient.from_environment()


def wait_gone(deadline: float) -> None:
    while client.find(EXPERIMENTS, namespace, name) is not None:
        if time.monotonic() > deadline:
            sys.exit(f"{namespace}/{name} from an earlier test is still there")
        time.sleep(1)


deadline = time.monotonic() + timeout
client.delete(EXPERIMENTS, namespace, name)
wait_gone(deadline)
client.create(EXPERIMENTS, namespace, body)
status: dict = {}
try:
    while time.monotonic() < deadline:
        status = (client.get(EXPERIMENTS, namespace, name).get("status") or {})
        if status.get("phase") in ("Passed", "Failed", "Inconclusive", "Aborted", "Error"):
            break
        time.sleep(1)
finally:
    client.delete(EXPERIMENTS, namespace, name)
phase, message = status.get("phase"), str(status.get("message") or "")
targets = status.get("targets") or []
print(f"{namespace}/{name}: phase={phase} targets={targets} message={message}")
if phase != "Aborted" or not message.startswith("dry run:") or not targets:
    sys.exit("the dry run did not come back with its targets: is the operator running, the "
             "namespace in the chart's namespaces and opted in, and a pod selected?")
