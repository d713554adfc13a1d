//! The control API and the access log end to end over loopback: token handling, redaction,
//! live responses checked against the served OpenAPI document, write actions through the
//! command channel (reload, drain, endpoint disable/enable) logged with the caller address,
//! and access-log lines written to rotated files.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_gateway::admin::{
    AdminServer, ControlCommand, ControlToken, ControlView, HealthState, shutdown_signal,
};
use arc_gateway::config;
use arc_gateway::logging::{self, AccessLog, LogTarget};
use arc_gateway::metrics::Metrics;
use arc_gateway::runtime::Server;
use serde_json::Value;

use common::alloc::allocations_during;
use common::{backend, connect, read_response, wait_until};

const TOKEN: &str = "t0p-s3cret-for-tests";
/// The token a test swaps in (as a Secret change would).
const ROTATED: &str = "r0tated-t0ken-for-tests";
/// A wrong token that is a prefix of the right one.
const NEAR_MISS: &str = "t0p-s3cret-for-test";

/// Every token this binary's tests configure or present: none may reach a log (checked when
/// each [`Stack`] ends, on the captured process log and the stack's access-log files).
fn secrets() -> common::secrets::Secrets {
    common::secrets::Secrets::new()
        .value("control token", TOKEN)
        .value("rotated control token", ROTATED)
        .value("near-miss token", NEAR_MISS)
}

// ---------------------------------------------------------------------------------------------
// Process log capture: every `tracing` event of this test binary lands in one buffer.

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

// ---------------------------------------------------------------------------------------------
// A running Arc: data plane, admin server with the control API, and a process loop thread
// that handles the commands the way `main.rs` does.

