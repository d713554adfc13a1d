//! Tests of the controller room: `translate` on constructed objects, ConfigMap merging, and the
//! status and Lease calls against a `tower_test` mock API server.

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};

use super::translate::{BackendTls, ClassSettings, Inputs, Severity, Translation, translate};
use crate::routing::{self, Backend, Lookup, PathType};

fn settings() -> ClassSettings {
    ClassSettings {
        controller_name: "arc-gateway.io/ingress-controller".into(),
        ingress_class: "arc".into(),
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap_or_else(|e| panic!("test object: {e}")))
}

fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
    let ann = if default {
        json!({"ingressclass.kubernetes.io/is-default-class": "true"})
    } else {
        json!({})
    };
    obj(json!({"metadata": {"name": name, "annotations": ann}, "spec": {"controller": controller}}))
}

/// An Ingress `ns/name` created at second `created` with one rule `host` `path` → `svc:port`.
fn ingress(ns: &str, name: &str, created: u32, spec: Value, ann: Value) -> Arc<Ingress> {
    obj(json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}"),
            "resourceVersion": "1",
            "creationTimestamp": format!("2026-01-01T00:00:{created:02}Z"), "annotations": ann},
        "spec": spec,
    }))
}

fn rule(host: &str, path: &str, path_type: &str, svc: &str, port: Value) -> Value {
    let port = if port.is_string() {
        json!({"name": port})
    } else {
        json!({"number": port})
    };
    json!({"host": host, "http": {"paths": [
        {"path": path, "pathType": path_type, "backend": {"service": {"name": svc, "port": port}}}
    ]}})
}

fn arc_spec(rules: Vec<Value>) -> Value {
    json!({"ingressClassName": "arc", "rules": rules})
}

fn service(ns: &str, name: &str, ports: Value) -> Arc<Service> {
    obj(json!({"metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": ports}}))
}

