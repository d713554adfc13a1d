"""The Helm chart rendered through the Helm v4 library (helm-python-sdk): lint, schema, and the
rendered objects for default and non-default values."""

from __future__ import annotations

import base64
import tomllib

import pytest

from conftest import CHART, NAMESPACE, find, kinds, token_of

PLACEHOLDER = "__ARC_TOKEN__"


def container(objs):
    dep = find(objs, "Deployment", "arc-gateway")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def arc_toml(objs) -> dict:
    return tomllib.loads(find(objs, "ConfigMap", "arc-gateway-config")["data"]["arc.toml"])


# --- lint and schema -----------------------------------------------------------------------


def test_lint_is_clean(helm):
    for values in ({}, {"xdp": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}}):
        report = helm.lint(str(CHART), values, namespace=NAMESPACE, strict=True, kube_version="v1.33.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        # The only info-level finding allowed is the missing icon.
        assert problems == [], problems
        assert report["total_charts_linted"] == 1


def test_schema_accepts_defaults_and_refuses_bad_values(helm):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({})
        chart.validate_schema({"nodePort": {"externalTrafficPolicy": "Local"}, "config": {"workers": 4}})
        for bad in (
            {"nodePort": {"http": 80}},
            {"nodePort": {"externalTrafficPolicy": "Sometimes"}},
            {"controlPlane": {"authToken": PLACEHOLDER}},
            {"config": {"workers": -1}},
            {"config": {"drainTimeout": "25"}},
            {"seccompProfile": {"type": "Permissive"}},
            {"replicas": 3},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)


# --- defaults ------------------------------------------------------------------------------


def test_default_objects(default_objects):
    assert sorted(kinds(default_objects)) == sorted([
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap",
        "Secret", "IngressClass", "Deployment", "Service", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ])
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "IngressClass"}
    for o in default_objects:
        if o["kind"] in cluster_scoped:
            assert "namespace" not in o["metadata"], o["kind"]
        else:
            assert o["metadata"]["namespace"] == NAMESPACE, o["kind"]


def test_deployment_defaults(default_objects):
    dep, c = container(default_objects)
    spec = dep["spec"]
    assert "replicas" not in spec, "the HPA owns the replica count"
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 35
    assert pod["serviceAccountName"] == "arc-gateway"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "https": 8443, "admin": 9090}
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert live["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert (live["initialDelaySeconds"], live["periodSeconds"]) == (5, 10)
    assert ready["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert (ready["initialDelaySeconds"], ready["periodSeconds"]) == (3, 5)
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"},
                              "limits": {"cpu": "2000m", "memory": "1Gi"}}
    # config file: the ConfigMap key mounted where --config points
    assert c["args"] == ["--config", "/etc/arc/arc.toml"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    vol = next(v for v in pod["volumes"] if v["name"] == "config")
    assert mount["mountPath"] == "/etc/arc" and mount["readOnly"] is True
    assert vol["configMap"]["name"] == "arc-gateway-config"


def test_security_context_defaults(default_objects):
    dep, c = container(default_objects)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}}
    assert "hostNetwork" not in pod
    assert all(v["name"] != "bpffs" for v in pod["volumes"])


def test_services_defaults(default_objects):
    dep, _ = container(default_objects)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    cip = find(default_objects, "Service", "arc-gateway")
    assert cip["spec"]["type"] == "ClusterIP"
    assert {p["name"]: (p["port"], p["targetPort"]) for p in cip["spec"]["ports"]} == {
        "http": (8080, "http"), "https": (8443, "https"), "admin": (9090, "admin")}
    np = find(default_objects, "Service", "arc-gateway-nodeport")
    assert np["spec"]["type"] == "NodePort"
    assert np["spec"]["externalTrafficPolicy"] == "Cluster"
    assert {p["name"]: p["nodePort"] for p in np["spec"]["ports"]} == {"http": 30080, "https": 30443}
    for svc in (cip, np):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_hpa_and_pdb_defaults(default_objects):
    hpa = find(default_objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "arc-gateway"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = find(default_objects, "PodDisruptionBudget")
    dep, _ = container(default_objects)
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] == 1


