//! Kubernetes Events (events.k8s.io/v1 through kube-runtime's `Recorder`) for the problems
//! `translate` and the config handling find.
//!
//! A problem is published once per version of its object: the same problem on the same
//! resourceVersion is not repeated on every recompile; when the object changes and the problem
//! remains, the recorder's series logic turns the repeat into a PATCH of the existing Event.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::translate::{ObjectKey, Problem, Severity};

/// Publishes Events for problems, remembering what was already said.
pub struct EventSink {
    recorder: Recorder,
    said: HashSet<(ObjectKey, &'static str, String)>,
}

fn reference(o: &ObjectKey) -> ObjectReference {
    let api_version = match o.kind {
        "Ingress" => "networking.k8s.io/v1",
        _ => "v1",
    };
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(o.kind.into()),
        namespace: Some(o.namespace.clone()),
        name: Some(o.name.clone()),
        uid: Some(o.uid.clone()).filter(|u| !u.is_empty()),
        ..ObjectReference::default()
    }
}

impl EventSink {
    /// A sink reporting as `arc-gateway` / `instance`.
    pub fn new(client: kube::Client, instance: &str) -> Self {
        EventSink {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "arc-gateway".into(),
                    instance: Some(instance.to_string()),
                },
            ),
            said: HashSet::new(),
        }
    }

    /// Forgets every problem published so far (this replica stopped reporting them); they are
    /// published again by the next [`EventSink::publish`] that still has them.
    pub fn forget(&mut self) {
        self.said.clear();
    }

    /// Publishes the problems not yet published for their object's current version and
    /// forgets those that went away (so they are reported again if they come back).
    pub async fn publish(&mut self, problems: &[Problem]) {
        let now: HashSet<(ObjectKey, &'static str, String)> = problems
            .iter()
            .map(|p| (p.object.clone(), p.reason, p.message.clone()))
            .collect();
        for p in problems {
            let key = (p.object.clone(), p.reason, p.message.clone());
            if self.said.contains(&key) {
                continue;
            }
            let ev = Event {
                type_: EventType::Warning,
                reason: p.reason.to_string(),
                note: Some(truncate(&p.message, 1000)),
                action: match p.severity {
                    Severity::Invalid => "Reject".into(),
                    Severity::Warning => "Translate".into(),
                },
                secondary: None,
            };
            match self.recorder.publish(&ev, &reference(&p.object)).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(object = %p.object, error = %e, "cannot write Event"),
            }
        }
        self.said = now;
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
