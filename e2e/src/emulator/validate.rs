//! Validation and defaulting the emulator applies on every write, phrased like the real API
//! server: object names, Ingress paths and backends, EndpointSlice addresses, TLS Secrets.

use std::net::IpAddr;

use base64::Engine;
use serde_json::{Value, json};

use super::resources::ResourceKind;
use super::status::Cause;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Whether `s` is an RFC 1123 label (at most 63 characters).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(|c| *c != b'-')
        && b.last().is_some_and(|c| *c != b'-')
}

/// Whether `s` is an RFC 1123 subdomain (at most 253 characters).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns1123_label)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn arr_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Checks `metadata.name` (and `metadata.generateName` prefix) against the kind's rules.
pub fn validate_name(r: &ResourceKind, name: &str) -> Vec<Cause> {
    let (ok, msg) = if r.name_is_dns1035() {
        (is_dns1035_label(name), DNS1035_LABEL_MSG)
    } else if r.name_is_label() {
        (is_dns1123_label(name), DNS1123_LABEL_MSG)
    } else {
        (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG)
    };
    if name.is_empty() {
        vec![Cause::required(
            "metadata.name",
            "name or generateName is required",
        )]
    } else if ok {
        Vec::new()
    } else {
        vec![Cause::invalid("metadata.name", name, msg)]
    }
}

/// Validates the kind-specific parts of an object about to be stored.
pub fn validate_object(r: &ResourceKind, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_labels(obj, &mut causes);
    match (r.group, r.plural) {
        ("networking.k8s.io", "ingresses") => validate_ingress(obj, &mut causes),
        ("discovery.k8s.io", "endpointslices") => validate_endpoint_slice(obj, &mut causes),
        ("", "secrets") => validate_secret(obj, old, &mut causes),
        ("", "configmaps") => validate_immutable_data(obj, old, &mut causes),
        ("", "services") => validate_service(obj, &mut causes),
        ("", "nodes") => validate_node(obj, &mut causes),
        ("coordination.k8s.io", "leases") => {
            if let Some(d) = obj
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_i64)
                && d <= 0
            {
                causes.push(Cause::invalid(
                    "spec.leaseDurationSeconds",
                    &d.to_string(),
                    "must be greater than 0",
                ));
            }
        }
        _ => {}
    }
    causes
}

fn validate_labels(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let Some(v) = v.as_str() else {
                causes.push(Cause::invalid(
                    format!("metadata.labels[{k}]"),
                    &v.to_string(),
                    "label values must be strings",
                ));
                continue;
            };
            let valid_value = v.len() <= 63
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
                && (v.is_empty()
                    || (v.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
                        && v.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)));
            if !valid_value {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ));
            }
        }
    }
}

fn validate_backend(b: &Value, path: &str, causes: &mut Vec<Cause>) {
    let svc = b.get("service");
    let res = b.get("resource");
    match (svc, res) {
        (Some(_), Some(_)) => causes.push(Cause::invalid(
            path,
            "",
            "cannot set both service and resource backends",
        )),
        (None, None) => causes.push(Cause::invalid(
            path,
            "",
            "must specify a service or resource backend",
        )),
        (Some(s), None) => {
            match s.get("name").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required(format!("{path}.service.name"), "")),
                Some(n) if !is_dns1035_label(n) => causes.push(Cause::invalid(
                    format!("{path}.service.name"),
                    n,
                    DNS1035_LABEL_MSG,
                )),
                Some(_) => {}
            }
            let port = s.get("port");
            let has_name = port
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let number = port.and_then(|p| p.get("number")).and_then(Value::as_i64);
            match (has_name, number) {
                (true, Some(_)) => causes.push(Cause::invalid(
                    format!("{path}.service.port"),
                    "",
                    "cannot set both port name & port number",
                )),
                (false, None) => causes.push(Cause::required(
                    format!("{path}.service.port"),
                    "port name or number is required",
                )),
                (false, Some(n)) if !(1..=65535).contains(&n) => causes.push(Cause::invalid(
                    format!("{path}.service.port.number"),
                    &n.to_string(),
                    "must be between 1 and 65535, inclusive",
                )),
                _ => {}
            }
        }
        (None, Some(_)) => {}
    }
}

