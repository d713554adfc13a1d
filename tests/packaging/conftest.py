"""Shared helpers of the packaging tests: paths, the tool policy (skip with a reason, or fail in
CI), chart rendering through the Helm v4 library, and the arc-gateway binary."""

from __future__ import annotations

import base64
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "arc-gateway"
RELEASE = "arc-gateway"
NAMESPACE = "arc-gateway"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "scripts"))


def strict() -> bool:
    """In CI (`.ci/run` sets ARC_REQUIRE_KUBECTL=1) a missing tool fails instead of skipping."""
    return os.environ.get("ARC_REQUIRE_KUBECTL") == "1" or bool(os.environ.get("CI"))


def missing(what: str, how: str) -> None:
    msg = f"{what} is not available ({how})"
    if strict():
        pytest.fail(msg + "; required because ARC_REQUIRE_KUBECTL=1 / CI is set")
    print(f"SKIP: {msg}", file=sys.stderr)
    pytest.skip(msg)


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"`{name}`", f"install it with scripts/install-deps.sh: {package}")
    return path


def need_module(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        missing(f"Python module `{module}`", f"pip install {package}; scripts/install-deps.sh does it")


def yaml_mod():
    return need_module("yaml", "pyyaml")


def docs(text: str) -> list[dict]:
    """The non-empty YAML documents of a manifest text."""
    return [d for d in yaml_mod().safe_load_all(text) if d]


@pytest.fixture(scope="session")
def helm():
    return need_module("helm_python", "helm-python-sdk")


def _render(helm_mod, values=None, config=None) -> list[dict]:
    with helm_mod.Chart.load(str(CHART)) as chart:
        if config is None:
            out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
        else:
            out = config.render(chart, values or {}, name=RELEASE, namespace=NAMESPACE)
    objs = []
    for name, text in sorted(out.items()):
        if name.endswith(".yaml"):
            objs.extend(docs(text))
    return objs


@pytest.fixture(scope="session")
def render(helm):
    """render(values) -> the list of objects the chart produces (offline; lookup finds nothing)."""
    return lambda values=None, config=None: _render(helm, values, config)


@pytest.fixture(scope="session")
def default_objects(render):
    return render()


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {len(hits)}"
    return hits[0]


def kinds(objs: list[dict]) -> list[str]:
    return [o["kind"] for o in objs]


def token_of(secret: dict) -> str:
    if "stringData" in secret:
        return secret["stringData"]["auth-token"]
    return base64.b64decode(secret["data"]["auth-token"]).decode()


@pytest.fixture(scope="session")
def arc_binary() -> pathlib.Path:
    """target/debug/arc-gateway, built when absent (scripts/test.sh builds it with the cargo tests)."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "debug" / "arc-gateway"
    if not binary.exists():
        cargo = shutil.which("cargo")
        if cargo is None:
            missing("cargo", "needed to build target/debug/arc-gateway")
        subprocess.run([cargo, "build", "--bin", "arc-gateway"], cwd=ROOT, check=True, timeout=1800)
    return binary
