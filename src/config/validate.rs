//! Semantic checks of a typed [`Config`]: values that parse but make no sense, references that
//! point nowhere, placeholders, and keys whose feature is not built yet. Checks of values
//! another room consumes live here too (the `xdp` section, the status addresses the controller
//! publishes): config is the lower room, so it owns what a valid value is and the consuming
//! rooms import it, never the reverse.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::cidr::parse_cidr;
use super::node::Seg;
use super::schema::{Config, LbPolicy, MAX_TLS_SESSION_CACHE, PathType, Xdp};

/// The placeholder the plain Kubernetes manifests ship instead of a real token.
pub const TOKEN_PLACEHOLDER: &str = "__ARC_TOKEN__";

/// A semantic problem at a key path.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub path: Vec<Seg>,
    pub message: String,
}

struct Sink {
    issues: Vec<Issue>,
}

impl Sink {
    fn push(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.issues.push(Issue {
            path,
            message: message.into(),
        });
    }
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

fn p(parts: &[Seg]) -> Vec<Seg> {
    parts.to_vec()
}

fn not_supported(sink: &mut Sink, path: Vec<Seg>) {
    sink.push(path, "not supported yet");
}

/// Checks a typed configuration. `seq_intact` is false when list entries were dropped because
/// they did not parse: then cross-references between entries are not checked (they would report
/// follow-on errors).
pub fn validate(cfg: &Config, seq_intact: bool) -> Vec<Issue> {
    let mut sink = Sink { issues: Vec::new() };
    let s = &mut sink;

    if let Some(w) = cfg.workers
        && cfg.node.workers != 0
        && w != cfg.node.workers
    {
        s.push(
            p(&[k("workers")]),
            format!(
                "conflicts with node.workers ({} vs {}); set only one",
                w, cfg.node.workers
            ),
        );
    }
    if cfg.workers() > 1024 {
        s.push(p(&[k("node"), k("workers")]), "must be at most 1024");
    }
    if cfg.max_connections == 0 {
        s.push(p(&[k("max_connections")]), "must be at least 1");
    }
    let entries = cfg.io_uring.uring_entries;
    if !(2..=32768).contains(&entries) {
        s.push(
            p(&[k("io_uring"), k("uring_entries")]),
            format!("{entries} is out of range (2 to 32768)"),
        );
    }

    // listeners
    if cfg.listeners.is_empty() {
        s.push(p(&[k("listeners")]), "at least one listener is required");
    }
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let base = [k("listeners"), Seg::Index(i)];
        if l.name.trim().is_empty() {
            s.push(
                p(&[base[0].clone(), base[1].clone(), k("name")]),
                "must not be empty",
            );
        } else if seq_intact && !names.insert(l.name.as_str()) {
            s.push(
                p(&[base[0].clone(), base[1].clone(), k("name")]),
                format!("duplicate listener name `{}`", l.name),
            );
        }
        match parse_socket_addr(&l.bind) {
            Ok(addr) => {
                // Port 0 asks the kernel for a free port: two such listeners never collide.
                if seq_intact && addr.port() != 0 && !binds.insert(addr) {
                    s.push(
                        p(&[base[0].clone(), base[1].clone(), k("bind")]),
                        format!("address {addr} is bound by another listener"),
                    );
                }
            }
            Err(e) => s.push(p(&[base[0].clone(), base[1].clone(), k("bind")]), e),
        }
        if l.proxy_protocol {
            not_supported(
                s,
                p(&[base[0].clone(), base[1].clone(), k("proxy_protocol")]),
            );
        }
    }

    // tls
    if cfg.tls.session_cache > MAX_TLS_SESSION_CACHE {
        s.push(
            p(&[k("tls"), k("session_cache")]),
            format!(
                "{} is out of range (0 to {})",
                cfg.tls.session_cache, MAX_TLS_SESSION_CACHE
            ),
        );
    }
    for (i, c) in cfg.tls.certificates.iter().enumerate() {
        let base = vec![k("tls"), k("certificates"), Seg::Index(i)];
        if c.hosts.is_empty() {
            s.push(with(&base, &[k("hosts")]), "at least one host is required");
        }
        for (j, h) in c.hosts.iter().enumerate() {
            if let Err(e) = check_host(h) {
                s.push(with(&base, &[k("hosts"), Seg::Index(j)]), e);
            }
        }
        if c.cert.trim().is_empty() {
            s.push(with(&base, &[k("cert")]), "must not be empty");
        }
        if c.key.trim().is_empty() {
            s.push(with(&base, &[k("key")]), "must not be empty");
        }
    }

