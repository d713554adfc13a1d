//! A Kubernetes API server emulator for end-to-end tests: HTTPS on loopback with a generated CA
//! and bearer token, a kubeconfig kube-rs and kubectl use unchanged, discovery for the kinds Arc
//! uses, real list/watch/write semantics over JSON objects, a request record, and fault controls
//! (stop/restart, compaction, delays, injected 500/429).

#![forbid(unsafe_code)]

mod api;
pub mod events;
pub mod ops;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod status;
pub mod store;
pub mod tls;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::ops::WriteCtx;
use self::store::Store;

/// Errors starting or controlling the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Generating the TLS identity failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding or writing files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Seeding the default objects failed.
    #[error("seeding default objects: {0}")]
    Seed(#[from] status::ApiError),
    /// Building a kube client from the kubeconfig failed.
    #[error("building a kube client: {0}")]
    Kube(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmulatorError {
    let context = context.into();
    move |source| EmulatorError::Io { context, source }
}

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Bearer token clients must present; random when `None`.
    pub token: Option<String>,
    /// Number of change events kept for watches and paginated lists; older resourceVersions
    /// answer `410 Expired`.
    pub retained_events: usize,
    /// How often watches that allow bookmarks receive a BOOKMARK event.
    pub bookmark_interval: Duration,
    /// Directory for the kubeconfig; a fresh temporary directory (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// Address to bind; port 0 picks a free port. Must be a loopback address.
    pub bind: SocketAddr,
    /// Namespace of the kubeconfig context.
    pub default_namespace: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            token: None,
            retained_events: 10_000,
            bookmark_interval: Duration::from_secs(60),
            dir: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            default_namespace: "default".to_string(),
        }
    }
}

/// One request as the emulator saw it, in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection; for
    /// non-resource URLs the lower-case HTTP method.
    pub verb: String,
    /// API group (empty for core and non-resource URLs).
    pub group: String,
    /// API version (empty for non-resource URLs).
    pub version: String,
    /// Plural resource (empty for non-resource URLs).
    pub resource: String,
    /// Subresource (`status`) or empty.
    pub subresource: String,
    /// Namespace or empty.
    pub namespace: String,
    /// Object name or empty.
    pub name: String,
    /// Request path without the query.
    pub path: String,
    /// HTTP status answered.
    pub code: u16,
    /// Client `User-Agent`.
    pub user_agent: String,
}

impl RecordedRequest {
    /// Whether this was a request on an API resource (not discovery or health).
    pub fn is_resource(&self) -> bool {
        !self.resource.is_empty()
    }
}

#[derive(Debug, Default)]
struct Faults {
    delay: Duration,
    fail_remaining: u32,
    fail_code: u16,
}

/// State shared by the server tasks and the handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    token: String,
    faults: Mutex<Faults>,
    records: Mutex<Vec<RecordedRequest>>,
    bookmark_ms: AtomicU64,
    end_watches: watch::Sender<u64>,
    addr: SocketAddr,
    identity: tls::Identity,
    server: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn record(&self, r: RecordedRequest) {
        lock(&self.records).push(r);
    }

    /// Takes one injected failure, if armed.
    fn take_fault(&self) -> (Duration, Option<u16>) {
        let mut f = lock(&self.faults);
        let fail = if f.fail_remaining > 0 {
            f.fail_remaining -= 1;
            Some(f.fail_code)
        } else {
            None
        };
        (f.delay, fail)
    }

    fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(self.bookmark_ms.load(Ordering::Relaxed).max(10))
    }
}

