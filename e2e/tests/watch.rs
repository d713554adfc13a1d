//! kube-rs watchers against the emulator (or a real cluster): initial list, live events,
//! re-list after a 410, reconnect after the server restarts, streaming lists and bookmarks.

mod common;

use std::time::Duration;

use arc_e2e::{EmulatorConfig, TestEnv};
use common::{collect_until, create_cm};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, WatchEvent, WatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};

const WAIT: Duration = Duration::from_secs(15);

fn name_of(e: &Result<Event<ConfigMap>, watcher::Error>) -> Option<(&'static str, String)> {
    match e {
        Ok(Event::Init) => Some(("init", String::new())),
        Ok(Event::InitApply(o)) => Some(("init-apply", o.name_any())),
        Ok(Event::InitDone) => Some(("init-done", String::new())),
        Ok(Event::Apply(o)) => Some(("apply", o.name_any())),
        Ok(Event::Delete(o)) => Some(("delete", o.name_any())),
        Err(_) => None,
    }
}

#[tokio::test]
async fn watcher_lists_then_streams_changes() -> anyhow::Result<()> {
    let env = TestEnv::new("watcher-lists").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    create_cm(&api, "before", "a").await?;
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let init = collect_until(&mut stream, WAIT, |e| matches!(e, Ok(Event::InitDone))).await?;
    let names: Vec<_> = init.iter().filter_map(name_of).collect();
    assert!(
        names.contains(&("init-apply", "before".into())),
        "{names:?}"
    );

    create_cm(&api, "after", "a").await?;
    collect_until(&mut stream, WAIT, |e| {
        name_of(e) == Some(("apply", "after".into()))
    })
    .await?;
    api.delete("before", &DeleteParams::default()).await?;
    collect_until(&mut stream, WAIT, |e| {
        name_of(e) == Some(("delete", "before".into()))
    })
    .await?;

    // A label-selected watcher sees an object leave its selection as a delete.
    let selected = watcher(api.clone(), watcher::Config::default().labels("app=a"));
    let mut selected = selected.default_backoff().boxed();
    collect_until(&mut selected, WAIT, |e| matches!(e, Ok(Event::InitDone))).await?;
    let relabel = serde_json::json!({"metadata": {"labels": {"app": "b"}}});
    api.patch(
        "after",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&relabel),
    )
    .await?;
    collect_until(&mut selected, WAIT, |e| {
        name_of(e) == Some(("delete", "after".into()))
    })
    .await?;
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn watcher_relists_after_410_when_history_is_compacted() -> anyhow::Result<()> {
    let env = TestEnv::new("watcher-relist").await?;
    let Some(emu) = env.emulator() else {
        eprintln!("SKIP emulator-only part: compaction cannot be forced on a real cluster");
        return Ok(());
    };
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    create_cm(&api, "one", "x").await?;
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    collect_until(&mut stream, WAIT, |e| matches!(e, Ok(Event::InitDone))).await?;
    create_cm(&api, "two", "x").await?;
    collect_until(&mut stream, WAIT, |e| {
        name_of(e) == Some(("apply", "two".into()))
    })
    .await?;

    emu.clear_requests();
    emu.compact();
    emu.end_watches();
    // The watcher resumes from its last resourceVersion, gets 410 Expired, and lists again.
    let relist = collect_until(&mut stream, WAIT, |e| matches!(e, Ok(Event::InitDone))).await?;
    let names: Vec<_> = relist.iter().filter_map(name_of).collect();
    assert!(names.contains(&("init", String::new())), "{names:?}");
    assert!(names.contains(&("init-apply", "one".into())), "{names:?}");
    assert!(names.contains(&("init-apply", "two".into())), "{names:?}");
    let reqs = emu.requests();
    let verbs: Vec<&str> = reqs
        .iter()
        .filter(|r| r.resource == "configmaps")
        .map(|r| r.verb.as_str())
        .collect();
    assert_eq!(
        verbs.first(),
        Some(&"watch"),
        "resumed watch first: {verbs:?}"
    );
    assert!(verbs.contains(&"list"), "re-listed: {verbs:?}");

    // A plain watch from an expired version gets the ERROR event with 410 Expired.
    let stale = WatchParams::default();
    let mut raw = api.watch(&stale, "1").await?.boxed();
    let first = tokio::time::timeout(WAIT, raw.next()).await?;
    match first {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => anyhow::bail!("expected 410 Expired, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn watcher_reconnects_after_emulator_restart() -> anyhow::Result<()> {
    let env = TestEnv::new("watcher-restart").await?;
    let Some(emu) = env.emulator() else {
        eprintln!("SKIP emulator-only test: cannot restart a real API server");
        return Ok(());
    };
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    collect_until(&mut stream, WAIT, |e| matches!(e, Ok(Event::InitDone))).await?;
    // Make sure the watch itself is open before the server goes away.
    create_cm(&api, "before-stop", "x").await?;
    collect_until(&mut stream, WAIT, |e| {
        name_of(e) == Some(("apply", "before-stop".into()))
    })
    .await?;
    emu.clear_requests();
    emu.stop().await;
    assert!(!emu.is_running());
    // While stopped, requests fail at the connection level.
    assert!(api.get("anything").await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    emu.restart().await?;
    create_cm(&api, "after-restart", "x").await?;
    let seen = collect_until(&mut stream, Duration::from_secs(30), |e| {
        name_of(e).is_some_and(|(_, n)| n == "after-restart")
    })
    .await?;
    assert!(!seen.is_empty());
    let reqs = emu.requests();
    let reopened = reqs
        .iter()
        .filter(|r| r.resource == "configmaps" && matches!(r.verb.as_str(), "watch" | "list"))
        .count();
    assert!(reopened >= 1, "the watcher came back: {reqs:?}");
    Ok(())
}

#[tokio::test]
async fn streaming_list_uses_send_initial_events() -> anyhow::Result<()> {
    let env = TestEnv::new("streaming-list").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    for n in ["s1", "s2", "s3"] {
        create_cm(&api, n, "s").await?;
    }
    if let Some(emu) = env.emulator() {
        emu.clear_requests();
    }
    let cfg = watcher::Config::default().streaming_lists();
    let mut stream = watcher(api.clone(), cfg).default_backoff().boxed();
    let init = collect_until(&mut stream, WAIT, |e| matches!(e, Ok(Event::InitDone))).await?;
    let got: Vec<String> = init
        .iter()
        .filter_map(name_of)
        .filter(|(k, _)| *k == "init-apply")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(got, vec!["s1", "s2", "s3"]);
    create_cm(&api, "s4", "s").await?;
    collect_until(&mut stream, WAIT, |e| {
        name_of(e) == Some(("apply", "s4".into()))
    })
    .await?;
    if let Some(emu) = env.emulator() {
        let verbs: Vec<String> = emu
            .requests()
            .into_iter()
            .filter(|r| r.resource == "configmaps")
            .map(|r| r.verb)
            .collect();
        assert!(verbs.contains(&"watch".to_string()), "{verbs:?}");
        assert!(
            !verbs.contains(&"list".to_string()),
            "no list call: {verbs:?}"
        );
    }
    env.cleanup().await?;
    Ok(())
}

#[tokio::test]
async fn bookmarks_carry_the_current_resource_version() -> anyhow::Result<()> {
    let config = EmulatorConfig {
        bookmark_interval: Duration::from_millis(200),
        ..EmulatorConfig::default()
    };
    let env = TestEnv::with_config("bookmarks", config).await?;
    if env.is_real_cluster() {
        eprintln!("SKIP emulator-only test: real bookmark intervals are about a minute");
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let list = api.list(&Default::default()).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut raw = api.watch(&WatchParams::default(), &rv).await?.boxed();
    create_cm(&api, "bm", "x").await?;
    let mut added_rv = String::new();
    let mut bookmark_rv = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while bookmark_rv.is_empty() {
        match tokio::time::timeout_at(deadline, raw.next()).await? {
            Some(Ok(WatchEvent::Added(o))) => added_rv = o.resource_version().unwrap_or_default(),
            Some(Ok(WatchEvent::Bookmark(b))) if !added_rv.is_empty() => {
                bookmark_rv = b.metadata.resource_version
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("watch ended: {other:?}"),
        }
    }
    assert!(bookmark_rv.parse::<u64>()? >= added_rv.parse::<u64>()?);
    Ok(())
}
