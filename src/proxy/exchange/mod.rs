//! The protocol-neutral exchange seam: what a request *goes through*, whatever session carries
//! it (an HTTP/1.1 connection today, an HTTP/2 stream next).
//!
//! A session owns the bytes, the framing, TLS and the connection's life; this room owns the
//! decisions about one request. The session builds a [`Request`] view of its protocol's head
//! (method, authority, path, a [`HeaderView`] of the headers, the [`Client`] it came from),
//! looks the route up, and asks [`decide`] what to do. [`decide`] runs the request policies in
//! a fixed order — Arc's built-in [`builtin::SslRedirect`] first, then the route's compiled
//! [`RequestPolicy`] list, then the route's backend ([`builtin::BackendAnswer`]) — each a pure
//! state machine stepped with `now` as an argument, answering one [`Verdict`]:
//! continue, answer locally, wait until an instant, or forward to an upstream. A session that
//! is told to wait keeps its request and calls [`decide`] again at (or after) that instant with
//! the same [`ExchangeState`]; the pipeline resumes at the step that asked to wait, so the
//! steps before it are not run twice. Once an upstream is named, [`Balancer`] picks the
//! endpoint, and after a failed attempt [`retry::after_failure`] says whether to try again
//! or which error to answer.
//!
//! Nothing here touches a socket, reads the clock or knows a wire format: the same calls serve
//! every protocol, and the tests drive them with plain values and virtual time. Policies are
//! compiled once per routing snapshot ([`RoutePolicies`]), never parsed per request.

#![forbid(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

pub mod builtin;
pub mod retry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::ErrorReason;
use crate::proxy::http1::{Headers, Method};
use crate::routing::{Backend, RouteMatch};

/// Read access to a request's header fields, whatever protocol carried them (HTTP/1.1 field
/// lines, HTTP/2 HPACK-decoded fields). Names are compared case-insensitively.
pub trait HeaderView {
    /// The first value of the field `name`.
    fn get(&self, name: &str) -> Option<&[u8]>;
    /// Calls `f` with every value of the field `name`, in order.
    fn for_each_value(&self, name: &str, f: &mut dyn FnMut(&[u8]));
}

impl HeaderView for Headers {
    fn get(&self, name: &str) -> Option<&[u8]> {
        Headers::get(self, name)
    }

    fn for_each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for v in self.get_all(name) {
            f(v);
        }
    }
}

/// Where a request came from, as its session knows it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The TCP peer (the real client address once proxy-protocol / trusted-header handling
    /// exists, the socket peer today).
    pub peer: SocketAddr,
    /// The local address the connection arrived on.
    pub local: SocketAddr,
    /// Index of the listener in the configuration's `listeners[]`.
    pub listener: usize,
    /// The request arrived over TLS.
    pub tls: bool,
    /// The SNI host name of the TLS session, if any.
    pub sni: Option<&'a str>,
}

/// The request as the pipeline sees it: protocol-neutral, borrowed from the session's head.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    /// The authority the client named (`Host`, the absolute-form authority or `:authority`),
    /// possibly with a port; empty when it named none.
    pub authority: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// Path and query as sent (what a redirect keeps).
    pub target: &'a str,
    pub headers: &'a dyn HeaderView,
    pub client: Client<'a>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("authority", &self.authority)
            .field("target", &self.target)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl<'a> Request<'a> {
    /// The authority without its port (`[v6]:port` keeps its brackets).
    pub fn host(&self) -> &'a str {
        strip_port(self.authority)
    }
}

/// `host:port` → `host`; bracketed IPv6 literals keep their brackets.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, _port)) => h,
        None => host,
    }
}

/// What routing decided for the request, as the policies see it.
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a> {
    /// The route's name (`default-backend` when a default answered).
    pub name: &'a str,
    /// The route (or the host's default) asks plain-HTTP requests for this path to move to
    /// HTTPS (already false for ACME HTTP-01 challenges).
    pub ssl_redirect: bool,
    /// What serves the request once every policy let it through.
    pub backend: &'a Backend,
}

impl<'a> RouteView<'a> {
    /// The view of a routing match for a request to `path`.
    pub fn of(found: &RouteMatch<'a>, path: &str) -> Self {
        RouteView {
            name: found.route.map_or("default-backend", |r| r.name()),
            ssl_redirect: found.ssl_redirect(path),
            backend: found.backend,
        }
    }
}

/// A `Location` header value of a local answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location<'a> {
    /// A fixed URL (a redirect backend).
    To(&'a str),
    /// `https://{host}{target}`: the same request over HTTPS. The session writes it, so no
    /// string is built here.
    Https { host: &'a str, target: &'a str },
}

/// An answer Arc gives itself instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalResponse<'a> {
    pub status: u16,
    /// Empty: no `Content-Type`.
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub location: Option<Location<'a>>,
    /// Set when the answer reports an error (counted and logged with this reason); the body
    /// is then the session's standard error body for `status`.
    pub error: Option<ErrorReason>,
}

impl LocalResponse<'_> {
    /// An error answer: `status` with Arc's standard body, counted under `reason`.
    pub fn error(status: u16, reason: ErrorReason) -> LocalResponse<'static> {
        LocalResponse {
            status,
            content_type: "",
            body: b"",
            location: None,
            error: Some(reason),
        }
    }
}

