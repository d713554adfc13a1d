#!/usr/bin/env python3
"""Arc benchmark driver: the matrix of BENCHMARK.md against nginx and HAProxy in the same run.

Called by bench/run.sh (which installs the tools and builds Arc); can also be run directly:

    arcbench.py [--quick | --full] [--cases LIST] --arc-bin PATH

Every figure is read as a ratio against a tuned nginx measured in the same run, in alternating
order. The proxy under test runs alone on CPU 1 with one worker; the load generator, the
backend and this driver run on CPU 0. Proxy CPU time is read from /proc (all threads and
processes of the proxy). Everything listens on 127.0.0.1 with free ports; every process
started here is stopped on exit and the temporary directory is removed.
"""

import argparse
import datetime
import glob
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import kube

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HZ = os.sysconf("SC_CLK_TCK")
LOADGEN_CPU = "0"
PROXY_CPU = "1"
CLIENT_BOUND_BUSY = 95.0

PROXIES = ["arc-uring", "arc-epoll", "nginx", "haproxy"]
LABEL = {
    "direct": "direct",
    "arc-uring": "Arc io_uring",
    "arc-epoll": "Arc epoll",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "arc-uring-k8s": "Arc io_uring via Ingress",
    "arc-epoll-k8s": "Arc epoll via Ingress",
}
ARCS = ["arc-uring", "arc-epoll"]
# Arc in Kubernetes mode (routes from Ingress objects through the controller), items 5 and 7.
KUBE_ARCS = {"arc-uring-k8s": "arc-uring", "arc-epoll-k8s": "arc-epoll"}
ALL_CASES = ["keepalive", "close", "latency", "tls", "routechange", "idle", "scale"]

# Run plans. Environment variables override single knobs (see README).
MODES = {
    "quick": dict(warmup=1, duration=2, headline_pairs=1, pairs=1, bodies=["1k"],
                  rates=[0.75], idle_conns=1000, idle_tls=False, route_changes=5,
                  route_counts=[1000]),
    "default": dict(warmup=2, duration=8, headline_pairs=5, pairs=1, bodies=["1k", "64k"],
                    rates=[0.5, 0.75], idle_conns=10000, idle_tls=True, route_changes=100,
                    route_counts=[1000, 10000]),
    "full": dict(warmup=10, duration=30, headline_pairs=5, pairs=3, bodies=["1k", "64k"],
                 rates=[0.5, 0.75], idle_conns=10000, idle_tls=True, route_changes=100,
                 route_counts=[1000, 10000]),
}
BODY_BYTES = {"0": 0, "1k": 1024, "64k": 65536}


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sk:
            sk.bind(("::1", 0))
        return True
    except OSError:
        return False


