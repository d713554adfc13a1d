#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test of the workspace and the
# packaging tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --workspace --all-targets
# Packaging: Helm chart, plain manifests, CRDs, systemd unit, install script, Dockerfile
# (uses target/debug/arc-gateway built above).
python3 -m pytest -q -p no:cacheprovider tests/packaging
