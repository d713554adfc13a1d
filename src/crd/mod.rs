//! Custom resource definitions Arc serves: the `ArcPolicy` kind (`arc-gateway.io/v1alpha1`).
//!
//! An `ArcPolicy` targets one Ingress or Service in its own namespace and carries what
//! annotations express badly: rate limits, retries, timeouts, circuit breaking, outlier
//! detection, active health checks, concurrency limits, header rules and authentication. This
//! room owns the typed spec and status and the CRD YAML that `arc-gateway crdgen` prints (and
//! `crds/` holds); it gives the fields no behaviour.

#![forbid(unsafe_code)]

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration string as Arc's configuration writes it: digits and a unit (`500ms`, `5s`, `2m`,
/// `1h`).
const DURATION_PATTERN: &str = r"^[0-9]+(ms|s|m|h)$";

/// Traffic policy for one Ingress or Service.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "arc-gateway.io",
    version = "v1alpha1",
    kind = "ArcPolicy",
    plural = "arcpolicies",
    singular = "arcpolicy",
    shortname = "arcpol",
    category = "arc-gateway",
    namespaced,
    status = "ArcPolicyStatus",
    derive = "PartialEq",
    doc = "Traffic policy (rate limits, retries, timeouts, circuit breaking, outlier detection, health checks, concurrency, headers, auth) for one Ingress or Service.",
    printcolumn = r#"{"name":"Target-Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ArcPolicySpec {
    /// The Ingress or Service (in the policy's namespace) this policy applies to.
    pub target_ref: PolicyTargetRef,
    /// Request rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Retries of failed upstream attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Upstream and request timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Limits on outstanding work towards the upstream as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Passive ejection of misbehaving endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Active HTTP health checks of the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Concurrent requests allowed, with an optional wait queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyLimit>,
    /// Header changes on requests and responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRules>,
    /// Authentication required before a request is proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

/// Kinds a policy can target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetKind {
    Ingress,
    Service,
}

/// Reference to the object a policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// `Ingress` (group `networking.k8s.io`) or `Service` (core group).
    pub kind: TargetKind,
    /// Name of the object in the policy's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// For a Service target: only this port (number) of the Service; all ports when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// What a rate limit counts requests by.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RateLimitKey {
    /// The client's address (after PROXY protocol, when enabled).
    #[default]
    ClientIp,
    /// The value of `keyHeader`.
    Header,
    /// One bucket for every request to the target.
    Global,
}

/// Where a limit's counters live.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RateLimitScope {
    /// Each Arc replica counts on its own.
    #[default]
    Local,
    /// Counted across replicas in Redis (`redis.url`).
    Cluster,
}

/// Token-bucket rate limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests per second allowed per key.
    #[schemars(range(min = 1))]
    pub rps: u32,
    /// Extra requests allowed in a burst; defaults to `rps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// What requests are counted by.
    #[serde(default)]
    pub key: RateLimitKey,
    /// Header whose value is the key when `key` is `Header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_header: Option<String>,
    /// Local (per replica) or cluster-wide counters.
    #[serde(default)]
    pub scope: RateLimitScope,
    /// Status answered to limited requests (default 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub status_code: Option<u16>,
}

/// Conditions that make an upstream attempt retryable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetryOn {
    /// The connection could not be established.
    ConnectFailure,
    /// The connection was reset before a response head arrived.
    Reset,
    /// The attempt timed out (`perTryTimeout`).
    Timeout,
    /// The upstream answered 502, 503 or 504.
    GatewayError,
    /// The upstream answered any 5xx.
    ServerError,
}

/// Retry policy for upstream attempts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    #[schemars(range(max = 10))]
    pub attempts: u32,
    /// Conditions that allow a retry; connect failures only when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<RetryOn>,
    /// Deadline of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub per_try_timeout: Option<String>,
    /// First back-off between attempts, doubled each retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub backoff: Option<String>,
    /// Also retry requests that are not idempotent (POST, PATCH).
    #[serde(default)]
    pub non_idempotent: bool,
}

/// Timeouts towards the upstream and for the whole request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Establishing an upstream connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub connect: Option<String>,
    /// Waiting for upstream response bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub read: Option<String>,
    /// Writing the request to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub send: Option<String>,
    /// The whole exchange, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub request: Option<String>,
    /// Idle time of a downstream keep-alive connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub idle: Option<String>,
}

/// Circuit breaker: beyond these, requests fail fast with 503.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Connections open to the upstream at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests: Option<u32>,
    /// Retries in flight to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Outlier detection: endpoints that keep failing are ejected for a while.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx answers (or connect failures) that eject an endpoint.
    #[schemars(range(min = 1))]
    pub consecutive_errors: u32,
    /// How often ejections are reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Ejection time; multiplied by the number of times the endpoint was ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub base_ejection_time: Option<String>,
    /// Upper bound on the share of endpoints ejected at once, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: Option<u32>,
}

