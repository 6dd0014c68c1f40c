"""Demo hook: label the demo namespace chaos.pggit.io/enabled=true (the operator's opt-in gate).

Run by the chart's demo opt-in Job as ``python -c <this file> NAMESPACE`` in the pggit-chaos
image, with a ServiceAccount allowed to patch only that Namespace object.
"""

import sys

from pggit_chaos.kube import names
from pggit_chaos.kube.client import NAMESPACES, KubeClient

namespace = sys.argv[1]
client = KubeClient.from_environment()
patched = client.patch(NAMESPACES, None, namespace,
                       {"metadata": {"labels": {names.NAMESPACE_OPT_IN_LABEL: "true"}}})
print(f"namespace {namespace}: {names.NAMESPACE_OPT_IN_LABEL}="
      f"{patched['metadata']['labels'][names.NAMESPACE_OPT_IN_LABEL]}")