fn slice(
    ns: &str,
    svc: &str,
    family: &str,
    port_name: &str,
    port: u16,
    eps: Value,
) -> Arc<EndpointSlice> {
    obj(
        json!({"metadata": {"namespace": ns, "name": format!("{svc}-{family}"),
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": eps}),
    )
}

fn ready(ip: &str) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": true}})
}

fn base_inputs() -> Inputs {
    Inputs {
        classes: vec![class("arc", "arc-gateway.io/ingress-controller", false)],
        services: vec![service(
            "default",
            "web",
            json!([{"name": "http", "port": 80, "targetPort": 8080}]),
        )],
        slices: vec![slice(
            "default",
            "web",
            "IPv4",
            "http",
            8080,
            json!([ready("10.1.0.1")]),
        )],
        ..Inputs::default()
    }
}

/// The targets of upstream `name` as text: its addresses, or its `ExternalName` target.
fn upstream_of(t: &Translation, name: &str) -> Vec<String> {
    let u = t
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("no upstream {name}: {:?}", t.upstreams));
    u.addrs
        .iter()
        .map(ToString::to_string)
        .chain(u.external.iter().map(ToString::to_string))
        .collect()
}

fn lookup_name(t: &Translation, host: &str, path: &str) -> Option<String> {
    let table = routing::compile(&t.model, 1).table;
    match table.lookup(host, path) {
        Lookup::Found(m) => m.backend.upstream_name().map(String::from),
        Lookup::NotFound => None,
    }
}

fn reasons(t: &Translation) -> Vec<(&str, Severity, String)> {
    t.problems
        .iter()
        .map(|p| (p.reason, p.severity, p.object.name.clone()))
        .collect()
}

#[test]
fn class_selection() {
    let mut inputs = base_inputs();
    let r = || vec![rule("a.example.com", "/", "Prefix", "web", json!(80))];
    inputs
        .classes
        .push(class("other", "example.com/other", false));
    inputs.ingresses = vec![
        ingress("default", "by-name", 1, arc_spec(r()), json!({})),
        ingress(
            "default",
            "other-class",
            2,
            json!({"ingressClassName": "other", "rules": r()}),
            json!({}),
        ),
        ingress(
            "default",
            "missing-class",
            3,
            json!({"ingressClassName": "nope", "rules": r()}),
            json!({}),
        ),
        ingress(
            "default",
            "legacy",
            4,
            json!({"rules": r()}),
            json!({"kubernetes.io/ingress.class": "arc"}),
        ),
        ingress(
            "default",
            "legacy-other",
            5,
            json!({"rules": r()}),
            json!({"kubernetes.io/ingress.class": "nginx"}),
        ),
        ingress("default", "no-class", 6, json!({"rules": r()}), json!({})),
    ];
    let served = |t: &Translation| -> Vec<String> {
        t.served
            .iter()
            .filter_map(|i| i.metadata.name.clone())
            .collect()
    };
    let t = translate(&inputs, &settings());
    assert_eq!(served(&t), ["by-name", "legacy"]);
    // Ignored classes get no Events; the legacy one conflicts with the older by-name.
    assert!(
        t.problems.iter().all(|p| p.object.name == "legacy"),
        "{:?}",
        reasons(&t)
    );

    // With a default class of ours, class-less Ingresses are served too.
    inputs.classes[0] = class("arc", "arc-gateway.io/ingress-controller", true);
    let t = translate(&inputs, &settings());
    assert_eq!(served(&t), ["by-name", "legacy", "no-class"]);
    // A default class of another controller does not make them ours.
    inputs.classes[0] = class("arc", "arc-gateway.io/ingress-controller", false);
    inputs.classes[1] = class("other", "example.com/other", true);
    let t = translate(&inputs, &settings());
    assert_eq!(served(&t), ["by-name", "legacy"]);
}

#[test]
fn ports_by_number_and_name() {
    let mut inputs = base_inputs();
    inputs.services.push(service(
        "default",
        "multi",
        json!([{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]),
    ));
    inputs.slices.push(slice(
        "default",
        "multi",
        "IPv4",
        "admin",
        9001,
        json!([ready("10.1.0.7")]),
    ));
    inputs.slices.push(slice(
        "default",
        "multi",
        "IPv6",
        "http",
        8080,
        json!([ready("fd00::7")]),
    ));
    inputs.ingresses = vec![ingress(
        "default",
        "i",
        1,
        arc_spec(vec![
            rule("a.example.com", "/", "Prefix", "multi", json!("admin")),
            rule("b.example.com", "/", "Prefix", "multi", json!(80)),
            rule("c.example.com", "/", "Prefix", "web", json!("http")),
        ]),
        json!({}),
    )];
    let t = translate(&inputs, &settings());
    assert_eq!(upstream_of(&t, "default/multi:admin"), ["10.1.0.7:9001"]);
    assert_eq!(upstream_of(&t, "default/multi:80"), ["[fd00::7]:8080"]);
    assert_eq!(upstream_of(&t, "default/web:http"), ["10.1.0.1:8080"]);
    assert_eq!(
        lookup_name(&t, "a.example.com", "/x").as_deref(),
        Some("default/multi:admin")
    );
    assert!(t.problems.is_empty(), "{:?}", reasons(&t));
}

/// The controller's output becomes the one desired state with the addresses it read from the
/// EndpointSlices (typed all the way) under the configuration's upstream defaults.
#[test]
fn translation_becomes_desired_state_with_typed_addresses() {
    use std::net::SocketAddr;
    let mut inputs = base_inputs();
    inputs.ingresses = vec![ingress(
        "default",
        "i",
        1,
        arc_spec(vec![rule("a.example.com", "/", "Prefix", "web", json!(80))]),
        json!({}),
    )];
    let t = translate(&inputs, &settings());
    let endpoint = SocketAddr::from(([10, 1, 0, 1], 8080));
    let web = t
        .upstreams
        .iter()
        .find(|u| u.name == "default/web:80")
        .expect("web upstream");
    assert_eq!(web.addrs, [endpoint]);
    assert_eq!(web.external, None);
    let state = super::ClusterState {
        model: t.model.clone(),
        upstreams: t.upstreams.clone(),
        certs: t.certs.clone(),
    };
    let mut cfg = crate::config::Config::default();
    cfg.upstream_defaults.pool.max_idle = 9;
    let desired = crate::desired::from_cluster(&cfg, std::path::Path::new("/"), &state);
    assert_eq!(desired.routes, t.model);
    assert_eq!(desired.upstreams.len(), 1);
    assert_eq!(desired.upstreams[0].name, "default/web:80");
    assert_eq!(desired.upstreams[0].endpoints, [endpoint]);
    assert_eq!(desired.upstreams[0].pool.max_idle, 9);
    assert!(desired.upstreams[0].tls.is_none());
}

/// `ExternalName` targets become addresses before the state is published (typed, sorted, each
/// once); upstreams with slice endpoints are left as they are; a name that does not resolve
/// leaves no endpoints.
#[tokio::test]
async fn external_names_resolve_to_typed_addresses() {
    use super::translate::{ExternalName, UpstreamEndpoints};
    use std::net::SocketAddr;
    let slice_addrs = vec![
        SocketAddr::from(([10, 1, 0, 2], 80)),
        SocketAddr::from(([10, 1, 0, 1], 80)),
    ];
    let up = |name: &str, addrs: Vec<SocketAddr>, host: Option<&str>| UpstreamEndpoints {
        name: name.into(),
        addrs,
        external: host.map(|h| ExternalName {
            host: h.into(),
            port: 8443,
        }),
        tls: None,
    };
    let out = super::resolve_names(vec![
        up("slices", slice_addrs.clone(), None),
        up("ext", Vec::new(), Some("127.0.0.1")),
        up("ghost", Vec::new(), Some("ghost.invalid")),
    ])
    .await;
    assert_eq!(out[0].addrs, slice_addrs, "not an ExternalName: untouched");
    assert_eq!(out[1].addrs, [SocketAddr::from(([127, 0, 0, 1], 8443))]);
    assert!(out[2].addrs.is_empty(), "{:?}", out[2].addrs);
}

#[test]
fn endpoint_readiness_fallback_and_dual_stack() {
    let mut inputs = base_inputs();
    inputs.slices = vec![
        slice(
            "default",
            "web",
            "IPv4",
            "http",
            8080,
            json!([
                ready("10.1.0.1"),
                {"addresses": ["10.1.0.2"], "conditions": {"ready": false, "serving": false}},
                {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.1.0.4"]},
            ]),
        ),
        slice(
            "default",
            "web",
            "IPv6",
            "http",
            8080,
            json!([ready("fd00::1")]),
        ),
    ];
    inputs.ingresses = vec![ingress(
        "default",
        "i",
        1,
        arc_spec(vec![rule("a.example.com", "/", "Prefix", "web", json!(80))]),
        json!({}),
    )];
    let t = translate(&inputs, &settings());
    // Ready (and condition-less) endpoints of both families; the terminating one is left out.
    assert_eq!(
        upstream_of(&t, "default/web:80"),
        ["10.1.0.1:8080", "10.1.0.4:8080", "[fd00::1]:8080"]
    );

    // Nothing ready: serving+terminating endpoints take the traffic.
    inputs.slices.truncate(1);
    if let Some(s) = inputs.slices.first_mut() {
        *s = slice(
            "default",
            "web",
            "IPv4",
            "http",
            8080,
            json!([
                {"addresses": ["10.1.0.2"], "conditions": {"ready": false, "serving": false}},
                {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]),
        );
    }
    let t = translate(&inputs, &settings());
    assert_eq!(upstream_of(&t, "default/web:80"), ["10.1.0.3:8080"]);
}

#[test]
fn external_name_and_missing_service() {
    let mut inputs = base_inputs();
    inputs.services.push(obj(
        json!({"metadata": {"namespace": "default", "name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "api.example.net."}}),
    ));
    inputs.ingresses = vec![ingress(
        "default",
        "i",
        1,
        arc_spec(vec![
            rule("a.example.com", "/", "Prefix", "ext", json!(443)),
            rule("b.example.com", "/", "Prefix", "ghost", json!(80)),
            rule("c.example.com", "/", "Prefix", "web", json!(81)),
        ]),
        json!({}),
    )];
    let t = translate(&inputs, &settings());
    assert_eq!(upstream_of(&t, "default/ext:443"), ["api.example.net:443"]);
    // Missing service / port: routed, no endpoints (the data plane answers 503), Event.
    assert!(upstream_of(&t, "default/ghost:80").is_empty());
    assert!(upstream_of(&t, "default/web:81").is_empty());
    assert_eq!(
        lookup_name(&t, "b.example.com", "/").as_deref(),
        Some("default/ghost:80")
    );
    let r = reasons(&t);
    assert!(
        r.contains(&("ServiceNotFound", Severity::Warning, "i".into())),
        "{r:?}"
    );
    assert!(
        r.contains(&("ServicePortNotFound", Severity::Warning, "i".into())),
        "{r:?}"
    );
    assert_eq!(t.served.len(), 1);
}

fn tls_secret(ns: &str, name: &str, host: &str) -> Arc<Secret> {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .and_then(|p| p.self_signed(&key))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut secret: Secret = serde_json::from_value(
        json!({"metadata": {"namespace": ns, "name": name}, "type": "kubernetes.io/tls"}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    secret.data = Some(
        [
            ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
            (
                "tls.key".to_string(),
                ByteString(key.serialize_pem().into_bytes()),
            ),
        ]
        .into(),
    );
    Arc::new(secret)
}

#[test]
fn tls_secrets_and_ssl_redirect() {
    let mut inputs = base_inputs();
    inputs.secrets = vec![
        tls_secret("default", "good", "secure.example.com"),
        obj(
            json!({"metadata": {"namespace": "default", "name": "bad"}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm90IGEga2V5"}}),
        ),
    ];
    let spec = |secret: &str, host: &str| {
        json!({"ingressClassName": "arc",
            "tls": [{"hosts": [host], "secretName": secret}],
            "rules": [rule(host, "/", "Prefix", "web", json!(80)), rule("plain.example.com", "/", "Prefix", "web", json!(80))]})
    };
    inputs.ingresses = vec![
        ingress(
            "default",
            "good",
            1,
            spec("good", "secure.example.com"),
            json!({}),
        ),
        ingress(
            "default",
            "missing",
            2,
            spec("absent", "m.example.com"),
            json!({}),
        ),
        ingress(
            "default",
            "invalid",
            3,
            spec("bad", "i.example.com"),
            json!({}),
        ),
        ingress(
            "default",
            "noredirect",
            4,
            spec("good", "n.example.com"),
            json!({"arc-gateway.io/ssl-redirect": "false"}),
        ),
    ];
    let t = translate(&inputs, &settings());
    assert_eq!(t.certs.len(), 2, "the valid secret, used by two Ingresses");
    assert_eq!(
        t.certs.first().map(|c| c.hosts.clone()),
        Some(vec!["secure.example.com".to_string()])
    );
    let r = reasons(&t);
    assert!(
        r.contains(&("TLSSecretNotFound", Severity::Warning, "missing".into())),
        "{r:?}"
    );
    assert!(
        r.contains(&("TLSSecretInvalid", Severity::Warning, "invalid".into())),
        "{r:?}"
    );
    assert_eq!(t.served.len(), 4, "TLS problems never take routes away");

    let table = routing::compile(&t.model, 1).table;
    let redirect = |host: &str, path: &str| match table.lookup(host, path) {
        Lookup::Found(m) => m.ssl_redirect(path),
        Lookup::NotFound => panic!("{host}{path} not routed"),
    };
    assert!(redirect("secure.example.com", "/app"));
    assert!(
        redirect("m.example.com", "/"),
        "a TLS host on the default certificate still redirects"
    );
    assert!(!redirect(
        "secure.example.com",
        "/.well-known/acme-challenge/tok"
    ));
    assert!(!redirect("plain.example.com", "/"), "decided per host");
    assert!(
        !redirect("n.example.com", "/"),
        "switched off by annotation"
    );
}

#[test]
fn annotations() {
    let mut inputs = base_inputs();
    let is = |host: &str, path: &str| json!({"ingressClassName": "arc", "rules": [rule(host, path, "ImplementationSpecific", "web", json!(80))]});
    inputs.ingresses = vec![
        ingress(
            "default",
            "regex",
            1,
            is("r.example.com", "/api/v[0-9]+"),
            json!({"arc-gateway.io/use-regex": "true"}),
        ),
        ingress(
            "default",
            "nginx-regex",
            2,
            is("n.example.com", "/x/.*"),
            json!({"nginx.ingress.kubernetes.io/use-regex": "true"}),
        ),
        ingress(
            "default",
            "bad-bool",
            3,
            is("b.example.com", "/"),
            json!({"arc-gateway.io/use-regex": "yes"}),
        ),
        ingress(
            "default",
            "bad-regex",
            4,
            is("x.example.com", "/(unclosed"),
            json!({"arc-gateway.io/use-regex": "true"}),
        ),
        ingress(
            "default",
            "bad-protocol",
            5,
            is("h.example.com", "/"),
            json!({"arc-gateway.io/backend-protocol": "GRPC"}),
        ),
        ingress(
            "default",
            "http",
            6,
            is("p.example.com", "/"),
            json!({"arc-gateway.io/backend-protocol": "HTTP"}),
        ),
        ingress(
            "default",
            "unknown",
            7,
            is("u.example.com", "/"),
            json!({"arc-gateway.io/rewrite-targt": "/"}),
        ),
        ingress(
            "default",
            "snippet",
            8,
            is("s.example.com", "/"),
            json!({"nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x"}),
        ),
    ];
    let t = translate(&inputs, &settings());
    let served: Vec<String> = t
        .served
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    assert_eq!(served, ["regex", "nginx-regex", "http", "unknown"]);
    let r = reasons(&t);
    for name in ["bad-bool", "bad-regex", "bad-protocol", "snippet"] {
        assert!(
            r.contains(&("InvalidIngress", Severity::Invalid, name.into())),
            "{name}: {r:?}"
        );
    }
    assert!(
        r.contains(&("UnknownAnnotation", Severity::Warning, "unknown".into())),
        "{r:?}"
    );
    assert_eq!(t.invalid_objects(), 4);
    assert_eq!(
        lookup_name(&t, "r.example.com", "/API/V12/users").as_deref(),
        Some("default/web:80")
    );
    assert_eq!(lookup_name(&t, "r.example.com", "/api/vX"), None);
    assert_eq!(
        lookup_name(&t, "s.example.com", "/"),
        None,
        "refused Ingress is not served"
    );
}

#[test]
fn backend_protocol_https_yields_an_https_upstream() {
    let mut inputs = base_inputs();
    let is = |host: &str| json!({"ingressClassName": "arc", "rules": [rule(host, "/", "Prefix", "web", json!(80))]});
    inputs.ingresses = vec![
        ingress(
            "default",
            "native",
            1,
            is("h.example.com"),
            json!({"arc-gateway.io/backend-protocol": "HTTPS"}),
        ),
        ingress(
            "default",
            "nginx",
            2,
            is("n.example.com"),
            json!({"nginx.ingress.kubernetes.io/backend-protocol": "https"}),
        ),
        ingress("default", "plain", 3, is("p.example.com"), json!({})),
    ];
    let t = translate(&inputs, &settings());
    assert_eq!(t.invalid_objects(), 0, "{:?}", reasons(&t));
    assert_eq!(t.served.len(), 3);
    assert_eq!(
        lookup_name(&t, "h.example.com", "/").as_deref(),
        Some("default/web:80/https")
    );
    assert_eq!(
        lookup_name(&t, "n.example.com", "/").as_deref(),
        Some("default/web:80/https")
    );
    assert_eq!(
        lookup_name(&t, "p.example.com", "/").as_deref(),
        Some("default/web:80"),
        "the same Service stays plain for an Ingress without the annotation"
    );
    let up = |name: &str| {
        t.upstreams
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("{name}: {:?}", t.upstreams))
    };
    let https = up("default/web:80/https");
    let plain = up("default/web:80");
    assert_eq!(https.tls, Some(BackendTls::insecure("web.default.svc")));
    assert_eq!(plain.tls, None);
    assert!(!https.addrs.is_empty());
    assert_eq!(https.addrs, plain.addrs, "same endpoints, other protocol");
}

#[test]
fn conflicts_oldest_wins_ties_by_namespace_name() {
    let mut inputs = base_inputs();
    inputs
        .services
        .push(service("b", "web", json!([{"port": 80}])));
    inputs
        .services
        .push(service("a", "web", json!([{"port": 80}])));
    let r = |_: &str| {
        arc_spec(vec![rule(
            "c.example.com",
            "/x",
            "Prefix",
            "web",
            json!(80),
        )])
    };
    inputs.ingresses = vec![
        ingress("default", "young", 9, r("young"), json!({})),
        ingress("b", "tie", 5, r("b"), json!({})),
        ingress("a", "tie", 5, r("a"), json!({})),
    ];
    let t = translate(&inputs, &settings());
    assert_eq!(
        lookup_name(&t, "c.example.com", "/x").as_deref(),
        Some("a/web:80")
    );
    let losers: Vec<(String, &str)> = t
        .problems
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.object.namespace, p.object.name),
                p.reason,
            )
        })
        .collect();
    assert_eq!(
        losers,
        [
            ("b/tie".into(), "RuleConflict"),
            ("default/young".into(), "RuleConflict")
        ]
    );
    // Different pathType on the same path is no conflict.
    inputs.ingresses.push(ingress(
        "default",
        "exact",
        10,
        arc_spec(vec![rule("c.example.com", "/x", "Exact", "web", json!(80))]),
        json!({}),
    ));
    let t = translate(&inputs, &settings());
    assert_eq!(
        lookup_name(&t, "c.example.com", "/x").as_deref(),
        Some("default/web:80")
    );
    assert_eq!(
        lookup_name(&t, "c.example.com", "/x/y").as_deref(),
        Some("a/web:80")
    );
}

#[test]
fn default_backends() {
    let mut inputs = base_inputs();
    inputs
        .services
        .push(service("default", "fallback", json!([{"port": 80}])));
    inputs
        .services
        .push(service("default", "late", json!([{"port": 80}])));
    let db = |svc: &str| json!({"service": {"name": svc, "port": {"number": 80}}});
    inputs.ingresses = vec![
        ingress(
            "default",
            "catch-all",
            1,
            json!({"ingressClassName": "arc", "defaultBackend": db("fallback")}),
            json!({}),
        ),
        ingress(
            "default",
            "catch-all-2",
            2,
            json!({"ingressClassName": "arc", "defaultBackend": db("late")}),
            json!({}),
        ),
        ingress(
            "default",
            "with-rules",
            3,
            json!({"ingressClassName": "arc", "defaultBackend": db("late"),
                "rules": [rule("h.example.com", "/api", "Prefix", "web", json!(80))]}),
            json!({}),
        ),
    ];
    let t = translate(&inputs, &settings());
    assert_eq!(
        t.model.default_backend,
        Some(Backend::upstream("default/fallback:80"))
    );
    assert_eq!(
        lookup_name(&t, "h.example.com", "/api/1").as_deref(),
        Some("default/web:80")
    );
    assert_eq!(
        lookup_name(&t, "h.example.com", "/other").as_deref(),
        Some("default/late:80")
    );
    assert_eq!(
        lookup_name(&t, "unknown.example.com", "/").as_deref(),
        Some("default/fallback:80")
    );
    assert_eq!(
        reasons(&t),
        [(
            "DefaultBackendConflict",
            Severity::Warning,
            "catch-all-2".into()
        )]
    );
}

#[test]
fn invalid_ingress_is_isolated() {
    let mut inputs = base_inputs();
    inputs.ingresses = vec![
        ingress(
            "default",
            "good",
            2,
            arc_spec(vec![rule("g.example.com", "/", "Prefix", "web", json!(80))]),
            json!({}),
        ),
        ingress(
            "default",
            "bad",
            1,
            json!({"ingressClassName": "arc", "rules": [
                rule("g.example.com", "/", "Prefix", "web", json!(80)),
                {"host": "g.example.com", "http": {"paths": [{"path": "/r", "pathType": "Prefix",
                    "backend": {"resource": {"kind": "Bucket", "name": "b"}}}]}}
            ]}),
            json!({}),
        ),
    ];
    let t = translate(&inputs, &settings());
    // The older but invalid Ingress claims nothing: the good one serves the path.
    assert_eq!(
        lookup_name(&t, "g.example.com", "/").as_deref(),
        Some("default/web:80")
    );
    assert_eq!(
        reasons(&t),
        [("InvalidIngress", Severity::Invalid, "bad".into())]
    );
    let rule_names: Vec<&str> = t
        .model
        .hosts
        .iter()
        .flat_map(|h| h.rules.iter().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(rule_names, ["default/good"]);
    assert_eq!(
        t.model
            .hosts
            .first()
            .and_then(|h| h.rules.first())
            .map(|r| r.path_type),
        Some(PathType::Prefix)
    );
}

#[test]
fn token_from_the_secret() {
    let secret = |v: &str| -> Secret {
        Secret {
            data: Some([("auth-token".to_string(), ByteString(v.as_bytes().to_vec()))].into()),
            ..Secret::default()
        }
    };
    assert_eq!(
        super::token_from_secret(&secret(" s3cret\n")).as_deref(),
        Some("s3cret")
    );
    assert_eq!(super::token_from_secret(&secret("__ARC_TOKEN__")), None);
    assert_eq!(super::token_from_secret(&secret("  ")), None);
    assert_eq!(super::token_from_secret(&Secret::default()), None);
}

#[test]
fn config_map_merge_rules() {
    let mut boot = crate::config::Config::default();
    boot.kubernetes.enabled = true;
    boot.kubernetes.ingress_class = "boot".into();
    let ok = super::merge_config_map(
        &boot,
        "max_connections = 10\n",
        crate::config::Format::Toml,
        "cm",
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.max_connections, 10);
    assert_eq!(
        ok.kubernetes.ingress_class, "boot",
        "kubernetes.* comes from the file"
    );
    let placeholder = super::merge_config_map(
        &boot,
        "control_plane = { auth_token = \"__ARC_TOKEN__\" }\n",
        crate::config::Format::Toml,
        "cm",
        Some("t"),
    );
    assert!(placeholder.is_err_and(|e| e.contains("__ARC_TOKEN__")));
    let routes = super::merge_config_map(
        &boot,
        "routes: [{path: /, direct_response: {status: 200, body: x, content_type: text/plain}}]\n",
        crate::config::Format::Yaml,
        "cm",
        None,
    );
    assert!(routes.is_err_and(|e| e.contains("Kubernetes mode")));
    let mismatch = super::merge_config_map(
        &boot,
        "control_plane = { auth_token = \"other-token-value\" }\n",
        crate::config::Format::Toml,
        "cm",
        Some("the-secret-token"),
    );
    assert!(
        mismatch.is_err(),
        "a token differing from the Secret is refused"
    );
    let bad = super::merge_config_map(
        &boot,
        "max_connections = \"x\"\n",
        crate::config::Format::Toml,
        "cm",
        None,
    );
    assert!(bad.is_err());
}

mod status_choice {
    //! Which addresses go into Ingress status (pure: constructed Services, slices and nodes).

    use super::*;
    use crate::config::validate::check_status_address;
    use crate::controller::status::{self, arc_nodes, choose_addresses};
    use k8s_openapi::api::core::v1::Node;

    fn svc(spec: Value, lb: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "arc", "namespace": "arc-gateway"},
            "spec": spec, "status": {"loadBalancer": lb}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn shown(v: &[k8s_openapi::api::networking::v1::IngressLoadBalancerIngress]) -> Vec<String> {
        v.iter()
            .map(|i| match (&i.ip, &i.hostname) {
                (Some(ip), _) => format!("ip:{ip}"),
                (None, Some(h)) => format!("host:{h}"),
                (None, None) => "none".into(),
            })
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_follows_ingress_nginx() {
        let lb = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.9"}),
            json!({"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}),
        );
        let fixed = strings(&["192.0.2.1", "arc.example.com", "192.0.2.1", " "]);
        // publish_status_address overrides everything, verbatim, duplicates dropped.
        assert_eq!(
            shown(&choose_addresses(&fixed, Some(&lb), &[])),
            ["ip:192.0.2.1", "host:arc.example.com"]
        );
        // It needs no Service at all.
        assert_eq!(
            shown(&choose_addresses(&fixed, None, &[])),
            ["ip:192.0.2.1", "host:arc.example.com"]
        );
        assert!(choose_addresses(&[], None, &[]).is_empty());
        // LoadBalancer ingress next.
        assert_eq!(
            shown(&choose_addresses(&[], Some(&lb), &strings(&["10.0.0.1"]))),
            ["ip:203.0.113.7", "host:lb.example.com"]
        );
        // A pending LoadBalancer: externalIPs, else the ClusterIP.
        let pending = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.9"}),
            json!({}),
        );
        assert_eq!(
            shown(&choose_addresses(&[], Some(&pending), &[])),
            ["ip:10.96.0.9"]
        );
        let pending_ext = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalIPs": ["198.51.100.9"]}),
            json!({}),
        );
        assert_eq!(
            shown(&choose_addresses(&[], Some(&pending_ext), &[])),
            ["ip:198.51.100.9"]
        );
        // NodePort: node addresses (sorted), externalIPs first, ClusterIP when no node is known.
        let np = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.9"}),
            json!({}),
        );
        assert!(status::needs_nodes(&np));
        assert!(!status::needs_nodes(&lb));
        assert!(!status::needs_nodes(&pending));
        assert_eq!(
            shown(&choose_addresses(
                &[],
                Some(&np),
                &strings(&["10.0.0.2", "10.0.0.1"])
            )),
            ["ip:10.0.0.1", "ip:10.0.0.2"]
        );
        assert_eq!(
            shown(&choose_addresses(&[], Some(&np), &[])),
            ["ip:10.96.0.9"]
        );
        let np_ext = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.9", "externalIPs": ["198.51.100.3"]}),
            json!({}),
        );
        assert!(!status::needs_nodes(&np_ext));
        assert_eq!(
            shown(&choose_addresses(
                &[],
                Some(&np_ext),
                &strings(&["10.0.0.1"])
            )),
            ["ip:198.51.100.3"]
        );
        // ClusterIP Services ignore node addresses.
        let cip = svc(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.9"}),
            json!({}),
        );
        assert_eq!(
            shown(&choose_addresses(&[], Some(&cip), &strings(&["10.0.0.1"]))),
            ["ip:10.96.0.9"]
        );
        // ExternalName: its name as host name.
        let ext = svc(
            json!({"type": "ExternalName", "externalName": "edge.example.net"}),
            json!({}),
        );
        assert_eq!(
            shown(&choose_addresses(&[], Some(&ext), &[])),
            ["host:edge.example.net"]
        );
    }

    #[test]
    fn arc_nodes_from_own_node_and_ready_endpoints() {
        let np = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.9"}),
            json!({}),
        );
        let slice = |ns: &str, owner: &str, eps: Value| -> Arc<EndpointSlice> {
            obj(
                json!({"metadata": {"name": format!("{owner}-x"), "namespace": ns,
                    "labels": {"kubernetes.io/service-name": owner}},
                "addressType": "IPv4", "endpoints": eps}),
            )
        };
        let slices = vec![
            slice(
                "arc-gateway",
                "arc",
                json!([
                    {"addresses": ["10.1.0.1"], "nodeName": "n2", "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.2"], "nodeName": "n3", "conditions": {"ready": false}},
                    {"addresses": ["10.1.0.3"], "nodeName": "n1"},
                    {"addresses": ["10.1.0.4"]}
                ]),
            ),
            // Another Service's pods and another namespace's "arc" do not count.
            slice(
                "arc-gateway",
                "web",
                json!([{"addresses": ["10.1.0.5"], "nodeName": "n9"}]),
            ),
            slice(
                "other",
                "arc",
                json!([{"addresses": ["10.1.0.6"], "nodeName": "n8"}]),
            ),
        ];
        assert_eq!(arc_nodes(&np, &slices, Some("n2")), ["n1", "n2"]);
        assert_eq!(arc_nodes(&np, &slices, Some("n0 ")), ["n0", "n1", "n2"]);
        assert_eq!(arc_nodes(&np, &[], None), Vec::<String>::new());
    }

    #[test]
    fn node_address_prefers_external_ip() {
        let n = |addrs: Value| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n"}, "status": {"addresses": addrs}}),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let both = n(json!([{"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "ExternalIP", "address": "198.51.100.1"}]));
        assert_eq!(status::node_address(&both).as_deref(), Some("198.51.100.1"));
        let internal = n(json!([{"type": "Hostname", "address": "n"},
            {"type": "InternalIP", "address": "10.0.0.1"}]));
        assert_eq!(status::node_address(&internal).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            status::node_address(&n(json!([{"type": "Hostname", "address": "n"}]))),
            None
        );
    }

    #[test]
    fn status_addresses_are_checked_like_the_api_server() {
        for ok in ["192.0.2.1", "2001:db8::1", "arc.example.com", "a-1.b"] {
            assert!(check_status_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*.example.com",
            "Arc.example.com",
            "-a.b",
            "a..b",
            "a_b",
            "host:80",
        ] {
            assert!(check_status_address(bad).is_err(), "{bad}");
        }
        let long = "a".repeat(64);
        assert!(check_status_address(&long).is_err());
        let mut cfg = crate::config::Config::default();
        cfg.kubernetes.publish_status_address = vec!["192.0.2.1".into(), "Bad_Name".into()];
        let issues = crate::config::validate::validate(&cfg, true);
        let err = format!("{issues:?}");
        assert_eq!(issues.len(), 1, "{err}");
        assert!(
            err.contains("publish_status_address") && err.contains("Bad_Name"),
            "{err}"
        );
    }
}

