//! The emulator as a process (`arc-kube-emulator`): its kubeconfig works for kube-rs, and its
//! HTTP fault controls (request record, injected failures, compaction, outage) behave like the
//! in-process ones. Also the ArcPolicy custom resource with its status subresource.

mod common;

use std::time::Duration;

use arc_e2e::TestEnv;
use arc_e2e::env::client_from_kubeconfig;
use common::{api_code, collect_until, create_cm};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

struct Proc(tokio::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn control(client: &kube::Client, method: &str, path: &str) -> anyhow::Result<String> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

#[tokio::test]
async fn emulator_process_and_http_controls() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("arc-e2e-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_arc-kube-emulator"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let _guard = Proc(child);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(ready.starts_with("ready https://127.0.0.1:"), "{ready}");

    let client = client_from_kubeconfig(&kubeconfig).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    create_cm(&api, "p1", "x").await?;

    let recorded: serde_json::Value =
        serde_json::from_str(&control(&client, "GET", "/_emulator/requests").await?)?;
    let last = recorded
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["verb"], "create");
    assert_eq!(last["resource"], "configmaps");
    assert_eq!(last["namespace"], "default");

    control(&client, "POST", "/_emulator/fail?count=1&code=500").await?;
    let r = api.list(&ListParams::default()).await;
    assert_eq!(api_code(&r).map(|c| c.0), Some(500));

    // A watcher survives an outage and a compaction: it reconnects, gets 410, re-lists.
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    collect_until(&mut stream, Duration::from_secs(15), |e| {
        matches!(e, Ok(Event::InitDone))
    })
    .await?;
    create_cm(&api, "p2", "x").await?;
    collect_until(
        &mut stream,
        Duration::from_secs(15),
        |e| matches!(e, Ok(Event::Apply(o)) if o.metadata.name.as_deref() == Some("p2")),
    )
    .await?;
    control(&client, "POST", "/_emulator/compact").await?;
    control(&client, "POST", "/_emulator/outage?ms=300").await?;
    let relisted = collect_until(&mut stream, Duration::from_secs(30), |e| {
        matches!(e, Ok(Event::InitDone))
    })
    .await?;
    assert!(
        relisted.iter().any(|e| matches!(e, Ok(Event::Init))),
        "re-listed after the outage"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn arc_policy_custom_resource_with_status() -> anyhow::Result<()> {
    let env = TestEnv::new("arcpolicy").await?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("arc-gateway.io", "v1alpha1", "ArcPolicy"),
        "arcpolicies",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(env.client(), env.namespace(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "arc-gateway.io/v1alpha1", "kind": "ArcPolicy",
        "metadata": {"name": "limits"},
        "spec": {"targetRef": {"kind": "Ingress", "name": "web"}, "rateLimit": {"rps": 10}}
    }))?;
    let created = match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) if s.code == 404 && env.is_real_cluster() => {
            eprintln!("SKIP: the ArcPolicy CRD is not installed in this cluster");
            return Ok(());
        }
        r => r?,
    };
    assert_eq!(created.metadata.generation, Some(1));
    let st = json!({"status": {"conditions": [{"type": "Accepted", "status": "True"}]}});
    let after = api
        .patch_status("limits", &PatchParams::default(), &Patch::Merge(&st))
        .await?;
    assert_eq!(after.metadata.generation, Some(1));
    assert_eq!(after.data["status"]["conditions"][0]["type"], "Accepted");
    let spec = json!({"spec": {"rateLimit": {"rps": 20}}});
    let after = api
        .patch("limits", &PatchParams::default(), &Patch::Merge(&spec))
        .await?;
    assert_eq!(after.metadata.generation, Some(2));
    assert_eq!(after.data["status"]["conditions"][0]["status"], "True");
    env.cleanup().await?;
    Ok(())
}
