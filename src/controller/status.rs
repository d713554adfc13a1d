//! Ingress status: the addresses of `kubernetes.publish_service` written to
//! `status.loadBalancer.ingress` of every served Ingress, by the leader only.
//!
//! Which addresses, first match wins (ingress-nginx users expect this order):
//! 1. `kubernetes.publish_status_address` when set: published verbatim (IPs as `ip`, anything
//!    else as `hostname`), whatever the Service says — like ingress-nginx's
//!    `--publish-status-address`;
//! 2. the Service's LoadBalancer ingress (`status.loadBalancer.ingress`);
//! 3. an `ExternalName` Service: its `externalName` as hostname;
//! 4. the Service's `spec.externalIPs` (NodePort and LoadBalancer);
//! 5. a `NodePort` Service: the addresses (ExternalIP, else InternalIP) of the nodes where Arc's
//!    pods run — this replica's node (`NODE_NAME`, from the downward API) and the nodes of the
//!    ready endpoints of the Service's EndpointSlices (`endpoints[].nodeName`);
//! 6. the Service's ClusterIP(s).
//!
//! Nodes are read with `GET /api/v1/nodes/{name}` (RBAC: `nodes` → `get`, nothing more) only
//! when case 5 applies, and cached for [`NODE_TTL`]: a cluster-wide Node watch would wake the
//! recompile on every node status change and keep every Node in memory.
//! Writes are a merge PATCH on `ingresses/status` (RBAC: `ingresses/status` → `patch`), sent
//! only when the stored status differs, so a steady state makes no API calls. An Ingress Arc no
//! longer serves (class changed, now invalid) that still carries exactly Arc's addresses has
//! them removed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus,
};
use kube::Api;
use kube::api::{Patch, PatchParams};

/// How long a Node's address is reused before it is read again.
pub const NODE_TTL: Duration = Duration::from_secs(30);

fn entry(addr: &str) -> IngressLoadBalancerIngress {
    if addr.parse::<IpAddr>().is_ok() {
        IngressLoadBalancerIngress {
            ip: Some(addr.to_string()),
            ..IngressLoadBalancerIngress::default()
        }
    } else {
        IngressLoadBalancerIngress {
            hostname: Some(addr.to_string()),
            ..IngressLoadBalancerIngress::default()
        }
    }
}

