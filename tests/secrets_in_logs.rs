//! Secret material never reaches Arc's logs. The real `arc-gateway` binary runs with a control
//! token and a TLS certificate (logging at `debug`, process and access log on stderr), answers
//! authenticated, unauthenticated and wrong-token control API calls, proxies HTTPS requests that
//! carry credentials, reloads through the API and SIGHUP (the token rotated), rejects a reload
//! whose key file is broken, reloads without a token (the API switches off), and drains; then
//! its whole log is searched for the tokens (as written and base64), the presented wrong
//! tokens, the client credentials, and the private keys (armour, body lines, base64) with the
//! shared check of `tests/common/secrets.rs`. `--check` on a broken file that holds a token and
//! a key is held to the same rule.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::secrets::{PEM_KEY_ARMOUR, Secrets};
use common::{ScratchDir, backend, connect, free_port, read_response, wait_until};

const TOKEN: &str = "s3cret-c0ntrol-t0ken-7f2a91";
const ROTATED: &str = "r0tated-c0ntrol-t0ken-c84e05";
/// Wrong tokens a client presents: a guess, and the right token minus its last character.
const WRONG: &str = "wr0ng-guess-t0ken-31d6";
const NEAR_MISS: &str = "s3cret-c0ntrol-t0ken-7f2a9";
/// Credentials a client sends through the proxy to its backend.
const CLIENT_BEARER: &str = "client-api-key-e5b7c2d4";
const CLIENT_COOKIE: &str = "session-c00kie-0a9b8c7d";
const HOST: &str = "secure.test";

/// A key file Arc cannot use, with a body a leak would show.
const JUNK_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
    bm90IGEga2V5IGF0IGFsbCwganVzdCBieXRlcyB0aGF0IG11c3QgbmV2ZXIgYmUgbG9nZ2Vk\n\
    -----END PRIVATE KEY-----\n";

struct Ports {
    http: u16,
    https: u16,
    admin: u16,
}

fn config(dir: &Path, p: &Ports, upstream: SocketAddr, token: &str, key: &str) -> String {
    format!(
        "node: {{workers: 1}}\n\
         io_uring: {{enabled: false}}\n\
         listeners:\n  - {{name: http, bind: '127.0.0.1:{http}', protocol: http}}\n  - {{name: https, bind: '127.0.0.1:{https}', protocol: https}}\n\
         tls:\n  certificates:\n    - {{hosts: ['{HOST}'], cert: '{dir}/{HOST}.crt', key: '{dir}/{key}'}}\n\
         upstreams:\n  - {{name: app, addr: '{upstream}'}}\n\
         routes:\n  - {{path: /, path_type: Prefix, upstream: app}}\n\
         control_plane: {{auth_token: '{token}'}}\n\
         observability: {{metrics_bind: '127.0.0.1:{admin}'}}\n\
         logging: {{level: debug, format: json, output: {{path: stderr}}}}\n\
         lifecycle: {{drain_timeout: 2s}}\n",
        http = p.http,
        https = p.https,
        admin = p.admin,
        dir = dir.display(),
    )
}

