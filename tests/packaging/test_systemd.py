"""deploy/arc-gateway.service carries every directive of the deployment guide (SPEC §6) and the
XDP drop-in its additions; `systemd-analyze verify` accepts both when it is installed."""

from __future__ import annotations

import shutil
import subprocess

from conftest import ROOT, missing

UNIT = ROOT / "deploy" / "arc-gateway.service"
DROPIN = ROOT / "deploy" / "arc-gateway-xdp.conf"


def parse(path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: directive outside a section: {line}"
        k, sep, v = line.partition("=")
        assert sep, f"{path.name}: not a directive: {line}"
        current.setdefault(k.strip(), []).append(v.strip())
    return sections


GUIDE = {
    "ExecStart": "/usr/local/bin/arc-gateway --config /etc/arc/arc.json",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "RestartSec": "5s",
    "TimeoutStopSec": "35s",
    "WatchdogSec": "60s",
    "LimitNOFILE": "1048576",
    "LimitNPROC": "65536",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
}


def test_unit_has_every_directive_of_the_guide():
    service = parse(UNIT)["Service"]
    for key, value in GUIDE.items():
        assert service.get(key) == [value], f"{key}: expected {value!r}, got {service.get(key)}"
    assert service["Type"] == ["notify"]
    assert service["LogsDirectory"] == ["arc"]


def test_unit_installs_and_orders():
    unit = parse(UNIT)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0]
    # the drain deadline (30 s) fits in the stop window
    assert int(unit["Service"]["TimeoutStopSec"][0].rstrip("s")) > 30


def test_xdp_dropin_adds_netlink_bpf_capabilities_and_bpffs():
    service = parse(DROPIN)["Service"]
    assert service["RestrictAddressFamilies"] == ["AF_NETLINK"], "adds to the unit's list"
    caps = set(service["AmbientCapabilities"][0].split())
    assert {"CAP_BPF", "CAP_NET_ADMIN"} <= caps
    assert caps <= set(service["CapabilityBoundingSet"][0].split())
    assert service["ReadWritePaths"] == ["/sys/fs/bpf/arc"]


def test_systemd_analyze_verify(tmp_path, arc_binary):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze", "apt-get install systemd; the directive checks above still ran")
    unitdir = tmp_path / "units"
    (unitdir / "arc-gateway.service.d").mkdir(parents=True)
    # verify checks that ExecStart exists: point it at the built binary
    text = UNIT.read_text().replace("/usr/local/bin/arc-gateway", str(arc_binary))
    (unitdir / "arc-gateway.service").write_text(text)
    shutil.copy(DROPIN, unitdir / "arc-gateway.service.d" / "xdp.conf")
    proc = subprocess.run([tool, "verify", str(unitdir / "arc-gateway.service")],
                          env={"SYSTEMD_UNIT_PATH": f"{unitdir}:", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # unknown or misspelt directives are only warnings: none allowed
    assert proc.stderr.strip() == "", proc.stderr
    # and the drop-in was read: a misspelt key in it is reported
    (unitdir / "arc-gateway.service.d" / "xdp.conf").write_text(DROPIN.read_text() + "ReadWritePath=/x\n")
    proc = subprocess.run([tool, "verify", str(unitdir / "arc-gateway.service")],
                          env={"SYSTEMD_UNIT_PATH": f"{unitdir}:", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert "ReadWritePath" in proc.stderr, proc.stderr
