//! The real `arc-gateway` binary in Kubernetes mode against `TestEnv` (the emulator, or a real
//! cluster with `ARC_E2E_KUBECONFIG`), with echo backends in a network namespace: routing
//! follows Ingress/Service/EndpointSlice/IngressClass changes, TLS from Secrets with rotation,
//! ssl-redirect, default backends, conflicts, invalid objects with Events, ConfigMap hot-apply,
//! status by the leader only (LoadBalancer/ClusterIP, NodePort node addresses,
//! `publish_status_address`), API server outage and 410 re-list, and RBAC of the recorded calls.
//!
//! Every test runs in its own namespace with its own IngressClass controller name
//! (`arc-gateway.io/e2e-<namespace>`) and `watch_namespaces: [<namespace>]`, so tests sharing
//! a real cluster do not see each other.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arc_e2e::arc::{self, ArcProcess, Response};
use arc_e2e::{TestEnv, TestNet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

type R<T = ()> = anyhow::Result<T>;

const LIMIT: Duration = Duration::from_secs(15);

/// Server-side applies `obj` (create or update) in `api`.
async fn apply<K>(api: &Api<K>, obj: Value) -> R<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("object without a name"))?
        .to_string();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply("arc-e2e").force(),
            &Patch::Apply(obj),
        )
        .await?)
}

async fn delete<K>(api: &Api<K>, name: &str) -> R
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// Everything one test needs: environment, Kubernetes APIs in its namespace, names.
struct Cluster {
    env: TestEnv,
    ns: String,
    controller: String,
    class: String,
    ingresses: Api<Ingress>,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    classes: Api<IngressClass>,
    events: Api<Event>,
}

impl Cluster {
    async fn new(test: &str) -> R<Cluster> {
        let env = TestEnv::new(test).await?;
        let ns = env.namespace().to_string();
        let c = env.client();
        let cluster = Cluster {
            controller: format!("arc-gateway.io/e2e-{ns}"),
            class: ns.clone(),
            ingresses: Api::namespaced(c.clone(), &ns),
            services: Api::namespaced(c.clone(), &ns),
            slices: Api::namespaced(c.clone(), &ns),
            secrets: Api::namespaced(c.clone(), &ns),
            config_maps: Api::namespaced(c.clone(), &ns),
            classes: Api::all(c.clone()),
            events: Api::namespaced(c, &ns),
            ns,
            env,
        };
        cluster.class_object(&cluster.class, false).await?;
        Ok(cluster)
    }

