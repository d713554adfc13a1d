//! Object semantics on top of the store: create (generateName, uid, creationTimestamp,
//! generation), update with optimistic concurrency, patches, server-side apply, delete with
//! finalizers and namespace cascade, and the `status` subresource split.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{Map, Value, json};

use super::patch::{self, Writer};
use super::resources::{self, ResourceKind};
use super::status::{ApiError, Cause};
use super::store::{EventType, ObjKey, Store};
use super::validate;

/// Formats a time as RFC 3339 with second precision (`2026-01-02T03:04:05Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub struct WriteCtx<'a> {
    /// The served kind addressed by the request.
    pub r: &'static ResourceKind,
    /// Namespace from the URL (namespaced kinds only).
    pub namespace: Option<&'a str>,
    /// Field manager (query `fieldManager` or the user agent).
    pub manager: &'a str,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// Subresource addressed (`status`) or empty.
    pub subresource: &'a str,
}

/// How a patch body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`, applied as a merge patch.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply {
        /// `force=true`.
        force: bool,
    },
}

fn key_of(ctx: &WriteCtx<'_>, name: &str) -> ObjKey {
    (
        if ctx.r.namespaced {
            ctx.namespace.unwrap_or("").to_string()
        } else {
            String::new()
        },
        name.to_string(),
    )
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

/// `metadata` of an object (callers hold JSON objects; `check_type` guarantees it for bodies).
fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        // `metadata` was made an object just above.
        None => unreachable!("metadata is an object after initialisation"),
    }
}

fn uid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The object without metadata and status: what `generation` tracks.
fn spec_part(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

/// The object without fields that change on every write.
fn comparable(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    c
}

fn check_type(ctx: &WriteCtx<'_>, body: &mut Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let want_av = ctx.r.api_version();
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && av != want_av
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != ctx.r.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            ctx.r.kind
        )));
    }
    body["apiVersion"] = json!(want_av);
    body["kind"] = json!(ctx.r.kind);
    let url_ns = ctx.namespace.unwrap_or("");
    let meta = meta_mut(body);
    if ctx.r.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

fn writer<'a>(ctx: &'a WriteCtx<'a>, av: &'a str, now: &'a str) -> Writer<'a> {
    Writer {
        manager: ctx.manager,
        subresource: ctx.subresource,
        api_version: av,
        now,
    }
}

fn allocate_service_fields(store: &mut Store, obj: &mut Value, old: Option<&Value>) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    obj["spec"]["type"] = json!(ty);
    if ty != "ExternalName" {
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
        let ip = match (
            obj.pointer("/spec/clusterIP").and_then(Value::as_str),
            old_ip,
        ) {
            (Some(ip), _) if !ip.is_empty() => json!(ip),
            (_, Some(old)) => old,
            _ => {
                let n = store.next_cluster_ip;
                store.next_cluster_ip += 1;
                json!(format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff))
            }
        };
        obj["spec"]["clusterIP"] = ip.clone();
        obj["spec"]["clusterIPs"] = json!([ip]);
        if obj.pointer("/spec/sessionAffinity").is_none() {
            obj["spec"]["sessionAffinity"] = json!("None");
        }
    }
    let needs_node_port = ty == "NodePort" || ty == "LoadBalancer";
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            if p.get("protocol").is_none() {
                p["protocol"] = json!("TCP");
            }
            if p.get("targetPort").is_none()
                && let Some(port) = p.get("port").cloned()
            {
                p["targetPort"] = port;
            }
            if needs_node_port && p.get("nodePort").is_none() {
                let kept = old
                    .and_then(|o| o.pointer(&format!("/spec/ports/{i}/nodePort")))
                    .cloned();
                let np = kept.unwrap_or_else(|| {
                    let n = store.next_node_port;
                    store.next_node_port = if n >= 32767 { 30000 } else { n + 1 };
                    json!(n)
                });
                p["nodePort"] = np;
            }
        }
    }
}

