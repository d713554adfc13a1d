//! Helpers shared by the harness's own tests.
#![allow(dead_code)]

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

/// Waits (bounded) for the first stream item satisfying `pred`, returning every item seen.
pub async fn collect_until<S, T, F>(
    stream: &mut S,
    limit: Duration,
    mut pred: F,
) -> anyhow::Result<Vec<T>>
where
    S: Stream<Item = T> + Unpin,
    F: FnMut(&T) -> bool,
{
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => {
                let done = pred(&item);
                seen.push(item);
                if done {
                    return Ok(seen);
                }
            }
            Ok(None) => anyhow::bail!("stream ended before the awaited item"),
            Err(_) => anyhow::bail!("timed out after {limit:?} waiting for the awaited item"),
        }
    }
}

/// A ConfigMap with one label and one data key.
pub fn config_map(name: &str, label: &str, value: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.metadata.labels = Some([("app".to_string(), label.to_string())].into());
    cm.data = Some([("k".to_string(), value.to_string())].into());
    cm
}

/// Creates a ConfigMap.
pub async fn create_cm(api: &Api<ConfigMap>, name: &str, label: &str) -> anyhow::Result<ConfigMap> {
    Ok(api
        .create(&PostParams::default(), &config_map(name, label, "v"))
        .await?)
}

/// The error code of a kube API error, if it is one.
pub fn api_code<T>(r: &Result<T, kube::Error>) -> Option<(u16, String, String)> {
    match r {
        Err(kube::Error::Api(s)) => Some((s.code, s.reason.clone(), s.message.clone())),
        _ => None,
    }
}