    async fn class_object(&self, name: &str, default: bool) -> R {
        let ann = if default {
            json!({"ingressclass.kubernetes.io/is-default-class": "true"})
        } else {
            json!({})
        };
        apply(
            &self.classes,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": name, "annotations": ann},
                "spec": {"controller": self.controller}}),
        )
        .await?;
        Ok(())
    }

    fn kube_keys(&self, extra: &str) -> String {
        format!(
            "controller_name: '{}', ingress_class: '{}', watch_namespaces: ['{}'], election_id: arc-leader{extra}",
            self.controller, self.class, self.ns
        )
    }

    async fn start_arc(&self, identity: &str, extra: &str) -> R<ArcProcess> {
        Ok(ArcProcess::start(
            self.env.kubeconfig_path(),
            &self.ns,
            identity,
            &self.kube_keys(extra),
        )
        .await?)
    }

    /// A selector-less Service `name` with one port 80 (`http`) and its EndpointSlice.
    async fn service(&self, name: &str, backends: &[SocketAddr]) -> R {
        apply(
            &self.services,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        )
        .await?;
        self.endpoints(name, backends).await
    }

    /// Replaces the Service's EndpointSlice (all backends share one port in the netns).
    async fn endpoints(&self, service: &str, backends: &[SocketAddr]) -> R {
        let port = backends.first().map_or(80, SocketAddr::port);
        let eps: Vec<Value> = backends
            .iter()
            .map(|b| json!({"addresses": [b.ip().to_string()], "conditions": {"ready": true}}))
            .collect();
        apply(
            &self.slices,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{service}-1"),
                    "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": eps}),
        )
        .await?;
        Ok(())
    }

    /// An Ingress of our class with one rule `host` `path` (Prefix) → `service:80`.
    async fn ingress(&self, name: &str, host: &str, path: &str, service: &str, extra: Value) -> R {
        let mut obj = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name},
            "spec": {"ingressClassName": self.class, "rules": [{"host": host, "http": {"paths": [
                {"path": path, "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}});
        merge(&mut obj, extra);
        apply(&self.ingresses, obj).await?;
        Ok(())
    }

    /// Waits (bounded) for an Event with `reason` about `kind`/`name`.
    async fn wait_event(&self, kind: &str, name: &str, reason: &str) -> R<Event> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let list = self.events.list(&Default::default()).await?;
            if let Some(e) = list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                    })
            }) {
                return Ok(e);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no {reason} Event on {kind} {name}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cleanup(self) -> R {
        let _ = self
            .classes
            .delete(&self.class, &DeleteParams::default())
            .await;
        self.env.cleanup().await?;
        Ok(())
    }
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// GETs until `pred` holds (bounded); returns the last response and the time it took.
async fn wait_for(
    arc: &ArcProcess,
    host: &str,
    path: &str,
    what: &str,
    pred: impl Fn(&Response) -> bool,
) -> R<Duration> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < LIMIT {
        match arc::get(arc.http, host, path, &[]).await {
            Ok(r) if pred(&r) => return Ok(started.elapsed()),
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!(
        "{host}{path}: never {what}; last: {last:?}\n--- arc log ---\n{}",
        arc.log()
    )
}

fn from(backend: &'static str) -> impl Fn(&Response) -> bool {
    move |r| r.status == 200 && r.backend() == Some(backend)
}

fn status(code: u16) -> impl Fn(&Response) -> bool {
    move |r| r.status == code
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len().saturating_sub(1) * p) / 100;
    sorted.get(i).copied().unwrap_or_default()
}

/// Flips one Ingress between two Services `n` times, timing each change until traffic
/// follows it, with a light background load on another host; returns (p50, p99).
async fn change_latency(c: &Cluster, arc: &ArcProcess, n: usize) -> R<(Duration, Duration)> {
    c.ingress("flip", "flip.test", "/", "svc-a", json!({}))
        .await?;
    wait_for(arc, "flip.test", "/", "served by a", from("a")).await?;
    let load_addr = arc.http;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let mut failures = 0u32;
        for _ in 0..100_000 {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if arc::get(load_addr, "load.test", "/", &[])
                .await
                .map(|r| r.status)
                .ok()
                != Some(200)
            {
                failures += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failures
    });
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let (svc, want) = if i % 2 == 0 {
            ("svc-b", "b")
        } else {
            ("svc-a", "a")
        };
        let started = Instant::now();
        c.ingress("flip", "flip.test", "/", svc, json!({})).await?;
        wait_for(arc, "flip.test", "/", "followed the change", from(want)).await?;
        times.push(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failures = load.await?;
    anyhow::ensure!(failures == 0, "{failures} background requests failed");
    times.sort();
    Ok((percentile(&times, 50), percentile(&times, 99)))
}

struct Backends {
    net: TestNet,
    a: SocketAddr,
    b: SocketAddr,
}

fn backends() -> R<Backends> {
    let net = TestNet::create()?;
    let a = net.start_echo("a", 0)?;
    let b = net.start_echo("b", 0)?;
    Ok(Backends { net, a, b })
}

/// Every recorded resource call of Arc is allowed by deploy/kubernetes/02-rbac.yaml (Arc's
/// namespace standing for `arc-gateway`); returns the (group, resource, verb) triples used.
fn check_rbac(env: &TestEnv, own_ns: &str) -> R<Option<Vec<(String, String, String)>>> {
    let Some(emu) = env.emulator() else {
        eprintln!("SKIP rbac record check: real cluster (no request record)");
        return Ok(None);
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/02-rbac.yaml"
    );
    let rules = arc::read_rbac(&std::fs::read_to_string(path)?)?;
    let mut used = Vec::new();
    for r in emu.requests() {
        // The test's own client shares the emulator; Arc's calls carry its user agent.
        if !r.is_resource() || !r.user_agent.starts_with("arc-gateway/") {
            continue;
        }
        anyhow::ensure!(
            arc::allowed(&rules, &r, own_ns),
            "call not allowed by 02-rbac.yaml: {} {}/{} {} ns={:?} ({})",
            r.verb,
            r.group,
            arc::rbac_resource(&r),
            r.name,
            r.namespace,
            r.path
        );
        let t = (r.group.clone(), arc::rbac_resource(&r), r.verb.clone());
        if !used.contains(&t) {
            used.push(t);
        }
    }
    Ok(Some(used))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_the_cluster() -> R {
    if !arc_e2e::env::require_privileged("routing_follows_the_cluster")? {
        return Ok(());
    }
    let bk = backends()?;
    let c = Cluster::new("ctl-routing").await?;
    c.service("svc-a", &[bk.a]).await?;
    c.service("svc-b", &[bk.b]).await?;
    c.ingress("load", "load.test", "/", "svc-a", json!({}))
        .await?;
    let arc = c.start_arc("arc-1", "").await?;
    arc.wait_ready(LIMIT).await?;
    wait_for(&arc, "load.test", "/", "served by a", from("a")).await?;

    // Create, update, delete.
    c.ingress("web", "web.test", "/app", "svc-a", json!({}))
        .await?;
    wait_for(&arc, "web.test", "/app/x", "served by a", from("a")).await?;
    assert_eq!(
        arc::get(arc.http, "web.test", "/application", &[])
            .await?
            .status,
        404
    );
    c.ingress("web", "web.test", "/app", "svc-b", json!({}))
        .await?;
    wait_for(&arc, "web.test", "/app", "served by b", from("b")).await?;

    // Endpoint churn: svc-b's endpoints move to backend a's port, then back; none → 503.
    c.endpoints("svc-b", &[bk.a]).await?;
    wait_for(
        &arc,
        "web.test",
        "/app",
        "followed the endpoints",
        from("a"),
    )
    .await?;
    c.endpoints("svc-b", &[]).await?;
    wait_for(
        &arc,
        "web.test",
        "/app",
        "503 without endpoints",
        status(503),
    )
    .await?;
    c.endpoints("svc-b", &[bk.b]).await?;
    wait_for(&arc, "web.test", "/app", "served by b again", from("b")).await?;

    // Conflict: a younger Ingress on the same (host, path, pathType) loses, with an Event.
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creationTimestamps
    c.ingress("web-late", "web.test", "/app", "svc-a", json!({}))
        .await?;
    c.wait_event("Ingress", "web-late", "RuleConflict").await?;
    assert_eq!(
        arc::get(arc.http, "web.test", "/app", &[]).await?.backend(),
        Some("b")
    );

    // Default backend of a rule-less Ingress: the cluster-wide catch-all.
    assert_eq!(
        arc::get(arc.http, "nowhere.test", "/", &[]).await?.status,
        404
    );
    apply(
        &c.ingresses,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "fallback"},
            "spec": {"ingressClassName": c.class,
                "defaultBackend": {"service": {"name": "svc-a", "port": {"number": 80}}}}}),
    )
    .await?;
    wait_for(
        &arc,
        "nowhere.test",
        "/",
        "caught by the default backend",
        from("a"),
    )
    .await?;
    // defaultBackend on an Ingress with rules serves that Ingress's hosts only.
    c.ingress(
        "hostdef",
        "hd.test",
        "/only",
        "svc-a",
        json!({"spec": {"defaultBackend": {"service": {"name": "svc-b", "port": {"number": 80}}}}}),
    )
    .await?;
    wait_for(&arc, "hd.test", "/elsewhere", "host default", from("b")).await?;
    assert_eq!(
        arc::get(arc.http, "hd.test", "/only", &[]).await?.backend(),
        Some("a")
    );

    // Invalid objects: Event, metric, and nothing else changes.
    c.ingress(
        "bad",
        "bad.test",
        "/",
        "svc-a",
        json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/server-snippet": "return 200;"}}}),
    )
    .await?;
    c.ingress(
        "typo",
        "typo.test",
        "/",
        "svc-a",
        json!({"metadata": {"annotations": {"arc-gateway.io/ssl-redirekt": "false"}}}),
    )
    .await?;
    c.wait_event("Ingress", "bad", "InvalidIngress").await?;
    c.wait_event("Ingress", "typo", "UnknownAnnotation").await?;
    assert_eq!(arc.metric("arc_kube_invalid_objects").await, Some(1.0));
    assert_eq!(
        arc::get(arc.http, "bad.test", "/", &[]).await?.backend(),
        Some("a"),
        "caught by the default backend, not by the refused Ingress"
    );
    wait_for(
        &arc,
        "typo.test",
        "/",
        "served despite the unknown annotation",
        from("a"),
    )
    .await?;
    assert_eq!(
        arc::get(arc.http, "web.test", "/app", &[]).await?.backend(),
        Some("b")
    );

    // IngressClass changes: the winner moves to a class Arc does not have → the younger
    // Ingress takes over; the class appears → back; it goes away → younger again.
    let other = format!("{}-other", c.class);
    c.ingress(
        "web",
        "web.test",
        "/app",
        "svc-b",
        json!({"spec": {"ingressClassName": other}}),
    )
    .await?;
    wait_for(&arc, "web.test", "/app", "served by web-late", from("a")).await?;
    c.class_object(&other, false).await?;
    wait_for(&arc, "web.test", "/app", "back to web", from("b")).await?;
    delete(&c.classes, &other).await?;
    wait_for(&arc, "web.test", "/app", "web-late again", from("a")).await?;

    // Default class: a class-less Ingress is served once our class carries the default-class
    // annotation, and no longer when it loses it.
    apply(
        &c.ingresses,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "classless"},
            "spec": {"rules": [{"host": "cl.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "svc-b", "port": {"number": 80}}}}]}}]}}),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        arc::get(arc.http, "cl.test", "/", &[]).await?.backend(),
        Some("a"),
        "catch-all, not the class-less Ingress"
    );
    c.class_object(&c.class, true).await?;
    wait_for(&arc, "cl.test", "/", "served as default class", from("b")).await?;
    c.class_object(&c.class, false).await?;
    wait_for(&arc, "cl.test", "/", "no longer ours", from("a")).await?;

    // ExternalName: resolved by DNS (`localhost`, where a loopback echo answers).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ext_port = listener.local_addr()?.port();
    tokio::spawn(arc_e2e::echo::serve(
        listener,
        arc_e2e::echo::EchoState::new("ext"),
    ));
    apply(
        &c.services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                "ports": [{"name": "http", "port": ext_port}]}}),
    )
    .await?;
    apply(
        &c.ingresses,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ext"},
            "spec": {"ingressClassName": c.class, "rules": [{"host": "ext.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "ext", "port": {"number": ext_port}}}}]}}]}}),
    )
    .await?;
    wait_for(
        &arc,
        "ext.test",
        "/",
        "served through ExternalName",
        from("ext"),
    )
    .await?;

    // Delete.
    delete(&c.ingresses, "web-late").await?;
    delete(&c.ingresses, "web").await?;
    delete(&c.ingresses, "fallback").await?;
    wait_for(&arc, "web.test", "/app", "gone", status(404)).await?;

    // Ingress change → traffic follows: a bounded sample here; 100 changes in the bench test.
    let (p50, p99) = change_latency(&c, &arc, 10).await?;
    eprintln!("ingress change → traffic: p50 {p50:?} p99 {p99:?} (10 changes)");
    assert!(p99 < Duration::from_secs(3), "p99 {p99:?}");

    check_rbac(&c.env, &c.ns)?;
    arc.stop().await;
    drop(bk.net);
    c.cleanup().await
}

fn cert_for(host: &str) -> R<(String, String, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

async fn tls_secret(c: &Cluster, name: &str, cert: &str, key: &str) -> R {
    apply(
        &c.secrets,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/tls", "stringData": {"tls.crt": cert, "tls.key": key}}),
    )
    .await?;
    Ok(())
}

/// A CA certificate (PEM) and a leaf for `host` signed by it: (CA PEM, leaf PEM, leaf key PEM).
fn ca_and_leaf(host: &str) -> R<(String, String, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "e2e backend CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf =
        rcgen::CertificateParams::new(vec![host.to_string()])?.signed_by(&leaf_key, &issuer)?;
    Ok((ca.pem(), leaf.pem(), leaf_key.serialize_pem()))
}

/// A loopback HTTPS backend (certificate for `backend.invalid` from a CA of its own, returned
/// as PEM): answers every request `200` with `X-Backend: <name>`; reports the SNI of each
/// handshake.
async fn https_backend(
    name: &'static str,
) -> R<(
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
    String,
)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ca_pem, crt, key) = ca_and_leaf("backend.invalid")?;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(crt.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let _ = tx.send(tls.get_ref().1.server_name().map(str::to_owned));
                let mut buf = Vec::new();
                // Bounded: at most 1000 requests per connection, each head read with a timeout.
                for _ in 0..1000 {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut b = [0u8; 4096];
                        match tokio::time::timeout(LIMIT, tls.read(&mut b)).await {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&b[..n]),
                            _ => return,
                        }
                    }
                    buf.clear();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: 0\r\n\r\n"
                    );
                    if tls.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, rx, ca_pem))
}