def test_rbac_is_exactly_least_privilege(default_objects):
    def rules(obj):
        return sorted((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in obj["rules"])

    read = ("get", "list", "watch")
    assert rules(find(default_objects, "ClusterRole", "arc-gateway")) == sorted([
        (("",), ("services", "secrets"), read),
        (("discovery.k8s.io",), ("endpointslices",), read),
        (("",), ("nodes",), ("get",)),
        (("networking.k8s.io",), ("ingresses", "ingressclasses"), read),
        (("networking.k8s.io",), ("ingresses/status",), ("patch",)),
        (("",), ("events",), ("create", "patch")),
        (("events.k8s.io",), ("events",), ("create", "patch")),
    ])
    assert rules(find(default_objects, "Role", "arc-gateway")) == sorted([
        (("",), ("configmaps",), read),
        (("coordination.k8s.io",), ("leases",), ("get", "create", "update", "patch")),
    ])
    subject = [{"kind": "ServiceAccount", "name": "arc-gateway", "namespace": NAMESPACE}]
    crb = find(default_objects, "ClusterRoleBinding", "arc-gateway")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "arc-gateway"}
    assert crb["subjects"] == subject
    rb = find(default_objects, "RoleBinding", "arc-gateway")
    assert rb["roleRef"]["kind"] == "Role" and rb["subjects"] == subject
    find(default_objects, "ServiceAccount", "arc-gateway")


def test_ingress_class_defaults(default_objects):
    ic = find(default_objects, "IngressClass", "arc")
    assert ic["spec"]["controller"] == "arc-gateway.io/ingress-controller"
    assert "annotations" not in ic["metadata"]


def test_config_defaults(default_objects):
    cfg = arc_toml(default_objects)
    assert cfg["node"]["workers"] == 0
    assert cfg["io_uring"] == {"enabled": "auto", "sqpoll": False, "uring_entries": 4096}
    assert cfg["lifecycle"]["drain_timeout"] == "25s"
    assert cfg["observability"]["metrics_bind"] == "0.0.0.0:9090"
    assert [(l["name"], l["bind"]) for l in cfg["listeners"]] == [("http", "0.0.0.0:8080"), ("https", "0.0.0.0:8443")]
    assert "upstreams" not in cfg and "routes" not in cfg, "backends come from Ingresses"
    assert cfg["upstream_defaults"] == {"pool": {"max_idle": 64, "idle_timeout": "60s"},
                                        "connect_timeout": "5s", "read_timeout": "60s",
                                        "send_timeout": "60s"}
    assert cfg["tls"] == {"session_cache": 10000, "session_tickets": False}
    kube = cfg["kubernetes"]
    assert kube["enabled"] is True and kube["ingress_class"] == "arc"
    assert kube["publish_service"] == f"{NAMESPACE}/arc-gateway-nodeport"
    assert kube["publish_status_address"] == []
    assert "control_plane" not in cfg, "the token lives in the Secret"
    assert "xdp" not in cfg


# --- token ----------------------------------------------------------------------------------


def test_token_generated_when_none_given(render):
    a = token_of(find(render(), "Secret", "arc-gateway-secret"))
    b = token_of(find(render(), "Secret", "arc-gateway-secret"))
    for t in (a, b):
        assert len(t) >= 32 and t.isalnum() and PLACEHOLDER not in t
    assert a != b, "a fresh install gets a random token"


def test_given_token_is_kept(render):
    secret = find(render({"controlPlane": {"authToken": "s3cr3t-given-token"}}), "Secret")
    assert secret["type"] == "Opaque"
    assert token_of(secret) == "s3cr3t-given-token"