/// Active HTTP health check of every endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Path requested with GET.
    #[schemars(length(min = 1))]
    pub path: String,
    /// Port probed; the endpoint's port when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Deadline of one probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Successful probes that mark an endpoint healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub healthy_threshold: Option<u32>,
    /// Failed probes that mark an endpoint unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: Option<u32>,
    /// Statuses counted as healthy (default 200 to 399).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u16>,
}

/// Concurrency limit of the target, per Arc replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyLimit {
    /// Requests in progress at once.
    #[schemars(range(min = 1))]
    pub max_in_flight: u32,
    /// Requests that may wait for a free slot; beyond it they get 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// Longest wait in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub queue_timeout: Option<String>,
}

/// One header name and value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HeaderValue {
    #[schemars(length(min = 1))]
    pub name: String,
    pub value: String,
}

/// Changes to one direction's headers, applied in the order remove, set, add.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Headers replaced (or added when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Headers appended, keeping existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Header names removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Header rules for requests towards the upstream and responses towards the client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderModifier>,
}

/// Authentication methods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuthType {
    /// HTTP Basic against an htpasswd-style Secret.
    Basic,
    /// A sub-request to an external service decides (2xx allows).
    External,
    /// A bearer JWT checked against a JWKS.
    Jwt,
}

/// Authentication required before proxying.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    #[serde(rename = "type")]
    pub type_: AuthType,
    /// `Basic`: Secret (same namespace) whose `auth` key holds `user:hash` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `Basic`: realm shown to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// `External`: URL called with the request's method, path and headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `External`: response headers of the auth service copied to the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    /// `Jwt`: URL of the JSON Web Key Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// `Jwt`: accepted issuers; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<String>,
    /// `Jwt`: accepted audiences; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// One observation about the policy, in the Kubernetes condition style.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Accepted` or `Programmed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason, e.g. `TargetNotFound`.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// What Arc observed about a policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArcPolicyStatus {
    /// `metadata.generation` last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PolicyCondition>,
}

/// Errors of CRD generation.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("serialising the {kind} CRD to YAML: {source}")]
    Yaml {
        kind: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// Every CRD Arc defines, as one multi-document YAML text (what `arc-gateway crdgen` prints and
/// `crds/arc-policy.yaml` holds).
pub fn crds_yaml() -> Result<String, CrdError> {
    let body = serde_yaml_ng::to_string(&ArcPolicy::crd()).map_err(|source| CrdError::Yaml {
        kind: "ArcPolicy",
        source,
    })?;
    Ok(format!(
        "# Generated by `arc-gateway crdgen`; do not edit by hand.\n---\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_names_group_and_scope() {
        let crd = ArcPolicy::crd();
        assert_eq!(crd.spec.group, "arc-gateway.io");
        assert_eq!(crd.spec.names.kind, "ArcPolicy");
        assert_eq!(crd.spec.names.plural, "arcpolicies");
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions;
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "v1alpha1");
        assert!(
            v[0].subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }

    #[test]
    fn spec_round_trips_the_documented_shape() {
        let json = serde_json::json!({
            "targetRef": {"kind": "Ingress", "name": "web"},
            "rateLimit": {"rps": 10, "key": "Header", "keyHeader": "x-api-key"},
            "retry": {"attempts": 2, "retryOn": ["ConnectFailure", "GatewayError"], "perTryTimeout": "2s"},
            "auth": {"type": "Basic", "secretName": "users"}
        });
        let spec: ArcPolicySpec =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.target_ref.kind, TargetKind::Ingress);
        assert_eq!(
            spec.rate_limit.as_ref().map(|r| r.key),
            Some(RateLimitKey::Header)
        );
        let back = serde_json::to_value(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back["retry"]["retryOn"], json["retry"]["retryOn"]);
        assert_eq!(back["auth"]["type"], "Basic");
    }

    #[test]
    fn unknown_target_kind_is_refused() {
        let json = serde_json::json!({"targetRef": {"kind": "Pod", "name": "x"}});
        assert!(serde_json::from_value::<ArcPolicySpec>(json).is_err());
    }

    #[test]
    fn yaml_starts_with_the_generated_notice_and_is_one_crd() {
        let text = crds_yaml().unwrap_or_else(|e| panic!("{e}"));
        assert!(text.starts_with("# Generated by `arc-gateway crdgen`"));
        assert!(text.contains("kind: CustomResourceDefinition"));
        assert!(text.contains("name: arcpolicies.arc-gateway.io"));
    }
}
