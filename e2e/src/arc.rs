//! The real `arc-gateway` binary in Kubernetes mode under test: start it against a
//! [`TestEnv`](crate::TestEnv), wait for readiness, read its metrics, send HTTP and HTTPS (SNI)
//! requests to it, and compare recorded API calls with an RBAC file.
//!
//! When the process ends ([`ArcProcess::stop`]) its whole log is checked for secret material
//! ([`crate::secrets`]): private-key armour, every value of every Secret in its namespace (read
//! from the API server then), and the values a test registered with [`ArcProcess::secret`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::emulator::RecordedRequest;
use crate::secrets::Secrets;

/// Errors of the Arc process helpers.
#[derive(Debug, thiserror::Error)]
pub enum ArcError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArcError {
    let context = context.into();
    move |source| ArcError::Io { context, source }
}

/// Path of the `arc-gateway` binary: `ARC_GATEWAY_BIN`, else the workspace's debug build
/// (built once per test process with the `cargo` running the tests).
pub fn arc_binary() -> Result<PathBuf, ArcError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("ARC_GATEWAY_BIN") {
                return Ok(PathBuf::from(p));
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "-q", "-p", "arc-gateway", "--bin", "arc-gateway"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("running cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build of arc-gateway failed: {status}"));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from);
            Ok(target.join("debug").join("arc-gateway"))
        })
        .clone()
        .map_err(ArcError::Failed)
}

fn free_port() -> Result<u16, ArcError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a probe port"))?;
    Ok(l.local_addr().map_err(io("probe address"))?.port())
}

/// A running `arc-gateway` process (killed on drop).
pub struct ArcProcess {
    child: Option<tokio::process::Child>,
    /// Plain-HTTP listener.
    pub http: SocketAddr,
    /// HTTPS listener.
    pub https: SocketAddr,
    /// Admin server (/readyz, /metrics).
    pub admin: SocketAddr,
    dir: PathBuf,
    /// This process's identity (`POD_NAME`).
    pub identity: String,
    kubeconfig: PathBuf,
    namespace: String,
    /// Values the log must not carry besides the namespace's Secrets.
    secrets: Secrets,
    /// Whether the end-of-test log check ran.
    checked: bool,
}

impl ArcProcess {
    /// Starts Arc in Kubernetes mode with its namespace `namespace` (`POD_NAMESPACE`), the
    /// given kubeconfig and extra `kubernetes.*` YAML keys (`key: value, ...`).
    pub async fn start(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        kube_keys: &str,
    ) -> Result<ArcProcess, ArcError> {
        Self::start_with_env(kubeconfig, namespace, identity, kube_keys, &[]).await
    }

    /// [`ArcProcess::start`] with extra environment variables (e.g. `NODE_NAME`, which the
    /// chart sets from the downward API).
    pub async fn start_with_env(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        kube_keys: &str,
        env: &[(&str, &str)],
    ) -> Result<ArcProcess, ArcError> {
        let bin = arc_binary()?;
        let (http, https, admin) = (free_port()?, free_port()?, free_port()?);
        let dir = std::env::temp_dir().join(format!("arc-e2e-{namespace}-{identity}"));
        std::fs::create_dir_all(&dir).map_err(io("creating the temp dir"))?;
        let cfg = format!(
            "node: {{workers: 1}}\n\
             listeners:\n  - {{name: http, bind: '127.0.0.1:{http}', protocol: http}}\n  - {{name: https, bind: '127.0.0.1:{https}', protocol: https}}\n\
             observability: {{metrics_bind: '127.0.0.1:{admin}'}}\n\
             logging: {{level: info, format: text}}\n\
             lifecycle: {{drain_timeout: 1s}}\n\
             kubernetes: {{enabled: true, debounce: 50ms, {kube_keys}}}\n"
        );
        let cfg_path = dir.join("arc.yaml");
        std::fs::write(&cfg_path, cfg).map_err(io("writing the config"))?;
        let log = std::fs::File::create(dir.join("arc.log")).map_err(io("creating the log"))?;
        let log2 = log.try_clone().map_err(io("cloning the log"))?;
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&cfg_path)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", identity)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(io("starting arc-gateway"))?;
        Ok(ArcProcess {
            child: Some(child),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            https: SocketAddr::from(([127, 0, 0, 1], https)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            dir,
            identity: identity.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: namespace.to_string(),
            secrets: Secrets::new(),
            checked: false,
        })
    }

    /// Registers a secret value the log must never carry (the namespace's Secrets are read at
    /// [`ArcProcess::stop`] anyway): e.g. a token presented to the control API.
    pub fn secret(&mut self, what: &str, value: &str) {
        self.secrets.add(what, value.as_bytes(), true);
    }

    /// The end-of-test check: the log carries no private-key armour, no value of any Secret of
    /// the namespace, no registered value. Panics naming the leaks, or when the Secrets cannot
    /// be read (the check is never skipped silently).
    pub async fn check_log(&mut self) {
        let mut secrets = self.secrets.clone();
        let listed = async {
            let client = crate::kubeconfig::client_from_kubeconfig(&self.kubeconfig)
                .await
                .map_err(|e| e.to_string())?;
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(client, &self.namespace);
            api.list(&Default::default())
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(10), listed).await {
            Ok(Ok(list)) => list.items.iter().for_each(|s| secrets.add_secret(s)),
            Ok(Err(e)) => panic!(
                "log check of arc {}: cannot list the Secrets of {}: {e}",
                self.identity, self.namespace
            ),
            Err(_) => panic!(
                "log check of arc {}: listing the Secrets of {} timed out",
                self.identity, self.namespace
            ),
        }
        self.checked = true;
        secrets.assert_clean(&format!("the log of arc {}", self.identity), &self.log());
    }