    // upstreams
    let mut upstream_names = HashSet::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let base = vec![k("upstreams"), Seg::Index(i)];
        if u.name.trim().is_empty() {
            s.push(with(&base, &[k("name")]), "must not be empty");
        } else if !upstream_names.insert(u.name.as_str()) && seq_intact {
            s.push(
                with(&base, &[k("name")]),
                format!("duplicate upstream name `{}`", u.name),
            );
        }
        match (&u.addr, u.addrs.is_empty()) {
            (Some(_), false) => s.push(
                with(&base, &[k("addr")]),
                "set either `addr` or `addrs`, not both",
            ),
            (None, true) => s.push(
                with(&base, &[k("addrs")]),
                "at least one address is required (`addrs` or `addr`)",
            ),
            _ => {}
        }
        for (j, a) in u.addrs.iter().enumerate() {
            if let Err(e) = check_endpoint(a) {
                s.push(with(&base, &[k("addrs"), Seg::Index(j)]), e);
            }
        }
        if let Some(a) = &u.addr
            && let Err(e) = check_endpoint(a)
        {
            s.push(with(&base, &[k("addr")]), e);
        }
        if u.pool.idle_timeout.get().is_zero() {
            s.push(
                with(&base, &[k("pool"), k("idle_timeout")]),
                "must be greater than zero",
            );
        }
        for (key, d) in [
            ("connect_timeout", u.connect_timeout),
            ("read_timeout", u.read_timeout),
            ("send_timeout", u.send_timeout),
        ] {
            if d.get().is_zero() {
                s.push(with(&base, &[k(key)]), "must be greater than zero");
            }
        }
        if u.lb != LbPolicy::RoundRobin {
            not_supported(s, with(&base, &[k("lb")]));
        }
        if u.health_check.is_some() {
            not_supported(s, with(&base, &[k("health_check")]));
        }
    }

    // upstream_defaults
    let d = &cfg.upstream_defaults;
    for (path, value) in [
        (&[k("pool"), k("idle_timeout")][..], d.pool.idle_timeout),
        (&[k("connect_timeout")][..], d.connect_timeout),
        (&[k("read_timeout")][..], d.read_timeout),
        (&[k("send_timeout")][..], d.send_timeout),
    ] {
        if value.get().is_zero() {
            s.push(
                with(&[k("upstream_defaults")], path),
                "must be greater than zero",
            );
        }
    }

    // routes
    for (i, r) in cfg.routes.iter().enumerate() {
        let base = vec![k("routes"), Seg::Index(i)];
        if let Some(h) = &r.host
            && let Err(e) = check_host(h)
        {
            s.push(with(&base, &[k("host")]), e);
        }
        if !r.path.starts_with('/') {
            s.push(
                with(&base, &[k("path")]),
                format!("\"{}\" must start with `/`", r.path),
            );
        }
        if r.regex && r.path_type != PathType::ImplementationSpecific {
            s.push(
                with(&base, &[k("regex")]),
                "regex paths need `path_type: ImplementationSpecific`",
            );
        }
        let actions = usize::from(r.upstream.is_some())
            + usize::from(r.direct_response.is_some())
            + usize::from(r.redirect.is_some());
        if actions != 1 {
            s.push(
                base.clone(),
                "a route needs exactly one of `upstream`, `direct_response` or `redirect`",
            );
        }
        if let Some(up) = &r.upstream
            && seq_intact
            && !cfg.upstreams.iter().any(|u| &u.name == up)
        {
            s.push(
                with(&base, &[k("upstream")]),
                format!("no upstream named `{up}`"),
            );
        }
        if let Some(d) = &r.direct_response {
            if !(200..=599).contains(&d.status) {
                s.push(
                    with(&base, &[k("direct_response"), k("status")]),
                    format!("{} is not a valid status (200 to 599)", d.status),
                );
            }
            if d.content_type.is_empty() || d.content_type.bytes().any(|b| b < 0x20 || b == 0x7f) {
                s.push(
                    with(&base, &[k("direct_response"), k("content_type")]),
                    "must be a non-empty header value without control characters",
                );
            }
        }
        if let Some(rd) = &r.redirect {
            if ![301, 302, 303, 307, 308].contains(&rd.code) {
                s.push(
                    with(&base, &[k("redirect"), k("code")]),
                    format!(
                        "{} is not a redirect status (301, 302, 303, 307 or 308)",
                        rd.code
                    ),
                );
            }
            if rd.location.is_empty() || rd.location.bytes().any(|b| b < 0x20 || b == 0x7f) {
                s.push(
                    with(&base, &[k("redirect"), k("location")]),
                    "must be a non-empty URL without control characters",
                );
            }
        }
    }

    // control plane
    if let Some(t) = &cfg.control_plane.auth_token {
        let path = p(&[k("control_plane"), k("auth_token")]);
        if t.trim().is_empty() {
            s.push(
                path.clone(),
                "must not be empty (leave it out to disable the control API)",
            );
        }
    }

    if let Err(e) = parse_socket_addr(&cfg.observability.metrics_bind) {
        s.push(p(&[k("observability"), k("metrics_bind")]), e);
    }

    // logging
    let out = &cfg.logging.output;
    if out.path.trim().is_empty() {
        s.push(
            p(&[k("logging"), k("output"), k("path")]),
            "must be stdout, stderr or a directory",
        );
    }
    let sample = cfg.logging.access_log.sample;
    if !(0.0..=1.0).contains(&sample) {
        s.push(
            p(&[k("logging"), k("access_log"), k("sample")]),
            "must be between 0.0 and 1.0",
        );
    }
    if cfg.logging.access_log.buffer == 0 {
        s.push(
            p(&[k("logging"), k("access_log"), k("buffer")]),
            "must be at least 1",
        );
    }
    if out.rotation.max_size.get() < 4096 {
        s.push(
            p(&[k("logging"), k("output"), k("rotation"), k("max_size")]),
            "must be at least 4KiB",
        );
    }
    if out.rotation.max_files == 0 {
        s.push(
            p(&[k("logging"), k("output"), k("rotation"), k("max_files")]),
            "must be at least 1",
        );
    }

    if cfg.redis.url.is_some() {
        not_supported(s, p(&[k("redis"), k("url")]));
    }

    for (path, message) in validate_xdp(&cfg.xdp) {
        let mut full = vec![k("xdp")];
        full.extend(path.into_iter().map(|seg| match seg {
            XdpPath::Key(key) => k(key),
            XdpPath::Index(i) => Seg::Index(i),
        }));
        s.push(full, message);
    }

    let kube = &cfg.kubernetes;
    if kube.enabled && !cfg.routes.is_empty() {
        s.push(
            p(&[k("routes")]),
            "not served in Kubernetes mode (kubernetes.enabled: true): routes come from Ingress objects",
        );
    }
    if kube.enabled && !cfg.upstreams.is_empty() {
        s.push(
            p(&[k("upstreams")]),
            "not served in Kubernetes mode (kubernetes.enabled: true): backends come from Services",
        );
    }
    if kube.ingress_class.trim().is_empty() {
        s.push(
            p(&[k("kubernetes"), k("ingress_class")]),
            "must not be empty",
        );
    }
    if !kube.controller_name.contains('/') {
        s.push(
            p(&[k("kubernetes"), k("controller_name")]),
            "must be a domain-prefixed path such as `arc-gateway.io/ingress-controller`",
        );
    }
    if let Some(ps) = &kube.publish_service
        && ps.split('/').filter(|x| !x.is_empty()).count() != 2
    {
        s.push(
            p(&[k("kubernetes"), k("publish_service")]),
            "must be `namespace/name`",
        );
    }
    for (i, a) in kube.publish_status_address.iter().enumerate() {
        if let Err(why) = check_status_address(a) {
            s.push(
                p(&[k("kubernetes"), k("publish_status_address"), Seg::Index(i)]),
                why,
            );
        }
    }
    if kube.debounce.get().is_zero() {
        s.push(
            p(&[k("kubernetes"), k("debounce")]),
            "must be greater than zero",
        );
    }

    if cfg.lifecycle.drain_timeout.get().is_zero() {
        s.push(
            p(&[k("lifecycle"), k("drain_timeout")]),
            "must be greater than zero",
        );
    }
    if cfg.lifecycle.upgrade_timeout.get().is_zero() {
        s.push(
            p(&[k("lifecycle"), k("upgrade_timeout")]),
            "must be greater than zero",
        );
    }
    if let Some(bin) = &cfg.lifecycle.upgrade_binary
        && !std::path::Path::new(bin).is_absolute()
    {
        s.push(
            p(&[k("lifecycle"), k("upgrade_binary")]),
            "must be an absolute path",
        );
    }

    let l = &cfg.limits;
    if l.max_head.get() < 1024 || l.max_head.get() > 1024 * 1024 {
        s.push(
            p(&[k("limits"), k("max_head")]),
            "must be between 1KiB and 1MiB",
        );
    }
    if l.max_headers == 0 || l.max_headers > 1000 {
        s.push(
            p(&[k("limits"), k("max_headers")]),
            "must be between 1 and 1000",
        );
    }
    for (key, d) in [
        ("header_read_timeout", l.header_read_timeout),
        ("idle_timeout", l.idle_timeout),
    ] {
        if d.get().is_zero() {
            s.push(p(&[k("limits"), k(key)]), "must be greater than zero");
        }
    }
    if l.max_requests_per_connection == Some(0) {
        s.push(
            p(&[k("limits"), k("max_requests_per_connection")]),
            "must be at least 1",
        );
    }
    if l.max_connection_age.is_some_and(|d| d.get().is_zero()) {
        s.push(
            p(&[k("limits"), k("max_connection_age")]),
            "must be greater than zero",
        );
    }

    sink.issues
}

