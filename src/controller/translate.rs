//! The only place Kubernetes objects become Arc's routing model.
//!
//! [`translate`] is a pure function from snapshots of the watched objects ([`Inputs`]) to a
//! [`Translation`]: the [`RouteModel`] to compile, the upstreams it references with their
//! endpoint addresses, the certificates of `kubernetes.io/tls` Secrets, the Ingresses Arc
//! serves (for status), and every [`Problem`] found (each becomes an Event on its object).
//!
//! Rules (SPEC §3):
//! - **Class**: `spec.ingressClassName` names an IngressClass whose `spec.controller` is ours;
//!   else the legacy annotation `kubernetes.io/ingress.class` equals `kubernetes.ingress_class`;
//!   else (neither set) an IngressClass of ours carries
//!   `ingressclass.kubernetes.io/is-default-class: "true"`. Ingresses of other classes are
//!   ignored completely (no routes, no Events, no status).
//! - **Backends** become upstreams keyed `namespace/service:port`. The Service port is found by
//!   number or name; endpoints come from the Service's EndpointSlices (label
//!   `kubernetes.io/service-name`), port matched by the Service port's name: ready endpoints
//!   (a missing `ready` condition counts as ready), or when none is ready the serving and
//!   terminating ones; IPv4 and IPv6 slices both count. `ExternalName` Services become
//!   an [`ExternalName`] target (`externalName`, port), resolved by DNS where the table is
//!   installed. Addresses stay `SocketAddr` from the EndpointSlice on. A missing Service or
//!   port gives an upstream without endpoints (503) and a warning Event.
//! - **Backend protocol**: `backend-protocol: HTTPS` (or the nginx alias) makes the Ingress's
//!   backends HTTPS upstreams, named `namespace/service:port/https` so the same Service can
//!   also be served plain by another Ingress. SNI is the Service host name
//!   (`service.namespace.svc`, or the `externalName`); the certificate is not verified, like
//!   ingress-nginx's default `proxy-ssl-verify off`.
//! - **Backend TLS** (only with `backend-protocol: HTTPS`; otherwise a warning Event):
//!   `proxy-ssl-verify` (`on`/`off`, `true`/`false`; default off) verifies chain and name;
//!   `proxy-ssl-secret` (`namespace/name`, the Ingress's own namespace only) names a
//!   `kubernetes.io/tls` or `Opaque` Secret (as ingress-nginx: a CA-only Secret made with
//!   `kubectl create secret generic --from-file=ca.crt` is `Opaque`) whose `ca.crt` is the CA
//!   bundle to verify with (without a Secret, verification uses the system roots) and whose
//!   non-empty `tls.crt`/`tls.key` are presented as client certificate; `proxy-ssl-name` replaces the Service host name for SNI
//!   and verification; `proxy-ssl-server-name: off` sends no SNI (default on, unlike
//!   ingress-nginx). `proxy-ssl-verify-depth`, `-ciphers`, `-protocols` are ignored with a
//!   warning. Non-default settings give the upstream a name of its own,
//!   `namespace/service:port/https-<hash of the settings>`. The PEM data is validated here.
//! - **Validity**: a bad annotation value, an invalid regex, a resource backend, a
//!   `backend-protocol` other than HTTP/HTTPS or any `*-snippet` annotation makes the whole Ingress invalid: it is not
//!   served, gets an Event and is counted; nothing else changes. Unknown `arc-gateway.io/*`
//!   annotations get a warning Event and are otherwise ignored.
//! - **Conflicts** on (host, path, pathType) and on the cluster-wide default backend: the oldest
//!   `creationTimestamp` wins, ties by namespace/name; the loser's rule is skipped with an Event.
//! - **TLS**: `spec.tls` hosts are TLS hosts (ssl-redirect on by default, per host, never for
//!   `/.well-known/acme-challenge/` — the routing table enforces that). Their Secret must be a
//!   valid `kubernetes.io/tls` Secret in the Ingress's namespace; otherwise the host keeps the
//!   default certificate and the Ingress gets an Event.
//!
//! No I/O, no clock: time-independent and tested on constructed objects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

pub use crate::desired::cluster::{BackendTls, ExternalName, SecretCert, UpstreamEndpoints};
use crate::proxy::tls::client::{ClientCertPem, digest, parse_ca_pem, parse_client_cert};
use crate::proxy::tls::{CertOrigin, LoadedCert};
use crate::routing::{Backend, HostRules, PathType, RouteModel, RouteRule};

pub mod fuzzing;

