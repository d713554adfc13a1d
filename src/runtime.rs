//! Process wiring of a standalone Arc: turns a validated [`Config`] into what the data plane
//! serves (routing snapshot with resolved upstream endpoints, TLS certificate store), starts the
//! worker threads and the admin server, and applies reloads.
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
use crate::logging::AccessLog;
use crate::metrics::{IoDriver, Metrics, ReloadResult};
use crate::proxy::core::{Conn, ConnLimits, SharedSnapshot, Snapshot, UpstreamSpec, WorkerCx};
use crate::proxy::driver::{DriverKind, Tuning};
use crate::proxy::http1;
use crate::proxy::io::{ConnLimit, PoolLimits};
use crate::proxy::listener::{InheritedListener, ListenerSpec};
use crate::proxy::stop::Heartbeats;
use crate::proxy::tls::{CertResolver, CertStore, LoadedCert, TlsAcceptor, TlsAcceptorConfig};
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

/// The per-connection limits of `limits.*`.
pub fn conn_limits(cfg: &Config) -> ConnLimits {
    let l = &cfg.limits;
    ConnLimits {
        codec: http1::Limits {
            max_head: usize::try_from(l.max_head.get()).unwrap_or(usize::MAX),
            max_headers: l.max_headers,
            max_body: l.max_body.map(|b| b.get()),
        },
        header_read_timeout: l.header_read_timeout.get(),
        idle_timeout: l.idle_timeout.get(),
        max_requests_per_connection: l.max_requests_per_connection,
        max_connection_age: l.max_connection_age.map(|d| d.get()),
    }
}

/// Resolves an upstream's endpoints (IP literals as they are, names through DNS). A name that
/// does not resolve is logged and skipped: requests then get 503 instead of the start failing.
pub fn resolve_upstream(u: &config::Upstream, index: usize) -> UpstreamSpec {
    upstream_spec(u, index, upstream_tls(u))
}

/// [`resolve_upstream`] with the upstream's TLS settings already built (or failed to build).
fn upstream_spec(
    u: &config::Upstream,
    index: usize,
    tls: Result<Option<crate::proxy::tls::UpstreamTls>, crate::proxy::tls::UpstreamTlsError>,
) -> UpstreamSpec {
    let mut endpoints = Vec::new();
    for (j, addr) in u.endpoints().into_iter().enumerate() {
        match addr.to_socket_addrs() {
            Ok(found) => {
                for a in found {
                    if !endpoints.contains(&a) {
                        endpoints.push(a);
                    }
                }
            }
            Err(e) => tracing::warn!(
                key = format!("upstreams[{index}].addrs[{j}]"),
                address = addr,
                error = %e,
                "upstream address does not resolve; it gets no traffic"
            ),
        }
    }
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
        pool: PoolLimits {
            max_idle: u.pool.max_idle,
            idle_timeout: u.pool.idle_timeout.get(),
            connect_timeout: u.connect_timeout.get(),
        },
        read_timeout: u.read_timeout.get(),
        send_timeout: u.send_timeout.get(),
    }
}

/// The TLS client settings of `upstreams[].tls`: SNI is `server_name`, else the host of the
/// first address when it is a name (an IP address sends none).
pub fn upstream_tls(
    u: &config::Upstream,
) -> Result<Option<crate::proxy::tls::UpstreamTls>, crate::proxy::tls::UpstreamTlsError> {
    let Some(t) = u.tls.as_ref().filter(|t| t.enabled) else {
        return Ok(None);
    };
    let server_name = t.server_name.clone().or_else(|| {
        let first = u.endpoints().into_iter().next()?;
        let (host, _) = first.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (host.parse::<std::net::IpAddr>().is_err()).then(|| host.to_owned())
    });
    crate::proxy::tls::UpstreamTls::new(&crate::proxy::tls::UpstreamTlsOptions {
        server_name,
        verify: t.verify,
        ca: t.ca.as_ref().map(PathBuf::from),
        ..Default::default()
    })
    .map(Some)
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

/// Compiles the routing snapshot of a configuration.
pub fn build_snapshot(cfg: &Config, version: u64, metrics: &Metrics) -> (Snapshot, Duration) {
    let started = Instant::now();
    let compiled = routing::compile(&config::routes::route_model(cfg), version);
    for p in &compiled.problems {
        tracing::warn!(problem = %p, "route not served");
    }
    let upstreams = cfg
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| resolve_upstream(u, i))
        .collect();
    let snapshot = Snapshot::new(compiled.table, upstreams, conn_limits(cfg))
        .with_route_ids(|n| metrics.routes().intern(n));
    (snapshot, started.elapsed())
}

/// Loads the configured certificates (relative paths from `base`) into a certificate store
/// with the configured or a generated default certificate.
pub fn build_cert_store(cfg: &Config, base: &Path) -> Result<CertStore, StartError> {
    let path = |p: &str| -> PathBuf { base.join(p) };
    let default = match &cfg.tls.default_certificate {
        Some(d) => LoadedCert::from_files(&path(&d.cert), &path(&d.key))
            .map_err(|e| invalid("tls.default_certificate", e.to_string()))?,
        None => LoadedCert::generate_default()
            .map_err(|e| invalid("tls.default_certificate", e.to_string()))?,
    };
    let mut builder = CertStore::builder(default);
    for (i, c) in cfg.tls.certificates.iter().enumerate() {
        builder
            .add_files(&c.hosts, &path(&c.cert), &path(&c.key))
            .map_err(|e| invalid(format!("tls.certificates[{i}]"), e.to_string()))?;
    }
    Ok(builder.build())
}