/// What one policy step answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Go on with the next step.
    Continue,
    /// Answer locally; no later step runs.
    Respond(LocalResponse<'a>),
    /// Ask again at (or after) this instant; the step is called again then, with the state it
    /// left in its [`StepState`].
    WaitUntil(Instant),
    /// Forward to the named upstream (only the backend step answers this today; a canary or
    /// affinity step will).
    Forward { upstream: &'a str },
}

/// The per-exchange scratch state of one policy step (a wait ticket, the instant it started
/// waiting). Policies are shared, immutable objects; what one request needs to remember
/// between two steps of the same policy lives here, in the exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepState {
    pub word: u64,
    pub since: Option<Instant>,
}

/// Most route policies one route runs (the fixed order has fewer kinds than this).
pub const MAX_ROUTE_POLICIES: usize = 8;
/// Steps of a pipeline: the built-in ssl redirect, the route's policies, the backend.
const MAX_STEPS: usize = MAX_ROUTE_POLICIES + 2;

/// Where one request stands in its pipeline. A session keeps one per exchange in flight (an
/// HTTP/1 connection one, an HTTP/2 connection one per stream) and [`ExchangeState::reset`]s
/// it for the next request; it holds no heap memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeState {
    /// The step to run next.
    next: u8,
    steps: [StepState; MAX_STEPS],
}

impl ExchangeState {
    /// Ready for a new request (the step slots are cleared when its pipeline starts).
    pub fn reset(&mut self) {
        self.next = 0;
    }

    /// Whether a pipeline is under way (a step asked to wait).
    pub fn in_progress(&self) -> bool {
        self.next != 0
    }
}

/// One request policy: a pure state machine over a [`Request`], stepped with `now`.
///
/// Implementations are compiled once per routing snapshot from what the user wrote and shared
/// by every worker (`Send + Sync`, immutable); per-request memory goes in the [`StepState`].
/// Worker-wide shared state (cluster rate limits, outlier ejections) reaches a policy as a
/// snapshot the control plane publishes, never through a lock on the request path.
pub trait RequestPolicy: Send + Sync + std::fmt::Debug {
    /// The policy's name, for logs and metrics (`ssl-redirect`, `rate-limit`, ...).
    fn name(&self) -> &'static str;

    /// One step of the request through this policy.
    fn on_request<'a>(
        &'a self,
        req: &Request<'a>,
        route: &RouteView<'a>,
        state: &mut StepState,
        now: Instant,
    ) -> Verdict<'a>;
}

/// The compiled policies of one route, in pipeline order.
pub type RoutePolicies = Arc<[Arc<dyn RequestPolicy>]>;

/// The pipeline's answer for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Answer locally.
    Respond(LocalResponse<'a>),
    /// Call [`decide`] again at (or after) this instant with the same state.
    WaitUntil(Instant),
    /// Forward to this upstream; pick the endpoint with [`Balancer::pick`].
    Forward { upstream: &'a str },
}

/// Runs the request through Arc's built-in steps and `policies` (at most
/// [`MAX_ROUTE_POLICIES`]; later ones are not run — the snapshot builder refuses more), from
/// where `state` stands. See the module doc for the order.
pub fn decide<'a>(
    req: &Request<'a>,
    route: &RouteView<'a>,
    policies: &'a [Arc<dyn RequestPolicy>],
    state: &mut ExchangeState,
    now: Instant,
) -> Decision<'a> {
    let policies = policies.get(..MAX_ROUTE_POLICIES).unwrap_or(policies);
    let last = policies.len() + 1;
    let mut i = usize::from(state.next);
    if i == 0 {
        // A fresh request: only the slots of this pipeline are cleared (the built-in steps are
        // called directly, so a route without policies costs two inlined calls).
        for slot in state.steps.iter_mut().take(last + 1) {
            *slot = StepState::default();
        }
    }
    while i <= last {
        let Some(slot) = state.steps.get_mut(i) else {
            break;
        };
        let verdict = if i == 0 {
            builtin::SslRedirect.on_request(req, route, slot, now)
        } else if i == last {
            builtin::BackendAnswer.on_request(req, route, slot, now)
        } else {
            match policies.get(i - 1) {
                Some(p) => p.on_request(req, route, slot, now),
                None => Verdict::Continue,
            }
        };
        match verdict {
            Verdict::Continue => i += 1,
            Verdict::Respond(r) => {
                state.next = 0;
                return Decision::Respond(r);
            }
            Verdict::WaitUntil(t) => {
                state.next = u8::try_from(i).unwrap_or(u8::MAX);
                // A step that asks to wait for an instant already passed runs again at once
                // from the session's timer; never a busy loop inside this call.
                return Decision::WaitUntil(t);
            }
            Verdict::Forward { upstream } => {
                state.next = 0;
                return Decision::Forward { upstream };
            }
        }
    }
    // The backend step always answers; only a state left at an impossible step ends here.
    state.next = 0;
    Decision::Respond(LocalResponse::error(503, ErrorReason::NoEndpoints))
}

/// Per-worker endpoint choice: round robin over an upstream's endpoints, one cursor per
/// upstream name. Owned by one worker; nothing is shared.
#[derive(Debug, Default)]
pub struct Balancer {
    /// Cursors by upstream name (configuration data: a fast hasher serves).
    rr: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
}

impl Balancer {
    /// The next endpoint of upstream `name`, or `None` when it has none.
    pub fn pick(&mut self, name: &Arc<str>, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let cursor = match self.rr.get_mut(&**name) {
            Some(c) => c,
            None => self.rr.entry(Arc::clone(name)).or_insert(0),
        };
        let i = *cursor % n;
        *cursor = cursor.wrapping_add(1);
        endpoints.get(i).copied()
    }
}

#[cfg(test)]
mod tests;