mod api_mock {
    //! Status and Lease calls against a `tower_test` mock API server: each scenario checks the
    //! method, path and body of every call and answers like the API server would.

    use hyper::{Method, Request, Response, StatusCode};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::Ingress;
    use k8s_openapi::jiff::Timestamp;
    use kube::Api;
    use kube::client::Body;
    use serde_json::{Value, json};

    use crate::controller::leader::LeaderElector;
    use crate::controller::status;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (kube::Client, Handle) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(svc, "arc-gateway"), handle)
    }

    /// Takes the next call, checks method and path, returns its JSON body (Null when empty).
    async fn expect(
        handle: &mut Handle,
        method: Method,
        path: &str,
    ) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (req, send) =
            match tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
                .await
            {
                Ok(Some(x)) => x,
                other => panic!(
                    "expected {method} {path}, got {:?}",
                    other.map(|o| o.is_some())
                ),
            };
        assert_eq!(req.method(), method, "{}", req.uri());
        assert_eq!(req.uri().path(), path);
        let bytes = req
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
        };
        (body, send)
    }

    fn respond(send: tower_test::mock::SendResponse<Response<Body>>, code: StatusCode, v: &Value) {
        let resp = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
            .unwrap_or_else(|e| panic!("{e}"));
        send.send_response(resp);
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
            "message": "leases \"arc\" not found", "code": 404})
    }

    fn conflict() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
            "message": "the object has been modified", "code": 409})
    }

    const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/arc-gateway/leases/arc";

    const TOKEN_PATH: &str = "/api/v1/namespaces/arc-gateway/secrets/arc-gateway-secret";

    fn token_secret(token: &str) -> Value {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("arc-gateway-secret".into()),
                namespace: Some("arc-gateway".into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(
                [(
                    "auth-token".to_string(),
                    ByteString(token.as_bytes().to_vec()),
                )]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        };
        let mut v = serde_json::to_value(&secret).unwrap_or_else(|e| panic!("{e}"));
        v["apiVersion"] = json!("v1");
        v["kind"] = json!("Secret");
        v
    }

    #[tokio::test]
    async fn start_is_refused_while_the_token_secret_holds_the_placeholder() {
        let (client, mut handle) = mock();
        let check = tokio::spawn(async move {
            crate::controller::refuse_placeholder_token(&client, "arc-gateway").await
        });
        let (_, send) = expect(&mut handle, Method::GET, TOKEN_PATH).await;
        respond(send, StatusCode::OK, &token_secret("__ARC_TOKEN__"));
        let err = check
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .expect_err("placeholder refused");
        let msg = err.to_string();
        assert!(msg.contains("arc-gateway/arc-gateway-secret"), "{msg}");
        assert!(msg.contains("auth-token"), "{msg}");
        assert!(msg.contains("__ARC_TOKEN__"), "{msg}");
    }

    #[tokio::test]
    async fn start_goes_on_with_a_real_token_or_no_secret() {
        let (client, mut handle) = mock();
        let c = client.clone();
        let check = tokio::spawn(async move {
            crate::controller::refuse_placeholder_token(&c, "arc-gateway").await
        });
        let (_, send) = expect(&mut handle, Method::GET, TOKEN_PATH).await;
        respond(send, StatusCode::OK, &token_secret("0123456789abcdef"));
        assert!(check.await.unwrap_or_else(|e| panic!("{e}")).is_ok());
        let check = tokio::spawn(async move {
            crate::controller::refuse_placeholder_token(&client, "arc-gateway").await
        });
        let (_, send) = expect(&mut handle, Method::GET, TOKEN_PATH).await;
        respond(send, StatusCode::NOT_FOUND, &not_found());
        assert!(check.await.unwrap_or_else(|e| panic!("{e}")).is_ok());
    }

    fn lease(holder: &str, renew: &str, rv: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "arc", "namespace": "arc-gateway", "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                "renewTime": renew, "acquireTime": renew, "leaseTransitions": 0}})
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn status_patch_writes_publish_service_address() {
        let (client, mut handle) = mock();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "arc", "namespace": "arc-gateway"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let want = status::publish_addresses(&svc);
        let ing: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ingressClassName": "arc"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!status::status_matches(&ing, &want));
        let server = tokio::spawn(async move {
            let (body, send) = expect(
                &mut handle,
                Method::PATCH,
                "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status",
            )
            .await;
            assert_eq!(
                body,
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}})
            );
            let mut stored = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web", "namespace": "shop"}});
            if let Some(m) = stored.as_object_mut()
                && let Some(s) = body.get("status")
            {
                m.insert("status".into(), s.clone());
            }
            respond(send, StatusCode::OK, &stored);
        });
        status::write_status(client, &ing, &want)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        server.await.unwrap_or_else(|e| panic!("{e}"));

        // Without a LoadBalancer address the ClusterIP is published.
        let plain: Service = serde_json::from_value(json!({
            "metadata": {"name": "arc", "namespace": "arc-gateway"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9", "fd00::9"]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let ips: Vec<Option<String>> = status::publish_addresses(&plain)
            .into_iter()
            .map(|i| i.ip)
            .collect();
        assert_eq!(ips, [Some("10.96.0.9".into()), Some("fd00::9".into())]);
    }

    fn node(name: &str, addrs: &[(&str, &str)]) -> Value {
        let list: Vec<Value> = addrs
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": list}})
    }

    #[tokio::test]
    async fn node_addresses_are_read_once_per_ttl() {
        let (client, mut handle) = mock();
        let server = tokio::spawn(async move {
            let (_, send) = expect(&mut handle, Method::GET, "/api/v1/nodes/n1").await;
            respond(
                send,
                StatusCode::OK,
                &node(
                    "n1",
                    &[("InternalIP", "10.0.0.1"), ("ExternalIP", "198.51.100.1")],
                ),
            );
            let (_, send) = expect(&mut handle, Method::GET, "/api/v1/nodes/n2").await;
            respond(
                send,
                StatusCode::OK,
                &node("n2", &[("Hostname", "n2"), ("InternalIP", "10.0.0.2")]),
            );
            let (_, send) = expect(&mut handle, Method::GET, "/api/v1/nodes/gone").await;
            let mut nf = not_found();
            nf["message"] = json!("nodes \"gone\" not found");
            respond(send, StatusCode::NOT_FOUND, &nf);
            // After the TTL, n1 is read again; it answers 500: the last address is kept.
            let (_, send) = expect(&mut handle, Method::GET, "/api/v1/nodes/n1").await;
            respond(
                send,
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "etcd down", "code": 500}),
            );
            handle
        });
        let mut cache = status::NodeCache::default();
        let names: Vec<String> = ["gone", "n1", "n2"].map(String::from).to_vec();
        let t0 = std::time::Instant::now();
        // Requests go in order n1, n2, gone: reorder the names to match the server script.
        let order: Vec<String> = ["n1", "n2", "gone"].map(String::from).to_vec();
        let got = cache.addresses(&client, &order, t0).await;
        assert_eq!(got, ["198.51.100.1", "10.0.0.2"]);
        // Within the TTL: no API call (the mock would not answer a second request).
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            cache.addresses(&client, &names, t0 + std::time::Duration::from_secs(5)),
        )
        .await
        .unwrap_or_else(|_| panic!("a cached node was read again"));
        assert_eq!(again, ["198.51.100.1", "10.0.0.2"]);
        let later = t0 + status::NODE_TTL + std::time::Duration::from_secs(1);
        let only_n1 = vec!["n1".to_string()];
        let kept = cache.addresses(&client, &only_n1, later).await;
        assert_eq!(kept, ["198.51.100.1"]);
        let _handle = server.await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn lease_acquire_renew_and_lose() {
        let (client, mut handle) = mock();
        let elector = LeaderElector::new(Api::namespaced(client, "arc-gateway"), "arc", "me", 15);
        let server = tokio::spawn(async move {
            // Round 1: no Lease yet → create with us as holder.
            let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
            respond(send, StatusCode::NOT_FOUND, &not_found());
            let (body, send) = expect(
                &mut handle,
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/arc-gateway/leases",
            )
            .await;
            assert_eq!(body.pointer("/spec/holderIdentity"), Some(&json!("me")));
            assert_eq!(body.pointer("/spec/leaseDurationSeconds"), Some(&json!(15)));
            respond(
                send,
                StatusCode::CREATED,
                &lease("me", "2026-01-01T00:00:00Z", "1"),
            );

            // Round 2: ours → renew with a merge patch guarded by resourceVersion.
            let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
            respond(
                send,
                StatusCode::OK,
                &lease("me", "2026-01-01T00:00:00Z", "1"),
            );
            let (body, send) = expect(&mut handle, Method::PATCH, LEASE_PATH).await;
            assert_eq!(body.pointer("/metadata/resourceVersion"), Some(&json!("1")));
            assert!(body.pointer("/spec/renewTime").is_some());
            respond(
                send,
                StatusCode::OK,
                &lease("me", "2026-01-01T00:00:02Z", "2"),
            );

            // Round 3: someone else took over and is fresh → we are not leader, no write.
            let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
            respond(
                send,
                StatusCode::OK,
                &lease("other", "2026-01-01T00:00:20Z", "3"),
            );

            // Round 4: their hold expired → replace (update) with us as holder; lost race → 409.
            let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
            respond(
                send,
                StatusCode::OK,
                &lease("other", "2026-01-01T00:00:20Z", "3"),
            );
            let (body, send) = expect(&mut handle, Method::PUT, LEASE_PATH).await;
            assert_eq!(body.pointer("/spec/holderIdentity"), Some(&json!("me")));
            assert_eq!(body.pointer("/spec/leaseTransitions"), Some(&json!(1)));
            assert_eq!(body.pointer("/metadata/resourceVersion"), Some(&json!("3")));
            respond(send, StatusCode::CONFLICT, &conflict());

            // Release while someone else holds it: read only.
            let (_, send) = expect(&mut handle, Method::GET, LEASE_PATH).await;
            respond(
                send,
                StatusCode::OK,
                &lease("other", "2026-01-01T00:00:40Z", "4"),
            );
            handle
        });
        assert!(
            elector
                .try_acquire_or_renew(at("2026-01-01T00:00:00Z"))
                .await
                .unwrap_or(false)
        );
        assert!(
            elector
                .try_acquire_or_renew(at("2026-01-01T00:00:02Z"))
                .await
                .unwrap_or(false)
        );
        assert!(
            !elector
                .try_acquire_or_renew(at("2026-01-01T00:00:21Z"))
                .await
                .unwrap_or(true)
        );
        assert!(
            !elector
                .try_acquire_or_renew(at("2026-01-01T00:01:00Z"))
                .await
                .unwrap_or(true)
        );
        elector.release().await.unwrap_or_else(|e| panic!("{e}"));
        let mut handle = server.await.unwrap_or_else(|e| panic!("{e}"));
        // No further call was made.
        drop(elector);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request())
                .await
                .map_or(true, |r| r.is_none())
        );
    }
}