/// `backend-protocol: HTTPS` (native and nginx spelling): Arc speaks TLS to the Service's
/// endpoints, with SNI the Service's host name (here the `externalName`, since EndpointSlices
/// may not name loopback addresses) and without verifying the certificate. With
/// `proxy-ssl-verify` and a CA-only `Opaque` Secret (as `kubectl create secret generic
/// --from-file=ca.crt` makes) the backend is verified: served with its CA, 502 with another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_by_annotation() -> R {
    let c = Cluster::new("ctl-https-up").await?;
    let (addr, mut snis, ca_pem) = https_backend("secure").await?;
    let port = addr.port();
    let (other_ca, _, _) = ca_and_leaf("backend.invalid")?;
    for (name, ca) in [("backend-ca", &ca_pem), ("other-ca", &other_ca)] {
        apply(
            &c.secrets,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "type": "Opaque", "stringData": {"ca.crt": ca}}),
        )
        .await?;
    }
    let verified = |secret: &str| {
        json!({"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
            "nginx.ingress.kubernetes.io/proxy-ssl-verify": "on",
            "nginx.ingress.kubernetes.io/proxy-ssl-secret": secret,
            "nginx.ingress.kubernetes.io/proxy-ssl-name": "backend.invalid"})
    };
    apply(
        &c.services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "secure"},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                "ports": [{"name": "https", "port": port}]}}),
    )
    .await?;
    for (name, ann) in [
        (
            "native",
            json!({"arc-gateway.io/backend-protocol": "HTTPS"}),
        ),
        (
            "nginx",
            json!({"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}),
        ),
        // The same Service without the annotation: plain HTTP to a TLS port fails (502).
        ("plain", json!({})),
        ("verified", verified(&format!("{}/backend-ca", c.ns))),
        ("wrong-ca", verified(&format!("{}/other-ca", c.ns))),
    ] {
        apply(
            &c.ingresses,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "annotations": ann},
                "spec": {"ingressClassName": c.class, "rules": [{"host": format!("{name}.test"),
                    "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "secure", "port": {"number": port}}}}]}}]}}),
        )
        .await?;
    }
    let arc = c.start_arc("arc-1", "").await?;
    arc.wait_ready(LIMIT).await?;
    wait_for(&arc, "native.test", "/", "served over TLS", from("secure")).await?;
    wait_for(&arc, "nginx.test", "/", "nginx alias", from("secure")).await?;
    let r = arc::get(arc.http, "plain.test", "/", &[]).await?;
    assert_eq!(r.status, 502, "{r:?}");
    wait_for(
        &arc,
        "verified.test",
        "/",
        "verified with the Opaque CA",
        from("secure"),
    )
    .await?;
    let r = arc::get(arc.http, "wrong-ca.test", "/", &[]).await?;
    assert_eq!(
        r.status, 502,
        "another CA does not verify the backend: {r:?}"
    );
    let sni = tokio::time::timeout(LIMIT, snis.recv()).await?.flatten();
    assert_eq!(sni.as_deref(), Some("localhost"));
    arc.stop().await;
    c.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_redirect_and_config_map() -> R {
    if !arc_e2e::env::require_privileged("tls_secrets_redirect_and_config_map")? {
        return Ok(());
    }
    let bk = backends()?;
    let c = Cluster::new("ctl-tls").await?;
    c.service("svc-a", &[bk.a]).await?;
    let (crt1, key1, der1) = cert_for("secure.test")?;
    tls_secret(&c, "secure-tls", &crt1, &key1).await?;
    let tls = |host: &str, secret: &str| json!({"spec": {"tls": [{"hosts": [host], "secretName": secret}]}});
    c.ingress(
        "secure",
        "secure.test",
        "/",
        "svc-a",
        tls("secure.test", "secure-tls"),
    )
    .await?;
    c.ingress(
        "nosecret",
        "other.test",
        "/",
        "svc-a",
        tls("other.test", "absent-tls"),
    )
    .await?;
    c.ingress("plain", "plain.test", "/", "svc-a", json!({}))
        .await?;
    let arc = c.start_arc("arc-1", "").await?;
    arc.wait_ready(LIMIT).await?;

    // HTTPS with SNI gets the Secret's certificate.
    let (r, seen) = arc::get_tls(arc.https, "secure.test", "/x").await?;
    assert_eq!((r.status, r.backend()), (200, Some("a")));
    assert_eq!(seen, der1, "certificate from the Secret");
    // A missing Secret: default certificate, Event, routes still served.
    c.wait_event("Ingress", "nosecret", "TLSSecretNotFound")
        .await?;
    let (r, seen) = arc::get_tls(arc.https, "other.test", "/").await?;
    assert_eq!(r.status, 200);
    assert_ne!(seen, der1);

    // ssl-redirect: TLS hosts only, never for ACME challenges.
    let r = arc::get(arc.http, "secure.test", "/a?b=1", &[]).await?;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(r.header("location"), Some("https://secure.test/a?b=1"));
    let r = arc::get(
        arc.http,
        "secure.test",
        "/.well-known/acme-challenge/tok",
        &[],
    )
    .await?;
    assert_eq!((r.status, r.backend()), (200, Some("a")));
    assert_eq!(
        arc::get(arc.http, "plain.test", "/", &[]).await?.status,
        200
    );
    c.ingress(
        "secure",
        "secure.test",
        "/",
        "svc-a",
        json!({"metadata": {"annotations": {"arc-gateway.io/ssl-redirect": "false"}},
            "spec": {"tls": [{"hosts": ["secure.test"], "secretName": "secure-tls"}]}}),
    )
    .await?;
    wait_for(
        &arc,
        "secure.test",
        "/",
        "no redirect when switched off",
        from("a"),
    )
    .await?;

    // Rotation: the new certificate is served without restart.
    let (crt2, key2, der2) = cert_for("secure.test")?;
    tls_secret(&c, "secure-tls", &crt2, &key2).await?;
    let deadline = Instant::now() + LIMIT;
    loop {
        let (_, seen) = arc::get_tls(arc.https, "secure.test", "/").await?;
        if seen == der2 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "rotated certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An invalid Secret: Event, the host falls back to the default certificate.
    apply(
        &c.secrets,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broken-tls"},
            "type": "kubernetes.io/tls", "stringData": {"tls.crt": "garbage", "tls.key": "garbage"}}),
    )
    .await?;
    c.ingress(
        "broken",
        "broken.test",
        "/",
        "svc-a",
        tls("broken.test", "broken-tls"),
    )
    .await?;
    c.wait_event("Ingress", "broken", "TLSSecretInvalid")
        .await?;

    // ConfigMap hot-apply: limits.max_headers becomes 8; 12 extra headers are refused.
    let many: Vec<(String, String)> = (0..12).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        arc::get(arc.http, "plain.test", "/", &many).await?.status,
        200
    );
    apply(
        &c.config_maps,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "arc-gateway-config"},
            "data": {"arc.yaml": "limits: {max_headers: 8}\n"}}),
    )
    .await?;
    let deadline = Instant::now() + LIMIT;
    while arc::get(arc.http, "plain.test", "/", &many).await?.status != 431 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "ConfigMap never applied\n{}",
            arc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A bad ConfigMap is rejected whole with an Event; the last good one keeps serving.
    apply(
        &c.config_maps,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "arc-gateway-config"},
            "data": {"arc.yaml": "limits: {max_headers: 8}\nno_such_key: 1\n"}}),
    )
    .await?;
    c.wait_event("ConfigMap", "arc-gateway-config", "ConfigRejected")
        .await?;
    assert_eq!(
        arc::get(arc.http, "plain.test", "/", &many).await?.status,
        431
    );
    assert_eq!(
        arc::get(arc.http, "plain.test", "/", &[]).await?.status,
        200
    );

    check_rbac(&c.env, &c.ns)?;
    arc.stop().await;
    drop(bk.net);
    c.cleanup().await
}

