//! The standalone `routes[]` of a configuration as a plain routing model.

use crate::routing::{self, Backend, HostRules, RouteModel, RouteRule};

use super::schema::{Config, PathType};

/// The name a configuration route carries in metrics and logs: its key path.
pub fn route_name(index: usize) -> String {
    format!("routes[{index}]")
}

/// Builds the routing model of `cfg.routes`, one host entry per route in file order (the
/// compiler merges equal hosts; the first route of a duplicate wins).
pub fn route_model(cfg: &Config) -> RouteModel {
    let tls_hosts: Vec<&str> = cfg
        .tls
        .certificates
        .iter()
        .flat_map(|c| c.hosts.iter().map(String::as_str))
        .collect();
    let hosts = cfg
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let backend = if let Some(u) = &r.upstream {
                Backend::upstream(u.clone())
            } else if let Some(d) = &r.direct_response {
                Backend::DirectResponse {
                    status: d.status,
                    body: d.body.clone(),
                    content_type: d.content_type.clone(),
                }
            } else {
                let rd = r.redirect.as_ref()?;
                Backend::Redirect {
                    location: rd.location.clone(),
                    code: rd.code,
                }
            };
            let path_type = match r.path_type {
                PathType::Exact => routing::PathType::Exact,
                PathType::Prefix => routing::PathType::Prefix,
                PathType::ImplementationSpecific => routing::PathType::ImplementationSpecific,
            };
            let mut rule = RouteRule::new(route_name(i), r.path.clone(), path_type, backend);
            rule.regex = r.regex;
            Some(HostRules {
                tls: r
                    .host
                    .as_deref()
                    .is_some_and(|h| tls_hosts.iter().any(|t| t.eq_ignore_ascii_case(h))),
                host: r.host.clone(),
                rules: vec![rule],
                default_backend: None,
            })
        })
        .collect();
    RouteModel {
        hosts,
        default_backend: None,
    }
}
