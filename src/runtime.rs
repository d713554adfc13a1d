//! Process wiring of Arc: turns a validated [`Config`] (standalone) or the controller's
//! [`ClusterState`] (Kubernetes mode) into a [`DesiredState`], builds what the data plane serves
//! from it (routing snapshot and TLS certificate store, through the one builder:
//! [`build_snapshot`] and [`build_cert_store`]), starts the worker threads and applies reloads,
//! cluster changes and the endpoints the control API disabled.
//!
//! Shape: the server keeps the desired state it last built from, so an endpoint the operator
//! disables or enables rebuilds the snapshot from that state with the disabled set the admin
//! room hands in ([`Server::set_disabled_endpoints`]); no live snapshot is ever edited.
//!
//! This is control-plane code: it may block (file reads, DNS) because it never runs on a worker
//! thread. Signals and the process loop live in [`crate::lifecycle`].

#![forbid(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::admin::{ControlView, HealthState};
use crate::config::{self, Config, IoUringMode, Protocol};
use crate::desired::{self, Certificates, ClusterState, DesiredState, DisabledEndpoints};
use crate::logging::AccessLog;
use crate::metrics::{IoDriver, Metrics, ReloadResult};
use crate::proxy::core::{Conn, SharedSnapshot, Snapshot, UpstreamSpec, WorkerCx};
use crate::proxy::driver::{DriverKind, Tuning};
use crate::proxy::io::ConnLimit;
use crate::proxy::listener::{InheritedListener, ListenerSpec};
use crate::proxy::stop::Heartbeats;
use crate::proxy::tls::{
    CertResolver, CertStore, LoadedCert, TlsAcceptor, TlsAcceptorConfig, UpstreamTls,
    UpstreamTlsCache, UpstreamTlsError,
};
use crate::proxy::worker::{WorkerConfig, WorkerSet, driver_entry};
use crate::routing;

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    Workers(#[from] crate::proxy::worker::WorkerError),
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> StartError {
    StartError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Resolves an endpoint name through the system resolver (blocking: control plane only).
fn dns(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    name.to_socket_addrs().map(Iterator::collect)
}

fn log_unresolved(unresolved: &[desired::Unresolved]) {
    for u in unresolved {
        tracing::warn!(
            key = u.key,
            address = u.address,
            error = u.error,
            "upstream address does not resolve; it gets no traffic"
        );
    }
}

/// The desired state of a configuration, its endpoint names resolved through DNS here (names
/// that do not resolve are logged and skipped: requests then get 503 instead of the start
/// failing). Relative certificate paths are taken from `base`.
pub fn desired_from_config(cfg: &Config, base: &Path) -> DesiredState {
    let (state, unresolved) = desired::from_config(cfg, base, &mut dns);
    log_unresolved(&unresolved);
    state
}

/// One configured upstream as the data plane serves it (endpoint names through DNS, TLS
/// settings built): the path [`build_snapshot`] takes, for one upstream.
pub fn resolve_upstream(u: &config::Upstream, index: usize) -> UpstreamSpec {
    let mut unresolved = Vec::new();
    let up = desired::upstream(u, index, &mut dns, &mut unresolved);
    log_unresolved(&unresolved);
    let tls = up.tls.as_ref().map(UpstreamTls::new).transpose();
    upstream_spec(&up, index, tls, &DisabledEndpoints::default())
}

/// The TLS client settings of `upstreams[].tls`, built: SNI is `server_name`, else the host of
/// the first address when it is a name (an IP address sends none).
pub fn upstream_tls(u: &config::Upstream) -> Result<Option<UpstreamTls>, UpstreamTlsError> {
    desired::upstream_tls(u)
        .as_ref()
        .map(UpstreamTls::new)
        .transpose()
}

/// The data plane's form of one desired upstream (`upstreams[index]`), without the endpoints
/// the operator disabled. TLS settings that failed to build take it out of service.
fn upstream_spec(
    u: &desired::Upstream,
    index: usize,
    tls: Result<Option<UpstreamTls>, UpstreamTlsError>,
    disabled: &DisabledEndpoints,
) -> UpstreamSpec {
    let mut endpoints = disabled.apply(&u.name, &u.endpoints);
    let tls = match tls {
        Ok(tls) => tls,
        Err(e) => {
            // Never fall back to plain HTTP: the upstream gets no traffic (503) instead.
            tracing::warn!(key = format!("upstreams[{index}].tls"), upstream = %u.name, error = %e,
                "upstream TLS settings unusable; it gets no traffic");
            endpoints.clear();
            None
        }
    };
    UpstreamSpec {
        name: Arc::from(u.name.as_str()),
        endpoints,
        tls,
        pool: u.pool,
        read_timeout: u.read_timeout,
        send_timeout: u.send_timeout,
    }
}

/// Resolves the relative file paths the snapshot reads (upstream CA files) against the
/// configuration file's directory, as certificate paths are.
fn absolutize_paths(cfg: &mut Config, base: &Path) {
    for u in &mut cfg.upstreams {
        if let Some(ca) = u.tls.as_mut().and_then(|t| t.ca.as_mut())
            && Path::new(ca.as_str()).is_relative()
        {
            *ca = base.join(ca.as_str()).display().to_string();
        }
    }
}

/// The one snapshot builder: compiles `desired`'s routes at `version` and builds its upstreams
/// without the endpoints in `disabled`. With `tls_cache` (Kubernetes mode), upstream TLS
/// settings come from the cache when they did not change since the last build with it (their
/// sessions stay resumable), and the cache keeps only what this snapshot uses; without it
/// (standalone mode) they are built anew, re-reading CA files.
pub fn build_snapshot(
    desired: &DesiredState,
    disabled: &DisabledEndpoints,
    version: u64,
    metrics: &Metrics,
    mut tls_cache: Option<&mut UpstreamTlsCache>,
) -> (Snapshot, Duration) {
    let started = Instant::now();
    if let Some(cache) = tls_cache.as_deref_mut() {
        cache.begin();
    }
    let compiled = routing::compile(&desired.routes, version);
    for p in &compiled.problems {
        tracing::warn!(problem = %p, "route not served");
    }
    let upstreams = desired
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let tls = u
                .tls
                .as_ref()
                .map(|options| match tls_cache.as_deref_mut() {
                    Some(cache) => UpstreamTls::cached(options, cache),
                    None => UpstreamTls::new(options),
                });
            upstream_spec(u, i, tls.transpose(), disabled)
        })
        .collect();
    if let Some(cache) = tls_cache {
        cache.sweep();
    }
    let snapshot = Snapshot::new(compiled.table, upstreams, desired.limits)
        .with_route_ids(|n| metrics.routes().intern(n));
    (snapshot, started.elapsed())
}

