"""A minimal Kubernetes API server for offline tests: discovery for the kinds Arc's manifests
use, GET of stored objects (404 otherwise), and a request log.

Enough for Helm's `lookup` (chart rendering with a cluster) and for
`kubectl apply --dry-run=client`, which map kinds through discovery and read the live object
before printing what they would do. Nothing is ever written.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READ = ["get", "list", "watch"]
ALL = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

# group/version -> [(plural, kind, namespaced)]
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("serviceaccounts", "ServiceAccount", True),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("events", "Event", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [
        ("ingresses", "Ingress", True),
        ("ingressclasses", "IngressClass", False),
    ],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "apiextensions.k8s.io/v1": [
        ("customresourcedefinitions", "CustomResourceDefinition", False)
    ],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
    "arc-gateway.io/v1alpha1": [("arcpolicies", "ArcPolicy", True)],
}


def _resource_list(gv: str) -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ALL,
            }
            for plural, kind, namespaced in RESOURCES[gv]
        ],
    }


def _groups() -> dict:
    groups = []
    for gv in RESOURCES:
        if "/" not in gv:
            continue
        group, version = gv.split("/")
        entry = {"groupVersion": gv, "version": version}
        groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class FakeApiServer:
    """Serves on 127.0.0.1 (port chosen by the kernel) until `close()`."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}  # request path -> object
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                path = self.path.split("?", 1)[0].rstrip("/")
                server.requests.append(("GET", path))
                if path == "/version":
                    return self._send(200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0",
                                            "platform": "linux/amd64"})
                if path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": []})
                if path == "/api/v1":
                    return self._send(200, _resource_list("v1"))
                if path == "/apis":
                    return self._send(200, _groups())
                if path.startswith("/apis/"):
                    gv = path[len("/apis/"):]
                    if gv in RESOURCES:
                        return self._send(200, _resource_list(gv))
                if path in server.objects:
                    return self._send(200, server.objects[path])
                name = path.rsplit("/", 1)[-1]
                return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": f"\"{name}\" not found", "reason": "NotFound",
                                        "code": 404})

            def _refuse(self) -> None:
                server.requests.append((self.command, self.path))
                self._send(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "message": "this test server is read-only",
                                 "reason": "MethodNotAllowed", "code": 405})

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self) -> str:
        return (
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: fake, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: fake, user: {token: fake}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: default}}]\n"
            "current-context: fake\n"
        )

    def put(self, path: str, obj: dict) -> None:
        self.objects[path] = obj

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
