//! The compiled, immutable [`RoutingTable`] and its lookup.
//!
//! Lookup cost does not grow with the number of hosts or routes: exact hosts and wildcard
//! suffixes are hash-map keys, and per host the exact paths and the prefix paths are hash-map
//! keys too; a prefix lookup probes the request path at its element boundaries, longest first
//! (`/a/b/c`, `/a/b`, `/a`, `/`), skipping boundaries longer than the host's longest prefix.
//! Only hosts with regex routes test regexes. Lookup does not allocate.

use std::collections::BTreeSet;
use std::sync::Arc;

use regex::{Regex, RegexSet};

use super::hash::FastMap;
use super::host::{MAX_HOST_LEN, normalize_request_host, wildcard_suffix};
use super::model::{Backend, PathType};

/// Path prefix that ssl-redirect never applies to (ACME HTTP-01 challenges must stay on HTTP).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// A compiled route, as the control API and metrics see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) path_type: PathType,
    pub(crate) regex: bool,
    pub(crate) ssl_redirect: bool,
    pub(crate) backend: Arc<Backend>,
}

impl Route {
    /// The opaque route identity from the model (`ns/ingress`, `routes[3]`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The rule path as written in the model.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The rule's path type.
    pub fn path_type(&self) -> PathType {
        self.path_type
    }
    /// `true` when the path is matched as a regex.
    pub fn is_regex(&self) -> bool {
        self.regex
    }
    /// The rule's ssl-redirect flag.
    pub fn ssl_redirect(&self) -> bool {
        self.ssl_redirect
    }
    /// What the route does.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

/// A regex route of a host, kept sorted by pattern length (longest first), then input order.
#[derive(Clone, Debug)]
pub(crate) struct RegexRoute {
    pub(crate) route: usize,
    pub(crate) pattern_len: usize,
    pub(crate) regex: Regex,
}

/// Index of a route in its host's route list plus the rule path length (for regex precedence).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PathSlot {
    pub(crate) route: usize,
    pub(crate) rule_len: usize,
}

/// One host of the table (exact, wildcard or host-less) with its compiled matchers.
#[derive(Clone, Debug)]
pub struct HostEntry {
    pub(crate) host: Option<String>,
    pub(crate) wildcard: bool,
    pub(crate) tls: bool,
    pub(crate) default_backend: Option<Arc<Backend>>,
    pub(crate) routes: Vec<Route>,
    pub(crate) exact: FastMap<Box<str>, PathSlot>,
    pub(crate) prefix: FastMap<Box<str>, PathSlot>,
    pub(crate) max_prefix_len: usize,
    pub(crate) regexes: Vec<RegexRoute>,
    pub(crate) regex_filter: Option<RegexSet>,
}

impl HostEntry {
    /// The host as written (lowercased), e.g. `app.example.com` or `*.example.com`;
    /// `None` for the host-less entry.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    /// `true` for a `*.suffix` entry.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }
    /// The host is served over TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }
    /// The host's own default backend.
    pub fn default_backend(&self) -> Option<&Arc<Backend>> {
        self.default_backend.as_ref()
    }
    /// The host's routes in input order (after merging and dropping bad routes).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the best route of this host for `path` (already without query).
    fn match_path(&self, path: &str) -> Option<&Route> {
        if let Some(slot) = self.exact.get(path) {
            return self.routes.get(slot.route);
        }
        let prefix = self.longest_prefix(path);
        if let Some(route) = self.match_regex(path, prefix.map(|slot| slot.rule_len)) {
            return Some(route);
        }
        prefix.and_then(|slot| self.routes.get(slot.route))
    }

    /// Longest element-wise prefix rule matching `path`.
    fn longest_prefix(&self, path: &str) -> Option<PathSlot> {
        if self.prefix.is_empty() {
            return None;
        }
        if path.len() <= self.max_prefix_len
            && let Some(slot) = self.prefix.get(path)
        {
            return Some(*slot);
        }
        // Probe `path[..i]` for every `/` at index i (only i <= max_prefix_len can hit);
        // i == 0 probes the root key "".
        let bytes = path.as_bytes();
        let mut end = bytes.len().min(self.max_prefix_len.saturating_add(1));
        while let Some(slash) = bytes
            .get(..end)
            .and_then(|b| b.iter().rposition(|&c| c == b'/'))
        {
            if let Some(slot) = path.get(..slash).and_then(|key| self.prefix.get(key)) {
                return Some(*slot);
            }
            end = slash;
        }
        // A path not starting with `/` (e.g. `*`) still falls under a root prefix rule.
        if path.starts_with('/') {
            None
        } else {
            self.prefix.get("").copied()
        }
    }

    /// First regex route (longest pattern first) matching `path` whose pattern is longer than
    /// the matched prefix rule (ties go to the prefix rule).
    fn match_regex(&self, path: &str, prefix_len: Option<usize>) -> Option<&Route> {
        let beats_prefix = |len: usize| prefix_len.is_none_or(|p| len > p);
        let first = self.regexes.first()?;
        if !beats_prefix(first.pattern_len) {
            return None;
        }
        if let Some(filter) = &self.regex_filter
            && !filter.is_match(path)
        {
            return None;
        }
        self.regexes
            .iter()
            .take_while(|r| beats_prefix(r.pattern_len))
            .find(|r| r.regex.is_match(path))
            .and_then(|r| self.routes.get(r.route))
    }
}

/// Which step of the lookup chose the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    /// A route of the host (or of the host-less entry).
    Route,
    /// The matched host's own default backend.
    HostDefault,
    /// The table-wide default backend.
    TableDefault,
}

