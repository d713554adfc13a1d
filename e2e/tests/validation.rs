//! Validation the real API server performs and Arc depends on: EndpointSlice addresses, object
//! names, Ingress pathType, TLS Secret keys, each answered as `422 Invalid` with the field.

mod common;

use arc_e2e::TestEnv;
use common::api_code;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

async fn create(
    env: &TestEnv,
    gvk: (&str, &str, &str),
    plural: &str,
    obj: Value,
) -> Result<DynamicObject, kube::Error> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(env.client(), env.namespace(), &ar);
    let obj: DynamicObject = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &obj).await
}

fn assert_invalid(r: &Result<DynamicObject, kube::Error>, needle: &str) {
    match api_code(r) {
        Some((code, reason, message)) => {
            assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
            assert!(
                message.contains(needle),
                "{message:?} should contain {needle:?}"
            );
        }
        None => panic!("expected 422 Invalid containing {needle:?}, got {r:?}"),
    }
}

#[tokio::test]
async fn endpoint_slice_addresses() -> anyhow::Result<()> {
    let env = TestEnv::new("validate-eps").await?;
    let gvk = ("discovery.k8s.io", "v1", "EndpointSlice");
    let slice = |name: &str, addr: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "endpoints": [{"addresses": [addr]}],
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    };
    let r = create(&env, gvk, "endpointslices", slice("lo", "127.0.0.1")).await;
    assert_invalid(&r, "may not be in the loopback range");
    assert_invalid(&r, "endpoints[0].addresses[0]");
    let r = create(&env, gvk, "endpointslices", slice("ll", "169.254.10.1")).await;
    assert_invalid(&r, "link-local");
    let r = create(&env, gvk, "endpointslices", slice("any", "0.0.0.0")).await;
    assert_invalid(&r, "unspecified");
    let ok = create(&env, gvk, "endpointslices", slice("good", "10.200.3.2")).await?;
    assert_eq!(ok.metadata.generation, Some(1));
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn names_must_be_dns_compatible() -> anyhow::Result<()> {
    let env = TestEnv::new("validate-names").await?;
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let r = create(&env, ("", "v1", "ConfigMap"), "configmaps", cm("Bad_Name")).await;
    assert_invalid(
        &r,
        "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain",
    );
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"},
                     "spec": {"ports": [{"port": 80}]}});
    let r = create(&env, ("", "v1", "Service"), "services", svc).await;
    assert_invalid(&r, "DNS-1035 label");
    let ok = create(
        &env,
        ("", "v1", "ConfigMap"),
        "configmaps",
        cm("good.name-1"),
    )
    .await?;
    assert_eq!(ok.metadata.name.as_deref(), Some("good.name-1"));
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn ingress_path_type_is_required() -> anyhow::Result<()> {
    let env = TestEnv::new("validate-ingress").await?;
    let ing = |path: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
               "spec": {"rules": [{"host": "a.example.com", "http": {"paths": [path]}}]}})
    };
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    let gvk = ("networking.k8s.io", "v1", "Ingress");
    let r = create(
        &env,
        gvk,
        "ingresses",
        ing(json!({"path": "/", "backend": backend})),
    )
    .await;
    assert_invalid(&r, "spec.rules[0].http.paths[0].pathType: Required value");
    let r = create(
        &env,
        gvk,
        "ingresses",
        ing(json!({"path": "/", "pathType": "Glob", "backend": backend})),
    )
    .await;
    assert_invalid(&r, "Unsupported value: \"Glob\"");
    let r = create(
        &env,
        gvk,
        "ingresses",
        ing(json!({"path": "rel", "pathType": "Prefix", "backend": backend})),
    )
    .await;
    assert_invalid(&r, "must be an absolute path");
    create(
        &env,
        gvk,
        "ingresses",
        ing(json!({"path": "/", "pathType": "Exact", "backend": backend})),
    )
    .await?;
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn tls_secrets_carry_cert_and_key() -> anyhow::Result<()> {
    let env = TestEnv::new("validate-tls").await?;
    let secret = |data: Value| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"},
               "type": "kubernetes.io/tls", "data": data})
    };
    let gvk = ("", "v1", "Secret");
    let r = create(&env, gvk, "secrets", secret(json!({"tls.crt": "Y2VydA=="}))).await;
    assert_invalid(&r, "data[tls.key]: Required value");
    let r = create(&env, gvk, "secrets", secret(json!({}))).await;
    assert_invalid(&r, "data[tls.crt]: Required value");
    let ok = create(
        &env,
        gvk,
        "secrets",
        secret(json!({"tls.crt": "Y2VydA==", "tls.key": "a2V5"})),
    )
    .await?;
    assert_eq!(ok.metadata.name.as_deref(), Some("tls"));
    env.cleanup().await?;
    Ok(())
}
