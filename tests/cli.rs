//! The `arc-gateway` command line: `--check` on the shipped examples and on broken files.

mod common;

use std::net::TcpListener;

use common::{ScratchDir, arc_command as arc};

/// A configuration file in a fresh temporary directory, removed when dropped.
struct TempConfig {
    dir: ScratchDir,
    file: std::path::PathBuf,
}

impl TempConfig {
    fn new(tag: &str, name: &str, content: impl AsRef<[u8]>) -> Self {
        let dir = ScratchDir::new(tag);
        let file = dir.write(name, content);
        TempConfig { dir, file }
    }
}

fn repo(name: &str) -> String {
    format!("{}/{}", env!("CARGO_MANIFEST_DIR"), name)
}

#[test]
fn check_accepts_the_examples() {
    for file in ["arc.example.yaml", "arc.example.json"] {
        let out = arc()
            .args(["--config", &repo(file), "--check"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    }
}

#[test]
fn check_lists_every_error_and_fails() {
    let cfg = TempConfig::new(
        "arc-cli",
        "bad.toml",
        "max_connections = 0\n\n[limits]\nmax_headers = \"many\"\n\n[[upstreams]]\nname = \"a\"\naddr = \"10.0.0.1\"\n",
    );
    let file = &cfg.file;
    let out = arc()
        .args(["--config", file.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    assert!(
        err.contains(&format!("{f}:1: max_connections: must be at least 1")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:4: limits.max_headers: expected an integer")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:8: upstreams[0].addr: invalid address")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_never_binds_a_port() {
    // The listener and admin addresses are taken by this test; --check must still say ok.
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = TempConfig::new(
        "arc-cli-bind",
        "arc.yaml",
        format!(
            "listeners: [{{name: http, bind: '{}', protocol: http}}]\nobservability: {{metrics_bind: '{}'}}\n",
            a.local_addr().unwrap(),
            b.local_addr().unwrap()
        ),
    );
    let file = &cfg.file;
    let out = arc()
        .args(["--config", file.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_taken_admin_port_is_reported_once() {
    // The admin address is taken: the process must fail at start, naming the key and the
    // cause, each said once.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = TempConfig::new(
        "arc-cli-admin-taken",
        "arc.yaml",
        format!(
            "listeners: [{{name: http, bind: '127.0.0.1:0', protocol: http}}]\nobservability: {{metrics_bind: '{}'}}\nio_uring: {{enabled: false}}\n",
            taken.local_addr().unwrap()
        ),
    );
    let out = arc()
        .args(["--config", cfg.file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("arc-gateway: "))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    assert!(line.contains("observability.metrics_bind"), "{line}");
    assert_eq!(
        line.matches("cannot bind the admin server").count(),
        1,
        "{line}"
    );
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
}

#[test]
fn check_reports_missing_certificate_files() {
    let cfg = TempConfig::new(
        "arc-cli-tls",
        "arc.yaml",
        "tls: {certificates: [{hosts: [a.example.com], cert: missing.crt, key: missing.key}]}\n",
    );
    let (dir, file) = (cfg.dir.path(), &cfg.file);
    let out = arc()
        .args(["--config", file.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.certificates[0].cert: cannot read"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}", dir.join("missing.key").display())),
        "{err}"
    );
}

#[test]
fn config_is_required_and_version_prints() {
    let out = arc().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
    let out = arc().arg("version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("arc-gateway {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}