/// Annotation prefix of Arc's native annotations.
pub const ANNOTATION_PREFIX: &str = "arc-gateway.io/";
/// `true` makes `ImplementationSpecific` paths anchored, case-insensitive regexes.
pub const USE_REGEX: &str = "arc-gateway.io/use-regex";
/// `false` switches the default HTTP→HTTPS redirect of TLS hosts off.
pub const SSL_REDIRECT: &str = "arc-gateway.io/ssl-redirect";
/// `HTTP` (default) or `HTTPS` to the backend.
pub const BACKEND_PROTOCOL: &str = "arc-gateway.io/backend-protocol";
/// The legacy class annotation.
pub const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";
/// Marks the cluster's default IngressClass.
pub const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";
/// Label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `on`/`off`: verify the HTTPS backend's certificate chain and name (default off).
pub const PROXY_SSL_VERIFY: &str = "arc-gateway.io/proxy-ssl-verify";
/// `namespace/name` of a `kubernetes.io/tls` or `Opaque` Secret: `ca.crt` to verify with,
/// `tls.crt` and `tls.key` presented as client certificate.
pub const PROXY_SSL_SECRET: &str = "arc-gateway.io/proxy-ssl-secret";
/// Name sent as SNI and verified (default: the Service host name).
pub const PROXY_SSL_NAME: &str = "arc-gateway.io/proxy-ssl-name";
/// `on` (default)/`off`: whether SNI is sent to the HTTPS backend.
pub const PROXY_SSL_SERVER_NAME: &str = "arc-gateway.io/proxy-ssl-server-name";
/// Accepted for migration, ignored with a warning (rustls has no equivalent setting).
pub const PROXY_SSL_VERIFY_DEPTH: &str = "arc-gateway.io/proxy-ssl-verify-depth";
/// Accepted for migration, ignored with a warning (rustls picks its own safe suites).
pub const PROXY_SSL_CIPHERS: &str = "arc-gateway.io/proxy-ssl-ciphers";
/// Accepted for migration, ignored with a warning (TLS 1.2 and 1.3 are always offered).
pub const PROXY_SSL_PROTOCOLS: &str = "arc-gateway.io/proxy-ssl-protocols";
/// The ingress-nginx spellings Arc accepts for the same annotations (migration).
const NGINX_ALIASES: [(&str, &str); 10] = [
    ("nginx.ingress.kubernetes.io/use-regex", USE_REGEX),
    ("nginx.ingress.kubernetes.io/ssl-redirect", SSL_REDIRECT),
    (
        "nginx.ingress.kubernetes.io/backend-protocol",
        BACKEND_PROTOCOL,
    ),
    (
        "nginx.ingress.kubernetes.io/proxy-ssl-verify",
        PROXY_SSL_VERIFY,
    ),
    (
        "nginx.ingress.kubernetes.io/proxy-ssl-secret",
        PROXY_SSL_SECRET,
    ),
    ("nginx.ingress.kubernetes.io/proxy-ssl-name", PROXY_SSL_NAME),
    (
        "nginx.ingress.kubernetes.io/proxy-ssl-server-name",
        PROXY_SSL_SERVER_NAME,
    ),
    (
        "nginx.ingress.kubernetes.io/proxy-ssl-verify-depth",
        PROXY_SSL_VERIFY_DEPTH,
    ),
    (
        "nginx.ingress.kubernetes.io/proxy-ssl-ciphers",
        PROXY_SSL_CIPHERS,
    ),
    (
        "nginx.ingress.kubernetes.io/proxy-ssl-protocols",
        PROXY_SSL_PROTOCOLS,
    ),
];
const KNOWN_NATIVE: [&str; 10] = [
    USE_REGEX,
    SSL_REDIRECT,
    BACKEND_PROTOCOL,
    PROXY_SSL_VERIFY,
    PROXY_SSL_SECRET,
    PROXY_SSL_NAME,
    PROXY_SSL_SERVER_NAME,
    PROXY_SSL_VERIFY_DEPTH,
    PROXY_SSL_CIPHERS,
    PROXY_SSL_PROTOCOLS,
];

/// Which controller and class Arc answers for (`kubernetes.controller_name`, `.ingress_class`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSettings {
    /// `spec.controller` of Arc's IngressClasses.
    pub controller_name: String,
    /// Class name honoured in the legacy annotation.
    pub ingress_class: String,
}

/// Snapshots of the watched objects (order does not matter).
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    /// `kubernetes.io/tls` and `Opaque` Secrets (certificates of `spec.tls` come from the
    /// former only; `proxy-ssl-secret` takes either).
    pub secrets: Vec<Arc<Secret>>,
}