/// 10 000 Ingresses (one host, two paths each, 2 000 Services with endpoints) through
/// translate + compile; prints the time. Run: `cargo test --lib compile_10k -- --ignored --nocapture`
/// (add `--release` for production figures).
#[test]
#[ignore = "measurement"]
fn compile_10k_ingresses() {
    let mut inputs = base_inputs();
    for s in 0..2000 {
        let name = format!("svc{s}");
        inputs.services.push(service(
            "default",
            &name,
            json!([{"name": "http", "port": 80}]),
        ));
        inputs.slices.push(slice(
            "default",
            &name,
            "IPv4",
            "http",
            8080,
            json!([
                ready(&format!("10.2.{}.{}", s / 250, s % 250 + 1)),
                ready(&format!("10.3.{}.{}", s / 250, s % 250 + 1))
            ]),
        ));
    }
    for i in 0..10_000u32 {
        let svc = format!("svc{}", i % 2000);
        inputs.ingresses.push(ingress(
            "default",
            &format!("ing{i}"),
            i % 60,
            json!({"ingressClassName": "arc", "rules": [{"host": format!("h{i}.example.com"), "http": {"paths": [
                {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}},
                {"path": "/exact", "pathType": "Exact", "backend": {"service": {"name": svc, "port": {"name": "http"}}}}
            ]}}]}),
            json!({}),
        ));
    }
    let started = std::time::Instant::now();
    let t = translate(&inputs, &settings());
    let translated = started.elapsed();
    let compiled = routing::compile(&t.model, 1);
    let total = started.elapsed();
    println!(
        "10000 Ingresses: translate {translated:?}, translate+compile {total:?} ({} hosts, {} upstreams)",
        t.model.hosts.len(),
        t.upstreams.len()
    );
    assert_eq!(t.served.len(), 10_000);
    assert!(compiled.problems.is_empty());
    assert_eq!(
        lookup_name(&t, "h9999.example.com", "/api/x").as_deref(),
        Some("default/svc1999:80")
    );
}

