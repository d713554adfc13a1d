//! What the control API reports and the commands it sends.
//!
//! The process publishes a [`Published`] view after every start, reload or endpoint change
//! ([`ControlView::publish`]); API reads serve it as it is. Live numbers (requests, errors,
//! latency, passive endpoint health) come from [`Metrics`] and the access-log writer at read
//! time. Writes become [`ControlCommand`]s sent to the process loop, which owns the server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::token::ControlToken;
use crate::config::Config;
use crate::desired::DisabledEndpoints;
use crate::logging::AccessLog;
use crate::metrics::{ErrorReason, Metrics, PoolResult, StatusClass};
use crate::proxy::core::Snapshot;
use crate::proxy::tls::CertStore;
use crate::routing::Backend;

/// Reload events kept for `/api/v1/reloads`.
pub const RELOAD_HISTORY: usize = 50;

/// Text that replaces secret values in the config dump.
pub const REDACTED: &str = "<redacted>";

/// A write action for the process loop, with where to send the answer.
#[derive(Debug)]
pub enum ControlCommand {
    /// Re-read the configuration source and apply it (like SIGHUP).
    Reload {
        /// The new version, or why the configuration was rejected.
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Start a graceful drain (like SIGTERM).
    Drain,
    /// Take an endpoint out of load balancing (`enabled: false`) or put it back.
    SetEndpoint {
        /// Upstream name.
        upstream: String,
        /// Endpoint address.
        endpoint: SocketAddr,
        /// Whether the endpoint receives traffic.
        enabled: bool,
        /// The routing version that applies it, or why it failed.
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// One route of the routing table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouteView {
    pub name: String,
    /// `null`: requests whose host matches no host-specific route.
    pub host: Option<String>,
    pub path: String,
    pub path_type: String,
    pub regex: bool,
    /// `upstream`, `direct_response` or `redirect`.
    pub backend_kind: &'static str,
    /// Upstream name, status or redirect location.
    pub backend: String,
}

/// One endpoint of an upstream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointView {
    pub address: SocketAddr,
    /// Taken out of load balancing through the API.
    pub disabled: bool,
}

/// One upstream and its endpoints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamView {
    pub name: String,
    pub endpoints: Vec<EndpointView>,
    pub max_idle: usize,
}

/// One certificate served.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CertView {
    /// Hosts it is selected for (`*` for the default certificate).
    pub hosts: Vec<String>,
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub expires_in_days: i64,
    pub default: bool,
}

/// Everything the read endpoints report that changes only on start, reload or endpoint change.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub config: Value,
    pub version: u64,
    pub compiled_at: Option<SystemTime>,
    pub routes: Vec<RouteView>,
    pub upstreams: Vec<UpstreamView>,
    pub certificates: Vec<CertView>,
    pub io_driver: String,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadEvent {
    pub time: String,
    /// `signal`, `api`, `kubernetes`...
    pub trigger: String,
    pub success: bool,
    /// Routing version after the attempt.
    pub version: u64,
    /// Why it failed (empty on success).
    pub message: String,
}

/// The state behind the control API and the dashboard.
#[derive(Debug)]
pub struct ControlView {
    token: ControlToken,
    commands: Option<mpsc::Sender<ControlCommand>>,
    published: ArcSwap<Published>,
    /// The operator's choice of endpoints out of load balancing, handed to the server.
    disabled: Mutex<DisabledEndpoints>,
    reloads: Mutex<VecDeque<ReloadEvent>>,
    xdp: ArcSwap<Value>,
    access: Mutex<Option<Arc<AccessLog>>>,
}

impl ControlView {
    /// A view checked against `token`; writes go to `commands` (none: writes answer 503).
    pub fn new(token: ControlToken, commands: Option<mpsc::Sender<ControlCommand>>) -> Self {
        ControlView {
            token,
            commands,
            published: ArcSwap::from_pointee(Published::default()),
            disabled: Mutex::new(DisabledEndpoints::default()),
            reloads: Mutex::new(VecDeque::new()),
            xdp: ArcSwap::from_pointee(json!({
                "state": "off",
                "enabled": false,
                "interfaces": [],
                "deny_cidrs": [],
                "syn_limit": null,
                "packets": {},
            })),
            access: Mutex::new(None),
        }
    }

    /// The token the API checks.
    pub fn token(&self) -> &ControlToken {
        &self.token
    }

    pub(crate) fn commands(&self) -> Option<&mpsc::Sender<ControlCommand>> {
        self.commands.as_ref()
    }

    /// Lets the stats endpoint read per-route latency from the access-log writer.
    pub fn attach_access_log(&self, log: Arc<AccessLog>) {
        *self.access.lock().unwrap_or_else(PoisonError::into_inner) = Some(log);
    }

