//! The control API (`/api/v1/...`) and the dashboard assets (`/ui`) of the admin port.
//!
//! Every API path needs `Authorization: Bearer <control_plane.auth_token>`: without a
//! configured token the API answers 404 as if it did not exist; a missing or wrong token gets
//! 401 with no detail. The dashboard's static files need no token (they hold no data); the page
//! asks for the token and sends it with each API call. Write actions are logged with the
//! caller's address and go to the process loop as [`ControlCommand`]s.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::control::{ControlCommand, ControlView};
use super::token::TokenCheck;
use crate::logging::access::push_rfc3339;
use crate::metrics::Metrics;

/// The OpenAPI 3 description served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

const UI_HTML: &str = include_str!("ui/index.html");
const UI_JS: &str = include_str!("ui/app.js");
const UI_CSS: &str = include_str!("ui/style.css");

/// Longest wait for the process loop to answer a write.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

const JSON: &str = "application/json";

/// Whether the admin server routes `path` here.
pub fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/") || path == "/api" || path.starts_with("/api/")
}

fn body(
    status: StatusCode,
    content_type: &'static str,
    b: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(b.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    body(status, JSON, v.to_string())
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

fn not_found() -> Response<Full<Bytes>> {
    body(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "not found\n",
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The dashboard's static files.
fn ui(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (content_type, text) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", UI_HTML),
        "/ui/app.js" => ("text/javascript; charset=utf-8", UI_JS),
        "/ui/style.css" => ("text/css; charset=utf-8", UI_CSS),
        _ => return not_found(),
    };
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let mut r = body(StatusCode::OK, content_type, text);
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    r
}

/// Answers one request under `/api` or `/ui`.
pub async fn respond(
    control: Option<&ControlView>,
    metrics: &Metrics,
    method: &Method,
    path: &str,
    authorization: Option<&[u8]>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if path == "/ui" || path.starts_with("/ui/") {
        return ui(method, path);
    }
    let Some(control) = control else {
        return not_found();
    };
    match control.token().check(authorization) {
        TokenCheck::Disabled => return not_found(),
        TokenCheck::Denied => {
            let mut r = body(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", "");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        TokenCheck::Allowed => {}
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return error(StatusCode::NOT_FOUND, "unknown API path");
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        ["reload"] | ["drain"] | ["upstreams", _, "endpoints", _, "disable" | "enable"] => {
            if method != Method::POST {
                return method_not_allowed("POST");
            }
            write(control, &segments, peer).await
        }
        _ if !read => method_not_allowed("GET, HEAD"),
        ["openapi.json"] => body(StatusCode::OK, JSON, OPENAPI),
        ["config"] => {
            let p = control.published();
            json_response(
                StatusCode::OK,
                &json!({"version": p.version, "config": p.config}),
            )
        }
        ["routes"] => {
            let p = control.published();
            let compiled_at = p.compiled_at.map(|t| {
                let mut s = String::new();
                push_rfc3339(&mut s, t);
                s
            });
            json_response(
                StatusCode::OK,
                &json!({"version": p.version, "compiled_at": compiled_at, "routes": p.routes}),
            )
        }
        ["upstreams"] => upstreams(control, metrics),
        ["certificates"] => json_response(
            StatusCode::OK,
            &json!({"certificates": control.published().certificates}),
        ),
        ["xdp"] => xdp(control, metrics),
        ["build"] => json_response(
            StatusCode::OK,
            &json!({
                "name": env!("CARGO_PKG_NAME"),
                "version": env!("CARGO_PKG_VERSION"),
                "commit": option_env!("ARC_GIT_COMMIT").unwrap_or("unknown"),
                "io_driver": control.published().io_driver,
                "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            }),
        ),
        ["stats"] => json_response(StatusCode::OK, &control.stats(metrics)),
        ["reloads"] => json_response(StatusCode::OK, &json!({"reloads": control.reloads()})),
        _ => error(StatusCode::NOT_FOUND, "unknown API path"),
    }
}

/// The XDP state the server published, with the packet counters as they are now.
fn xdp(control: &ControlView, metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut state = (*control.xdp_state()).clone();
    if let Some(obj) = state.as_object_mut() {
        let packets: serde_json::Map<String, Value> = crate::metrics::XdpAction::ALL
            .iter()
            .map(|a| (a.as_str().to_owned(), json!(metrics.xdp().packets(*a))))
            .collect();
        obj.insert("packets".to_owned(), Value::Object(packets));
    }
    json_response(StatusCode::OK, &state)
}

fn upstreams(control: &ControlView, metrics: &Metrics) -> Response<Full<Bytes>> {
    let p = control.published();
    let stats = control.endpoint_stats();
    let snap = metrics.data_plane_snapshot();
    let pools = metrics.pool_snapshot();
    let list: Vec<Value> = p
        .upstreams
        .iter()
        .map(|u| {
            let endpoints: Vec<Value> = u
                .endpoints
                .iter()
                .map(|e| {
                    let s = stats.get(&e.address).cloned().unwrap_or_default();
                    let (idle, active) = pools
                        .iter()
                        .find(|ps| ps.endpoint == e.address && *ps.upstream == *u.name)
                        .map_or((0, 0), |ps| (ps.idle, ps.active));
                    let health = if e.disabled {
                        "disabled"
                    } else if s.requests == 0 {
                        "unknown"
                    } else if s.consecutive_failures >= 3 {
                        "failing"
                    } else {
                        "healthy"
                    };
                    json!({
                        "address": e.address,
                        "disabled": e.disabled,
                        "health": health,
                        "requests": s.requests,
                        "failures": s.failures,
                        "consecutive_failures": s.consecutive_failures,
                        "last_error": s.last_error,
                        "pool": {"idle": idle, "active": active},
                    })
                })
                .collect();
            json!({"name": u.name, "max_idle": u.max_idle, "endpoints": endpoints})
        })
        .collect();
    let pool =
        |r: crate::metrics::PoolResult| snap.upstream_pool.get(r.index()).copied().unwrap_or(0);
    json_response(
        StatusCode::OK,
        &json!({
            "version": p.version,
            "upstreams": list,
            "pool": {
                "hits": pool(crate::metrics::PoolResult::Hit),
                "misses": pool(crate::metrics::PoolResult::Miss),
            },
        }),
    )
}

/// Percent-decodes a path segment (`%5B%3A%3A1%5D%3A80` → `[::1]:80`).
fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn ask(
    control: &ControlView,
    make: impl FnOnce(oneshot::Sender<Result<u64, String>>) -> ControlCommand,
) -> Result<u64, (StatusCode, String)> {
    let Some(tx) = control.commands() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "no process loop accepts commands".into(),
        ));
    };
    let (reply, answer) = oneshot::channel();
    if tx.send(make(reply)).await.is_err() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()));
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
        Ok(Ok(Ok(version))) => Ok(version),
        Ok(Ok(Err(message))) => Err((StatusCode::UNPROCESSABLE_ENTITY, message)),
        Ok(Err(_)) => Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down".into())),
        Err(_) => Err((StatusCode::GATEWAY_TIMEOUT, "no answer in time".into())),
    }
}

async fn write(
    control: &ControlView,
    segments: &[&str],
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    match segments {
        ["reload"] => {
            tracing::info!(caller = %peer, action = "reload", "control API write");
            match ask(control, |reply| ControlCommand::Reload { reply }).await {
                Ok(version) => json_response(StatusCode::OK, &json!({"version": version})),
                Err((status, message)) => error(status, &message),
            }
        }
        ["drain"] => {
            tracing::info!(caller = %peer, action = "drain", "control API write");
            let Some(tx) = control.commands() else {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no process loop accepts commands",
                );
            };
            match tx.send(ControlCommand::Drain).await {
                Ok(()) => json_response(StatusCode::ACCEPTED, &json!({"draining": true})),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            }
        }
        ["upstreams", upstream, "endpoints", endpoint, action] => {
            let enabled = *action == "enable";
            let (Some(upstream), Some(endpoint)) =
                (decode_segment(upstream), decode_segment(endpoint))
            else {
                return error(StatusCode::BAD_REQUEST, "malformed path segment");
            };
            let Ok(addr) = endpoint.parse::<SocketAddr>() else {
                return error(StatusCode::BAD_REQUEST, "endpoint must be an address:port");
            };
            let known = control
                .published()
                .upstreams
                .iter()
                .any(|u| u.name == upstream && u.endpoints.iter().any(|e| e.address == addr));
            if !known {
                return error(StatusCode::NOT_FOUND, "no such upstream endpoint");
            }
            tracing::info!(
                caller = %peer,
                action = if enabled { "enable_endpoint" } else { "disable_endpoint" },
                upstream = %upstream,
                endpoint = %addr,
                "control API write"
            );
            let result = ask(control, |reply| ControlCommand::SetEndpoint {
                upstream: upstream.clone(),
                endpoint: addr,
                enabled,
                reply,
            })
            .await;
            match result {
                Ok(version) => json_response(
                    StatusCode::OK,
                    &json!({"version": version, "upstream": upstream, "endpoint": addr, "disabled": !enabled}),
                ),
                Err((status, message)) => error(status, &message),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "unknown API path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    async fn status(
        control: Option<&ControlView>,
        method: Method,
        path: &str,
        auth: Option<&[u8]>,
    ) -> StatusCode {
        respond(control, &Metrics::new(), &method, path, auth, peer())
            .await
            .status()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn api_routing_table() {
        use super::super::token::ControlToken;
        let view = ControlView::new(ControlToken::new(Some("t".into())), None);
        let ok = Some(&b"Bearer t"[..]);
        let cases = [
            (Method::GET, "/api/v1/routes", ok, StatusCode::OK),
            (Method::HEAD, "/api/v1/build", ok, StatusCode::OK),
            (Method::GET, "/api/v1/nope", ok, StatusCode::NOT_FOUND),
            (Method::GET, "/api/v2/routes", ok, StatusCode::NOT_FOUND),
            (Method::GET, "/api", ok, StatusCode::NOT_FOUND),
            (
                Method::PUT,
                "/api/v1/routes",
                ok,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                Method::GET,
                "/api/v1/reload",
                ok,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            // Writes without a process loop to take them.
            (
                Method::POST,
                "/api/v1/reload",
                ok,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Method::POST,
                "/api/v1/drain",
                ok,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            // Authentication comes before everything else, even unknown paths.
            (Method::GET, "/api/v1/nope", None, StatusCode::UNAUTHORIZED),
            (
                Method::POST,
                "/api/v1/drain",
                Some(&b"Bearer x"[..]),
                StatusCode::UNAUTHORIZED,
            ),
            // The dashboard needs no token.
            (Method::GET, "/ui", None, StatusCode::OK),
            (Method::HEAD, "/ui/app.js", None, StatusCode::OK),
            (Method::POST, "/ui", None, StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, path, auth, want) in cases {
            assert_eq!(
                status(Some(&view), method.clone(), path, auth).await,
                want,
                "{method} {path}"
            );
        }
        // No control view at all: the API does not exist.
        assert_eq!(
            status(None, Method::GET, "/api/v1/routes", ok).await,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn segments_decode() {
        assert_eq!(
            decode_segment("%5B%3A%3A1%5D%3A80").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(
            decode_segment("10.0.0.1:80").as_deref(),
            Some("10.0.0.1:80")
        );
        assert_eq!(decode_segment("%zz"), None);
        assert_eq!(decode_segment("%4"), None);
    }

    #[test]
    fn openapi_is_json_with_every_path() {
        let v: Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        for p in [
            "/config",
            "/routes",
            "/upstreams",
            "/certificates",
            "/xdp",
            "/build",
            "/stats",
            "/reloads",
            "/reload",
            "/drain",
            "/upstreams/{upstream}/endpoints/{endpoint}/disable",
            "/upstreams/{upstream}/endpoints/{endpoint}/enable",
        ] {
            assert!(v["paths"][p].is_object(), "{p} missing from openapi.json");
        }
    }
}
