//! The Kubernetes controller: watches the cluster, translates it into Arc's routing model and
//! hands the result to the data plane; writes Events, Ingress status (as leader) and exposes the
//! control-plane token.
//!
//! Shape: one kube-runtime reflector (watcher + store) per watched kind and namespace scope;
//! every watch event wakes one debounced task (`kubernetes.debounce`, 100 ms by default) that
//! rebuilds everything from the stores through [`translate::translate`] — the only code turning
//! Kubernetes objects into the routing model — and publishes a [`ClusterState`] on a watch
//! channel. The process loop installs it with `runtime::Server::publish` (no restart, no
//! reload). Nothing is published before every store has listed once, so `/readyz` waits for the
//! first complete table. Watchers retry with backoff and re-list on `410 Gone`; stores keep
//! their content meanwhile, so the last table keeps serving while the API server is away.
//!
//! What is watched (least privilege; see `deploy/kubernetes/02-rbac.yaml`):
//! - Ingress, Service, EndpointSlice in all namespaces or each of `kubernetes.watch_namespaces`;
//!   IngressClass cluster-wide;
//! - Secrets with `fieldSelector=type=kubernetes.io/tls` and, for `proxy-ssl-secret` CA bundles,
//!   `fieldSelector=type=Opaque` (same scopes), and the Secret `arc-gateway-secret` by
//!   `metadata.name` in Arc's own namespace;
//! - the ConfigMap `arc-gateway-config` by `metadata.name` in Arc's own namespace;
//! - not watched: Nodes, read one by one (`get`) only for a NodePort `publish_service` (see
//!   [`status`]).
//!
//! Decisions of Kubernetes mode:
//! - Routes come from Ingresses only. The config file's `routes[]` / `upstreams[]` are rejected
//!   in Kubernetes mode (validation and ConfigMap alike): serving two sources of routes with two
//!   precedence rules would surprise more than it helps. `tls.certificates` of the file still
//!   apply; Secrets add to them.
//! - The ConfigMap (`arc.toml`, else `arc.yaml`) replaces the file's configuration except
//!   `kubernetes.*` and the restart-required keys, which the file bootstraps. When the ConfigMap
//!   goes away the file's configuration applies again. A ConfigMap whose
//!   `control_plane.auth_token` differs from the Secret's `auth-token` is rejected whole (Event
//!   on the ConfigMap, log line); the placeholder `__ARC_TOKEN__` is refused anywhere.
//! - IngressClass, annotations, conflicts and TLS rules: see [`translate`].
//! - SIGHUP re-reads the `--config` file for its bootstrap part only while a ConfigMap is in
//!   force.
//! - `arc-gateway.io/backend-protocol: HTTPS` makes the Ingress's backends HTTPS upstreams
//!   (SNI = the Service host name, certificate not verified, see [`translate`]); `*-snippet`
//!   annotations refuse their Ingress.
//! - `ExternalName` targets are resolved (async DNS, 2 s bound) at each recompile.
//! - `translate` validates Secret certificates with the TLS room's public loader
//!   (`proxy::tls::LoadedCert`), so a bad Secret is reported on its Ingress before it reaches
//!   the data plane; nothing else of the proxy is used here.
//! - Events and Ingress status are written only by the leader of the `kubernetes.election_id`
//!   Lease (every replica sees the same objects, so one report each is enough).

#![forbid(unsafe_code)]

pub mod events;
pub mod leader;
pub mod status;
pub mod translate;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use crate::config::{self, Config, Format};
/// The controller's metrics, registered by the caller before [`start`].
pub use crate::metrics::kube::KubeMetrics;

/// What the controller publishes (kube-free; the data plane turns it into desired state).
pub use crate::desired::ClusterState;
pub use translate::{ClassSettings, Inputs, SecretCert, Translation, UpstreamEndpoints};