fn with(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    let mut v = base.to_vec();
    v.extend_from_slice(more);
    v
}

/// Parses `ip:port` / `[ipv6]:port`, explaining what is wrong.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        if !s.contains(':') {
            format!("invalid socket address \"{s}\": missing `:port`")
        } else {
            format!("invalid socket address \"{s}\": expected `ip:port`, e.g. `0.0.0.0:8080` or `[::]:8080`")
        }
    })
}

/// Checks an upstream endpoint `host:port` (IP literal or DNS name).
pub fn check_endpoint(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("invalid address \"{s}\": missing `:port`"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("invalid address \"{s}\": bad port \"{port}\"")),
        Ok(_) => {}
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.starts_with('[') || host.contains(':') {
        return Err(format!("invalid address \"{s}\": bad IPv6 literal"));
    }
    check_dns_name(host).map_err(|e| format!("invalid address \"{s}\": {e}"))
}

/// Checks a route or certificate host: an exact DNS name or `*.suffix`.
pub fn check_host(h: &str) -> Result<(), String> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    if name.contains('*') {
        return Err(format!(
            "invalid host \"{h}\": a wildcard must be the whole first label, as in `*.example.com`"
        ));
    }
    check_dns_name(name).map_err(|e| format!("invalid host \"{h}\": {e}"))
}