/// A CA for backend TLS tests: (issuer, CA certificate PEM).
fn backend_ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    (rcgen::Issuer::new(params, key), cert.pem())
}

/// A client certificate signed by `ca`: (chain PEM, key PEM).
fn client_pair(ca: &rcgen::Issuer<'static, rcgen::KeyPair>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = rcgen::CertificateParams::new(vec!["client.internal".to_string()])
        .and_then(|p| p.signed_by(&key, ca))
        .unwrap_or_else(|e| panic!("{e}"));
    (cert.pem(), key.serialize_pem())
}

/// A `kubernetes.io/tls` Secret with the given data keys.
fn data_secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Arc<Secret> {
    let mut secret: Secret = serde_json::from_value(
        json!({"metadata": {"namespace": ns, "name": name}, "type": "kubernetes.io/tls"}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    secret.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    Arc::new(secret)
}

fn https_spec(host: &str) -> Value {
    arc_spec(vec![rule(host, "/", "Prefix", "web", json!(80))])
}

/// Annotations `backend-protocol: HTTPS` plus `extra` (keys without prefix) under `prefix`.
fn https_ann(prefix: &str, extra: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(format!("{prefix}backend-protocol"), json!("HTTPS"));
    for (k, v) in extra {
        m.insert(format!("{prefix}{k}"), json!(v));
    }
    Value::Object(m)
}

const NATIVE: &str = "arc-gateway.io/";
const NGINX: &str = "nginx.ingress.kubernetes.io/";

fn backend_tls_of<'a>(t: &'a Translation, host: &str) -> (String, &'a BackendTls) {
    let name = lookup_name(t, host, "/").unwrap_or_else(|| panic!("{host} not routed"));
    let u = t
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("{name}: {:?}", t.upstreams));
    (
        name,
        u.tls
            .as_ref()
            .unwrap_or_else(|| panic!("{host}: plain upstream")),
    )
}

