//! Conversion between core/v1 Events (the storage form) and events.k8s.io/v1 Events, so both
//! API groups see the same objects as on a real server.

use serde_json::{Map, Value};

/// (core/v1 field, events.k8s.io/v1 field) pairs that differ in name.
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(obj: &Value, to_new: bool, api_version: &str) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let mapped = RENAMES
            .iter()
            .find(|(core, new)| if to_new { core == k } else { new == k })
            .map(|(core, new)| if to_new { *new } else { *core })
            .unwrap_or(k.as_str());
        out.insert(mapped.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// core/v1 Event → events.k8s.io/v1 Event.
pub fn to_events_v1(core: &Value) -> Value {
    rename(core, true, "events.k8s.io/v1")
}

/// events.k8s.io/v1 Event → core/v1 Event.
pub fn to_core(new: &Value) -> Value {
    rename(new, false, "v1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Ingress", "name": "web"}, "note": "bad annotation", "reason": "Invalid",
            "reportingController": "arc-gateway.io/ingress-controller", "type": "Warning"});
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "bad annotation");
        assert_eq!(
            core["reportingComponent"],
            "arc-gateway.io/ingress-controller"
        );
        assert_eq!(to_events_v1(&core), v1);
    }
}
