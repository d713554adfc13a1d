//! A kube-rs client from a kubeconfig file, as a user's tool would build it. Its own module
//! because both the test environment ([`crate::env`]) and the emulator ([`crate::emulator`],
//! which writes a kubeconfig for itself) need it, and the environment starts the emulator:
//! the shared piece sits below both.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why no client could be built from a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Reading or interpreting the kubeconfig failed.
    #[error("reading kubeconfig {path}: {message}")]
    Read {
        /// Path read.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The client could not be built from the configuration.
    #[error("building the client: {0}")]
    Client(#[source] kube::Error),
}

/// Builds a kube-rs client from a kubeconfig file, exactly as a user's tool would.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, KubeconfigError> {
    // kube uses the process-wide rustls provider; install ring once (ignored if already set).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = |message: String| KubeconfigError::Read {
        path: path.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(KubeconfigError::Client)
}