struct Stack {
    admin: SocketAddr,
    http: SocketAddr,
    dir: PathBuf,
    control: Arc<ControlView>,
    drained: Arc<AtomicBool>,
    commands: tokio::sync::mpsc::Sender<ControlCommand>,
    stop_admin: Option<tokio::sync::watch::Sender<bool>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Stack {
    fn config_path(&self) -> PathBuf {
        self.dir.join("arc.yaml")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Ends the process loop (it may have ended already after a drain).
        let _ = self.commands.blocking_send(ControlCommand::Drain);
        if let Some(s) = self.stop_admin.take() {
            let _ = s.send(true);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The end of every test: the process log (shared by the binary's tests) and this
        // stack's access log (every rotated file) carry no token.
        let mut access = String::new();
        let files = std::fs::read_dir(self.dir.join("logs"))
            .into_iter()
            .flatten();
        for f in files.flatten() {
            access.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            secrets().assert_clean("process log", &captured());
            secrets().assert_clean("access log", &access);
        }
    }
}

fn yaml(token: Option<&str>, addrs: &[SocketAddr], logs: &Path) -> String {
    let addrs: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let token = token.map_or(String::new(), |t| {
        format!("control_plane: {{auth_token: {t}}}\n")
    });
    format!(
        "node: {{workers: 1}}\n\
         io_uring: {{enabled: false}}\n\
         listeners: [{{name: http, bind: \"127.0.0.1:0\", protocol: http}}]\n\
         upstreams:\n  - {{name: app, addrs: [{0}], pool: {{max_idle: 0}}}}\n  - {{name: dead, addrs: [\"127.0.0.1:1\"]}}\n  - {{name: kept, addrs: [{0}]}}\n\
         routes:\n  - {{host: app.example.com, path: /, upstream: app}}\n  - {{host: dead.example.com, path: /, upstream: dead}}\n  - {{host: quiet.example.com, path: /, direct_response: {{status: 204}}, access_log: false}}\n  - {{host: kept.example.com, path: /, upstream: kept}}\n\
         {token}\
         logging: {{output: {{path: \"{1}\", rotation: {{max_size: 1MiB, max_files: 2}}}}}}\n",
        addrs.join(", "),
        logs.display()
    )
}

fn start(name: &str, token: Option<&str>, addrs: &[SocketAddr]) -> Stack {
    capture_logs();
    let dir = common::temp_dir(&format!("control-{name}"));
    let path = dir.join("arc.yaml");
    std::fs::write(&path, yaml(token, addrs, &dir.join("logs"))).expect("write config");
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("{e}"));

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthState::new());
    let target = Arc::new(
        LogTarget::from_config(&cfg.logging.output, logging::ACCESS_LOG_FILE).expect("log dir"),
    );
    let access = Arc::new(
        AccessLog::start(
            target,
            logging::access_policy(&cfg, metrics.routes()),
            cfg.logging.access_log.buffer,
            Arc::clone(&metrics),
        )
        .expect("access log"),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ControlCommand>(4);
    let control = Arc::new(ControlView::new(
        ControlToken::new(cfg.control_plane.auth_token.clone()),
        Some(tx.clone()),
    ));
    control.attach_access_log(Arc::clone(&access));
    let mut server = Server::start_with_access_log(
        cfg,
        &dir,
        Arc::clone(&metrics),
        Arc::clone(&health),
        Some(Arc::clone(&access)),
    )
    .unwrap_or_else(|e| panic!("start: {e}"));
    server.attach_control(Arc::clone(&control));
    let http = server.local_addrs()[0];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = rt
        .block_on(AdminServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            metrics,
            health,
        ))
        .expect("bind admin")
        .with_control(Arc::clone(&control));
    let admin_addr = admin.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_thread = std::thread::spawn(move || {
        rt.block_on(admin.serve(shutdown_signal(stop_rx)));
    });

    let drained = Arc::new(AtomicBool::new(false));
    let (loop_control, loop_drained) = (Arc::clone(&control), Arc::clone(&drained));
    let loop_thread = std::thread::spawn(move || {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                ControlCommand::Reload { reply } => {
                    let result = config::load(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|c| server.reload(c).map_err(|e| e.to_string()))
                        .map(|_| server.version());
                    loop_control.record_reload("api", result.clone());
                    let _ = reply.send(result);
                }
                ControlCommand::SetEndpoint {
                    upstream,
                    endpoint,
                    enabled,
                    reply,
                } => {
                    let _ = reply.send(Ok(server.set_endpoint(&upstream, endpoint, enabled)));
                }
                ControlCommand::Drain => {
                    loop_drained.store(true, Ordering::SeqCst);
                    break;
                }
            }
        }
        let _ = server.shutdown();
        access.stop();
    });
    Stack {
        admin: admin_addr,
        http,
        dir,
        control,
        drained,
        commands: tx,
        stop_admin: Some(stop_tx),
        threads: vec![admin_thread, loop_thread],
    }
}

/// One HTTP/1.1 exchange on a fresh connection: status, head, body.
fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    call_host(addr, method, path, token, "localhost")
}

fn call_host(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    host: &str,
) -> (u16, String, Vec<u8>) {
    let mut s = connect(addr);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut s, &mut buf).expect("response");
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head, body)
}