/// Identifies a Kubernetes object an Event or status write refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `Ingress`, `Secret`, `ConfigMap`, ...
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The object is not served at all.
    Invalid,
    /// Part of it is degraded (a rule skipped, a 503 backend, the default certificate).
    Warning,
}

/// One finding about one object; becomes an Event, a log line and (when invalid) a metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    pub object: ObjectKey,
    pub severity: Severity,
    /// PascalCase Event reason.
    pub reason: &'static str,
    pub message: String,
}

/// Everything [`translate`] produces.
#[derive(Debug, Default)]
pub struct Translation {
    pub model: RouteModel,
    pub upstreams: Vec<UpstreamEndpoints>,
    pub certs: Vec<SecretCert>,
    /// Ingresses of our class that are valid and served (status targets).
    pub served: Vec<Arc<Ingress>>,
    pub problems: Vec<Problem>,
}

impl Translation {
    /// Number of objects not served because they are invalid.
    pub fn invalid_objects(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Invalid)
            .map(|p| &p.object)
            .collect::<HashSet<_>>()
            .len()
    }
}

/// Key of an object (kind given by the caller).
pub fn object_key(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
    }
}

/// Whether `ing` belongs to Arc (see the module doc).
pub fn is_ours(ing: &Ingress, classes: &[Arc<IngressClass>], s: &ClassSettings) -> bool {
    let class_is_ours = |c: &IngressClass| {
        c.spec
            .as_ref()
            .and_then(|sp| sp.controller.as_deref())
            .is_some_and(|ctl| ctl == s.controller_name)
    };
    if let Some(name) = ing
        .spec
        .as_ref()
        .and_then(|sp| sp.ingress_class_name.as_deref())
    {
        return classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name) && class_is_ours(c));
    }
    if let Some(legacy) = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_CLASS))
    {
        return legacy == &s.ingress_class;
    }
    classes.iter().any(|c| {
        class_is_ours(c)
            && c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
    })
}

/// Per-Ingress settings read from annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Annotations {
    use_regex: bool,
    ssl_redirect: bool,
    /// `backend-protocol: HTTPS`.
    backend_https: bool,
    /// `proxy-ssl-verify`.
    ssl_verify: bool,
    /// `proxy-ssl-secret` as (annotation key as written, namespace, name).
    ssl_secret: Option<(String, String, String)>,
    /// `proxy-ssl-name`.
    ssl_name: Option<String>,
    /// `proxy-ssl-server-name` (default on).
    ssl_sni: bool,
    /// Backend TLS annotations present, as written (for the "no effect" warning).
    ssl_keys: Vec<String>,
}

impl Default for Annotations {
    fn default() -> Self {
        Annotations {
            use_regex: false,
            ssl_redirect: true,
            backend_https: false,
            ssl_verify: false,
            ssl_secret: None,
            ssl_name: None,
            ssl_sni: true,
            ssl_keys: Vec::new(),
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{key}: {other:?} is not \"true\" or \"false\"")),
    }
}

/// ingress-nginx's `on`/`off`; `true`/`false` are accepted too.
fn parse_on_off(key: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("{key}: {other:?} is not \"on\" or \"off\"")),
    }
}

/// `namespace/name` (a bare name means the Ingress's namespace, checked later).
fn parse_secret_ref(key: &str, v: &str) -> Result<(Option<String>, String), String> {
    let v = v.trim();
    let (ns, name) = match v.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, v),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !ok(name) || ns.is_some_and(|n| !ok(n)) {
        return Err(format!(
            "{key}: {v:?} is not a Secret reference of the form namespace/name"
        ));
    }
    Ok((ns.map(str::to_owned), name.to_owned()))
}