#[test]
fn backend_tls_annotations_are_read_under_both_prefixes() {
    let (ca, ca_pem) = backend_ca();
    let (chain, key) = client_pair(&ca);
    let mut inputs = base_inputs();
    inputs.secrets = vec![data_secret(
        "default",
        "backend-tls",
        &[("ca.crt", &ca_pem), ("tls.crt", &chain), ("tls.key", &key)],
    )];
    let settings_of = |verify: &'static str, sni: &'static str| {
        vec![
            ("proxy-ssl-verify", verify),
            ("proxy-ssl-secret", "default/backend-tls"),
            ("proxy-ssl-name", "App.Internal"),
            ("proxy-ssl-server-name", sni),
        ]
    };
    inputs.ingresses = vec![
        ingress(
            "default",
            "native",
            1,
            https_spec("a.example.com"),
            https_ann(NATIVE, &settings_of("on", "off")),
        ),
        ingress(
            "default",
            "nginx",
            2,
            https_spec("b.example.com"),
            https_ann(NGINX, &settings_of("true", "false")),
        ),
    ];
    let t = translate(&inputs, &settings());
    assert_eq!(t.invalid_objects(), 0, "{:?}", t.problems);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let (name_a, a) = backend_tls_of(&t, "a.example.com");
    let (name_b, b) = backend_tls_of(&t, "b.example.com");
    assert_eq!(name_a, name_b, "same settings share one upstream");
    assert_eq!(a, b);
    let suffix = name_a
        .strip_prefix("default/web:80/https-")
        .unwrap_or_else(|| panic!("{name_a}"));
    assert_eq!(suffix.len(), 8);
    assert!(suffix.bytes().all(|c| c.is_ascii_hexdigit()), "{suffix}");
    assert_eq!(a.server_name, "app.internal");
    assert!(a.verify);
    assert!(!a.sni);
    assert_eq!(a.ca_pem.as_deref(), Some(ca_pem.as_bytes()));
    let cert = a
        .client_cert
        .as_ref()
        .unwrap_or_else(|| panic!("no client cert"));
    assert_eq!(&*cert.chain, chain.as_bytes());
    assert_eq!(&*cert.key, key.as_bytes());
    assert_eq!(
        t.upstreams
            .iter()
            .filter(|u| u.name.starts_with("default/web:80"))
            .count(),
        1
    );
}