fn get_json(stack: &Stack, path: &str) -> Value {
    let (status, head, body) = call(stack.admin, "GET", path, Some(TOKEN));
    assert_eq!(status, 200, "{path}: {head}");
    assert!(head.contains("application/json"), "{head}");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A small JSON-schema checker for the subset the OpenAPI document uses: type (one or a list),
// properties, required, items, enum, additionalProperties and local $ref.

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = r.trim_start_matches('#');
        match doc.pointer(pointer) {
            Some(s) => check(doc, s, v, at, problems),
            None => problems.push(format!("{at}: unresolved {r}")),
        }
        return;
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            problems.push(format!("{at}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        problems.push(format!("{at}: {v} not in {e:?}"));
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(req) {
                problems.push(format!("{at}: missing {req}"));
            }
        }
        for (k, child) in obj {
            let sub = format!("{at}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => check(doc, s, child, &sub, problems),
                (None, Some(s)) if s.is_object() => check(doc, s, child, &sub, problems),
                (None, _) if props.is_some() => problems.push(format!("{sub}: not documented")),
                _ => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, child) in arr.iter().enumerate() {
            check(doc, items, child, &format!("{at}[{i}]"), problems);
        }
    }
}

fn conforms(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let schema =
        doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
            ["schema"]
            .clone();
    assert!(
        !schema.is_null(),
        "{method} {path} {status} is not described in openapi.json"
    );
    let mut problems = Vec::new();
    check(doc, &schema, body, path, &mut problems);
    assert!(problems.is_empty(), "{method} {path}: {problems:#?}");
}

// ---------------------------------------------------------------------------------------------

#[test]
fn without_a_token_the_api_is_disabled_but_the_dashboard_loads() {
    let b = backend("b1");
    let s = start("disabled", None, &[b.addr]);
    for path in ["/api/v1/routes", "/api/v1/config", "/api/v1/openapi.json"] {
        assert_eq!(call(s.admin, "GET", path, Some(TOKEN)).0, 404, "{path}");
        assert_eq!(call(s.admin, "GET", path, None).0, 404, "{path}");
    }
    assert_eq!(call(s.admin, "POST", "/api/v1/drain", Some(TOKEN)).0, 404);
    assert!(!s.drained.load(Ordering::SeqCst));
    let (status, head, body) = call(s.admin, "GET", "/ui", None);
    assert_eq!(status, 200);
    assert!(head.contains("text/html"));
    assert!(String::from_utf8_lossy(&body).contains("/ui/app.js"));
    assert_eq!(call(s.admin, "GET", "/ui/app.js", None).0, 200);
    assert_eq!(call(s.admin, "GET", "/ui/style.css", None).0, 200);
    assert_eq!(call(s.admin, "GET", "/ui/nope", None).0, 404);
}

#[test]
fn missing_and_wrong_tokens_get_401_without_detail() {
    let b = backend("b1");
    let s = start("auth", Some(TOKEN), &[b.addr]);
    for token in [None, Some("wrong"), Some(NEAR_MISS), Some("")] {
        let (status, head, body) = call(s.admin, "GET", "/api/v1/config", token);
        assert_eq!(status, 401, "{token:?}");
        assert!(
            body.is_empty(),
            "no detail: {:?}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            head.contains("WWW-Authenticate: Bearer") || head.contains("www-authenticate: Bearer"),
            "{head}"
        );
    }
    let (status, _, _) = call(s.admin, "POST", "/api/v1/reload", Some("wrong"));
    assert_eq!(status, 401);
    assert_eq!(call(s.admin, "GET", "/api/v1/config", Some(TOKEN)).0, 200);
    // Swapping the token (e.g. from the Secret) applies to the next request.
    s.control.token().set(Some(ROTATED.into()));
    assert_eq!(call(s.admin, "GET", "/api/v1/config", Some(TOKEN)).0, 401);
    assert_eq!(call(s.admin, "GET", "/api/v1/config", Some(ROTATED)).0, 200);
}

#[test]
fn config_dump_redacts_the_token() {
    let b = backend("b1");
    let s = start("redact", Some(TOKEN), &[b.addr]);
    let (status, _, body) = call(s.admin, "GET", "/api/v1/config", Some(TOKEN));
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(TOKEN), "{text}");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["config"]["control_plane"]["auth_token"], "<redacted>");
    assert_eq!(v["config"]["upstreams"][0]["name"], "app");
}

