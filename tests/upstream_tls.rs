//! HTTPS upstreams end to end on loopback, under each io driver: the real `runtime::Server`
//! proxying plain HTTP clients to a rustls backend (std threads), with verification on
//! (configured CA) and off, SNI, keep-alive reuse of the TLS connection, and a failed
//! verification answered 502 and counted as `upstream_tls`. The Ingress path too: backend TLS
//! annotations translated and published as a cluster state (CA from a Secret, SNI off, client
//! certificate).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_gateway::config::{self, Format};
use arc_gateway::metrics::ErrorReason;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use common::ca::TestCa;
use common::{Driver, IO_TIMEOUT, connect, per_driver, read_response};

/// A loopback HTTPS backend: answers every request `200` with `X-Backend: tls` and the SNI it
/// saw, keeps connections alive, and records handshakes and requests.
struct TlsBackend {
    addr: SocketAddr,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// Requests answered (after a completed handshake).
    requests: Arc<AtomicUsize>,
    /// SNI of each completed handshake.
    snis: Arc<Mutex<Vec<Option<String>>>>,
    /// Completed handshakes that resumed an earlier session.
    resumed: Arc<AtomicUsize>,
}

fn tls_backend(ca: &TestCa, names: &[&str]) -> TlsBackend {
    tls_backend_with(ca, names, None)
}

/// Like [`tls_backend`]; with `client_ca` the backend requires a client certificate it signed.
fn tls_backend_with(ca: &TestCa, names: &[&str], client_ca: Option<&TestCa>) -> TlsBackend {
    let (cert_pem, key_pem) = ca.leaf(names);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap();
    let cfg = match client_ca {
        Some(client_ca) => cfg.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(client_ca.roots()),
                Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            )
            .build()
            .unwrap(),
        ),
        None => cfg.with_no_client_auth(),
    };
    let mut cfg = cfg.with_single_cert(chain, key).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let b = TlsBackend {
        addr,
        connections: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(AtomicUsize::new(0)),
        snis: Arc::new(Mutex::new(Vec::new())),
        resumed: Arc::new(AtomicUsize::new(0)),
    };
    let (c, r, s, res) = (
        Arc::clone(&b.connections),
        Arc::clone(&b.requests),
        Arc::clone(&b.snis),
        Arc::clone(&b.resumed),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (cfg, r, s, res) = (
                Arc::clone(&cfg),
                Arc::clone(&r),
                Arc::clone(&s),
                Arc::clone(&res),
            );
            std::thread::spawn(move || serve_tls(stream, cfg, &r, &s, &res));
        }
    });
    b
}

