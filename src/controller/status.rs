//! Ingress status: the addresses of `kubernetes.publish_service` written to
//! `status.loadBalancer.ingress` of every served Ingress, by the leader only.
//!
//! The address is the Service's LoadBalancer ingress when it has one, else its ClusterIP(s).
//! Writes are a merge PATCH on `ingresses/status` (RBAC: `ingresses/status` → `patch`), sent
//! only when the stored status differs, so a steady state makes no API calls. An Ingress Arc no
//! longer serves (class changed, now invalid) that still carries exactly Arc's addresses has
//! them removed.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus,
};
use kube::Api;
use kube::api::{Patch, PatchParams};

/// The addresses to publish for `svc`.
pub fn publish_addresses(svc: &Service) -> Vec<IngressLoadBalancerIngress> {
    let lb: Vec<IngressLoadBalancerIngress> = svc
        .status
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
        .unwrap_or_default();
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