/// Creates an object (`POST`, or server-side apply of a missing object).
pub fn create(
    store: &mut Store,
    ctx: &WriteCtx<'_>,
    mut body: Value,
    from_apply: bool,
) -> Result<Value, ApiError> {
    check_type(ctx, &mut body)?;
    let now = rfc3339(SystemTime::now());
    if ctx.r.namespaced {
        let ns = ctx.namespace.unwrap_or("");
        if !store.namespace_exists(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
    }
    let meta = meta_mut(&mut body);
    for f in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        meta.remove(f);
    }
    if !from_apply {
        meta.remove("managedFields");
    }
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty()
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        let prefix = prefix.to_string();
        for _ in 0..8 {
            name = format!("{prefix}{}", crate::names::random_suffix(5));
            if store.get(ctx.r.storage, &key_of(ctx, &name)).is_none() {
                break;
            }
        }
        meta.insert("name".into(), json!(name));
    }
    meta.insert("uid".into(), json!(uid()));
    meta.insert("creationTimestamp".into(), json!(now));
    if ctx.r.generation {
        meta.insert("generation".into(), json!(1));
    }
    if ctx.r.has_status
        && !matches!(ctx.r.plural, "nodes" | "namespaces")
        && !from_apply
        && let Some(o) = body.as_object_mut()
    {
        o.remove("status");
    }
    validate::normalize(ctx.r, &mut body);
    if ctx.r.plural == "services" && ctx.r.group.is_empty() {
        allocate_service_fields(store, &mut body, None);
    }
    let mut causes: Vec<Cause> = validate::validate_name(ctx.r, &name);
    causes.extend(validate::validate_object(ctx.r, &body, None));
    if !causes.is_empty() {
        return Err(ApiError::invalid(ctx.r, &name, &causes));
    }
    let key = key_of(ctx, &name);
    if store.get(ctx.r.storage, &key).is_some() {
        return Err(ApiError::already_exists(ctx.r, &name));
    }
    if !from_apply {
        let av = ctx.r.api_version();
        patch::record_update(None, &mut body, &writer(ctx, &av, &now));
    }
    if ctx.dry_run {
        return Ok(body);
    }
    let rv = store.next_rv();
    meta_mut(&mut body).insert("resourceVersion".into(), json!(rv.to_string()));
    let stored = store.commit(ctx.r.storage, key, EventType::Added, rv, body);
    Ok((*stored).clone())
}

/// Gets the stored object or a 404.
fn existing(store: &Store, ctx: &WriteCtx<'_>, name: &str) -> Result<Value, ApiError> {
    store
        .get(ctx.r.storage, &key_of(ctx, name))
        .map(|v| (*v).clone())
        .ok_or_else(|| ApiError::not_found(ctx.r, name))
}