    /// Passive endpoint health from the access-log writer (empty without one).
    pub fn endpoint_stats(
        &self,
    ) -> std::collections::HashMap<SocketAddr, crate::logging::EndpointStats> {
        self.access
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|a| a.endpoint_stats())
            .unwrap_or_default()
    }

    /// Replaces what `/api/v1/xdp` reports (the XDP room's state as JSON).
    pub fn set_xdp_state(&self, state: Value) {
        self.xdp.store(Arc::new(state));
    }

    pub(crate) fn xdp_state(&self) -> Arc<Value> {
        self.xdp.load_full()
    }

    /// The published view.
    pub fn published(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// Publishes the state of a running data plane.
    pub fn publish(
        &self,
        cfg: &Config,
        snapshot: &Snapshot,
        certs: &CertStore,
        compiled_at: SystemTime,
        io_driver: &str,
    ) {
        let disabled = self.disabled_endpoints();
        let mut routes = Vec::new();
        for host in snapshot.table.hosts() {
            for r in host.routes() {
                let (kind, backend) = match &**r.backend() {
                    Backend::Upstream { name } => ("upstream", name.clone()),
                    Backend::DirectResponse { status, .. } => {
                        ("direct_response", status.to_string())
                    }
                    Backend::Redirect { location, code } => {
                        ("redirect", format!("{code} {location}"))
                    }
                };
                routes.push(RouteView {
                    name: r.name().to_string(),
                    host: host.host().map(str::to_string),
                    path: r.path().to_string(),
                    path_type: format!("{:?}", r.path_type()),
                    regex: r.is_regex(),
                    backend_kind: kind,
                    backend,
                });
            }
        }
        // Endpoints come from the configuration (the snapshot lacks the disabled ones).
        let mut upstreams: Vec<UpstreamView> = snapshot
            .upstreams
            .values()
            .map(|u| {
                let mut endpoints: Vec<EndpointView> = u
                    .endpoints
                    .iter()
                    .map(|a| EndpointView {
                        address: *a,
                        disabled: false,
                    })
                    .collect();
                for addr in disabled.of(&u.name) {
                    endpoints.push(EndpointView {
                        address: addr,
                        disabled: true,
                    });
                }
                endpoints.sort_by_key(|e| e.address);
                UpstreamView {
                    name: u.name.to_string(),
                    endpoints,
                    max_idle: u.pool.max_idle,
                }
            })
            .collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let now = SystemTime::now();
        let mut certificates = vec![cert_view(certs.default_cert().info(), &[], true, now)];
        for e in certs.entries() {
            certificates.push(cert_view(e.cert.info(), &e.hosts, false, now));
        }
        self.published.store(Arc::new(Published {
            config: redacted_config(cfg),
            version: snapshot.table.version(),
            compiled_at: Some(compiled_at),
            routes,
            upstreams,
            certificates,
            io_driver: io_driver.to_string(),
        }));
    }

    /// Endpoints taken out of load balancing: what the server's snapshots leave out.
    pub fn disabled_endpoints(&self) -> DisabledEndpoints {
        self.disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks an endpoint disabled or enabled; the caller hands [`Self::disabled_endpoints`] to
    /// the server, whose snapshot builder leaves them out.
    pub fn set_endpoint(&self, upstream: &str, endpoint: SocketAddr, enabled: bool) {
        self.disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(upstream, endpoint, enabled);
    }

    /// Records a reload attempt for `/api/v1/reloads` and the dashboard.
    pub fn record_reload(&self, trigger: &str, result: Result<u64, String>) {
        let mut time = String::new();
        crate::logging::access::push_rfc3339(&mut time, SystemTime::now());
        let (success, version, message) = match result {
            Ok(v) => (true, v, String::new()),
            Err(m) => (false, self.published().version, m),
        };
        let mut r = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        if r.len() >= RELOAD_HISTORY {
            r.pop_front();
        }
        r.push_back(ReloadEvent {
            time,
            trigger: trigger.to_string(),
            success,
            version,
            message,
        });
    }

    /// Reload attempts, oldest first.
    pub fn reloads(&self) -> Vec<ReloadEvent> {
        self.reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Live counters for the dashboard: per-route requests by status class, errors, latency.
    pub fn stats(&self, metrics: &Metrics) -> Value {
        let snap = metrics.data_plane_snapshot();
        let latency = self
            .access
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|a| (a.route_latency(), a.written(), a.dropped()));
        let mut routes = Vec::new();
        for (i, name) in snap.route_names.iter().enumerate() {
            let counts = snap.route_counts.get(i).copied().unwrap_or_default();
            let by_class = |c: StatusClass| counts.get(c.index()).copied().unwrap_or(0);
            let requests: u64 = counts.iter().sum();
            let lat = latency
                .as_ref()
                .and_then(|(l, _, _)| l.get(i))
                .cloned()
                .unwrap_or_default();
            routes.push(json!({
                "name": &**name,
                "requests": requests,
                "errors": by_class(StatusClass::from_status(500)),
                "client_errors": by_class(StatusClass::from_status(400)),
                "latency": lat,
            }));
        }
        let errors: serde_json::Map<String, Value> = ErrorReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), json!(snap.error_count(*r))))
            .collect();
        let unrouted: u64 = snap.unrouted_requests.iter().sum();
        let mut time = String::new();
        crate::logging::access::push_rfc3339(&mut time, SystemTime::now());
        json!({
            "time": time,
            "version": self.published().version,
            "connections_active": snap.connections_active,
            "connections_accepted": snap.connections_accepted,
            "unrouted_requests": unrouted,
            "request_duration": {
                "count": snap.request_duration.count(),
                "sum_seconds": snap.request_duration.sum_seconds(),
            },
            "upstream_duration": {
                "count": snap.upstream_duration.count(),
                "sum_seconds": snap.upstream_duration.sum_seconds(),
            },
            "pool": {
                "hits": snap.upstream_pool.get(PoolResult::Hit.index()).copied().unwrap_or(0),
                "misses": snap.upstream_pool.get(PoolResult::Miss.index()).copied().unwrap_or(0),
            },
            "errors": errors,
            "access_log": {
                "enabled": latency.is_some(),
                "written": latency.as_ref().map_or(0, |l| l.1),
                "dropped": latency.as_ref().map_or(0, |l| l.2),
            },
            "routes": routes,
        })
    }
}