/// A warning Event: (reason, message).
type Warning = (&'static str, String);

/// Reads the annotations: Ok with warnings (unknown or ignored keys, as (reason, message)),
/// or Err with the reasons the Ingress is invalid. `ns` is the Ingress's namespace.
fn read_annotations(
    ann: Option<&BTreeMap<String, String>>,
    ns: &str,
) -> (Result<Annotations, Vec<String>>, Vec<Warning>) {
    let mut out = Annotations::default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let Some(ann) = ann else {
        return (Ok(out), warnings);
    };
    for (key, value) in ann {
        if key.ends_with("-snippet") {
            errors.push(format!(
                "{key}: snippet annotations are refused; Arc never renders user text into configuration"
            ));
            continue;
        }
        let canonical = NGINX_ALIASES
            .iter()
            .find(|(alias, _)| alias == key)
            .map_or(key.as_str(), |(_, native)| native);
        match canonical {
            USE_REGEX => match parse_bool(key, value) {
                Ok(b) => out.use_regex = b,
                Err(e) => errors.push(e),
            },
            SSL_REDIRECT => match parse_bool(key, value) {
                Ok(b) => out.ssl_redirect = b,
                Err(e) => errors.push(e),
            },
            BACKEND_PROTOCOL => match value.trim().to_ascii_uppercase().as_str() {
                "HTTP" => out.backend_https = false,
                "HTTPS" => out.backend_https = true,
                other => errors.push(format!("{key}: {other:?} is not HTTP or HTTPS")),
            },
            PROXY_SSL_VERIFY => {
                out.ssl_keys.push(key.clone());
                match parse_on_off(key, value) {
                    Ok(b) => out.ssl_verify = b,
                    Err(e) => errors.push(e),
                }
            }
            PROXY_SSL_SERVER_NAME => {
                out.ssl_keys.push(key.clone());
                match parse_on_off(key, value) {
                    Ok(b) => out.ssl_sni = b,
                    Err(e) => errors.push(e),
                }
            }
            PROXY_SSL_NAME => {
                out.ssl_keys.push(key.clone());
                let name = value.trim().trim_end_matches('.').to_ascii_lowercase();
                match rustls::pki_types::ServerName::try_from(name.as_str()) {
                    Ok(_) if !name.is_empty() => out.ssl_name = Some(name),
                    _ => errors.push(format!(
                        "{key}: {value:?} is not a valid DNS name or IP address"
                    )),
                }
            }
            PROXY_SSL_SECRET => {
                out.ssl_keys.push(key.clone());
                match parse_secret_ref(key, value) {
                    Ok((Some(other), name)) if other != ns => errors.push(format!(
                        "{key}: Secret {other}/{name} is not in the Ingress's namespace {ns:?}; only Secrets of the Ingress's own namespace are allowed"
                    )),
                    Ok((_, name)) => out.ssl_secret = Some((key.clone(), ns.to_owned(), name)),
                    Err(e) => errors.push(e),
                }
            }
            PROXY_SSL_VERIFY_DEPTH | PROXY_SSL_CIPHERS | PROXY_SSL_PROTOCOLS => {
                warnings.push((
                    "IgnoredAnnotation",
                    format!(
                        "{key}: not supported (TLS to backends uses rustls' own verification depth, TLS 1.2/1.3 and cipher suites), ignored"
                    ),
                ));
            }
            k if k.starts_with(ANNOTATION_PREFIX) && !KNOWN_NATIVE.contains(&k) => {
                warnings.push((
                    "UnknownAnnotation",
                    format!("{key}: unknown Arc annotation, ignored"),
                ));
            }
            _ => {}
        }
    }
    if !out.backend_https && !out.ssl_keys.is_empty() {
        warnings.push((
            "IgnoredAnnotation",
            format!(
                "{}: has no effect without backend-protocol: HTTPS",
                out.ssl_keys.join(", ")
            ),
        ));
    }
    if errors.is_empty() {
        (Ok(out), warnings)
    } else {
        (Err(errors), warnings)
    }
}

fn creation_order(ing: &Ingress) -> (Option<i128>, String, String) {
    let ts = ing
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond());
    (
        ts,
        ing.metadata.namespace.clone().unwrap_or_default(),
        ing.metadata.name.clone().unwrap_or_default(),
    )
}

/// Orders oldest first; objects without a timestamp sort last; ties by namespace/name.
fn older_first(a: &Ingress, b: &Ingress) -> std::cmp::Ordering {
    let (ta, na, ma) = creation_order(a);
    let (tb, nb, mb) = creation_order(b);
    let t = match (ta, tb) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    };
    t.then(na.cmp(&nb)).then(ma.cmp(&mb))
}

/// Lookup tables over the inputs.
struct Index<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
}

impl<'a> Index<'a> {
    fn new(inputs: &'a Inputs) -> Self {
        let ns_name = |m: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                m.namespace.as_deref().unwrap_or(""),
                m.name.as_deref().unwrap_or(""),
            )
        };
        let services = inputs
            .services
            .iter()
            .map(|s| (ns_name(&s.metadata), s.as_ref()))
            .collect();
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in &inputs.slices {
            let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            slices
                .entry((s.metadata.namespace.as_deref().unwrap_or(""), svc.as_str()))
                .or_default()
                .push(s);
        }
        let secrets = inputs
            .secrets
            .iter()
            .map(|s| (ns_name(&s.metadata), s.as_ref()))
            .collect();
        Index {
            services,
            slices,
            secrets,
        }
    }
}

