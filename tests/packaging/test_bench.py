"""The benchmark harness's own logic: ratio tables, and the Kubernetes path of items 5 and 7
(bench/kube.py against the in-repo API server emulator, and Arc in Kubernetes mode following
an Ingress update). The timed runs themselves are not tests: they live in bench/run.sh."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, missing

sys.path.insert(0, str(ROOT / "bench"))

import arcbench  # noqa: E402
import kube  # noqa: E402


def test_table_ratios_are_per_pair_medians_against_nginx():
    t = arcbench.Table("x", 3)
    t.add_values("requests/s ↑", {"arc-uring": [110, 90, 130], "nginx": [100, 100, 100]})
    md, ratios = t.render(["arc-uring", "nginx"])
    assert ratios[("requests/s ↑", "arc-uring")] == pytest.approx((1.1, 0.9, 1.3))
    assert "1.10 (0.90–1.30)" in md


def test_kubernetes_columns_get_their_own_ratio():
    t = arcbench.Table("rc", 1, columns=arcbench.PROXIES + ["arc-uring-k8s"])
    t.add_values("ms ↓", {"nginx": [100.0], "arc-uring": [2.0], "arc-uring-k8s": [50.0]}, 2)
    md, ratios = t.render(["arc-uring", "nginx", "arc-uring-k8s"])
    assert ratios[("ms ↓", "arc-uring-k8s")][0] == pytest.approx(0.5)
    assert "Arc io_uring via Ingress / nginx" in md


def test_targets_table_reads_cpu_where_client_bound():
    chart = [("keep-alive 1k req/s", "arc-uring", (1.07, 1.0, 1.1), 1.15, True),
             ("keep-alive 1k req/s", "arc-epoll", (1.20, 1.1, 1.3), 1.15, True),
             ("RSS plain idle conns", "arc-uring", (0.5, 0.5, 0.5), 0.6, False)]
    cpu = {("keep-alive 1k req/s", "arc-uring"): (True, 0.8),
           ("keep-alive 1k req/s", "arc-epoll"): (False, 0.9)}
    md = arcbench.targets_table(chart, cpu)
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "1.07 not met ‡" in rows["keep-alive 1k req/s"]
    assert "1.20 met |" in rows["keep-alive 1k req/s"]
    assert "0.80 (≙ 1.25×) / 0.90 (≙ 1.11×)" in rows["keep-alive 1k req/s"]
    assert "0.50 met" in rows["RSS plain idle conns"]


def _binary(name: str) -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / name
    if not path.exists():
        cargo = shutil.which("cargo")
        if cargo is None:
            missing("cargo", f"needed to build {name}")
        pkg = ["-p", "arc-e2e"] if name == "arc-kube-emulator" else []
        subprocess.run([cargo, "build", *pkg, "--bin", name], cwd=ROOT, check=True,
                       timeout=1800)
    return path


class _Named(BaseHTTPRequestHandler):
    """A backend answering its name on every path."""

    def do_GET(self):  # noqa: N802 (http.server API)
        body = self.server.name
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _backend(name: bytes, port: int = 0):
    """One backend on 127.0.0.1 (and the same port on ::1 when available): `localhost` in an
    ExternalName Service may resolve to either."""
    servers = [ThreadingHTTPServer(("127.0.0.1", port), _Named)]
    port = servers[0].server_address[1]
    try:
        servers.append(_V6Server(("::1", port), _Named))
    except OSError:
        pass
    for s in servers:
        s.name = name
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return port, servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kubernetes_path_follows_an_ingress_update():
    emulator_bin = _binary("arc-kube-emulator")
    arc_bin = _binary("arc-gateway")
    work = tempfile.mkdtemp(prefix="arc-bench-test.")
    port_a, servers_a = _backend(b"A")
    port_b, servers_b = _backend(b"B")
    emu = kube.Emulator(str(emulator_bin), work, "0-1")
    arc = None
    try:
        emu.setup({"rc-a": port_a, "rc-b": port_b})
        emu.create_ingress("rc", "/rc", "rc-a", port_a)
        listed = emu.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{kube.NAMESPACE}"
                                    "/ingresses")
        assert [i["metadata"]["name"] for i in listed["items"]] == ["rc"]

        http_port, admin_port = _free_port(), _free_port()
        cfg = pathlib.Path(work) / "arc.json"
        cfg.write_text(json.dumps(kube.arc_kube_config(False, http_port, admin_port)))
        env = {**os.environ, "POD_NAMESPACE": kube.NAMESPACE, "POD_NAME": "bench-test"}
        log = open(pathlib.Path(work) / "arc.log", "wb")
        arc = subprocess.Popen([str(arc_bin), "--config", str(cfg), "--kubeconfig",
                                emu.kubeconfig], env=env, stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)

        def serves(body):
            return lambda: arcbench.http_get(http_port, "/rc") == (200, body)

        assert kube.wait_until(serves(b"A"), 60.0, step=0.05) is not None, \
            (pathlib.Path(work) / "arc.log").read_text()[-2000:]
        emu.point_ingress("rc", "/rc", "rc-b", port_b)
        took = kube.wait_until(serves(b"B"), 30.0, step=0.02)
        assert took is not None, "Arc did not follow the Ingress update"
        got = emu.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{kube.NAMESPACE}"
                                 "/ingresses/rc")
        backend = got["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "rc-b", "port": {"number": port_b}}

        with pytest.raises(kube.KubeError, match="404"):
            emu.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{kube.NAMESPACE}"
                               "/ingresses/missing")
    finally:
        if arc is not None:
            arc.terminate()
            try:
                arc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                arc.kill()
                arc.wait()
        emu.stop()
        for s in servers_a + servers_b:
            s.shutdown()
        shutil.rmtree(work, ignore_errors=True)
