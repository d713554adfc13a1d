"""deploy/install.sh runs the guide's install steps into a temporary root, idempotently."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from conftest import ROOT

SCRIPT = ROOT / "deploy" / "install.sh"


def run(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    env.update(env_extra or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def snapshot(root) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(p, root)] = (stat.S_IMODE(st.st_mode), data)
    return out


@pytest.fixture()
def fake_binary(tmp_path):
    b = tmp_path / "arc-gateway"
    b.write_text("#!/bin/sh\necho arc\n")
    b.chmod(0o755)
    return b


def test_installs_the_guides_files_and_is_idempotent(tmp_path, fake_binary):
    root = tmp_path / "root"
    first = run("--destdir", str(root), "--binary", str(fake_binary))
    assert first.returncode == 0, first.stderr
    tree = snapshot(root)
    assert tree["usr/local/bin/arc-gateway"] == (0o755, fake_binary.read_bytes())
    assert tree["etc/arc"][0] == 0o755
    assert tree["etc/arc/arc.json"] == (0o644, (ROOT / "arc.example.json").read_bytes())
    assert tree["etc/systemd/system/arc-gateway.service"] == (0o644, (ROOT / "deploy/arc-gateway.service").read_bytes())
    assert "skipping systemctl daemon-reload/enable: DESTDIR is set" in first.stdout

    second = run("--destdir", str(root), "--binary", str(fake_binary))
    assert second.returncode == 0, second.stderr
    assert snapshot(root) == tree
    assert "kept existing" in second.stdout


def test_existing_config_is_kept(tmp_path, fake_binary):
    root = tmp_path / "root"
    (root / "etc/arc").mkdir(parents=True)
    (root / "etc/arc/arc.json").write_text('{"node": {"workers": 2}}\n')
    proc = run(env_extra={"DESTDIR": str(root)}, *["--binary", str(fake_binary)])
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/arc/arc.json").read_text() == '{"node": {"workers": 2}}\n'


def test_prefix_moves_the_binary_and_the_unit_follows(tmp_path, fake_binary):
    root = tmp_path / "root"
    proc = run("--destdir", str(root), "--prefix", "/opt/arc", "--binary", str(fake_binary), "--xdp")
    assert proc.returncode == 0, proc.stderr
    assert (root / "opt/arc/bin/arc-gateway").exists()
    assert not (root / "usr/local/bin/arc-gateway").exists()
    unit = (root / "etc/systemd/system/arc-gateway.service").read_text()
    assert "ExecStart=/opt/arc/bin/arc-gateway --config /etc/arc/arc.json" in unit
    dropin = root / "etc/systemd/system/arc-gateway.service.d/xdp.conf"
    assert dropin.read_text() == (ROOT / "deploy/arc-gateway-xdp.conf").read_text()


def test_refuses_bad_input(tmp_path, fake_binary):
    proc = run("--destdir", str(tmp_path / "r"), "--binary", str(tmp_path / "missing"))
    assert proc.returncode != 0 and "cargo build --release" in proc.stderr
    proc = run("--destdir", str(tmp_path / "r"), "--prefix", "relative", "--binary", str(fake_binary))
    assert proc.returncode != 0 and "absolute" in proc.stderr
    proc = run("--bogus")
    assert proc.returncode == 2
    assert not (tmp_path / "r").exists()