#[test]
fn live_responses_match_the_openapi_document() {
    let b = backend("b1");
    let s = start("openapi", Some(TOKEN), &[b.addr]);
    // Some traffic so the stats, endpoint and latency fields carry values.
    for host in [
        "app.example.com",
        "kept.example.com",
        "dead.example.com",
        "quiet.example.com",
        "none.example.com",
    ] {
        call_host(s.http, "GET", "/x", None, host);
    }
    let doc = get_json(&s, "/api/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.0.3");
    wait_until("latency totals", || {
        get_json(&s, "/api/v1/stats")["access_log"]["written"].as_u64() >= Some(3)
    });
    for path in [
        "/config",
        "/routes",
        "/upstreams",
        "/certificates",
        "/xdp",
        "/build",
        "/stats",
        "/reloads",
    ] {
        let v = get_json(&s, &format!("/api/v1{path}"));
        conforms(&doc, path, "get", 200, &v);
    }
    // XDP is off in this configuration; its counters are reported all the same.
    let xdp = get_json(&s, "/api/v1/xdp");
    assert_eq!(xdp["state"], "off");
    assert_eq!(xdp["enabled"], false);
    for action in ["passed", "denied", "syn_limited", "parse_error"] {
        assert!(xdp["packets"][action].is_u64(), "{action}: {xdp}");
    }
    let stats = get_json(&s, "/api/v1/stats");
    let routes = stats["routes"].as_array().expect("routes");
    let app = routes
        .iter()
        .find(|r| r["name"] == "routes[0]")
        .expect("app route");
    assert_eq!(app["requests"], 1);
    let dead = routes
        .iter()
        .find(|r| r["name"] == "routes[1]")
        .expect("dead route");
    assert_eq!(dead["errors"], 1);

    // Writes and errors are described too.
    let (status, _, body) = call(s.admin, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(status, 200);
    conforms(
        &doc,
        "/reload",
        "post",
        200,
        &serde_json::from_slice(&body).expect("json"),
    );
    let ep = format!("/api/v1/upstreams/app/endpoints/{}/disable", b.addr);
    let (status, _, body) = call(s.admin, "POST", &ep, Some(TOKEN));
    assert_eq!(status, 200);
    conforms(
        &doc,
        "/upstreams/{upstream}/endpoints/{endpoint}/disable",
        "post",
        200,
        &serde_json::from_slice(&body).expect("json"),
    );
    let (status, _, body) = call(
        s.admin,
        "POST",
        "/api/v1/upstreams/app/endpoints/not-an-address/enable",
        Some(TOKEN),
    );
    assert_eq!(status, 400);
    conforms(
        &doc,
        "/upstreams/{upstream}/endpoints/{endpoint}/enable",
        "post",
        400,
        &serde_json::from_slice(&body).expect("json"),
    );
    let (status, _, body) = call(s.admin, "POST", "/api/v1/drain", Some(TOKEN));
    assert_eq!(status, 202);
    conforms(
        &doc,
        "/drain",
        "post",
        202,
        &serde_json::from_slice(&body).expect("json"),
    );
}

/// The `pool` object of `endpoint` of `upstream` in `/api/v1/upstreams`.
fn endpoint_pool(stack: &Stack, upstream: &str, endpoint: SocketAddr) -> Value {
    let ups = get_json(stack, "/api/v1/upstreams");
    ups["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == upstream))
        .and_then(|u| u["endpoints"].as_array())
        .and_then(|a| a.iter().find(|e| e["address"] == endpoint.to_string()))
        .map(|e| e["pool"].clone())
        .unwrap_or_else(|| panic!("{upstream} {endpoint} not listed: {ups}"))
}

#[test]
fn keep_alive_requests_leave_idle_pooled_connections_per_endpoint() {
    let b = backend("b1");
    let s = start("pool-state", Some(TOKEN), &[b.addr]);
    assert_eq!(
        endpoint_pool(&s, "kept", b.addr),
        serde_json::json!({"idle": 0, "active": 0})
    );
    for _ in 0..3 {
        let (status, head, _) = call_host(s.http, "GET", "/x", None, "kept.example.com");
        assert_eq!(status, 200, "{head}");
        // `app` keeps nothing (max_idle: 0).
        let (status, head, _) = call_host(s.http, "GET", "/x", None, "app.example.com");
        assert_eq!(status, 200, "{head}");
    }
    wait_until("an idle pooled connection", || {
        endpoint_pool(&s, "kept", b.addr)["idle"].as_i64() >= Some(1)
    });
    let kept = endpoint_pool(&s, "kept", b.addr);
    // Sequential requests reuse one connection: one idle, none serving a request.
    assert_eq!(kept, serde_json::json!({"idle": 1, "active": 0}), "{kept}");
    assert_eq!(
        endpoint_pool(&s, "app", b.addr),
        serde_json::json!({"idle": 0, "active": 0})
    );
    let (status, _, body) = call(s.admin, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let idle = format!(
        "arc_upstream_pool_idle{{upstream=\"kept\",endpoint=\"{}\"}} 1",
        b.addr
    );
    let active = format!(
        "arc_upstream_connections_active{{upstream=\"kept\",endpoint=\"{}\"}} 0",
        b.addr
    );
    assert!(text.contains(&idle), "{idle} missing:\n{text}");
    assert!(text.contains(&active), "{active} missing:\n{text}");
    assert!(
        !text.contains("arc_upstream_pool_idle{upstream=\"app\""),
        "an endpoint with nothing pooled or active is not exported:\n{text}"
    );
}

#[test]
fn endpoints_are_taken_out_of_load_balancing_and_put_back() {
    let b1 = backend("b1");
    let b2 = backend("b2");
    let s = start("endpoints", Some(TOKEN), &[b1.addr, b2.addr]);
    let backends = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let (status, head, _) = call_host(s.http, "GET", "/x", None, "app.example.com");
                assert_eq!(status, 200, "{head}");
                head.lines()
                    .find_map(|l| l.strip_prefix("X-Backend: "))
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let before = backends(4);
    assert!(before.iter().any(|b| b == "b1") && before.iter().any(|b| b == "b2"));

    let path = format!("/api/v1/upstreams/app/endpoints/{}/disable", b1.addr);
    let (status, _, body) = call(s.admin, "POST", &path, Some(TOKEN));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(backends(6).iter().all(|b| b == "b2"));
    let ups = get_json(&s, "/api/v1/upstreams");
    let app = ups["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "app"))
        .expect("app");
    let e1 = app["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["address"] == b1.addr.to_string()))
        .expect("b1 still listed");
    assert_eq!(e1["disabled"], true);
    assert_eq!(e1["health"], "disabled");
    let log = captured();
    assert!(
        log.contains("action=\"disable_endpoint\"") && log.contains("caller=127.0.0.1:"),
        "write logged with the caller: {log}"
    );

    let path = format!("/api/v1/upstreams/app/endpoints/{}/enable", b1.addr);
    assert_eq!(call(s.admin, "POST", &path, Some(TOKEN)).0, 200);
    assert!(backends(4).iter().any(|b| b == "b1"));

    // Unknown endpoints and wrong methods.
    let path = "/api/v1/upstreams/app/endpoints/127.0.0.1:9/disable";
    assert_eq!(call(s.admin, "POST", path, Some(TOKEN)).0, 404);
    let path = format!("/api/v1/upstreams/app/endpoints/{}/disable", b1.addr);
    assert_eq!(call(s.admin, "GET", &path, Some(TOKEN)).0, 405);
    assert_eq!(
        call(s.admin, "DELETE", "/api/v1/routes", Some(TOKEN)).0,
        405
    );
}

#[test]
fn reload_through_the_api_is_recorded_and_a_bad_file_is_rejected() {
    let b = backend("b1");
    let s = start("reload", Some(TOKEN), &[b.addr]);
    let v1 = get_json(&s, "/api/v1/routes")["version"]
        .as_u64()
        .expect("version");
    let (status, _, body) = call(s.admin, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert!(v["version"].as_u64() > Some(v1));
    assert!(captured().contains("action=\"reload\""));

    std::fs::write(s.config_path(), "max_connections: many\n").expect("write");
    let (status, _, body) = call(s.admin, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(status, 422);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("max_connections"),
        "{v}"
    );

    let history = get_json(&s, "/api/v1/reloads");
    let events = history["reloads"].as_array().expect("reloads");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["success"], true);
    assert_eq!(events[0]["trigger"], "api");
    assert_eq!(events[1]["success"], false);
    // The routes still serve.
    assert_eq!(
        call_host(s.http, "GET", "/", None, "app.example.com").0,
        200
    );
}

#[test]
fn drain_reaches_the_process_loop() {
    let b = backend("b1");
    let s = start("drain", Some(TOKEN), &[b.addr]);
    let (status, _, _) = call(s.admin, "POST", "/api/v1/drain", Some(TOKEN));
    assert_eq!(status, 202);
    wait_until("drain command", || s.drained.load(Ordering::SeqCst));
    assert!(captured().contains("action=\"drain\""));
}

#[test]
fn access_log_lines_for_proxied_rejected_and_errored_requests() {
    let b = backend("b1");
    let s = start("access", Some(TOKEN), &[b.addr]);
    assert_eq!(
        call_host(s.http, "GET", "/ok?q=1", None, "app.example.com").0,
        200
    );
    assert_eq!(
        call_host(s.http, "GET", "/missing", None, "nowhere.example.com").0,
        404
    );
    assert_eq!(
        call_host(s.http, "GET", "/x", None, "dead.example.com").0,
        502
    );
    assert_eq!(
        call_host(s.http, "GET", "/x", None, "quiet.example.com").0,
        204
    );
    let file = s.dir.join("logs").join("access.log");
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_until("three access-log lines", || lines().len() >= 3);
    let all = lines();
    assert_eq!(all.len(), 3, "the quiet route writes no line: {all:#?}");
    let ok = &all[0];
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["host"], "app.example.com");
    assert_eq!(ok["path"], "/ok?q=1");
    assert_eq!(ok["upstream"], b.addr.to_string());
    assert_eq!(ok["route"], "routes[0]");
    assert!(ok["request_id"].as_str().is_some_and(|id| id.len() == 32));
    assert!(ok["trace_id"].as_str().is_some_and(|id| id.len() == 32));
    assert!(ok["bytes_in"].as_u64() > Some(0));
    assert!(ok["bytes_out"].as_u64() > Some(0));
    assert!(
        ok["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    assert!(ok["upstream_duration_ms"].is_number());
    assert!(ok["error"].is_null());
    let missing = &all[1];
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["error"], "no_route");
    assert!(missing["route"].is_null());
    let dead = &all[2];
    assert_eq!(dead["status"], 502);
    assert_eq!(dead["error"], "upstream_connect");
    assert_eq!(dead["upstream"], "127.0.0.1:1");
    // Passive health saw the failure.
    let ups = get_json(&s, "/api/v1/upstreams");
    let dead_ep = &ups["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "dead"))
        .expect("dead")["endpoints"][0];
    assert_eq!(dead_ep["failures"], 1);
    assert_eq!(dead_ep["last_error"], "upstream_connect");
}

#[test]
fn recording_a_request_does_not_allocate() {
    use arc_gateway::logging::{AccessLogger, RequestLog};
    let (logger, rx) = AccessLogger::channel(64);
    let now = Instant::now();
    let mut log = RequestLog::new("127.0.0.1:1".parse().expect("addr"), now);
    // The record is allocated once per connection, at its first request.
    log.begin(now, "GET", "h", "/", 0);
    let count = allocations_during(|| {
        for i in 0..32u64 {
            log.begin(now, "GET", "app.example.com", "/api/items?x=1", 0);
            log.read(80);
            log.proxied(
                "10.0.0.1:80".parse().expect("static addr"),
                b"0123456789abcdef",
                b"",
            );
            log.wrote(100);
            if let Some(rec) = log.finish(now + Duration::from_micros(i), 200, None, 0) {
                logger.push(rec);
            }
        }
    });
    assert_eq!(count, 0);
    assert_eq!(rx.try_iter().count(), 32);
}

#[global_allocator]
static ALLOC: common::alloc::CountingAlloc = common::alloc::CountingAlloc;
