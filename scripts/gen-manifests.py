#!/usr/bin/env python3
"""Writes deploy/kubernetes/ from the Helm chart rendered with its default values.

The plain manifests are the chart's output with two differences: the Secret carries the
`__ARC_TOKEN__` placeholder (Arc refuses to start until it is replaced) instead of a generated
token, and `00-namespace.yaml` creates the namespace that `helm --create-namespace` would.
The XDP settings of the Deployment are included as comments. tests/packaging checks that the
files stay equal to the rendering; run this script after changing the chart:

    python3 scripts/gen-manifests.py
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "arc-gateway"
OUT = ROOT / "deploy" / "kubernetes"
RELEASE = "arc-gateway"
NAMESPACE = "arc-gateway"
PLACEHOLDER = "__ARC_TOKEN__"

# Output file -> chart template it comes from (None: written here).
FILES = {
    "00-namespace.yaml": None,
    "01-serviceaccount.yaml": "serviceaccount.yaml",
    "02-rbac.yaml": "rbac.yaml",
    "03-configmap.yaml": "configmap.yaml",
    "04-secret.yaml": "secret.yaml",
    "05-ingressclass.yaml": "ingressclass.yaml",
    "06-deployment.yaml": "deployment.yaml",
    "07-services.yaml": "services.yaml",
    "08-hpa.yaml": "hpa.yaml",
    "09-pdb.yaml": "pdb.yaml",
}

HEADER = (
    "# Generated from charts/arc-gateway (default values) by scripts/gen-manifests.py.\n"
    "# Apply in order: kubectl apply -f deploy/kubernetes/\n"
)

NAMESPACE_DOC = f"""apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/name: arc-gateway
    app.kubernetes.io/part-of: arc-gateway
"""

SECRET_NOTE = (
    f"# Replace {PLACEHOLDER} with a strong random token before applying, e.g.\n"
    f"#   sed -i \"s/{PLACEHOLDER}/$(openssl rand -hex 32)/\" deploy/kubernetes/04-secret.yaml\n"
    "# Arc refuses to start while the placeholder is in place.\n"
)

# The Deployment's container securityContext as the chart renders it with xdp.enabled=true,
# shown commented next to the default one.
XDP_ANCHOR = "          securityContext:\n            allowPrivilegeEscalation: false\n"
XDP_NOTE = """\
          # XDP (eBPF) filtering: needs a privileged container with NET_ADMIN and SYS_ADMIN,
          # running as root, and bpffs mounted (most managed platforms refuse this). To enable
          # it, set `[xdp] enabled = true` in 03-configmap.yaml, replace the securityContext
          # below with this one, and add the bpffs mount and volume:
          # securityContext:
          #   privileged: true
          #   allowPrivilegeEscalation: true
          #   readOnlyRootFilesystem: true
          #   capabilities:
          #     add: ["NET_ADMIN", "SYS_ADMIN"]
          # volumeMounts:
          #   - name: bpffs
          #     mountPath: /sys/fs/bpf
          # volumes:
          #   - name: bpffs
          #     hostPath:
          #       path: /sys/fs/bpf
          #       type: DirectoryOrCreate
          # and in the pod securityContext: runAsNonRoot: false, runAsUser: 0, runAsGroup: 0.
"""


def render_defaults() -> dict[str, str]:
    """The chart's templates rendered with default values, keyed by template file name."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(name=RELEASE, namespace=NAMESPACE)
    return {pathlib.PurePosixPath(k).name: v for k, v in rendered.items()}


def placeholder_secret(text: str) -> str:
    """Replaces the generated token data with the `__ARC_TOKEN__` placeholder (stringData)."""
    lines = text.rstrip("\n").split("\n")
    out = []
    for line in lines:
        if line.strip() == "data:":
            out.append("stringData:")
        elif line.strip().startswith("auth-token:"):
            out.append(f"  auth-token: {PLACEHOLDER}")
        else:
            out.append(line)
    return SECRET_NOTE + "\n".join(out) + "\n"


def manifests() -> dict[str, str]:
    """File name -> content of every file of deploy/kubernetes/."""
    rendered = render_defaults()
    files = {}
    for name, template in FILES.items():
        if template is None:
            body = NAMESPACE_DOC
        else:
            body = rendered[template].strip("\n") + "\n"
            if name == "04-secret.yaml":
                body = placeholder_secret(body)
            if name == "06-deployment.yaml":
                if XDP_ANCHOR not in body:
                    raise SystemExit("gen-manifests: the Deployment's securityContext moved; update XDP_ANCHOR")
                body = body.replace(XDP_ANCHOR, XDP_NOTE + XDP_ANCHOR, 1)
        files[name] = HEADER + body
    return files


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in manifests().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT.relative_to(ROOT) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
