//! Both ways to a desired state (configuration, cluster state) and the disabled-endpoint set,
//! on constructed inputs with a fake resolver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{self, Config, Format};
use crate::proxy::tls::LoadedCert;
use crate::routing::{Backend, HostRules, RouteModel};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn parse(yaml: &str) -> Config {
    config::parse_str(yaml, Format::Yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// A resolver knowing `backend.internal` (two addresses, one twice) and nothing else; records
/// every name it is asked.
fn fake_dns(asked: &mut Vec<String>) -> impl FnMut(&str) -> std::io::Result<Vec<SocketAddr>> {
    move |name: &str| {
        asked.push(name.to_owned());
        match name {
            "backend.internal:8443" => Ok(vec![
                addr("10.0.0.2:8443"),
                addr("10.0.0.1:8443"),
                addr("10.0.0.2:8443"),
            ]),
            _ => Err(std::io::Error::other("no such host")),
        }
    }
}

const CONFIG: &str = "upstreams:\n\
    \x20 - name: app\n\
    \x20   addrs: ['127.0.0.1:8080', 'backend.internal:8443', '127.0.0.1:8080', 'ghost.invalid:80']\n\
    \x20   pool: {max_idle: 7, idle_timeout: 11s}\n\
    \x20   connect_timeout: 2s\n\
    \x20   read_timeout: 3s\n\
    \x20   send_timeout: 4s\n\
    \x20 - {name: named, addr: 'backend.internal:8443', tls: {verify: false}}\n\
    \x20 - {name: ip, addr: '[::1]:8443', tls: {ca: /etc/ca.pem}}\n\
    \x20 - {name: explicit, addr: '127.0.0.1:8443', tls: {server_name: api.internal, verify: false}}\n\
    \x20 - {name: off, addr: '127.0.0.1:8443', tls: {enabled: false}}\n\
    routes:\n\
    \x20 - {path: /, upstream: app}\n\
    \x20 - {host: tls.example.com, path: /, upstream: named}\n\
    tls:\n\
    \x20 default_certificate: {cert: certs/default.pem, key: /abs/default.key}\n\
    \x20 certificates:\n\
    \x20   - {hosts: [tls.example.com], cert: certs/tls.pem, key: certs/tls.key}\n\
    limits: {max_headers: 33, idle_timeout: 9s, max_requests_per_connection: 5}\n";

#[test]
fn config_becomes_typed_endpoints_with_names_resolved_by_the_caller() {
    let cfg = parse(CONFIG);
    let mut asked = Vec::new();
    let (state, unresolved) = from_config(&cfg, Path::new("/etc/arc"), &mut fake_dns(&mut asked));
    // IP literals never reach the resolver; each name is asked once per listing.
    assert_eq!(
        asked,
        [
            "backend.internal:8443",
            "ghost.invalid:80",
            "backend.internal:8443"
        ]
    );
    assert_eq!(
        unresolved,
        [Unresolved {
            key: "upstreams[0].addrs[3]".into(),
            address: "ghost.invalid:80".into(),
            error: "no such host".into(),
        }]
    );
    let names: Vec<&str> = state.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["app", "named", "ip", "explicit", "off"]);
    let app = &state.upstreams[0];
    // Each address once, in listing order; what a name resolves to keeps the resolver's order.
    assert_eq!(
        app.endpoints,
        [
            addr("127.0.0.1:8080"),
            addr("10.0.0.2:8443"),
            addr("10.0.0.1:8443")
        ]
    );
    assert_eq!(app.pool.max_idle, 7);
    assert_eq!(app.pool.idle_timeout, Duration::from_secs(11));
    assert_eq!(app.pool.connect_timeout, Duration::from_secs(2));
    assert_eq!(app.read_timeout, Duration::from_secs(3));
    assert_eq!(app.send_timeout, Duration::from_secs(4));
    assert!(app.tls.is_none());
    assert_eq!(state.upstreams[4].endpoints, [addr("127.0.0.1:8443")]);
}

#[test]
fn config_tls_settings_default_sni_from_the_first_name() {
    let cfg = parse(CONFIG);
    let (state, _) = from_config(&cfg, Path::new("/etc/arc"), &mut fake_dns(&mut Vec::new()));
    let tls = |name: &str| {
        state
            .upstreams
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no upstream {name}"))
            .tls
            .clone()
    };
    let named = tls("named").expect("tls");
    assert_eq!(named.server_name.as_deref(), Some("backend.internal"));
    assert!(!named.verify);
    let ip = tls("ip").expect("tls");
    assert_eq!(ip.server_name, None, "an IP address sends no SNI");
    assert!(ip.verify, "verification is on by default");
    assert_eq!(ip.ca.as_deref(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(
        tls("explicit").expect("tls").server_name.as_deref(),
        Some("api.internal")
    );
    assert_eq!(tls("off"), None, "enabled: false is plain HTTP");
    assert_eq!(tls("app"), None);
}

#[test]
fn config_routes_certificates_and_limits() {
    let cfg = parse(CONFIG);
    let (state, _) = from_config(&cfg, Path::new("/etc/arc"), &mut fake_dns(&mut Vec::new()));
    assert_eq!(state.routes, config::routes::route_model(&cfg));
    assert_eq!(
        state.certificates.default,
        Some(CertPaths {
            cert: PathBuf::from("/etc/arc/certs/default.pem"),
            key: PathBuf::from("/abs/default.key"),
        })
    );
    assert_eq!(
        state.certificates.files,
        [HostCertPaths {
            hosts: vec!["tls.example.com".into()],
            files: CertPaths {
                cert: PathBuf::from("/etc/arc/certs/tls.pem"),
                key: PathBuf::from("/etc/arc/certs/tls.key"),
            },
        }]
    );
    assert!(state.certificates.loaded.is_empty());
    assert_eq!(state.limits, conn_limits(&cfg));
    assert_eq!(state.limits.codec.max_headers, 33);
    assert_eq!(state.limits.idle_timeout, Duration::from_secs(9));
    assert_eq!(state.limits.max_requests_per_connection, Some(5));
}

fn cluster_state() -> ClusterState {
    let mut model = RouteModel::default();
    model.hosts.push(HostRules {
        host: Some("a.example.com".into()),
        default_backend: Some(Backend::upstream("default/web:80")),
        ..HostRules::default()
    });
    let cert = LoadedCert::generate_default().unwrap_or_else(|e| panic!("{e}"));
    ClusterState {
        model,
        upstreams: vec![
            UpstreamEndpoints {
                name: "default/web:80".into(),
                addrs: vec![
                    addr("10.1.0.1:8080"),
                    addr("[fd00::1]:8080"),
                    addr("10.1.0.1:8080"),
                ],
                external: None,
                tls: None,
            },
            UpstreamEndpoints {
                name: "default/web:443/https".into(),
                addrs: vec![addr("10.1.0.1:8443")],
                external: None,
                tls: Some(BackendTls {
                    sni: false,
                    verify: true,
                    ca_pem: Some(Arc::from(&b"ca"[..])),
                    ..BackendTls::insecure("web.default.svc")
                }),
            },
            UpstreamEndpoints {
                name: "default/ext:443".into(),
                addrs: Vec::new(),
                external: Some(ExternalName {
                    host: "api.example.net".into(),
                    port: 443,
                }),
                tls: None,
            },
        ],
        certs: vec![SecretCert {
            hosts: vec!["a.example.com".into()],
            cert,
        }],
    }
}

#[test]
fn cluster_state_under_the_configured_upstream_defaults() {
    let cfg = parse(
        "upstream_defaults: {pool: {max_idle: 3, idle_timeout: 5s}, connect_timeout: 1s, read_timeout: 6s, send_timeout: 7s}\n\
         tls:\n  certificates:\n    - {hosts: [file.example.com], cert: f.pem, key: f.key}\n\
         limits: {max_headers: 21}\n",
    );
    let cluster = cluster_state();
    let state = from_cluster(&cfg, Path::new("/base"), &cluster);
    assert_eq!(state.routes, cluster.model);
    assert_eq!(state.upstreams.len(), 3);
    let web = &state.upstreams[0];
    assert_eq!(web.name, "default/web:80");
    assert_eq!(
        web.endpoints,
        [addr("10.1.0.1:8080"), addr("[fd00::1]:8080")],
        "each address once"
    );
    assert_eq!(web.pool.max_idle, 3);
    assert_eq!(web.pool.idle_timeout, Duration::from_secs(5));
    assert_eq!(web.pool.connect_timeout, Duration::from_secs(1));
    assert_eq!(web.read_timeout, Duration::from_secs(6));
    assert_eq!(web.send_timeout, Duration::from_secs(7));
    assert!(web.tls.is_none());
    let https = state.upstreams[1].tls.as_ref().expect("tls");
    assert_eq!(https.server_name.as_deref(), Some("web.default.svc"));
    assert!(https.no_sni, "proxy-ssl-server-name: off");
    assert!(https.verify);
    assert_eq!(https.ca_pem.as_deref(), Some(&b"ca"[..]));
    assert_eq!(https.ca, None);
    // An ExternalName the controller could not resolve has no endpoints (503).
    assert!(state.upstreams[2].endpoints.is_empty());
    assert_eq!(
        state.certificates.files,
        [HostCertPaths {
            hosts: vec!["file.example.com".into()],
            files: CertPaths {
                cert: PathBuf::from("/base/f.pem"),
                key: PathBuf::from("/base/f.key"),
            },
        }]
    );
    assert_eq!(state.certificates.default, None);
    assert_eq!(state.certificates.loaded.len(), 1);
    assert_eq!(state.certificates.loaded[0].hosts, ["a.example.com"]);
    assert_eq!(state.limits.codec.max_headers, 21);
}

#[test]
fn disabled_endpoints_set_apply_and_enable_again() {
    let (a, b, c) = (
        addr("10.0.0.1:80"),
        addr("10.0.0.2:80"),
        addr("10.0.0.3:80"),
    );
    let mut d = DisabledEndpoints::default();
    assert!(d.is_empty());
    d.set("web", b, false);
    d.set("web", a, false);
    d.set("api", a, false);
    assert!(d.contains("web", a) && d.contains("web", b) && d.contains("api", a));
    assert!(!d.contains("web", c));
    assert!(!d.contains("other", a), "per upstream, not per address");
    assert_eq!(d.of("web").collect::<Vec<_>>(), [a, b]);
    assert_eq!(
        d.iter().collect::<Vec<_>>(),
        [("api", a), ("web", a), ("web", b)]
    );
    // Applying keeps the order of the endpoints and leaves other upstreams alone.
    assert_eq!(d.apply("web", &[c, b, a]), [c]);
    assert_eq!(d.apply("other", &[c, b, a]), [c, b, a]);
    d.set("web", a, true);
    d.set("web", a, true);
    assert_eq!(d.apply("web", &[c, b, a]), [c, a]);
    d.set("web", b, true);
    d.set("api", a, true);
    assert!(
        d.is_empty(),
        "enabling the last endpoint forgets the upstream"
    );
    assert_eq!(d, DisabledEndpoints::default());
}
