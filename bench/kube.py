"""Kubernetes side of the benchmark: an API server for Arc's controller to watch, a small REST
client for it, and Arc started in Kubernetes mode.

The API server is the in-repo emulator (`arc-kube-emulator`, crate `e2e`): list/watch with
resourceVersions, validation as Kubernetes does it, merge patches. Arc watches it exactly as it
watches a real cluster (kube-rs reflectors over HTTPS with a bearer token). Only loopback.

Backends are `ExternalName` Services naming `localhost`: the emulator, like Kubernetes, refuses
loopback addresses in EndpointSlices, and the bench's backends live on loopback.
"""

import base64
import http.client
import json
import os
import re
import ssl
import subprocess
import threading
import time

NAMESPACE = "arc-bench"
CLASS = "arc-bench"
CONTROLLER = "arc-gateway.io/bench"


class KubeError(Exception):
    pass


class Emulator:
    """The emulator process (on the load generator's CPU) and a client for its REST API."""

    def __init__(self, binary, workdir, cpu):
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        logf = open(os.path.join(workdir, "emulator.log"), "ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpu, binary, "--kubeconfig", self.kubeconfig],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True)
        logf.close()
        box = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(30.0)
        line = box[0] if box else ""
        if not line.startswith("ready "):
            self.stop()
            raise KubeError(f"arc-kube-emulator did not start (printed {line.strip()!r})")
        with open(self.kubeconfig) as f:
            kc = f.read()
        server = re.search(r"server:\s*https://([0-9.]+):(\d+)", kc)
        ca = re.search(r"certificate-authority-data:\s*(\S+)", kc)
        token = re.search(r"token:\s*(\S+)", kc)
        if not (server and ca and token):
            self.stop()
            raise KubeError(f"unexpected kubeconfig format in {self.kubeconfig}")
        self.host, self.port = server.group(1), int(server.group(2))
        self.token = token.group(1)
        self.ctx = ssl.create_default_context(
            cadata=base64.b64decode(ca.group(1)).decode())
        self.local = threading.local()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- REST
    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, content_type="application/json"):
        """One API call; returns the decoded object. Retries once on a dropped keep-alive
        connection; raises KubeError on a non-2xx answer."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
                break
            except (OSError, http.client.HTTPException):
                c.close()
                self.local.conn = None
                if attempt:
                    raise
        if not 200 <= r.status < 300:
            raise KubeError(f"{method} {path}: {r.status} {raw[:200].decode(errors='replace')}")
        return json.loads(raw) if raw else {}

    def create(self, path, obj):
        return self.request("POST", path, obj)

    def merge_patch(self, path, patch):
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    # -- the objects the bench uses
    def setup(self, ports):
        """Namespace, IngressClass and one ExternalName Service per named backend port."""
        self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": NAMESPACE}})
        self.create("/apis/networking.k8s.io/v1/ingressclasses", {
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": CLASS}, "spec": {"controller": CONTROLLER}})
        for name, port in ports.items():
            self.create(f"/api/v1/namespaces/{NAMESPACE}/services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"type": "ExternalName", "externalName": "localhost",
                         "ports": [{"name": "http", "port": port}]}})

    @staticmethod
    def ingress(name, path, service, port, host=None):
        rule = {"http": {"paths": [{"path": path, "pathType": "Prefix", "backend": {
            "service": {"name": service, "port": {"number": port}}}}]}}
        if host:
            rule["host"] = host
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name},
                "spec": {"ingressClassName": CLASS, "rules": [rule]}}

    def create_ingress(self, name, path, service, port, host=None):
        self.create(f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses",
                    self.ingress(name, path, service, port, host))

    def point_ingress(self, name, path, service, port, host=None):
        """Moves an Ingress's only rule to another Service (merge patch replaces the list)."""
        spec = self.ingress(name, path, service, port, host)["spec"]
        self.merge_patch(f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses/{name}",
                         {"spec": {"rules": spec["rules"]}})


def arc_kube_config(uring, http_port, admin_port):
    """Arc in Kubernetes mode: same data-plane settings as the file-configured Arc of the
    bench, routes only from Ingress objects of the bench's class and namespace; the
    controller's settings (debounce included) are Arc's defaults."""
    return {
        "node": {"workers": 1},
        "io_uring": {"enabled": uring},
        "listeners": [{"name": "http", "bind": f"127.0.0.1:{http_port}", "protocol": "http"}],
        "observability": {"metrics_bind": f"127.0.0.1:{admin_port}"},
        "logging": {"level": "warn", "format": "text", "access_log": {"enabled": False}},
        "lifecycle": {"drain_timeout": "1s"},
        "limits": {"idle_timeout": "300s"},
        "kubernetes": {"enabled": True, "controller_name": CONTROLLER, "ingress_class": CLASS,
                       "watch_namespaces": [NAMESPACE], "election_id": "arc-bench-leader"},
    }


def wait_until(pred, timeout, step=0.002):
    """Polls pred() until true; returns the seconds it took, or None after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None
