//! Fuzz entry point for Ingress annotation parsing and translation: an Ingress (annotations,
//! namespace, rules) is built from the input — keys and values from the annotations Arc knows
//! plus raw input text — and goes through [`read_annotations`] and [`translate`].
//!
//! [`annotations`] never panics on any input; it panics only when an invariant breaks:
//! - every error and every warning about annotations names the annotation key as written;
//! - an Ingress whose annotations are refused is not served and gets one `InvalidIngress`
//!   problem quoting each refusal; an Ingress that is served has no `Invalid` problem;
//! - translation is deterministic, and its route model compiles.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};

use super::{
    ClassSettings, Inputs, LEGACY_CLASS, Severity, Translation, read_annotations, translate,
};
use crate::routing;

const KEYS: &[&str] = &[
    super::USE_REGEX,
    super::SSL_REDIRECT,
    super::BACKEND_PROTOCOL,
    super::PROXY_SSL_VERIFY,
    super::PROXY_SSL_SECRET,
    super::PROXY_SSL_NAME,
    super::PROXY_SSL_SERVER_NAME,
    super::PROXY_SSL_VERIFY_DEPTH,
    super::PROXY_SSL_CIPHERS,
    super::PROXY_SSL_PROTOCOLS,
    LEGACY_CLASS,
    "nginx.ingress.kubernetes.io/configuration-snippet",
    "arc-gateway.io/server-snippet",
    "arc-gateway.io/rewrite-target",
    "arc-gateway.io/",
    "example.com/other",
];

const VALUES: &[&str] = &[
    "true",
    "false",
    " true ",
    "TRUE",
    "on",
    "off",
    "HTTP",
    "HTTPS",
    "https",
    "GRPC",
    "default/ca",
    "other/ca",
    "ca",
    "Ca",
    "a/b/c",
    "/",
    "",
    "app.internal",
    "app.internal.",
    "1.2.3.4",
    "::1",
    "[::1]",
    "-bad-",
    "arc",
    "x\u{0}y",
    "é",
];

const HOSTS: &[&str] = &[
    "a.example.com",
    "",
    "*.example.com",
    "A.example.com",
    "bad_host",
    "x",
];
const PATHS: &[&str] = &["/", "/api", "", "api", "/(", "/a.*", "/[", "/é", "/a/b/"];
const PATH_TYPES: &[&str] = &["Prefix", "Exact", "ImplementationSpecific", "Bogus", ""];