/// The one certificate-store builder: the desired default certificate (else `running_default`,
/// the running default kept across swaps, else a newly generated one), the certificate files,
/// then the loaded certificates (one the store refuses is logged and skipped).
pub fn build_cert_store(
    certs: &Certificates,
    running_default: Option<&LoadedCert>,
) -> Result<CertStore, StartError> {
    let default = match (&certs.default, running_default) {
        (Some(d), _) => LoadedCert::from_files(&d.cert, &d.key)
            .map_err(|e| invalid("tls.default_certificate", e.to_string()))?,
        (None, Some(running)) => running.clone(),
        (None, None) => LoadedCert::generate_default()
            .map_err(|e| invalid("tls.default_certificate", e.to_string()))?,
    };
    let mut builder = CertStore::builder(default);
    for (i, c) in certs.files.iter().enumerate() {
        builder
            .add_files(&c.hosts, &c.files.cert, &c.files.key)
            .map_err(|e| invalid(format!("tls.certificates[{i}]"), e.to_string()))?;
    }
    for c in &certs.loaded {
        if let Err(e) = builder.add(&c.hosts, c.cert.clone()) {
            tracing::warn!(error = %e, "certificate from a Secret not installed");
        }
    }
    Ok(builder.build())
}

/// Chooses the io driver for `io_uring.enabled`.
pub fn select_driver(mode: IoUringMode) -> Result<DriverKind, StartError> {
    match mode {
        IoUringMode::False => Ok(DriverKind::Epoll),
        IoUringMode::True => match crate::proxy::uring::probe() {
            Ok(_) => Ok(DriverKind::Uring),
            Err(e) => Err(invalid(
                "io_uring.enabled",
                format!("io_uring is required but unavailable: {e}"),
            )),
        },
        IoUringMode::Auto => match crate::proxy::uring::probe() {
            Ok(_) if driver_entry::<Conn>(DriverKind::Uring).is_ok() => Ok(DriverKind::Uring),
            Ok(_) => {
                tracing::warn!("io_uring driver not part of this build; using the epoll driver");
                Ok(DriverKind::Epoll)
            }
            Err(e) => {
                tracing::warn!(reason = %e, "io_uring unavailable; using the epoll driver");
                Ok(DriverKind::Epoll)
            }
        },
    }
}