async fn bind_with_retry(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    let mut last = None;
    for _ in 0..50 {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(io_err("creating the listening socket"))?;
        socket
            .set_reuseaddr(true)
            .map_err(io_err("setting SO_REUSEADDR"))?;
        match socket.bind(addr).and_then(|()| socket.listen(128)) {
            Ok(l) => return Ok(l),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(EmulatorError::Io {
        context: format!("binding {addr}"),
        source: last.unwrap_or_else(|| std::io::Error::other("bind failed")),
    })
}

fn start_serving(shared: &Arc<Shared>, listener: TcpListener) {
    let task = tokio::spawn(api::serve(shared.clone(), listener));
    if let Some(old) = lock(&shared.server).replace(task) {
        old.abort();
    }
}

async fn stop_serving(shared: &Shared) {
    let task = lock(&shared.server).take();
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
}

/// A running (or stopped) emulator. Dropping it stops the server and removes its temporary
/// directory.
pub struct Emulator {
    shared: Arc<Shared>,
    dir: PathBuf,
    owns_dir: bool,
    kubeconfig_path: PathBuf,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.shared.addr)
            .field("kubeconfig", &self.kubeconfig_path)
            .finish_non_exhaustive()
    }
}

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_token() -> String {
    use rand::Rng;
    let mut b = [0u8; 24];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Emulator {
    /// Starts an emulator with default settings.
    pub async fn start() -> Result<Emulator, EmulatorError> {
        Self::start_with(EmulatorConfig::default()).await
    }

    /// Starts an emulator: generates the CA, binds, seeds the default namespaces and writes the
    /// kubeconfig.
    pub async fn start_with(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        if !config.bind.ip().is_loopback() {
            return Err(EmulatorError::Io {
                context: format!("binding {}", config.bind),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the emulator only listens on loopback addresses",
                ),
            });
        }
        let identity = tls::generate()?;
        let listener = bind_with_retry(config.bind).await?;
        let addr = listener
            .local_addr()
            .map_err(io_err("reading the bound address"))?;
        let token = config.token.clone().unwrap_or_else(random_token);
        let (dir, owns_dir) = match &config.dir {
            Some(d) => (d.clone(), false),
            None => {
                let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
                let d = std::env::temp_dir().join(format!(
                    "arc-kube-emulator-{}-{n}-{}",
                    std::process::id(),
                    addr.port()
                ));
                (d, true)
            }
        };
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let kubeconfig_path = dir.join("kubeconfig");
        let yaml = tls::kubeconfig(addr, &identity.ca_pem, &token, &config.default_namespace);
        std::fs::write(&kubeconfig_path, yaml)
            .map_err(io_err(format!("writing {}", kubeconfig_path.display())))?;
        let mut store = Store::new(config.retained_events);
        seed(&mut store)?;
        let (end_watches, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            token,
            faults: Mutex::new(Faults::default()),
            records: Mutex::new(Vec::new()),
            bookmark_ms: AtomicU64::new(config.bookmark_interval.as_millis() as u64),
            end_watches,
            addr,
            identity,
            server: Mutex::new(None),
        });
        start_serving(&shared, listener);
        Ok(Emulator {
            shared,
            dir,
            owns_dir,
            kubeconfig_path,
        })
    }

    /// Address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// Path of the written kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Directory holding the kubeconfig (usable for test scratch files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// PEM of the CA certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.identity.ca_pem
    }

    /// A kube-rs client configured from the written kubeconfig.
    pub async fn client(&self) -> Result<kube::Client, EmulatorError> {
        crate::kubeconfig::client_from_kubeconfig(&self.kubeconfig_path)
            .await
            .map_err(|e| EmulatorError::Kube(e.to_string()))
    }

    /// Stops serving: the listener closes and every connection (and so every watch) breaks.
    /// Stored objects are kept.
    pub async fn stop(&self) {
        stop_serving(&self.shared).await;
    }

    /// Serves again on the same address after [`Emulator::stop`].
    pub async fn restart(&self) -> Result<(), EmulatorError> {
        stop_serving(&self.shared).await;
        let listener = bind_with_retry(self.shared.addr).await?;
        start_serving(&self.shared, listener);
        Ok(())
    }

    /// Whether the server is currently accepting connections.
    pub fn is_running(&self) -> bool {
        lock(&self.shared.server)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Drops the event history: new watches and exact lists from any resourceVersion issued so
    /// far answer `410 Expired`; running watches continue.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Keeps only the latest `n` events (the window behind `410 Expired`).
    pub fn set_retained_events(&self, n: usize) {
        self.shared.store().set_retained(n);
    }

    /// Ends every open watch cleanly, as a server-side watch timeout would.
    pub fn end_watches(&self) {
        self.shared.end_watches.send_modify(|n| *n += 1);
    }

    /// Delays every subsequent response by `d` (zero turns it off).
    pub fn set_delay(&self, d: Duration) {
        lock(&self.shared.faults).delay = d;
    }

    /// Answers the next `n` requests with `code` (500 → InternalError, 429 → TooManyRequests
    /// with `Retry-After: 1`, others as InternalError with that code).
    pub fn fail_next(&self, n: u32, code: u16) {
        let mut f = lock(&self.shared.faults);
        f.fail_remaining = n;
        f.fail_code = code;
    }

    /// Changes the BOOKMARK interval for watches started afterwards.
    pub fn set_bookmark_interval(&self, d: Duration) {
        self.shared
            .bookmark_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.records).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.records).clear();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().current_rv()
    }

    /// Reads a stored object directly (storage form), bypassing HTTP and the request record.
    pub fn object(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let r = resources::lookup(group, version, plural)?;
        let key = (namespace.unwrap_or("").to_string(), name.to_string());
        self.shared
            .store()
            .get(r.storage, &key)
            .map(|v| (*v).clone())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.shared.server).take() {
            task.abort();
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Creates what every cluster has: the default namespaces.
fn seed(store: &mut Store) -> Result<(), status::ApiError> {
    let ns = resources::namespaces();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let ctx = WriteCtx {
            r: ns,
            namespace: None,
            manager: "kube-apiserver",
            dry_run: false,
            subresource: "",
        };
        ops::create(store, &ctx, json!({"metadata": {"name": name}}), false)?;
    }
    Ok(())
}
