//! Leader election over a `coordination.k8s.io/v1` Lease in Arc's namespace.
//!
//! A small elector of our own (the same protocol as client-go's): read the Lease (`get`);
//! create it when absent (`create`); renew our own hold with a merge patch carrying the
//! resourceVersion (`patch`, optimistic concurrency); take over an expired hold with a full
//! replace (`update`); hand it back on shutdown with a patch that clears the holder. Only the
//! leader writes Ingress status; traffic never depends on leadership. Time is an argument so the
//! protocol is tested against a mock API server without sleeping.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// Errors of one election round.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or was unreachable.
    #[error("lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// One participant of the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_seconds: i32,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// An elector for the Lease `name` (`kubernetes.election_id`) as `identity` (pod name).
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_seconds: i32) -> Self {
        LeaderElector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            lease_seconds: lease_seconds.max(1),
        }
    }

    /// This participant's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            name: self.name.clone(),
            source,
        }
    }

    /// One round at time `now`: acquires, renews or observes; true when we hold the Lease.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?;
        let Some(lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.fresh_spec(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let rv = lease.metadata.resource_version.clone();
        if holder == self.identity {
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": rv },
                "spec": {
                    "renewTime": MicroTime(now),
                    "leaseDurationSeconds": self.lease_seconds,
                },
            });
            return match self
                .api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        }
        let expired = match (spec.renew_time.as_ref(), spec.lease_duration_seconds) {
            (Some(renew), Some(secs)) => renew
                .0
                .checked_add(SignedDuration::from_secs(i64::from(secs)))
                .map_or(true, |until| until < now),
            _ => true,
        };
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
        let mut taken = lease;
        taken.spec = Some(self.fresh_spec(now, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &taken)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Hands the Lease back (when we hold it) so another replica takes over at once.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.as_str()) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": lease.metadata.resource_version },
            "spec": { "holderIdentity": serde_json::Value::Null, "leaseDurationSeconds": 1 },
        });
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    fn fresh_spec(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