/// A running data plane: worker threads plus what reloads swap.
pub struct Server {
    cfg: Config,
    base: PathBuf,
    workers: WorkerSet,
    shared: SharedSnapshot,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    health: Arc<HealthState>,
    version: u64,
    xdp: crate::xdp::XdpFilter,
    /// The last state the Kubernetes controller published (Kubernetes mode).
    cluster: Option<Arc<ClusterState>>,
    /// What the running snapshot and certificate store were built from.
    desired: DesiredState,
    /// Endpoints the admin room last handed in as disabled; every snapshot leaves them out.
    disabled: DisabledEndpoints,
    /// Access log the workers feed (restart required to add or remove).
    access: Option<Arc<AccessLog>>,
    /// Control API view, republished on every change.
    control: Option<Arc<ControlView>>,
    compiled_at: SystemTime,
    /// Upstream TLS settings of the cluster snapshots, kept from one to the next.
    upstream_tls: UpstreamTlsCache,
}

impl Server {
    /// Starts the workers for `cfg` (file paths relative to `base`).
    pub fn start(
        cfg: Config,
        base: &Path,
        metrics: Arc<Metrics>,
        health: Arc<HealthState>,
    ) -> Result<Server, StartError> {
        Self::start_adopting(cfg, base, metrics, health, &mut Vec::new(), None)
    }

    /// [`Server::start`] with each worker feeding `access` (see [`crate::logging::access`]).
    pub fn start_with_access_log(
        cfg: Config,
        base: &Path,
        metrics: Arc<Metrics>,
        health: Arc<HealthState>,
        access: Option<Arc<AccessLog>>,
    ) -> Result<Server, StartError> {
        Self::start_adopting(cfg, base, metrics, health, &mut Vec::new(), access)
    }

