//! API errors and the `Status` bodies the real server sends for them (code, reason, message,
//! details with causes).

use serde_json::{Value, json};

use super::resources::ResourceKind;

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason (`FieldValueRequired`, `FieldValueInvalid`, ...).
    pub reason: &'static str,
    /// Field path, e.g. `spec.rules[0].http.paths[0].pathType`.
    pub field: String,
    /// Human message as the real server phrases it.
    pub message: String,
}

impl Cause {
    /// `field: Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field,
            message,
        }
    }

    /// `field: Invalid value: "value": detail`.
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {detail}"),
        }
    }

    /// `field: Unsupported value: "value": supported values: ...`.
    pub fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    /// `field: Duplicate value: value`.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
}

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `reason` field (`NotFound`, `Conflict`, `Invalid`, `Expired`, ...).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `details` field, if any.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_object_details(mut self, r: &ResourceKind, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": r.group, "kind": r.plural}));
        self
    }

    /// 404 for a named object.
    pub fn not_found(r: &ResourceKind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", r.qualified_plural()),
        )
        .with_object_details(r, name)
    }

    /// 404 for the namespace an object would live in.
    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces {namespace:?} not found"),
        )
        .with_object_details(super::resources::namespaces(), namespace)
    }

    /// 404 for a path that names nothing served.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(r: &ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", r.qualified_plural()),
        )
        .with_object_details(r, name)
    }

    /// 409 on a stale resourceVersion (optimistic concurrency).
    pub fn conflict(r: &ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                r.qualified_plural()
            ),
        )
        .with_object_details(r, name)
    }

    /// 409 on a failed precondition with a custom message.
    pub fn conflict_msg(r: &ResourceKind, name: &str, msg: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {msg}",
                r.qualified_plural()
            ),
        )
        .with_object_details(r, name)
    }

    /// 409 on a server-side apply conflict.
    pub fn apply_conflict(fields: &[(String, String)]) -> Self {
        let lines: Vec<String> = fields
            .iter()
            .map(|(manager, field)| format!("- conflict with {manager:?}: {field}"))
            .collect();
        let causes: Vec<Value> = fields
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {manager:?}"), "field": field})
            })
            .collect();
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" },
                lines.join("\n")
            ),
        );
        e.details = Some(json!({"causes": causes}));
        e
    }

    /// 422 with field causes, phrased like the real server.
    pub fn invalid(r: &ResourceKind, name: &str, causes: &[Cause]) -> Self {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let joined = if parts.len() == 1 {
            parts.join("")
        } else {
            format!("[{}]", parts.join(", "))
        };
        let cause_values: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {joined}", r.qualified_kind()),
        );
        e.details = Some(json!({
            "name": name, "group": r.group, "kind": r.kind, "causes": cause_values
        }));
        e
    }

    /// 400.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    /// 410 Expired.
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 415.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {ct:?})"
            ),
        )
    }

    /// 500 (also used by fault injection).
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", msg)
    }

    /// 429 (fault injection).
    pub fn too_many_requests() -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        e.details = Some(json!({"retryAfterSeconds": 1}));
        e
    }

    /// 504 for a list at a resourceVersion the server has not reached.
    pub fn too_large_resource_version(asked: u64, current: u64) -> Self {
        let mut e = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {asked}, current: {current}"),
        );
        e.details = Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        }));
        e
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::resources::lookup;

    #[test]
    fn invalid_message_is_phrased_like_the_real_server() {
        let Some(r) = lookup("", "v1", "secrets") else {
            panic!("secrets served")
        };
        let e = ApiError::invalid(
            r,
            "tls",
            &[
                Cause::required("data[tls.crt]", ""),
                Cause::required("data[tls.key]", ""),
            ],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Secret \"tls\" is invalid: [data[tls.crt]: Required value, data[tls.key]: Required value]"
        );
        assert_eq!(
            e.to_status()["details"]["causes"][0]["field"],
            "data[tls.crt]"
        );
    }

    #[test]
    fn not_found_names_group() {
        let Some(r) = lookup("networking.k8s.io", "v1", "ingresses") else {
            panic!("ingresses served")
        };
        let s = ApiError::not_found(r, "web").to_status();
        assert_eq!(
            s["message"],
            "ingresses.networking.k8s.io \"web\" not found"
        );
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
    }
}
