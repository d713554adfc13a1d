//! Tests of loading, validation and the restart diff.

use super::*;

fn yaml(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Format::Yaml, "t.yaml")
}

fn keys(err: &ConfigError) -> Vec<String> {
    err.problems.iter().map(|p| p.key.clone()).collect()
}

fn problem<'a>(err: &'a ConfigError, key: &str) -> &'a Problem {
    err.problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem at {key}; got:\n{err}"))
}

fn repo_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn examples_load_and_agree() {
    let y = load(&repo_file("arc.example.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let j = load(&repo_file("arc.example.json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        y, j,
        "arc.example.yaml and arc.example.json must describe the same config"
    );
    assert_eq!(y.routes.len(), 3);
    assert_eq!(
        y.upstreams[0].endpoints(),
        vec!["10.0.0.5:8080", "10.0.0.6:8080"]
    );
    assert_eq!(y.observability.metrics_bind, "127.0.0.1:9090");
}

#[test]
fn example_documents_every_key_of_the_schema() {
    // Every key the serialized defaults contain must appear in the YAML example, so the example
    // stays the reference of the schema.
    let text = std::fs::read_to_string(repo_file("arc.example.yaml")).unwrap();
    let mut cfg = Config {
        workers: Some(0),
        ..Config::default()
    };
    cfg.tls.default_certificate = Some(CertFiles {
        cert: "c".into(),
        key: "k".into(),
    });
    cfg.control_plane.auth_token = Some("t".into());
    cfg.redis.url = Some("redis://x".into());
    cfg.xdp.syn_limit = Some(SynLimit { rate: 1, burst: 1 });
    cfg.kubernetes.publish_service = Some("a/b".into());
    cfg.limits.max_body = Some(ByteSize(1));
    cfg.limits.max_requests_per_connection = Some(1);
    cfg.limits.max_connection_age = Some(Duration::from_secs(1));
    cfg.lifecycle.upgrade_binary = Some("/usr/bin/arc-gateway".into());
    let value = serde_json::to_value(&cfg).unwrap();
    let mut missing = Vec::new();
    fn walk(v: &serde_json::Value, text: &str, missing: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = v {
            for (k, child) in map {
                if !text.contains(&format!("{k}:")) {
                    missing.push(k.clone());
                }
                walk(child, text, missing);
            }
        }
    }
    walk(&value, &text, &mut missing);
    // Keys of list entries (listeners, upstreams, routes, certificates) are checked by loading.
    assert!(
        missing.is_empty(),
        "keys missing from arc.example.yaml: {missing:?}"
    );
}

#[test]
fn empty_document_gives_defaults() {
    let cfg = yaml("").unwrap();
    assert_eq!(cfg, Config::default());
    assert_eq!(cfg.max_connections, 65536);
    assert_eq!(cfg.io_uring.uring_entries, 4096);
    assert_eq!(cfg.io_uring.enabled, IoUringMode::Auto);
    assert_eq!(cfg.listeners.len(), 2);
    assert_eq!(cfg.listeners[0].bind, "0.0.0.0:8080");
    assert_eq!(cfg.listeners[1].protocol, Protocol::Https);
    assert_eq!(cfg.limits.max_head, ByteSize(32 * 1024));
    assert_eq!(cfg.limits.max_headers, 100);
    assert_eq!(
        cfg.limits.header_read_timeout.get(),
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        cfg.lifecycle.drain_timeout.get(),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(cfg.logging.output.rotation.max_size, ByteSize(100 << 20));
    assert_eq!(cfg.logging.output.rotation.max_files, 5);
    assert_eq!(cfg.kubernetes.ingress_class, "arc");
    assert_eq!(
        cfg.kubernetes.controller_name,
        "arc-gateway.io/ingress-controller"
    );
    assert_eq!(
        cfg.kubernetes.debounce.get(),
        std::time::Duration::from_millis(100)
    );
    assert_eq!(cfg.xdp.interface, "auto");
}

#[test]
fn the_three_formats_share_one_schema() {
    let y = yaml(
        "node: {workers: 2}\nio_uring: {enabled: false}\nupstreams: [{name: a, addr: 'b:80'}]\nroutes: [{path: /x, upstream: a}]\n",
    )
    .unwrap();
    let j = parse_str(
        r#"{"node":{"workers":2},"io_uring":{"enabled":false},"upstreams":[{"name":"a","addr":"b:80"}],"routes":[{"path":"/x","upstream":"a"}]}"#,
        Format::Json,
        "t.json",
    )
    .unwrap();
    let t = parse_str(
        "[node]\nworkers = 2\n[io_uring]\nenabled = false\n[[upstreams]]\nname = \"a\"\naddr = \"b:80\"\n[[routes]]\npath = \"/x\"\nupstream = \"a\"\n",
        Format::Toml,
        "t.toml",
    )
    .unwrap();
    assert_eq!(y, j);
    assert_eq!(y, t);
    assert_eq!(y.workers(), 2);
    assert_eq!(y.io_uring.enabled, IoUringMode::False);
}

#[test]
fn io_uring_enabled_accepts_auto_true_false() {
    for (v, want) in [
        ("auto", IoUringMode::Auto),
        ("true", IoUringMode::True),
        ("false", IoUringMode::False),
        ("'true'", IoUringMode::True),
    ] {
        let cfg = yaml(&format!("io_uring: {{enabled: {v}}}")).unwrap();
        assert_eq!(cfg.io_uring.enabled, want, "{v}");
    }
    let err = yaml("io_uring: {enabled: maybe}").unwrap_err();
    assert!(
        problem(&err, "io_uring.enabled").message.contains("auto"),
        "{err}"
    );
}

#[test]
fn workers_alias() {
    assert_eq!(yaml("workers: 3").unwrap().workers(), 3);
    assert_eq!(yaml("node: {workers: 4}").unwrap().workers(), 4);
    assert_eq!(yaml("workers: 4\nnode: {workers: 4}").unwrap().workers(), 4);
    let err = yaml("workers: 3\nnode: {workers: 4}").unwrap_err();
    assert_eq!(keys(&err), vec!["workers"]);
}

#[test]
fn unknown_keys_are_named_with_lines_in_every_format() {
    let err = yaml("node:\n  workers: 1\n  wrokers: 2\n").unwrap_err();
    let p = problem(&err, "node.wrokers");
    assert_eq!(p.line, Some(3));
    assert!(
        p.message.contains("did you mean `workers`"),
        "{}",
        p.message
    );

    let err = parse_str(
        "{\n  \"limits\": {\n    \"max_heda\": 5\n  }\n}",
        Format::Json,
        "c.json",
    )
    .unwrap_err();
    let p = problem(&err, "limits.max_heda");
    assert_eq!(p.line, Some(3));
    assert!(
        err.to_string()
            .starts_with("c.json:3: limits.max_heda: unknown key"),
        "{err}"
    );

    let err = parse_str(
        "[limits]\nmax_head = \"1KiB\"\n\n[bogus]\nx = 1\n",
        Format::Toml,
        "c.toml",
    )
    .unwrap_err();
    assert_eq!(problem(&err, "bogus").line, Some(4));
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = "\
max_connections: 0
listeners:
  - { name: http, bind: '0.0.0.0', protocol: http }
  - { name: http, bind: '127.0.0.1:8081', protocol: http }
upstreams:
  - { name: app, addrs: ['10.0.0.5'] }
  - { name: app, addr: 'b:80' }
routes:
  - { path: /, upstream: nope }
limits: { idle_timeout: 10 }
extra: 1
";
    let err = yaml(text).unwrap_err();
    let got = keys(&err);
    for want in [
        "max_connections",
        "listeners[0].bind",
        "listeners[1].name",
        "upstreams[0].addrs[0]",
        "upstreams[1].name",
        "routes[0].upstream",
        "limits.idle_timeout",
        "extra",
    ] {
        assert!(got.contains(&want.to_string()), "missing {want} in:\n{err}");
    }
    assert_eq!(problem(&err, "listeners[1].name").line, Some(4));
    assert!(
        problem(&err, "upstreams[1].name")
            .message
            .contains("duplicate upstream name `app`")
    );
    assert!(
        problem(&err, "routes[0].upstream")
            .message
            .contains("no upstream named `nope`")
    );
    assert!(
        problem(&err, "limits.idle_timeout")
            .message
            .contains("unit")
    );
    // Sorted by line, one line each in the rendered form.
    let lines: Vec<usize> = err.problems.iter().filter_map(|p| p.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    assert_eq!(err.to_string().lines().count(), err.problems.len());
}

#[test]
fn wrong_types_in_independent_places_are_all_reported() {
    let err = yaml("max_connections: many\nio_uring: {sqpoll: 3}\nlimits: {max_headers: [1]}\nlogging: {level: loud}\n").unwrap_err();
    assert_eq!(
        keys(&err),
        vec![
            "max_connections",
            "io_uring.sqpoll",
            "limits.max_headers",
            "logging.level"
        ]
    );
    assert!(problem(&err, "io_uring.sqpoll").message.contains("boolean"));
    assert!(problem(&err, "logging.level").message.contains("info"));
}

#[test]
fn missing_required_keys_are_named() {
    let err = yaml("listeners:\n  - { name: a, protocol: http }\n").unwrap_err();
    let p = problem(&err, "listeners[0].bind");
    assert_eq!(p.message, "required key is missing");
    assert_eq!(p.line, Some(2));
}

#[test]
fn zero_listeners_is_an_error() {
    let err = yaml("listeners: []").unwrap_err();
    assert_eq!(keys(&err), vec!["listeners"]);
}

#[test]
fn bad_socket_addresses() {
    for bad in ["0.0.0.0", "localhost:80", "1.2.3.4:99999", "[::1]", ""] {
        let err = yaml(&format!("observability: {{metrics_bind: '{bad}'}}")).unwrap_err();
        assert_eq!(keys(&err), vec!["observability.metrics_bind"], "{bad}");
    }
    for good in ["127.0.0.1:9090", "[::]:9090", "0.0.0.0:0"] {
        yaml(&format!("observability: {{metrics_bind: '{good}'}}"))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn upstream_addresses() {
    for good in [
        "10.0.0.1:80",
        "[::1]:8080",
        "backend.svc.cluster.local:8080",
        "b:1",
    ] {
        validate::check_endpoint(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "10.0.0.1", "b:0", "b:x", ":80", "a..b:80", "-a:80", "[::1:80", "a b:80",
    ] {
        assert!(validate::check_endpoint(bad).is_err(), "{bad}");
    }
    let err = yaml("upstreams: [{name: a}]").unwrap_err();
    assert_eq!(keys(&err), vec!["upstreams[0].addrs"]);
    let err = yaml("upstreams: [{name: a, addr: 'x:1', addrs: ['y:1']}]").unwrap_err();
    assert_eq!(keys(&err), vec!["upstreams[0].addr"]);
}

#[test]
fn route_rules() {
    let base = "upstreams: [{name: a, addr: 'b:80'}]\n";
    let cases = [
        ("routes: [{path: /x}]", "routes[0]"),
        (
            "routes: [{path: /x, upstream: a, direct_response: {status: 200}}]",
            "routes[0]",
        ),
        ("routes: [{path: x, upstream: a}]", "routes[0].path"),
        ("routes: [{host: 'a.*.com', upstream: a}]", "routes[0].host"),
        ("routes: [{host: '*', upstream: a}]", "routes[0].host"),
        (
            "routes: [{host: 'exa mple.com', upstream: a}]",
            "routes[0].host",
        ),
        (
            "routes: [{path: /, direct_response: {status: 99}}]",
            "routes[0].direct_response.status",
        ),
        (
            "routes: [{path: /, redirect: {location: /x, code: 200}}]",
            "routes[0].redirect.code",
        ),
        (
            "routes: [{path: /, redirect: {location: ''}}]",
            "routes[0].redirect.location",
        ),
        (
            "routes: [{path: /, path_type: prefix, upstream: a}]",
            "routes[0].path_type",
        ),
        (
            "routes: [{path: /, regex: true, upstream: a}]",
            "routes[0].regex",
        ),
    ];
    for (text, key) in cases {
        let err = yaml(&format!("{base}{text}")).unwrap_err();
        assert_eq!(keys(&err), vec![key], "{text}: {err}");
    }
    let cfg = yaml(&format!(
        "{base}routes: [{{host: '*.example.com', path: /v1, path_type: Exact, upstream: a}}, {{redirect: {{location: 'https://x/'}}}}]"
    ))
    .unwrap();
    assert_eq!(cfg.routes[0].path_type, PathType::Exact);
    assert_eq!(cfg.routes[1].path, "/");
    assert_eq!(cfg.routes[1].redirect.as_ref().unwrap().code, 308);
}

#[test]
fn placeholder_token_is_refused_anywhere() {
    let err = yaml("control_plane: {auth_token: __ARC_TOKEN__}").unwrap_err();
    assert!(
        problem(&err, "control_plane.auth_token")
            .message
            .contains("__ARC_TOKEN__")
    );
    let err = yaml("upstreams: [{name: '__ARC_TOKEN__', addr: 'a:1'}]").unwrap_err();
    assert!(
        problem(&err, "upstreams[0].name")
            .message
            .contains("placeholder")
    );
}

#[test]
fn kubernetes_mode_takes_routes_from_ingresses_only() {
    assert!(yaml("kubernetes: {enabled: true}").is_ok());
    let err = yaml(
        "kubernetes: {enabled: true}\nupstreams: [{name: a, addr: 'b:1'}]\nroutes: [{path: /, upstream: a}]",
    )
    .unwrap_err();
    assert!(problem(&err, "routes").message.contains("Kubernetes mode"));
    assert!(
        problem(&err, "upstreams")
            .message
            .contains("Kubernetes mode")
    );
}

#[test]
fn keys_not_built_yet_are_refused() {
    for (text, key) in [
        ("redis: {url: 'redis://127.0.0.1'}", "redis.url"),
        (
            "listeners: [{name: a, bind: '0.0.0.0:1', protocol: http, proxy_protocol: true}]",
            "listeners[0].proxy_protocol",
        ),
        (
            "upstreams: [{name: a, addr: 'b:1', lb: least_request}]",
            "upstreams[0].lb",
        ),
        (
            "upstreams: [{name: a, addr: 'b:1', health_check: {path: /h}}]",
            "upstreams[0].health_check",
        ),
    ] {
        let err = yaml(text).unwrap_err();
        let p = problem(&err, key);
        assert_eq!(p.message, "not supported yet", "{text}");
        assert!(
            err.to_string()
                .contains(&format!("{key}: not supported yet"))
        );
    }
}

#[test]
fn xdp_section_is_validated() {
    let cfg = yaml(
        "xdp: {enabled: true, interface: eth0, mode: skb, deny_cidrs: ['10.0.0.0/8', '2001:db8::/32', '192.0.2.7'], syn_limit: {rate: 100, burst: 200}}",
    )
    .unwrap();
    assert!(cfg.xdp.enabled);
    assert_eq!(cfg.xdp.deny_cidrs.len(), 3);
    assert_eq!(
        cfg.xdp.syn_limit,
        Some(SynLimit {
            rate: 100,
            burst: 200
        })
    );

    let err =
        yaml("xdp: {deny_cidrs: ['10.0.0.0/8', '10.0.0/8', '10.1.0.0/8', '::/129']}").unwrap_err();
    assert_eq!(
        keys(&err),
        vec![
            "xdp.deny_cidrs[1]",
            "xdp.deny_cidrs[2]",
            "xdp.deny_cidrs[3]"
        ]
    );
    assert!(
        problem(&err, "xdp.deny_cidrs[1]")
            .message
            .contains("not an IP address")
    );
    assert!(
        problem(&err, "xdp.deny_cidrs[2]")
            .message
            .contains("host bits")
    );
    assert!(
        problem(&err, "xdp.deny_cidrs[3]")
            .message
            .contains("0 to 128")
    );

    let err = yaml("xdp: {syn_limit: {rate: 0, burst: 2000000}}").unwrap_err();
    assert!(
        problem(&err, "xdp.syn_limit.rate")
            .message
            .contains("out of range")
    );
    assert!(
        problem(&err, "xdp.syn_limit.burst")
            .message
            .contains("out of range")
    );
    let err = yaml("xdp: {interface: 'a/b'}").unwrap_err();
    assert!(
        problem(&err, "xdp.interface")
            .message
            .contains("interface name")
    );
}

#[test]
fn limits_and_units() {
    let cfg = yaml("limits: {max_head: 64KiB, max_body: 10MiB, idle_timeout: 1m30s, header_read_timeout: 500ms, max_requests_per_connection: 100, max_connection_age: 1h}").unwrap();
    assert_eq!(cfg.limits.max_head.get(), 65536);
    assert_eq!(cfg.limits.max_body, Some(ByteSize(10 << 20)));
    assert_eq!(cfg.limits.idle_timeout.get().as_secs(), 90);
    assert_eq!(cfg.limits.header_read_timeout.get().as_millis(), 500);
    assert_eq!(cfg.limits.max_connection_age.unwrap().get().as_secs(), 3600);
    assert_eq!(
        yaml("limits: {max_head: 4096}")
            .unwrap()
            .limits
            .max_head
            .get(),
        4096
    );
    for (text, key) in [
        ("limits: {max_head: 10}", "limits.max_head"),
        ("limits: {max_head: 2GiB}", "limits.max_head"),
        ("limits: {max_head: 3XB}", "limits.max_head"),
        ("limits: {max_headers: 0}", "limits.max_headers"),
        ("limits: {idle_timeout: 0s}", "limits.idle_timeout"),
        ("limits: {idle_timeout: '-1s'}", "limits.idle_timeout"),
        (
            "limits: {max_requests_per_connection: 0}",
            "limits.max_requests_per_connection",
        ),
        (
            "limits: {max_requests_per_connection: -1}",
            "limits.max_requests_per_connection",
        ),
        (
            "io_uring: {uring_entries: 1000000}",
            "io_uring.uring_entries",
        ),
        ("lifecycle: {drain_timeout: 30}", "lifecycle.drain_timeout"),
        (
            "lifecycle: {upgrade_timeout: 0s}",
            "lifecycle.upgrade_timeout",
        ),
        (
            "lifecycle: {upgrade_binary: bin/arc-gateway}",
            "lifecycle.upgrade_binary",
        ),
    ] {
        let err = yaml(text).unwrap_err();
        assert_eq!(keys(&err), vec![key], "{text}: {err}");
    }
}

#[test]
fn duration_and_size_round_trip() {
    for s in ["60s", "500ms", "2m", "1h", "250us", "1m30s"] {
        let d = Duration::parse(s).unwrap();
        assert_eq!(Duration::parse(&d.to_string()).unwrap(), d, "{s}");
    }
    assert_eq!(Duration::parse("60s").unwrap().to_string(), "60s");
    assert_eq!(Duration::parse("2m").unwrap().to_string(), "120s");
    assert_eq!(Duration::parse("1m30s").unwrap().get().as_secs(), 90);
    assert_eq!(Duration::parse("1.5s").unwrap().get().as_millis(), 1500);
    assert!(Duration::parse("10").is_err());
    assert!(Duration::parse("s").is_err());
    for s in ["32KiB", "100MiB", "1GiB", "1000"] {
        assert_eq!(ByteSize::parse(s).unwrap().to_string(), s);
    }
    assert_eq!(ByteSize::parse("64KB").unwrap().get(), 64_000);
    assert!(ByteSize::parse("99999999999GiB").is_err());
}

#[test]
fn syntax_errors_name_the_line() {
    let err = yaml("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].line.is_some());
    assert!(err.problems[0].message.starts_with("syntax error"));
    let err = parse_str("{\n \"a\": 1,\n}", Format::Json, "x.json").unwrap_err();
    assert_eq!(err.problems[0].line, Some(3));
    let err = parse_str("a = 1\nb = \n", Format::Toml, "x.toml").unwrap_err();
    assert_eq!(err.problems[0].line, Some(2));
    let err = yaml("node: {workers: 1}\nnode: {workers: 2}\n").unwrap_err();
    assert!(
        err.problems[0].message.contains("duplicate key `node`"),
        "{err}"
    );
    let err = yaml("a: 1\n---\nb: 2\n").unwrap_err();
    assert!(
        err.problems[0].message.contains("one YAML document"),
        "{err}"
    );
}

#[test]
fn unknown_file_extension_and_missing_file() {
    let err = load(std::path::Path::new("/nonexistent/arc.conf")).unwrap_err();
    assert!(
        err.to_string().contains(".yaml, .yml, .json or .toml"),
        "{err}"
    );
    let err = load(std::path::Path::new("/nonexistent/arc.yaml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/arc.yaml: (document): cannot read the file"),
        "{err}"
    );
}

#[test]
fn referenced_files_are_checked() {
    let cfg = yaml("tls: {certificates: [{hosts: [a.example.com], cert: /nonexistent/a.crt, key: /nonexistent/a.key}]}").unwrap();
    let problems = check_referenced_files(&cfg, std::path::Path::new("."));
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["tls.certificates[0].cert", "tls.certificates[0].key"]
    );

    let cfg = yaml(
        "upstreams: [{name: a, addr: 'a.internal:443', tls: {enabled: true, ca: missing-ca.pem}}, {name: b, addr: 'b.internal:443', tls: {enabled: false, ca: missing-ca.pem}}]",
    )
    .unwrap();
    let problems = check_referenced_files(&cfg, std::path::Path::new("/nonexistent"));
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["upstreams[0].tls.ca"],
        "only enabled TLS reads its CA"
    );
    assert!(
        problems[0].message.contains("/nonexistent/missing-ca.pem"),
        "relative to the configuration's directory: {}",
        problems[0].message
    );
}

#[test]
fn restart_required_diff_names_changed_keys() {
    let old = yaml("").unwrap();
    assert!(restart_required_changes(&old, &old).is_empty());

    let new = yaml(
        "node: {workers: 4}\nio_uring: {sqpoll: true, uring_entries: 1024}\ntls: {session_cache: 0, session_tickets: true}\nobservability: {metrics_bind: '0.0.0.0:9191'}\nlisteners:\n  - {name: http, bind: '0.0.0.0:8081', protocol: http}\n  - {name: extra, bind: '0.0.0.0:9000', protocol: http}\n",
    )
    .unwrap();
    let keys: Vec<String> = restart_required_changes(&old, &new)
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            "node.workers",
            "listeners[http].bind",
            "listeners[https]",
            "listeners[extra]",
            "io_uring.sqpoll",
            "io_uring.uring_entries",
            "tls.session_cache",
            "tls.session_tickets",
            "observability.metrics_bind",
        ]
    );

    // Hot-reloadable keys are not reported.
    let hot = yaml("limits: {idle_timeout: 5s}\nupstreams: [{name: a, addr: 'b:1'}]\nroutes: [{upstream: a}]\nlogging: {level: debug}\n").unwrap();
    assert!(restart_required_changes(&old, &hot).is_empty());
    // The alias counts as node.workers.
    let alias = yaml("workers: 2").unwrap();
    assert_eq!(
        restart_required_changes(&old, &alias)[0].key,
        "node.workers"
    );
}

#[test]
fn yaml_anchors_and_numbers_as_text() {
    let cfg =
        yaml("upstreams:\n  - &u {name: a, addr: 'b:1'}\n  - {name: 2024, addr: 'c:1'}\n").unwrap();
    assert_eq!(cfg.upstreams[1].name, "2024");
    let cfg = yaml("x: &p {max_idle: 3, idle_timeout: 5s}\n").unwrap_err();
    assert_eq!(keys(&cfg), vec!["x"]);
}

#[test]
fn route_compile_problems_are_reported_by_key() {
    let err = yaml(
        "upstreams: [{name: a, addr: 'b:1'}]\nroutes:\n  - {path: '/x[', path_type: ImplementationSpecific, regex: true, upstream: a}\n  - {path: /y, upstream: a}\n  - {path: /y, upstream: a}\n",
    )
    .unwrap_err();
    let keys = keys(&err);
    assert!(keys.contains(&"routes[0].path".to_string()), "{err}");
    assert!(keys.contains(&"routes[2].path".to_string()), "{err}");
    assert_eq!(problem(&err, "routes[0].path").line, Some(3));
    let model = routes::route_model(&yaml("upstreams: [{name: a, addr: 'b:1'}]\nroutes: [{host: h.example.com, upstream: a}]\ntls: {certificates: [{hosts: [h.example.com], cert: c, key: k}]}").unwrap());
    assert!(model.hosts[0].tls);
    assert_eq!(model.hosts[0].rules[0].name, "routes[0]");
}

#[test]
fn upstream_defaults_are_parsed_and_checked() {
    let cfg = yaml(
        "upstream_defaults: {pool: {max_idle: 8, idle_timeout: 30s}, connect_timeout: 2s, read_timeout: 9s}",
    )
    .unwrap();
    let up = &cfg.upstream_defaults;
    assert_eq!(up.pool.max_idle, 8);
    assert_eq!(
        up.pool.idle_timeout.get(),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(up.connect_timeout.get(), std::time::Duration::from_secs(2));
    assert_eq!(up.read_timeout.get(), std::time::Duration::from_secs(9));
    assert_eq!(up.send_timeout.get(), std::time::Duration::from_secs(60));

    let err = yaml("upstream_defaults: {read_timeout: 0s, pool: {idle_timeout: 0s}}").unwrap_err();
    let keys: Vec<String> = err.problems.iter().map(|p| p.key.to_string()).collect();
    assert!(
        keys.contains(&"upstream_defaults.read_timeout".to_owned()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"upstream_defaults.pool.idle_timeout".to_owned()),
        "{keys:?}"
    );
}

#[test]
fn tls_session_resumption_keys() {
    // Defaults as ingress-nginx: a session cache on, tickets off.
    let cfg = yaml("").unwrap();
    assert_eq!(cfg.tls.session_cache, DEFAULT_TLS_SESSION_CACHE);
    assert!(!cfg.tls.session_tickets);

    let cfg = yaml("tls: {session_cache: 0, session_tickets: true}").unwrap();
    assert_eq!(cfg.tls.session_cache, 0);
    assert!(cfg.tls.session_tickets);

    let err = yaml("tls: {session_cache: 1000001}").unwrap_err();
    assert_eq!(keys(&err), vec!["tls.session_cache"]);
    assert!(
        problem(&err, "tls.session_cache")
            .message
            .contains("out of range")
    );
    let err = yaml("tls: {session_tickets: sometimes}").unwrap_err();
    assert_eq!(keys(&err), vec!["tls.session_tickets"]);
}