/// Outcome of resolving one Ingress backend.
struct Resolved {
    upstream: UpstreamEndpoints,
    warning: Option<(&'static str, String)>,
}

/// An EndpointSlice address with its port; `None` when either is malformed.
fn endpoint_addr(ip: &str, port: i32) -> Option<SocketAddr> {
    let ip: IpAddr = ip.parse().ok()?;
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// Endpoints of `port_name` across a Service's slices: ready ones, or serving+terminating when
/// none is ready.
fn slice_endpoints(slices: &[&EndpointSlice], port_name: &str) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut fallback = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice.ports.as_ref().and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| p.port)
        }) else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.as_ref();
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for a in &ep.addresses {
                let Some(addr) = endpoint_addr(a, port) else {
                    continue;
                };
                if is_ready && !terminating {
                    ready.push(addr);
                } else if serving && terminating {
                    fallback.push(addr);
                }
            }
        }
    }
    let mut out = if ready.is_empty() { fallback } else { ready };
    out.sort();
    out.dedup();
    out
}

/// The Ingress's backend TLS settings once its Secret is read (see [`backend_tls_settings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsSettings {
    verify: bool,
    sni: bool,
    name: Option<String>,
    /// `namespace/name` of the Secret, part of the upstream's identity.
    secret: Option<String>,
    ca_pem: Option<Arc<[u8]>>,
    client_cert: Option<ClientCertPem>,
}

/// Reads and validates the `proxy-ssl-secret` of an HTTPS Ingress; errors name the
/// annotation and the Secret.
fn backend_tls_settings(idx: &Index<'_>, ann: &Annotations) -> Result<TlsSettings, String> {
    let mut out = TlsSettings {
        verify: ann.ssl_verify,
        sni: ann.ssl_sni,
        name: ann.ssl_name.clone(),
        secret: None,
        ca_pem: None,
        client_cert: None,
    };
    let Some((key, ns, name)) = &ann.ssl_secret else {
        return Ok(out);
    };
    let Some(secret) = idx.secrets.get(&(ns.as_str(), name.as_str())) else {
        return Err(format!(
            "{key}: Secret {ns}/{name} not found (it must exist and be of type kubernetes.io/tls or Opaque)"
        ));
    };
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if !matches!(kind, "kubernetes.io/tls" | "Opaque") {
        return Err(format!(
            "{key}: Secret {ns}/{name} is of type {kind}; it must be kubernetes.io/tls or Opaque"
        ));
    }
    let data = secret.data.as_ref();
    let get = |k: &str| {
        data.and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
    };
    if out.verify {
        let Some(ca) = get("ca.crt") else {
            return Err(format!(
                "{key}: Secret {ns}/{name} has no ca.crt, needed with proxy-ssl-verify on"
            ));
        };
        parse_ca_pem(ca).map_err(|e| format!("{key}: Secret {ns}/{name} ca.crt: {e}"))?;
        out.ca_pem = Some(Arc::from(ca));
    }
    match (get("tls.crt"), get("tls.key")) {
        (Some(chain), Some(k)) => {
            let cert = ClientCertPem {
                chain: Arc::from(chain),
                key: Arc::from(k),
            };
            parse_client_cert(&cert)
                .map_err(|e| format!("{key}: Secret {ns}/{name} tls.crt/tls.key: {e}"))?;
            out.client_cert = Some(cert);
        }
        (None, None) => {}
        _ => {
            return Err(format!(
                "{key}: Secret {ns}/{name} has only one of tls.crt and tls.key"
            ));
        }
    }
    out.secret = Some(format!("{ns}/{name}"));
    Ok(out)
}

fn resolve_backend(
    idx: &Index<'_>,
    ns: &str,
    b: &IngressBackend,
    https: Option<&TlsSettings>,
) -> Result<Resolved, String> {
    let mut r = resolve_plain_backend(idx, ns, b)?;
    if let Some(settings) = https
        && let Some(svc_ref) = &b.service
    {
        let external = r.upstream.external.as_ref().map(|e| e.host.clone());
        let service_host = external.unwrap_or_else(|| format!("{}.{ns}.svc", svc_ref.name));
        let server_name = settings.name.clone().unwrap_or(service_host.clone());
        let defaults = !settings.verify
            && settings.sni
            && settings.secret.is_none()
            && server_name == service_host;
        if defaults {
            r.upstream.name.push_str("/https");
        } else {
            // Stable across restarts and certificate rotations: the settings, not the PEM.
            let id = format!(
                "verify={}\nsni={}\nname={server_name}\nsecret={}",
                settings.verify,
                settings.sni,
                settings.secret.as_deref().unwrap_or("")
            );
            let d = digest(id.as_bytes());
            r.upstream.name.push_str("/https-");
            for b in d.iter().take(4) {
                r.upstream.name.push_str(&format!("{b:02x}"));
            }
        }
        r.upstream.tls = Some(BackendTls {
            server_name,
            sni: settings.sni,
            verify: settings.verify,
            ca_pem: settings.ca_pem.clone(),
            client_cert: settings.client_cert.clone(),
        });
    }
    Ok(r)
}