fn serve_tls(
    mut sock: std::net::TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    requests: &AtomicUsize,
    snis: &Mutex<Vec<Option<String>>>,
    resumed: &AtomicUsize,
) {
    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
    let Ok(mut conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut sock).is_err() {
            return;
        }
    }
    let sni = conn.server_name().map(str::to_owned);
    snis.lock().unwrap().push(sni.clone());
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        resumed.fetch_add(1, Ordering::SeqCst);
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut buf = Vec::new();
    // Bounded: at most 1000 requests per connection.
    for _ in 0..1000 {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut b = [0u8; 4096];
            match tls.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        buf.drain(..head_end);
        // A request body (content-length only) is read and counted.
        let want = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < want {
            let mut b = [0u8; 65536];
            match tls.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        let got: Vec<u8> = buf.drain(..want).collect();
        requests.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let body = match path.strip_prefix("/len/") {
            Some(n) => vec![b'z'; n.parse::<usize>().unwrap_or(0)],
            None if want > 0 => format!("got={} sum={}\n", got.len(), checksum(&got)).into_bytes(),
            None => format!("sni={}\n", sni.as_deref().unwrap_or("-")).into_bytes(),
        };
        // `/close` answers and closes the connection.
        let close = path == "/close";
        let resp = format!(
            "HTTP/1.1 200 OK\r\nX-Backend: tls\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if tls.write_all(resp.as_bytes()).is_err()
            || tls.write_all(&body).is_err()
            || tls.flush().is_err()
            || close
        {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().enumerate().fold(0u64, |a, (i, &x)| {
        a.wrapping_add((i as u64 % 251 + 1) * u64::from(x))
    })
}

use common::server::Running;

/// Starts Arc with one route per upstream line: host `<name>.test` → upstream `<name>`.
/// `{dir}` in the upstream lines is replaced by the test's fixture directory.
fn start(driver: Driver, ca: &TestCa, upstreams: &[(&str, String)]) -> Running {
    let dir = common::temp_dir("upstream-tls");
    std::fs::write(dir.join("ca.pem"), pem_cert(&ca.der)).unwrap();
    let mut ups = String::new();
    let mut routes = String::new();
    for (name, line) in upstreams {
        let line = line.replace("{dir}", &dir.display().to_string());
        ups.push_str(&format!("  - {{name: {name}, {line}}}\n"));
        routes.push_str(&format!(
            "  - {{host: {name}.test, path: /, upstream: {name}}}\n"
        ));
    }
    let yaml = format!(
        "node: {{workers: 2}}\n\
         {driver}\
         listeners:\n  - {{name: http, bind: '127.0.0.1:0', protocol: http}}\n\
         lifecycle: {{drain_timeout: 2s}}\n\
         upstreams:\n{ups}\
         routes:\n{routes}",
        driver = common::server::driver_yaml(driver),
    );
    common::server::start_in(dir, &yaml)
}

/// PEM text of a DER certificate.
fn pem_cert(der: &[u8]) -> String {
    common::tls::pem("CERTIFICATE", der)
}

fn get(c: &mut std::net::TcpStream, buf: &mut Vec<u8>, host: &str) -> (String, String) {
    get_path(c, buf, host, "/x")
}

fn get_path(
    c: &mut std::net::TcpStream,
    buf: &mut Vec<u8>,
    host: &str,
    path: &str,
) -> (String, String) {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    let (head, body) = read_response(c, buf).expect("response");
    (head, String::from_utf8_lossy(&body).into_owned())
}

fn verified_upstream_with_sni_and_keep_alive_reuse(driver: Driver) {
    let ca = TestCa::new();
    let b = tls_backend(&ca, &["backend.internal"]);
    let arc = start(
        driver,
        &ca,
        &[(
            "app",
            format!(
                "addr: '{}', tls: {{server_name: backend.internal, ca: '{{dir}}/ca.pem'}}",
                b.addr
            ),
        )],
    );
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    for _ in 0..5 {
        let (head, body) = get(&mut c, &mut buf, "app.test");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("X-Backend: tls\r\n"), "{head}");
        assert_eq!(body, "sni=backend.internal\n");
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        b.connections.load(Ordering::SeqCst),
        1,
        "one TLS connection, reused from the pool"
    );
    assert_eq!(
        *b.snis.lock().unwrap(),
        vec![Some("backend.internal".to_string())]
    );
    let snap = arc.metrics.data_plane_snapshot();
    assert_eq!(snap.error_count(ErrorReason::UpstreamTls), 0);
}

fn failed_verification_is_502_upstream_tls(driver: Driver) {
    let ca = TestCa::new();
    // A certificate for another name, and one from an untrusted CA.
    let wrong_name = tls_backend(&ca, &["other.internal"]);
    let other_ca = TestCa::new();
    let untrusted = tls_backend(&other_ca, &["backend.internal"]);
    let arc = start(
        driver,
        &ca,
        &[
            (
                "name",
                format!(
                    "addr: '{}', tls: {{server_name: backend.internal, ca: '{{dir}}/ca.pem'}}",
                    wrong_name.addr
                ),
            ),
            (
                "issuer",
                format!(
                    "addr: '{}', tls: {{server_name: backend.internal, ca: '{{dir}}/ca.pem'}}",
                    untrusted.addr
                ),
            ),
        ],
    );
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    for host in ["name.test", "issuer.test"] {
        let (head, _) = get(&mut c, &mut buf, host);
        assert!(head.starts_with("HTTP/1.1 502 "), "{host}: {head}");
    }
    assert_eq!(wrong_name.requests.load(Ordering::SeqCst), 0);
    assert_eq!(untrusted.requests.load(Ordering::SeqCst), 0);
    let snap = arc.metrics.data_plane_snapshot();
    assert_eq!(snap.error_count(ErrorReason::UpstreamTls), 2);
    assert_eq!(snap.error_count(ErrorReason::UpstreamConnect), 0);
}

fn verify_off_accepts_any_certificate_and_ip_sends_no_sni(driver: Driver) {
    let ca = TestCa::new();
    let untrusted = TestCa::new();
    let b = tls_backend(&untrusted, &["whatever.example"]);
    let plain = common::backend("plain");
    let arc = start(
        driver,
        &ca,
        &[
            ("app", format!("addr: '{}', tls: {{verify: false}}", b.addr)),
            // Same backend process kind, plain HTTP: TLS and plain upstreams coexist.
            ("plain", format!("addr: '{}'", plain.addr)),
        ],
    );
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    for _ in 0..3 {
        let (head, body) = get(&mut c, &mut buf, "app.test");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, "sni=-\n", "an IP endpoint sends no SNI");
        let (head, _) = get(&mut c, &mut buf, "plain.test");
        assert!(head.contains("X-Backend: plain\r\n"), "{head}");
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 3);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    assert_eq!(*b.snis.lock().unwrap(), vec![None]);
}

/// Large bodies both ways through the TLS upstream (many records, buffers filling up), then
/// the connection is still reused.
fn large_bodies_both_ways(driver: Driver) {
    let ca = TestCa::new();
    let b = tls_backend(&ca, &["backend.internal"]);
    let arc = start(
        driver,
        &ca,
        &[(
            "app",
            format!(
                "addr: '{}', tls: {{server_name: backend.internal, verify: false}}",
                b.addr
            ),
        )],
    );
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    let n = 3 * 1024 * 1024 + 17;
    c.write_all(format!("GET /len/{n} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .unwrap();
    let (head, body) = read_response(&mut c, &mut buf).expect("response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body.len(), n);
    assert!(body.iter().all(|&x| x == b'z'));

    let upload: Vec<u8> = (0..2 * 1024 * 1024 + 5).map(|i| (i % 253) as u8).collect();
    c.write_all(
        format!(
            "POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
            upload.len()
        )
        .as_bytes(),
    )
    .unwrap();
    c.write_all(&upload).unwrap();
    let (head, body) = read_response(&mut c, &mut buf).expect("response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("got={} sum={}\n", upload.len(), checksum(&upload))
    );
    assert_eq!(b.requests.load(Ordering::SeqCst), 2);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

/// A client slower than the TLS upstream: the response arrives complete (back-pressure through
/// the TLS layer loses and duplicates nothing), then the connection serves the next request.
fn slow_client_over_tls_upstream(driver: Driver) {
    let ca = TestCa::new();
    let b = tls_backend(&ca, &["backend.internal"]);
    let arc = start(
        driver,
        &ca,
        &[("app", format!("addr: '{}', tls: {{verify: false}}", b.addr))],
    );
    let mut c = connect(arc.http());
    let n = 6 * 1024 * 1024;
    c.write_all(format!("GET /len/{n} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body_start = loop {
        assert!(std::time::Instant::now() < deadline, "timed out");
        let k = c.read(&mut chunk).unwrap();
        assert!(k > 0, "closed early");
        got.extend_from_slice(&chunk[..k]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    while got.len() < body_start + n {
        assert!(std::time::Instant::now() < deadline, "timed out");
        let k = c.read(&mut chunk).unwrap();
        assert!(k > 0, "closed early");
        got.extend_from_slice(&chunk[..k]);
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    assert_eq!(got.len(), body_start + n);
    assert!(got[body_start..].iter().all(|&x| x == b'z'));
    let mut buf = Vec::new();
    let (head, body) = get(&mut c, &mut buf, "app.test");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "sni=-\n");
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

/// A backend that accepts TCP but never answers the ClientHello: the handshake is bounded by
/// the connect timeout (504), the client connection survives.
fn stalled_handshake_times_out(driver: Driver) {
    let ca = TestCa::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&held);
    std::thread::spawn(move || {
        for s in listener.incoming().take(4).flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let arc = start(
        driver,
        &ca,
        &[(
            "app",
            format!("addr: '{addr}', connect_timeout: 500ms, tls: {{verify: false}}"),
        )],
    );
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let (head, _) = get(&mut c, &mut buf, "app.test");
    assert!(head.starts_with("HTTP/1.1 504 "), "{head}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        !held.lock().unwrap().is_empty(),
        "the TCP connect succeeded"
    );
    let snap = arc.metrics.data_plane_snapshot();
    assert_eq!(snap.error_count(ErrorReason::UpstreamTimeout), 1);
}

/// A `kubernetes.io/tls` Secret `default/<name>` with the given data keys.
fn k8s_secret(name: &str, data: &[(&str, &str)]) -> Arc<k8s_openapi::api::core::v1::Secret> {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(common::tls::base64(v.as_bytes())),
            )
        })
        .collect();
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": name},
            "type": "kubernetes.io/tls",
            "data": data,
        }))
        .unwrap(),
    )
}

/// Ingress `default/<name>` for host `<name>.test` → Service `web` port 443 with `backend-protocol:
/// HTTPS` and `extra` annotations (nginx spelling for the first, Arc's for the others).
fn k8s_ingress(
    name: &str,
    svc: &str,
    extra: &[(&str, &str)],
) -> Arc<k8s_openapi::api::networking::v1::Ingress> {
    let mut ann = serde_json::Map::new();
    ann.insert(
        "nginx.ingress.kubernetes.io/backend-protocol".into(),
        "HTTPS".into(),
    );
    for (k, v) in extra {
        ann.insert(format!("arc-gateway.io/{k}"), (*v).into());
    }
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": name, "annotations": ann,
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"ingressClassName": "arc", "rules": [{"host": format!("{name}.test"),
                "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": svc, "port": {"number": 443}}}}]}}]},
        }))
        .unwrap(),
    )
}

