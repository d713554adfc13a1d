//! [`compile`]: route model → [`RoutingTable`], reporting every problem without letting a bad
//! route affect any other.

use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::hash::FastMap;
use super::host::{RuleHost, parse_rule_host};
use super::model::{Backend, HostRules, PathType, RouteModel, RouteRule};
use super::table::{HostEntry, PathSlot, RegexRoute, Route, RoutingTable};

/// Longest regex pattern accepted, in bytes.
const MAX_REGEX_PATTERN: usize = 4096;
/// Compiled size limit of one regex (bytes of the compiled program).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Lazy DFA cache limit of one regex.
const REGEX_DFA_LIMIT: usize = 512 * 1024;
/// Nesting limit of a regex pattern.
const REGEX_NEST_LIMIT: u32 = 64;
/// Compiled size limit of a host's combined regex prefilter.
const REGEX_SET_SIZE_LIMIT: usize = 4 * 1024 * 1024;

/// The result of [`compile`]: the table and what was wrong with the model.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The table built from every valid route.
    pub table: RoutingTable,
    /// One entry per dropped route or default backend, in input order.
    pub problems: Vec<RouteProblem>,
}

/// A route (or default backend) that was dropped, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RouteProblem {
    /// The route's `name` (`ns/ingress`, `routes[3]`); `default-backend` for default backends.
    pub name: String,
    /// The host as written in the model; `None` for host-less routes and the table default.
    pub host: Option<String>,
    /// The rule path; `None` for default backends.
    pub path: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for RouteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}", self.name)?;
        match &self.host {
            Some(host) => write!(f, ", host {host:?}")?,
            None => f.write_str(", no host")?,
        }
        if let Some(path) = &self.path {
            write!(f, ", path {path:?}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// Why a route was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    /// Same host and path as an earlier route, which wins.
    #[error("conflicts with route {winner} for the same host and path, which was defined first")]
    Conflict {
        /// Name of the route that was kept.
        winner: String,
    },
    /// The host already has a different default backend from an earlier entry.
    #[error("the host already has a different default backend, defined first")]
    ConflictingDefaultBackend,
    /// The regex does not compile (or is too large).
    #[error("invalid regex: {0}")]
    InvalidRegex(String),
    /// The host is not a valid DNS name or `*.suffix` wildcard.
    #[error("invalid host: {0}")]
    InvalidHost(String),
    /// The path is malformed.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// The backend is malformed.
    #[error("invalid backend: {0}")]
    InvalidBackend(String),
}

impl ProblemKind {
    /// A short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ProblemKind::Conflict { .. } | ProblemKind::ConflictingDefaultBackend => "conflict",
            ProblemKind::InvalidRegex(_) => "invalid_regex",
            ProblemKind::InvalidHost(_) => "invalid_host",
            ProblemKind::InvalidPath(_) => "invalid_path",
            ProblemKind::InvalidBackend(_) => "invalid_backend",
        }
    }
}

/// Name used in problems about default backends.
const DEFAULT_BACKEND_NAME: &str = "default-backend";

/// Compiles a route model into an immutable table tagged with `version`.
///
/// Host entries with the same host merge; for the same (host, path, path type) the first route
/// in input order wins and later ones are reported as conflicts. Invalid routes are dropped and
/// reported; they never affect other routes.
pub fn compile(model: &RouteModel, version: u64) -> Compiled {
    let mut builder = Builder::default();
    for host_rules in &model.hosts {
        builder.add_host_rules(host_rules);
    }
    let default_backend =
        model
            .default_backend
            .as_ref()
            .and_then(|backend| match check_backend(backend) {
                Ok(()) => Some(Arc::new(backend.clone())),
                Err(why) => {
                    builder.problems.push(RouteProblem {
                        name: DEFAULT_BACKEND_NAME.to_string(),
                        host: None,
                        path: None,
                        kind: ProblemKind::InvalidBackend(why),
                    });
                    None
                }
            });
    builder.finish(version, default_backend)
}

/// A host being assembled.
#[derive(Default)]
struct HostBuilder {
    host: Option<RuleHost>,
    tls: bool,
    default_backend: Option<Arc<Backend>>,
    routes: Vec<Route>,
    /// Kubernetes identity (path type, path as written) → winning route name.
    identities: FastMap<(PathType, String), usize>,
    exact: FastMap<Box<str>, PathSlot>,
    prefix: FastMap<Box<str>, PathSlot>,
    regexes: Vec<RegexRoute>,
}

#[derive(Default)]
struct Builder {
    hosts: Vec<HostBuilder>,
    exact_hosts: FastMap<Box<str>, usize>,
    wildcard_hosts: FastMap<Box<str>, usize>,
    hostless: Option<usize>,
    problems: Vec<RouteProblem>,
}

