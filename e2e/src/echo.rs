//! The echo backend: an HTTP/1.1 server that answers with which backend it is and the request
//! it saw, and that can be switched on command to stall or to answer errors. It runs in-process
//! on a listener (possibly bound inside a network namespace) or as the `arc-e2e-echo` binary.
//!
//! Control paths on the same port: `POST /__echo/normal`, `POST /__echo/stall`,
//! `POST /__echo/error/{code}`; `GET /__echo/count` returns the number of echoed requests.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Echo the request with 200.
    Normal,
    /// Read the request and never answer (until the mode changes or the client leaves).
    Stall,
    /// Answer every request with this status.
    Error(u16),
}

const MODE_NORMAL: u8 = 0;
const MODE_STALL: u8 = 1;
const MODE_ERROR: u8 = 2;

/// Shared control state of one backend.
#[derive(Debug)]
pub struct EchoState {
    name: String,
    mode: AtomicU8,
    error_code: AtomicU16,
    count: AtomicU64,
    changed: watch::Sender<()>,
}

impl EchoState {
    /// A backend named `name`, in normal mode.
    pub fn new(name: &str) -> Arc<Self> {
        let (changed, _) = watch::channel(());
        Arc::new(EchoState {
            name: name.to_string(),
            mode: AtomicU8::new(MODE_NORMAL),
            error_code: AtomicU16::new(500),
            count: AtomicU64::new(0),
            changed,
        })
    }

    /// The backend's name, as reported in answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Switches how the backend answers.
    pub fn set_mode(&self, mode: Mode) {
        match mode {
            Mode::Normal => self.mode.store(MODE_NORMAL, Ordering::SeqCst),
            Mode::Stall => self.mode.store(MODE_STALL, Ordering::SeqCst),
            Mode::Error(code) => {
                self.error_code.store(code, Ordering::SeqCst);
                self.mode.store(MODE_ERROR, Ordering::SeqCst);
            }
        }
        self.changed.send_replace(());
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            MODE_STALL => Mode::Stall,
            MODE_ERROR => Mode::Error(self.error_code.load(Ordering::SeqCst)),
            _ => Mode::Normal,
        }
    }

    /// Requests answered or stalled so far (control paths excluded).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

type Body = Full<Bytes>;

fn respond(code: u16, body: serde_json::Value, backend: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("x-backend", backend)
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&body).unwrap_or_default(),
        )))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle(
    state: Arc<EchoState>,
    remote: String,
    local: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(cmd) = path.strip_prefix("/__echo/") {
        match cmd {
            "normal" => state.set_mode(Mode::Normal),
            "stall" => state.set_mode(Mode::Stall),
            "count" => {
                return respond(200, json!({"count": state.count()}), &state.name);
            }
            other => match other
                .strip_prefix("error/")
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (100..=599).contains(c))
            {
                Some(code) => state.set_mode(Mode::Error(code)),
                None => return respond(404, json!({"error": "unknown control"}), &state.name),
            },
        }
        return respond(
            200,
            json!({"mode": format!("{:?}", state.mode())}),
            &state.name,
        );
    }
    state.count.fetch_add(1, Ordering::SeqCst);
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let version = format!("{:?}", req.version());
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                json!(String::from_utf8_lossy(v.as_bytes())),
            )
        })
        .collect();
    let body = Limited::new(req.into_body(), 16 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut changed = state.changed.subscribe();
    // Bounded: a stalled request is released when the mode changes, or after ten minutes.
    let stall_limit = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(stall_limit);
    while state.mode() == Mode::Stall {
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = &mut stall_limit => break,
        }
    }
    let report = json!({
        "backend": state.name,
        "method": method,
        "path": path,
        "query": query,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "bodyLength": body.len(),
        "remote": remote,
        "local": local,
    });
    match state.mode() {
        Mode::Error(code) => respond(code, report, &state.name),
        _ => respond(200, report, &state.name),
    }
}

/// Serves echo requests on `listener` until the future is dropped (dropping closes every
/// connection, which is how a backend is killed).
pub async fn serve(listener: TcpListener, state: Arc<EchoState>) {
    let mut conns = JoinSet::new();
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        tokio::select! {
            res = listener.accept() => {
                let Ok((tcp, remote)) = res else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let state = state.clone();
                let local = local.clone();
                conns.spawn(async move {
                    let remote = remote.to_string();
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        let remote = remote.clone();
                        let local = local.clone();
                        async move { Ok::<_, Infallible>(handle(state, remote, local, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
