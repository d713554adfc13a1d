//! What the Kubernetes controller hands in: the routing model, the upstreams of the Ingress
//! backends with their endpoint addresses, and the certificates of `kubernetes.io/tls` Secrets.
//!
//! These types are kube-free on purpose: `controller::translate` fills them from the watched
//! objects (addresses typed as `SocketAddr` from the EndpointSlice on, never formatted and
//! parsed back), and [`super::from_cluster`] turns them into a [`super::DesiredState`] under
//! the configuration's upstream defaults and limits.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proxy::tls::LoadedCert;
use crate::proxy::tls::client::ClientCertPem;
use crate::routing::RouteModel;

/// What the data plane installs in Kubernetes mode: routing model, upstream endpoints, Secret
/// certificates.
#[derive(Debug)]
pub struct ClusterState {
    pub model: RouteModel,
    pub upstreams: Vec<UpstreamEndpoints>,
    pub certs: Vec<SecretCert>,
}

/// Endpoints of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamEndpoints {
    /// `namespace/service:port` (`.../https` for HTTPS backends).
    pub name: String,
    /// Endpoint addresses: from the Service's EndpointSlices, or the resolved
    /// [`UpstreamEndpoints::external`] name.
    pub addrs: Vec<SocketAddr>,
    /// The target of an `ExternalName` Service, resolved by DNS into `addrs` where the table is
    /// installed (the controller, before it publishes).
    pub external: Option<ExternalName>,
    /// TLS towards the endpoints (`backend-protocol: HTTPS`); `None` = plain HTTP.
    pub tls: Option<BackendTls>,
}

/// A DNS name and port to resolve (`ExternalName` Services).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalName {
    /// Without the trailing dot.
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ExternalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// TLS settings of an HTTPS backend (by default verification off, as ingress-nginx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    /// Sent as SNI and verified: `proxy-ssl-name`, else the Service's host name.
    pub server_name: String,
    /// Whether SNI is sent (`proxy-ssl-server-name`, default on).
    pub sni: bool,
    /// Verify the chain and the name (`proxy-ssl-verify`).
    pub verify: bool,
    /// CA bundle to verify with (`ca.crt` of `proxy-ssl-secret`); `None` = system roots.
    pub ca_pem: Option<Arc<[u8]>>,
    /// Client certificate presented (`tls.crt`/`tls.key` of `proxy-ssl-secret`).
    pub client_cert: Option<ClientCertPem>,
}

impl BackendTls {
    /// The default settings: SNI `server_name`, no verification, no client certificate.
    pub fn insecure(server_name: impl Into<String>) -> Self {
        BackendTls {
            server_name: server_name.into(),
            sni: true,
            verify: false,
            ca_pem: None,
            client_cert: None,
        }
    }
}

/// A loaded certificate with the hosts it serves.
#[derive(Debug, Clone)]
pub struct SecretCert {
    pub hosts: Vec<String>,
    pub cert: LoadedCert,
}