/// Name of the Secret holding the control-plane token.
pub const TOKEN_SECRET: &str = "arc-gateway-secret";
/// Key of the token in [`TOKEN_SECRET`].
pub const TOKEN_KEY: &str = "auth-token";
/// Name of the ConfigMap holding the global configuration.
pub const CONFIG_MAP: &str = "arc-gateway-config";
/// `User-Agent` of Arc's API calls.
pub const USER_AGENT: &str = concat!("arc-gateway/", env!("CARGO_PKG_VERSION"));
/// Arc's namespace when nothing else says.
pub const DEFAULT_NAMESPACE: &str = "arc-gateway";
const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Errors starting the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (in-cluster or KUBECONFIG): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error(
        "Secret {namespace}/{TOKEN_SECRET} key {TOKEN_KEY}: the placeholder {placeholder} must be replaced by a real value (for example `openssl rand -hex 32`)",
        placeholder = config::TOKEN_PLACEHOLDER
    )]
    PlaceholderToken { namespace: String },
}

/// Arc's own namespace: `POD_NAMESPACE`, else the service-account file, else `arc-gateway`.
pub fn own_namespace() -> String {
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.trim().is_empty()
    {
        return ns.trim().to_string();
    }
    match std::fs::read_to_string(SA_NAMESPACE_FILE) {
        Ok(ns) if !ns.trim().is_empty() => ns.trim().to_string(),
        _ => DEFAULT_NAMESPACE.to_string(),
    }
}

/// The node this replica runs on: `NODE_NAME` (the chart sets it from `spec.nodeName` through
/// the downward API), `None` outside a cluster.
pub fn own_node() -> Option<String> {
    std::env::var("NODE_NAME")
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
}

/// This replica's identity for leader election and Events: `POD_NAME`, else host name + pid.
pub fn own_identity() -> String {
    if let Ok(n) = std::env::var("POD_NAME")
        && !n.trim().is_empty()
    {
        return n.trim().to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "arc".into());
    format!("{host}-{}", std::process::id())
}

/// Builds a client from `--kubeconfig`, else `KUBECONFIG` / in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ControllerError> {
    let cfg = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|source| {
                ControllerError::Kubeconfig {
                    path: p.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ControllerError::Kubeconfig {
                    path: p.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    let mut cfg = cfg;
    // Names Arc in the API server's audit log and request records.
    cfg.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(USER_AGENT),
    ));
    Ok(Client::try_from(cfg)?)
}

/// Inputs of [`start`].
pub struct Settings {
    /// Arc's namespace (ConfigMap, token Secret, Lease).
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// The configuration from `--config` (bootstraps `kubernetes.*`).
    pub bootstrap: Config,
    /// The node this replica runs on ([`own_node`]); its address is published for a NodePort
    /// `publish_service`.
    pub node: Option<String>,
}

/// What the process loop receives from the controller.
pub enum Update {
    /// A new state to install.
    Cluster(Arc<ClusterState>),
    /// A new configuration to apply like SIGHUP does.
    Config(Arc<Config>),
}

/// A running controller.
pub struct ControllerHandle {
    state: watch::Receiver<Option<Arc<ClusterState>>>,
    config: watch::Receiver<Option<(Arc<Config>, bool)>>,
    token: watch::Receiver<Option<String>>,
    stop: watch::Sender<bool>,
    elector: Option<leader::LeaderElector>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ControllerHandle {
    /// The control-plane token from Secret `arc-gateway-secret` key `auth-token` (`None` while
    /// absent or refused).
    pub fn token(&self) -> watch::Receiver<Option<String>> {
        self.token.clone()
    }

    /// Waits for the next update; pends forever once the controller stopped.
    pub async fn next(&mut self) -> Update {
        loop {
            tokio::select! {
                r = self.state.changed() => {
                    if r.is_err() { std::future::pending::<()>().await; }
                    if let Some(s) = self.state.borrow_and_update().clone() {
                        return Update::Cluster(s);
                    }
                }
                r = self.config.changed() => {
                    if r.is_err() { std::future::pending::<()>().await; }
                    if let Some((c, _)) = self.config.borrow_and_update().clone() {
                        return Update::Config(c);
                    }
                }
            }
        }
    }

    /// What a SIGHUP should apply given the re-read `file`: the ConfigMap's configuration while
    /// one is in force (the file then only bootstraps), else the file.
    pub fn effective_config(&self, file: Config) -> Config {
        match self.config.borrow().as_ref() {
            Some((cm, true)) => {
                let mut cfg = (**cm).clone();
                cfg.kubernetes = file.kubernetes;
                cfg
            }
            _ => file,
        }
    }

    /// Stops the watchers and hands the Lease back.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(e) = self.elector
            && let Err(err) = e.release().await
        {
            tracing::warn!(error = %err, "cannot release the leader Lease");
        }
    }
}

