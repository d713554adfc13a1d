//! The two ways to a [`DesiredState`]: from a validated [`Config`] (standalone mode) and from
//! the controller's [`ClusterState`] under a configuration (Kubernetes mode).
//!
//! Endpoint names of the configuration are resolved through the `resolve` function the caller
//! hands in (the runtime passes DNS); IP literals are parsed here and never reach it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{CertPaths, Certificates, ClusterState, DesiredState, HostCertPaths, Upstream};
use crate::config::{self, Config};
use crate::proxy::core::ConnLimits;
use crate::proxy::http1;
use crate::proxy::io::PoolLimits;
use crate::proxy::tls::UpstreamTlsOptions;

/// An endpoint name of the configuration that did not resolve: it gets no traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// `upstreams[i].addrs[j]`.
    pub key: String,
    pub address: String,
    pub error: String,
}

/// The desired state of a configuration. Relative certificate paths are taken from `base`;
/// endpoint names go through `resolve`, and those that fail are returned (the rest of the
/// upstream still serves).
pub fn from_config(
    cfg: &Config,
    base: &Path,
    resolve: &mut dyn FnMut(&str) -> std::io::Result<Vec<SocketAddr>>,
) -> (DesiredState, Vec<Unresolved>) {
    let mut unresolved = Vec::new();
    let upstreams = cfg
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| upstream(u, i, resolve, &mut unresolved))
        .collect();
    let state = DesiredState {
        routes: config::routes::route_model(cfg),
        upstreams,
        certificates: certificates(cfg, base),
        limits: conn_limits(cfg),
    };
    (state, unresolved)
}

/// The desired state of Kubernetes mode: the controller's routes, upstreams and Secret
/// certificates, with the upstream settings of `upstream_defaults`, the limits and the file
/// certificates of `cfg` (relative paths from `base`).
pub fn from_cluster(cfg: &Config, base: &Path, state: &ClusterState) -> DesiredState {
    let d = &cfg.upstream_defaults;
    let upstreams = state
        .upstreams
        .iter()
        .map(|u| {
            let mut endpoints: Vec<SocketAddr> = Vec::with_capacity(u.addrs.len());
            for a in &u.addrs {
                if !endpoints.contains(a) {
                    endpoints.push(*a);
                }
            }
            Upstream {
                name: u.name.clone(),
                endpoints,
                tls: u.tls.as_ref().map(|t| UpstreamTlsOptions {
                    server_name: Some(t.server_name.clone()),
                    verify: t.verify,
                    ca: None,
                    ca_pem: t.ca_pem.clone(),
                    client_cert: t.client_cert.clone(),
                    no_sni: !t.sni,
                }),
                pool: PoolLimits {
                    max_idle: d.pool.max_idle,
                    idle_timeout: d.pool.idle_timeout.get(),
                    connect_timeout: d.connect_timeout.get(),
                },
                read_timeout: d.read_timeout.get(),
                send_timeout: d.send_timeout.get(),
            }
        })
        .collect();
    let mut certificates = certificates(cfg, base);
    certificates.loaded = state.certs.clone();
    DesiredState {
        routes: state.model.clone(),
        upstreams,
        certificates,
        limits: conn_limits(cfg),
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

/// One configured upstream (`upstreams[index]`): endpoints resolved (IP literals as they are,
/// names through `resolve`; each address once), TLS settings, pool and timeouts. Names that
/// do not resolve are pushed to `unresolved`.
pub fn upstream(
    u: &config::Upstream,
    index: usize,
    resolve: &mut dyn FnMut(&str) -> std::io::Result<Vec<SocketAddr>>,
    unresolved: &mut Vec<Unresolved>,
) -> Upstream {
    let mut endpoints = Vec::new();
    for (j, addr) in u.endpoints().into_iter().enumerate() {
        let found = match addr.parse::<SocketAddr>() {
            Ok(a) => Ok(vec![a]),
            Err(_) => resolve(addr),
        };
        match found {
            Ok(found) => {
                for a in found {
                    if !endpoints.contains(&a) {
                        endpoints.push(a);
                    }
                }
            }
            Err(e) => unresolved.push(Unresolved {
                key: format!("upstreams[{index}].addrs[{j}]"),
                address: addr.to_owned(),
                error: e.to_string(),
            }),
        }
    }
    Upstream {
        name: u.name.clone(),
        endpoints,
        tls: upstream_tls(u),
        pool: PoolLimits {
            max_idle: u.pool.max_idle,
            idle_timeout: u.pool.idle_timeout.get(),
            connect_timeout: u.connect_timeout.get(),
        },
        read_timeout: u.read_timeout.get(),
        send_timeout: u.send_timeout.get(),
    }
}

/// The TLS client settings of `upstreams[].tls` (`None`: plain HTTP). SNI is `server_name`,
/// else the host of the first address when it is a name (an IP address sends none).
pub fn upstream_tls(u: &config::Upstream) -> Option<UpstreamTlsOptions> {
    let t = u.tls.as_ref().filter(|t| t.enabled)?;
    let server_name = t.server_name.clone().or_else(|| {
        let first = u.endpoints().into_iter().next()?;
        let (host, _) = first.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (host.parse::<IpAddr>().is_err()).then(|| host.to_owned())
    });
    Some(UpstreamTlsOptions {
        server_name,
        verify: t.verify,
        ca: t.ca.as_ref().map(PathBuf::from),
        ..Default::default()
    })
}

/// The certificate files of `tls.*`, relative paths taken from `base`.
fn certificates(cfg: &Config, base: &Path) -> Certificates {
    let paths = |cert: &str, key: &str| CertPaths {
        cert: base.join(cert),
        key: base.join(key),
    };
    Certificates {
        default: cfg
            .tls
            .default_certificate
            .as_ref()
            .map(|d| paths(&d.cert, &d.key)),
        files: cfg
            .tls
            .certificates
            .iter()
            .map(|c| HostCertPaths {
                hosts: c.hosts.clone(),
                files: paths(&c.cert, &c.key),
            })
            .collect(),
        loaded: Vec::new(),
    }
}
