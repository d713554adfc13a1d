"""The chart's optional NetworkPolicy (`networkPolicy.*`): off by default (so the plain manifests
of deploy/kubernetes/ have none), and when on: valid for Kubernetes, the proxy ports open to
everyone, the admin port (and only it) restricted to the peers of `networkPolicy.adminFrom`."""

from __future__ import annotations

import pytest

from conftest import CHART, NAMESPACE, find, kinds, need_module
from test_manifests import DEPLOY, MIN_KUBE_VERSION, deploy_objects

PEERS = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
     "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
    {"podSelector": {"matchLabels": {"role": "arc-admin"}}},
    {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}},
]
ON = {"networkPolicy": {"enabled": True, "adminFrom": PEERS}}


@pytest.fixture(scope="module")
def kubernetes_validate():
    return need_module("kubernetes_validate", "kubernetes-validate")


def policy(objs):
    return find(objs, "NetworkPolicy", "arc-gateway")


def test_off_by_default(default_objects, render):
    assert "NetworkPolicy" not in kinds(default_objects)
    assert "NetworkPolicy" not in kinds(render({"networkPolicy": {"adminFrom": PEERS}})), \
        "peers alone do not switch it on"
    # The plain manifests are the default rendering: no NetworkPolicy there either.
    assert all(o["kind"] != "NetworkPolicy" for objs in deploy_objects().values() for o in objs)
    assert not any("NetworkPolicy" in p.read_text() for p in DEPLOY.glob("*.yaml"))


def test_on_selects_the_arc_pods_and_restricts_exactly_the_admin_port(render):
    objs = render(ON)
    np = policy(objs)
    assert np["apiVersion"] == "networking.k8s.io/v1"
    assert np["metadata"]["namespace"] == NAMESPACE
    spec = np["spec"]
    dep = find(objs, "Deployment", "arc-gateway")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Only ingress is governed: Arc's egress (API server, backends) is left alone.
    assert spec["policyTypes"] == ["Ingress"]
    assert "egress" not in spec

    proxy, admin = spec["ingress"]
    # The proxy ports: from anywhere (no `from`), exactly http and https.
    assert "from" not in proxy
    assert sorted((p["port"], p["protocol"]) for p in proxy["ports"]) == [(8080, "TCP"), (8443, "TCP")]
    # The admin port: only the listed peers, exactly port 9090.
    assert admin["from"] == PEERS
    assert admin["ports"] == [{"port": 9090, "protocol": "TCP"}]
    # No rule anywhere opens 9090 to everyone.
    open_ports = {p["port"] for rule in spec["ingress"] if "from" not in rule for p in rule["ports"]}
    assert 9090 not in open_ports
    # Every port the pod serves is covered by exactly one rule.
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    served = sorted(p["containerPort"] for p in c["ports"])
    covered = sorted(p["port"] for rule in spec["ingress"] for p in rule["ports"])
    assert covered == served


def test_on_without_peers_closes_the_admin_port(render):
    spec = policy(render({"networkPolicy": {"enabled": True}}))["spec"]
    (proxy,) = spec["ingress"]
    assert "from" not in proxy
    assert sorted(p["port"] for p in proxy["ports"]) == [8080, 8443]


def test_ports_follow_values(render):
    spec = policy(render({**ON, "ports": {"http": 8000, "https": 8001, "admin": 9191}}))["spec"]
    proxy, admin = spec["ingress"]
    assert sorted(p["port"] for p in proxy["ports"]) == [8000, 8001]
    assert [p["port"] for p in admin["ports"]] == [9191]


@pytest.mark.parametrize("values", [ON, {"networkPolicy": {"enabled": True}}], ids=["peers", "no-peers"])
def test_rendering_is_valid(kubernetes_validate, render, values):
    kv = kubernetes_validate
    objs = render(values)
    np = policy(objs)
    for version in (MIN_KUBE_VERSION, kv.latest_version()):
        for o in objs:
            try:
                kv.validate(o, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{o['kind']}/{o['metadata']['name']} (Kubernetes {version}): {e.message} at {list(e.path)}")
    assert np in objs


def test_schema(helm):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(ON)
        chart.validate_schema({"networkPolicy": {"enabled": False, "adminFrom": []}})
        chart.validate_schema({"networkPolicy": {"enabled": True, "adminFrom": [
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["ops"]}]}},
            {"namespaceSelector": {}},
        ]}})
        for bad in (
            {"networkPolicy": {"enabled": "yes"}},
            {"networkPolicy": {"adminFrom": "10.0.0.0/8"}},
            {"networkPolicy": {"adminFrom": [{}]}},
            {"networkPolicy": {"adminFrom": [{"ipBlock": {"except": ["10.0.0.0/8"]}}]}},
            {"networkPolicy": {"adminFrom": [{"ipBlock": {"cidr": "10.0.0.0"}}]}},
            {"networkPolicy": {"adminFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"},
                                              "podSelector": {"matchLabels": {"a": "b"}}}]}},
            {"networkPolicy": {"adminFrom": [{"nodeSelector": {}}]}},
            {"networkPolicy": {"allowAll": True}},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)


def test_lint_is_clean_with_the_policy_on(helm):
    report = helm.lint(str(CHART), ON, namespace=NAMESPACE, strict=True, kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == [], problems
