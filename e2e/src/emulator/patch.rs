//! Patch application: JSON merge patch (also used for strategic merge patch), JSON patch, and a
//! field-ownership model for server-side apply kept in `metadata.managedFields`.
//!
//! Server-side apply here treats maps as granular and lists and scalars as atomic leaves: an
//! applier owns the leaf paths of its configuration, loses fields it stops applying, and
//! conflicts with another manager that owns a leaf it sets to a different value (unless forced).
//! Keyed list merging (`x-kubernetes-list-type: map`) is not modelled.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::status::ApiError;

/// A leaf path inside an object (map keys from the root).
pub type FieldPath = Vec<String>;

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `apiVersion` the manager used.
    pub api_version: String,
    /// RFC 3339 time of the last change.
    pub time: String,
    /// Empty or `status`.
    pub subresource: String,
    /// Owned leaf paths.
    pub paths: BTreeSet<FieldPath>,
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &patch).map_err(|e| {
        let mut err = ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: {e}"
        ));
        err.code = 422;
        err.reason = "Invalid";
        err
    })
}

/// Whether a top-level/metadata key is tracked for ownership.
fn tracked(path: &[String]) -> bool {
    match path.first().map(String::as_str) {
        Some("apiVersion" | "kind") => false,
        Some("metadata") => matches!(
            path.get(1).map(String::as_str),
            Some("labels" | "annotations" | "finalizers" | "ownerReferences")
        ),
        Some(_) => true,
        None => false,
    }
}

fn collect_leaves(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                collect_leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            if tracked(prefix) {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The tracked leaf paths of a configuration.
pub fn leaf_paths(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    collect_leaves(v, &mut Vec::new(), &mut out);
    out
}

fn diff_leaves(
    a: Option<&Value>,
    b: Option<&Value>,
    prefix: &mut FieldPath,
    out: &mut BTreeSet<FieldPath>,
) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) if !x.is_empty() || !y.is_empty() => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                prefix.push(k.clone());
                diff_leaves(x.get(k), y.get(k), prefix, out);
                prefix.pop();
            }
        }
        (x, y) if x != y => {
            if let Some(Value::Object(m)) = y
                && !m.is_empty()
            {
                collect_leaves(y.unwrap_or(&Value::Null), prefix, out);
            } else if tracked(prefix) {
                out.insert(prefix.clone());
            }
        }
        _ => {}
    }
}

/// Leaf paths whose values differ between two versions of an object.
pub fn changed_paths(old: &Value, new: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    diff_leaves(Some(old), Some(new), &mut Vec::new(), &mut out);
    out
}

fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k.as_str()))
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k.as_str()) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn deep_merge(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    if existing.is_object() && v.is_object() {
                        deep_merge(existing, v);
                    } else {
                        *existing = v.clone();
                    }
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, c) => *t = c.clone(),
    }
}

fn path_to_fields(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let entry = cur
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
            match entry.as_object_mut() {
                Some(m) => cur = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

fn fields_to_paths(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(m) = v.as_object() else {
        return;
    };
    let mut any = false;
    for (k, child) in m {
        if let Some(seg) = k.strip_prefix("f:") {
            any = true;
            prefix.push(seg.to_string());
            fields_to_paths(child, prefix, out);
            prefix.pop();
        }
    }
    if !any && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

/// Reads the emulator-written `metadata.managedFields` of a stored object.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut paths = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                fields_to_paths(f, &mut Vec::new(), &mut paths);
            }
            ManagedEntry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                paths,
            }
        })
        .collect()
}

/// Writes `metadata.managedFields` from entries (entries without paths are dropped).
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.paths.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": path_to_fields(&e.paths),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who is writing, for ownership bookkeeping.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// Empty or `status`.
    pub subresource: &'a str,
    /// `apiVersion` of the request.
    pub api_version: &'a str,
    /// Current time, RFC 3339.
    pub now: &'a str,
}

/// Records a non-apply write: the writer takes the changed leaves from every other manager.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut entries = old.map(read_managed).unwrap_or_default();
    let changed = changed_paths(old.unwrap_or(&Value::Null), new);
    if changed.is_empty() {
        write_managed(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        e.paths.retain(|p| !changed.iter().any(|c| related(p, c)));
    }
    let still_present: BTreeSet<FieldPath> = changed
        .into_iter()
        .filter(|p| get_path(new, p).is_some())
        .collect();
    match entries.iter_mut().find(|e| {
        e.manager == w.manager && e.operation == "Update" && e.subresource == w.subresource
    }) {
        Some(e) => {
            e.paths.extend(still_present);
            e.time = w.now.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: w.manager.to_string(),
            operation: "Update".into(),
            api_version: w.api_version.to_string(),
            time: w.now.to_string(),
            subresource: w.subresource.to_string(),
            paths: still_present,
        }),
    }
    write_managed(new, &entries);
}