/// One request on a fresh connection: (status, head, body).
fn call(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let mut s = connect(addr);
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send");
    let (head, body) = read_response(&mut s, &mut Vec::new()).unwrap_or_default();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn kill(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status();
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn token_and_key_material_never_reach_the_log() {
    let dir = ScratchDir::new("secrets-in-logs");
    let ca = common::ca::TestCa::new();
    let (cert, key) = ca.leaf(&[HOST]);
    dir.write(&format!("{HOST}.crt"), &cert);
    dir.write(&format!("{HOST}.key"), &key);
    dir.write("junk.key", JUNK_KEY);
    let b = backend("b1");
    let ports = Ports {
        http: free_port(),
        https: free_port(),
        admin: free_port(),
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let https = SocketAddr::from(([127, 0, 0, 1], ports.https));
    let cfg_path = dir.write(
        "arc.yaml",
        config(dir.path(), &ports, b.addr, TOKEN, &format!("{HOST}.key")),
    );
    let log_path = dir.path().join("arc.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut child = common::arc_command()
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("spawn arc-gateway");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let until = Instant::now() + Duration::from_secs(20);
    while call_ok(admin, "/readyz") != 200 {
        assert!(Instant::now() < until, "not ready; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Control API: the right token, none, wrong ones, another scheme.
    let (status, _, body) = call(admin, "GET", "/api/v1/config", Some(&bearer(TOKEN)));
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(TOKEN), "config dump: {body}");
    assert!(body.contains("<redacted>"), "{body}");
    let (status, _, body) = call(admin, "GET", "/api/v1/certificates", Some(&bearer(TOKEN)));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(HOST), "{body}");
    assert!(!body.contains(PEM_KEY_ARMOUR), "{body}");
    for auth in [
        None,
        Some(bearer(WRONG)),
        Some(bearer(NEAR_MISS)),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {TOKEN}x")),
    ] {
        let (status, _, body) = call(admin, "GET", "/api/v1/routes", auth.as_deref());
        assert_eq!(status, 401, "{auth:?}");
        assert!(body.is_empty(), "{auth:?}: {body}");
        let (status, _, _) = call(admin, "POST", "/api/v1/reload", auth.as_deref());
        assert_eq!(status, 401, "{auth:?}");
    }
    let (status, _, body) = call(admin, "POST", "/api/v1/reload", Some(&bearer(TOKEN)));
    assert_eq!(status, 200, "reload through the API: {body}");

    // HTTPS through the proxy with the configured certificate, carrying client credentials.
    let client = Arc::new(common::tls::accept_any_client());
    let mut tls = common::tls::tls_over(connect(https), &client, HOST);
    write!(
        tls,
        "GET /private HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {CLIENT_BEARER}\r\n\
         Cookie: session={CLIENT_COOKIE}\r\nConnection: close\r\n\r\n"
    )
    .expect("send over TLS");
    let (head, _) = read_response(&mut tls, &mut Vec::new()).expect("HTTPS response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-backend: b1"),
        "{head}"
    );
    let served = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("a server certificate");
    assert_eq!(
        served.as_ref(),
        ca_leaf_der(&cert).as_slice(),
        "the configured certificate is served"
    );

    // SIGHUP with a rotated token: the new one works, the old one no longer does.
    std::fs::write(
        &cfg_path,
        config(dir.path(), &ports, b.addr, ROTATED, &format!("{HOST}.key")),
    )
    .expect("rewrite config");
    kill(&child, "HUP");
    wait_until("the rotated token", || {
        call(admin, "GET", "/api/v1/routes", Some(&bearer(ROTATED))).0 == 200
    });
    assert_eq!(
        call(admin, "GET", "/api/v1/routes", Some(&bearer(TOKEN))).0,
        401
    );

    // A reload whose key file is unusable is rejected, through the API and SIGHUP alike.
    std::fs::write(
        &cfg_path,
        config(dir.path(), &ports, b.addr, ROTATED, "junk.key"),
    )
    .expect("rewrite config");
    let (status, _, body) = call(admin, "POST", "/api/v1/reload", Some(&bearer(ROTATED)));
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("junk.key"),
        "the error names the file: {body}"
    );
    assert!(!body.contains("bm90IGEga2V5"), "{body}");
    let rejections = log().matches("junk.key").count();
    assert!(
        rejections > 0,
        "the API's rejected reload is logged:\n{}",
        log()
    );
    kill(&child, "HUP");
    wait_until("the rejected SIGHUP reload in the log", || {
        log().matches("junk.key").count() > rejections
    });
    assert_eq!(
        call(admin, "GET", "/api/v1/routes", Some(&bearer(ROTATED))).0,
        200,
        "the old configuration keeps serving"
    );

    // A reload that removes the token switches the control API off (404 for every token).
    let without_token = config(dir.path(), &ports, b.addr, ROTATED, &format!("{HOST}.key"))
        .replace(&format!("control_plane: {{auth_token: '{ROTATED}'}}\n"), "");
    assert!(!without_token.contains("control_plane"), "{without_token}");
    std::fs::write(&cfg_path, without_token).expect("rewrite config");
    kill(&child, "HUP");
    wait_until("the control API switched off", || {
        call(admin, "GET", "/api/v1/routes", Some(&bearer(ROTATED))).0 == 404
    });
    assert_eq!(call(admin, "GET", "/api/v1/routes", None).0, 404);

    kill(&child, "TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(15)),
        Some(0),
        "{}",
        log()
    );

    let log = log();
    // The log saw what happened (so its cleanliness means something).
    for needle in [
        "admin server listening",
        "control API write",
        "\"action\":\"reload\"",
        "junk.key",
        "/private",
    ] {
        assert!(
            log.contains(needle),
            "{needle} missing from the log:\n{log}"
        );
    }
    Secrets::new()
        .value("control token", TOKEN)
        .value("rotated control token", ROTATED)
        .value("wrong token", WRONG)
        .value("near-miss token", NEAR_MISS)
        .value("client bearer credential", CLIENT_BEARER)
        .value("client cookie", CLIENT_COOKIE)
        .pem_key("TLS private key", &key)
        .pem_key("unusable key file", JUNK_KEY)
        .assert_clean("arc-gateway log", &log);
}

/// `--check` on a file that holds a token and names a broken key: the errors name keys and
/// files, never the token or the key's content.
#[test]
fn check_output_names_problems_without_secrets() {
    let dir = ScratchDir::new("secrets-check");
    let ca = common::ca::TestCa::new();
    let (cert, _) = ca.leaf(&[HOST]);
    dir.write(&format!("{HOST}.crt"), &cert);
    dir.write("junk.key", JUNK_KEY);
    let ports = Ports {
        http: free_port(),
        https: free_port(),
        admin: free_port(),
    };
    let mut text = config(
        dir.path(),
        &ports,
        SocketAddr::from(([127, 0, 0, 1], 9)),
        TOKEN,
        "junk.key",
    );
    text.push_str("max_connections: 0\n");
    let cfg = dir.write("arc.yaml", text);
    let out = common::arc_command()
        .arg("--config")
        .arg(&cfg)
        .arg("--check")
        .output()
        .expect("run --check");
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("max_connections"), "{all}");
    Secrets::new()
        .value("control token", TOKEN)
        .pem_key("unusable key file", JUNK_KEY)
        .assert_clean("--check output", &all);
}

/// The check itself: what it finds and what it lets through.
#[test]
fn the_check_finds_tokens_keys_and_their_encodings() {
    let ca = common::ca::TestCa::new();
    let (_, key) = ca.leaf(&[HOST]);
    let s = Secrets::new().value("token", TOKEN).pem_key("key", &key);
    assert!(s.leaks("nothing secret here\n").is_empty());
    assert!(
        s.leaks("no private key found (expected PEM \"PRIVATE KEY\")")
            .is_empty(),
        "Arc's error naming the expected label is not key material"
    );
    assert_eq!(s.leaks(&format!("auth: Bearer {TOKEN}")).len(), 1);
    assert_eq!(
        s.leaks(&common::tls::base64(TOKEN.as_bytes())).len(),
        1,
        "base64 of the token"
    );
    assert!(!s.leaks(&key).is_empty(), "the key itself");
    let body = key.lines().nth(1).expect("a key body line");
    assert_eq!(
        s.leaks(&format!("key={body}")).len(),
        1,
        "a body line alone"
    );
    assert!(
        !s.leaks(&common::tls::base64(key.as_bytes())).is_empty(),
        "the key as a Secret's base64 data"
    );
    assert_eq!(
        s.leaks("-----BEGIN RSA PRIVATE KEY-----").len(),
        1,
        "any key's armour"
    );
}

fn call_ok(admin: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return 0;
    }
    read_response(&mut s, &mut Vec::new())
        .and_then(|(h, _)| h.get(9..12).and_then(|c| c.parse().ok()))
        .unwrap_or(0)
}

/// The DER of the first certificate of a PEM text.
fn ca_leaf_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("valid PEM")
        .to_vec()
}