fn resolve_plain_backend(
    idx: &Index<'_>,
    ns: &str,
    b: &IngressBackend,
) -> Result<Resolved, String> {
    let Some(svc_ref) = &b.service else {
        return Err("resource backends are not supported; use a service backend".into());
    };
    let port_ref = svc_ref.port.as_ref();
    let (port_num, port_name) = (
        port_ref.and_then(|p| p.number),
        port_ref.and_then(|p| p.name.clone()),
    );
    let port_label = match (&port_num, &port_name) {
        (Some(n), _) => n.to_string(),
        (None, Some(n)) => n.clone(),
        (None, None) => return Err(format!("service {}: no port given", svc_ref.name)),
    };
    let name = format!("{ns}/{}:{port_label}", svc_ref.name);
    let empty = |reason: &'static str, msg: String| Resolved {
        upstream: UpstreamEndpoints {
            name: name.clone(),
            addrs: Vec::new(),
            external: None,
            tls: None,
        },
        warning: Some((reason, msg)),
    };
    let Some(svc) = idx.services.get(&(ns, svc_ref.name.as_str())) else {
        return Ok(empty(
            "ServiceNotFound",
            format!(
                "service {ns}/{} not found; its paths answer 503",
                svc_ref.name
            ),
        ));
    };
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
    let found = ports.iter().find(|p| match (&port_num, &port_name) {
        (Some(n), _) => p.port == *n,
        (None, Some(n)) => p.name.as_deref() == Some(n.as_str()),
        (None, None) => false,
    });
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        let Some(host) = spec.and_then(|s| s.external_name.as_deref()) else {
            return Ok(empty(
                "ServiceNotFound",
                format!(
                    "service {ns}/{}: ExternalName without externalName",
                    svc_ref.name
                ),
            ));
        };
        let port = match (port_num, found) {
            (Some(n), _) => Some(n),
            (None, Some(p)) => Some(p.port),
            (None, None) => None,
        };
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
            return Ok(empty(
                "ServicePortNotFound",
                format!("service {ns}/{} has no port {port_label}", svc_ref.name),
            ));
        };
        return Ok(Resolved {
            upstream: UpstreamEndpoints {
                name,
                addrs: Vec::new(),
                external: Some(ExternalName {
                    host: host.trim_end_matches('.').to_owned(),
                    port,
                }),
                tls: None,
            },
            warning: None,
        });
    }
    let Some(sp) = found else {
        return Ok(empty(
            "ServicePortNotFound",
            format!(
                "service {ns}/{} has no port {port_label}; its paths answer 503",
                svc_ref.name
            ),
        ));
    };
    let slices = idx
        .slices
        .get(&(ns, svc_ref.name.as_str()))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let addrs = slice_endpoints(slices, sp.name.as_deref().unwrap_or(""));
    Ok(Resolved {
        upstream: UpstreamEndpoints {
            name,
            addrs,
            external: None,
            tls: None,
        },
        warning: None,
    })
}