/// A Service `default/<name>` port 443 whose one endpoint is `addr` (loopback).
fn k8s_service(
    name: &str,
    addr: SocketAddr,
) -> (
    Arc<k8s_openapi::api::core::v1::Service>,
    Arc<k8s_openapi::api::discovery::v1::EndpointSlice>,
) {
    let svc = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443}]},
    }))
    .unwrap();
    let slice = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": format!("{name}-1"),
            "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": addr.port()}],
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
    }))
    .unwrap();
    (Arc::new(svc), Arc::new(slice))
}

/// The Ingress path: annotations → translation → published cluster state → proxied requests.
/// The IngressClass `arc` of Arc's controller.
fn arc_class() -> Arc<k8s_openapi::api::networking::v1::IngressClass> {
    Arc::new(
        serde_json::from_value(serde_json::json!({"metadata": {"name": "arc"},
            "spec": {"controller": "arc-gateway.io/ingress-controller"}}))
        .unwrap(),
    )
}

fn translate_for_arc(
    inputs: &arc_gateway::controller::translate::Inputs,
) -> arc_gateway::controller::translate::Translation {
    arc_gateway::controller::translate::translate(
        inputs,
        &arc_gateway::controller::translate::ClassSettings {
            controller_name: "arc-gateway.io/ingress-controller".into(),
            ingress_class: "arc".into(),
        },
    )
}

