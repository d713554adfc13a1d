//! The pipeline with plain values and virtual time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::retry::{AfterFailure, Attempt, MAX_REPLAYS, after_failure};
use super::*;
use crate::proxy::io::UpstreamError;

struct NoHeaders;

impl HeaderView for NoHeaders {
    fn get(&self, _name: &str) -> Option<&[u8]> {
        None
    }
    fn for_each_value(&self, _name: &str, _f: &mut dyn FnMut(&[u8])) {}
}

fn client(tls: bool) -> Client<'static> {
    Client {
        peer: SocketAddr::from(([192, 0, 2, 7], 40000)),
        local: SocketAddr::from(([127, 0, 0, 1], 8080)),
        listener: 0,
        tls,
        sni: None,
    }
}

fn request<'a>(authority: &'a str, target: &'a str, tls: bool) -> Request<'a> {
    Request {
        method: Method::Post,
        authority,
        path: target.split('?').next().unwrap_or(target),
        target,
        headers: &NoHeaders,
        client: client(tls),
    }
}

fn upstream(name: &str) -> Backend {
    Backend::upstream(name)
}

fn route<'a>(backend: &'a Backend, ssl_redirect: bool) -> RouteView<'a> {
    RouteView {
        name: "ns/web",
        ssl_redirect,
        backend,
    }
}

#[test]
fn plain_request_to_a_redirecting_route_gets_308_to_the_same_target_over_https() {
    let backend = upstream("app");
    let req = request("shop.example.com:8080", "/cart?item=1", false);
    let mut st = ExchangeState::default();
    let now = Instant::now();
    let d = decide(&req, &route(&backend, true), &[], &mut st, now);
    assert_eq!(
        d,
        Decision::Respond(LocalResponse {
            status: 308,
            content_type: "",
            body: b"",
            location: Some(Location::Https {
                host: "shop.example.com",
                target: "/cart?item=1"
            }),
            error: None,
        })
    );
    assert!(!st.in_progress());
}

#[test]
fn tls_requests_and_routes_without_redirect_go_to_the_backend() {
    let backend = upstream("app");
    let now = Instant::now();
    let mut st = ExchangeState::default();
    let over_tls = request("shop.example.com", "/", true);
    assert_eq!(
        decide(&over_tls, &route(&backend, true), &[], &mut st, now),
        Decision::Forward { upstream: "app" }
    );
    let plain = request("shop.example.com", "/", false);
    assert_eq!(
        decide(&plain, &route(&backend, false), &[], &mut st, now),
        Decision::Forward { upstream: "app" }
    );
}

#[test]
fn direct_response_and_redirect_backends_answer_locally() {
    let now = Instant::now();
    let mut st = ExchangeState::default();
    let req = request("a.example", "/x", false);
    let direct = Backend::DirectResponse {
        status: 418,
        body: "teapot\n".into(),
        content_type: "text/plain".into(),
    };
    assert_eq!(
        decide(&req, &route(&direct, false), &[], &mut st, now),
        Decision::Respond(LocalResponse {
            status: 418,
            content_type: "text/plain",
            body: b"teapot\n",
            location: None,
            error: None,
        })
    );
    let moved = Backend::Redirect {
        location: "https://b.example/".into(),
        code: 301,
    };
    assert_eq!(
        decide(&req, &route(&moved, false), &[], &mut st, now),
        Decision::Respond(LocalResponse {
            status: 301,
            content_type: "",
            body: b"",
            location: Some(Location::To("https://b.example/")),
            error: None,
        })
    );
}

#[test]
fn host_of_bracketed_ipv6_authority_keeps_brackets() {
    assert_eq!(strip_port("[::1]:8443"), "[::1]");
    assert_eq!(strip_port("example.com:80"), "example.com");
    assert_eq!(strip_port("example.com"), "example.com");
    assert_eq!(strip_port("[::1"), "[::1");
}

/// Waits until a fixed instant, counting its calls, then lets the request through.
#[derive(Debug)]
struct Gate {
    open_at: Instant,
    calls: AtomicUsize,
}

impl RequestPolicy for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn on_request<'a>(
        &'a self,
        _req: &Request<'a>,
        _route: &RouteView<'a>,
        state: &mut StepState,
        now: Instant,
    ) -> Verdict<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if state.since.is_none() {
            state.since = Some(now);
        }
        if now < self.open_at {
            Verdict::WaitUntil(self.open_at)
        } else {
            state.word = 1;
            Verdict::Continue
        }
    }
}

/// Counts its calls; refuses requests without `x-token`.
#[derive(Debug, Default)]
struct NeedsToken {
    calls: AtomicUsize,
}

impl RequestPolicy for NeedsToken {
    fn name(&self) -> &'static str {
        "needs-token"
    }
    fn on_request<'a>(
        &'a self,
        req: &Request<'a>,
        _route: &RouteView<'a>,
        _state: &mut StepState,
        _now: Instant,
    ) -> Verdict<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if req.headers.get("x-token").is_some() {
            Verdict::Continue
        } else {
            Verdict::Respond(LocalResponse::error(
                401,
                crate::metrics::ErrorReason::BadRequest,
            ))
        }
    }
}

struct TokenHeader;

impl HeaderView for TokenHeader {
    fn get(&self, name: &str) -> Option<&[u8]> {
        name.eq_ignore_ascii_case("x-token")
            .then_some(b"t".as_slice())
    }
    fn for_each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        if let Some(v) = self.get(name) {
            f(v);
        }
    }
}

