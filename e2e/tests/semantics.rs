//! Write semantics through kube-rs: optimistic concurrency, the status subresource and
//! generation, server-side apply of Ingress status and Leases, patches, pagination and
//! selectors, both Event APIs, the request record and fault controls.

mod common;

use std::time::{Duration, Instant};

use arc_e2e::TestEnv;
use common::{api_code, config_map, create_cm};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference};
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;

fn ingress(name: &str, host: &str) -> anyhow::Result<Ingress> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {"ingressClassName": "arc", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}
    }))?)
}

#[tokio::test]
async fn stale_update_is_a_conflict() -> anyhow::Result<()> {
    let env = TestEnv::new("conflict").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let first = create_cm(&api, "cm", "x").await?;
    let mut fresh = first.clone();
    fresh.data = Some([("k".to_string(), "2".to_string())].into());
    let updated = api.replace("cm", &PostParams::default(), &fresh).await?;
    assert_ne!(updated.resource_version(), first.resource_version());

    let mut stale = first.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let r = api.replace("cm", &PostParams::default(), &stale).await;
    let (code, reason, message) =
        api_code(&r).ok_or_else(|| anyhow::anyhow!("expected an API error, got {r:?}"))?;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );

    // A merge patch carrying the stale resourceVersion is refused the same way.
    let p = json!({"metadata": {"resourceVersion": first.resource_version()}, "data": {"k": "4"}});
    let r = api
        .patch("cm", &PatchParams::default(), &Patch::Merge(&p))
        .await;
    assert_eq!(api_code(&r).map(|c| c.0), Some(409));

    // Creating the same name again is AlreadyExists.
    let r = api
        .create(&PostParams::default(), &config_map("cm", "x", "v"))
        .await;
    assert_eq!(
        api_code(&r).map(|c| (c.0, c.1)),
        Some((409, "AlreadyExists".to_string()))
    );
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_generation() -> anyhow::Result<()> {
    let env = TestEnv::new("status-generation").await?;
    let api: Api<Ingress> = Api::namespaced(env.client(), env.namespace());
    let created = api
        .create(&PostParams::default(), &ingress("web", "a.example.com")?)
        .await?;
    assert_eq!(created.metadata.generation, Some(1));

    // Server-side apply of status, as Arc's leader does.
    let status = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    });
    let pp = PatchParams::apply("arc-gateway").force();
    let after_status = api.patch_status("web", &pp, &Patch::Apply(&status)).await?;
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status does not bump generation"
    );
    let ip = after_status
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone());
    assert_eq!(ip.as_deref(), Some("192.0.2.10"));

    // A main-resource write ignores status; a spec change bumps generation.
    let mut changed = after_status.clone();
    if let Some(spec) = changed.spec.as_mut() {
        spec.ingress_class_name = Some("other".into());
    }
    changed.status = None;
    let replaced = api.replace("web", &PostParams::default(), &changed).await?;
    assert_eq!(replaced.metadata.generation, Some(2));
    assert!(
        replaced
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .is_some(),
        "status kept"
    );

    // A status write ignores spec changes.
    let sneaky = json!({"spec": {"ingressClassName": "sneaky"}, "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}});
    let st = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await?;
    assert_eq!(
        st.spec.and_then(|s| s.ingress_class_name).as_deref(),
        Some("other")
    );
    assert_eq!(st.metadata.generation, Some(2));

    // JSON patch on the main resource.
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/rules/0/host", "value": "b.example.com"}
    ]))?;
    let patched = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await?;
    assert_eq!(patched.metadata.generation, Some(3));
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn lease_apply_and_conflicting_managers() -> anyhow::Result<()> {
    let env = TestEnv::new("lease-apply").await?;
    let api: Api<Lease> = Api::namespaced(env.client(), env.namespace());
    let lease = |holder: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "arc-leader"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    };
    let a = api
        .patch(
            "arc-leader",
            &PatchParams::apply("pod-a"),
            &Patch::Apply(&lease("pod-a")),
        )
        .await?;
    assert_eq!(
        a.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("pod-a")
    );
    let r = api
        .patch(
            "arc-leader",
            &PatchParams::apply("pod-b"),
            &Patch::Apply(&lease("pod-b")),
        )
        .await;
    assert_eq!(
        api_code(&r).map(|c| c.0),
        Some(409),
        "unforced apply over another manager conflicts"
    );
    let b = api
        .patch(
            "arc-leader",
            &PatchParams::apply("pod-b").force(),
            &Patch::Apply(&lease("pod-b")),
        )
        .await?;
    assert_eq!(
        b.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("pod-b")
    );
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn list_pagination_and_selectors() -> anyhow::Result<()> {
    let env = TestEnv::new("pagination").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    for i in 0..5 {
        create_cm(
            &api,
            &format!("cm-{i}"),
            if i % 2 == 0 { "even" } else { "odd" },
        )
        .await?;
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        pages += 1;
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|c| c.name_any()));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() || pages > 10 {
            break;
        }
        // Pages are a consistent snapshot: a write between pages does not show up.
        if pages == 1 {
            create_cm(&api, "cm-late", "odd").await?;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, vec!["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);
    let even = api.list(&ListParams::default().labels("app=even")).await?;
    assert_eq!(even.items.len(), 3);
    let set = api
        .list(&ListParams::default().labels("app in (odd),app!=even"))
        .await?;
    assert_eq!(set.items.len(), 3, "cm-1, cm-3, cm-late");
    let one = api
        .list(&ListParams::default().fields("metadata.name=cm-2"))
        .await?;
    assert_eq!(
        one.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        vec!["cm-2"]
    );
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn events_are_shared_between_both_event_apis() -> anyhow::Result<()> {
    let env = TestEnv::new("events").await?;
    let ing: Api<Ingress> = Api::namespaced(env.client(), env.namespace());
    let created = ing
        .create(&PostParams::default(), &ingress("web", "a.example.com")?)
        .await?;
    let reference = ObjectReference {
        api_version: Some("networking.k8s.io/v1".into()),
        kind: Some("Ingress".into()),
        name: created.metadata.name.clone(),
        namespace: created.metadata.namespace.clone(),
        uid: created.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let recorder = Recorder::new(
        env.client(),
        Reporter {
            controller: "arc-gateway".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "InvalidAnnotation".into(),
        note: Some("bad value".into()),
        action: "Translate".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await?;
    recorder.publish(&ev, &reference).await?;
    let core: Api<CoreEvent> = Api::namespaced(env.client(), env.namespace());
    let listed = core.list(&ListParams::default()).await?;
    let found = listed
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("InvalidAnnotation"))
        .ok_or_else(|| anyhow::anyhow!("event not visible through core/v1"))?;
    assert_eq!(found.message.as_deref(), Some("bad value"));
    assert_eq!(found.involved_object.name.as_deref(), Some("web"));
    assert_eq!(
        found.series.as_ref().and_then(|s| s.count),
        Some(2),
        "second publish patched the series"
    );
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn request_record_and_fault_controls() -> anyhow::Result<()> {
    let env = TestEnv::new("faults").await?;
    let Some(emu) = env.emulator() else {
        eprintln!("SKIP emulator-only test: fault controls and the request record");
        return Ok(());
    };
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let ing: Api<Ingress> = Api::namespaced(env.client(), env.namespace());
    emu.clear_requests();
    create_cm(&api, "cm", "x").await?;
    api.get("cm").await?;
    api.list(&ListParams::default()).await?;
    api.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await?;
    ing.create(&PostParams::default(), &ingress("web", "a.example.com")?)
        .await?;
    ing.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {}})),
    )
    .await?;
    api.delete("cm", &DeleteParams::default()).await?;
    let got: Vec<(String, String, String, String)> = emu
        .requests()
        .into_iter()
        .map(|r| (r.verb, r.resource, r.subresource, r.namespace))
        .collect();
    let ns = env.namespace().to_string();
    let want =
        |v: &str, r: &str, s: &str| (v.to_string(), r.to_string(), s.to_string(), ns.clone());
    assert_eq!(
        got,
        vec![
            want("create", "configmaps", ""),
            want("get", "configmaps", ""),
            want("list", "configmaps", ""),
            want("patch", "configmaps", ""),
            want("create", "ingresses", ""),
            want("patch", "ingresses", "status"),
            want("delete", "configmaps", ""),
        ]
    );

    emu.fail_next(2, 500);
    for _ in 0..2 {
        let r = api.list(&ListParams::default()).await;
        assert_eq!(
            api_code(&r).map(|c| (c.0, c.1)),
            Some((500, "InternalError".to_string()))
        );
    }
    api.list(&ListParams::default()).await?;
    // kube-rs retries 429 by itself: the call succeeds, the record shows the refusal first.
    emu.clear_requests();
    emu.fail_next(1, 429);
    let r = api.list(&ListParams::default()).await;
    let codes: Vec<u16> = emu.requests().iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![429, 200], "{r:?}");

    emu.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    api.list(&ListParams::default()).await?;
    assert!(t.elapsed() >= Duration::from_millis(300));
    emu.set_delay(Duration::ZERO);
    Ok(())
}
