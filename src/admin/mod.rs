//! The admin port (`observability.metrics_bind`): a small hyper HTTP/1.1 server on the
//! control-plane tokio runtime serving health, readiness and metrics.
//!
//! - `GET /healthz`: liveness: `200 ok` while every data-plane worker turns its event loop,
//!   `503` naming the wedged workers once one has not turned for 5 s (SPEC §5), so Kubernetes
//!   restarts a wedged pod.
//! - `GET /readyz`: `200 ready` when the config is loaded, the workers are up, the first sync is
//!   done and the process is not draining; otherwise `503` with a body naming what is missing
//!   (see [`HealthState`]).
//! - `GET /metrics`: every metric in the OpenMetrics 1.0 text format, content type
//!   [`OPENMETRICS_CONTENT_TYPE`] (`application/openmetrics-text; version=1.0.0;
//!   charset=utf-8`). prometheus-client emits OpenMetrics (`# EOF`, `_total` samples), so
//!   announcing the older `text/plain; version=0.0.4` would be wrong; Prometheus accepts
//!   OpenMetrics. No authentication: bind it to loopback or a pod-internal address.
//! - `HEAD` works wherever `GET` does; other methods on these paths get `405` with `Allow`;
//!   other paths `404`.
//!
//! - `/api/v1/...`: the token-protected control API, and `/ui`: the dashboard (see [`api`]).
//!
//! The room reads [`Metrics`], [`HealthState`] and what the process publishes into a
//! [`ControlView`] (snapshots, certificates); it never reaches into workers.
//! Shutdown is graceful: when the shutdown future resolves the listener closes, idle
//! keep-alive connections close, responses in progress finish, and after a grace period
//! ([`DEFAULT_SHUTDOWN_GRACE`]) whatever remains is dropped.

#![forbid(unsafe_code)]

pub mod api;
pub mod control;
pub mod health;
pub mod token;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use control::{ControlCommand, ControlView, Published, ReloadEvent};
pub use health::{HealthState, Liveness, Readiness, WorkerLiveness};
pub use token::{ControlToken, TokenCheck};

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Config key naming the admin server's address; quoted in bind errors.
pub const METRICS_BIND_KEY: &str = "observability.metrics_bind";

/// Default admin address outside the Helm chart.
pub const DEFAULT_METRICS_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// How long shutdown waits for admin connections to finish before dropping them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Admin connections open at once; more are closed on accept (the port serves probes and a
/// few scrapers, not the public).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// A request head must arrive within this time (slowloris on the admin port).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin address could not be bound.
    #[error("cannot bind the admin server to {addr} ({METRICS_BIND_KEY}): {source}")]
    Bind {
        /// The address from `observability.metrics_bind`.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// State every admin request reads.
#[derive(Debug)]
struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<HealthState>,
    control: Option<Arc<ControlView>>,
}

/// A bound admin server, ready to [`serve`](AdminServer::serve).
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AdminState>,
    grace: Duration,
}

