//! The check run on every captured Arc log of the e2e tests when the process ends
//! ([`ArcProcess::stop`](crate::arc::ArcProcess::stop), or its drop): the log carries no secret
//! material. The same rule as `tests/common/secrets.rs` of the main crate:
//!
//! - PEM private-key armour (`-----BEGIN ... PRIVATE KEY-----`), whoever's key it is (the bare
//!   words `PRIVATE KEY` also appear in Arc's own error naming the labels it expects, which is
//!   not key material);
//! - every secret value registered ([`Secrets::value`]: control tokens, each value of the
//!   Secrets the test created), as written and base64-encoded (how Kubernetes carries Secret
//!   data, so a dumped object is caught too);
//! - for a value holding a PEM private key, each of its body lines as well.

#![forbid(unsafe_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;

/// What ends (and begins) the armour of every PEM private key.
pub const PEM_KEY_ARMOUR: &str = "PRIVATE KEY-----";

/// Values shorter than this are not searched (they would match ordinary log text); Secret data
/// of the tests (tokens, certificates, keys) is far longer.
pub const MIN_SECRET_LEN: usize = 8;

/// Key body lines shorter than this (the last line of a PEM body) are not searched alone.
const MIN_KEY_LINE: usize = 16;

/// The secret material of one test.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// (what it is, text that must not appear)
    needles: Vec<(String, String)>,
}

impl Secrets {
    /// No secrets yet (the armour check always applies).
    pub fn new() -> Self {
        Secrets::default()
    }

    /// Registers a secret value: as written, base64-encoded, and (for a PEM private key) each
    /// body line. Values shorter than [`MIN_SECRET_LEN`] are refused with a panic when
    /// `strict`, skipped otherwise (a Secret may hold short non-secret keys such as a flag).
    pub fn add(&mut self, what: &str, value: &[u8], strict: bool) {
        if value.len() < MIN_SECRET_LEN {
            assert!(
                !strict,
                "{what}: a secret checked in logs must have at least {MIN_SECRET_LEN} bytes"
            );
            return;
        }
        let text = String::from_utf8_lossy(value).into_owned();
        if text.contains(PEM_KEY_ARMOUR) {
            let mut n = 0;
            for line in text.lines().map(str::trim) {
                if line.starts_with("-----") || line.len() < MIN_KEY_LINE {
                    continue;
                }
                n += 1;
                self.needles
                    .push((format!("{what} (key line {n})"), line.to_string()));
            }
        }
        let encoded = STANDARD.encode(value);
        self.needles.push((
            format!("{what} (base64)"),
            encoded.trim_end_matches('=').into(),
        ));
        self.needles.push((what.to_string(), text));
    }

    /// [`Secrets::add`] of a text value, strictly.
    pub fn value(mut self, what: &str, value: &str) -> Self {
        self.add(what, value.as_bytes(), true);
        self
    }

    /// Every data value of `secret` (`namespace/name` key `k` is what a leak is reported as).
    pub fn add_secret(&mut self, secret: &Secret) {
        let ns = secret.metadata.namespace.as_deref().unwrap_or("");
        let name = secret.metadata.name.as_deref().unwrap_or("");
        for (k, v) in secret.data.iter().flatten() {
            self.add(&format!("Secret {ns}/{name} key {k}"), &v.0, false);
        }
        for (k, v) in secret.string_data.iter().flatten() {
            self.add(&format!("Secret {ns}/{name} key {k}"), v.as_bytes(), false);
        }
    }

    /// Every leak found in `log`, described (empty: clean).
    pub fn leaks(&self, log: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (n, line) in log.lines().enumerate() {
            if line.contains(PEM_KEY_ARMOUR) {
                found.push(format!("line {}: PEM private-key armour", n + 1));
            }
            for (what, needle) in &self.needles {
                // A multi-line value (a whole PEM) is found through its lines instead.
                if !needle.contains('\n') && line.contains(needle.as_str()) {
                    found.push(format!("line {}: {what}", n + 1));
                }
            }
        }
        for (what, needle) in &self.needles {
            if needle.contains('\n') && log.contains(needle.as_str()) {
                found.push(format!("whole value: {what}"));
            }
        }
        found
    }

    /// Panics, naming each leak, when `log` carries secret material.
    #[track_caller]
    pub fn assert_clean(&self, what: &str, log: &str) {
        let leaks = self.leaks(log);
        assert!(
            leaks.is_empty(),
            "{what} carries secret material: {leaks:?}\n--- {what} ---\n{log}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_keys_and_encodings_and_lets_errors_through() {
        let key = rcgen::KeyPair::generate().expect("key").serialize_pem();
        let mut s = Secrets::new().value("token", "e2e-t0ken-value-42");
        s.add("key", key.as_bytes(), false);
        s.add("flag", b"on", false);
        assert!(s.leaks("nothing here; on and off").is_empty());
        assert!(
            s.leaks("no private key found (expected PEM \"PRIVATE KEY\")")
                .is_empty()
        );
        assert_eq!(s.leaks("Bearer e2e-t0ken-value-42").len(), 1);
        assert_eq!(s.leaks(&STANDARD.encode("e2e-t0ken-value-42")).len(), 1);
        let body = key.lines().nth(1).expect("body line");
        assert_eq!(s.leaks(&format!("k={body}")).len(), 1);
        assert!(!s.leaks(&STANDARD.encode(&key)).is_empty());
        assert!(!s.leaks(&key).is_empty());
    }

    #[test]
    #[should_panic(expected = "at least")]
    fn short_test_secrets_are_refused() {
        let _ = Secrets::new().value("token", "short");
    }
}
