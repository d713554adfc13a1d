//! The configuration schema (SPEC §2): one serde model for YAML, JSON and TOML.
//!
//! Every struct rejects unknown keys. Defaults here are the documented ones; `arc.example.yaml`
//! at the repository root lists them all and a test keeps the two in step.

use serde::{Deserialize, Serialize};

use super::units::{ByteSize, Duration};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    /// Alias of `node.workers` (the deployment guide uses both spellings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    pub max_connections: u64,
    pub io_uring: IoUring,
    pub listeners: Vec<Listener>,
    pub tls: Tls,
    pub upstreams: Vec<Upstream>,
    /// Pool and timeouts of the upstreams Arc builds itself: the backends of Ingresses in
    /// Kubernetes mode (standalone `upstreams[]` entries carry their own).
    pub upstream_defaults: UpstreamDefaults,
    pub routes: Vec<Route>,
    pub control_plane: ControlPlane,
    pub observability: Observability,
    pub logging: Logging,
    pub redis: Redis,
    pub xdp: Xdp,
    pub kubernetes: Kubernetes,
    pub lifecycle: Lifecycle,
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: NodeConfig::default(),
            workers: None,
            max_connections: 65536,
            io_uring: IoUring::default(),
            listeners: default_listeners(),
            tls: Tls::default(),
            upstreams: Vec::new(),
            upstream_defaults: UpstreamDefaults::default(),
            routes: Vec::new(),
            control_plane: ControlPlane::default(),
            observability: Observability::default(),
            logging: Logging::default(),
            redis: Redis::default(),
            xdp: Xdp::default(),
            kubernetes: Kubernetes::default(),
            lifecycle: Lifecycle::default(),
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// Worker threads asked for: `node.workers`, else the top-level alias `workers`; 0 = one per
    /// available core (resolved by the data plane).
    pub fn workers(&self) -> usize {
        if self.node.workers != 0 {
            self.node.workers
        } else {
            self.workers.unwrap_or(0)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Data-plane threads; 0 = `available_parallelism()`. Restart required.
    pub workers: usize,
}

/// `io_uring.enabled`: `auto` probes and falls back to epoll; `true` requires io_uring; `false`
/// forces epoll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoUringMode {
    #[default]
    Auto,
    True,
    False,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoUring {
    pub enabled: IoUringMode,
    pub sqpoll: bool,
    pub uring_entries: u32,
}

impl Default for IoUring {
    fn default() -> Self {
        IoUring {
            enabled: IoUringMode::Auto,
            sqpoll: false,
            uring_entries: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `address:port`, e.g. `0.0.0.0:8080` or `[::]:8443`.
    pub bind: String,
    pub protocol: Protocol,
    /// Accept PROXY protocol v1/v2 headers from the peer.
    #[serde(default)]
    pub proxy_protocol: bool,
}

pub fn default_listeners() -> Vec<Listener> {
    vec![
        Listener {
            name: "http".into(),
            bind: "0.0.0.0:8080".into(),
            protocol: Protocol::Http,
            proxy_protocol: false,
        },
        Listener {
            name: "https".into(),
            bind: "0.0.0.0:8443".into(),
            protocol: Protocol::Https,
            proxy_protocol: false,
        },
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Certificates chosen by SNI; in Kubernetes mode Secrets add to these.
    pub certificates: Vec<TlsCertificate>,
    /// The certificate served when no SNI name matches; a self-signed one is generated when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<CertFiles>,
    /// Sessions kept in memory for resumption (TLS 1.3 tickets naming a cached session, TLS 1.2
    /// session IDs); 0 turns the cache off. Per process, shared by the workers.
    pub session_cache: usize,
    /// Issue self-contained encrypted session tickets (keys rotate in memory every 6 hours),
    /// so resumption survives cache eviction; off by default, as in ingress-nginx.
    pub session_tickets: bool,
}

/// Default of `tls.session_cache`, in sessions.
pub const DEFAULT_TLS_SESSION_CACHE: usize = 10_000;
/// Largest accepted `tls.session_cache`.
pub const MAX_TLS_SESSION_CACHE: usize = 1_000_000;

impl Default for Tls {
    fn default() -> Self {
        Self {
            certificates: Vec::new(),
            default_certificate: None,
            session_cache: DEFAULT_TLS_SESSION_CACHE,
            session_tickets: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    pub hosts: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: String,
    pub key: String,
}

/// Load-balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    Weighted,
    LeastRequest,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    /// Endpoints as `host:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    /// One endpoint; shorthand for `addrs: [..]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default)]
    pub pool: Pool,
    #[serde(default)]
    pub lb: LbPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    #[serde(default = "default_io_timeout")]
    pub read_timeout: Duration,
    #[serde(default = "default_io_timeout")]
    pub send_timeout: Duration,
    /// TLS towards the endpoints (an HTTPS upstream); absent = plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// `upstreams[].tls`: how Arc speaks TLS to an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// `false` keeps the block but speaks plain HTTP.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name sent as SNI and checked in the certificate; absent = the endpoint's host when it
    /// is a name, no SNI when it is an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Verify the upstream's certificate (chain and name).
    #[serde(default = "default_true")]
    pub verify: bool,
    /// PEM file of the CA certificates to trust when verifying; absent = the system roots.
    /// A relative path is taken from the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl Upstream {
    /// The endpoints, from `addrs` or `addr`.
    pub fn endpoints(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.addrs.iter().map(String::as_str).collect();
        if let Some(a) = &self.addr {
            out.push(a);
        }
        out
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_io_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Settings of upstreams Arc derives from Ingress backends (Kubernetes mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamDefaults {
    pub pool: Pool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
}

impl Default for UpstreamDefaults {
    fn default() -> Self {
        UpstreamDefaults {
            pool: Pool::default(),
            connect_timeout: default_connect_timeout(),
            read_timeout: default_io_timeout(),
            send_timeout: default_io_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    /// Idle keep-alive connections kept per worker and upstream.
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            max_idle: 64,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: Duration,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Duration,
    #[serde(default = "default_hc_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_hc_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_hc_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_hc_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_hc_threshold() -> u32 {
    2
}

/// How a route's path is matched (Kubernetes Ingress `pathType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PathType {
    Exact,
    #[default]
    Prefix,
    ImplementationSpecific,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact host or `*.suffix`; absent = requests whose host matches no host-specific route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub path_type: PathType,
    /// Treat `path` as a regular expression (anchored at the start, case-insensitive); needs
    /// `path_type: ImplementationSpecific`.
    #[serde(default)]
    pub regex: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Write access-log lines for this route (`false` silences a noisy route, e.g. probes).
    #[serde(default = "default_true")]
    pub access_log: bool,
}

fn default_true() -> bool {
    true
}

fn default_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

fn default_content_type() -> String {
    "text/plain".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub location: String,
    #[serde(default = "default_redirect_code")]
    pub code: u16,
}

fn default_redirect_code() -> u16 {
    308
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlane {
    /// Bearer token of the control API; no token = the API is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Observability {
    /// The admin port: /healthz /readyz /metrics /api /ui.
    pub metrics_bind: String,
}

impl Default for Observability {
    fn default() -> Self {
        Observability {
            metrics_bind: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    pub level: LogLevel,
    pub format: LogFormat,
    pub output: LogOutput,
    pub access_log: AccessLog,
}

/// The per-request access log (`logging.access_log`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// One JSON line per request.
    pub enabled: bool,
    /// Fraction of requests written, 0.0 to 1.0 (counters see every request).
    pub sample: f64,
    /// Lines buffered per worker before new ones are dropped (and counted); restart required.
    pub buffer: usize,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: true,
            sample: 1.0,
            buffer: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogOutput {
    /// `stdout`, `stderr`, or a directory receiving `arc.log` (process log) and `access.log`,
    /// both rotated by size.
    pub path: String,
    pub rotation: Rotation,
}

impl Default for LogOutput {
    fn default() -> Self {
        LogOutput {
            path: "stdout".into(),
            rotation: Rotation::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rotation {
    pub max_size: ByteSize,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: ByteSize::mib(100),
            max_files: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// `redis://host:port/db`; enables cluster-wide rate limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Auto,
    Native,
    Skb,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Xdp {
    pub enabled: bool,
    /// An interface name, or `auto` = the interfaces that carry the listeners' addresses.
    pub interface: String,
    pub mode: XdpMode,
    pub deny_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_limit: Option<SynLimit>,
}

impl Default for Xdp {
    fn default() -> Self {
        Xdp {
            enabled: false,
            interface: "auto".into(),
            mode: XdpMode::Auto,
            deny_cidrs: Vec::new(),
            syn_limit: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynLimit {
    /// New TCP SYNs per source per second.
    pub rate: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    pub enabled: bool,
    pub ingress_class: String,
    pub controller_name: String,
    /// Empty = all namespaces.
    pub watch_namespaces: Vec<String>,
    /// `namespace/name` of the Service whose address is written to Ingress status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_service: Option<String>,
    /// IPs or host names written verbatim to Ingress status; when set they override the
    /// `publish_service` addresses (like ingress-nginx's `--publish-status-address`).
    pub publish_status_address: Vec<String>,
    /// Name of the coordination.k8s.io Lease used for leader election.
    pub election_id: String,
    pub debounce: Duration,
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            enabled: false,
            ingress_class: "arc".into(),
            controller_name: "arc-gateway.io/ingress-controller".into(),
            watch_namespaces: Vec::new(),
            publish_service: None,
            publish_status_address: Vec::new(),
            election_id: "arc-gateway-leader".into(),
            debounce: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// Graceful-drain deadline (SIGTERM, after an upgrade); a reload applies to later drains.
    pub drain_timeout: Duration,
    /// Absolute path of the binary a SIGUSR2 upgrade starts; unset = the binary Arc was
    /// started from (resolved at start, so a replaced file starts the new version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_binary: Option<String>,
    /// Longest wait for the new process of an upgrade to take the sockets and report ready;
    /// past it the new process is killed and this one keeps serving.
    pub upgrade_timeout: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            drain_timeout: Duration::from_secs(30),
            upgrade_binary: None,
            upgrade_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Request head size limit (431 above it).
    pub max_head: ByteSize,
    /// Request header count limit (431 above it).
    pub max_headers: usize,
    /// Request body size limit (413 above it); unset = unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<ByteSize>,
    /// Time allowed for a request head to arrive (slowloris guard).
    pub header_read_timeout: Duration,
    /// Idle keep-alive time of a downstream connection.
    pub idle_timeout: Duration,
    /// After this many requests a keep-alive connection is closed (`Connection: close`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u64>,
    /// After this age a keep-alive connection is closed after its current request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_age: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: ByteSize::kib(32),
            max_headers: 100,
            max_body: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_requests_per_connection: None,
            max_connection_age: None,
        }
    }
}