def haproxy_maxconn(nofile):
    """HAProxy reserves two descriptors per connection (client and server side)."""
    return max(100, (nofile - 100) // 2)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_num(name, default, cast=float):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return cast(v)
    except ValueError:
        sys.exit(f"{name}={v!r}: not a number")


def env_list(name, default, cast=str):
    v = os.environ.get(name)
    if not v:
        return default
    return [cast(x.strip()) for x in v.split(",") if x.strip()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ /proc accounting

def proc_tree(pid):
    """The process and all its descendants (nginx/haproxy workers), bounded."""
    pids, i = [pid], 0
    while i < len(pids) and i < 256:
        p = pids[i]
        i += 1
        for path in glob.glob(f"/proc/{p}/task/*/children"):
            try:
                with open(path) as f:
                    pids.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    return pids


def cpu_seconds(pid):
    """utime + stime of a process tree (all threads of every process), in seconds."""
    if pid is None:
        return 0.0
    ticks = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            ticks += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / HZ


def sleeps(pid):
    """Voluntary context switches (the thread blocked: a sleep) of a process tree, over all
    threads of every process; 0 without a process."""
    if pid is None:
        return 0
    n = 0
    for p in proc_tree(pid):
        for path in glob.glob(f"/proc/{p}/task/*/status"):
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            n += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return n


def memory_kib(pid):
    """(RSS, PSS) in KiB summed over a process tree. PSS splits pages shared between an
    nginx/haproxy master and its worker, so the sum counts them once."""
    rss = pss = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss


# ------------------------------------------------------------------ HTTP helpers

def http_get(port, path="/", host="bench.test", timeout=1.0):
    """(status, body) or (None, b"") on a connection error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        conn.close()


def wait_http(port, proc=None, path="/b0", timeout=15.0, want=200):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        status, _ = http_get(port, path)
        if status == want:
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------ the rig

class Rig:
    """Owns the temporary directory, the backend and the proxies, and stops them all."""

    def __init__(self, opts):
        self.opts = opts
        self.tmp = tempfile.mkdtemp(prefix="arc-bench.")
        os.chmod(self.tmp, 0o755)
        self.procs = {}
        self.ports = {}
        self.unavailable = {}
        self.route_target = "a"
        self.scale_routes = 0
        self.kube = None          # kube.Emulator once started
        self.kube_error = None    # why the Kubernetes rows are missing
        self.kube_ingresses = 0   # scale Ingress objects created so far
        self.make_cert()

    # -- processes
    def spawn(self, name, argv, cpu, env=None):
        logf = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.tmp,
                             env=None if env is None else {**os.environ, **env})
        logf.close()
        self.procs[name] = p
        return p

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue

    def close(self):
        for name in list(self.procs):
            self.stop(name)
        if self.kube is not None:
            self.kube.stop()
        if os.environ.get("KEEP_TMP"):
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def log_tail(self, name, lines=5):
        try:
            with open(self.path(f"{name}.log"), errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-lines:])
        except OSError:
            return ""

    # -- TLS material: ECDSA P-256, self-signed
    def make_cert(self):
        key, crt = self.path("key.pem"), self.path("cert.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", key], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["openssl", "req", "-x509", "-new", "-key", key, "-out", crt, "-days", "2",
                        "-subj", "/CN=bench.test", "-addext",
                        "subjectAltName=DNS:bench.test,DNS:localhost,IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(self.path("combined.pem"), "w") as out:
            for p in (crt, key):
                with open(p) as f:
                    out.write(f.read())
        self.key, self.crt = key, crt

    # -- backend: nginx `return 200` with fixed bodies, plus two route-change targets
    def start_backend(self):
        b = self.ports["backend"] = free_port()
        bs = self.ports["backend-tls"] = free_port()
        ra = self.ports["rc-a"] = free_port()
        rb = self.ports["rc-b"] = free_port()
        d = self.path("backend")
        os.makedirs(os.path.join(d, "logs"), exist_ok=True)
        # nginx's config tokens stop at 4 KiB: larger bodies come from a file (sendfile).
        locs = []
        for k, n in BODY_BYTES.items():
            if n <= 2048:
                locs.append(f'location = /b{k} {{ default_type text/plain; return 200 "{"a" * n}"; }}')
            else:
                with open(os.path.join(d, f"body{k}"), "w") as f:
                    f.write("a" * n)
                locs.append(f"location = /b{k} {{ default_type text/plain; alias {d}/body{k}; }}")
        locs = "\n    ".join(locs)
        # The route-change backends also answer on ::1: Arc's Ingress path reaches them through
        # an ExternalName Service naming `localhost`, which resolves to both loopbacks.
        v6 = has_ipv6_loopback()
        v6a = f" listen [::1]:{ra};" if v6 else ""
        v6b = f" listen [::1]:{rb};" if v6 else ""
        server = f"""
    {locs}
    location / {{ default_type text/plain; return 200 "{"a" * 1024}"; }}"""
        conf = f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {self.opts.nofile};
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections {self.opts.nofile - 100}; }}
http {{
  access_log off;
  sendfile on;
  open_file_cache max=16;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{b} reuseport backlog=4096;
    {server}
  }}
  server {{
    listen 127.0.0.1:{bs} ssl reuseport backlog=4096;
    ssl_certificate {self.crt};
    ssl_certificate_key {self.key};
    ssl_protocols TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    {server}
  }}
  server {{ listen 127.0.0.1:{ra};{v6a} location / {{ default_type text/plain; return 200 "A"; }} }}
  server {{ listen 127.0.0.1:{rb};{v6b} location / {{ default_type text/plain; return 200 "B"; }} }}
}}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        p = self.spawn("backend", [self.opts.nginx, "-p", d, "-c", os.path.join(d, "nginx.conf")],
                       LOADGEN_CPU)
        if not wait_http(b, p):
            sys.exit(f"backend nginx did not start: {self.log_tail('backend')}")

    # -- proxy configs
    def arc_config(self, name):
        uring = name == "arc-uring"
        b = self.ports["backend"]
        rc = self.ports["rc-a"] if self.route_target == "a" else self.ports["rc-b"]
        upstreams = [
            {"name": "b", "addr": f"127.0.0.1:{b}", "pool": {"max_idle": 128}},
            {"name": "rc", "addr": f"127.0.0.1:{rc}", "pool": {"max_idle": 16}},
        ]
        routes = [{"path": "/rc", "path_type": "Prefix", "upstream": "rc"}]
        for i in range(self.scale_routes):
            upstreams.append({"name": f"u{i}", "addr": f"127.0.0.1:{self.ports['rc-b']}",
                              "pool": {"max_idle": 4}})
            routes.append({"host": f"h{i}.scale.test", "path": f"/s{i}", "path_type": "Prefix",
                           "upstream": f"u{i}"})
        routes.append({"path": "/", "path_type": "Prefix", "upstream": "b"})
        return {
            "node": {"workers": 1},
            "io_uring": {"enabled": uring},
            "listeners": [
                {"name": "http", "bind": f"127.0.0.1:{self.ports[name]}", "protocol": "http"},
                {"name": "https", "bind": f"127.0.0.1:{self.ports[name + '-tls']}",
                 "protocol": "https"},
            ],
            "tls": {
                "certificates": [{"hosts": ["bench.test", "localhost"], "cert": self.crt,
                                  "key": self.key}],
                "default_certificate": {"cert": self.crt, "key": self.key},
                # Resumption off, as the bench nginx (`ssl_session_cache off`,
                # `ssl_session_tickets off`): no NewSessionTicket after a handshake.
                "session_cache": 0,
                "session_tickets": False,
            },
            "upstreams": upstreams,
            "routes": routes,
            "observability": {"metrics_bind": f"127.0.0.1:{self.ports[name + '-admin']}"},
            # The access log is on by default; nginx and HAProxy run without one.
            "logging": {"level": "warn", "format": "text", "access_log": {"enabled": False}},
            "lifecycle": {"drain_timeout": "1s"},
            "limits": {"idle_timeout": "300s"},
        }

    def nginx_forward_headers(self):
        """With FORWARD_HEADERS (the default) nginx sets the request headers Arc sets on every
        forwarded request, as ingress-nginx's template does: the same work on both sides."""
        if not self.opts.forward_headers:
            return ""
        return """
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_set_header X-Request-ID $request_id;"""

    def haproxy_forward_headers(self):
        """The same for HAProxy (`option forwardfor` and set-header rules; a UUID request id)."""
        if not self.opts.forward_headers:
            return ""
        return """
  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Request-ID %[uuid]"""

    def nginx_config(self):
        d = self.path("nginx")
        b = self.ports["backend"]
        rc = self.ports["rc-a"] if self.route_target == "a" else self.ports["rc-b"]
        return f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {self.opts.nofile};
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections {self.opts.nofile - 100}; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream backend {{ server 127.0.0.1:{b}; keepalive 64; }}
  upstream rc {{ server 127.0.0.1:{rc}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{self.ports['nginx']} reuseport backlog=4096;
    listen 127.0.0.1:{self.ports['nginx-tls']} ssl reuseport backlog=4096;
    ssl_certificate {self.crt};
    ssl_certificate_key {self.key};
    ssl_protocols TLSv1.3;
    ssl_session_tickets off;
    ssl_session_cache off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";{self.nginx_forward_headers()}
    location /rc {{ proxy_pass http://rc; }}
    location / {{ proxy_pass http://backend; }}
  }}
}}
"""

    def haproxy_config(self):
        b = self.ports["backend"]
        rc = self.ports["rc-a"] if self.route_target == "a" else self.ports["rc-b"]
        return f"""global
  nbthread 1
  ulimit-n {self.opts.nofile}
  maxconn {haproxy_maxconn(self.opts.nofile)}
  pidfile {self.path('haproxy.pid')}
  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
  tune.ssl.cachesize 0

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  timeout http-request 10s

frontend fe
  bind 127.0.0.1:{self.ports['haproxy']}
  bind 127.0.0.1:{self.ports['haproxy-tls']} ssl crt {self.path('combined.pem')}
  use_backend rc if {{ path_beg /rc }}
  default_backend be{self.haproxy_forward_headers()}

backend be
  server s1 127.0.0.1:{b} pool-max-conn 64

backend rc
  server s1 127.0.0.1:{rc} pool-max-conn 16
"""

    def write_config(self, name):
        """Writes the proxy's config file for the current route target; returns its path."""
        if name in ARCS:
            path = self.path(f"{name}.json")
            with open(path, "w") as f:
                json.dump(self.arc_config(name), f)
        elif name == "nginx":
            os.makedirs(self.path("nginx", "logs"), exist_ok=True)
            path = self.path("nginx", "nginx.conf")
            with open(path, "w") as f:
                f.write(self.nginx_config())
        else:
            path = self.path("haproxy.cfg")
            with open(path, "w") as f:
                f.write(self.haproxy_config())
        return path

    def start_proxy(self, name):
        for suffix in ("", "-tls", "-admin"):
            self.ports.setdefault(name + suffix, free_port())
        cfg = self.write_config(name)
        if name in ARCS:
            argv = [self.opts.arc_bin, "--config", cfg]
        elif name == "nginx":
            argv = [self.opts.nginx, "-p", self.path("nginx"), "-c", cfg]
        else:
            argv = [self.opts.haproxy, "-W", "-db", "-f", cfg]
        p = self.spawn(name, argv, PROXY_CPU)
        if not wait_http(self.ports[name], p):
            reason = self.log_tail(name) or "did not answer"
            self.stop(name)
            self.unavailable[name] = reason
            log(f"{LABEL[name]} unavailable: {reason}")
            return False
        return True

    def restart_proxy(self, name):
        self.stop(name)
        return self.start_proxy(name)

    def reload(self, name):
        """Applies the current config file: Arc SIGHUP, nginx reload (SIGHUP to the master, as
        `nginx -s reload` does), HAProxy master-worker reload (SIGUSR2 to the master)."""
        self.write_config(name)
        p = self.procs[name]
        os.kill(p.pid, signal.SIGUSR2 if name == "haproxy" else signal.SIGHUP)

    # -- Kubernetes path: the API server emulator and Arc in Kubernetes mode
    def start_kube(self):
        """Starts the emulator once, with the namespace, class and route-change Services.
        Returns it, or None (reason in kube_error)."""
        if self.kube is not None or self.kube_error:
            return self.kube
        binary = self.opts.emulator_bin
        if not binary or not os.access(binary, os.X_OK):
            self.kube_error = "no arc-kube-emulator binary (ARC_EMULATOR_BIN)"
            return None
        d = self.path("kube")
        os.makedirs(d, exist_ok=True)
        try:
            emu = kube.Emulator(binary, d, LOADGEN_CPU)
            emu.setup({"rc-a": self.ports["rc-a"], "rc-b": self.ports["rc-b"]})
            emu.create_ingress("rc", "/rc", "rc-a", self.ports["rc-a"])
        except (kube.KubeError, OSError, http.client.HTTPException) as e:
            self.kube_error = f"API server emulator: {e}"
            log(self.kube_error)
            return None
        self.kube = emu
        self.kube_target = "a"
        return emu

    def start_arc_kube(self, name):
        """Arc (driver of KUBE_ARCS[name]) in Kubernetes mode against the emulator; returns
        the seconds until it served the route-change Ingress, or None."""
        for suffix in ("", "-admin"):
            self.ports[name + suffix] = free_port()
        cfg = self.path(f"{name}.json")
        with open(cfg, "w") as f:
            json.dump(kube.arc_kube_config(KUBE_ARCS[name] == "arc-uring", self.ports[name],
                                           self.ports[name + "-admin"]), f)
        t0 = time.monotonic()
        self.spawn(name, [self.opts.arc_bin, "--config", cfg, "--kubeconfig",
                          self.kube.kubeconfig], PROXY_CPU,
                   env={"POD_NAMESPACE": kube.NAMESPACE, "POD_NAME": name})
        if not wait_http(self.ports[name], self.procs[name], path="/rc", timeout=60.0):
            reason = self.log_tail(name) or "did not serve the Ingress"
            self.stop(name)
            self.unavailable[name] = reason
            log(f"{LABEL[name]} unavailable: {reason}")
            return None
        return time.monotonic() - t0

    def pid(self, name):
        p = self.procs.get(name)
        return p.pid if p else None

    def live(self):
        return [n for n in self.opts.proxies if n in self.procs]


# ------------------------------------------------------------------ load generators

def run_wrk(opts, url, conns, secs, close=False):
    argv = ["taskset", "-c", LOADGEN_CPU, opts.wrk, "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s",
            "--timeout", "5s", url]
    if close:
        argv[4:4] = ["-H", "Connection: close"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    out = r.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errs = 0
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m2:
        errs += int(m2.group(1))
    m3 = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m3:
        errs += sum(int(x) for x in m3.groups())
    if not m or not rps:
        return {"error": (r.stderr or out).strip()[:200] or "wrk failed", "rate": 0.0,
                "requests": 0, "errors": errs}
    return {"rate": float(rps.group(1)), "requests": int(m.group(1)), "errors": errs}


def run_tlsload(opts, port, warmup, secs, conc):
    """TLS 1.3 full handshakes with `arc-tlsload` (bench/tools) pinned to the load-generator CPU:
    `conc` threads, each opening one connection after another (resumption off, so every one is
    a full handshake) and fetching /b0 over it; completions during the warm-up are not
    counted."""
    argv = ["taskset", "-c", LOADGEN_CPU, opts.tlsload_bin, "--connect", f"127.0.0.1:{port}",
            "--sni", "bench.test", "--path", "/b0", "--concurrency", str(conc),
            "--duration", f"{secs:g}", "--warmup", f"{warmup:g}"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=warmup + secs + 60)
    except subprocess.TimeoutExpired:
        return {"error": "arc-tlsload did not finish", "rate": 0.0, "requests": 0, "errors": 0}
    return parse_tlsload(r.stdout, r.stderr)


def parse_tlsload(stdout, stderr=""):
    """The result of one `arc-tlsload` run from its JSON line: rate and handshakes of the measured
    window, failed connections, and `all` (complete exchanges over the whole process, warm-up
    included: the divisor of proxy CPU read around the process)."""
    j = None
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            j = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if not isinstance(j, dict) or not isinstance(j.get("handshakes"), int):
        msg = (stderr or stdout or "").strip()[-200:]
        return {"error": msg or "arc-tlsload printed no result", "rate": 0.0, "requests": 0,
                "errors": 0}
    res = {"rate": float(j.get("rate") or 0.0), "requests": j["handshakes"],
           "errors": int(j.get("failed") or 0), "all": int(j.get("completed_total") or 0),
           "kx": j.get("key_exchange"), "suite": j.get("cipher_suite"),
           "messages": [str(e) for e in j.get("errors") or []]}
    if res["requests"] == 0:
        res["error"] = "; ".join(res["messages"]) or "no handshake completed"
    return res


def negotiated(runs):
    """Key exchange and cipher suite the handshakes negotiated, from arc-tlsload's reports
    ({target: [result per pair]}): one line when every target agreed, else one per target."""
    seen = {}
    for t, rs in runs.items():
        for r in rs:
            if r and r.get("kx"):
                seen[t] = f"{r['kx']} with {r.get('suite') or '?'}"
                break
    if not seen:
        return "nothing (no handshake completed)"
    kinds = set(seen.values())
    if len(kinds) == 1 and len(seen) == len(runs):
        return f"{kinds.pop()} by every target"
    return ", ".join(f"{v} by {LABEL[t]}" for t, v in seen.items())


def run_oha(opts, url, conns, secs, qps):
    argv = ["taskset", "-c", LOADGEN_CPU, opts.oha, "-z", f"{max(1, round(secs))}s",
            "-c", str(conns), "-q", f"{qps:.0f}", "--latency-correction", "--no-tui",
            "--output-format", "json", url]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    try:
        j = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"error": (r.stderr or r.stdout).strip()[:200] or "oha failed", "requests": 0,
                "errors": 0}
    pct = j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {}) or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    bad = sum(v for k, v in codes.items() if not str(k).startswith("2"))
    # Requests cut off by the end of the run are not failures of the target.
    errs = sum(v for k, v in (j.get("errorDistribution") or {}).items() if "deadline" not in k)
    summ = j.get("summary", {})

    def ms(key):
        v = pct.get(key)
        return None if v is None else v * 1000.0

    return {"rate": summ.get("requestsPerSec") or 0.0, "requests": ok, "errors": bad + errs,
            "p50": ms("p50"), "p99": ms("p99"), "p99.9": ms("p99.9")}


def measure(rig, target, fn):
    """Runs fn() and reads the proxy's CPU around it."""
    pid = None if target == "direct" else rig.pid(target)
    s0, c0, w0 = sleeps(pid), cpu_seconds(pid), time.monotonic()
    res = fn()
    c1, w1, s1 = cpu_seconds(pid), time.monotonic(), sleeps(pid)
    if pid is not None:
        res["cpu_s"] = c1 - c0
        res["busy"] = 100.0 * (c1 - c0) / max(w1 - w0, 1e-9)
        if res.get("requests"):
            res["cpu_us"] = (c1 - c0) / res["requests"] * 1e6
            res["sleeps_per_req"] = (s1 - s0) / res["requests"]
    return res


def order(targets, pair):
    """Alternating order: forward on odd pairs, reversed on even ones."""
    return list(targets) if pair % 2 else list(reversed(targets))


# ------------------------------------------------------------------ statistics and tables

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, digits=0):
    """digits=0: a whole number with thin grouping; otherwise fixed decimals."""
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


class Table:
    """One Markdown table: a row per metric, a column per target, ratio columns vs nginx."""

    def __init__(self, title, pairs, note="", mark_client_bound=True, columns=None):
        self.title, self.pairs, self.note = title, pairs, note
        self.columns = columns
        self.mark_cb = mark_client_bound
        self.rows = []  # (label, values{target: [per pair]}, digits, ratio?)
        self.busy = {}
        self.footnotes = []

    def add(self, label, runs, key, digits=0, ratio=True):
        """runs: {target: [result dict per pair]}."""
        vals = {t: [r.get(key) if r else None for r in rs] for t, rs in runs.items()}
        self.rows.append((label, vals, digits, ratio))

    def add_values(self, label, vals, digits=0, ratio=True):
        self.rows.append((label, vals, digits, ratio))

    def set_busy(self, runs):
        for t, rs in runs.items():
            if t != "direct":
                self.busy[t] = med([r.get("busy") for r in rs if r])
        failed = {t: [r["error"] for r in rs if r and r.get("error")] for t, rs in runs.items()}
        for t, errs in failed.items():
            if errs:
                self.footnotes.append(f"{LABEL[t]}: {len(errs)} run(s) failed: "
                                      f"{errs[0][:120]}")

    def ratio(self, vals, t):
        """Per-pair ratio t/nginx: (median, min, max) or None."""
        a, n = vals.get(t, []), vals.get("nginx", [])
        rs = [x / y for x, y in zip(a, n) if x is not None and y]
        if not rs:
            return None
        return statistics.median(rs), min(rs), max(rs)

    def render(self, targets):
        cols = [t for t in ["direct"] + PROXIES + list(KUBE_ARCS) if t in targets
                and (self.columns is None or t in self.columns)]
        arcs = [t for t in ARCS + list(KUBE_ARCS) if t in cols and "nginx" in cols]
        head = ["metric"] + [LABEL[c] for c in cols] + [f"{LABEL[a]} / nginx" for a in arcs]
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        out.append("| " + " | ".join(head) + " |")
        out.append("|---" + "|---:" * (len(head) - 1) + "|")
        ratios = {}
        cb_used = False
        for i, (label, vals, digits, want_ratio) in enumerate(self.rows):
            cells = [label]
            for c in cols:
                v = med(vals.get(c, []))
                cell = fmt(v, digits)
                if i == 0 and self.mark_cb and c in self.busy and self.busy[c] is not None \
                        and self.busy[c] < CLIENT_BOUND_BUSY and v is not None:
                    cell += " ‡"
                    cb_used = True
                cells.append(cell)
            for a in arcs:
                r = self.ratio(vals, a) if want_ratio else None
                if r is None:
                    cells.append("—")
                else:
                    ratios[(label, a)] = r
                    cells.append(f"{r[0]:.2f} ({r[1]:.2f}–{r[2]:.2f})" if self.pairs > 1
                                 else f"{r[0]:.2f}")
            out.append("| " + " | ".join(cells) + " |")
        if self.busy:
            cells = ["proxy core busy %"] + [
                "—" if c == "direct" else fmt(self.busy.get(c), 0) for c in cols] + [""] * len(arcs)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if cb_used:
            out += ["‡ client-bound: the proxy's core was under 95 % busy, so the rig (load "
                    "generator and backend on CPU 0) set this figure; read the CPU-per-request "
                    "row.", ""]
        out += self.footnotes
        if self.footnotes:
            out.append("")
        return "\n".join(out), ratios


# ------------------------------------------------------------------ the cases

class Bench:
    def __init__(self, opts, rig):
        self.opts, self.rig = opts, rig
        self.tables = []   # rendered markdown
        self.chart = []    # (label, target, (med, lo, hi), goal, higher_is_better)
        # (chart label, Arc target) -> (client-bound?, CPU-per-unit ratio vs nginx), for
        # throughput targets: where the rig set the rate, the CPU row is the one to read.
        self.cpu_read = {}
        self.nginx_max = None

    def emit(self, table, chart_rows=(), extra_targets=()):
        targets = ["direct"] + self.rig.live() + list(extra_targets)
        md, ratios = table.render(targets)
        print(md, flush=True)
        self.tables.append(md)
        cpu_row = next((label for label, _, _, _ in table.rows
                        if label.startswith("proxy CPU µs/")), None)
        for row_label, chart_label, goal, higher in chart_rows:
            for a in ARCS:
                r = ratios.get((row_label, a))
                if r:
                    self.chart.append((chart_label, a, r, goal, higher))
                cpu = ratios.get((cpu_row, a)) if cpu_row else None
                busy = table.busy.get(a)
                if goal and higher and cpu:
                    self.cpu_read[(chart_label, a)] = (
                        busy is not None and busy < CLIENT_BOUND_BUSY, cpu[0])

    def targets(self, with_direct=True):
        return (["direct"] if with_direct else []) + self.rig.live()

    def closed_loop(self, title, path, pairs, conns, close=False, tls=False, with_direct=True):
        o = self.opts
        runs = {t: [] for t in self.targets(with_direct)}
        for pair in range(1, pairs + 1):
            for t in order(runs, pair):
                port = self.port(t, tls)
                url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
                if o.warmup > 0:
                    run_wrk(o, url, conns, o.warmup, close)
                r = measure(self.rig, t, lambda: run_wrk(o, url, conns, o.duration, close))
                runs[t].append(r)
                if r.get("error"):
                    log(f"{title} {LABEL[t]}: {r['error']}")
            log(f"{title} pair {pair}: " + ", ".join(
                f"{LABEL[t]} {runs[t][-1].get('rate', 0):.0f}/s" for t in runs))
        return runs

    def port(self, t, tls=False):
        if t == "direct":
            return self.rig.ports["backend-tls" if tls else "backend"]
        return self.rig.ports[t + ("-tls" if tls else "")]

    def run_len(self, pairs):
        return f"{pairs} alternating pair{'s' if pairs > 1 else ''}, " \
               f"{self.opts.warmup:g} s warm-up + {self.opts.duration:g} s measured per run"

    # 1. keep-alive throughput
    def case_keepalive(self):
        o = self.opts
        for body in o.bodies:
            pairs = o.headline_pairs if body == "1k" else o.pairs
            runs = self.closed_loop(f"keep-alive {body}", f"/b{body}", pairs, o.conns)
            if body == "1k":
                self.nginx_max = med([r.get("rate") for r in runs.get("nginx", [])])
            t = Table(f"1. Keep-alive throughput, {BODY_BYTES[body]} B body, {o.conns} connections",
                      pairs, f"wrk -t1 -c{o.conns}; {self.run_len(pairs)}.")
            t.add("requests/s ↑", runs, "rate")
            t.add("proxy CPU µs/request ↓", runs, "cpu_us", 2)
            t.add("errors (non-2xx + socket)", runs, "errors", ratio=False)
            t.set_busy(runs)
            goal = 1.15 if body == "1k" else 1.0
            self.emit(t, [("requests/s ↑", f"keep-alive {body} req/s", goal, True)])

    # 2. new connection per request
    def case_close(self):
        o = self.opts
        runs = self.closed_loop("close", "/b1k", o.pairs, o.conns, close=True)
        t = Table("2. New connection per request (Connection: close), 1 KiB body", o.pairs,
                  f"wrk -t1 -c{o.conns} -H 'Connection: close'; {self.run_len(o.pairs)}.")
        t.add("requests/s ↑", runs, "rate")
        t.add("proxy CPU µs/request ↓", runs, "cpu_us", 2)
        t.add("errors (non-2xx + socket)", runs, "errors", ratio=False)
        t.set_busy(runs)
        self.emit(t, [("requests/s ↑", "new conn/request req/s", None, True)])

    # 3. open-loop latency
    def case_latency(self):
        o = self.opts
        if not o.oha:
            self.skip("3. Latency", "oha is not installed")
            return
        source = "item 1, this run"
        if self.nginx_max is None and "nginx" in self.rig.procs:
            source = "wrk, this run"
            url = f"http://127.0.0.1:{self.port('nginx')}/b1k"
            run_wrk(o, url, o.conns, o.warmup or 1)
            self.nginx_max = run_wrk(o, url, o.conns, o.duration).get("rate")
        if not self.nginx_max:
            self.skip("3. Latency", "nginx's maximum rate could not be measured")
            return
        for frac in o.rates:
            qps = frac * self.nginx_max
            pairs = o.headline_pairs
            runs = {t: [] for t in self.targets()}
            for pair in range(1, pairs + 1):
                for t in order(runs, pair):
                    url = f"http://127.0.0.1:{self.port(t)}/b1k"
                    if o.warmup > 0:
                        run_oha(o, url, o.conns, min(o.warmup, 2), qps)
                    r = measure(self.rig, t, lambda: run_oha(o, url, o.conns, o.duration, qps))
                    if r.get("error"):
                        log(f"latency {LABEL[t]}: {r['error']}")
                    runs[t].append(r)
                direct = runs["direct"][-1]
                for t in runs:
                    r = runs[t][-1]
                    for k in ("p50", "p99", "p99.9"):
                        if r.get(k) is not None and direct.get(k) is not None and t != "direct":
                            r["add_" + k] = r[k] - direct[k]
                log(f"latency {frac:.0%} pair {pair}: " + ", ".join(
                    f"{LABEL[t]} p99 {fmt(runs[t][-1].get('p99'), 3)} ms" for t in runs))
            pct = int(round(frac * 100))
            t = Table(f"3. Open-loop latency at {pct} % of nginx's max rate "
                      f"({qps:.0f} requests/s), 1 KiB body", pairs,
                      f"oha --latency-correction -c {o.conns} -q {qps:.0f}; nginx max rate "
                      f"{self.nginx_max:.0f}/s ({source}); {self.run_len(pairs)}. "
                      "Latencies in ms; 'added' = proxy minus direct in the same pair.")
            t.add("p50 ms ↓", runs, "p50", 3)
            t.add("p99 ms ↓", runs, "p99", 3)
            t.add("p99.9 ms ↓", runs, "p99.9", 3)
            t.add("added p50 ms ↓", runs, "add_p50", 3)
            t.add("added p99 ms ↓", runs, "add_p99", 3)
            t.add("added p99.9 ms ↓", runs, "add_p99.9", 3)
            t.add("requests/s served", runs, "rate", ratio=False)
            t.add("proxy CPU µs/request ↓", runs, "cpu_us", 2)
            # Each sleep costs a wake-up before the next event is handled (on a VM that halts
            # an idle vCPU, a host-side one): context for the latency rows.
            t.add("proxy sleeps/request", runs, "sleeps_per_req", 3)
            t.add("errors (non-2xx + socket)", runs, "errors", ratio=False)
            t.set_busy(runs)
            t.mark_cb = False  # open loop: the proxy is partly idle by design
            for x, rs in runs.items():
                served = med([r.get("rate") for r in rs])
                if served is not None and served < 0.95 * qps:
                    t.footnotes.append(
                        f"{LABEL[x]} served {served:.0f}/s of the {qps:.0f}/s offered: it could "
                        "not keep up, so its latencies are queueing time.")
            rows = [("p99 ms ↓", f"p99 latency @{pct} %", 0.8 if pct == 75 else None, False)]
            if pct == 50:
                rows.append(("proxy CPU µs/request ↓", "CPU/request @50 % load", 0.8, False))
            self.emit(t, rows)

    # 4. TLS
    def case_tls(self):
        o = self.opts
        title = "4a. TLS 1.3 full handshakes/s (ECDSA P-256, new connection per request)"
        if o.tlsload_bin:
            self.tls_handshakes(title)
        else:
            self.skip(title, "arc-tlsload not built (bench/tools; bench/run.sh builds it, or "
                      "set ARC_TLSLOAD_BIN)")
        runs = self.closed_loop("https keep-alive", "/b1k", o.pairs, o.conns, tls=True)
        t = Table(f"4b. HTTPS keep-alive throughput, 1 KiB body, {o.conns} connections", o.pairs,
                  f"wrk -t1 -c{o.conns} over https (TLS 1.3); {self.run_len(o.pairs)}. Direct = "
                  "the backend nginx terminating TLS itself on CPU 0.")
        t.add("requests/s ↑", runs, "rate")
        t.add("proxy CPU µs/request ↓", runs, "cpu_us", 2)
        t.add("errors (non-2xx + socket)", runs, "errors", ratio=False)
        t.set_busy(runs)
        self.emit(t, [("requests/s ↑", "HTTPS keep-alive req/s", 1.15, True)])

    def tls_handshakes(self, title):
        o = self.opts
        conc = o.tls_concurrency
        runs = {t: [] for t in self.targets()}
        for pair in range(1, o.pairs + 1):
            for t in order(runs, pair):
                port = self.port(t, tls=True)
                r = measure(self.rig, t,
                            lambda: run_tlsload(o, port, o.warmup, o.duration, conc))
                # The proxy's CPU was read around the whole process, warm-up included: divide
                # it by every exchange the process completed.
                if r.get("cpu_s") is not None and r.get("all"):
                    r["cpu_us"] = r["cpu_s"] / r["all"] * 1e6
                if r.get("error"):
                    log(f"tls handshakes {LABEL[t]}: {r['error']}")
                elif r.get("errors"):
                    log(f"tls handshakes {LABEL[t]}: {r['errors']} failed: "
                        + "; ".join(r.get("messages", [])))
                runs[t].append(r)
            log(f"tls handshakes pair {pair}: " + ", ".join(
                f"{LABEL[t]} {runs[t][-1].get('rate', 0):.0f}/s" for t in runs))
        t = Table(title, o.pairs,
                  f"`arc-tlsload --concurrency {conc}` (bench/tools) on CPU 0: {conc} threads, "
                  "each opening one connection after another, with a full TLS 1.3 handshake and "
                  "one `GET /b0 HTTP/1.0` (0 B body) read to the close; a handshake counts when "
                  "its 200 response is complete. Client: rustls 0.23 with aws-lc-rs, TLS 1.3 "
                  "only, one key share (X25519) offered; negotiated "
                  f"{negotiated(runs)}; ECDSA P-256 self-signed certificate, handshake "
                  "signature verified, chain and name not; resumption off on the client, no "
                  f"early data; {self.run_len(o.pairs)}. Session resumption is also off on both "
                  "proxies (nginx `ssl_session_cache off; ssl_session_tickets off`, Arc "
                  "`tls.session_cache: 0, tls.session_tickets: false`): no NewSessionTicket "
                  "is sent. Direct = the backend nginx terminating TLS itself on CPU 0.")
        t.add("handshakes/s ↑", runs, "rate")
        t.add("proxy CPU µs/handshake ↓", runs, "cpu_us", 2)
        t.add("failed handshakes (alert, timeout, non-200)", runs, "errors", ratio=False)
        t.set_busy(runs)
        self.emit(t, [("handshakes/s ↑", "TLS handshakes/s", 1.3, True)])

    # 5. route-change propagation
    def run_changes(self, t, n, change, state):
        """n route changes on target t under a steady closed-loop load on /rc; change(new)
        performs one (reload or API call). Returns the per-target record."""
        rec = {"first": [], "all": [], "non2xx": 0, "resets": 0, "timeouts": 0, "done": 0}
        prober = Prober(self.port(t), "/rc", conns=4)
        prober.start()
        procs = len(proc_tree(self.rig.pid(t)))
        budget = time.monotonic() + max(60.0, 3.0 * n)
        try:
            if not prober.wait_steady(5.0):
                log(f"route change {LABEL[t]}: no steady traffic")
            for i in range(n):
                if time.monotonic() > budget:
                    log(f"route change {LABEL[t]}: time budget spent after {i} changes")
                    break
                # The previous reload has finished (old nginx/haproxy workers gone).
                settle = time.monotonic() + 5.0
                while len(proc_tree(self.rig.pid(t))) > procs and time.monotonic() < settle:
                    time.sleep(0.02)
                time.sleep(0.05)
                new = "b" if state["target"] == "a" else "a"
                state["target"] = new
                mark = prober.mark()
                t0 = time.monotonic()
                change(new)
                first, done = prober.wait_switch(t0, new.upper().encode(), timeout=5.0,
                                                 mark=mark)
                if done is None:
                    rec["timeouts"] += 1
                else:
                    rec["first"].append(1000 * first)
                    rec["all"].append(1000 * done)
                    rec["done"] += 1
        finally:
            prober.stop()
        rec["non2xx"], rec["resets"], rec["requests"] = prober.non2xx, prober.resets, prober.ok
        log(f"route change {LABEL[t]}: {rec['done']}/{n} changes, "
            f"{prober.non2xx} non-2xx, {prober.resets} resets")
        return rec

    def case_routechange(self):
        o = self.opts
        n = o.route_changes
        per = {}
        file_state = {"target": self.rig.route_target}

        def reload_to(t):
            def change(new):
                self.rig.route_target = new
                self.rig.reload(t)
            return change
        for t in self.rig.live():
            per[t] = self.run_changes(t, n, reload_to(t), file_state)
            # settle old workers (nginx/haproxy) before the next proxy is measured
            time.sleep(0.5)
        # The same through Arc's controller: each change is an Ingress update (merge patch)
        # that moves the route to the other ExternalName Service.
        kube_targets = []
        emu = self.rig.start_kube() if any(KUBE_ARCS[k] in o.proxies for k in KUBE_ARCS) else None
        if emu is not None:
            for k, base in KUBE_ARCS.items():
                if base not in o.proxies or self.rig.start_arc_kube(k) is None:
                    continue
                ports = {"a": self.rig.ports["rc-a"], "b": self.rig.ports["rc-b"]}
                state = {"target": self.rig.kube_target}

                def change(new, ports=ports):
                    emu.point_ingress("rc", "/rc", f"rc-{new}", ports[new])
                try:
                    per[k] = self.run_changes(k, n, change, state)
                except (kube.KubeError, OSError, http.client.HTTPException) as e:
                    log(f"route change {LABEL[k]}: {e}")
                self.rig.kube_target = state["target"]
                self.rig.stop(k)
                kube_targets.append(k)
        kube_note = (
            " Arc via Ingress: Arc in Kubernetes mode against the in-repo API server emulator "
            "(list/watch over HTTPS, as with a cluster), with its default controller settings "
            "(100 ms debounce); each change is an Ingress update (merge patch) moving the route "
            "to another Service; times from sending the update."
            if kube_targets else
            f" Arc via Ingress: not measured ({self.rig.kube_error or 'no Arc target'}).")
        t = Table(f"5. Route-change propagation, {n} changes under steady load", 1,
                  "4 keep-alive client connections in a closed loop on the changed route; each "
                  "change flips its upstream between two backends. Arc: config file + SIGHUP; "
                  "nginx: config + reload (SIGHUP to the master, as `nginx -s reload`); "
                  "HAProxy: config + master-worker reload (SIGUSR2). Times from the signal, ms: "
                  "median (max)." + kube_note, columns=PROXIES + kube_targets)

        def pick(key, f):
            return {x: [f(per[x][key])] if per[x][key] else [None] for x in per}
        t.add_values("time to first new response, median ms ↓", pick("first", med), 2)
        t.add_values("time to first new response, max ms ↓", pick("first", max), 2)
        t.add_values("time to 100 % new responses, median ms ↓", pick("all", med), 2)
        t.add_values("time to 100 % new responses, max ms ↓", pick("all", max), 2)
        t.add_values("changes completed", {x: [per[x]["done"]] for x in per}, ratio=False)
        t.add_values("changes not complete after 5 s", {x: [per[x]["timeouts"]] for x in per},
                     ratio=False)
        t.add_values("non-2xx responses", {x: [per[x]["non2xx"]] for x in per}, ratio=False)
        t.add_values("reset / closed connections", {x: [per[x]["resets"]] for x in per},
                     ratio=False)
        t.add_values("requests served", {x: [per[x].get("requests")] for x in per}, ratio=False)
        self.emit(t, [("time to 100 % new responses, median ms ↓", "route change → 100 % new",
                       None, False)], extra_targets=kube_targets)

    # 6. memory with idle keep-alive connections
    def case_idle(self):
        o = self.opts
        variants = [False, True] if o.idle_tls else [False]
        for tls in variants:
            vals = {k: {} for k in ("base_rss", "rss", "pss", "per_conn", "opened")}
            capped = []
            for name in self.rig.live():
                if not self.rig.restart_proxy(name):
                    continue
                pid = self.rig.pid(name)
                http_get(self.port(name), "/b0")
                time.sleep(0.2)
                base_rss, _ = memory_kib(pid)
                want = o.idle_conns
                if name == "haproxy" and want > haproxy_maxconn(o.nofile) - 50:
                    want = haproxy_maxconn(o.nofile) - 50
                    capped.append(f"HAProxy held {want} (its maxconn needs two descriptors per "
                                  f"connection and RLIMIT_NOFILE is {o.nofile} here)")
                holder = subprocess.Popen(
                    ["taskset", "-c", LOADGEN_CPU, sys.executable, os.path.join(HERE, "idlehold.py"),
                     "127.0.0.1", str(self.port(name, tls)), str(want), "/b0"]
                    + (["--tls"] if tls else []) + ["--timeout", "180"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                try:
                    line = read_line(holder.stdout, 240.0)
                    m = re.search(r"opened=(\d+)", line or "")
                    opened = int(m.group(1)) if m else 0
                    time.sleep(1.0)  # let the proxy settle (buffers returned, pool idle)
                    rss, pss = memory_kib(pid)
                finally:
                    try:
                        holder.stdin.close()
                        holder.wait(timeout=30)
                    except (OSError, subprocess.TimeoutExpired):
                        holder.kill()
                        holder.wait()
                vals["base_rss"][name] = [base_rss / 1024]
                vals["rss"][name] = [rss / 1024]
                vals["pss"][name] = [pss / 1024]
                vals["per_conn"][name] = [(rss - base_rss) / opened if opened else None]
                vals["opened"][name] = [opened]
                log(f"idle {'TLS ' if tls else ''}{LABEL[name]}: {opened} open, "
                    f"RSS {base_rss / 1024:.1f} → {rss / 1024:.1f} MiB")
                self.rig.restart_proxy(name)  # leave a fresh proxy for the next case
            kind = "TLS" if tls else "plain"
            t = Table(f"6. Memory with {o.idle_conns} idle keep-alive connections ({kind})", 1,
                      "Each connection served one request (0 B body) and then stays idle. "
                      "Freshly started proxy; RSS = VmRSS summed over the proxy's processes; "
                      "PSS counts pages shared by a master and its worker once.")
            t.add_values("RSS with the connections, MiB ↓", vals["rss"], 1)
            t.add_values("PSS with the connections, MiB ↓", vals["pss"], 1)
            t.add_values("RSS before, MiB", vals["base_rss"], 1)
            t.add_values("RSS added per connection, KiB ↓", vals["per_conn"], 2)
            t.add_values("connections held", vals["opened"], ratio=False)
            t.footnotes += [c + "; compare its per-connection row." for c in capped]
            self.emit(t, [("RSS with the connections, MiB ↓", f"RSS {kind} idle conns", 0.6,
                           False)])

    # 7. scale: routing table compile + swap
    def case_scale(self):
        o = self.opts
        arcs = [a for a in ARCS if a in self.rig.procs]
        vals = {}
        for n in o.route_counts:
            for k in ("swap", "compile", "rss0", "rss1"):
                vals.setdefault((n, k), {})
            for a in arcs:
                pid = self.rig.pid(a)
                rss0, _ = memory_kib(pid)
                self.rig.scale_routes = n
                t0 = time.monotonic()
                self.rig.reload(a)
                swap = None
                deadline = t0 + 120.0
                port = self.port(a)
                while time.monotonic() < deadline:
                    st, body = http_get(port, f"/s{n - 1}", host=f"h{n - 1}.scale.test")
                    if st == 200 and body == b"B":
                        swap = (time.monotonic() - t0) * 1000
                        break
                    time.sleep(0.002)
                time.sleep(0.5)
                rss1, _ = memory_kib(pid)
                compile_s = arc_metric(self.rig.ports[a + "-admin"],
                                       "arc_routing_table_compile_seconds")
                vals[(n, "swap")][a] = [swap]
                vals[(n, "compile")][a] = [compile_s * 1000 if compile_s is not None else None]
                vals[(n, "rss0")][a] = [rss0 / 1024]
                vals[(n, "rss1")][a] = [rss1 / 1024]
                log(f"scale {n} routes {LABEL[a]}: answering after {fmt(swap, 1)} ms, "
                    f"compile {fmt(vals[(n, 'compile')][a][0], 2)} ms")
                self.rig.scale_routes = 0
                self.rig.reload(a)
                time.sleep(0.5)
        controller = os.path.isdir(os.path.join(ROOT, "src", "controller"))
        t = Table("7. Scale: routing table compile + swap (standalone config)", 1,
                  "N routes, each with its own host and upstream, written to the config file; "
                  "time from SIGHUP until the last route answers (file read + parse + validate + "
                  "compile + swap), the compile time Arc reports "
                  "(arc_routing_table_compile_seconds) and RSS before/after the swap. Arc only: "
                  "nginx and HAProxy have no comparable routing-table figure.", columns=ARCS)
        for n in o.route_counts:
            t.add_values(f"{n} routes: SIGHUP → answering, ms ↓", vals[(n, "swap")], 1, False)
            t.add_values(f"{n} routes: compile (metric), ms ↓", vals[(n, "compile")], 2, False)
            t.add_values(f"{n} routes: RSS before, MiB", vals[(n, "rss0")], 1, False)
            t.add_values(f"{n} routes: RSS after, MiB", vals[(n, "rss1")], 1, False)
        self.emit(t)
        self.scale_kube()

    def scale_kube(self):
        """Item 7 through the controller: N Ingress objects (each its own host, path and
        Service backend) in the API server; Arc in Kubernetes mode starts against them (list,
        translate, compile, swap), then one Ingress changes (watch event → recompile of the
        whole table → swap)."""
        o = self.opts
        kube_targets = [k for k, base in KUBE_ARCS.items() if base in o.proxies]
        emu = self.rig.start_kube() if kube_targets else None
        title = "7. Scale through the Kubernetes controller (Ingress objects)"
        if emu is None:
            self.skip(title, self.rig.kube_error or "no Arc target")
            return
        vals = {}
        rb = self.rig.ports["rc-b"]
        ports = {"a": self.rig.ports["rc-a"], "b": rb}
        for n in o.route_counts:
            for k in ("start", "change", "compile", "rss"):
                vals.setdefault((n, k), {})
            t0 = time.monotonic()
            try:
                while self.rig.kube_ingresses < n:
                    i = self.rig.kube_ingresses
                    emu.create_ingress(f"s{i}", f"/s{i}", "rc-b", rb, host=f"h{i}.scale.test")
                    self.rig.kube_ingresses += 1
            except (kube.KubeError, OSError, http.client.HTTPException) as e:
                self.skip(title, f"creating Ingress objects: {e}")
                return
            log(f"scale: {n} Ingress objects in the API server "
                f"({time.monotonic() - t0:.1f} s to create)")
            last_host = f"h{n - 1}.scale.test"
            for k in kube_targets:
                started = self.rig.start_arc_kube(k)
                if started is None:
                    continue
                port_of = self.rig.ports[k]
                # Serving the route-change Ingress does not mean the whole table is in: wait
                # for the last scale Ingress too (the first table comes after every watch
                # synced, so normally both arrive together).
                extra = kube.wait_until(
                    lambda: http_get(port_of, f"/s{n - 1}", host=last_host) == (200, b"B"),
                    120.0)
                start_s = None if extra is None else started + extra
                new = "b" if self.rig.kube_target == "a" else "a"
                try:
                    emu.point_ingress("rc", "/rc", f"rc-{new}", ports[new])
                    change = kube.wait_until(
                        lambda: http_get(port_of, "/rc") == (200, new.upper().encode()), 60.0)
                    self.rig.kube_target = new
                except (kube.KubeError, OSError, http.client.HTTPException) as e:
                    log(f"scale {LABEL[k]}: {e}")
                    change = None
                time.sleep(0.5)
                rss, _ = memory_kib(self.rig.pid(k))
                compile_s = arc_metric(self.rig.ports[k + "-admin"],
                                       "arc_routing_table_compile_seconds")
                vals[(n, "start")][k] = [start_s * 1000 if start_s is not None else None]
                vals[(n, "change")][k] = [change * 1000 if change is not None else None]
                vals[(n, "compile")][k] = [compile_s * 1000 if compile_s is not None else None]
                vals[(n, "rss")][k] = [rss / 1024]
                log(f"scale {n} Ingresses {LABEL[k]}: serving all after "
                    f"{fmt(vals[(n, 'start')][k][0], 0)} ms from start; one change in "
                    f"{fmt(vals[(n, 'change')][k][0], 1)} ms")
                self.rig.stop(k)
        t = Table(title, 1,
                  "N Ingress objects, each with its own host and path, all backed by one "
                  "ExternalName Service, in the API server emulator; Arc in Kubernetes mode "
                  "(default controller settings: 100 ms debounce). Start → serving all: from "
                  "process start through list, translate, compile and swap until the last "
                  "Ingress answers. One change: an Ingress update until its new backend "
                  "answers (watch event, debounce, translate + compile of the whole table, "
                  "swap). Arc only.", columns=kube_targets)
        for n in o.route_counts:
            t.add_values(f"{n} Ingresses: start → serving all, ms ↓", vals[(n, "start")], 0,
                         False)
            t.add_values(f"{n} Ingresses: one change → served, ms ↓", vals[(n, "change")], 1,
                         False)
            t.add_values(f"{n} Ingresses: last compile (metric), ms ↓", vals[(n, "compile")], 2,
                         False)
            t.add_values(f"{n} Ingresses: RSS, MiB", vals[(n, "rss")], 1, False)
        self.emit(t, extra_targets=kube_targets)

    def skip(self, title, why):
        md = f"### {title}\n\nskipped: {why}\n"
        print(md, flush=True)
        self.tables.append(md)


def read_line(stream, timeout):
    """One line from a pipe, or None after timeout (reader thread, bounded)."""
    box = []
    th = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    th.start()
    th.join(timeout)
    return box[0] if box else None


def arc_metric(port, name):
    st, body = http_get(port, "/metrics", timeout=2.0)
    if st != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


class Prober:
    """Closed-loop keep-alive client threads on one path; records (start, end, body) per
    request, counts non-2xx and reset/closed connections (then reconnects)."""

    def __init__(self, port, path, conns=4):
        self.port, self.path, self.conns = port, path, conns
        self.events = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.non2xx = self.resets = self.ok = 0
        self.dropped = 0  # events trimmed from the front, so marks stay valid

    def start(self):
        for _ in range(self.conns):
            th = threading.Thread(target=self.loop, daemon=True)
            th.start()
            self.threads.append(th)

    def loop(self):
        conn = None
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
            t0 = time.monotonic()
            try:
                conn.request("GET", self.path, headers={"Host": "bench.test"})
                r = conn.getresponse()
                body = r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                with self.lock:
                    self.resets += 1
                time.sleep(0.001)
                continue
            t1 = time.monotonic()
            with self.lock:
                if 200 <= status < 300:
                    self.ok += 1
                    self.events.append((t0, t1, body))
                else:
                    self.non2xx += 1
                if len(self.events) > 200000:
                    del self.events[:100000]
                    self.dropped += 100000
        if conn is not None:
            conn.close()

    def stop(self):
        self.stopping.set()
        for th in self.threads:
            th.join(timeout=5.0)

    def wait_steady(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ok > 20:
                return True
            time.sleep(0.05)
        return False

    def mark(self):
        """A position in the event log; wait_switch looks only at events after it."""
        with self.lock:
            return self.dropped + len(self.events)

    def wait_switch(self, t0, new, timeout, window=0.1, mark=0):
        """(time to first new, time to 100 % new) in seconds after t0, or (x, None) on timeout.
        100 % new: the end of the last old response to a request sent after t0, once only new
        responses have been seen for `window` seconds."""
        deadline = t0 + timeout
        first = None
        while time.monotonic() < deadline:
            time.sleep(0.01)
            with self.lock:
                start = max(0, mark - self.dropped)
                evs = [e for e in self.events[start:] if e[1] > t0]
            news = [e[1] for e in evs if e[2] == new]
            if not news:
                continue
            first = min(news) - t0
            olds = [e[1] for e in evs if e[2] != new and e[0] > t0]
            last_old = max(olds) if olds else None
            if last_old is not None and max(news) < last_old:
                continue
            quiet_from = last_old if last_old is not None else min(news)
            if time.monotonic() - quiet_from >= window:
                done = (last_old - t0) if last_old is not None else first
                return first, max(done, first)
        return first, None


# ------------------------------------------------------------------ chart and summary

def write_chart(chart, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (apt python3-matplotlib): no chart"
    if not chart:
        return "no ratios to chart"
    labels = []
    for label, _, _, _, _ in chart:
        if label not in labels:
            labels.append(label)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(labels) + 1.6))
    h = 0.36
    colours = {"arc-uring": "#1f77b4", "arc-epoll": "#ff7f0e"}
    lo_clip, hi_clip = 0.01, 100.0

    def clip(v):
        return min(max(v, lo_clip), hi_clip)
    for j, a in enumerate(ARCS):
        ys, xs, lo, hi = [], [], [], []
        for i, lab in enumerate(labels):
            for (l2, a2, r, _, _) in chart:
                if l2 == lab and a2 == a:
                    m = clip(r[0])
                    ys.append(i + (j - 0.5) * h)
                    xs.append(m)
                    lo.append(m - clip(r[1]))
                    hi.append(clip(r[2]) - m)
        if xs:
            ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=colours[a], capsize=3,
                        markersize=6, label=f"{LABEL[a]} / nginx")
    for i, lab in enumerate(labels):
        for (l2, _, _, goal, _) in chart:
            if l2 == lab and goal:
                ax.plot([goal], [i], marker="|", color="red", markersize=22, mew=2.5)
                break
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([f"{lab} ({'↑' if any(c[0] == lab and c[4] for c in chart) else '↓'})"
                        for lab in labels])
    ax.invert_yaxis()
    ax.set_xlabel("ratio Arc / nginx (↑ higher is better, ↓ lower is better)")
    ax.set_title("Arc / nginx in the same run: median and min–max over pairs (log scale); "
                 "red | = target", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def targets_table(chart, cpu_read=None):
    """The issue's targets with the measured median ratios. For throughput targets, the last
    column gives the CPU-per-unit ratio and the throughput it corresponds to (1 / ratio) — the
    figure to read where the row was client-bound (‡)."""
    cpu_read = cpu_read or {}
    rows = [l for l, _, _, g, _ in chart if g]
    seen, out = set(), []
    out += ["### Targets (median ratio vs nginx; met when on the right side of the target)", "",
            "| case | target | Arc io_uring | Arc epoll | CPU per unit vs nginx, io_uring / epoll "
            "(≙ throughput at equal CPU) |", "|---|---:|---:|---:|---|"]
    for label in rows:
        if label in seen:
            continue
        seen.add(label)
        cells = [label]
        goal = higher = None
        per = {}
        for (l2, a, r, g, hb) in chart:
            if l2 == label:
                goal, higher = g, hb
                per[a] = r[0]
        cells.append(("≥ " if higher else "≤ ") + f"{goal:g}×")
        for a in ARCS:
            v = per.get(a)
            if v is None:
                cells.append("—")
            else:
                met = v >= goal if higher else v <= goal
                cb = " ‡" if cpu_read.get((label, a), (False,))[0] else ""
                cells.append(f"{v:.2f} {'met' if met else 'not met'}{cb}")
        reads = [cpu_read.get((label, a)) for a in ARCS]
        if any(reads):
            cells.append(" / ".join(f"{c[1]:.2f} (≙ {1 / c[1]:.2f}×)" if c else "—"
                                    for c in reads))
        else:
            cells.append("")
        out.append("| " + " | ".join(cells) + " |")
    if cpu_read:
        out += ["", "‡ client-bound in this run: the load generator and backend on CPU 0 set the "
                "rate and the proxy's core was under 95 % busy, so the CPU-per-unit column is "
                "the proxy's own figure (BENCHMARK.md)."]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ main

def estimate_minutes(o, cases, targets):
    """Rough wall time of a plan on an idle rig (timed runs plus fixed costs)."""
    run = max(1, round(o.warmup)) * (o.warmup > 0) + max(1, round(o.duration)) + 0.6
    runs = 0
    if "keepalive" in cases:
        runs += sum(o.headline_pairs if b == "1k" else o.pairs for b in o.bodies) * targets
    if "close" in cases:
        runs += o.pairs * targets
    if "latency" in cases:
        runs += len(o.rates) * o.headline_pairs * targets
    if "tls" in cases:
        runs += 2 * o.pairs * targets
    secs = runs * run
    proxies = targets - 1
    if "routechange" in cases:
        secs += proxies * (2 + 0.4 * o.route_changes)
        secs += 2 * (3 + 0.4 * o.route_changes)  # Arc via Ingress, both drivers
    if "idle" in cases:
        secs += proxies * (3 + o.idle_conns / 4000 + (o.idle_conns / 300 if o.idle_tls else 0))
    if "scale" in cases:
        secs += sum(2 + n / 2000 for n in o.route_counts) * 2
        secs += max(o.route_counts, default=0) / 300 + sum(4 + n / 1000 for n in o.route_counts) * 2
    return secs / 60


def default_tlsload():
    """arc-tlsload from a release build of the workspace, if there is one."""
    path = os.path.join(ROOT, "target", "release", "arc-tlsload")
    return path if os.access(path, os.X_OK) else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="reduced set, under 3 minutes")
    g.add_argument("--full", action="store_true", help="long runs (10 s + 30 s)")
    ap.add_argument("--cases", default=os.environ.get("CASES", ""),
                    help=f"comma list of {','.join(ALL_CASES)} (default: all)")
    ap.add_argument("--arc-bin", default=os.environ.get("ARC_BIN", ""))
    ap.add_argument("--out", default=os.environ.get("OUT_DIR", os.path.join(HERE, "results")))
    ap.add_argument("--tls-concurrency", type=int, default=env_num("TLS_CONCURRENCY", 32, int),
                    help="arc-tlsload threads for TLS handshakes (item 4a)")
    ap.add_argument("--tlsload-bin",
                    default=os.environ.get("ARC_TLSLOAD_BIN") or default_tlsload(),
                    help="arc-tlsload binary (bench/tools); without one item 4a is skipped")
    args = ap.parse_args()
    mode = "quick" if args.quick else "full" if args.full else "default"
    plan = dict(MODES[mode])

    class O:
        pass
    o = O()
    o.mode = mode
    o.arc_bin = args.arc_bin
    o.emulator_bin = os.environ.get("ARC_EMULATOR_BIN", "")
    o.nginx = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
    o.haproxy = os.environ.get("HAPROXY") or shutil.which("haproxy") or "/usr/sbin/haproxy"
    o.wrk = os.environ.get("WRK") or shutil.which("wrk") or "wrk"
    o.oha = os.environ.get("OHA") or shutil.which("oha") or ""
    o.warmup = env_num("WARMUP", plan["warmup"])
    o.duration = env_num("DURATION", plan["duration"])
    o.headline_pairs = env_num("PAIRS", plan["headline_pairs"], int)
    o.pairs = env_num("OTHER_PAIRS", plan["pairs"], int)
    o.conns = env_num("CONNS", 64, int)
    o.forward_headers = bool(env_num("FORWARD_HEADERS", 1, int))
    o.tls_concurrency = args.tls_concurrency
    o.tlsload_bin = args.tlsload_bin
    o.bodies = env_list("BODIES", plan["bodies"])
    o.rates = env_list("RATES", plan["rates"], float)
    o.idle_conns = env_num("IDLE_CONNS", plan["idle_conns"], int)
    o.idle_tls = bool(env_num("IDLE_TLS", int(plan["idle_tls"]), int))
    o.route_changes = env_num("ROUTE_CHANGES", plan["route_changes"], int)
    o.route_counts = env_list("ROUTE_COUNTS", plan["route_counts"], int)
    o.proxies = [p for p in env_list("PROXIES", PROXIES) if p in PROXIES]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] or ALL_CASES
    bad = [c for c in cases if c not in ALL_CASES]
    if bad or any(b not in BODY_BYTES for b in o.bodies):
        sys.exit(f"unknown case/body: {bad or o.bodies}; cases are {', '.join(ALL_CASES)}")
    if not o.arc_bin or not os.access(o.arc_bin, os.X_OK):
        sys.exit(f"arc-gateway binary not found: {o.arc_bin!r} (set ARC_BIN or use run.sh)")
    if o.tls_concurrency < 1:
        sys.exit(f"--tls-concurrency must be at least 1, not {o.tls_concurrency}")
    if o.tlsload_bin and not os.access(o.tlsload_bin, os.X_OK):
        sys.exit(f"arc-tlsload binary not found: {o.tlsload_bin!r}")
    if (os.cpu_count() or 1) < 2:
        sys.exit("the rig needs 2 CPUs (proxy on CPU 1, load generator and backend on CPU 0)")
    for tool in (o.nginx, o.wrk):
        if not shutil.which(tool) and not os.access(tool, os.X_OK):
            sys.exit(f"missing tool: {tool} (run bench/run.sh, which installs it)")
    if "haproxy" in o.proxies and not (shutil.which(o.haproxy) or os.access(o.haproxy, os.X_OK)):
        log("haproxy not found: HAProxy columns left out")
        o.proxies.remove("haproxy")

    # Room for 10 000 idle connections per process; children inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (max(hard, 65536), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            break
        except (ValueError, OSError):
            continue
    o.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    os.sched_setaffinity(0, {int(LOADGEN_CPU)})  # this driver and its probes stay off CPU 1

    stop = {"sig": None}

    def on_signal(sig, _frame):
        stop["sig"] = sig
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    load0 = open("/proc/loadavg").read().split()[:3]
    rig = Rig(o)
    bench = Bench(o, rig)
    try:
        rig.start_backend()
        for p in o.proxies:
            rig.start_proxy(p)
        if not rig.live():
            sys.exit("no proxy started")
        log(f"mode={mode} cases={','.join(cases)} proxies={','.join(rig.live())} "
            f"warmup={o.warmup:g}s duration={o.duration:g}s pairs={o.headline_pairs}/{o.pairs}; "
            f"expected about {estimate_minutes(o, cases, len(rig.live()) + 1):.1f} min")
        for c in cases:
            log(f"case {c}")
            getattr(bench, f"case_{c}")()
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    finally:
        rig.close()

    elapsed = time.monotonic() - started
    load1 = open("/proc/loadavg").read().split()[:3]
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"bench-{stamp:%Y%m%d-%H%M%S}-{mode}")
    chart_err = write_chart(bench.chart, base + ".png")
    header = [
        f"# Arc benchmark, {stamp:%Y-%m-%d %H:%M} UTC, mode {mode}", "",
        f"Rig: {os.cpu_count()} CPUs; proxy alone on CPU {PROXY_CPU} with one worker; wrk/oha, "
        f"the backend nginx and the driver on CPU {LOADGEN_CPU}; loopback. Load average "
        f"{' '.join(load0)} (start) / {' '.join(load1)} (end); {elapsed / 60:.1f} min. "
        f"Arc binary: {o.arc_bin}. Figures are medians over the pairs; ratios are per-pair "
        f"Arc/nginx, median (min–max). ↑ higher is better, ↓ lower is better. "
        + ("Forwarded request headers: nginx and HAProxy set X-Forwarded-For/-Proto/-Host/-Port "
           "and X-Request-ID as Arc does (FORWARD_HEADERS=1); Arc also adds traceparent."
           if o.forward_headers else
           "Forwarded request headers: nginx and HAProxy add none (FORWARD_HEADERS=0); Arc adds "
           "X-Forwarded-For/-Proto/-Host/-Port, X-Request-ID and traceparent."), "",
    ]
    if rig.unavailable:
        header += [f"Not measured: {LABEL[k]} ({v})" for k, v in rig.unavailable.items()] + [""]
    summary = targets_table(bench.chart, bench.cpu_read) if any(c[3] for c in bench.chart) else ""
    chart_line = (f"Chart: {os.path.basename(base)}.png" if chart_err is None
                  else f"Chart: {chart_err}")
    text = "\n".join(header) + "\n" + "\n".join(bench.tables) + "\n" + summary + "\n" + chart_line + "\n"
    with open(base + ".md", "w") as f:
        f.write(text)
    with open(base + ".json", "w") as f:
        json.dump({"mode": mode, "load": [load0, load1], "ratios": [
            {"case": c[0], "arc": c[1], "median": c[2][0], "min": c[2][1], "max": c[2][2],
             "target": c[3], "higher_is_better": c[4]} for c in bench.chart]}, f, indent=1)
    print(summary, flush=True)
    print(chart_line, flush=True)
    log(f"results: {base}.md ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