    /// [`Server::start`] that adopts listener sockets handed over by the previous process of
    /// a zero-downtime upgrade instead of binding them (see
    /// [`crate::proxy::listener::adopt_all`]); sockets no listener adopts are left in `inherited`.
    /// With inherited sockets the workers start with accepting paused: the queued connections
    /// stay the previous process's until it says "go" ([`Server::resume_accepting`]).
    /// Each worker feeds `access` when given (see [`crate::logging::access`]).
    pub fn start_adopting(
        cfg: Config,
        base: &Path,
        metrics: Arc<Metrics>,
        health: Arc<HealthState>,
        inherited: &mut Vec<InheritedListener>,
        access: Option<Arc<AccessLog>>,
    ) -> Result<Server, StartError> {
        let mut cfg = cfg;
        absolutize_paths(&mut cfg, base);
        let driver = select_driver(cfg.io_uring.enabled)?;
        metrics.control().io_driver_selected(match driver {
            DriverKind::Epoll => IoDriver::Epoll,
            DriverKind::Uring => IoDriver::IoUring,
        });
        tracing::info!(driver = driver.name(), "io driver selected");

        let desired = desired_from_config(&cfg, base);
        let store = build_cert_store(&desired.certificates, None)?;
        let resolver = CertResolver::new(store);
        let acceptor = Arc::new(
            TlsAcceptor::new(
                &TlsAcceptorConfig {
                    session_cache_entries: cfg.tls.session_cache,
                    session_tickets: cfg.tls.session_tickets,
                    ..TlsAcceptorConfig::default()
                },
                Arc::clone(&resolver),
            )
            .map_err(|e| invalid("tls", e.to_string()))?,
        );

        let version = 1;
        let disabled = DisabledEndpoints::default();
        let (snapshot, took) = build_snapshot(&desired, &disabled, version, &metrics, None);
        metrics.control().routing_table_swapped(version, took);
        let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));

        let mut listeners = Vec::with_capacity(cfg.listeners.len());
        for (i, l) in cfg.listeners.iter().enumerate() {
            let addr: SocketAddr = config::validate::parse_socket_addr(&l.bind)
                .map_err(|m| invalid(format!("listeners[{i}].bind"), m))?;
            listeners.push(ListenerSpec {
                index: i,
                name: Arc::from(l.name.as_str()),
                addr,
                tls: (l.protocol == Protocol::Https).then(|| Arc::clone(&acceptor)),
            });
        }
        let workers = match cfg.workers() {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let tuning = Tuning {
            uring_entries: cfg.io_uring.uring_entries,
            sqpoll: cfg.io_uring.sqpoll,
            stop_grace: cfg.lifecycle.drain_timeout.get(),
            ..Tuning::default()
        };
        let worker_config = WorkerConfig {
            driver,
            workers,
            listeners,
            conn_limit: Arc::new(ConnLimit::new(cfg.max_connections)),
            tuning,
            accept_paused: !inherited.is_empty(),
        };
        let cx_shared = Arc::clone(&shared);
        let cx_metrics = Arc::clone(&metrics);
        let seed = seed();
        let cx_access = access.clone();
        let workers = WorkerSet::spawn_adopting::<Conn, _>(worker_config, inherited, move |i| {
            let cx = WorkerCx::new(
                Arc::clone(&cx_shared),
                cx_metrics.register_worker(),
                seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            match &cx_access {
                Some(a) => cx.with_access_log(a.worker()),
                None => cx,
            }
        })?;
        for (l, addr) in cfg.listeners.iter().zip(workers.local_addrs()) {
            tracing::info!(listener = %l.name, address = %addr, "listening");
        }
        let xdp = crate::xdp::XdpFilter::start(
            &cfg.xdp,
            workers.local_addrs(),
            Arc::clone(metrics.xdp()),
        );
        health.set_config_loaded(true);
        health.set_workers_up(true);
        health.set_first_sync_done(true);
        Ok(Server {
            cfg,
            base: base.to_path_buf(),
            workers,
            shared,
            resolver,
            metrics,
            health,
            version,
            xdp,
            cluster: None,
            desired,
            disabled,
            access,
            control: None,
            compiled_at: SystemTime::now(),
            upstream_tls: UpstreamTlsCache::default(),
        })
    }

    /// The routing version in force.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Publishes this server's state to the control API now and after every change.
    pub fn attach_control(&mut self, control: Arc<ControlView>) {
        self.control = Some(control);
        self.publish_control();
    }

    /// Takes an endpoint out of load balancing (`enabled: false`) or puts it back: records the
    /// choice in the control API's state and hands its disabled set in
    /// ([`Server::set_disabled_endpoints`]); returns the version of the new snapshot.
    pub fn set_endpoint(&mut self, upstream: &str, endpoint: SocketAddr, enabled: bool) -> u64 {
        let disabled = match &self.control {
            Some(c) => {
                c.set_endpoint(upstream, endpoint, enabled);
                c.disabled_endpoints()
            }
            None => self.disabled.clone(),
        };
        self.set_disabled_endpoints(disabled)
    }

    /// Installs a snapshot of the current desired state without the endpoints in `disabled`
    /// (they stay out of every later snapshot until handed in again); returns its version.
    pub fn set_disabled_endpoints(&mut self, disabled: DisabledEndpoints) -> u64 {
        self.disabled = disabled;
        self.version += 1;
        let (snapshot, took) = self.build_snapshot();
        self.install(snapshot, took);
        self.version
    }

    /// The desired state of `cfg`: with the last cluster state in Kubernetes mode, from the
    /// configuration's routes and upstreams otherwise.
    fn desired_for(&self, cfg: &Config) -> DesiredState {
        match &self.cluster {
            Some(c) => desired::from_cluster(cfg, &self.base, c),
            None => desired_from_config(cfg, &self.base),
        }
    }

    /// The snapshot of the desired state at the current version (see [`build_snapshot`]);
    /// cluster snapshots keep upstream TLS settings from one to the next.
    fn build_snapshot(&mut self) -> (Snapshot, Duration) {
        let cache = self.cluster.is_some().then_some(&mut self.upstream_tls);
        build_snapshot(
            &self.desired,
            &self.disabled,
            self.version,
            &self.metrics,
            cache,
        )
    }

    /// Swaps a new snapshot in.
    fn install(&mut self, snapshot: Snapshot, took: Duration) {
        self.shared.store(Arc::new(snapshot));
        self.metrics
            .control()
            .routing_table_swapped(self.version, took);
        self.compiled_at = SystemTime::now();
        self.publish_control();
    }

    fn publish_control(&self) {
        if let Some(c) = &self.control {
            let xdp = self.xdp.status();
            let mut state = serde_json::to_value(&xdp).unwrap_or_default();
            if let Some(obj) = state.as_object_mut() {
                let name = if xdp.enabled { "attached" } else { "off" };
                obj.insert("state".to_owned(), serde_json::Value::from(name));
            }
            c.set_xdp_state(state);
            c.publish(
                &self.cfg,
                &self.shared.load(),
                &self.resolver.current(),
                self.compiled_at,
                self.workers.driver().name(),
            );
        }
    }

    /// The address each listener serves, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.workers.local_addrs()
    }

    /// The io driver the workers run.
    pub fn driver(&self) -> DriverKind {
        self.workers.driver()
    }

    /// The XDP fast path (attached or off).
    pub fn xdp(&self) -> &crate::xdp::XdpFilter {
        &self.xdp
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Applies a new configuration without touching open connections: routes, upstreams,
    /// limits and certificates are swapped; restart-required keys that changed are named and
    /// keep their running values. A configuration that fails is rejected whole.
    pub fn reload(&mut self, mut new: Config) -> Result<Vec<config::RestartChange>, StartError> {
        absolutize_paths(&mut new, &self.base);
        let desired = self.desired_for(&new);
        // Kubernetes mode keeps the running default certificate when none is configured.
        let current = self.resolver.current();
        let running_default = self.cluster.is_some().then(|| current.default_cert());
        let store = match build_cert_store(&desired.certificates, running_default) {
            Ok(s) => s,
            Err(e) => {
                self.metrics
                    .control()
                    .config_reloaded(ReloadResult::Failure);
                return Err(e);
            }
        };
        let changes = config::restart_required_changes(&self.cfg, &new);
        for c in &changes {
            tracing::warn!(key = %c.key, change = %c.detail, "restart required: keeping the running value");
        }
        // Keys that need a restart keep their running values.
        new.node = self.cfg.node.clone();
        new.workers = self.cfg.workers;
        new.listeners = self.cfg.listeners.clone();
        new.io_uring = self.cfg.io_uring.clone();
        new.observability = self.cfg.observability.clone();

        self.version += 1;
        self.desired = desired;
        let (snapshot, took) = self.build_snapshot();
        if let Some(a) = &self.access {
            a.set_policy(crate::logging::access_policy(&new, self.metrics.routes()));
        }
        self.xdp.reload(&new.xdp);
        // A later drain gives connections the reloaded deadline.
        self.workers
            .set_stop_grace(new.lifecycle.drain_timeout.get());
        self.cfg = new;
        self.resolver.swap(store);
        self.install(snapshot, took);
        self.metrics
            .control()
            .config_reloaded(ReloadResult::Success);
        Ok(changes)
    }

    /// Installs a state built by the Kubernetes controller (routing model, endpoints, Secret
    /// certificates) without touching open connections, and marks the first sync done.
    /// Returns the new table version.
    pub fn publish(&mut self, state: Arc<ClusterState>) -> Result<u64, StartError> {
        let desired = desired::from_cluster(&self.cfg, &self.base, &state);
        let store = build_cert_store(
            &desired.certificates,
            Some(self.resolver.current().default_cert()),
        )?;
        self.version += 1;
        self.cluster = Some(state);
        self.desired = desired;
        let (snapshot, took) = self.build_snapshot();
        self.resolver.swap(store);
        self.install(snapshot, took);
        self.health.set_first_sync_done(true);
        Ok(self.version)
    }

    /// Stops accepting and lets open connections finish (up to `lifecycle.drain_timeout`).
    pub fn shutdown(self) -> Result<(), StartError> {
        self.begin_drain();
        self.join()
    }

    /// Starts the drain without waiting: `/readyz` turns 503, the workers stop accepting and
    /// wind their connections down (see `proxy::core` for what drain means to a connection).
    pub fn begin_drain(&self) {
        self.health.start_draining();
        self.workers.stop();
    }

    /// Lets workers started paused (inherited sockets) accept: the previous process said "go".
    pub fn resume_accepting(&self) {
        self.workers.resume_accepting();
    }

    /// Waits for the workers to finish (after [`Server::begin_drain`]).
    pub fn join(self) -> Result<(), StartError> {
        self.workers.join()?;
        self.xdp.shutdown();
        Ok(())
    }

    /// Duplicates of every listening socket with its listener name, for an upgrade handoff.
    pub fn listener_sockets(&self) -> std::io::Result<Vec<(Arc<str>, std::net::TcpListener)>> {
        self.workers.listener_sockets()
    }

    /// The workers' heartbeats, for the watchdog.
    pub fn heartbeats(&self) -> Arc<Heartbeats> {
        Arc::clone(self.workers.heartbeats())
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

#[cfg(test)]
mod tests {
    //! The one builder: desired state → snapshot (disabled endpoints left out, unusable TLS
    //! taking an upstream out, the TLS cache begun and swept) and → certificate store.

    use std::path::PathBuf;

    use super::*;
    use crate::desired::{CertPaths, HostCertPaths, SecretCert, Upstream};
    use crate::proxy::core::ConnLimits;
    use crate::proxy::io::PoolLimits;
    use crate::proxy::tls::UpstreamTlsOptions;
    use crate::routing::{Backend, HostRules, RouteModel};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn upstream(name: &str, endpoints: &[&str], tls: Option<UpstreamTlsOptions>) -> Upstream {
        Upstream {
            name: name.into(),
            endpoints: endpoints.iter().map(|a| addr(a)).collect(),
            tls,
            pool: PoolLimits {
                max_idle: 5,
                idle_timeout: Duration::from_secs(6),
                connect_timeout: Duration::from_secs(7),
            },
            read_timeout: Duration::from_secs(8),
            send_timeout: Duration::from_secs(9),
        }
    }

    fn insecure_tls() -> Option<UpstreamTlsOptions> {
        Some(UpstreamTlsOptions {
            server_name: Some("backend.internal".into()),
            verify: false,
            ..UpstreamTlsOptions::default()
        })
    }

    fn desired_state(upstreams: Vec<Upstream>) -> DesiredState {
        let mut routes = RouteModel::default();
        routes.hosts.push(HostRules {
            host: Some("a.example.com".into()),
            default_backend: Some(Backend::upstream("web")),
            ..HostRules::default()
        });
        DesiredState {
            routes,
            upstreams,
            certificates: Certificates::default(),
            limits: ConnLimits {
                max_requests_per_connection: Some(3),
                ..ConnLimits::default()
            },
        }
    }

    fn endpoints(s: &Snapshot, name: &str) -> Vec<SocketAddr> {
        s.upstreams
            .get(name)
            .unwrap_or_else(|| panic!("no upstream {name}"))
            .endpoints
            .clone()
    }

    #[test]
    fn snapshot_of_a_desired_state_without_the_disabled_endpoints() {
        let desired = desired_state(vec![
            upstream("web", &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], None),
            upstream("api", &["10.0.0.2:80"], None),
        ]);
        let mut disabled = DisabledEndpoints::default();
        disabled.set("web", addr("10.0.0.2:80"), false);
        disabled.set("gone", addr("10.0.0.1:80"), false);
        let (snap, _) = build_snapshot(&desired, &disabled, 7, &Metrics::new(), None);
        assert_eq!(snap.table.version(), 7);
        assert_eq!(snap.limits.max_requests_per_connection, Some(3));
        assert_eq!(
            endpoints(&snap, "web"),
            [addr("10.0.0.1:80"), addr("10.0.0.3:80")]
        );
        assert_eq!(
            endpoints(&snap, "api"),
            [addr("10.0.0.2:80")],
            "the same address of another upstream keeps serving"
        );
        let web = snap.upstreams.get("web").expect("web");
        assert_eq!(&*web.name, "web");
        assert_eq!(web.pool.max_idle, 5);
        assert_eq!(web.pool.connect_timeout, Duration::from_secs(7));
        assert_eq!(web.read_timeout, Duration::from_secs(8));
        assert_eq!(web.send_timeout, Duration::from_secs(9));
        assert!(web.tls.is_none());
        assert!(snap.route_ids.contains_key("default-backend"));
        // The desired state is untouched: enabling again serves the endpoint again.
        let (snap, _) = build_snapshot(
            &desired,
            &DisabledEndpoints::default(),
            8,
            &Metrics::new(),
            None,
        );
        assert_eq!(endpoints(&snap, "web").len(), 3);
    }

    #[test]
    fn unusable_tls_settings_take_the_upstream_out_of_service() {
        let desired = desired_state(vec![
            upstream(
                "badca",
                &["127.0.0.1:8443"],
                Some(UpstreamTlsOptions {
                    verify: true,
                    ca: Some(PathBuf::from("/nonexistent/ca.pem")),
                    ..UpstreamTlsOptions::default()
                }),
            ),
            upstream("good", &["127.0.0.1:8443"], insecure_tls()),
        ]);
        let (snap, _) = build_snapshot(
            &desired,
            &DisabledEndpoints::default(),
            1,
            &Metrics::new(),
            None,
        );
        let bad = snap.upstreams.get("badca").expect("badca");
        assert!(bad.tls.is_none());
        assert!(
            bad.endpoints.is_empty(),
            "no traffic rather than plain HTTP"
        );
        let good = snap.upstreams.get("good").expect("good");
        assert_eq!(
            good.tls.as_ref().and_then(|t| t.server_name()),
            Some("backend.internal")
        );
        assert_eq!(good.endpoints, [addr("127.0.0.1:8443")]);
    }

    #[test]
    fn the_tls_cache_keeps_only_what_the_last_build_used() {
        let with_tls = desired_state(vec![upstream("web", &["127.0.0.1:8443"], insecure_tls())]);
        let without = desired_state(vec![upstream("web", &["127.0.0.1:8443"], None)]);
        let none = DisabledEndpoints::default();
        let metrics = Metrics::new();
        let mut cache = UpstreamTlsCache::default();
        build_snapshot(&with_tls, &none, 1, &metrics, None);
        assert!(cache.is_empty(), "standalone builds do not use the cache");
        build_snapshot(&with_tls, &none, 2, &metrics, Some(&mut cache));
        assert_eq!(cache.len(), 1);
        build_snapshot(&with_tls, &none, 3, &metrics, Some(&mut cache));
        assert_eq!(cache.len(), 1, "the same settings are found again");
        build_snapshot(&without, &none, 4, &metrics, Some(&mut cache));
        assert!(cache.is_empty(), "settings no upstream uses are swept");
    }

    fn generated() -> LoadedCert {
        LoadedCert::generate_default().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cert_store_default_is_configured_else_running_else_generated() {
        let running = generated();
        let store = build_cert_store(&Certificates::default(), Some(&running))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(
            store.default_cert().certified_key(),
            running.certified_key()
        ));
        let store =
            build_cert_store(&Certificates::default(), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(
            store.default_cert().certified_key(),
            running.certified_key()
        ));
        assert_eq!(
            store.default_cert().info().origin,
            crate::proxy::tls::CertOrigin::Generated
        );
        let missing = CertPaths {
            cert: PathBuf::from("/nonexistent/c.pem"),
            key: PathBuf::from("/nonexistent/k.pem"),
        };
        let err = build_cert_store(
            &Certificates {
                default: Some(missing.clone()),
                ..Certificates::default()
            },
            Some(&running),
        )
        .expect_err("a configured default that cannot be read fails");
        assert!(
            err.to_string().starts_with("tls.default_certificate: "),
            "{err}"
        );
        let err = build_cert_store(
            &Certificates {
                files: vec![HostCertPaths {
                    hosts: vec!["a.example.com".into()],
                    files: missing,
                }],
                ..Certificates::default()
            },
            None,
        )
        .expect_err("an unreadable certificate file fails");
        assert!(
            err.to_string().starts_with("tls.certificates[0]: "),
            "{err}"
        );
    }

    #[test]
    fn cert_store_skips_a_loaded_certificate_it_refuses() {
        let certs = Certificates {
            loaded: vec![
                // No hosts and no DNS names: refused, logged, skipped.
                SecretCert {
                    hosts: Vec::new(),
                    cert: generated(),
                },
                SecretCert {
                    hosts: vec!["a.example.com".into()],
                    cert: generated(),
                },
            ],
            ..Certificates::default()
        };
        let store = build_cert_store(&certs, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.entries().len(), 1);
        assert_eq!(store.entries()[0].hosts, ["a.example.com"]);
        assert!(store.lookup("a.example.com").is_some());
    }

    fn server_config(upstream_addrs: &[&str]) -> Config {
        let addrs: Vec<String> = upstream_addrs.iter().map(|a| format!("'{a}'")).collect();
        let yaml = format!(
            "node: {{workers: 1}}\n\
             io_uring: {{enabled: false}}\n\
             listeners:\n  - {{name: http, bind: '127.0.0.1:0', protocol: http}}\n\
             upstreams:\n  - {{name: app, addrs: [{}]}}\n\
             routes:\n  - {{path: /, upstream: app}}\n\
             lifecycle: {{drain_timeout: 1s}}\n",
            addrs.join(", ")
        );
        config::parse_str(&yaml, config::Format::Yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn served(server: &Server, name: &str) -> Vec<SocketAddr> {
        endpoints(&server.shared.load(), name)
    }

    fn published(control: &ControlView, name: &str) -> Vec<(SocketAddr, bool)> {
        let p = control.published();
        let u = p
            .upstreams
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no upstream {name} published"));
        u.endpoints
            .iter()
            .map(|e| (e.address, e.disabled))
            .collect()
    }

    /// What the control API disables stays out of every later snapshot — after a reload, and
    /// after a cluster change in Kubernetes mode — until it is enabled again.
    #[test]
    fn disabled_endpoints_stay_out_across_reloads_and_cluster_changes() {
        let (a, b, c) = (
            addr("127.0.0.1:18001"),
            addr("127.0.0.1:18002"),
            addr("127.0.0.1:18003"),
        );
        let dir = std::env::temp_dir();
        let mut server = Server::start(
            server_config(&["127.0.0.1:18001", "127.0.0.1:18002"]),
            &dir,
            Arc::new(Metrics::new()),
            Arc::new(HealthState::new()),
        )
        .unwrap_or_else(|e| panic!("start: {e}"));
        let control = Arc::new(ControlView::new(
            crate::admin::ControlToken::new(None),
            None,
        ));
        server.attach_control(Arc::clone(&control));
        assert_eq!(served(&server, "app"), [a, b]);

        let v = server.set_endpoint("app", b, false);
        assert_eq!(v, 2);
        assert_eq!(server.version(), 2);
        assert_eq!(served(&server, "app"), [a]);
        assert_eq!(published(&control, "app"), [(a, false), (b, true)]);
        assert!(control.disabled_endpoints().contains("app", b));

        // A reload listing the endpoint again keeps it out.
        server
            .reload(server_config(&[
                "127.0.0.1:18001",
                "127.0.0.1:18002",
                "127.0.0.1:18003",
            ]))
            .unwrap_or_else(|e| panic!("reload: {e}"));
        assert_eq!(served(&server, "app"), [a, c]);
        assert_eq!(
            published(&control, "app"),
            [(a, false), (b, true), (c, false)]
        );

        // So does a cluster state (Kubernetes mode) listing it.
        let state = ClusterState {
            model: config::routes::route_model(server.config()),
            upstreams: vec![desired::UpstreamEndpoints {
                name: "app".into(),
                addrs: vec![c, b],
                external: None,
                tls: None,
            }],
            certs: Vec::new(),
        };
        let v = server
            .publish(Arc::new(state))
            .unwrap_or_else(|e| panic!("publish: {e}"));
        assert_eq!(v, 4);
        assert_eq!(served(&server, "app"), [c]);

        // Enabling it builds a snapshot from the same desired state with it back.
        assert_eq!(server.set_endpoint("app", b, true), 5);
        assert_eq!(served(&server, "app"), [c, b]);
        assert_eq!(published(&control, "app"), [(b, false), (c, false)]);
        assert!(control.disabled_endpoints().is_empty());
        server
            .shutdown()
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
    }
}
