//! The plain route model: what the configuration loader and the Kubernetes translator produce
//! and [`compile`](super::compile) turns into a [`RoutingTable`](super::RoutingTable).
//!
//! Everything here is plain data (no compiled regexes, no maps) so producers can build, compare
//! and print it freely.

/// How a rule's `path` is compared with the request path (Ingress `networking.k8s.io/v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathType {
    /// The request path must equal the rule path (case-sensitive).
    Exact,
    /// Element-wise prefix: `/foo` matches `/foo`, `/foo/`, `/foo/bar`, not `/foobar`.
    Prefix,
    /// Arc: prefix semantics, or an anchored case-insensitive regex when [`RouteRule::regex`] is set.
    ImplementationSpecific,
}

impl PathType {
    /// The name used by the Kubernetes API and the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        }
    }
}

impl std::fmt::Display for PathType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a matched route does with the request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Proxy to an upstream (service) that the data plane resolves by this key.
    Upstream {
        /// Upstream key, e.g. `app` or `ns/service:port`.
        name: String,
    },
    /// Answer directly with a fixed response.
    DirectResponse {
        /// Status code, 200..=599.
        status: u16,
        /// Response body.
        body: String,
        /// `Content-Type` of the body.
        content_type: String,
    },
    /// Answer with a redirect.
    Redirect {
        /// Value of the `Location` header.
        location: String,
        /// One of 301, 302, 303, 307, 308.
        code: u16,
    },
}

impl Backend {
    /// Shorthand for [`Backend::Upstream`].
    pub fn upstream(name: impl Into<String>) -> Self {
        Backend::Upstream { name: name.into() }
    }

    /// The upstream key when this backend proxies, `None` for direct responses and redirects.
    pub fn upstream_name(&self) -> Option<&str> {
        match self {
            Backend::Upstream { name } => Some(name),
            Backend::DirectResponse { .. } | Backend::Redirect { .. } => None,
        }
    }
}

/// One route: a path matcher and the backend it selects.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRule {
    /// Opaque identity used in metrics and error messages, e.g. `ns/ingress-name` or `routes[3]`.
    pub name: String,
    /// Rule path; must start with `/` (an empty `ImplementationSpecific` path means `/`).
    pub path: String,
    /// How `path` is compared.
    pub path_type: PathType,
    /// Treat an `ImplementationSpecific` path as a regex (like `arc-gateway.io/use-regex`).
    /// Ignored for `Exact` and `Prefix`, whose meaning the Ingress API fixes.
    pub regex: bool,
    /// What the route does.
    pub backend: Backend,
    /// Redirect plain-HTTP requests to HTTPS when the route's host has TLS.
    pub ssl_redirect: bool,
}

impl RouteRule {
    /// A rule with `regex` and `ssl_redirect` off.
    pub fn new(
        name: impl Into<String>,
        path: impl Into<String>,
        path_type: PathType,
        backend: Backend,
    ) -> Self {
        RouteRule {
            name: name.into(),
            path: path.into(),
            path_type,
            regex: false,
            backend,
            ssl_redirect: false,
        }
    }
}

/// The rules of one host (or of requests matching no host when `host` is `None`).
///
/// Several entries with the same host (e.g. from different Ingresses) are merged by
/// [`compile`](super::compile); for the same path the first entry in input order wins.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HostRules {
    /// Exact host (`app.example.com`) or wildcard (`*.example.com`); `None` (or an empty string)
    /// for host-less rules.
    pub host: Option<String>,
    /// Routes of this host, in input order.
    pub rules: Vec<RouteRule>,
    /// Serves this host's requests that no rule matches (an Ingress `defaultBackend` on an
    /// Ingress with rules).
    pub default_backend: Option<Backend>,
    /// The host is served over TLS (merged entries: any of them).
    pub tls: bool,
}

/// The whole input of [`compile`](super::compile).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RouteModel {
    /// Host entries in precedence order (callers put the oldest Ingress first).
    pub hosts: Vec<HostRules>,
    /// Cluster-wide catch-all for requests nothing else matched.
    pub default_backend: Option<Backend>,
}