/// Shared between the watch tasks and the debounce task.
struct Shared {
    changed: Notify,
    unsynced: AtomicUsize,
    metrics: KubeMetrics,
}

fn spawn_watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    kind: &'static str,
    shared: &Arc<Shared>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    shared.unsynced.fetch_add(1, Ordering::AcqRel);
    let shared = Arc::clone(shared);
    tasks.push(tokio::spawn(async move {
        let mut synced = false;
        let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    if !synced {
                        synced = true;
                        shared.unsynced.fetch_sub(1, Ordering::AcqRel);
                        tracing::info!(kind, "watch synced");
                    } else {
                        tracing::info!(kind, "watch re-listed and resynced");
                    }
                    shared.metrics.watch_event(kind);
                    shared.changed.notify_one();
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    shared.metrics.watch_event(kind);
                    shared.changed.notify_one();
                }
                Err(e) => {
                    shared.metrics.watch_error(kind);
                    tracing::warn!(kind, error = %e, "watch failed; retrying");
                }
            }
        }
    }));
    reader
}

/// The stores of every watched kind (several per kind when namespaces are listed).
struct Stores {
    ingresses: Vec<Store<Ingress>>,
    classes: Store<IngressClass>,
    services: Vec<Store<Service>>,
    slices: Vec<Store<EndpointSlice>>,
    secrets: Vec<Store<Secret>>,
    token: Store<Secret>,
    config: Store<ConfigMap>,
}

impl Stores {
    fn inputs(&self) -> Inputs {
        fn all<K: kube::Resource<DynamicType = ()> + Clone>(s: &[Store<K>]) -> Vec<Arc<K>> {
            s.iter().flat_map(Store::state).collect()
        }
        Inputs {
            ingresses: all(&self.ingresses),
            classes: self.classes.state(),
            services: all(&self.services),
            slices: all(&self.slices),
            secrets: all(&self.secrets),
        }
    }
}

