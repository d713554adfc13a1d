//! Arc's built-in request steps, expressed through the same [`RequestPolicy`] interface the
//! route policies use: the HTTP→HTTPS redirect that runs first, and the backend answer that
//! runs last (a direct response, a redirect backend, or the upstream to forward to).

use std::time::Instant;

use super::{LocalResponse, Location, Request, RequestPolicy, RouteView, StepState, Verdict};
use crate::routing::Backend;

/// `ssl-redirect`: a plain-HTTP request to a route that asks for it is answered with
/// `308 Permanent Redirect` to the same host and target over HTTPS (308 keeps the method and
/// body, as ingress-nginx's default `ssl-redirect` does). Runs before every other policy, as
/// the rewrite phase runs before access checks in nginx.
#[derive(Debug, Clone, Copy, Default)]
pub struct SslRedirect;

impl RequestPolicy for SslRedirect {
    fn name(&self) -> &'static str {
        "ssl-redirect"
    }

    fn on_request<'a>(
        &'a self,
        req: &Request<'a>,
        route: &RouteView<'a>,
        _state: &mut StepState,
        _now: Instant,
    ) -> Verdict<'a> {
        if req.client.tls || !route.ssl_redirect {
            return Verdict::Continue;
        }
        Verdict::Respond(LocalResponse {
            status: 308,
            content_type: "",
            body: b"",
            location: Some(Location::Https {
                host: req.host(),
                target: req.target,
            }),
            error: None,
        })
    }
}

/// The route's backend, the last step: Arc's direct responses and redirect backends answer
/// locally; an upstream backend forwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendAnswer;

impl RequestPolicy for BackendAnswer {
    fn name(&self) -> &'static str {
        "backend"
    }

    fn on_request<'a>(
        &'a self,
        _req: &Request<'a>,
        route: &RouteView<'a>,
        _state: &mut StepState,
        _now: Instant,
    ) -> Verdict<'a> {
        match route.backend {
            Backend::DirectResponse {
                status,
                body,
                content_type,
            } => Verdict::Respond(LocalResponse {
                status: *status,
                content_type,
                body: body.as_bytes(),
                location: None,
                error: None,
            }),
            Backend::Redirect { location, code } => Verdict::Respond(LocalResponse {
                status: *code,
                content_type: "",
                body: b"",
                location: Some(Location::To(location)),
                error: None,
            }),
            Backend::Upstream { name } => Verdict::Forward { upstream: name },
        }
    }
}