fn check_dns_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("character `{c}` is not allowed in a host name"));
        }
    }
    Ok(())
}

/// A key path inside the `xdp` section, for [`validate_xdp`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum XdpPath {
    /// A map key.
    Key(&'static str),
    /// A list index.
    Index(usize),
}

/// Largest accepted `xdp.syn_limit.rate` and `.burst`.
pub const SYN_LIMIT_MAX: u32 = 1_000_000;

/// Checks the `xdp` section: deny-list CIDR syntax (key and index named), SYN-limit bounds and
/// the interface name. Returns each problem with its path below `xdp`.
fn validate_xdp(cfg: &Xdp) -> Vec<(Vec<XdpPath>, String)> {
    use XdpPath::{Index, Key};
    let mut out = Vec::new();
    for (i, c) in cfg.deny_cidrs.iter().enumerate() {
        if let Err(e) = parse_cidr(c) {
            out.push((vec![Key("deny_cidrs"), Index(i)], e));
        }
    }
    if let Some(limit) = &cfg.syn_limit {
        for (key, value) in [("rate", limit.rate), ("burst", limit.burst)] {
            if !(1..=SYN_LIMIT_MAX).contains(&value) {
                out.push((
                    vec![Key("syn_limit"), Key(key)],
                    format!("{value} is out of range (1 to {SYN_LIMIT_MAX} SYNs per source)"),
                ));
            }
        }
    }
    let name = cfg.interface.as_str();
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', '\t', '\0'])
        || name == "."
        || name == ".."
    {
        out.push((
            vec![Key("interface")],
            format!("\"{name}\" is not an interface name (`auto` or at most 15 characters, no `/` or spaces)"),
        ));
    }
    out
}

/// Checks one `publish_status_address` entry as the API server checks
/// `status.loadBalancer.ingress`: an IP address, or a DNS-1123 subdomain host name (lower case,
/// labels of 1–63 characters, at most 253 in all, no wildcard).
pub fn check_status_address(a: &str) -> Result<(), String> {
    if a.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        Err(format!(
            "`{a}` is neither an IP address nor a DNS host name (lower-case letters, digits, '-' and '.')"
        ))
    };
    if a.is_empty() || a.len() > 253 {
        return bad();
    }
    for label in a.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !ok_chars
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return bad();
        }
    }
    Ok(())
}