/// The configured `publish_status_address` entries as status entries (order kept, duplicates
/// and blanks dropped).
pub fn static_addresses(list: &[String]) -> Vec<IngressLoadBalancerIngress> {
    let mut out: Vec<IngressLoadBalancerIngress> = Vec::new();
    for a in list.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let e = entry(a);
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

fn is_node_port(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort")
}

/// Whether publishing `svc` needs node addresses (case 5 of the module doc): a NodePort Service
/// without LoadBalancer ingress and without `externalIPs`.
pub fn needs_nodes(svc: &Service) -> bool {
    is_node_port(svc) && lb_ingress(svc).is_empty() && external_ips(svc).is_empty()
}

fn lb_ingress(svc: &Service) -> Vec<IngressLoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| {
            list.iter()
                .filter(|i| i.ip.is_some() || i.hostname.is_some())
                .map(|i| IngressLoadBalancerIngress {
                    ip: i.ip.clone(),
                    hostname: i.hostname.clone(),
                    ..IngressLoadBalancerIngress::default()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn external_ips(svc: &Service) -> Vec<String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| !ip.trim().is_empty())
        .collect()
}

/// Names of the nodes where Arc's pods run: `own_node` (this replica, `NODE_NAME`) and the
/// `nodeName` of every ready endpoint of `svc`'s EndpointSlices; sorted, unique.
pub fn arc_nodes(
    svc: &Service,
    slices: &[std::sync::Arc<EndpointSlice>],
    own_node: Option<&str>,
) -> Vec<String> {
    let ns = svc.metadata.namespace.as_deref();
    let name = svc.metadata.name.as_deref();
    let mut out: Vec<String> = own_node
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .into_iter()
        .collect();
    for slice in slices {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(String::as_str);
        if slice.metadata.namespace.as_deref() != ns || owner.is_none() || owner != name {
            continue;
        }
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let Some(n) = ep.node_name.as_deref()
                && ready
                && !n.is_empty()
            {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The address of `node` to publish: its first `ExternalIP`, else its first `InternalIP`.
pub fn node_address(node: &Node) -> Option<String> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    let first = |ty: &str| {
        addrs
            .iter()
            .find(|a| a.type_ == ty && !a.address.trim().is_empty())
            .map(|a| a.address.trim().to_string())
    };
    first("ExternalIP").or_else(|| first("InternalIP"))
}

/// The addresses to publish (the order of the module doc): `status_address` when not empty,
/// else from `svc` (`node_addrs` are used for a NodePort Service, see [`needs_nodes`]). Empty
/// when there is nothing to publish.
pub fn choose_addresses(
    status_address: &[String],
    svc: Option<&Service>,
    node_addrs: &[String],
) -> Vec<IngressLoadBalancerIngress> {
    let fixed = static_addresses(status_address);
    if !fixed.is_empty() {
        return fixed;
    }
    let Some(svc) = svc else {
        return Vec::new();
    };
    let lb = lb_ingress(svc);
    if !lb.is_empty() {
        return lb;
    }
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return spec
            .and_then(|s| s.external_name.as_deref())
            .filter(|n| !n.is_empty())
            .map(|n| {
                vec![IngressLoadBalancerIngress {
                    hostname: Some(n.to_string()),
                    ..IngressLoadBalancerIngress::default()
                }]
            })
            .unwrap_or_default();
    }
    let ext = external_ips(svc);
    if !ext.is_empty()
        && (is_node_port(svc) || spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
    {
        return static_addresses(&ext);
    }
    if is_node_port(svc) && !node_addrs.is_empty() {
        let mut sorted = node_addrs.to_vec();
        sorted.sort();
        return static_addresses(&sorted);
    }
    publish_addresses(svc)
}

/// `entries` as short strings (`192.0.2.1`, `lb.example.com`) for log lines.
pub fn shown(entries: &[IngressLoadBalancerIngress]) -> Vec<&str> {
    entries
        .iter()
        .filter_map(|e| e.ip.as_deref().or(e.hostname.as_deref()))
        .collect()
}

/// Node addresses read through the API, each reused for [`NODE_TTL`].
#[derive(Debug, Default)]
pub struct NodeCache {
    entries: HashMap<String, (Instant, Option<String>)>,
}

impl NodeCache {
    /// The addresses of `names` (nodes without a usable address are left out). A node read
    /// less than [`NODE_TTL`] before `now` is not read again; a failed read keeps the last
    /// known address and is retried next time.
    pub async fn addresses(
        &mut self,
        client: &kube::Client,
        names: &[String],
        now: Instant,
    ) -> Vec<String> {
        let api: Api<Node> = Api::all(client.clone());
        let mut out = Vec::new();
        for name in names {
            let fresh = self
                .entries
                .get(name)
                .filter(|(at, _)| now.saturating_duration_since(*at) < NODE_TTL)
                .map(|(_, a)| a.clone());
            let addr = match fresh {
                Some(a) => a,
                None => match api.get_opt(name).await {
                    Ok(node) => {
                        let a = node.as_ref().and_then(node_address);
                        if node.is_none() {
                            tracing::warn!(node = %name, "node of an Arc pod not found; its address is not published");
                        }
                        self.entries.insert(name.clone(), (now, a.clone()));
                        a
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "cannot read node; keeping its last address");
                        self.entries.get(name).and_then(|(_, a)| a.clone())
                    }
                },
            };
            if let Some(a) = addr
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
        self.entries.retain(|n, _| names.contains(n));
        out
    }
}

/// The addresses `svc` alone offers: LoadBalancer ingress, else ClusterIP(s).
pub fn publish_addresses(svc: &Service) -> Vec<IngressLoadBalancerIngress> {
    let lb = lb_ingress(svc);
    if !lb.is_empty() {
        return lb;
    }
    let spec = svc.spec.as_ref();
    let mut ips: Vec<String> = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = spec.and_then(|s| s.cluster_ip.clone())
    {
        ips.push(ip);
    }
    ips.into_iter()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .map(|ip| IngressLoadBalancerIngress {
            ip: Some(ip),
            ..IngressLoadBalancerIngress::default()
        })
        .collect()
}

/// Whether `ing` already carries exactly `want`.
pub fn status_matches(ing: &Ingress, want: &[IngressLoadBalancerIngress]) -> bool {
    let have = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or(&[]);
    have == want
}

/// Writes `want` to the status of `ing` (a merge PATCH on the status subresource); an empty
/// `want` removes the addresses.
pub async fn write_status(
    client: kube::Client,
    ing: &Ingress,
    want: &[IngressLoadBalancerIngress],
) -> Result<(), kube::Error> {
    let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
    let name = ing.metadata.name.as_deref().unwrap_or("");
    let api: Api<Ingress> = Api::namespaced(client, ns);
    let patch = if want.is_empty() {
        serde_json::json!({ "status": { "loadBalancer": { "ingress": null } } })
    } else {
        serde_json::json!({
            "status": { "loadBalancer": IngressLoadBalancerStatus { ingress: Some(want.to_vec()) } }
        })
    };
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}