/// Starts the watchers, the debounced recompile and the leader election on the current tokio
/// runtime.
pub fn start(client: Client, settings: Settings, metrics: KubeMetrics) -> ControllerHandle {
    let kube_cfg = settings.bootstrap.kubernetes.clone();
    let shared = Arc::new(Shared {
        changed: Notify::new(),
        unsynced: AtomicUsize::new(0),
        metrics,
    });
    let mut tasks = Vec::new();
    let scopes: Vec<Option<String>> = if kube_cfg.watch_namespaces.is_empty() {
        vec![None]
    } else {
        kube_cfg
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let plain = watcher::Config::default;
    let mut stores = Stores {
        ingresses: Vec::new(),
        classes: spawn_watch(
            Api::all(client.clone()),
            plain(),
            "IngressClass",
            &shared,
            &mut tasks,
        ),
        services: Vec::new(),
        slices: Vec::new(),
        secrets: Vec::new(),
        token: spawn_watch(
            Api::namespaced(client.clone(), &settings.namespace),
            plain().fields(&format!("metadata.name={TOKEN_SECRET}")),
            "Secret",
            &shared,
            &mut tasks,
        ),
        config: spawn_watch(
            Api::namespaced(client.clone(), &settings.namespace),
            plain().fields(&format!("metadata.name={CONFIG_MAP}")),
            "ConfigMap",
            &shared,
            &mut tasks,
        ),
    };
    for ns in &scopes {
        stores.ingresses.push(spawn_watch(
            api(&client, ns),
            plain(),
            "Ingress",
            &shared,
            &mut tasks,
        ));
        stores.services.push(spawn_watch(
            api(&client, ns),
            plain(),
            "Service",
            &shared,
            &mut tasks,
        ));
        stores.slices.push(spawn_watch(
            api(&client, ns),
            plain(),
            "EndpointSlice",
            &shared,
            &mut tasks,
        ));
        for kind in ["type=kubernetes.io/tls", "type=Opaque"] {
            stores.secrets.push(spawn_watch(
                api(&client, ns),
                plain().fields(kind),
                "Secret",
                &shared,
                &mut tasks,
            ));
        }
    }

    let (state_tx, state_rx) = watch::channel(None);
    let (config_tx, config_rx) = watch::channel(None);
    let (token_tx, token_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (leader_tx, leader_rx) = watch::channel(false);

    let elector = leader::LeaderElector::new(
        Api::namespaced(client.clone(), &settings.namespace),
        &kube_cfg.election_id,
        &settings.identity,
        15,
    );
    tasks.push(tokio::spawn(run_election(
        elector.clone(),
        leader_tx,
        Arc::clone(&shared),
    )));

    let worker = Recompiler {
        client,
        stores,
        shared,
        settings,
        state_tx,
        config_tx,
        token_tx,
        leader: leader_rx,
        last_config_text: None,
        events: None,
        nodes: status::NodeCache::default(),
        last_status: None,
    };
    tasks.push(tokio::spawn(worker.run(stop_rx)));

    ControllerHandle {
        state: state_rx,
        config: config_rx,
        token: token_rx,
        stop: stop_tx,
        elector: Some(elector),
        tasks,
    }
}

async fn run_election(
    elector: leader::LeaderElector,
    tx: watch::Sender<bool>,
    shared: Arc<Shared>,
) {
    let mut leading = false;
    loop {
        let now = k8s_openapi::jiff::Timestamp::now();
        let result = elector.try_acquire_or_renew(now).await;
        let now_leading = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "leader election round failed");
                // Without a successful renewal we cannot know we still lead: stop writing.
                false
            }
        };
        if now_leading != leading {
            leading = now_leading;
            tracing::info!(
                identity = elector.identity(),
                leader = leading,
                "leadership changed"
            );
            shared.metrics.set_leader(leading);
            let _ = tx.send(leading);
            shared.changed.notify_one();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

struct Recompiler {
    client: Client,
    stores: Stores,
    shared: Arc<Shared>,
    settings: Settings,
    state_tx: watch::Sender<Option<Arc<ClusterState>>>,
    config_tx: watch::Sender<Option<(Arc<Config>, bool)>>,
    token_tx: watch::Sender<Option<String>>,
    leader: watch::Receiver<bool>,
    last_config_text: Option<Option<(String, Format)>>,
    events: Option<events::EventSink>,
    nodes: status::NodeCache,
    last_status: Option<Vec<k8s_openapi::api::networking::v1::IngressLoadBalancerIngress>>,
}

impl Recompiler {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let debounce = self.settings.bootstrap.kubernetes.debounce.get();
        self.events = Some(events::EventSink::new(
            self.client.clone(),
            &self.settings.identity,
        ));
        loop {
            tokio::select! {
                _ = self.shared.changed.notified() => {}
                _ = stop.changed() => return,
            }
            tokio::time::sleep(debounce).await;
            if self.shared.unsynced.load(Ordering::Acquire) > 0 {
                continue;
            }
            self.recompile().await;
        }
    }

    async fn recompile(&mut self) {
        let kube_cfg = &self.settings.bootstrap.kubernetes;
        let settings = ClassSettings {
            controller_name: kube_cfg.controller_name.clone(),
            ingress_class: kube_cfg.ingress_class.clone(),
        };
        let inputs = self.stores.inputs();
        let started = Instant::now();
        let t = translate::translate(&inputs, &settings);
        self.shared.metrics.translated(started.elapsed());
        self.shared.metrics.set_invalid_objects(t.invalid_objects());
        for p in &t.problems {
            tracing::warn!(object = %p.object, reason = p.reason, problem = %p.message, "kubernetes object problem");
        }
        let upstreams = resolve_names(t.upstreams).await;
        let _ = self.state_tx.send(Some(Arc::new(ClusterState {
            model: t.model,
            upstreams,
            certs: t.certs,
        })));
        let mut problems = t.problems;

        let token = self.token();
        self.token_tx.send_if_modified(|cur| {
            if *cur == token {
                false
            } else {
                *cur = token.clone();
                true
            }
        });
        if let Some(p) = self.apply_config_map(token.as_deref()) {
            problems.push(p);
        }
        // Every replica sees the same objects: only the leader reports them, so each problem
        // gets one Event, not one per replica. A replica that stops leading forgets what it
        // said, so it reports the current problems again if it leads later (a leadership
        // change triggers a recompile).
        let leading = *self.leader.borrow();
        if let Some(sink) = self.events.as_mut() {
            if leading {
                sink.publish(&problems).await;
            } else {
                sink.forget();
            }
        }
        if leading {
            self.write_status(&t.served, &inputs).await;
        }
    }

    fn token(&self) -> Option<String> {
        let secret = self.stores.token.state().into_iter().next()?;
        token_from_secret(&secret)
    }

    /// Applies a changed ConfigMap; returns a problem when it is rejected.
    fn apply_config_map(&mut self, token: Option<&str>) -> Option<translate::Problem> {
        let cm = self.stores.config.state().into_iter().next();
        let text = cm.as_ref().and_then(|cm| {
            let data = cm.data.as_ref()?;
            data.get("arc.toml")
                .map(|t| (t.clone(), Format::Toml))
                .or_else(|| data.get("arc.yaml").map(|t| (t.clone(), Format::Yaml)))
        });
        let first = self.last_config_text.is_none();
        if self.last_config_text.as_ref() == Some(&text) {
            return None;
        }
        self.last_config_text = Some(text.clone());
        let Some((text, format)) = text else {
            if !first {
                tracing::info!("ConfigMap {CONFIG_MAP} gone; the --config file applies again");
                let _ = self
                    .config_tx
                    .send(Some((Arc::new(self.settings.bootstrap.clone()), false)));
            }
            return None;
        };
        let cm = cm?;
        let reject = |message: String| {
            tracing::error!(configmap = CONFIG_MAP, problem = %message, "configuration rejected; the old one keeps serving");
            Some(translate::Problem {
                object: translate::object_key("ConfigMap", &cm.metadata),
                severity: translate::Severity::Invalid,
                reason: "ConfigRejected",
                message,
            })
        };
        let origin = format!("configmap {}/{CONFIG_MAP}", self.settings.namespace);
        match merge_config_map(&self.settings.bootstrap, &text, format, &origin, token) {
            Ok(cfg) => {
                tracing::info!("ConfigMap {CONFIG_MAP} applied");
                let _ = self.config_tx.send(Some((Arc::new(cfg), true)));
                None
            }
            Err(message) => reject(message),
        }
    }

    async fn write_status(&mut self, served: &[Arc<Ingress>], inputs: &Inputs) {
        let kube_cfg = &self.settings.bootstrap.kubernetes;
        let fixed = &kube_cfg.publish_status_address;
        let svc = match kube_cfg.publish_service.as_deref() {
            Some(ps) if fixed.is_empty() => {
                let Some((ns, name)) = ps.split_once('/') else {
                    return;
                };
                let found = inputs.services.iter().find(|s| {
                    s.metadata.namespace.as_deref() == Some(ns)
                        && s.metadata.name.as_deref() == Some(name)
                });
                if found.is_none() {
                    tracing::warn!(publish_service = %ps, "publish service not found; no status written");
                    return;
                }
                found.cloned()
            }
            Some(_) => None,
            None if fixed.is_empty() => return,
            None => None,
        };
        let mut node_addrs = Vec::new();
        if let Some(svc) = svc.as_deref()
            && status::needs_nodes(svc)
        {
            let names = status::arc_nodes(svc, &inputs.slices, self.settings.node.as_deref());
            node_addrs = self
                .nodes
                .addresses(&self.client, &names, Instant::now())
                .await;
        }
        let want = status::choose_addresses(fixed, svc.as_deref(), &node_addrs);
        if self.last_status.as_ref() != Some(&want) {
            tracing::info!(addresses = ?status::shown(&want), nodes = ?node_addrs, "Ingress status addresses");
            self.last_status = Some(want.clone());
        }
        let is_served = |i: &Ingress| {
            served.iter().any(|s| {
                s.metadata.namespace == i.metadata.namespace && s.metadata.name == i.metadata.name
            })
        };
        for ing in &inputs.ingresses {
            if want.is_empty() || is_served(ing) || !status::status_matches(ing, &want) {
                continue;
            }
            match status::write_status(self.client.clone(), ing, &[]).await {
                Ok(()) => self.shared.metrics.status_written(),
                Err(e) => tracing::warn!(error = %e, "cannot clear Ingress status"),
            }
        }
        for ing in served {
            if status::status_matches(ing, &want) {
                continue;
            }
            match status::write_status(self.client.clone(), ing, &want).await {
                Ok(()) => self.shared.metrics.status_written(),
                Err(e) => tracing::warn!(
                    ingress = %format!("{}/{}", ing.metadata.namespace.as_deref().unwrap_or(""), ing.metadata.name.as_deref().unwrap_or("")),
                    error = %e,
                    "cannot write Ingress status"
                ),
            }
        }
    }
}

/// Resolves `ExternalName` targets through DNS here, on the async runtime, so the data plane
/// receives addresses only. A name that does not resolve within 2 s keeps no endpoints (503)
/// and is logged; it is resolved again at the next recompile.
async fn resolve_names(mut upstreams: Vec<UpstreamEndpoints>) -> Vec<UpstreamEndpoints> {
    for u in &mut upstreams {
        let Some(target) = &u.external else {
            continue;
        };
        let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
        match tokio::time::timeout(Duration::from_secs(2), lookup).await {
            Ok(Ok(found)) => u.addrs.extend(found),
            Ok(Err(e)) => {
                tracing::warn!(upstream = %u.name, target = %target, error = %e, "ExternalName does not resolve")
            }
            Err(_) => {
                tracing::warn!(upstream = %u.name, target = %target, "ExternalName resolution timed out")
            }
        }
        u.addrs.sort();
        u.addrs.dedup();
    }
    upstreams
}

/// The control-plane token of Secret `arc-gateway-secret` (key `auth-token`, trimmed); `None`
/// when absent, empty, not UTF-8, or the placeholder `__ARC_TOKEN__` (refused, logged).
pub fn token_from_secret(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let token = std::str::from_utf8(&raw.0).ok()?.trim().to_string();
    if token.is_empty() {
        return None;
    }
    if token.contains(config::TOKEN_PLACEHOLDER) {
        tracing::error!(
            secret = TOKEN_SECRET,
            "the control-plane token is the placeholder {}; refused",
            config::TOKEN_PLACEHOLDER
        );
        return None;
    }
    Some(token)
}

/// Refuses to start while Secret `arc-gateway-secret` in `namespace` holds the placeholder
/// `__ARC_TOKEN__` (SPEC §6: the plain manifests were applied unedited). A missing Secret or
/// one that cannot be read is not refused here: the control API then stays off until a real
/// token appears, as the controller's watch decides.
pub async fn refuse_placeholder_token(
    client: &Client,
    namespace: &str,
) -> Result<(), ControllerError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(TOKEN_SECRET).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(secret = TOKEN_SECRET, namespace, error = %e, "cannot read the token Secret at start");
            return Ok(());
        }
    };
    if secret.as_ref().is_some_and(holds_placeholder_token) {
        return Err(ControllerError::PlaceholderToken {
            namespace: namespace.to_string(),
        });
    }
    Ok(())
}