/// Checks a regex path the way the routing table will compile it (anchored, case-insensitive).
fn check_regex(path: &str) -> Result<(), String> {
    regex::RegexBuilder::new(&format!("^(?:{path})"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map(drop)
        .map_err(|e| format!("path {path:?} is not a valid regex: {e}"))
}

/// Certificates of one Ingress's `spec.tls` entries, and problems for the bad ones.
fn secret_cert(
    idx: &Index<'_>,
    ns: &str,
    secret_name: &str,
) -> Result<LoadedCert, (&'static str, String)> {
    let Some(secret) = idx.secrets.get(&(ns, secret_name)) else {
        return Err((
            "TLSSecretNotFound",
            format!(
                "TLS secret {ns}/{secret_name} not found (or not of type kubernetes.io/tls); its hosts use the default certificate"
            ),
        ));
    };
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err((
            "TLSSecretInvalid",
            format!("secret {ns}/{secret_name} is not of type kubernetes.io/tls"),
        ));
    }
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    let (Some(cert), Some(key)) = (get("tls.crt"), get("tls.key")) else {
        return Err((
            "TLSSecretInvalid",
            format!("secret {ns}/{secret_name} lacks tls.crt or tls.key"),
        ));
    };
    LoadedCert::from_pem(
        CertOrigin::Secret {
            namespace: ns.to_string(),
            name: secret_name.to_string(),
        },
        cert,
        key,
    )
    .map_err(|e| {
        (
            "TLSSecretInvalid",
            format!("{e}; its hosts use the default certificate"),
        )
    })
}

/// One path of one Ingress before conflict resolution.
struct Candidate {
    host: Option<String>,
    rule: RouteRule,
}

/// What one valid Ingress contributes.
struct Contribution {
    candidates: Vec<Candidate>,
    /// Host default backends (Ingress with rules and `defaultBackend`).
    host_defaults: Vec<(Option<String>, Backend)>,
    /// Cluster-wide catch-all candidate (rule-less Ingress).
    catch_all: Option<Backend>,
    tls_hosts: HashSet<String>,
    certs: Vec<SecretCert>,
    upstreams: Vec<UpstreamEndpoints>,
    warnings: Vec<(&'static str, String)>,
}

fn contribute(idx: &Index<'_>, ing: &Ingress) -> Result<Contribution, Vec<String>> {
    let ns = ing.metadata.namespace.as_deref().unwrap_or("");
    let (ann, ann_warnings) = read_annotations(ing.metadata.annotations.as_ref(), ns);
    let (ann, mut errors) = match ann {
        Ok(a) => (a, Vec::new()),
        Err(e) => (Annotations::default(), e),
    };
    let tls_settings = if ann.backend_https {
        match backend_tls_settings(idx, &ann) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(e);
                None
            }
        }
    } else {
        None
    };
    let name = format!("{ns}/{}", ing.metadata.name.as_deref().unwrap_or(""));
    let mut c = Contribution {
        candidates: Vec::new(),
        host_defaults: Vec::new(),
        catch_all: None,
        tls_hosts: HashSet::new(),
        certs: Vec::new(),
        upstreams: Vec::new(),
        warnings: ann_warnings,
    };
    let Some(spec) = ing.spec.as_ref() else {
        return Err(vec!["spec missing".into()]);
    };
    let backend_of = |b: &IngressBackend, c: &mut Contribution| -> Result<Backend, String> {
        let r = resolve_backend(idx, ns, b, tls_settings.as_ref())?;
        if let Some(w) = r.warning {
            c.warnings.push(w);
        }
        let key = r.upstream.name.clone();
        if !c.upstreams.iter().any(|u| u.name == key) {
            c.upstreams.push(r.upstream);
        }
        Ok(Backend::upstream(key))
    };
    for tls in spec.tls.as_deref().unwrap_or(&[]) {
        let hosts: Vec<String> = tls
            .hosts
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        c.tls_hosts.extend(hosts.iter().cloned());
        let Some(secret_name) = tls.secret_name.as_deref() else {
            continue;
        };
        match secret_cert(idx, ns, secret_name) {
            Ok(cert) => c.certs.push(SecretCert { hosts, cert }),
            Err(w) => c.warnings.push(w),
        }
    }
    let default = match spec.default_backend.as_ref() {
        Some(b) => match backend_of(b, &mut c) {
            Ok(be) => Some(be),
            Err(e) => {
                errors.push(format!("defaultBackend: {e}"));
                None
            }
        },
        None => None,
    };
    let rules = spec.rules.as_deref().unwrap_or(&[]);
    if rules.is_empty() {
        c.catch_all = default.clone();
    }
    let mut hosts_seen: Vec<Option<String>> = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let host = rule
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase);
        if !hosts_seen.contains(&host) {
            hosts_seen.push(host.clone());
        }
        let tls_host = host.as_ref().is_some_and(|h| c.tls_hosts.contains(h));
        let Some(http) = rule.http.as_ref() else {
            continue;
        };
        for (pi, p) in http.paths.iter().enumerate() {
            let path_type = match p.path_type.as_str() {
                "Exact" => PathType::Exact,
                "Prefix" => PathType::Prefix,
                "ImplementationSpecific" => PathType::ImplementationSpecific,
                other => {
                    errors.push(format!(
                        "rules[{ri}].http.paths[{pi}].pathType: {other:?} is not Exact, Prefix or ImplementationSpecific"
                    ));
                    continue;
                }
            };
            let path = p
                .path
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/".into());
            let regex = ann.use_regex && path_type == PathType::ImplementationSpecific;
            if regex {
                if let Err(e) = check_regex(&path) {
                    errors.push(format!("rules[{ri}].http.paths[{pi}]: {e}"));
                    continue;
                }
            } else if !path.starts_with('/') {
                errors.push(format!(
                    "rules[{ri}].http.paths[{pi}].path: {path:?} must start with /"
                ));
                continue;
            }
            let backend = match backend_of(&p.backend, &mut c) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(format!("rules[{ri}].http.paths[{pi}].backend: {e}"));
                    continue;
                }
            };
            let mut r = RouteRule::new(name.clone(), path, path_type, backend);
            r.regex = regex;
            r.ssl_redirect = tls_host && ann.ssl_redirect;
            c.candidates.push(Candidate {
                host: host.clone(),
                rule: r,
            });
        }
    }
    if let Some(d) = default.filter(|_| !rules.is_empty()) {
        for h in hosts_seen {
            c.host_defaults.push((h, d.clone()));
        }
    }
    if errors.is_empty() {
        Ok(c)
    } else {
        Err(errors)
    }
}