fn cert_view(
    info: &crate::proxy::tls::CertInfo,
    hosts: &[String],
    default: bool,
    now: SystemTime,
) -> CertView {
    let mut nb = String::new();
    crate::logging::access::push_rfc3339(&mut nb, info.not_before());
    let mut na = String::new();
    crate::logging::access::push_rfc3339(&mut na, info.not_after());
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    CertView {
        hosts: if default {
            vec!["*".into()]
        } else {
            hosts.to_vec()
        },
        common_name: info.common_name.clone(),
        dns_names: info.dns_names.clone(),
        not_before: nb,
        not_after: na,
        expires_in_days: info
            .not_after_unix
            .saturating_sub(now_unix)
            .div_euclid(86_400),
        default,
    }
}

/// The configuration as JSON with secrets replaced by [`REDACTED`]: `control_plane.auth_token`,
/// any key naming a token, password or secret, and the user info of URLs (`redis.url`).
pub fn redacted_config(cfg: &Config) -> Value {
    let mut v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    redact(&mut v);
    v
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                let key = k.to_ascii_lowercase();
                if ["token", "password", "secret"]
                    .iter()
                    .any(|s| key.contains(s))
                    && !child.is_null()
                {
                    *child = Value::String(REDACTED.into());
                } else if key == "url" {
                    if let Value::String(s) = child {
                        *s = redact_userinfo(s);
                    }
                } else {
                    redact(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `scheme://user:pass@host/...` → `scheme://<redacted>@host/...`.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = url.get(scheme_end + 3..).unwrap_or("");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or("");
    match authority.rfind('@') {
        Some(at) => format!(
            "{}{REDACTED}{}",
            url.get(..scheme_end + 3).unwrap_or(""),
            rest.get(at..).unwrap_or("")
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dump_redacts_secrets() {
        let mut cfg = Config::default();
        cfg.control_plane.auth_token = Some("s3cr3t-t0ken".into());
        cfg.redis.url = Some("redis://arc:hunter2@redis.internal:6379/0".into());
        let v = redacted_config(&cfg);
        let text = v.to_string();
        assert!(!text.contains("s3cr3t-t0ken"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(v["control_plane"]["auth_token"], REDACTED);
        assert_eq!(
            v["redis"]["url"],
            format!("redis://{REDACTED}@redis.internal:6379/0")
        );
        // Everything else is intact.
        assert_eq!(v["max_connections"], 65536);
        assert_eq!(v["observability"]["metrics_bind"], "127.0.0.1:9090");
    }

    #[test]
    fn urls_without_userinfo_are_unchanged() {
        assert_eq!(redact_userinfo("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_userinfo("no scheme"), "no scheme");
        assert_eq!(redact_userinfo("redis://h/a@b"), "redis://h/a@b");
    }

    #[test]
    fn reload_history_is_bounded() {
        let v = ControlView::new(ControlToken::new(None), None);
        for i in 0..(RELOAD_HISTORY as u64 + 5) {
            v.record_reload("api", Ok(i));
        }
        v.record_reload("signal", Err("bad".into()));
        let r = v.reloads();
        assert_eq!(r.len(), RELOAD_HISTORY);
        let last = r.last().expect("last");
        assert!(!last.success);
        assert_eq!(last.message, "bad");
        assert_eq!(r[0].version, 6);
    }
}
