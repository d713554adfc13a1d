//! The HTTPS front of the emulator: TLS accept loop, bearer-token check, fault injection,
//! request recording, URL routing, and the list/watch/get/write handlers over the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::events;
use super::ops::{self, PatchKind, WriteCtx};
use super::resources::{self, ResourceKind};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{EventType, ObjKey};
use super::{RecordedRequest, Shared};

type Body = UnsyncBoxBody<Bytes, Infallible>;

const MAX_BODY: usize = 8 << 20;
const MAX_WATCH: Duration = Duration::from_secs(1800);

/// Accepts TLS connections until the task is aborted; aborting drops every connection.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let acceptor = TlsAcceptor::from(shared.identity.server_config.clone());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            res = listener.accept() => {
                let Ok((tcp, _)) = res else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                conns.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Vec::new())))
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.to_status());
    if e.code == 429 || e.code == 504 {
        resp.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    }
    resp
}

/// Decoded query parameters.
#[derive(Debug, Default)]
struct Query(HashMap<String, String>);

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i) {
            Some(b'+') => out.push(b' '),
            Some(b'%') => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            Some(c) => out.push(*c),
            None => break,
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    fn parse(q: &str) -> Self {
        let mut m = HashMap::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(percent_decode(k), percent_decode(v));
        }
        Query(m)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn str(&self, k: &str) -> &str {
        self.get(k).unwrap_or("")
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// A request addressed to a resource.
#[derive(Debug, Clone)]
struct ResReq {
    r: &'static ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: String,
    watch_path: bool,
}

enum Target {
    Discovery(Value),
    Resource(ResReq),
    NotFound,
}

fn route(path: &str) -> Target {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Target::Discovery(resources::version_doc()),
        ["healthz"] | ["livez"] | ["readyz"] => Target::Discovery(Value::String("ok".into())),
        ["api"] => Target::Discovery(Value::Null),
        ["apis"] => Target::Discovery(resources::api_group_list()),
        ["api", v] => resources::api_resource_list("", v)
            .map(Target::Discovery)
            .unwrap_or(Target::NotFound),
        ["apis", g] => resources::api_group_doc(g)
            .map(Target::Discovery)
            .unwrap_or(Target::NotFound),
        ["apis", g, v] => resources::api_resource_list(g, v)
            .map(Target::Discovery)
            .unwrap_or(Target::NotFound),
        ["openapi", "v3"] => Target::Discovery(resources::openapi_v3_index()),
        ["openapi", "v3", rest @ ..] => resources::openapi_v3_doc(&rest.join("/"))
            .map(Target::Discovery)
            .unwrap_or(Target::NotFound),
        ["api", v, rest @ ..] => route_resource("", v, rest),
        ["apis", g, v, rest @ ..] => route_resource(g, v, rest),
        _ => Target::NotFound,
    }
}

fn route_resource(group: &str, version: &str, rest: &[&str]) -> Target {
    let (watch_path, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::lookup(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            (Some((*ns).to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, ""),
        [p, n] => (*p, Some((*n).to_string()), ""),
        [p, n, s] => (*p, Some((*n).to_string()), *s),
        _ => return Target::NotFound,
    };
    let Some(r) = resources::lookup(group, version, plural) else {
        return Target::NotFound;
    };
    if !r.namespaced && namespace.is_some() {
        return Target::NotFound;
    }
    if r.namespaced && namespace.is_none() && name.is_some() {
        return Target::NotFound;
    }
    if !(sub.is_empty() || (sub == "status" && r.has_status)) {
        return Target::NotFound;
    }
    Target::Resource(ResReq {
        r,
        namespace,
        name,
        subresource: sub.to_string(),
        watch_path,
    })
}

fn verb_of(method: &Method, rr: &ResReq, q: &Query) -> &'static str {
    let watching = rr.watch_path || q.flag("watch");
    match (method, rr.name.is_some()) {
        (&Method::GET, _) if watching => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(cmd) = path.strip_prefix("/_emulator/") {
        if !authorized(&req, &shared.token) {
            return error_response(&ApiError::unauthorized());
        }
        return control(&shared, &method, cmd, &query);
    }
    let target = route(&path);
    let mut rec = RecordedRequest {
        verb: method.as_str().to_ascii_lowercase(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        path: path.clone(),
        code: 0,
        user_agent,
    };
    if let Target::Resource(rr) = &target {
        rec.verb = verb_of(&method, rr, &query).to_string();
        rec.group = rr.r.group.to_string();
        rec.version = rr.r.version.to_string();
        rec.resource = rr.r.plural.to_string();
        rec.subresource = rr.subresource.clone();
        rec.namespace = rr.namespace.clone().unwrap_or_default();
        rec.name = rr.name.clone().unwrap_or_default();
    }
    let public = matches!(
        path.as_str(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let resp = if !public && !authorized(&req, &shared.token) {
        error_response(&ApiError::unauthorized())
    } else {
        let (delay, fail) = shared.take_fault();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fail {
            Some(429) => error_response(&ApiError::too_many_requests()),
            Some(code) => {
                let mut e = ApiError::internal("injected failure");
                e.code = code;
                error_response(&e)
            }
            None => dispatch(&shared, req, target, &query, &rec.verb, &rec.user_agent).await,
        }
    };
    rec.code = resp.status().as_u16();
    shared.record(rec);
    resp
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    target: Target,
    q: &Query,
    verb: &str,
    user_agent: &str,
) -> Response<Body> {
    match target {
        Target::NotFound => error_response(&ApiError::path_not_found()),
        Target::Discovery(Value::Null) => {
            json_response(200, &resources::api_versions(&shared.addr.to_string()))
        }
        Target::Discovery(Value::String(s)) => Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(full(s.into_bytes()))
            .unwrap_or_else(|_| Response::new(full(Vec::new()))),
        Target::Discovery(doc) => {
            if req.method() == Method::GET {
                json_response(200, &doc)
            } else {
                error_response(&ApiError::method_not_allowed(req.method().as_str()))
            }
        }
        Target::Resource(rr) => {
            let wants_table = req
                .headers()
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("as=Table"));
            let content_type = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let mut err = ApiError::bad_request(format!("reading the request body: {e}"));
                    err.code = 413;
                    err.reason = "RequestEntityTooLarge";
                    return error_response(&err);
                }
            };
            let manager = q
                .get("fieldManager")
                .map(str::to_string)
                .unwrap_or_else(|| {
                    user_agent
                        .split('/')
                        .next()
                        .unwrap_or("unknown")
                        .to_string()
                });
            let res = match verb {
                "watch" => watch(shared, &rr, q),
                "list" => list(shared, &rr, q).map(|v| {
                    if wants_table {
                        let items = v["items"].as_array().cloned().unwrap_or_default();
                        json_response(200, &to_table(&items, &v["metadata"]["resourceVersion"]))
                    } else {
                        json_response(200, &v)
                    }
                }),
                "get" => get(shared, &rr).map(|v| {
                    if wants_table {
                        let rv = v["metadata"]["resourceVersion"].clone();
                        json_response(200, &to_table(std::slice::from_ref(&v), &rv))
                    } else {
                        json_response(200, &v)
                    }
                }),
                "create" | "update" | "patch" | "delete" | "deletecollection" => {
                    write(shared, &rr, q, verb, &content_type, &body, &manager)
                }
                _ => Err(ApiError::method_not_allowed(verb)),
            };
            match res {
                Ok(resp) => resp,
                Err(e) => error_response(&e),
            }
        }
    }
}

/// The storage kind behind a served kind (events.k8s.io Events live as core Events).
fn storage_kind(r: &'static ResourceKind) -> &'static ResourceKind {
    if r.events_v1_view {
        resources::lookup("", "v1", "events").unwrap_or(r)
    } else {
        r
    }
}

/// The object as the served kind presents it.
fn present(r: &ResourceKind, obj: &Value) -> Value {
    if r.events_v1_view {
        events::to_events_v1(obj)
    } else {
        obj.clone()
    }
}

fn key_of(rr: &ResReq, name: &str) -> ObjKey {
    (rr.namespace.clone().unwrap_or_default(), name.to_string())
}

fn get(shared: &Shared, rr: &ResReq) -> Result<Value, ApiError> {
    let name = rr.name.as_deref().unwrap_or("");
    let obj = shared
        .store()
        .get(rr.r.storage, &key_of(rr, name))
        .ok_or_else(|| ApiError::not_found(rr.r, name))?;
    Ok(present(rr.r, &obj))
}

/// Human age like kubectl prints it.
fn age(created: &str, now: SystemTime) -> String {
    let Some(t) = parse_rfc3339(created) else {
        return "<unknown>".into();
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = now.saturating_sub(t);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok());
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// A `meta.k8s.io/v1` Table with Name and Age columns, as kubectl asks for when printing.
fn to_table(items: &[Value], rv: &Value) -> Value {
    let now = SystemTime::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            let created = o
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("");
            json!({"cells": [name, age(created, now)], "object": o})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}
        ],
        "rows": rows
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, key: &ObjKey) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: format!("{}/{}\u{0}", key.0, key.1),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<(u64, ObjKey), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(s)
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = t.start.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((t.rv, (ns.to_string(), name.to_string())))
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn selectors(rr: &ResReq, q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let label = LabelSelector::parse(q.str("labelSelector"))?;
    let mut field_text = q.str("fieldSelector").to_string();
    if let Some(name) = &rr.name {
        if !field_text.is_empty() {
            field_text.push(',');
        }
        field_text.push_str(&format!("metadata.name={name}"));
    }
    let field = FieldSelector::parse_for(&field_text, rr.r.plural)?;
    Ok((label, field))
}

fn list(shared: &Shared, rr: &ResReq, q: &Query) -> Result<Value, ApiError> {
    let (label, field) = selectors(rr, q)?;
    let ns = rr.namespace.as_deref();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (list_rv, items, after) = {
        let store = shared.store();
        let current = store.current_rv();
        if let Some(token) = q.get("continue").filter(|c| !c.is_empty()) {
            let (rv, start) = decode_continue(token)?;
            let snap = store.snapshot(rr.r.storage, ns, rv).map_err(|_| {
                ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
            })?;
            (rv, snap, Some(start))
        } else {
            match (q.str("resourceVersion"), q.str("resourceVersionMatch")) {
                ("" | "0", _) => (current, store.list_current(rr.r.storage, ns), None),
                (rv, "Exact") => {
                    let rv = parse_rv(rv)?;
                    if rv > current {
                        return Err(ApiError::too_large_resource_version(rv, current));
                    }
                    let snap = store.snapshot(rr.r.storage, ns, rv).map_err(|t| {
                        ApiError::expired(format!(
                            "The resourceVersion for the provided list is too old. (requested {rv}, oldest {})",
                            t.oldest
                        ))
                    })?;
                    (rv, snap, None)
                }
                (rv, "" | "NotOlderThan") => {
                    let rv = parse_rv(rv)?;
                    if rv > current {
                        return Err(ApiError::too_large_resource_version(rv, current));
                    }
                    (current, store.list_current(rr.r.storage, ns), None)
                }
                (_, other) => {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: {other:?}"
                    )));
                }
            }
        }
    };
    let filtered: Vec<(ObjKey, Arc<Value>)> = items
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .filter(|(_, o)| label.matches(o) && field.matches(o))
        .collect();
    let total = filtered.len();
    let take = limit.unwrap_or(total).min(total);
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if take < total
        && let Some((last_key, _)) = filtered.get(take.saturating_sub(1))
    {
        meta["continue"] = json!(encode_continue(list_rv, last_key));
        if label.is_empty() && q.str("fieldSelector").is_empty() {
            meta["remainingItemCount"] = json!(total - take);
        }
    }
    let items: Vec<Value> = filtered
        .iter()
        .take(take)
        .map(|(_, o)| present(rr.r, o))
        .collect();
    Ok(json!({
        "kind": format!("{}List", rr.r.kind),
        "apiVersion": rr.r.api_version(),
        "metadata": meta,
        "items": items,
    }))
}

