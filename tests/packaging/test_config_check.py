"""The chart's arc.toml is a configuration Arc accepts: `arc-gateway --config FILE --check`."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import find

VARIANTS = [
    {},
    {"config": {"workers": 4, "maxConnections": 100000, "ioUring": {"enabled": "false", "sqpoll": True}}},
    {"config": {"upstreamDefaults": {"pool": {"maxIdle": 8, "idleTimeout": "30s"}, "connectTimeout": "1s",
                                     "readTimeout": "5s", "sendTimeout": "5s"},
                "logging": {"level": "debug", "format": "text", "rotation": {"maxSize": "10MiB", "maxFiles": 3}},
                "kubernetes": {"watchNamespaces": ["a", "b"], "publishService": "arc/edge"}}},
    {"ports": {"http": 80, "https": 443, "admin": 9191}},
    {"xdp": {"enabled": True, "interface": "eth0", "mode": "native", "denyCidrs": ["192.0.2.0/24"]}},
]


def check(binary, path) -> tuple[int, str, list[tuple[str, str]]]:
    proc = subprocess.run([str(binary), "--config", str(path), "--check"],
                          capture_output=True, text=True, timeout=60)
    problems = []
    for line in proc.stderr.splitlines():
        # `<file>:<line>: <key>: <message>` or `<file>: <key>: <message>`
        rest = line[len(str(path)):].lstrip(":")
        rest = re.sub(r"^\d+: ", "", rest.lstrip())
        k, _, msg = rest.partition(": ")
        problems.append((k, msg))
    return proc.returncode, proc.stdout.strip(), problems


@pytest.mark.parametrize("values", VARIANTS, ids=lambda v: ",".join(f"{k}" for k in v) or "defaults")
def test_arc_accepts_the_rendered_config(arc_binary, render, tmp_path, values):
    text = find(render(values), "ConfigMap", "arc-gateway-config")["data"]["arc.toml"]
    path = tmp_path / "arc.toml"
    path.write_text(text)
    code, out, problems = check(arc_binary, path)
    assert (code, out) == (0, "ok"), f"arc-gateway --check refused the chart's arc.toml:\n{text}\n{problems}"


def test_check_notices_a_broken_value(arc_binary, render, tmp_path):
    """The check above can fail: a bad value in the rendered file is reported by key."""
    text = find(render(), "ConfigMap", "arc-gateway-config")["data"]["arc.toml"]
    path = tmp_path / "arc.toml"
    path.write_text(text.replace('drain_timeout = "25s"', 'drain_timeout = "0s"'))
    code, _, problems = check(arc_binary, path)
    assert code != 0
    assert ("lifecycle.drain_timeout", "must be greater than zero") in problems
