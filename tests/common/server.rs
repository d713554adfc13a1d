//! Arc's data plane started in-process from a YAML configuration (`runtime::Server`), as the
//! end-to-end tests on loopback run it, and stopped when the handle is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_gateway::admin::HealthState;
use arc_gateway::config::{self, Format};
use arc_gateway::metrics::Metrics;
use arc_gateway::runtime::Server;

use super::Driver;

/// A running in-process Arc; dropping it shuts the server down and removes its directory.
pub struct Running {
    /// `Some` until dropped (tests reload or publish through it).
    pub server: Option<Server>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<HealthState>,
    /// Relative paths in the configuration resolve here; removed on drop when owned.
    pub dir: PathBuf,
    owns_dir: bool,
}

impl Running {
    /// The address of the `i`-th configured listener.
    pub fn listener(&self, i: usize) -> SocketAddr {
        self.server().local_addrs()[i]
    }

    /// The first listener (the tests' `http`).
    pub fn http(&self) -> SocketAddr {
        self.listener(0)
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn server_mut(&mut self) -> &mut Server {
        self.server.as_mut().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `io_uring:` line of a configuration selecting `driver`.
pub fn driver_yaml(driver: Driver) -> String {
    format!("io_uring: {{enabled: {}}}\n", driver.uring_enabled())
}

/// Parses `yaml` and starts Arc with relative paths resolving in `dir`, which the handle
/// removes on drop.
pub fn start_in(dir: PathBuf, yaml: &str) -> Running {
    start(dir, true, yaml)
}

/// Parses `yaml` and starts Arc with relative paths resolving in `dir`, left in place.
pub fn start_at(dir: &Path, yaml: &str) -> Running {
    start(dir.to_path_buf(), false, yaml)
}

fn start(dir: PathBuf, owns_dir: bool, yaml: &str) -> Running {
    let cfg = config::parse_str(yaml, Format::Yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthState::new());
    let server = Server::start(cfg, &dir, Arc::clone(&metrics), Arc::clone(&health))
        .unwrap_or_else(|e| panic!("start: {e}"));
    Running {
        server: Some(server),
        metrics,
        health,
        dir,
        owns_dir,
    }
}