fn watch_line(etype: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(r: &ResourceKind, rv: u64, initial_end: bool) -> Bytes {
    let mut obj = json!({
        "kind": r.kind,
        "apiVersion": r.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}
    });
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line("BOOKMARK", &obj)
}

fn expired_line(asked: u64, oldest: u64) -> Bytes {
    let e = ApiError::expired(format!("too old resource version: {asked} ({oldest})"));
    watch_line("ERROR", &e.to_status())
}

struct WatchSpec {
    r: &'static ResourceKind,
    namespace: Option<String>,
    label: LabelSelector,
    field: FieldSelector,
    initial: bool,
    initial_end_bookmark: bool,
    start_rv: u64,
    bookmarks: bool,
    timeout: Duration,
}

impl WatchSpec {
    fn matches(&self, key: &ObjKey, obj: &Value) -> bool {
        self.namespace.as_ref().is_none_or(|n| &key.0 == n)
            && self.label.matches(obj)
            && self.field.matches(obj)
    }

    fn line_for(&self, ev: &super::store::HistoryEvent) -> Option<Bytes> {
        let now = self.matches(&ev.key, &ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.matches(&ev.key, p));
        let (etype, obj) = match ev.etype {
            EventType::Added if now => ("ADDED", present(self.r, &ev.object)),
            EventType::Deleted if now => ("DELETED", present(self.r, &ev.object)),
            EventType::Modified if now && before => ("MODIFIED", present(self.r, &ev.object)),
            EventType::Modified if now => ("ADDED", present(self.r, &ev.object)),
            EventType::Modified if before => {
                // Left the selection: a delete carrying the old state at the new version.
                let mut old = ev.prev.as_deref().cloned().unwrap_or(Value::Null);
                old["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                ("DELETED", present(self.r, &old))
            }
            _ => return None,
        };
        Some(watch_line(etype, &obj))
    }
}

fn watch(shared: &Arc<Shared>, rr: &ResReq, q: &Query) -> Result<Response<Body>, ApiError> {
    let (label, field) = selectors(rr, q)?;
    let bookmarks = q.flag("allowWatchBookmarks");
    let rv_text = q.str("resourceVersion");
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true");
    if send_initial == Some(true) && (!bookmarks || q.str("resourceVersionMatch") != "NotOlderThan")
    {
        return Err(ApiError::bad_request(
            "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
        ));
    }
    let start_rv = if rv_text.is_empty() || rv_text == "0" {
        0
    } else {
        parse_rv(rv_text)?
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_WATCH)
        .min(MAX_WATCH);
    let spec = WatchSpec {
        r: rr.r,
        namespace: rr.namespace.clone(),
        label,
        field,
        initial: send_initial.unwrap_or(start_rv == 0),
        initial_end_bookmark: send_initial == Some(true),
        start_rv,
        bookmarks,
        timeout,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(watch_task(shared.clone(), spec, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(StreamBody::new(stream).boxed_unsync())
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn send_all(tx: &mpsc::Sender<Bytes>, lines: Vec<Bytes>) -> bool {
    for l in lines {
        if tx.send(l).await.is_err() {
            return false;
        }
    }
    true
}

async fn watch_task(shared: Arc<Shared>, spec: WatchSpec, tx: mpsc::Sender<Bytes>) {
    let storage = spec.r.storage;
    let mut end_rx = shared.end_watches.subscribe();
    end_rx.borrow_and_update();
    let deadline = Instant::now() + spec.timeout;
    let interval = shared.bookmark_interval();
    let mut next_bookmark = Instant::now() + interval;
    let (mut rv_rx, mut cursor, first) = {
        let store = shared.store();
        let mut rv_rx = store.subscribe();
        rv_rx.borrow_and_update();
        if spec.initial {
            let cursor = store.current_rv();
            let mut lines: Vec<Bytes> = store
                .list_current(storage, spec.namespace.as_deref())
                .iter()
                .filter(|(k, o)| spec.matches(k, o))
                .map(|(_, o)| watch_line("ADDED", &present(spec.r, o)))
                .collect();
            if spec.initial_end_bookmark {
                lines.push(bookmark(spec.r, cursor, true));
            }
            (rv_rx, cursor, Ok(lines))
        } else {
            match store.check_start(spec.start_rv) {
                Ok(()) => (rv_rx, spec.start_rv, Ok(Vec::new())),
                Err(t) => (rv_rx, 0, Err(expired_line(spec.start_rv, t.oldest))),
            }
        }
    };
    match first {
        Ok(lines) => {
            if !send_all(&tx, lines).await {
                return;
            }
        }
        Err(line) => {
            let _ = tx.send(line).await;
            return;
        }
    }
    loop {
        let batch = {
            let store = shared.store();
            rv_rx.borrow_and_update();
            match store.events_after(storage, cursor) {
                Ok(evs) => {
                    let lines: Vec<Bytes> = evs.iter().filter_map(|e| spec.line_for(e)).collect();
                    cursor = cursor.max(store.current_rv());
                    Ok(lines)
                }
                Err(t) => Err(expired_line(cursor, t.oldest)),
            }
        };
        match batch {
            Ok(lines) => {
                if !send_all(&tx, lines).await {
                    return;
                }
            }
            Err(line) => {
                let _ = tx.send(line).await;
                return;
            }
        }
        tokio::select! {
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_bookmark), if spec.bookmarks => {
                next_bookmark = Instant::now() + interval;
                if tx.send(bookmark(spec.r, cursor, false)).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = end_rx.changed() => return,
            _ = tx.closed() => return,
        }
    }
}

fn write(
    shared: &Shared,
    rr: &ResReq,
    q: &Query,
    verb: &str,
    content_type: &str,
    body: &[u8],
    manager: &str,
) -> Result<Response<Body>, ApiError> {
    let sk = storage_kind(rr.r);
    let ctx = WriteCtx {
        r: sk,
        namespace: rr.namespace.as_deref(),
        manager,
        dry_run: q.str("dryRun") == "All",
        subresource: &rr.subresource,
    };
    let parse_json = |b: &[u8]| -> Result<Value, ApiError> {
        let v: Value = serde_json::from_slice(b)
            .or_else(|_| serde_yaml_ng::from_slice(b))
            .map_err(|e| {
                ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
            })?;
        Ok(if rr.r.events_v1_view {
            events::to_core(&v)
        } else {
            v
        })
    };
    let name = rr.name.as_deref().unwrap_or("");
    let mut store = shared.store();
    match verb {
        "create" => {
            if rr.name.is_some() {
                return Err(ApiError::method_not_allowed("POST"));
            }
            let obj = ops::create(&mut store, &ctx, parse_json(body)?, false)?;
            Ok(json_response(201, &present(rr.r, &obj)))
        }
        "update" => {
            let obj = ops::update(&mut store, &ctx, name, parse_json(body)?)?;
            Ok(json_response(200, &present(rr.r, &obj)))
        }
        "patch" => {
            let kind = match content_type {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                "application/apply-patch+yaml" => PatchKind::Apply {
                    force: q.flag("force"),
                },
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            if matches!(kind, PatchKind::Apply { .. }) && q.get("fieldManager").is_none() {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            let body = if rr.r.events_v1_view {
                convert_event_patch(kind, body)?
            } else {
                body.to_vec()
            };
            let (obj, created) = ops::patch(&mut store, &ctx, name, kind, &body)?;
            Ok(json_response(
                if created { 201 } else { 200 },
                &present(rr.r, &obj),
            ))
        }
        "delete" => {
            let opts: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(body).unwrap_or(Value::Null)
            };
            let obj = ops::delete(&mut store, &ctx, name, &opts)?;
            Ok(json_response(200, &present(rr.r, &obj)))
        }
        "deletecollection" => {
            let (label, field) = selectors(rr, q)?;
            let targets: Vec<String> = store
                .list_current(sk.storage, rr.namespace.as_deref())
                .into_iter()
                .filter(|(_, o)| label.matches(o) && field.matches(o))
                .map(|(k, _)| k.1)
                .collect();
            let mut deleted = Vec::new();
            for n in targets {
                deleted.push(present(
                    rr.r,
                    &ops::delete(&mut store, &ctx, &n, &Value::Null)?,
                ));
            }
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", rr.r.kind),
                    "apiVersion": rr.r.api_version(),
                    "metadata": {"resourceVersion": store.current_rv().to_string()},
                    "items": deleted,
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed(verb)),
    }
}

/// Rewrites an events.k8s.io patch into core field names.
fn convert_event_patch(kind: PatchKind, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    match kind {
        PatchKind::Json => {
            let mut ops: Vec<Value> = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            for op in ops.iter_mut() {
                for field in ["path", "from"] {
                    if let Some(p) = op.get(field).and_then(Value::as_str) {
                        let mut segs: Vec<String> = p.split('/').map(str::to_string).collect();
                        if let Some(first) = segs.get_mut(1) {
                            let probe = json!({first.as_str(): 0});
                            if let Some(k) = events::to_core(&probe).as_object().and_then(|m| {
                                m.keys()
                                    .find(|k| *k != "apiVersion" && *k != "kind")
                                    .cloned()
                            }) {
                                *first = k;
                            }
                        }
                        op[field] = json!(segs.join("/"));
                    }
                }
            }
            serde_json::to_vec(&ops).map_err(|e| ApiError::internal(e.to_string()))
        }
        _ => {
            let v: Value = serde_yaml_ng::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
            serde_json::to_vec(&events::to_core(&v)).map_err(|e| ApiError::internal(e.to_string()))
        }
    }
}

fn control(shared: &Arc<Shared>, method: &Method, cmd: &str, q: &Query) -> Response<Body> {
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ok = || json_response(200, &json!({"ok": true}));
    match (method, cmd) {
        (&Method::POST, "compact") => {
            shared.store().compact();
            ok()
        }
        (&Method::POST, "end-watches") => {
            shared.end_watches.send_modify(|n| *n += 1);
            ok()
        }
        (&Method::POST, "fail") => {
            let mut f = super::lock(&shared.faults);
            f.fail_remaining = u32::try_from(num("count")).unwrap_or(u32::MAX);
            f.fail_code = u16::try_from(num("code")).unwrap_or(500);
            drop(f);
            ok()
        }
        (&Method::POST, "delay") => {
            super::lock(&shared.faults).delay = Duration::from_millis(num("ms"));
            ok()
        }
        (&Method::POST, "retain") => {
            shared
                .store()
                .set_retained(usize::try_from(num("events")).unwrap_or(usize::MAX));
            ok()
        }
        (&Method::POST, "bookmarks") => {
            shared
                .bookmark_ms
                .store(num("ms"), std::sync::atomic::Ordering::Relaxed);
            ok()
        }
        (&Method::GET, "requests") => {
            let recs = super::lock(&shared.records).clone();
            json_response(200, &serde_json::to_value(recs).unwrap_or(Value::Null))
        }
        (&Method::DELETE, "requests") => {
            super::lock(&shared.records).clear();
            ok()
        }
        (&Method::POST, "outage") => {
            let down = Duration::from_millis(num("ms"));
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                super::stop_serving(&shared).await;
                tokio::time::sleep(down).await;
                if let Ok(l) = super::bind_with_retry(shared.addr).await {
                    super::start_serving(&shared, l);
                }
            });
            json_response(202, &json!({"ok": true}))
        }
        _ => error_response(&ApiError::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let Target::Resource(rr) =
            route("/apis/networking.k8s.io/v1/namespaces/a/ingresses/web/status")
        else {
            panic!("resource")
        };
        assert_eq!(
            (
                rr.r.plural,
                rr.namespace.as_deref(),
                rr.name.as_deref(),
                rr.subresource.as_str()
            ),
            ("ingresses", Some("a"), Some("web"), "status")
        );
        let Target::Resource(rr) = route("/api/v1/namespaces/a") else {
            panic!("namespace object")
        };
        assert_eq!((rr.r.plural, rr.name.as_deref()), ("namespaces", Some("a")));
        let Target::Resource(rr) = route("/api/v1/namespaces/a/status") else {
            panic!("namespace status")
        };
        assert_eq!(rr.subresource, "status");
        let Target::Resource(rr) = route("/api/v1/watch/namespaces/a/configmaps") else {
            panic!("watch path")
        };
        assert!(rr.watch_path && rr.r.plural == "configmaps");
        assert!(matches!(
            route("/api/v1/namespaces/a/configmaps/x/status"),
            Target::NotFound
        ));
        assert!(matches!(route("/api/v1/pods"), Target::NotFound));
        assert!(matches!(route("/api/v1/configmaps"), Target::Resource(_)));
    }

    #[test]
    fn continue_token_round_trip_and_query_decoding() {
        let k = ("ns".to_string(), "a".to_string());
        let t = encode_continue(42, &k);
        assert_eq!(decode_continue(&t).ok(), Some((42, k)));
        assert!(decode_continue("!!").is_err());
        let q = Query::parse("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1");
        assert_eq!(q.str("labelSelector"), "app=web,tier in (a)");
        assert!(q.flag("watch"));
    }

    #[test]
    fn rfc3339_parse_inverts_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_rfc3339(&ops::rfc3339(t)), Some(1_700_000_000));
        assert_eq!(age(&ops::rfc3339(t), t + Duration::from_secs(30)), "30s");
    }
}