/// Stores `new` as the next version of `old` after the shared checks.
fn commit_update(
    store: &mut Store,
    ctx: &WriteCtx<'_>,
    name: &str,
    old: Value,
    mut new: Value,
    from_apply: bool,
) -> Result<Value, ApiError> {
    check_type(ctx, &mut new)?;
    let old_rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
    match meta_str(&new, "resourceVersion") {
        Some(rv) if !rv.is_empty() && rv != old_rv => {
            return Err(ApiError::conflict(ctx.r, name));
        }
        _ => {}
    }
    match meta_str(&new, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    let now = rfc3339(SystemTime::now());
    // Server-owned metadata always comes from the stored object.
    {
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let meta = meta_mut(&mut new);
        meta.insert("name".into(), json!(name));
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(f) {
                Some(v) => meta.insert(f.into(), v.clone()),
                None => meta.remove(f),
            };
        }
        if !from_apply {
            match old_meta.get("managedFields") {
                Some(v) => meta.insert("managedFields".into(), v.clone()),
                None => meta.remove("managedFields"),
            };
        }
        meta.insert("resourceVersion".into(), json!(old_rv));
    }
    if ctx.r.has_status {
        if ctx.subresource == "status" {
            // Only the status moves; everything else stays as stored.
            let status = new.get("status").cloned();
            let managed = new.pointer("/metadata/managedFields").cloned();
            new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            if from_apply {
                let meta = meta_mut(&mut new);
                match managed {
                    Some(m) => meta.insert("managedFields".into(), m),
                    None => meta.remove("managedFields"),
                };
            }
        } else {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
    }
    validate::normalize(ctx.r, &mut new);
    if ctx.r.plural == "services" && ctx.r.group.is_empty() {
        allocate_service_fields(store, &mut new, Some(&old));
        if old.pointer("/spec/clusterIP") != new.pointer("/spec/clusterIP") {
            let ip = new
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(ApiError::invalid(
                ctx.r,
                name,
                &[Cause::invalid(
                    "spec.clusterIPs[0]",
                    ip,
                    "may not change once set",
                )],
            ));
        }
    }
    let causes = validate::validate_object(ctx.r, &new, Some(&old));
    if !causes.is_empty() {
        return Err(ApiError::invalid(ctx.r, name, &causes));
    }
    if ctx.r.generation && spec_part(&old) != spec_part(&new) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    if !from_apply {
        let av = ctx.r.api_version();
        patch::record_update(Some(&old), &mut new, &writer(ctx, &av, &now));
    }
    if comparable(&old) == comparable(&new) {
        // No-op writes neither bump the resourceVersion nor emit an event.
        return Ok(old);
    }
    if ctx.dry_run {
        return Ok(new);
    }
    let rv = store.next_rv();
    meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
    let terminating = new.pointer("/metadata/deletionTimestamp").is_some();
    let no_finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    let etype = if terminating && no_finalizers {
        EventType::Deleted
    } else {
        EventType::Modified
    };
    let stored = store.commit(ctx.r.storage, key_of(ctx, name), etype, rv, new);
    Ok((*stored).clone())
}

/// Replaces an object (`PUT`), main resource or `status`.
pub fn update(
    store: &mut Store,
    ctx: &WriteCtx<'_>,
    name: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let old = existing(store, ctx, name)?;
    commit_update(store, ctx, name, old, body, false)
}

/// Patches an object; server-side apply creates it when missing. Returns the object and
/// whether it was created.
pub fn patch(
    store: &mut Store,
    ctx: &WriteCtx<'_>,
    name: &str,
    kind: PatchKind,
    body: &[u8],
) -> Result<(Value, bool), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            let old = existing(store, ctx, name)?;
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let mut new = old.clone();
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            patch::merge_patch(&mut new, &p);
            fill_rv_if_absent(&mut new, &old);
            Ok((commit_update(store, ctx, name, old, new, false)?, false))
        }
        PatchKind::Json => {
            let old = existing(store, ctx, name)?;
            let mut new = old.clone();
            patch::json_patch(&mut new, body)?;
            Ok((commit_update(store, ctx, name, old, new, false)?, false))
        }
        PatchKind::Apply { force } => {
            let mut config: Value = serde_yaml_ng::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if config.get("apiVersion").and_then(Value::as_str).is_none()
                || config.get("kind").and_then(Value::as_str).is_none()
            {
                return Err(ApiError::bad_request(
                    "apply patches must specify apiVersion and kind",
                ));
            }
            check_type(ctx, &mut config)?;
            if let Some(n) = meta_str(&config, "name")
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            let precondition = meta_str(&config, "resourceVersion").map(str::to_string);
            // Fields the subresource does not own are not part of the applied set.
            if ctx.r.has_status
                && let Some(o) = config.as_object_mut()
            {
                if ctx.subresource == "status" {
                    o.retain(|k, _| {
                        matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                    });
                    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
                    }
                } else {
                    o.remove("status");
                }
            }
            if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
                for f in [
                    "resourceVersion",
                    "managedFields",
                    "uid",
                    "creationTimestamp",
                    "generation",
                ] {
                    m.remove(f);
                }
            }
            let now = rfc3339(SystemTime::now());
            let av = ctx.r.api_version();
            let w = writer(ctx, &av, &now);
            match store.get(ctx.r.storage, &key_of(ctx, name)) {
                None => {
                    if ctx.subresource == "status" {
                        return Err(ApiError::not_found(ctx.r, name));
                    }
                    let base = json!({"metadata": {"name": name}});
                    let mut created = patch::apply(&base, &config, &w, force)?;
                    meta_mut(&mut created).insert("name".into(), json!(name));
                    Ok((create(store, ctx, created, true)?, true))
                }
                Some(old) => {
                    let old = (*old).clone();
                    if let Some(rv) = precondition
                        && meta_str(&old, "resourceVersion") != Some(rv.as_str())
                    {
                        return Err(ApiError::conflict(ctx.r, name));
                    }
                    let new = patch::apply(&old, &config, &w, force)?;
                    Ok((commit_update(store, ctx, name, old, new, true)?, false))
                }
            }
        }
    }
}