/// Turns the watched objects into the routing model (see the module doc for the rules).
pub fn translate(inputs: &Inputs, settings: &ClassSettings) -> Translation {
    let idx = Index::new(inputs);
    let mut ours: Vec<&Arc<Ingress>> = inputs
        .ingresses
        .iter()
        .filter(|i| is_ours(i, &inputs.classes, settings))
        .collect();
    ours.sort_by(|a, b| older_first(a, b));

    let mut out = Translation::default();
    let mut claimed: HashMap<(Option<String>, String, PathType), String> = HashMap::new();
    let mut host_index: HashMap<Option<String>, usize> = HashMap::new();
    let mut catch_all_owner: Option<String> = None;
    let mut upstream_names: HashSet<String> = HashSet::new();

    for ing in ours {
        let key = object_key("Ingress", &ing.metadata);
        let me = format!("{}/{}", key.namespace, key.name);
        let c = match contribute(&idx, ing) {
            Ok(c) => c,
            Err(errors) => {
                out.problems.push(Problem {
                    object: key,
                    severity: Severity::Invalid,
                    reason: "InvalidIngress",
                    message: format!("not served: {}", errors.join("; ")),
                });
                continue;
            }
        };
        for (reason, message) in c.warnings {
            out.problems.push(Problem {
                object: key.clone(),
                severity: Severity::Warning,
                reason,
                message,
            });
        }
        let mut entry_of = |host: &Option<String>, model: &mut RouteModel| -> usize {
            *host_index.entry(host.clone()).or_insert_with(|| {
                model.hosts.push(HostRules {
                    host: host.clone(),
                    ..HostRules::default()
                });
                model.hosts.len() - 1
            })
        };
        for cand in c.candidates {
            let k = (
                cand.host.clone(),
                cand.rule.path.clone(),
                cand.rule.path_type,
            );
            if let Some(owner) = claimed.get(&k) {
                out.problems.push(Problem {
                    object: key.clone(),
                    severity: Severity::Warning,
                    reason: "RuleConflict",
                    message: format!(
                        "host {} path {} ({}) is already served by the older Ingress {owner}; this rule is skipped",
                        cand.host.as_deref().unwrap_or("*"),
                        cand.rule.path,
                        cand.rule.path_type
                    ),
                });
                continue;
            }
            claimed.insert(k, me.clone());
            let i = entry_of(&cand.host, &mut out.model);
            if let Some(h) = out.model.hosts.get_mut(i) {
                h.rules.push(cand.rule);
            }
        }
        for (host, backend) in c.host_defaults {
            let i = entry_of(&host, &mut out.model);
            if let Some(h) = out.model.hosts.get_mut(i)
                && h.default_backend.is_none()
            {
                h.default_backend = Some(backend);
            }
        }
        for h in &c.tls_hosts {
            let host = Some(h.clone());
            if let Some(&i) = host_index.get(&host)
                && let Some(entry) = out.model.hosts.get_mut(i)
            {
                entry.tls = true;
            }
        }
        if let Some(b) = c.catch_all {
            match &catch_all_owner {
                Some(owner) => out.problems.push(Problem {
                    object: key.clone(),
                    severity: Severity::Warning,
                    reason: "DefaultBackendConflict",
                    message: format!(
                        "the cluster-wide default backend is already set by the older Ingress {owner}"
                    ),
                }),
                None => {
                    catch_all_owner = Some(me.clone());
                    out.model.default_backend = Some(b);
                }
            }
        }
        out.certs.extend(c.certs);
        for u in c.upstreams {
            if upstream_names.insert(u.name.clone()) {
                out.upstreams.push(u);
            }
        }
        out.served.push(Arc::clone(ing));
    }
    out
}