/// Arc in Kubernetes mode with one http listener, serving `state`.
fn start_cluster(
    driver: Driver,
    workers: usize,
    state: Arc<arc_gateway::controller::ClusterState>,
) -> Running {
    let yaml = format!(
        "node: {{workers: {workers}}}\n\
         {driver}\
         listeners:\n  - {{name: http, bind: '127.0.0.1:0', protocol: http}}\n\
         lifecycle: {{drain_timeout: 2s}}\n",
        driver = common::server::driver_yaml(driver),
    );
    let mut arc = common::server::start_at(&std::env::temp_dir(), &yaml);
    arc.server_mut()
        .publish(state)
        .unwrap_or_else(|e| panic!("publish: {e}"));
    arc
}

fn ingress_backend_tls_annotations(driver: Driver) {
    use arc_gateway::controller::translate::{Inputs, Severity};
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let client_ca = TestCa::new();
    let (client_crt, client_key) = client_ca.leaf(&["arc.client"]);
    let plain_tls = tls_backend(&ca, &["backend.internal"]);
    let mtls = tls_backend_with(&ca, &["backend.internal"], Some(&client_ca));
    let (svc, slice) = k8s_service("web", plain_tls.addr);
    let (msvc, mslice) = k8s_service("mweb", mtls.addr);
    let ca_pem = pem_cert(&ca.der);
    let other_pem = pem_cert(&other_ca.der);
    let (unused_crt, unused_key) = other_ca.leaf(&["unused.client"]);
    let verify = |secret: &'static str| {
        vec![
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-secret", secret),
            ("proxy-ssl-name", "backend.internal"),
        ]
    };
    let mut nosni = verify("default/right");
    nosni.push(("proxy-ssl-server-name", "off"));
    let inputs = Inputs {
        ingresses: vec![
            k8s_ingress("good", "web", &verify("default/right")),
            k8s_ingress("bad", "web", &verify("default/wrong")),
            k8s_ingress("nosni", "web", &nosni),
            k8s_ingress("mtls", "mweb", &verify("default/client")),
            k8s_ingress("nocert", "mweb", &verify("default/right")),
            k8s_ingress(
                "broken",
                "web",
                &[
                    ("proxy-ssl-verify", "on"),
                    ("proxy-ssl-secret", "default/right"),
                ],
            ),
        ],
        classes: vec![arc_class()],
        services: vec![svc, msvc],
        slices: vec![slice, mslice],
        secrets: vec![
            // Empty tls.crt/tls.key: no client certificate.
            k8s_secret(
                "right",
                &[("ca.crt", &ca_pem), ("tls.crt", ""), ("tls.key", "")],
            ),
            k8s_secret(
                "wrong",
                &[
                    ("ca.crt", &other_pem),
                    ("tls.crt", &unused_crt),
                    ("tls.key", &unused_key),
                ],
            ),
            k8s_secret(
                "client",
                &[
                    ("ca.crt", &ca_pem),
                    ("tls.crt", &client_crt),
                    ("tls.key", &client_key),
                ],
            ),
        ],
    };
    let t = translate_for_arc(&inputs);
    assert!(
        t.problems.iter().all(|p| p.severity != Severity::Invalid),
        "{:?}",
        t.problems
    );
    assert_eq!(t.served.len(), 6);
    // Settings the runtime cannot use (translation validates them, so only a damaged state
    // gets here): the upstream gets no endpoints, never plain or unverified TLS.
    let mut upstreams = t.upstreams;
    let broken = t
        .model
        .hosts
        .iter()
        .find(|h| h.host.as_deref() == Some("broken.test"))
        .and_then(|h| h.rules.first())
        .and_then(|r| r.backend.upstream_name())
        .expect("broken.test routed")
        .to_string();
    for u in upstreams.iter_mut().filter(|u| u.name == broken) {
        let tls = u.tls.as_mut().expect("https upstream");
        tls.ca_pem = Some(Arc::from(&b"not a certificate"[..]));
    }

    let arc = start_cluster(
        driver,
        2,
        Arc::new(arc_gateway::controller::ClusterState {
            model: t.model,
            upstreams,
            certs: t.certs,
        }),
    );
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    let (head, body) = get(&mut c, &mut buf, "good.test");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "sni=backend.internal\n");
    let (head, body) = get(&mut c, &mut buf, "nosni.test");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "sni=-\n", "proxy-ssl-server-name: off sends no SNI");
    let (head, body) = get(&mut c, &mut buf, "mtls.test");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "sni=backend.internal\n");
    assert_eq!(mtls.requests.load(Ordering::SeqCst), 1);
    let (head, _) = get(&mut c, &mut buf, "bad.test");
    assert!(head.starts_with("HTTP/1.1 502 "), "wrong CA: {head}");
    let snap = arc.metrics.data_plane_snapshot();
    assert_eq!(snap.error_count(ErrorReason::UpstreamTls), 1);
    // Without a client certificate the backend refuses; under TLS 1.3 the refusal comes after
    // the client's handshake finished, so it may surface on the response instead.
    let mut c = connect(arc.http());
    let (head, _) = get(&mut c, &mut buf, "nocert.test");
    assert!(head.starts_with("HTTP/1.1 502 "), "no client cert: {head}");
    let (head, _) = get(&mut c, &mut buf, "broken.test");
    assert!(
        head.starts_with("HTTP/1.1 503 "),
        "unusable TLS settings: {head}"
    );
    assert_eq!(plain_tls.requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        plain_tls.connections.load(Ordering::SeqCst),
        3,
        "good, nosni (other settings) and bad; none for broken"
    );
    assert_eq!(
        mtls.requests.load(Ordering::SeqCst),
        1,
        "no request without a client cert"
    );
}