#[test]
fn backend_tls_defaults_keep_the_plain_https_upstream() {
    let mut inputs = base_inputs();
    inputs.ingresses = vec![
        ingress(
            "default",
            "bare",
            1,
            https_spec("a.example.com"),
            https_ann(NATIVE, &[]),
        ),
        ingress(
            "default",
            "explicit",
            2,
            https_spec("b.example.com"),
            https_ann(
                NGINX,
                &[
                    ("proxy-ssl-verify", "off"),
                    ("proxy-ssl-server-name", "on"),
                    ("proxy-ssl-name", "web.default.svc"),
                ],
            ),
        ),
    ];
    let t = translate(&inputs, &settings());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    for host in ["a.example.com", "b.example.com"] {
        let (name, tls) = backend_tls_of(&t, host);
        assert_eq!(name, "default/web:80/https", "{host}");
        assert_eq!(tls, &BackendTls::insecure("web.default.svc"), "{host}");
    }
    assert_eq!(t.upstreams.len(), 1, "{:?}", t.upstreams);
}

#[test]
fn backend_tls_verify_without_secret_uses_system_roots_and_secret_without_ca_gives_mtls_only() {
    let (ca, _) = backend_ca();
    let (chain, key) = client_pair(&ca);
    let mut inputs = base_inputs();
    inputs.secrets = vec![data_secret(
        "default",
        "client-only",
        &[("tls.crt", &chain), ("tls.key", &key)],
    )];
    inputs.ingresses = vec![
        ingress(
            "default",
            "roots",
            1,
            https_spec("a.example.com"),
            https_ann(NATIVE, &[("proxy-ssl-verify", "on")]),
        ),
        ingress(
            "default",
            "mtls",
            2,
            https_spec("b.example.com"),
            https_ann(NATIVE, &[("proxy-ssl-secret", "client-only")]),
        ),
    ];
    let t = translate(&inputs, &settings());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let (na, a) = backend_tls_of(&t, "a.example.com");
    assert!(
        a.verify && a.ca_pem.is_none() && a.client_cert.is_none(),
        "{a:?}"
    );
    let (nb, b) = backend_tls_of(&t, "b.example.com");
    assert!(
        !b.verify && b.ca_pem.is_none() && b.client_cert.is_some(),
        "{b:?}"
    );
    assert_ne!(na, nb);
    assert_ne!(na, "default/web:80/https");
    assert_ne!(nb, "default/web:80/https");
}

/// A CA-only `Opaque` Secret (`kubectl create secret generic --from-file=ca.crt`, as
/// ingress-nginx users have them) verifies the backend; one with `tls.crt`/`tls.key` too also
/// presents them; a Secret without a type counts as `Opaque`, as the API server defaults it.
#[test]
fn backend_tls_takes_opaque_secrets_with_a_ca_bundle() {
    let (ca, ca_pem) = backend_ca();
    let (chain, key) = client_pair(&ca);
    let opaque = |name: &str, data: &[(&str, &str)], ty: Option<&str>| {
        let mut s = (*data_secret("default", name, data)).clone();
        s.type_ = ty.map(String::from);
        Arc::new(s)
    };
    let mut inputs = base_inputs();
    inputs.secrets = vec![
        opaque("ca-only", &[("ca.crt", &ca_pem)], Some("Opaque")),
        opaque(
            "ca-and-client",
            &[("ca.crt", &ca_pem), ("tls.crt", &chain), ("tls.key", &key)],
            None,
        ),
    ];
    inputs.ingresses = vec![
        ingress(
            "default",
            "ca",
            1,
            https_spec("a.example.com"),
            https_ann(
                NGINX,
                &[
                    ("proxy-ssl-verify", "on"),
                    ("proxy-ssl-secret", "default/ca-only"),
                ],
            ),
        ),
        ingress(
            "default",
            "mtls",
            2,
            https_spec("b.example.com"),
            https_ann(
                NATIVE,
                &[
                    ("proxy-ssl-verify", "on"),
                    ("proxy-ssl-secret", "ca-and-client"),
                ],
            ),
        ),
    ];
    let t = translate(&inputs, &settings());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let (_, a) = backend_tls_of(&t, "a.example.com");
    assert!(a.verify, "{a:?}");
    assert_eq!(a.ca_pem.as_deref(), Some(ca_pem.as_bytes()));
    assert!(a.client_cert.is_none(), "{a:?}");
    let (_, b) = backend_tls_of(&t, "b.example.com");
    assert_eq!(b.ca_pem.as_deref(), Some(ca_pem.as_bytes()));
    let cert = b.client_cert.as_ref().unwrap_or_else(|| panic!("{b:?}"));
    assert_eq!(&*cert.chain, chain.as_bytes());
    // An Opaque Secret is no certificate for `spec.tls`: that still takes kubernetes.io/tls.
    let mut tls_ing = https_spec("c.example.com");
    tls_ing["tls"] = json!([{"hosts": ["c.example.com"], "secretName": "ca-and-client"}]);
    inputs.ingresses = vec![ingress("default", "tls", 3, tls_ing, json!({}))];
    let t = translate(&inputs, &settings());
    assert!(t.certs.is_empty(), "{:?}", t.certs.len());
    assert!(
        t.problems
            .iter()
            .any(|p| p.message.contains("not of type kubernetes.io/tls")),
        "{:?}",
        t.problems
    );
}