/// A successful lookup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteMatch<'a> {
    /// What to do with the request.
    pub backend: &'a Arc<Backend>,
    /// The matched route; `None` when a default backend answered.
    pub route: Option<&'a Route>,
    /// The matched host entry as written (`*.example.com`); `None` for host-less / no host.
    pub host: Option<&'a str>,
    /// The matched host entry is served over TLS.
    pub tls: bool,
    /// Which step chose the backend.
    pub kind: MatchKind,
}

impl RouteMatch<'_> {
    /// The route name for metrics and logs (`default-backend` when a default answered).
    pub fn name(&self) -> &str {
        self.route.map_or("default-backend", |r| r.name())
    }

    /// Whether a plain-HTTP request for `path` should be redirected to HTTPS: the host has TLS,
    /// the route asks for it (a host's own default backend follows the host), and the path is
    /// not an ACME HTTP-01 challenge.
    pub fn ssl_redirect(&self, path: &str) -> bool {
        let wanted = match self.kind {
            MatchKind::Route => self.route.is_some_and(|r| r.ssl_redirect),
            MatchKind::HostDefault => true,
            MatchKind::TableDefault => false,
        };
        wanted && self.tls && !path.starts_with(ACME_CHALLENGE_PREFIX)
    }
}

/// The answer of [`RoutingTable::lookup`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lookup<'a> {
    /// A route or a default backend answers.
    Found(RouteMatch<'a>),
    /// Nothing matched: Arc answers 404.
    NotFound,
}

impl<'a> Lookup<'a> {
    /// The chosen backend, if any.
    pub fn backend(&self) -> Option<&'a Arc<Backend>> {
        match self {
            Lookup::Found(m) => Some(m.backend),
            Lookup::NotFound => None,
        }
    }
    /// The match, if any.
    pub fn found(&self) -> Option<&RouteMatch<'a>> {
        match self {
            Lookup::Found(m) => Some(m),
            Lookup::NotFound => None,
        }
    }
}

/// An immutable, versioned routing table; share it as `Arc<RoutingTable>` and swap whole.
#[derive(Clone, Debug, Default)]
pub struct RoutingTable {
    pub(crate) version: u64,
    pub(crate) hosts: Vec<HostEntry>,
    pub(crate) exact_hosts: FastMap<Box<str>, usize>,
    pub(crate) wildcard_hosts: FastMap<Box<str>, usize>,
    pub(crate) hostless: Option<usize>,
    pub(crate) default_backend: Option<Arc<Backend>>,
}

impl RoutingTable {
    /// An empty table (every lookup is 404) with the given version.
    pub fn empty(version: u64) -> Self {
        RoutingTable {
            version,
            ..RoutingTable::default()
        }
    }

    /// The version given to [`compile`](super::compile).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// All host entries in input order (the host-less entry included, with `host() == None`).
    pub fn hosts(&self) -> impl ExactSizeIterator<Item = &HostEntry> {
        self.hosts.iter()
    }

    /// The table-wide default backend.
    pub fn default_backend(&self) -> Option<&Arc<Backend>> {
        self.default_backend.as_ref()
    }

    /// Number of routes over all hosts.
    pub fn route_count(&self) -> usize {
        self.hosts.iter().map(|h| h.routes.len()).sum()
    }

    /// Every upstream name referenced by a route or a default backend.
    pub fn upstream_names(&self) -> BTreeSet<&str> {
        let host_backends = self.hosts.iter().flat_map(|h| {
            h.routes
                .iter()
                .map(|r| &r.backend)
                .chain(h.default_backend.as_ref())
        });
        host_backends
            .chain(self.default_backend.as_ref())
            .filter_map(|b| b.upstream_name())
            .collect()
    }

    /// Finds what serves a request for `host` (the `Host` header or `:authority`, port allowed)
    /// and `path` (anything after `?` is ignored), with Ingress v1 semantics.
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        // A byte search: `?` is ASCII, so the cut is a char boundary.
        let path = match path.bytes().position(|b| b == b'?') {
            Some(q) => path.get(..q).unwrap_or(path),
            None => path,
        };
        let mut buf = [0u8; MAX_HOST_LEN];
        let entry = normalize_request_host(host, &mut buf).and_then(|h| self.find_host(h));
        let Some(entry) = entry.or_else(|| self.hostless.and_then(|i| self.hosts.get(i))) else {
            return self.table_default(None, false);
        };
        let found = |backend, route, kind| {
            Lookup::Found(RouteMatch {
                backend,
                route,
                host: entry.host(),
                tls: entry.tls,
                kind,
            })
        };
        if let Some(route) = entry.match_path(path) {
            return found(&route.backend, Some(route), MatchKind::Route);
        }
        if let Some(backend) = &entry.default_backend {
            return found(backend, None, MatchKind::HostDefault);
        }
        self.table_default(entry.host(), entry.tls)
    }

    /// The host entry for a normalised request host: exact first, then wildcard.
    fn find_host(&self, host: &str) -> Option<&HostEntry> {
        let index = self.exact_hosts.get(host).or_else(|| {
            if self.wildcard_hosts.is_empty() {
                return None;
            }
            wildcard_suffix(host).and_then(|suffix| self.wildcard_hosts.get(suffix))
        })?;
        self.hosts.get(*index)
    }

    fn table_default<'a>(&'a self, host: Option<&'a str>, tls: bool) -> Lookup<'a> {
        match &self.default_backend {
            Some(backend) => Lookup::Found(RouteMatch {
                backend,
                route: None,
                host,
                tls,
                kind: MatchKind::TableDefault,
            }),
            None => Lookup::NotFound,
        }
    }
}
