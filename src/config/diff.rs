//! Which restart-required keys differ between a running and a new configuration.
//!
//! Hot reload applies everything else; these keys keep their running value until a restart
//! (SPEC §2): `node.workers`, listeners added/removed/rebound, `io_uring.*`,
//! `tls.session_cache`, `tls.session_tickets`, `observability.metrics_bind`.

use super::schema::Config;

/// One restart-required change, named by key path, with a human explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartChange {
    pub key: String,
    pub detail: String,
}

/// Names the restart-required keys whose values differ between `old` and `new`.
pub fn restart_required_changes(old: &Config, new: &Config) -> Vec<RestartChange> {
    let mut out = Vec::new();
    let mut change = |key: String, detail: String| out.push(RestartChange { key, detail });

    if old.workers() != new.workers() {
        change(
            "node.workers".into(),
            format!("{} -> {}", old.workers(), new.workers()),
        );
    }
    for l in &old.listeners {
        match new.listeners.iter().find(|n| n.name == l.name) {
            None => change(
                format!("listeners[{}]", l.name),
                format!("removed (was {})", l.bind),
            ),
            Some(n) if n.bind != l.bind => change(
                format!("listeners[{}].bind", l.name),
                format!("{} -> {}", l.bind, n.bind),
            ),
            Some(n) if n.protocol != l.protocol => change(
                format!("listeners[{}].protocol", l.name),
                format!("{:?} -> {:?}", l.protocol, n.protocol).to_lowercase(),
            ),
            Some(n) if n.proxy_protocol != l.proxy_protocol => change(
                format!("listeners[{}].proxy_protocol", l.name),
                format!("{} -> {}", l.proxy_protocol, n.proxy_protocol),
            ),
            Some(_) => {}
        }
    }
    for n in &new.listeners {
        if !old.listeners.iter().any(|l| l.name == n.name) {
            change(
                format!("listeners[{}]", n.name),
                format!("added ({})", n.bind),
            );
        }
    }
    if old.io_uring.enabled != new.io_uring.enabled {
        change(
            "io_uring.enabled".into(),
            format!("{:?} -> {:?}", old.io_uring.enabled, new.io_uring.enabled).to_lowercase(),
        );
    }
    if old.io_uring.sqpoll != new.io_uring.sqpoll {
        change(
            "io_uring.sqpoll".into(),
            format!("{} -> {}", old.io_uring.sqpoll, new.io_uring.sqpoll),
        );
    }
    if old.io_uring.uring_entries != new.io_uring.uring_entries {
        change(
            "io_uring.uring_entries".into(),
            format!(
                "{} -> {}",
                old.io_uring.uring_entries, new.io_uring.uring_entries
            ),
        );
    }
    if old.tls.session_cache != new.tls.session_cache {
        change(
            "tls.session_cache".into(),
            format!("{} -> {}", old.tls.session_cache, new.tls.session_cache),
        );
    }
    if old.tls.session_tickets != new.tls.session_tickets {
        change(
            "tls.session_tickets".into(),
            format!("{} -> {}", old.tls.session_tickets, new.tls.session_tickets),
        );
    }
    if old.observability.metrics_bind != new.observability.metrics_bind {
        change(
            "observability.metrics_bind".into(),
            format!(
                "{} -> {}",
                old.observability.metrics_bind, new.observability.metrics_bind
            ),
        );
    }
    out
}
