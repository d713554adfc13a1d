//! The table of kinds the emulator serves, and the discovery documents built from it
//! (`/api`, `/apis`, group/version resource lists and a minimal OpenAPI v3 index).

use serde_json::{Value, json};

/// Where a kind's objects live and how the server treats them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version inside the group.
    pub version: &'static str,
    /// Plural resource name used in URLs.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// `kind` of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names advertised in discovery (used by kubectl).
    pub short_names: &'static [&'static str],
    /// Whether the kind has a `status` subresource.
    pub has_status: bool,
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub generation: bool,
    /// Storage key; two served resources with the same key share objects (core and
    /// events.k8s.io Events).
    pub storage: &'static str,
    /// Objects are stored in core/v1 Event form and converted on the way in and out.
    pub events_v1_view: bool,
}

impl ResourceKind {
    /// `apiVersion` string of this kind (`v1`, `networking.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Name used in error messages: `configmaps` or `ingresses.networking.k8s.io`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Kind used in `Invalid` messages: `Secret` or `Ingress.networking.k8s.io`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether names must be DNS-1123 labels rather than subdomains.
    pub fn name_is_label(&self) -> bool {
        self.plural == "namespaces"
    }

    /// Whether names must be DNS-1035 labels (Services).
    pub fn name_is_dns1035(&self) -> bool {
        self.plural == "services" && self.group.is_empty()
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceKind {
    ResourceKind {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names: &[],
        has_status: false,
        generation: false,
        storage: plural,
        events_v1_view: false,
    }
}

/// The API group of the `ArcPolicy` custom resource.
pub const ARC_GROUP: &str = "arc-gateway.io";

/// Every kind the emulator serves.
pub static RESOURCES: &[ResourceKind] = &[
    ResourceKind {
        short_names: &["ns"],
        has_status: true,
        ..kind("", "v1", "namespaces", "namespace", "Namespace", false)
    },
    ResourceKind {
        short_names: &["svc"],
        has_status: true,
        ..kind("", "v1", "services", "service", "Service", true)
    },
    kind("", "v1", "secrets", "secret", "Secret", true),
    ResourceKind {
        short_names: &["cm"],
        ..kind("", "v1", "configmaps", "configmap", "ConfigMap", true)
    },
    ResourceKind {
        short_names: &["ev"],
        ..kind("", "v1", "events", "event", "Event", true)
    },
    ResourceKind {
        short_names: &["no"],
        has_status: true,
        ..kind("", "v1", "nodes", "node", "Node", false)
    },
    ResourceKind {
        short_names: &["ing"],
        has_status: true,
        generation: true,
        ..kind(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "ingress",
            "Ingress",
            true,
        )
    },
    ResourceKind {
        generation: true,
        ..kind(
            "networking.k8s.io",
            "v1",
            "ingressclasses",
            "ingressclass",
            "IngressClass",
            false,
        )
    },
    ResourceKind {
        generation: true,
        ..kind(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
        )
    },
    kind(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
    ),
    ResourceKind {
        short_names: &["ev"],
        storage: "events",
        events_v1_view: true,
        ..kind("events.k8s.io", "v1", "events", "event", "Event", true)
    },
    ResourceKind {
        short_names: &["crd", "crds"],
        has_status: true,
        generation: true,
        ..kind(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
        )
    },
    ResourceKind {
        has_status: true,
        generation: true,
        ..kind(
            ARC_GROUP,
            "v1alpha1",
            "arcpolicies",
            "arcpolicy",
            "ArcPolicy",
            true,
        )
    },
];

/// Finds the served resource for a group, version and plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds the served resource of a namespace (used by the store's cascade on namespace delete).
pub fn namespaces() -> &'static ResourceKind {
    &RESOURCES[0]
}

/// Distinct (group, version) pairs, in table order, excluding the core group.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Whether a group/version is served.
pub fn serves_group_version(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api`: the legacy core group versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn api_group(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `/apis`: every named group.
pub fn api_group_list() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.into_iter().map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`: one group, if served.
pub fn api_group_doc(group: &str) -> Option<Value> {
    if group_versions().iter().any(|(g, _)| *g == group) {
        let mut doc = api_group(group);
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("kind".into(), json!("APIGroup"));
            obj.insert("apiVersion".into(), json!("v1"));
        }
        Some(doc)
    } else {
        None
    }
}

/// `/api/v1` or `/apis/{group}/{version}`: the resource list, with status subresources.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    if !serves_group_version(group, version) {
        return None;
    }
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if r.group == ARC_GROUP {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

fn openapi_path_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(group_versions());
    for (g, v) in gvs {
        let key = openapi_path_key(g, v);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=arc-emulator-1")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{api/v1 | apis/g/v}`: a minimal document. It declares, for each kind, a PATCH
/// operation that accepts the `fieldValidation` query parameter, so kubectl leaves field
/// validation to the server instead of needing full schemas. Schemas themselves are open.
pub fn openapi_v3_doc(path: &str) -> Option<Value> {
    let (group, version) = if let Some(v) = path.strip_prefix("api/") {
        ("", v)
    } else {
        let rest = path.strip_prefix("apis/")?;
        rest.split_once('/')?
    };
    if !serves_group_version(group, version) {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let url = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        paths.insert(
            url,
            json!({
                "patch": {
                    "operationId": format!("patch{}", r.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                        {"name": "dryRun", "in": "query", "schema": {"type": "string"}}
                    ],
                    "requestBody": {"content": {
                        "application/apply-patch+yaml": {"schema": {"type": "object"}},
                        "application/json-patch+json": {"schema": {"type": "object"}},
                        "application/merge-patch+json": {"schema": {"type": "object"}}
                    }},
                    "responses": {"200": {"description": "OK"}}
                }
            }),
        );
        let schema_name = format!(
            "{}.{}.{}",
            if group.is_empty() { "core" } else { group },
            version,
            r.kind
        );
        schemas.insert(
            schema_name,
            json!({
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [gvk]
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (Arc emulator)", "version": "v1.36.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}

/// `/version`.
pub fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": "36",
        "gitVersion": "v1.36.0-arc-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_both_event_views_sharing_storage() {
        let core = lookup("", "v1", "events").map(|r| r.storage);
        let new = lookup("events.k8s.io", "v1", "events").map(|r| (r.storage, r.events_v1_view));
        assert_eq!(core, Some("events"));
        assert_eq!(new, Some(("events", true)));
        assert!(lookup("", "v1", "pods").is_none());
    }

    #[test]
    fn resource_list_includes_status_subresource() {
        let doc = api_resource_list("networking.k8s.io", "v1").unwrap_or(Value::Null);
        let names: Vec<&str> = doc["resources"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            vec!["ingresses", "ingresses/status", "ingressclasses"]
        );
    }

    #[test]
    fn group_list_contains_arc_group() {
        let doc = api_group_list();
        let found = doc["groups"]
            .as_array()
            .map(|g| g.iter().any(|g| g["name"] == ARC_GROUP))
            .unwrap_or(false);
        assert!(found);
    }
}