#[test]
fn backend_tls_bad_values_and_secrets_make_the_ingress_invalid() {
    let (ca, ca_pem) = backend_ca();
    let (chain, key) = client_pair(&ca);
    let (_, other_key) = client_pair(&ca);
    let mut inputs = base_inputs();
    inputs.secrets = vec![
        data_secret(
            "default",
            "no-ca",
            &[("tls.crt", &chain), ("tls.key", &key)],
        ),
        data_secret("default", "bad-ca", &[("ca.crt", "not a certificate")]),
        data_secret(
            "default",
            "mismatch",
            &[
                ("ca.crt", &ca_pem),
                ("tls.crt", &chain),
                ("tls.key", &other_key),
            ],
        ),
        data_secret(
            "default",
            "bad-cert",
            &[
                ("ca.crt", &ca_pem),
                ("tls.crt", "garbage"),
                ("tls.key", &key),
            ],
        ),
        data_secret("other", "elsewhere", &[("ca.crt", &ca_pem)]),
        {
            let mut basic = (*data_secret("default", "basic", &[("ca.crt", &ca_pem)])).clone();
            basic.type_ = Some("kubernetes.io/basic-auth".into());
            Arc::new(basic)
        },
    ];
    /// (prefix, annotations, annotation named in the message, detail in the message)
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            NATIVE,
            vec![("proxy-ssl-verify", "yes")],
            "proxy-ssl-verify",
            "\"yes\"",
        ),
        (
            NGINX,
            vec![("proxy-ssl-server-name", "maybe")],
            "proxy-ssl-server-name",
            "\"maybe\"",
        ),
        (
            NATIVE,
            vec![("proxy-ssl-name", "bad name!")],
            "proxy-ssl-name",
            "not a valid",
        ),
        (
            NGINX,
            vec![("proxy-ssl-secret", "a/b/c")],
            "proxy-ssl-secret",
            "namespace/name",
        ),
        (
            NATIVE,
            vec![("proxy-ssl-secret", "other/elsewhere")],
            "proxy-ssl-secret",
            "not in the Ingress's namespace",
        ),
        (
            NATIVE,
            vec![("proxy-ssl-secret", "default/missing")],
            "proxy-ssl-secret",
            "default/missing not found",
        ),
        (
            NGINX,
            vec![
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-secret", "default/no-ca"),
            ],
            "proxy-ssl-secret",
            "default/no-ca has no ca.crt",
        ),
        (
            NATIVE,
            vec![
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-secret", "default/bad-ca"),
            ],
            "proxy-ssl-secret",
            "default/bad-ca ca.crt",
        ),
        (
            NATIVE,
            vec![
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-secret", "default/basic"),
            ],
            "proxy-ssl-secret",
            "default/basic is of type kubernetes.io/basic-auth; it must be kubernetes.io/tls or Opaque",
        ),
        (
            NATIVE,
            vec![("proxy-ssl-secret", "default/mismatch")],
            "proxy-ssl-secret",
            "does not match",
        ),
        (
            NATIVE,
            vec![("proxy-ssl-secret", "default/bad-cert")],
            "proxy-ssl-secret",
            "default/bad-cert tls.crt",
        ),
    ];
    for (prefix, extra, key_name, detail) in cases {
        inputs.ingresses = vec![ingress(
            "default",
            "bad",
            1,
            https_spec("a.example.com"),
            https_ann(prefix, &extra),
        )];
        let t = translate(&inputs, &settings());
        assert_eq!(t.invalid_objects(), 1, "{extra:?}: {:?}", t.problems);
        assert!(t.served.is_empty(), "{extra:?}");
        assert_eq!(lookup_name(&t, "a.example.com", "/"), None, "{extra:?}");
        let p = t
            .problems
            .iter()
            .find(|p| p.severity == Severity::Invalid)
            .unwrap_or_else(|| panic!("{extra:?}"));
        assert_eq!(p.reason, "InvalidIngress");
        assert!(
            p.message.contains(&format!("{prefix}{key_name}")) && p.message.contains(detail),
            "{extra:?}: {}",
            p.message
        );
    }
}

#[test]
fn backend_tls_ignored_annotations_only_warn() {
    let mut inputs = base_inputs();
    inputs.ingresses = vec![
        ingress(
            "default",
            "tuned",
            1,
            https_spec("a.example.com"),
            https_ann(
                NGINX,
                &[
                    ("proxy-ssl-verify-depth", "2"),
                    ("proxy-ssl-ciphers", "HIGH:!aNULL"),
                    ("proxy-ssl-protocols", "TLSv1.2"),
                ],
            ),
        ),
        ingress(
            "default",
            "plain",
            2,
            https_spec("b.example.com"),
            json!({"arc-gateway.io/proxy-ssl-verify": "on", "arc-gateway.io/proxy-ssl-verify-depth": "3"}),
        ),
    ];
    let t = translate(&inputs, &settings());
    assert_eq!(t.invalid_objects(), 0, "{:?}", t.problems);
    assert_eq!(t.served.len(), 2);
    let warnings = |name: &str| -> Vec<String> {
        t.problems
            .iter()
            .filter(|p| p.object.name == name)
            .inspect(|p| assert_eq!(p.severity, Severity::Warning, "{p:?}"))
            .inspect(|p| assert_eq!(p.reason, "IgnoredAnnotation", "{p:?}"))
            .map(|p| p.message.clone())
            .collect()
    };
    let tuned = warnings("tuned");
    assert_eq!(tuned.len(), 3, "{tuned:?}");
    for k in ["verify-depth", "ciphers", "protocols"] {
        assert!(
            tuned
                .iter()
                .any(|m| m.contains(&format!("{NGINX}proxy-ssl-{k}")) && m.contains("ignored")),
            "{k}: {tuned:?}"
        );
    }
    assert_eq!(
        backend_tls_of(&t, "a.example.com").0,
        "default/web:80/https"
    );
    let plain = warnings("plain");
    assert!(
        plain
            .iter()
            .any(|m| m.contains("arc-gateway.io/proxy-ssl-verify")
                && m.contains("has no effect without backend-protocol: HTTPS")),
        "{plain:?}"
    );
    assert_eq!(
        lookup_name(&t, "b.example.com", "/").as_deref(),
        Some("default/web:80")
    );
}

#[test]
fn backend_tls_distinct_settings_get_distinct_upstreams() {
    let (_, ca_pem) = backend_ca();
    let mut inputs = base_inputs();
    inputs.secrets = vec![
        data_secret("default", "ca-one", &[("ca.crt", &ca_pem)]),
        data_secret("default", "ca-two", &[("ca.crt", &ca_pem)]),
    ];
    let variants: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("proxy-ssl-verify", "on")],
        vec![
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-secret", "default/ca-one"),
        ],
        vec![
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-secret", "default/ca-two"),
        ],
        vec![("proxy-ssl-name", "other.internal")],
        vec![("proxy-ssl-server-name", "off")],
    ];
    inputs.ingresses = variants
        .iter()
        .enumerate()
        .map(|(i, extra)| {
            ingress(
                "default",
                &format!("v{i}"),
                u32::try_from(i).unwrap_or(0),
                https_spec(&format!("h{i}.example.com")),
                https_ann(NATIVE, extra),
            )
        })
        .collect();
    let t = translate(&inputs, &settings());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let names: std::collections::HashSet<String> = (0..variants.len())
        .map(|i| backend_tls_of(&t, &format!("h{i}.example.com")).0)
        .collect();
    assert_eq!(names.len(), variants.len(), "{names:?}");
    assert_eq!(t.upstreams.len(), variants.len());
    // Stable: the same inputs give the same names.
    let again = translate(&inputs, &settings());
    for i in 0..variants.len() {
        let host = format!("h{i}.example.com");
        assert_eq!(backend_tls_of(&t, &host).0, backend_tls_of(&again, &host).0);
    }
}
