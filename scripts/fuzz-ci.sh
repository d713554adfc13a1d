#!/usr/bin/env bash
# CI step: builds every cargo-fuzz target (stable Rust, `-s none`, see fuzz/README.md) and runs
# each from the committed corpus for a fixed number of inputs with a fixed seed, so a CI run is
# repeatable: the same binary tries the same inputs on every machine, whatever its speed (a
# time bound would try more inputs on a faster machine than were ever tried here). Exploratory
# runs with random seeds and time bounds are in fuzz/README.md. A crash fails the step and
# leaves its input in fuzz/artifacts/<target>/. New corpus entries go to a scratch folder (the
# tree stays clean).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

CARGO_FUZZ_VERSION=0.13.1
RUNS_PER_TARGET="${ARC_FUZZ_RUNS:-100000}"
SEED="${ARC_FUZZ_SEED:-1}"

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# One build of every target; the runs below start the binaries directly (a `cargo fuzz run`
# per target would rebuild the arc-gateway crate each time).
cargo fuzz build -s none
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target" "corpus/$target" "artifacts/$target"
    echo "fuzz: $target, ${RUNS_PER_TARGET} inputs, seed ${SEED}"
    if ! "$bin_dir/$target" -artifact_prefix="artifacts/$target/" \
        -seed="$SEED" -runs="$RUNS_PER_TARGET" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "$scratch/$target" "corpus/$target" >"$scratch/$target.log" 2>&1; then
        tail -n 80 "$scratch/$target.log"
        echo "fuzz: $target failed (input in fuzz/artifacts/$target/)"
        exit 1
    fi
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' \
        "$scratch/$target.log" || true
done