/// How a validated rule matches.
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Builder {
    fn add_host_rules(&mut self, input: &HostRules) {
        let raw_host = input.host.as_deref().filter(|h| !h.is_empty());
        let index = match raw_host.map(parse_rule_host).transpose() {
            Ok(rule_host) => self.host_index(rule_host),
            Err(why) => {
                self.reject_host(input, raw_host, &why);
                return;
            }
        };
        let problem = |name: &str, path: Option<&str>, kind| RouteProblem {
            name: name.to_string(),
            host: raw_host.map(str::to_string),
            path: path.map(str::to_string),
            kind,
        };
        let mut problems = Vec::new();
        let Some(host) = self.hosts.get_mut(index) else {
            return;
        };
        host.tls |= input.tls;
        if let Some(backend) = &input.default_backend {
            if let Err(why) = check_backend(backend) {
                problems.push(problem(
                    DEFAULT_BACKEND_NAME,
                    None,
                    ProblemKind::InvalidBackend(why),
                ));
            } else {
                match &host.default_backend {
                    None => host.default_backend = Some(Arc::new(backend.clone())),
                    Some(existing) if **existing == *backend => {}
                    Some(_) => problems.push(problem(
                        DEFAULT_BACKEND_NAME,
                        None,
                        ProblemKind::ConflictingDefaultBackend,
                    )),
                }
            }
        }
        for rule in &input.rules {
            if let Err(kind) = host.add_rule(rule) {
                problems.push(problem(&rule.name, Some(&rule.path), kind));
            }
        }
        self.problems.append(&mut problems);
    }

    /// Index of the builder for a host, creating it on first sight.
    fn host_index(&mut self, rule_host: Option<RuleHost>) -> usize {
        let next = self.hosts.len();
        let index = match &rule_host {
            None => *self.hostless.get_or_insert(next),
            Some(h) => {
                let map = if h.wildcard {
                    &mut self.wildcard_hosts
                } else {
                    &mut self.exact_hosts
                };
                *map.entry(h.key().into()).or_insert(next)
            }
        };
        if index == next {
            self.hosts.push(HostBuilder {
                host: rule_host,
                ..HostBuilder::default()
            });
        }
        index
    }

    /// Reports every route and the default backend of an entry whose host is invalid.
    fn reject_host(&mut self, input: &HostRules, raw_host: Option<&str>, why: &str) {
        let named = input
            .rules
            .iter()
            .map(|r| (r.name.as_str(), Some(r.path.clone())))
            .chain(
                input
                    .default_backend
                    .as_ref()
                    .map(|_| (DEFAULT_BACKEND_NAME, None)),
            );
        for (name, path) in named {
            self.problems.push(RouteProblem {
                name: name.to_string(),
                host: raw_host.map(str::to_string),
                path,
                kind: ProblemKind::InvalidHost(why.to_string()),
            });
        }
    }

    fn finish(self, version: u64, default_backend: Option<Arc<Backend>>) -> Compiled {
        let hosts = self.hosts.into_iter().map(HostBuilder::finish).collect();
        Compiled {
            table: RoutingTable {
                version,
                hosts,
                exact_hosts: self.exact_hosts,
                wildcard_hosts: self.wildcard_hosts,
                hostless: self.hostless,
                default_backend,
            },
            problems: self.problems,
        }
    }
}

impl HostBuilder {
    /// Validates a rule and adds it unless an earlier route holds the same place.
    fn add_rule(&mut self, rule: &RouteRule) -> Result<(), ProblemKind> {
        let path = effective_path(rule);
        let matcher = check_rule(rule, path)?;
        check_backend(&rule.backend).map_err(ProblemKind::InvalidBackend)?;
        let next = self.routes.len();
        let winner = |routes: &[Route], index: usize| ProblemKind::Conflict {
            winner: routes
                .get(index)
                .map_or_else(String::new, |r| r.name.clone()),
        };
        let identity = (rule.path_type, path.to_string());
        if let Some(&index) = self.identities.get(&identity) {
            return Err(winner(&self.routes, index));
        }
        let slot = PathSlot {
            route: next,
            rule_len: path.len(),
        };
        match matcher {
            Matcher::Exact(key) => match self.exact.entry(key.into()) {
                Entry::Occupied(e) => return Err(winner(&self.routes, e.get().route)),
                Entry::Vacant(e) => {
                    e.insert(slot);
                }
            },
            Matcher::Prefix(key) => match self.prefix.entry(key.into()) {
                Entry::Occupied(e) => return Err(winner(&self.routes, e.get().route)),
                Entry::Vacant(e) => {
                    e.insert(slot);
                }
            },
            // Two regex routes with the same pattern share their identity, checked above.
            Matcher::Regex(regex) => self.regexes.push(RegexRoute {
                route: next,
                pattern_len: path.len(),
                regex,
            }),
        }
        self.identities.insert(identity, next);
        self.routes.push(Route {
            name: rule.name.clone(),
            path: path.to_string(),
            path_type: rule.path_type,
            regex: rule.path_type == PathType::ImplementationSpecific && rule.regex,
            ssl_redirect: rule.ssl_redirect,
            backend: Arc::new(rule.backend.clone()),
        });
        Ok(())
    }