async fn lb_ips(c: &Cluster, name: &str) -> R<Vec<String>> {
    let ing = c.ingresses.get(name).await?;
    Ok(ing
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect())
}

async fn wait_metric(arc: &ArcProcess, sample: &str, want: f64) -> R {
    let deadline = Instant::now() + LIMIT;
    while arc.metric(sample).await != Some(want) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: {sample} never {want} (now {:?})\n{}",
            arc.identity,
            arc.metric(sample).await,
            arc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_by_the_leader_only_and_rbac() -> R {
    let c = Cluster::new("ctl-status").await?;
    let svc = apply(
        &c.services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "arc-gateway"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
    )
    .await?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| anyhow::anyhow!("no clusterIP"))?;
    let extra = format!(", publish_service: '{}/arc-gateway'", c.ns);
    let first = c.start_arc("arc-first", &extra).await?;
    first.wait_ready(LIMIT).await?;
    wait_metric(&first, "arc_kube_leader", 1.0).await?;
    let second = c.start_arc("arc-second", &extra).await?;
    second.wait_ready(LIMIT).await?;

    // Created before the second starts leading: only the leader writes.
    c.ingress("s1", "s1.test", "/", "missing", json!({}))
        .await?;
    let deadline = Instant::now() + LIMIT;
    while lb_ips(&c, "s1").await? != [ip.clone()] {
        anyhow::ensure!(
            Instant::now() < deadline,
            "status never written\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ingresses of other classes get no status.
    apply(
        &c.ingresses,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "foreign"},
            "spec": {"ingressClassName": "someone-else", "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}),
    )
    .await?;
    // An invalid Ingress, changed once: its Event is written, then updated (series).
    let bad_ann = json!({"metadata": {"annotations": {"arc-gateway.io/use-regex": "maybe"}}});
    c.ingress("bad", "bad.test", "/", "missing", bad_ann.clone())
        .await?;
    c.wait_event("Ingress", "bad", "InvalidIngress").await?;
    let mut touched = bad_ann;
    merge(
        &mut touched,
        json!({"metadata": {"labels": {"touched": "yes"}}}),
    );
    c.ingress("bad", "bad.test", "/", "missing", touched)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        first
            .metric("arc_kube_status_writes_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        second.metric("arc_kube_status_writes_total").await,
        Some(0.0)
    );
    assert_eq!(second.metric("arc_kube_leader").await, Some(0.0));
    // Events too come from the leader only: one report per problem, not one per replica.
    let reporters: Vec<Option<String>> = c
        .events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some("bad"))
        })
        .map(|e| e.reporting_instance)
        .collect();
    assert!(!reporters.is_empty(), "no Event about Ingress bad");
    assert!(
        reporters.iter().all(|r| r.as_deref() == Some("arc-first")),
        "Events about Ingress bad written by {reporters:?}, not only by the leader arc-first"
    );
    assert!(lb_ips(&c, "foreign").await?.is_empty());
    assert!(lb_ips(&c, "bad").await?.is_empty());

    // An Ingress that leaves Arc's class loses the address Arc wrote.
    c.ingress(
        "s1",
        "s1.test",
        "/",
        "missing",
        json!({"spec": {"ingressClassName": "someone-else"}}),
    )
    .await?;
    let deadline = Instant::now() + LIMIT;
    while !lb_ips(&c, "s1").await?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "status never cleared\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The leader goes away (hands the Lease back): the second takes over and writes.
    first.stop().await;
    wait_metric(&second, "arc_kube_leader", 1.0).await?;
    c.ingress("s2", "s2.test", "/", "missing", json!({}))
        .await?;
    let deadline = Instant::now() + LIMIT;
    while lb_ips(&c, "s2").await? != [ip.clone()] {
        anyhow::ensure!(
            Instant::now() < deadline,
            "status never written by the new leader\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        second
            .metric("arc_kube_status_writes_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    second.stop().await;

    // RBAC: every call allowed; every grant used, except `get` on watched kinds (Arc lists
    // and watches them) and the core/v1 Events API (granted for older tooling; Arc writes
    // events.k8s.io/v1).
    if let Some(used) = check_rbac(&c.env, &c.ns)? {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/02-rbac.yaml"
        );
        let rules = arc::read_rbac(&std::fs::read_to_string(path)?)?;
        for rule in &rules {
            for g in &rule.groups {
                for res in &rule.resources {
                    for v in &rule.verbs {
                        let watched_get = v == "get" && res != "leases";
                        let core_events = g.is_empty() && res == "events";
                        if watched_get || core_events {
                            continue;
                        }
                        let t = (g.clone(), res.clone(), v.clone());
                        anyhow::ensure!(
                            used.contains(&t),
                            "granted but never used: {t:?}; used: {used:?}"
                        );
                    }
                }
            }
        }
    }
    c.cleanup().await
}

/// The status entries of Ingress `name` as `ip:...` / `host:...`.
async fn lb_entries(c: &Cluster, name: &str) -> R<Vec<String>> {
    let ing = c.ingresses.get(name).await?;
    Ok(ing
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .map(|i| match (i.ip, i.hostname) {
            (Some(ip), _) => format!("ip:{ip}"),
            (None, Some(h)) => format!("host:{h}"),
            (None, None) => "none".into(),
        })
        .collect())
}

async fn wait_entries(c: &Cluster, arc: &ArcProcess, name: &str, want: &[&str]) -> R {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = lb_entries(c, name).await?;
        if got == want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "status of {name} is {got:?}, never {want:?}\n{}",
            arc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_addresses_of_node_port_and_fixed_list() -> R {
    let c = Cluster::new("ctl-nodeaddr").await?;
    let Some(emu) = c.env.emulator() else {
        // Creating Nodes in a real cluster is not something a test should do.
        eprintln!("SKIP status_addresses_of_node_port_and_fixed_list: real cluster");
        return c.cleanup().await;
    };
    let nodes: Api<Node> = Api::all(c.env.client());
    let (n1, n2, n3) = (
        format!("{}-n1", c.ns),
        format!("{}-n2", c.ns),
        format!("{}-n3", c.ns),
    );
    let node = |name: &str, addrs: Value| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": addrs}})
    };
    // The emulator validates Node addresses as the API server does.
    let dup = nodes
        .create(
            &Default::default(),
            &serde_json::from_value(node(
                &format!("{}-bad", c.ns),
                json!([{"type": "InternalIP", "address": "10.0.0.9"},
                    {"type": "InternalIP", "address": "10.0.0.9"}]),
            ))?,
        )
        .await;
    assert!(
        matches!(&dup, Err(kube::Error::Api(e)) if e.code == 422),
        "{dup:?}"
    );
    // Created as the kubelet registers a node (POST with status; an apply would drop the
    // status, which belongs to the status subresource).
    for (name, addrs) in [
        (
            &n1,
            json!([{"type": "InternalIP", "address": "10.0.0.11"},
                {"type": "ExternalIP", "address": "198.51.100.11"}]),
        ),
        (
            &n2,
            json!([{"type": "Hostname", "address": "n2"}, {"type": "InternalIP", "address": "10.0.0.12"}]),
        ),
        (&n3, json!([{"type": "InternalIP", "address": "10.0.0.13"}])),
    ] {
        nodes
            .create(
                &Default::default(),
                &serde_json::from_value(node(name, addrs))?,
            )
            .await?;
    }
    // Arc's NodePort Service; its EndpointSlice places a ready Arc pod on n2 and a not-ready
    // one on n3. This replica runs on n1 (NODE_NAME).
    apply(
        &c.services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "arc-gateway-nodeport"},
            "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80}]}}),
    )
    .await?;
    apply(
        &c.slices,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "arc-gateway-nodeport-1",
                "labels": {"kubernetes.io/service-name": "arc-gateway-nodeport"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.2"], "nodeName": n2, "conditions": {"ready": true}},
                {"addresses": ["10.244.0.3"], "nodeName": n3, "conditions": {"ready": false}}]}),
    )
    .await?;
    let extra = format!(", publish_service: '{}/arc-gateway-nodeport'", c.ns);
    let arc = ArcProcess::start_with_env(
        c.env.kubeconfig_path(),
        &c.ns,
        "arc-nodes",
        &c.kube_keys(&extra),
        &[("NODE_NAME", n1.as_str())],
    )
    .await?;
    arc.wait_ready(LIMIT).await?;
    c.ingress("np", "np.test", "/", "missing", json!({}))
        .await?;
    // n1: ExternalIP before InternalIP; n2: InternalIP; n3 not ready: left out.
    wait_entries(&c, &arc, "np", &["ip:10.0.0.12", "ip:198.51.100.11"]).await?;
    arc.stop().await;

    // Nodes are read one by one, never listed or watched.
    let node_calls: Vec<(String, String)> = emu
        .requests()
        .into_iter()
        .filter(|r| r.resource == "nodes" && r.user_agent.starts_with("arc-gateway/"))
        .map(|r| (r.verb, r.name))
        .collect();
    assert!(
        node_calls.contains(&("get".into(), n1.clone())),
        "{node_calls:?}"
    );
    assert!(
        node_calls.contains(&("get".into(), n2.clone())),
        "{node_calls:?}"
    );
    assert!(
        node_calls.iter().all(|(v, n)| v == "get" && n != &n3),
        "{node_calls:?}"
    );
    let used = check_rbac(&c.env, &c.ns)?.unwrap_or_default();
    assert!(used.contains(&(String::new(), "nodes".into(), "get".into())));

    // publish_status_address overrides the Service, verbatim (IP and host name).
    let extra = format!(
        ", publish_service: '{}/arc-gateway-nodeport', publish_status_address: ['192.0.2.50', 'arc.example.com']",
        c.ns
    );
    let fixed = c.start_arc("arc-fixed", &extra).await?;
    fixed.wait_ready(LIMIT).await?;
    wait_entries(&c, &fixed, "np", &["ip:192.0.2.50", "host:arc.example.com"]).await?;
    fixed.stop().await;
    check_rbac(&c.env, &c.ns)?;
    for n in [&n1, &n2, &n3] {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
    c.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_and_relist_keep_traffic() -> R {
    if !arc_e2e::env::require_privileged("api_server_outage_and_relist_keep_traffic")? {
        return Ok(());
    }
    let bk = backends()?;
    let c = Cluster::new("ctl-outage").await?;
    c.service("svc-a", &[bk.a]).await?;
    c.service("svc-b", &[bk.b]).await?;
    c.ingress("web", "web.test", "/", "svc-a", json!({}))
        .await?;
    let arc = c.start_arc("arc-1", "").await?;
    arc.wait_ready(LIMIT).await?;
    wait_for(&arc, "web.test", "/", "served by a", from("a")).await?;
    let Some(emu) = c.env.emulator() else {
        eprintln!("SKIP outage part: real cluster");
        arc.stop().await;
        return c.cleanup().await;
    };

    let addr = arc.http;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        for _ in 0..100_000 {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            match arc::get(addr, "web.test", "/", &[]).await {
                Ok(r) if r.status == 200 => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (ok, failed)
    });

    // The API server goes away: traffic and readiness stay.
    emu.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(arc.readyz().await, Some(200));
    emu.restart().await?;
    c.ingress("web", "web.test", "/", "svc-b", json!({}))
        .await?;
    wait_for(
        &arc,
        "web.test",
        "/",
        "followed after the restart",
        from("b"),
    )
    .await?;

    // 410 Gone: history compacted and watches ended → re-list; changes still followed.
    emu.compact();
    emu.end_watches();
    c.ingress("web", "web.test", "/", "svc-a", json!({}))
        .await?;
    wait_for(
        &arc,
        "web.test",
        "/",
        "followed after the re-list",
        from("a"),
    )
    .await?;
    assert!(
        arc.metric("arc_kube_watch_errors_total{kind=\"Ingress\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await?;
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        failed.first()
    );
    assert!(ok > 50, "only {ok} requests");
    assert_eq!(arc.readyz().await, Some(200));
    check_rbac(&c.env, &c.ns)?;
    arc.stop().await;
    drop(bk.net);
    c.cleanup().await
}

/// 100 Ingress changes under light load: p50/p99 of change → traffic (run with --ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test -p arc-e2e --test controller -- --ignored --nocapture"]
async fn ingress_change_latency_100() -> R {
    if !arc_e2e::env::require_privileged("ingress_change_latency_100")? {
        return Ok(());
    }
    let bk = backends()?;
    let c = Cluster::new("ctl-latency").await?;
    c.service("svc-a", &[bk.a]).await?;
    c.service("svc-b", &[bk.b]).await?;
    c.ingress("load", "load.test", "/", "svc-a", json!({}))
        .await?;
    let arc = c.start_arc("arc-1", "").await?;
    arc.wait_ready(LIMIT).await?;
    let (p50, p99) = change_latency(&c, &arc, 100).await?;
    println!("ingress change → traffic over 100 changes (debounce 50ms): p50 {p50:?} p99 {p99:?}");
    arc.stop().await;
    drop(bk.net);
    c.cleanup().await
}

/// Not ready (and no routes) until every watch listed once; ready once the API server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_before_the_first_sync() -> R {
    if !arc_e2e::env::require_privileged("not_ready_before_the_first_sync")? {
        return Ok(());
    }
    let bk = backends()?;
    let c = Cluster::new("ctl-sync").await?;
    let Some(emu) = c.env.emulator() else {
        eprintln!("SKIP not_ready_before_the_first_sync: needs the emulator's outage control");
        return c.cleanup().await;
    };
    c.service("svc-a", &[bk.a]).await?;
    c.ingress("web", "web.test", "/", "svc-a", json!({}))
        .await?;
    emu.stop().await;
    let arc = c.start_arc("arc-1", "").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(arc.readyz().await, Some(503), "{}", arc.log());
    assert_eq!(arc::get(arc.http, "web.test", "/", &[]).await?.status, 404);
    emu.restart().await?;
    arc.wait_ready(LIMIT).await?;
    assert_eq!(
        arc::get(arc.http, "web.test", "/", &[]).await?.backend(),
        Some("a")
    );
    arc.stop().await;
    drop(bk.net);
    c.cleanup().await
}

/// The status of `GET /api/v1/routes` on Arc's admin port with `token` (none: no header).
async fn api_status(arc: &ArcProcess, token: Option<&str>) -> R<u16> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let extra: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    Ok(arc::get(arc.admin, "localhost", "/api/v1/routes", &extra)
        .await?
        .status)
}

