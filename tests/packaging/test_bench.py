"""The benchmark harness's own logic: ratio tables, and the Kubernetes path of items 5 and 7
(bench/kube.py against the in-repo API server emulator, and Arc in Kubernetes mode following
an Ingress update). The timed runs themselves are not tests: they live in bench/run.sh."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, missing, need_tool

sys.path.insert(0, str(ROOT / "bench"))

import arcbench  # noqa: E402
import kube  # noqa: E402


def test_table_ratios_are_per_pair_medians_against_nginx():
    t = arcbench.Table("x", 3)
    t.add_values("requests/s ↑", {"arc-uring": [110, 90, 130], "nginx": [100, 100, 100]})
    md, ratios = t.render(["arc-uring", "nginx"])
    assert ratios[("requests/s ↑", "arc-uring")] == pytest.approx((1.1, 0.9, 1.3))
    assert "1.10 (0.90–1.30)" in md


def test_sleeps_count_the_blocking_context_switches_of_a_process_tree():
    """A process that sleeps 20 times shows at least 20 more voluntary context switches; one
    that waits on its input shows none meanwhile."""
    import time
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\n"
         "[time.sleep(0.002) for _ in range(20)]\nprint('done', flush=True)\n"
         "sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(0.1)  # blocked on its first readline by now
        idle0 = arcbench.sleeps(child.pid)
        time.sleep(0.2)
        assert arcbench.sleeps(child.pid) == idle0, "a blocked process does not switch"
        child.stdin.write(b"go\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"done\n"
        assert arcbench.sleeps(child.pid) - idle0 >= 20
        assert arcbench.sleeps(None) == 0
    finally:
        child.kill()
        child.wait()


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


def test_tlsload_report_is_read_from_its_json_line():
    line = json.dumps({"handshakes": 3000, "failed": 2, "seconds": 2.0, "rate": 1500.0,
                       "errors": ["response: timed out"], "completed_total": 4510,
                       "key_exchange": "X25519", "cipher_suite": "TLS13_AES_256_GCM_SHA384"})
    res = arcbench.parse_tlsload("\n" + line + "\n")
    assert res["rate"] == 1500.0 and res["requests"] == 3000 and res["errors"] == 2
    assert res["all"] == 4510 and res["kx"] == "X25519"
    assert res["messages"] == ["response: timed out"]
    assert "error" not in res


def test_tlsload_without_a_handshake_is_a_failed_run():
    line = json.dumps({"handshakes": 0, "failed": 40, "seconds": 1.0, "rate": 0.0,
                       "errors": ["connect: Connection refused (os error 111)"],
                       "completed_total": 0, "key_exchange": None, "cipher_suite": None})
    res = arcbench.parse_tlsload(line)
    assert res["requests"] == 0 and res["errors"] == 40
    assert "Connection refused" in res["error"]
    res = arcbench.parse_tlsload("", "arc-tlsload: --concurrency must be at least 1\n")
    assert res["requests"] == 0 and "--concurrency" in res["error"]
    assert "error" in arcbench.parse_tlsload('{"handshakes": "many"}')


def test_negotiated_parameters_are_summarised_per_run():
    same = {"nginx": [{"kx": "X25519", "suite": "S"}],
            "arc-uring": [{"kx": "X25519", "suite": "S"}]}
    assert arcbench.negotiated(same) == "X25519 with S by every target"
    mixed = {"nginx": [{"kx": "X25519", "suite": "S"}],
             "arc-uring": [{"kx": "secp256r1", "suite": "S"}], "direct": [{"error": "x"}]}
    text = arcbench.negotiated(mixed)
    assert "X25519 with S by nginx" in text and "secp256r1 with S by Arc io_uring" in text
    assert arcbench.negotiated({"nginx": [None]}).startswith("nothing")


class _Empty200(BaseHTTPRequestHandler):
    """HTTP/1.0 200 with an empty body, then close (as the bench backend answers /b0)."""

    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args):
        pass


def test_tlsload_cli_matches_the_driver(tmp_path):
    """The driver's arc-tlsload invocation against a TLS 1.3 server (ECDSA P-256, self-signed)."""
    openssl = need_tool("openssl", "openssl")
    need_tool("taskset", "util-linux")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=bench.test"], check=True, capture_output=True,
                   timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(crt), str(key))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Empty200)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        o = type("O", (), {"tlsload_bin": str(_binary("arc-tlsload"))})()
        res = arcbench.run_tlsload(o, srv.server_address[1], 0.3, 1.0, 2)
    finally:
        srv.shutdown()
        srv.server_close()
    assert "error" not in res, res
    assert res["requests"] > 0 and res["errors"] == 0, res
    assert res["all"] > res["requests"], res  # the warm-up's exchanges are not in the rate
    assert res["kx"] == "X25519" and res["suite"].startswith("TLS13_"), res


def _binary(name: str) -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / name
    if not path.exists():
        cargo = shutil.which("cargo")
        if cargo is None:
            missing("cargo", f"needed to build {name}")
        pkg = {"arc-kube-emulator": ["-p", "arc-e2e"],
               "arc-tlsload": ["-p", "arc-bench-tools"]}.get(name, [])
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