#[test]
fn a_waiting_step_resumes_where_it_stopped_and_earlier_steps_run_once() {
    let t0 = Instant::now();
    let token = Arc::new(NeedsToken::default());
    let gate = Arc::new(Gate {
        open_at: t0 + Duration::from_millis(30),
        calls: AtomicUsize::new(0),
    });
    let policies: Vec<Arc<dyn RequestPolicy>> = vec![token.clone(), gate.clone()];
    let backend = upstream("app");
    let mut req = request("a.example", "/", false);
    req.headers = &TokenHeader;
    let mut st = ExchangeState::default();

    let d = decide(&req, &route(&backend, false), &policies, &mut st, t0);
    assert_eq!(d, Decision::WaitUntil(t0 + Duration::from_millis(30)));
    assert!(st.in_progress());
    // Too early (a spurious wake): still waiting, the token check is not repeated.
    let d = decide(
        &req,
        &route(&backend, false),
        &policies,
        &mut st,
        t0 + Duration::from_millis(10),
    );
    assert_eq!(d, Decision::WaitUntil(t0 + Duration::from_millis(30)));
    let d = decide(
        &req,
        &route(&backend, false),
        &policies,
        &mut st,
        t0 + Duration::from_millis(30),
    );
    assert_eq!(d, Decision::Forward { upstream: "app" });
    assert_eq!(token.calls.load(Ordering::Relaxed), 1);
    assert_eq!(gate.calls.load(Ordering::Relaxed), 3);
    assert!(!st.in_progress());
    // The step kept its scratch state across the wait (it started waiting at t0).
    assert_eq!(
        st.steps.get(2).copied(),
        Some(StepState {
            word: 1,
            since: Some(t0)
        })
    );
}

#[test]
fn a_refusing_step_answers_before_the_backend_and_later_steps_do_not_run() {
    let t0 = Instant::now();
    let token = Arc::new(NeedsToken::default());
    let gate = Arc::new(Gate {
        open_at: t0,
        calls: AtomicUsize::new(0),
    });
    let policies: Vec<Arc<dyn RequestPolicy>> = vec![token.clone(), gate.clone()];
    let backend = upstream("app");
    let req = request("a.example", "/", false);
    let mut st = ExchangeState::default();
    let d = decide(&req, &route(&backend, false), &policies, &mut st, t0);
    assert_eq!(
        d,
        Decision::Respond(LocalResponse::error(
            401,
            crate::metrics::ErrorReason::BadRequest
        ))
    );
    assert_eq!(gate.calls.load(Ordering::Relaxed), 0);
}

#[test]
fn ssl_redirect_runs_before_route_policies() {
    let t0 = Instant::now();
    let token = Arc::new(NeedsToken::default());
    let policies: Vec<Arc<dyn RequestPolicy>> = vec![token.clone()];
    let backend = upstream("app");
    let req = request("a.example", "/", false);
    let mut st = ExchangeState::default();
    let d = decide(&req, &route(&backend, true), &policies, &mut st, t0);
    assert!(matches!(
        d,
        Decision::Respond(LocalResponse { status: 308, .. })
    ));
    assert_eq!(token.calls.load(Ordering::Relaxed), 0);
}

#[test]
fn balancer_rotates_per_upstream_and_handles_no_endpoints() {
    let mut b = Balancer::default();
    let a: Arc<str> = Arc::from("a");
    let z: Arc<str> = Arc::from("z");
    let eps = [
        SocketAddr::from(([10, 0, 0, 1], 80)),
        SocketAddr::from(([10, 0, 0, 2], 80)),
    ];
    assert_eq!(b.pick(&a, &eps), eps.first().copied());
    assert_eq!(b.pick(&z, &eps), eps.first().copied());
    assert_eq!(b.pick(&a, &eps), eps.get(1).copied());
    assert_eq!(b.pick(&a, &eps), eps.first().copied());
    assert_eq!(b.pick(&a, &[]), None);
}

fn attempt(error: UpstreamError) -> Attempt {
    Attempt {
        error,
        reused: true,
        replayable: true,
        replays: 0,
        response_started: false,
    }
}

#[test]
fn a_stale_pooled_connection_is_replayed_a_bounded_number_of_times() {
    assert_eq!(
        after_failure(&attempt(UpstreamError::Io)),
        AfterFailure::Retry
    );
    let spent = Attempt {
        replays: MAX_REPLAYS,
        ..attempt(UpstreamError::Io)
    };
    assert_eq!(
        after_failure(&spent),
        AfterFailure::Respond {
            status: 502,
            reason: crate::metrics::ErrorReason::UpstreamReset
        }
    );
    let fresh = Attempt {
        reused: false,
        ..attempt(UpstreamError::Io)
    };
    assert!(matches!(
        after_failure(&fresh),
        AfterFailure::Respond { .. }
    ));
    let too_big = Attempt {
        replayable: false,
        ..attempt(UpstreamError::Io)
    };
    assert!(matches!(
        after_failure(&too_big),
        AfterFailure::Respond { .. }
    ));
}

#[test]
fn failures_map_to_statuses_and_a_started_response_aborts() {
    let cases = [
        (UpstreamError::Connect, 502),
        (UpstreamError::ConnectTimeout, 504),
        (UpstreamError::Tls, 502),
    ];
    for (err, status) in cases {
        match after_failure(&attempt(err)) {
            AfterFailure::Respond { status: s, .. } => assert_eq!(s, status, "{err:?}"),
            other => panic!("{err:?}: {other:?}"),
        }
    }
    let started = Attempt {
        response_started: true,
        ..attempt(UpstreamError::Io)
    };
    assert!(matches!(
        after_failure(&started),
        AfterFailure::Abort { .. }
    ));
}