/// Waits (bounded) until `token` gets `want` from the control API.
async fn wait_api_status(arc: &ArcProcess, token: &str, want: u16) -> R {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = api_status(arc, Some(token)).await?;
        if got == want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "control API with the token answered {got}, not {want}; log:\n{}",
            arc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The control-plane token of Secret `arc-gateway-secret` (set, used, rotated) and a TLS
/// Secret's key stay out of Arc's log: `stop` checks the whole log against every value of the
/// namespace's Secrets, the replaced token and the wrong token presented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_token_and_tls_keys_stay_out_of_the_log() -> R {
    const TOKEN: &str = "e2e-c0ntrol-t0ken-6d0f3a";
    const ROTATED: &str = "e2e-r0tated-t0ken-91be27";
    const WRONG: &str = "e2e-wr0ng-t0ken-42c7d1";
    let token_secret = |t: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "arc-gateway-secret"},
            "type": "Opaque", "stringData": {"auth-token": t}})
    };
    let c = Cluster::new("ctl-secrets").await?;
    apply(&c.secrets, token_secret(TOKEN)).await?;
    let (crt, key, der) = cert_for("secure.test")?;
    tls_secret(&c, "secure-tls", &crt, &key).await?;
    c.service("svc-a", &[]).await?;
    c.ingress(
        "secure",
        "secure.test",
        "/",
        "svc-a",
        json!({"spec": {"tls": [{"hosts": ["secure.test"], "secretName": "secure-tls"}]}}),
    )
    .await?;
    let mut arc = c.start_arc("arc-1", "").await?;
    arc.secret("wrong token", WRONG);
    // Replaced below: no longer in any Secret when the log is checked.
    arc.secret("replaced control token", TOKEN);
    arc.wait_ready(LIMIT).await?;

    wait_api_status(&arc, TOKEN, 200).await?;
    assert_eq!(api_status(&arc, None).await?, 401);
    assert_eq!(api_status(&arc, Some(WRONG)).await?, 401);
    let (_, seen) = arc::get_tls(arc.https, "secure.test", "/").await?;
    assert_eq!(seen, der, "certificate from the Secret");

    apply(&c.secrets, token_secret(ROTATED)).await?;
    wait_api_status(&arc, ROTATED, 200).await?;
    assert_eq!(api_status(&arc, Some(TOKEN)).await?, 401);

    arc.stop().await;
    c.cleanup().await
}
