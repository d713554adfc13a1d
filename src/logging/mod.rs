//! Logging: process logs through `tracing` (JSON or text, live level changes), the per-request
//! access log written off the request path, and the outputs both go to (standard output or
//! size-rotated files reopened on SIGUSR1).
//!
//! - [`init`] installs the process subscriber and returns a [`LoggingHandle`] (level reload,
//!   reopen, access target).
//! - [`AccessLog`] runs the access-log writer thread; each worker gets an [`AccessLogger`] and
//!   each connection keeps a [`RequestLog`] filled at the points of an exchange.
//! - [`RotatingFile`] and [`LogTarget`] are the outputs.

#![forbid(unsafe_code)]

pub mod access;
pub mod file;
pub mod process;
pub mod target;

pub use access::{
    AccessLog, AccessLogger, AccessPolicy, AccessRecord, EndpointStats, RequestLog, RouteLatency,
};
pub use file::RotatingFile;
pub use process::{LoggingHandle, init, level_filter};
pub use target::{ACCESS_LOG_FILE, LogTarget, PROCESS_LOG_FILE};

use crate::config::Config;
use crate::metrics::RouteRegistry;

/// Errors of the logging room.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A log file or directory could not be opened (`logging.output.path`).
    #[error("logging.output.path: cannot open {path}: {source}")]
    Open {
        /// The file or directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process-wide subscriber could not be installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
    /// The level could not be changed.
    #[error("cannot change the log level: {0}")]
    Reload(String),
    /// The access-log writer thread could not start.
    #[error("cannot start the access-log writer: {0}")]
    Thread(#[source] std::io::Error),
}

/// The access-log policy of a configuration: `logging.access_log` plus the routes that set
/// `access_log: false` (named as the routing table names them, ids from `routes`).
pub fn access_policy(cfg: &Config, routes: &RouteRegistry) -> AccessPolicy {
    AccessPolicy {
        enabled: cfg.logging.access_log.enabled,
        sample: cfg.logging.access_log.sample.clamp(0.0, 1.0),
        disabled_routes: cfg
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.access_log)
            .map(|(i, _)| routes.intern(&crate::config::routes::route_name(i)))
            .collect(),
    }
}