/// Server-side apply of `config` onto `current` (an empty object when creating).
pub fn apply(
    current: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, ApiError> {
    let mut entries = read_managed(current);
    let new_paths = leaf_paths(config);
    let mut conflicts = Vec::new();
    for e in entries.iter_mut() {
        if e.manager == w.manager && e.operation == "Apply" {
            continue;
        }
        let clashing: Vec<FieldPath> = e
            .paths
            .iter()
            .filter(|p| {
                new_paths
                    .iter()
                    .any(|n| related(p, n) && get_path(current, n) != get_path(config, n))
            })
            .cloned()
            .collect();
        if clashing.is_empty() {
            continue;
        }
        if force {
            e.paths.retain(|p| !clashing.contains(p));
        } else {
            for p in clashing {
                conflicts.push((e.manager.clone(), format!(".{}", p.join("."))));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(ApiError::apply_conflict(&conflicts));
    }
    let mut result = current.clone();
    let previous: BTreeSet<FieldPath> = entries
        .iter()
        .find(|e| {
            e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource
        })
        .map(|e| e.paths.clone())
        .unwrap_or_default();
    for p in previous.difference(&new_paths) {
        let owned_elsewhere = entries.iter().any(|e| {
            !(e.manager == w.manager && e.operation == "Apply")
                && e.paths.iter().any(|q| related(p, q))
        });
        if !owned_elsewhere && !new_paths.iter().any(|n| n.starts_with(p)) {
            remove_path(&mut result, p);
        }
    }
    deep_merge(&mut result, config);
    match entries.iter_mut().find(|e| {
        e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource
    }) {
        Some(e) => {
            e.paths = new_paths;
            e.time = w.now.to_string();
            e.api_version = w.api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            time: w.now.to_string(),
            subresource: w.subresource.to_string(),
            paths: new_paths,
        }),
    }
    write_managed(&mut result, &entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: "",
            api_version: "v1",
            now: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn apply_merges_and_removes_fields_no_longer_applied() {
        let cur = json!({"metadata": {"name": "a"}, "data": {"keep": "1"}});
        let first = apply(
            &cur,
            &json!({"data": {"x": "1", "y": "2"}}),
            &w("m1"),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first["data"], json!({"keep": "1", "x": "1", "y": "2"}));
        let second = apply(&first, &json!({"data": {"x": "1"}}), &w("m1"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second["data"], json!({"keep": "1", "x": "1"}));
        assert_eq!(
            second["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:x": {}}})
        );
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let cur = json!({"metadata": {"name": "a"}});
        let a = apply(&cur, &json!({"data": {"x": "1"}}), &w("m1"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        let same = apply(&a, &json!({"data": {"x": "1"}}), &w("m2"), false);
        assert!(same.is_ok(), "same value shares ownership");
        let err = apply(&a, &json!({"data": {"x": "2"}}), &w("m2"), false);
        assert!(matches!(err, Err(ApiError { code: 409, .. })));
        let forced = apply(&a, &json!({"data": {"x": "2"}}), &w("m2"), true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(forced["data"]["x"], "2");
        let owners = read_managed(&forced);
        assert_eq!(owners.len(), 1, "m1 lost its only field: {owners:?}");
        assert_eq!(owners[0].manager, "m2");
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let old = json!({"metadata": {"name": "a"}, "spec": {"a": 1, "b": 2}});
        let mut new = json!({"metadata": {"name": "a"}, "spec": {"a": 1, "b": 3}});
        record_update(Some(&old), &mut new, &w("kubectl"));
        let owners = read_managed(&new);
        assert_eq!(
            owners[0].paths.iter().next().cloned(),
            Some(vec!["spec".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn json_patch_test_failure_is_422() {
        let mut doc = json!({"a": 1});
        let r = json_patch(&mut doc, br#"[{"op":"test","path":"/a","value":2}]"#);
        assert!(matches!(r, Err(ApiError { code: 422, .. })));
        let ok = json_patch(&mut doc, br#"[{"op":"replace","path":"/a","value":2}]"#);
        assert!(ok.is_ok());
        assert_eq!(doc["a"], 2);
    }
}