    /// The process's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("arc.log")).unwrap_or_default()
    }

    /// `/readyz` status code, if the admin server answers.
    pub async fn readyz(&self) -> Option<u16> {
        get(self.admin, "localhost", "/readyz", &[])
            .await
            .ok()
            .map(|r| r.status)
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), ArcError> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.readyz().await == Some(200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ArcError::Failed(format!(
            "arc {} not ready within {limit:?}; log:\n{}",
            self.identity,
            self.log()
        )))
    }

    /// The value of the metric sample `name` (exact sample name incl. labels), if exported.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let r = get(self.admin, "localhost", "/metrics", &[]).await.ok()?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
    }

    /// SIGTERM, then waits (bounded) for the exit; then [`ArcProcess::check_log`].
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if !std::thread::panicking() {
            self.check_log().await;
        }
    }
}

impl Drop for ArcProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        // Not stopped through `stop`: what can be checked without the API server.
        let log = self.log();
        let _ = std::fs::remove_dir_all(&self.dir);
        if !self.checked && !std::thread::panicking() {
            self.secrets
                .assert_clean(&format!("the log of arc {}", self.identity), &log);
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Which echo backend answered (`x-backend`).
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }
}

fn parse_response(raw: &[u8]) -> Result<Response, ArcError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ArcError::Failed(format!("no response head in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default()).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ArcError::Failed(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw.get(split + 4..).unwrap_or_default().to_vec(),
    })
}

fn request_bytes(host: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// One `GET` over plain HTTP (connection closed after it), bounded to 5 s.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Response, ArcError> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.map_err(io("connect"))?;
        s.write_all(&request_bytes(host, path, extra))
            .await
            .map_err(io("write"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(io("read"))?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| ArcError::Failed(format!("GET {host}{path}: timed out")))?
}

/// Accepts any server certificate and remembers the leaf it was shown.
#[derive(Debug)]
struct Capture {
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(end_entity.to_vec());
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One `GET` over HTTPS with SNI `host`; returns the response and the DER of the leaf
/// certificate the server presented.
pub async fn get_tls(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(Response, Vec<u8>), ArcError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(Capture {
        seen: Mutex::new(None),
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ArcError::Failed(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ArcError::Failed(e.to_string()))?;
    let fut = async {
        let tcp = TcpStream::connect(addr).await.map_err(io("connect"))?;
        let mut s = connector
            .connect(name, tcp)
            .await
            .map_err(io("TLS handshake"))?;
        s.write_all(&request_bytes(host, path, &[]))
            .await
            .map_err(io("write"))?;
        let mut raw = Vec::new();
        // A peer closing without close_notify is fine for this check.
        let _ = s.read_to_end(&mut raw).await;
        parse_response(&raw)
    };
    let resp = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| ArcError::Failed(format!("GET https://{host}{path}: timed out")))??;
    let cert = capture
        .seen
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .ok_or_else(|| ArcError::Failed("no certificate seen".into()))?;
    Ok((resp, cert))
}

/// One RBAC rule: API groups, resources (`res/sub` for subresources), verbs; `namespace` set
/// for the rules of a Role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacRule {
    pub namespace: Option<String>,
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

/// Reads the ClusterRole and Role rules of a manifest with several YAML documents.
pub fn read_rbac(yaml: &str) -> Result<Vec<RbacRule>, ArcError> {
    use serde::Deserialize;
    let mut rules = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = serde_json::Value::deserialize(doc)
            .map_err(|e| ArcError::Failed(format!("RBAC YAML: {e}")))?;
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let namespace = (kind == "Role").then(|| {
            v.pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
                .unwrap_or("default")
                .to_string()
        });
        let strings = |r: &serde_json::Value, key: &str| -> Vec<String> {
            r.get(key)
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        for r in v
            .get("rules")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
        {
            rules.push(RbacRule {
                namespace: namespace.clone(),
                groups: strings(r, "apiGroups"),
                resources: strings(r, "resources"),
                verbs: strings(r, "verbs"),
            });
        }
    }
    Ok(rules)
}

/// The resource name RBAC sees for a request (`ingresses/status`).
pub fn rbac_resource(r: &RecordedRequest) -> String {
    if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    }
}

/// Whether `rules` allow request `r`, with `own_ns` standing for the Role's namespace.
pub fn allowed(rules: &[RbacRule], r: &RecordedRequest, own_ns: &str) -> bool {
    let res = rbac_resource(r);
    rules.iter().any(|rule| {
        let ns_ok = match &rule.namespace {
            None => true,
            Some(_) => r.namespace == own_ns,
        };
        ns_ok
            && rule.groups.iter().any(|g| g == &r.group)
            && rule.resources.iter().any(|x| x == &res)
            && rule.verbs.iter().any(|v| v == &r.verb)
    })
}