fn fill_rv_if_absent(new: &mut Value, old: &Value) {
    if meta_str(new, "resourceVersion").is_none()
        && let Some(rv) = meta_str(old, "resourceVersion").map(str::to_string)
    {
        meta_mut(new).insert("resourceVersion".into(), json!(rv));
    }
}

/// Deletes an object, honouring `preconditions` and finalizers; a Namespace takes its objects
/// with it.
pub fn delete(
    store: &mut Store,
    ctx: &WriteCtx<'_>,
    name: &str,
    options: &Value,
) -> Result<Value, ApiError> {
    let old = existing(store, ctx, name)?;
    if let Some(uid) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
    {
        let actual = meta_str(&old, "uid").unwrap_or("");
        if uid != actual {
            return Err(ApiError::conflict_msg(
                ctx.r,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let actual = meta_str(&old, "resourceVersion").unwrap_or("");
        if rv != actual {
            return Err(ApiError::conflict_msg(
                ctx.r,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    if ctx.dry_run {
        return Ok(old);
    }
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old);
        }
        let mut new = old;
        let rv = store.next_rv();
        let meta = meta_mut(&mut new);
        meta.insert(
            "deletionTimestamp".into(),
            json!(rfc3339(SystemTime::now())),
        );
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        let stored = store.commit(
            ctx.r.storage,
            key_of(ctx, name),
            EventType::Modified,
            rv,
            new,
        );
        return Ok((*stored).clone());
    }
    if ctx.r.storage == resources::namespaces().storage {
        for (storage, key) in store.keys_in_namespace(name) {
            if let Some(obj) = store.get(storage, &key) {
                let mut obj = (*obj).clone();
                let rv = store.next_rv();
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                store.commit(storage, key, EventType::Deleted, rv, obj);
            }
        }
    }
    let mut gone = old;
    let rv = store.next_rv();
    meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
    let stored = store.commit(
        ctx.r.storage,
        key_of(ctx, name),
        EventType::Deleted,
        rv,
        gone,
    );
    Ok((*stored).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    fn ctx<'a>(g: &str, p: &str, ns: Option<&'a str>, sub: &'a str) -> WriteCtx<'a> {
        let v = if g == resources::ARC_GROUP {
            "v1alpha1"
        } else {
            "v1"
        };
        let Some(r) = resources::lookup(g, v, p) else {
            panic!("{p} served")
        };
        WriteCtx {
            r,
            namespace: ns,
            manager: "test",
            dry_run: false,
            subresource: sub,
        }
    }

    fn store_with_ns() -> Store {
        let mut s = Store::new(100);
        let c = ctx("", "namespaces", None, "");
        if let Err(e) = create(&mut s, &c, json!({"metadata": {"name": "ns"}}), false) {
            panic!("{e}");
        }
        s
    }

    fn ingress(path_type: &str) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"rules": [{"http": {"paths": [
            {"path": "/", "pathType": path_type, "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
    }

    #[test]
    fn generation_follows_spec_not_status() {
        let mut s = store_with_ns();
        let c = ctx("networking.k8s.io", "ingresses", Some("ns"), "");
        let created =
            create(&mut s, &c, ingress("Prefix"), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(created.get("status").is_none(), "status dropped on create");
        let cs = ctx("networking.k8s.io", "ingresses", Some("ns"), "status");
        let st = patch(
            &mut s,
            &cs,
            "web",
            PatchKind::Merge,
            br#"{"status":{"loadBalancer":{"ingress":[{"ip":"10.0.0.1"}]}},"spec":{"rules":[]}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .0;
        assert_eq!(st["metadata"]["generation"], 1);
        assert_eq!(st["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.1");
        assert_eq!(
            st["spec"]["rules"].as_array().map(Vec::len),
            Some(1),
            "status write ignores spec"
        );
        let sp = patch(&mut s, &c, "web", PatchKind::Merge, br#"{"spec":{"rules":[{"http":{"paths":[{"path":"/x","pathType":"Exact","backend":{"service":{"name":"web","port":{"number":80}}}}]}}]},"status":null}"#)
            .unwrap_or_else(|e| panic!("{e}")).0;
        assert_eq!(sp["metadata"]["generation"], 2);
        assert_eq!(
            sp["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.1",
            "main write ignores status"
        );
    }

    #[test]
    fn stale_update_conflicts_and_noop_keeps_rv() {
        let mut s = store_with_ns();
        let c = ctx("", "configmaps", Some("ns"), "");
        let a = create(
            &mut s,
            &c,
            json!({"metadata": {"name": "cm"}, "data": {"a": "1"}}),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut b = a.clone();
        b["data"]["a"] = json!("2");
        let b = update(&mut s, &c, "cm", b).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(
            a["metadata"]["resourceVersion"],
            b["metadata"]["resourceVersion"]
        );
        let mut stale = a.clone();
        stale["data"]["a"] = json!("3");
        let err = update(&mut s, &c, "cm", stale);
        assert!(
            matches!(
                err,
                Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    ..
                })
            ),
            "{err:?}"
        );
        let same = update(&mut s, &c, "cm", b.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            same["metadata"]["resourceVersion"],
            b["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn namespace_must_exist_and_delete_cascades() {
        let mut s = store_with_ns();
        let c = ctx("", "configmaps", Some("other"), "");
        let err = create(&mut s, &c, json!({"metadata": {"name": "cm"}}), false);
        assert!(matches!(err, Err(ApiError { code: 404, .. })));
        let c = ctx("", "configmaps", Some("ns"), "");
        let made = create(
            &mut s,
            &c,
            json!({"metadata": {"generateName": "cm-"}}),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let name = made["metadata"]["name"].as_str().unwrap_or("").to_string();
        assert!(name.starts_with("cm-") && name.len() == 8, "{name}");
        let nsc = ctx("", "namespaces", None, "");
        if let Err(e) = delete(&mut s, &nsc, "ns", &Value::Null) {
            panic!("{e}");
        }
        assert!(s.list_current("configmaps", None).is_empty());
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let mut s = store_with_ns();
        let c = ctx("", "configmaps", Some("ns"), "");
        if let Err(e) = create(
            &mut s,
            &c,
            json!({"metadata": {"name": "cm", "finalizers": ["x/y"]}}),
            false,
        ) {
            panic!("{e}");
        }
        let d = delete(&mut s, &c, "cm", &Value::Null).unwrap_or_else(|e| panic!("{e}"));
        assert!(d["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(s.list_current("configmaps", Some("ns")).len(), 1);
        if let Err(e) = patch(
            &mut s,
            &c,
            "cm",
            PatchKind::Merge,
            br#"{"metadata":{"finalizers":null}}"#,
        ) {
            panic!("{e}");
        }
        assert!(s.list_current("configmaps", Some("ns")).is_empty());
    }

    #[test]
    fn apply_creates_then_updates_status() {
        let mut s = store_with_ns();
        let c = ctx("coordination.k8s.io", "leases", Some("ns"), "");
        let body = br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"arc"},"spec":{"holderIdentity":"a","leaseDurationSeconds":15}}"#;
        let (obj, created) = patch(&mut s, &c, "arc", PatchKind::Apply { force: false }, body)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(created);
        assert_eq!(obj["spec"]["holderIdentity"], "a");
        let other = br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"arc"},"spec":{"holderIdentity":"b"}}"#;
        let mut c2 = c.clone();
        c2.manager = "other";
        let err = patch(&mut s, &c2, "arc", PatchKind::Apply { force: false }, other);
        assert!(matches!(err, Err(ApiError { code: 409, .. })), "{err:?}");
        let (forced, _) = patch(&mut s, &c2, "arc", PatchKind::Apply { force: true }, other)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(forced["spec"]["holderIdentity"], "b");
        assert_eq!(forced["spec"]["leaseDurationSeconds"], 15);
    }
}