def test_placeholder_token_is_refused(helm, render):
    with pytest.raises(helm.HelmError):
        render({"controlPlane": {"authToken": PLACEHOLDER}})
    with pytest.raises(helm.HelmError):
        render({"controlPlane": {"authToken": f"x{PLACEHOLDER}y"}})


def test_existing_token_is_kept_across_upgrades(helm, render):
    from fakeapi import FakeApiServer

    server = FakeApiServer()
    try:
        with helm.Config(kubeconfig_content=server.kubeconfig(), namespace=NAMESPACE) as cfg:
            # no Secret yet: a new random token
            fresh = token_of(find(render(config=cfg), "Secret"))
            assert len(fresh) >= 32
            server.put(f"/api/v1/namespaces/{NAMESPACE}/secrets/arc-gateway-secret", {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "arc-gateway-secret", "namespace": NAMESPACE},
                "data": {"auth-token": base64.b64encode(b"existingToken42").decode()},
            })
            assert token_of(find(render(config=cfg), "Secret")) == "existingToken42"
            # an explicit value still wins
            given = render({"controlPlane": {"authToken": "explicit"}}, config=cfg)
            assert token_of(find(given, "Secret")) == "explicit"
        assert ("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/arc-gateway-secret") in server.requests
    finally:
        server.close()


# --- non-default values ---------------------------------------------------------------------