impl AdminServer {
    /// Binds `addr` (the value of `observability.metrics_bind`). Must run inside a tokio
    /// runtime. The error names the address and the config key.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<HealthState>,
    ) -> Result<Self, AdminError> {
        let bind_err = |source| AdminError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            local_addr,
            state: Arc::new(AdminState {
                metrics,
                health,
                control: None,
            }),
            grace: DEFAULT_SHUTDOWN_GRACE,
        })
    }

    /// Serves on an already bound listening socket (handed over by the previous process of a
    /// zero-downtime upgrade). Must run inside a tokio runtime.
    pub fn from_std(
        listener: std::net::TcpListener,
        metrics: Arc<Metrics>,
        health: Arc<HealthState>,
    ) -> Result<Self, AdminError> {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let bind_err = |source| AdminError::Bind { addr, source };
        listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = TcpListener::from_std(listener).map_err(bind_err)?;
        Ok(Self {
            listener,
            local_addr: addr,
            state: Arc::new(AdminState {
                metrics,
                health,
                control: None,
            }),
            grace: DEFAULT_SHUTDOWN_GRACE,
        })
    }

    /// A duplicate of the listening socket (the same socket), for an upgrade handoff.
    pub fn listener_socket(&self) -> std::io::Result<std::net::TcpListener> {
        use std::os::fd::AsFd;
        let fd = self.listener.as_fd().try_clone_to_owned()?;
        Ok(std::net::TcpListener::from(fd))
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the control API and dashboard from `control` (without it `/api` answers 404).
    pub fn with_control(mut self, control: Arc<ControlView>) -> Self {
        let state = AdminState {
            metrics: Arc::clone(&self.state.metrics),
            health: Arc::clone(&self.state.health),
            control: Some(control),
        };
        self.state = Arc::new(state);
        self
    }

    /// Sets how long shutdown waits for open connections.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see the module docs).
    /// Connections are spawned on the current tokio runtime.
    pub async fn serve<F>(self, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    // Transient (EMFILE, ECONNABORTED...): back off instead of spinning.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let state = Arc::clone(&self.state);
            let service = service_fn(move |req: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move {
                    let path = req.uri().path();
                    let response = if api::owns(path) {
                        let auth = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .map(HeaderValue::as_bytes);
                        api::respond(
                            state.control.as_deref(),
                            &state.metrics,
                            req.method(),
                            path,
                            auth,
                            peer,
                        )
                        .await
                    } else {
                        respond(&state, &req)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                // A client that goes away mid-request is its own problem; nothing to report.
                let _ = conn.await;
                drop(permit);
            });
        }

        drop(self.listener);
        // Bounded: connections still busy after the grace period are dropped with the tasks.
        let _ = tokio::time::timeout(self.grace, graceful.shutdown()).await;
    }

    /// Spawns [`serve`](Self::serve) on `runtime`.
    pub fn spawn<F>(
        self,
        runtime: &tokio::runtime::Handle,
        shutdown: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        runtime.spawn(self.serve(shutdown))
    }
}

/// A shutdown future for [`AdminServer::serve`]: resolves when the watched value becomes
/// `true`, or when the sender is dropped (nobody is left to keep the process running).
pub async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    with_type(status, PLAIN_TEXT, body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Answers one admin request.
fn respond<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/healthz" => match state.health.liveness(std::time::Instant::now()) {
            Liveness::Alive => text(StatusCode::OK, "ok\n"),
            wedged => text(StatusCode::SERVICE_UNAVAILABLE, format!("{wedged}\n")),
        },
        "/readyz" => {
            let readiness = state.health.readiness();
            let status = if readiness.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, format!("{readiness}\n"))
        }
        _ => match state.metrics.encode() {
            Ok(body) => with_type(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, body),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(HealthState::new()),
            control: None,
        }
    }

    fn get(method: Method, path: &str) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = path.parse().expect("static uri");
        req
    }

    #[test]
    fn routing_table_of_the_admin_port() {
        let s = state();
        let cases = [
            (Method::GET, "/healthz", StatusCode::OK),
            (Method::HEAD, "/healthz", StatusCode::OK),
            (Method::GET, "/readyz", StatusCode::SERVICE_UNAVAILABLE),
            (Method::GET, "/metrics", StatusCode::OK),
            (Method::GET, "/metrics?x=1", StatusCode::OK),
            (Method::POST, "/metrics", StatusCode::METHOD_NOT_ALLOWED),
            (Method::DELETE, "/healthz", StatusCode::METHOD_NOT_ALLOWED),
            (Method::GET, "/", StatusCode::NOT_FOUND),
            (Method::POST, "/nope", StatusCode::NOT_FOUND),
            (Method::GET, "/healthz/", StatusCode::NOT_FOUND),
        ];
        for (method, path, status) in cases {
            let r = respond(&s, &get(method.clone(), path));
            assert_eq!(r.status(), status, "{method} {path}");
        }
    }

    #[test]
    fn bind_error_names_key_and_address() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("static addr");
        let e = AdminError::Bind {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let msg = e.to_string();
        assert!(msg.contains("127.0.0.1:9"), "{msg}");
        assert!(msg.contains(METRICS_BIND_KEY), "{msg}");
    }
}