/// A new cluster snapshot (any change in the cluster builds one) keeps the TLS settings of an
/// upstream whose Secret did not change: the next new connection to the backend resumes the
/// session of the last one instead of running a full handshake.
fn sessions_resume_across_cluster_snapshots(driver: Driver) {
    use arc_gateway::controller::translate::Inputs;
    let ca = TestCa::new();
    let backend = tls_backend(&ca, &["backend.internal"]);
    let (svc, slice) = k8s_service("web", backend.addr);
    let ca_pem = pem_cert(&ca.der);
    let secret = |pem: &str| k8s_secret("right", &[("ca.crt", pem)]);
    let inputs = |pem: &str| Inputs {
        ingresses: vec![k8s_ingress(
            "good",
            "web",
            &[
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-secret", "default/right"),
                ("proxy-ssl-name", "backend.internal"),
            ],
        )],
        classes: vec![arc_class()],
        services: vec![Arc::clone(&svc)],
        slices: vec![Arc::clone(&slice)],
        secrets: vec![secret(pem)],
    };
    let state = |pem: &str| {
        let t = translate_for_arc(&inputs(pem));
        assert_eq!(t.served.len(), 1, "{:?}", t.problems);
        Arc::new(arc_gateway::controller::ClusterState {
            model: t.model,
            upstreams: t.upstreams,
            certs: t.certs,
        })
    };
    let mut arc = start_cluster(driver, 1, state(&ca_pem));
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    // One exchange on a new upstream connection per round; the backend closes it after
    // answering, so the next round connects again.
    let mut round =
        |arc: &mut Running, publish: Option<Arc<arc_gateway::controller::ClusterState>>| {
            if let Some(s) = publish {
                let server = arc.server.as_mut().expect("running");
                server.publish(s).unwrap_or_else(|e| panic!("publish: {e}"));
            }
            let (head, body) = get_path(&mut c, &mut buf, "good.test", "/close");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert_eq!(body, "sni=backend.internal\n");
        };
    round(&mut arc, None);
    assert_eq!(
        backend.resumed.load(Ordering::SeqCst),
        0,
        "nothing to resume yet"
    );
    // The same Secret in a new snapshot (new objects, as a watch event brings them).
    round(&mut arc, Some(state(&ca_pem)));
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
    assert_eq!(
        backend.resumed.load(Ordering::SeqCst),
        1,
        "the session survives an unrelated snapshot"
    );
    // A changed Secret (here the same CA twice in one bundle) is new settings: full handshake.
    round(&mut arc, Some(state(&format!("{ca_pem}{ca_pem}"))));
    assert_eq!(backend.connections.load(Ordering::SeqCst), 3);
    assert_eq!(backend.resumed.load(Ordering::SeqCst), 1);
    round(&mut arc, None);
    assert_eq!(backend.resumed.load(Ordering::SeqCst), 2);
}