def test_hpa_off_sets_replicas(render):
    objs = render({"autoscaling": {"enabled": False}})
    assert "HorizontalPodAutoscaler" not in kinds(objs)
    assert find(objs, "Deployment")["spec"]["replicas"] == 2
    objs = render({"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert find(objs, "Deployment")["spec"]["replicas"] == 3
    objs = render({"autoscaling": {"minReplicas": 3, "maxReplicas": 7}})
    hpa = find(objs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    assert "replicas" not in find(objs, "Deployment")["spec"]


def test_xdp_adds_privileges_only_when_set(render, default_objects):
    _, c = container(default_objects)
    assert "privileged" not in c["securityContext"]
    assert "add" not in c["securityContext"]["capabilities"]
    objs = render({"xdp": {"enabled": True, "interface": "eth0", "denyCidrs": ["192.0.2.0/24"]}})
    dep, c = container(objs)
    sc = c["securityContext"]
    assert sc["privileged"] is True
    assert set(sc["capabilities"]["add"]) == {"NET_ADMIN", "SYS_ADMIN"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 0
    assert any(v["name"] == "bpffs" and v["hostPath"]["path"] == "/sys/fs/bpf" for v in pod["volumes"])
    cfg = arc_toml(objs)
    assert cfg["xdp"] == {"enabled": True, "interface": "eth0", "mode": "auto", "deny_cidrs": ["192.0.2.0/24"]}


def test_seccomp_options(helm, render):
    objs = render({"seccompProfile": {"type": "Localhost", "localhostProfile": "arc-gateway-io-uring.json"}})
    pod = find(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": "arc-gateway-io-uring.json"}
    objs = render({"seccompProfile": {"type": "Unconfined"}})
    assert find(objs, "Deployment")["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    with pytest.raises(helm.HelmError):
        render({"seccompProfile": {"type": "Localhost"}})


def test_service_monitor_optional(render, default_objects):
    assert "ServiceMonitor" not in kinds(default_objects)
    objs = render({"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}}})
    sm = find(objs, "ServiceMonitor", "arc-gateway")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"] == [{"port": "admin", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    assert sm["spec"]["selector"]["matchLabels"].items() <= find(objs, "Service", "arc-gateway")["metadata"]["labels"].items()


def test_node_port_options(render):
    objs = render({"nodePort": {"http": 31080, "https": 31443, "externalTrafficPolicy": "Local"}})
    np = find(objs, "Service", "arc-gateway-nodeport")
    assert {p["name"]: p["nodePort"] for p in np["spec"]["ports"]} == {"http": 31080, "https": 31443}
    assert np["spec"]["externalTrafficPolicy"] == "Local"
    objs = render({"nodePort": {"enabled": False}})
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Service"] == ["arc-gateway"]
    assert arc_toml(objs)["kubernetes"]["publish_service"] == f"{NAMESPACE}/arc-gateway"


def test_ports_follow_values(render):
    objs = render({"ports": {"http": 8000, "https": 8001, "admin": 9191}})
    _, c = container(objs)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "https": 8001, "admin": 9191}
    assert c["livenessProbe"]["httpGet"]["port"] == "admin"
    cfg = arc_toml(objs)
    assert cfg["observability"]["metrics_bind"] == "0.0.0.0:9191"
    assert [l["bind"] for l in cfg["listeners"]] == ["0.0.0.0:8000", "0.0.0.0:8001"]
    cip = find(objs, "Service", "arc-gateway")
    assert [p["port"] for p in cip["spec"]["ports"]] == [8000, 8001, 9191]


def test_config_values(render):
    objs = render({"config": {
        "workers": 4, "maxConnections": 200000,
        "ioUring": {"sqpoll": True, "uringEntries": 8192},
        "upstreamDefaults": {"pool": {"maxIdle": 256, "idleTimeout": "90s"}, "connectTimeout": "5s",
                             "readTimeout": "5s", "sendTimeout": "30s"},
        "drainTimeout": "20s",
        "kubernetes": {"watchNamespaces": ["team-a", "team-b"]},
        "tls": {"sessionCache": 0, "sessionTickets": True},
    }})
    cfg = arc_toml(objs)
    assert cfg["node"]["workers"] == 4
    assert cfg["max_connections"] == 200000
    assert cfg["io_uring"]["sqpoll"] is True and cfg["io_uring"]["uring_entries"] == 8192
    d = cfg["upstream_defaults"]
    assert d["pool"] == {"max_idle": 256, "idle_timeout": "90s"}
    assert (d["connect_timeout"], d["read_timeout"], d["send_timeout"]) == ("5s", "5s", "30s")
    assert cfg["lifecycle"]["drain_timeout"] == "20s"
    assert cfg["kubernetes"]["watch_namespaces"] == ["team-a", "team-b"]
    assert cfg["tls"] == {"session_cache": 0, "session_tickets": True}


def test_node_name_from_the_downward_api(default_objects):
    # A NodePort publish Service publishes the address of the node each replica runs on.
    _, c = container(default_objects)
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"] == {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_publish_status_address(helm, render):
    objs = render({"config": {"kubernetes": {"publishStatusAddress": ["192.0.2.10", "2001:db8::1", "arc.example.com"]}}})
    kube = arc_toml(objs)["kubernetes"]
    assert kube["publish_status_address"] == ["192.0.2.10", "2001:db8::1", "arc.example.com"]
    assert kube["publish_service"] == f"{NAMESPACE}/arc-gateway-nodeport"
    with helm.Chart.load(str(CHART)) as chart:
        for bad in (["*.example.com"], ["Arc.Example.com"], "192.0.2.10", [""]):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema({"config": {"kubernetes": {"publishStatusAddress": bad}}})


def test_ingress_class_default_and_prestop_exec(render):
    objs = render({"ingressClass": {"default": True}, "preStop": {"mode": "exec", "seconds": 7}})
    ic = find(objs, "IngressClass", "arc")
    assert ic["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"}
    _, c = container(objs)
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "7"]}}


def test_io_uring_seccomp_profile_allows_io_uring():
    import json

    from conftest import ROOT

    profile = json.loads((ROOT / "deploy" / "seccomp" / "arc-gateway-io-uring.json").read_text())
    denied = {n for rule in profile["syscalls"] if rule["action"] != "SCMP_ACT_ALLOW" for n in rule["names"]}
    assert not {"io_uring_setup", "io_uring_enter", "io_uring_register"} & denied
    assert {"ptrace", "kexec_load", "mount", "init_module", "unshare"} <= denied
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