fn validate_host(host: &str, path: &str, causes: &mut Vec<Cause>) {
    if host.parse::<IpAddr>().is_ok() {
        causes.push(Cause::invalid(
            path,
            host,
            "must be a DNS name, not an IP address",
        ));
        return;
    }
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if !is_dns1123_subdomain(bare) {
        let msg = if host.starts_with("*.") {
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        } else {
            DNS1123_SUBDOMAIN_MSG
        };
        causes.push(Cause::invalid(path, host, msg));
    }
}

fn validate_ingress(obj: &Value, causes: &mut Vec<Cause>) {
    let rules = arr_at(obj, "/spec/rules");
    let default_backend = obj.pointer("/spec/defaultBackend");
    if rules.is_empty() && default_backend.is_none() {
        causes.push(Cause::invalid(
            "spec",
            "[]",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default_backend {
        validate_backend(b, "spec.defaultBackend", causes);
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(host) = rule.get("host").and_then(Value::as_str)
            && !host.is_empty()
        {
            validate_host(host, &format!("spec.rules[{i}].host"), causes);
        }
        let Some(http) = rule.get("http") else {
            continue;
        };
        let paths = arr_at(http, "/paths");
        if paths.is_empty() {
            causes.push(Cause::required(format!("spec.rules[{i}].http.paths"), ""));
        }
        for (j, p) in paths.iter().enumerate() {
            let base = format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.get("path").and_then(Value::as_str);
            match p.get("pathType").and_then(Value::as_str) {
                None => causes.push(Cause::required(
                    format!("{base}.pathType"),
                    "pathType must be specified",
                )),
                Some(t @ ("Exact" | "Prefix")) => match path {
                    Some(pv) if !pv.starts_with('/') => causes.push(Cause::invalid(
                        format!("{base}.path"),
                        pv,
                        "must be an absolute path",
                    )),
                    None => causes.push(Cause::required(
                        format!("{base}.path"),
                        &format!("must be specified when pathType is {t}"),
                    )),
                    Some(pv) if pv.contains("//") || pv.contains("/./") || pv.contains("/../") => {
                        causes.push(Cause::invalid(
                            format!("{base}.path"),
                            pv,
                            "must not contain '//', '/./' or '/../'",
                        ))
                    }
                    _ => {}
                },
                Some("ImplementationSpecific") => {
                    if let Some(pv) = path
                        && !pv.is_empty()
                        && !pv.starts_with('/')
                    {
                        causes.push(Cause::invalid(
                            format!("{base}.path"),
                            pv,
                            "must be an absolute path",
                        ));
                    }
                }
                Some(other) => causes.push(Cause::unsupported(
                    format!("{base}.pathType"),
                    other,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            match p.get("backend") {
                Some(b) => validate_backend(b, &format!("{base}.backend"), causes),
                None => causes.push(Cause::required(format!("{base}.backend"), "")),
            }
        }
    }
    for (i, tls) in arr_at(obj, "/spec/tls").iter().enumerate() {
        for (j, h) in arr_at(tls, "/hosts").iter().enumerate() {
            if let Some(h) = h.as_str() {
                validate_host(h, &format!("spec.tls[{i}].hosts[{j}]"), causes);
            }
        }
    }
}

/// The reasons an IP may not be an endpoint, in the real server's words.
pub fn endpoint_ip_problems(ip: IpAddr) -> Vec<&'static str> {
    let mut out = Vec::new();
    if ip.is_unspecified() {
        out.push("may not be unspecified (0.0.0.0, ::)");
    }
    if ip.is_loopback() {
        out.push("may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        out.push("may not be in the link-local range (169.254.0.0/16, fe80::/10)");
    }
    let ll_multicast = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 224 && o[1] == 0 && o[2] == 0
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    };
    if ll_multicast {
        out.push("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)");
    }
    out
}

fn validate_endpoint_slice(obj: &Value, causes: &mut Vec<Cause>) {
    let address_type = obj.get("addressType").and_then(Value::as_str);
    match address_type {
        None => causes.push(Cause::required("addressType", "")),
        Some("IPv4" | "IPv6" | "FQDN") => {}
        Some(other) => causes.push(Cause::unsupported(
            "addressType",
            other,
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    for (i, ep) in arr_at(obj, "/endpoints").iter().enumerate() {
        let addrs = arr_at(ep, "/addresses");
        if addrs.is_empty() {
            causes.push(Cause::required(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let field = format!("endpoints[{i}].addresses[{j}]");
            let Some(a) = a.as_str() else {
                causes.push(Cause::invalid(field, &a.to_string(), "must be a string"));
                continue;
            };
            match address_type {
                Some("IPv4") | Some("IPv6") => {
                    let want_v4 = address_type == Some("IPv4");
                    match a.parse::<IpAddr>() {
                        Ok(ip) if ip.is_ipv4() != want_v4 => causes.push(Cause::invalid(
                            field,
                            a,
                            if want_v4 {
                                "must be an IPv4 address"
                            } else {
                                "must be an IPv6 address"
                            },
                        )),
                        Ok(ip) => {
                            for p in endpoint_ip_problems(ip) {
                                causes.push(Cause::invalid(field.clone(), a, p));
                            }
                        }
                        Err(_) => {
                            causes.push(Cause::invalid(field, a, "must be a valid IP address"))
                        }
                    }
                }
                Some("FQDN") if !is_dns1123_subdomain(a) => {
                    causes.push(Cause::invalid(field, a, DNS1123_SUBDOMAIN_MSG))
                }
                _ => {}
            }
        }
    }
    for (i, p) in arr_at(obj, "/ports").iter().enumerate() {
        if let Some(n) = p.get("port").and_then(Value::as_i64)
            && !(0..=65535).contains(&n)
        {
            causes.push(Cause::invalid(
                format!("ports[{i}].port"),
                &n.to_string(),
                "must be between 0 and 65535, inclusive",
            ));
        }
    }
}

fn validate_secret(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let data = obj.get("data").and_then(Value::as_object);
    if let Some(data) = data {
        for (k, v) in data {
            let valid_key = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
            if !valid_key {
                causes.push(Cause::invalid(
                    format!("data[{k}]"),
                    k,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
            if !v.is_string() && !v.is_null() {
                causes.push(Cause::invalid(
                    format!("data[{k}]"),
                    "",
                    "must be base64-encoded bytes",
                ));
            }
        }
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("kubernetes.io/tls") => {
            for key in ["tls.crt", "tls.key"] {
                if !data.is_some_and(|d| d.contains_key(key)) {
                    causes.push(Cause::required(format!("data[{key}]"), ""));
                }
            }
        }
        Some("kubernetes.io/basic-auth") => {
            let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
            if !has("username") && !has("password") {
                causes.push(Cause::required(
                    "data[username]",
                    "either username or password is required",
                ));
            }
        }
        _ => {}
    }
    if let Some(old) = old
        && old.get("type") != obj.get("type")
    {
        causes.push(Cause::invalid(
            "type",
            obj.get("type").and_then(Value::as_str).unwrap_or(""),
            "field is immutable",
        ));
    }
    validate_immutable_data(obj, old, causes);
}

fn validate_immutable_data(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if let Some(old) = old
        && old.get("immutable").and_then(Value::as_bool) == Some(true)
    {
        if obj.get("data") != old.get("data") || obj.get("binaryData") != old.get("binaryData") {
            causes.push(Cause::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
            causes.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

/// Node checks of the API server: `status.addresses` entries need a type and an address and
/// must not repeat (kubelet reports them; Arc reads ExternalIP/InternalIP from them).
fn validate_node(obj: &Value, causes: &mut Vec<Cause>) {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, a) in arr_at(obj, "/status/addresses").iter().enumerate() {
        let ty = a.get("type").and_then(Value::as_str).unwrap_or("");
        let addr = a.get("address").and_then(Value::as_str).unwrap_or("");
        if ty.is_empty() {
            causes.push(Cause::required(format!("status.addresses[{i}].type"), ""));
        }
        if addr.is_empty() {
            causes.push(Cause::required(
                format!("status.addresses[{i}].address"),
                "",
            ));
        }
        if seen.contains(&(ty, addr)) {
            causes.push(Cause::duplicate(
                format!("status.addresses[{i}]"),
                &format!("core.NodeAddress{{Type:{ty:?}, Address:{addr:?}}}"),
            ));
        }
        seen.push((ty, addr));
    }
}

fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = str_at(obj, "/spec/type").unwrap_or("ClusterIP");
    let supported = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !supported.contains(&ty) {
        causes.push(Cause::unsupported("spec.type", ty, &supported));
    }
    let headless = str_at(obj, "/spec/clusterIP") == Some("None");
    let ports = arr_at(obj, "/spec/ports");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports", ""));
    }
    if ty == "ExternalName" && str_at(obj, "/spec/externalName").is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.externalName", ""));
    }
    for (i, p) in ports.iter().enumerate() {
        match p.get("port").and_then(Value::as_i64) {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            )),
            None => causes.push(Cause::required(format!("spec.ports[{i}].port"), "")),
        }
        if ports.len() > 1
            && p.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(format!("spec.ports[{i}].name"), ""));
        }
    }
}

/// Server-side normalisation on write: Secret `stringData` folded into `data`, Namespace
/// labels and phase.
pub fn normalize(r: &ResourceKind, obj: &mut Value) {
    match (r.group, r.plural) {
        ("", "secrets") => {
            if let Some(sd) = obj
                .as_object_mut()
                .and_then(|o| o.remove("stringData"))
                .and_then(|v| v.as_object().cloned())
            {
                let engine = base64::engine::general_purpose::STANDARD;
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or_default().to_string();
                    if !obj.get("data").is_some_and(Value::is_object) {
                        obj["data"] = json!({});
                    }
                    obj["data"][k] = Value::String(engine.encode(text));
                }
            }
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        ("", "namespaces") => {
            if let Some(name) = str_at(obj, "/metadata/name").map(str::to_string) {
                if !obj
                    .pointer("/metadata/labels")
                    .is_some_and(Value::is_object)
                {
                    obj["metadata"]["labels"] = json!({});
                }
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            if !obj.get("spec").is_some_and(Value::is_object) {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if !obj.get("status").is_some_and(Value::is_object) {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::resources::lookup;

    fn kind(g: &str, p: &str) -> &'static ResourceKind {
        let v = if g == "arc-gateway.io" {
            "v1alpha1"
        } else {
            "v1"
        };
        match lookup(g, v, p) {
            Some(r) => r,
            None => panic!("{g}/{p} served"),
        }
    }

    #[test]
    fn node_addresses_need_type_and_address_and_no_repeats() {
        let node =
            |addrs: Value| json!({"metadata": {"name": "n1"}, "status": {"addresses": addrs}});
        let r = kind("", "nodes");
        assert!(
            validate_object(
                r,
                &node(json!([
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "ExternalIP", "address": "198.51.100.1"}
                ])),
                None
            )
            .is_empty()
        );
        let causes = validate_object(
            r,
            &node(json!([
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"address": "10.0.0.2"}
            ])),
            None,
        );
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["status.addresses[1]", "status.addresses[2].type"]);
        assert_eq!(causes[0].reason, "FieldValueDuplicate");
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(is_dns1123_label("abc-1"));
        assert!(!is_dns1123_label("a.b"));
        assert!(validate_name(kind("", "namespaces"), "a.b").len() == 1);
        assert!(validate_name(kind("", "services"), "1abc").len() == 1);
        assert!(validate_name(kind("", "configmaps"), "1abc.x").is_empty());
    }

    #[test]
    fn endpoint_slice_loopback_is_refused_with_real_message() {
        let obj = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"]}, {"addresses": ["169.254.1.1", "0.0.0.0", "10.200.1.2"]}]});
        let causes = validate_object(kind("discovery.k8s.io", "endpointslices"), &obj, None);
        let msgs: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range"));
        assert!(msgs[1].contains("link-local range"));
        assert!(msgs[2].contains("may not be unspecified"));
    }

    #[test]
    fn ingress_path_type_required() {
        let obj = json!({"spec": {"rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "x", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}});
        let causes = validate_object(kind("networking.k8s.io", "ingresses"), &obj, None);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(causes[0].field, "spec.rules[0].http.paths[0].pathType");
        assert_eq!(
            causes[0].message,
            "Required value: pathType must be specified"
        );
        assert_eq!(causes[1].field, "spec.rules[0].http.paths[1].path");
    }

    #[test]
    fn tls_secret_needs_both_keys_and_string_data_is_folded() {
        let mut obj = json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "x"}});
        normalize(kind("", "secrets"), &mut obj);
        assert_eq!(obj["data"]["tls.crt"], "eA==");
        assert!(obj.get("stringData").is_none());
        let causes = validate_object(kind("", "secrets"), &obj, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "data[tls.key]");
    }
}