/// Whether the Secret's `auth-token` is (or contains) the placeholder.
fn holds_placeholder_token(secret: &Secret) -> bool {
    let raw = secret.data.as_ref().and_then(|d| d.get(TOKEN_KEY));
    raw.and_then(|r| std::str::from_utf8(&r.0).ok())
        .is_some_and(|t| t.contains(config::TOKEN_PLACEHOLDER))
}

/// The effective configuration from the ConfigMap text: parsed and validated, with
/// `kubernetes.*` from the bootstrap file, no `routes`/`upstreams`, and a token that matches the
/// Secret's.
pub fn merge_config_map(
    bootstrap: &Config,
    text: &str,
    format: Format,
    origin: &str,
    secret_token: Option<&str>,
) -> Result<Config, String> {
    if text.contains(config::TOKEN_PLACEHOLDER) {
        return Err(format!(
            "{origin}: the placeholder {} is refused",
            config::TOKEN_PLACEHOLDER
        ));
    }
    let mut cfg = config::parse_str(text, format, origin).map_err(|e| e.to_string())?;
    if !cfg.routes.is_empty() || !cfg.upstreams.is_empty() {
        return Err(format!(
            "{origin}: routes/upstreams are not served in Kubernetes mode; routes come from Ingress objects"
        ));
    }
    if let Some(t) = cfg.control_plane.auth_token.as_deref()
        && secret_token != Some(t)
    {
        return Err(format!(
            "{origin}: control_plane.auth_token differs from Secret {TOKEN_SECRET} key {TOKEN_KEY}"
        ));
    }
    cfg.kubernetes = bootstrap.kubernetes.clone();
    Ok(cfg)
}