per_driver!(
    verified_upstream_with_sni_and_keep_alive_reuse,
    failed_verification_is_502_upstream_tls,
    large_bodies_both_ways,
    slow_client_over_tls_upstream,
    stalled_handshake_times_out,
    ingress_backend_tls_annotations,
    sessions_resume_across_cluster_snapshots,
    verify_off_accepts_any_certificate_and_ip_sends_no_sni,
);

/// How `upstreams[].tls` becomes client settings: SNI defaults, `enabled: false`, and an
/// unusable CA file taking the upstream out of service instead of falling back to plain HTTP.
#[test]
fn config_to_upstream_settings() {
    let yaml = "upstreams:\n\
        \x20 - {name: named, addr: 'localhost:8443', tls: {verify: false}}\n\
        \x20 - {name: ip, addr: '127.0.0.1:8443', tls: {verify: false}}\n\
        \x20 - {name: explicit, addr: '127.0.0.1:8443', tls: {server_name: api.internal, verify: false}}\n\
        \x20 - {name: off, addr: '127.0.0.1:8443', tls: {enabled: false}}\n\
        \x20 - {name: plain, addr: '127.0.0.1:8080'}\n\
        \x20 - {name: badca, addr: '127.0.0.1:8443', tls: {ca: /nonexistent/ca.pem}}\n\
        routes:\n  - {path: /, upstream: plain}\n";
    let cfg = config::parse_str(yaml, Format::Yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let up = |name: &str| {
        let (i, u) = cfg
            .upstreams
            .iter()
            .enumerate()
            .find(|(_, u)| u.name == name)
            .unwrap();
        (
            arc_gateway::runtime::upstream_tls(u),
            arc_gateway::runtime::resolve_upstream(u, i),
        )
    };
    let (named, _) = up("named");
    let named = named.unwrap().expect("tls");
    assert_eq!(named.server_name(), Some("localhost"));
    assert!(!named.verifies());
    assert_eq!(up("ip").0.unwrap().expect("tls").server_name(), None);
    assert_eq!(
        up("explicit").0.unwrap().expect("tls").server_name(),
        Some("api.internal")
    );
    assert!(up("off").0.unwrap().is_none());
    let (plain, spec) = up("plain");
    assert!(plain.unwrap().is_none());
    assert!(spec.tls.is_none());
    let (bad, spec) = up("badca");
    assert!(bad.is_err());
    assert!(spec.tls.is_none());
    assert!(
        spec.endpoints.is_empty(),
        "no traffic rather than plain HTTP"
    );
}
