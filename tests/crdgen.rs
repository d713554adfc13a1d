//! `crds/` must hold exactly what `arc-gateway crdgen` prints (SPEC §1).

mod common;

use std::path::Path;

const REGENERATE: &str =
    "regenerate with: cargo run --bin arc-gateway -- crdgen > crds/arc-policy.yaml";

#[test]
fn crds_directory_matches_crdgen_output() {
    let out = common::arc_command()
        .arg("crdgen")
        .output()
        .unwrap_or_else(|e| panic!("running arc-gateway crdgen: {e}"));
    assert!(
        out.status.success(),
        "crdgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("crdgen output: {e}"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/arc-policy.yaml");
    let stored = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {REGENERATE}", path.display()));
    if stored != generated {
        let line = stored
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || stored.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "{} differs from `arc-gateway crdgen` (first difference at line {line}); {REGENERATE}",
            path.display()
        );
    }
}

#[test]
fn crdgen_output_is_the_library_yaml() {
    let text = arc_gateway::crd::crds_yaml().unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("group: arc-gateway.io"));
    assert!(text.contains("scope: Namespaced"));
    for field in [
        "targetRef",
        "rateLimit",
        "retry",
        "timeouts",
        "circuitBreaker",
        "outlierDetection",
        "healthCheck",
        "concurrency",
        "headers",
        "auth",
        "status",
    ] {
        assert!(text.contains(&format!("{field}:")), "CRD lacks `{field}`");
    }
}