/// The snapshot of a controller-built state under `cfg`'s limits. Upstream settings (pool,
/// timeouts) come from `upstream_defaults`; `ExternalName` targets resolve through DNS here.
/// Upstream TLS settings come from `tls` when their Secrets did not change since the last
/// snapshot built with it (their sessions stay resumable), and `tls` keeps only what this
/// snapshot uses.
pub fn cluster_snapshot(
    cfg: &Config,
    state: &crate::controller::ClusterState,
    version: u64,
    metrics: &Metrics,
    tls: &mut crate::proxy::tls::UpstreamTlsCache,
) -> (Snapshot, Duration) {
    let started = Instant::now();
    tls.begin();
    let compiled = routing::compile(&state.model, version);
    for p in &compiled.problems {
        tracing::warn!(problem = %p, "route not served");
    }
    let upstreams = state
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let up = cfg.upstream_defaults.upstream(&u.name, &u.addrs);
            let tls = u.tls.as_ref().map(|t| {
                crate::proxy::tls::UpstreamTls::cached(
                    &crate::proxy::tls::UpstreamTlsOptions {
                        server_name: Some(t.server_name.clone()),
                        verify: t.verify,
                        ca: None,
                        ca_pem: t.ca_pem.clone(),
                        client_cert: t.client_cert.clone(),
                        no_sni: !t.sni,
                    },
                    tls,
                )
            });
            upstream_spec(&up, i, tls.transpose())
        })
        .collect();
    tls.sweep();
    let snapshot = Snapshot::new(compiled.table, upstreams, conn_limits(cfg))
        .with_route_ids(|n| metrics.routes().intern(n));
    (snapshot, started.elapsed())
}

/// The configuration's certificate store plus the certificates of the controller's Secrets.
/// `generated` is the running generated default certificate, kept across swaps.
pub fn cluster_cert_store(
    cfg: &Config,
    base: &Path,
    state: &crate::controller::ClusterState,
    generated: &LoadedCert,
) -> Result<CertStore, StartError> {
    let mut builder = CertStore::builder(match &cfg.tls.default_certificate {
        Some(d) => LoadedCert::from_files(&base.join(&d.cert), &base.join(&d.key))
            .map_err(|e| invalid("tls.default_certificate", e.to_string()))?,
        None => generated.clone(),
    });
    for (i, c) in cfg.tls.certificates.iter().enumerate() {
        builder
            .add_files(&c.hosts, &base.join(&c.cert), &base.join(&c.key))
            .map_err(|e| invalid(format!("tls.certificates[{i}]"), e.to_string()))?;
    }
    for c in &state.certs {
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
    cluster: Option<Arc<crate::controller::ClusterState>>,
    /// Access log the workers feed (restart required to add or remove).
    access: Option<Arc<AccessLog>>,
    /// Control API view, republished on every change.
    control: Option<Arc<ControlView>>,
    compiled_at: SystemTime,
    /// Upstream TLS settings of the cluster snapshots, kept from one to the next.
    upstream_tls: std::sync::Mutex<crate::proxy::tls::UpstreamTlsCache>,
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

        let store = build_cert_store(&cfg, base)?;
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
        let (snapshot, took) = build_snapshot(&cfg, version, &metrics);
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
            access,
            control: None,
            compiled_at: SystemTime::now(),
            upstream_tls: std::sync::Mutex::default(),
        })
    }

    /// The routing version in force.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Publishes this server's state to the control API now and after every change; endpoints
    /// the API disabled stay out of the snapshots from now on.
    pub fn attach_control(&mut self, control: Arc<ControlView>) {
        self.control = Some(control);
        self.publish_control();
    }

    /// Takes an endpoint out of load balancing (`enabled: false`) or puts it back, by
    /// publishing a new snapshot; returns its version.
    pub fn set_endpoint(&mut self, upstream: &str, endpoint: SocketAddr, enabled: bool) -> u64 {
        if let Some(c) = &self.control {
            c.set_endpoint(upstream, endpoint, enabled);
        }
        self.version += 1;
        let (snapshot, took) = self.snapshot_for(&self.cfg);
        self.install(snapshot, took);
        self.version
    }

    /// The snapshot of `cfg` at the current version: from the cluster state in Kubernetes
    /// mode, from the configuration's routes otherwise.
    fn snapshot_for(&self, cfg: &Config) -> (Snapshot, Duration) {
        match &self.cluster {
            Some(c) => cluster_snapshot(cfg, c, self.version, &self.metrics, &mut self.tls_cache()),
            None => build_snapshot(cfg, self.version, &self.metrics),
        }
    }

    /// The upstream TLS cache of the cluster snapshots. Only the thread that builds snapshots
    /// takes it; a poisoned lock is taken as it is (the cache is consistent after every call).
    fn tls_cache(&self) -> std::sync::MutexGuard<'_, crate::proxy::tls::UpstreamTlsCache> {
        self.upstream_tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Swaps a new snapshot in (without endpoints the control API disabled).
    fn install(&mut self, mut snapshot: Snapshot, took: Duration) {
        if let Some(c) = &self.control {
            c.filter_snapshot(&mut snapshot);
        }
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
        let result = match &self.cluster {
            Some(c) => {
                cluster_cert_store(&new, &self.base, c, self.resolver.current().default_cert())
            }
            None => build_cert_store(&new, &self.base),
        };
        let store = match result {
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
        let (snapshot, took) = self.snapshot_for(&new);
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
    pub fn publish(
        &mut self,
        state: Arc<crate::controller::ClusterState>,
    ) -> Result<u64, StartError> {
        let store = cluster_cert_store(
            &self.cfg,
            &self.base,
            &state,
            self.resolver.current().default_cert(),
        )?;
        self.version += 1;
        let (snapshot, took) = cluster_snapshot(
            &self.cfg,
            &state,
            self.version,
            &self.metrics,
            &mut self.tls_cache(),
        );
        self.cluster = Some(state);
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