    fn finish(self) -> HostEntry {
        let mut regexes = self.regexes;
        // Longest pattern first, then input order (the sort is stable).
        regexes.sort_by_key(|r| std::cmp::Reverse(r.pattern_len));
        let regex_filter = if regexes.len() > 1 {
            build_regex_set(regexes.iter().map(|r| r.regex.as_str()))
        } else {
            None
        };
        let max_prefix_len = self.prefix.keys().map(|k| k.len()).max().unwrap_or(0);
        let (host, wildcard) = match self.host {
            Some(h) => (Some(h.display), h.wildcard),
            None => (None, false),
        };
        HostEntry {
            host,
            wildcard,
            tls: self.tls,
            default_backend: self.default_backend,
            routes: self.routes,
            exact: self.exact,
            prefix: self.prefix,
            max_prefix_len,
            regexes,
            regex_filter,
        }
    }
}

/// The rule path, with an empty `ImplementationSpecific` path read as `/`.
fn effective_path(rule: &RouteRule) -> &str {
    if rule.path.is_empty() && rule.path_type == PathType::ImplementationSpecific {
        "/"
    } else {
        &rule.path
    }
}

/// Validates a rule's path and says how it matches.
fn check_rule(rule: &RouteRule, path: &str) -> Result<Matcher, ProblemKind> {
    if !path.starts_with('/') {
        return Err(ProblemKind::InvalidPath("must start with '/'".to_string()));
    }
    if let Some(bad) = path.chars().find(|c| c.is_control()) {
        return Err(ProblemKind::InvalidPath(format!(
            "control character {bad:?} not allowed"
        )));
    }
    let is_regex = rule.path_type == PathType::ImplementationSpecific && rule.regex;
    if is_regex {
        return compile_path_regex(path)
            .map(Matcher::Regex)
            .map_err(ProblemKind::InvalidRegex);
    }
    if let Some(bad) = path.chars().find(|c| matches!(c, '?' | '#' | ' ')) {
        return Err(ProblemKind::InvalidPath(format!(
            "character {bad:?} can never match a request path"
        )));
    }
    Ok(match rule.path_type {
        PathType::Exact => Matcher::Exact(path.to_string()),
        PathType::Prefix | PathType::ImplementationSpecific => {
            Matcher::Prefix(path.trim_end_matches('/').to_string())
        }
    })
}

/// Compiles a regex path: anchored at the start, case-insensitive, size-limited.
fn compile_path_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_REGEX_PATTERN {
        return Err(format!("longer than {MAX_REGEX_PATTERN} bytes"));
    }
    let build = |p: &str| {
        RegexBuilder::new(p)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map_err(|e| e.to_string())
    };
    // Compiling the pattern on its own first guarantees it is balanced, so wrapping it in a
    // group cannot change its meaning (e.g. `a)|(b` escaping the anchor).
    build(pattern)?;
    build(&format!("^(?:{pattern})"))
}

/// A prefilter answering "does any regex of this host match"; `None` when it would be too big.
fn build_regex_set<'a>(patterns: impl Iterator<Item = &'a str>) -> Option<RegexSet> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(REGEX_SET_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .ok()
}

/// Validates a backend; the error says what is wrong.
fn check_backend(backend: &Backend) -> Result<(), String> {
    let header_safe = |value: &str| !value.chars().any(|c| c.is_control());
    match backend {
        Backend::Upstream { name } => {
            if name.is_empty() {
                return Err("empty upstream name".to_string());
            }
        }
        Backend::DirectResponse {
            status,
            content_type,
            ..
        } => {
            if !(200..=599).contains(status) {
                return Err(format!("direct response status {status} not in 200..=599"));
            }
            if !header_safe(content_type) {
                return Err("content type contains a control character".to_string());
            }
        }
        Backend::Redirect { location, code } => {
            if ![301, 302, 303, 307, 308].contains(code) {
                return Err(format!(
                    "redirect code {code} is not one of 301, 302, 303, 307, 308"
                ));
            }
            if location.is_empty() {
                return Err("empty redirect location".to_string());
            }
            if !header_safe(location) {
                return Err("redirect location contains a control character".to_string());
            }
        }
    }
    Ok(())
}