/// Reads the fuzz input.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// From `table` (high bit clear) or raw input text up to 31 bytes.
    fn text(&mut self, table: &[&str]) -> String {
        let b = self.byte();
        if b & 0x80 == 0 {
            return table[usize::from(b) % table.len()].to_string();
        }
        let n = usize::from(b & 0x1f);
        let end = (self.pos + n).min(self.data.len());
        let raw = self.data.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        String::from_utf8_lossy(raw).into_owned()
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Option<Arc<T>> {
    serde_json::from_value(v).ok().map(Arc::new)
}

fn settings() -> ClassSettings {
    ClassSettings {
        controller_name: "arc-gateway.io/ingress-controller".into(),
        ingress_class: "arc".into(),
    }
}

/// The objects around the fuzzed Ingress: Arc's class, a Service with a ready endpoint, an
/// Opaque Secret that is not a valid CA.
fn base_inputs() -> Inputs {
    let class: Option<Arc<IngressClass>> = obj(json!({"metadata": {"name": "arc"},
        "spec": {"controller": "arc-gateway.io/ingress-controller"}}));
    let service: Option<Arc<Service>> =
        obj(json!({"metadata": {"namespace": "default", "name": "web"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
    let slice: Option<Arc<EndpointSlice>> = obj(json!({"metadata": {"namespace": "default",
            "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true}}]}));
    let secret: Option<Arc<Secret>> =
        obj(json!({"metadata": {"namespace": "default", "name": "ca"},
        "type": "Opaque", "data": {"ca.crt": "bm90IGEgY2VydA=="}}));
    Inputs {
        classes: class.into_iter().collect(),
        services: service.into_iter().collect(),
        slices: slice.into_iter().collect(),
        secrets: secret.into_iter().collect(),
        ..Inputs::default()
    }
}

/// Each message about annotations starts with the key (or a list of keys) as written.
fn names_a_key(msg: &str, ann: &BTreeMap<String, String>) -> bool {
    ann.keys()
        .any(|k| msg.starts_with(&format!("{k}:")) || msg.starts_with(&format!("{k},")))
}

/// Fuzz target (see the module doc).
pub fn annotations(data: &[u8]) {
    let mut input = Input { data, pos: 0 };
    let flags = input.byte();
    let ns = if flags & 1 == 0 {
        "default".to_string()
    } else {
        input.text(&["default", "other", ""])
    };
    let mut ann = BTreeMap::new();
    for _ in 0..input.byte() % 6 {
        let key = input.text(KEYS);
        let value = input.text(VALUES);
        ann.insert(key, value);
    }

    // The annotation parser on its own.
    let (parsed, warnings) = read_annotations(Some(&ann), &ns);
    let (again, warnings_again) = read_annotations(Some(&ann), &ns);
    assert_eq!(parsed, again, "read_annotations is not deterministic");
    assert_eq!(warnings, warnings_again);
    for (_, w) in &warnings {
        assert!(
            names_a_key(w, &ann),
            "warning names no key: {w:?} for {ann:?}"
        );
    }
    if let Err(errors) = &parsed {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(
                names_a_key(e, &ann),
                "error names no key: {e:?} for {ann:?}"
            );
        }
    }

    // The whole translation, with rules from the input.
    let mut rules = Vec::new();
    for _ in 0..input.byte() % 4 {
        let host = input.text(HOSTS);
        let path = input.text(PATHS);
        let path_type = input.text(PATH_TYPES);
        let port = match input.byte() % 3 {
            0 => json!({"number": 80}),
            1 => json!({"name": "http"}),
            _ => json!({"number": 81}),
        };
        rules.push(json!({"host": host, "http": {"paths": [
            {"path": path, "pathType": path_type,
             "backend": {"service": {"name": "web", "port": port}}}]}}));
    }
    let mut spec = json!({"rules": rules});
    if flags & 2 == 0 {
        spec["ingressClassName"] = json!("arc");
    }
    if flags & 4 != 0 {
        spec["tls"] = json!([{"hosts": ["a.example.com"], "secretName": "ca"}]);
    }
    if flags & 8 != 0 {
        spec["defaultBackend"] = json!({"service": {"name": "web", "port": {"number": 80}}});
    }
    let ingress: Option<Arc<Ingress>> = obj(json!({
        "metadata": {"namespace": ns, "name": "fuzz", "uid": "u", "resourceVersion": "1",
            "annotations": ann},
        "spec": spec,
    }));
    let Some(ingress) = ingress else {
        return;
    };
    let mut inputs = base_inputs();
    inputs.ingresses.push(ingress);
    let t = translate(&inputs, &settings());
    let t2 = translate(&inputs, &settings());
    assert_eq!(summary(&t), summary(&t2), "translate is not deterministic");
    let invalid: Vec<&str> = t
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Invalid)
        .map(|p| p.message.as_str())
        .collect();
    if !t.served.is_empty() {
        assert!(invalid.is_empty(), "served and invalid: {invalid:?}");
    }
    if let Err(errors) = &parsed
        && !t.served.is_empty()
    {
        panic!("refused annotations {errors:?} but the Ingress is served");
    }
    if let Err(errors) = &parsed
        && let [msg] = invalid.as_slice()
    {
        for e in errors {
            assert!(msg.contains(e.as_str()), "{msg:?} does not quote {e:?}");
        }
    }
    let _ = routing::compile(&t.model, 1);
}

/// What a translation produced, comparable.
fn summary(t: &Translation) -> (String, Vec<String>, usize) {
    (
        format!("{:?}", t.model),
        t.problems.iter().map(|p| format!("{p:?}")).collect(),
        t.served.len(),
    )
}

/// Seed inputs (byte strings decoded by [`annotations`]).
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        vec![0, 0, 1, 0, 0, 1, 0],
        vec![0, 2, 0, 0, 2, 7, 1, 0, 1, 0, 0],
        vec![4, 4, 2, 7, 3, 9, 4, 10, 6, 17, 2, 0, 0, 0, 1, 2, 2, 2],
        vec![8, 2, 11, 0, 13, 0, 1, 4, 4, 2, 0],
        vec![
            0,
            1,
            0x80 | 27,
            b'n',
            b'g',
            b'i',
            b'n',
            b'x',
            b'.',
            b'i',
            b'n',
            b'g',
            b'r',
            b'e',
            b's',
            b's',
            b'.',
            b'k',
            b'u',
            b'b',
            b'e',
            b'r',
            b'n',
            b'e',
            b't',
            b'e',
            b's',
            b'.',
            b'i',
            b'o',
            b'/',
            0,
            0,
        ],
        vec![1, 0x83, b'o', b't', b'h', 1, 4, 9, 2],
        vec![2, 1, 10, 23, 1, 0, 0, 0, 0],
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_annotations_seeds_and_mutations() {
        let dict: &[&[u8]] = &[&[0x80], &[2, 7], &[4, 9], &[0x84, b'o', b'n', b' ', b' ']];
        crate::fuzz_smoke::run(&super::seeds(), dict, 3_000, super::annotations);
    }
}
