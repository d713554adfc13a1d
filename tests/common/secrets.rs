//! The check every test that captures the log of a real Arc (process log, access log) runs on it
//! at its end: the log carries no secret material.
//!
//! What counts as a leak:
//! - PEM private-key armour (`-----BEGIN ... PRIVATE KEY-----` / `-----END ... PRIVATE KEY-----`),
//!   whoever's key it is. The bare words `PRIVATE KEY` are not enough: Arc's own error for a
//!   key file without a key names the labels it expected (`expected PEM "PRIVATE KEY", ...`),
//!   which is an answer, not key material;
//! - every secret value the test put in ([`Secrets::value`]: control tokens, Secret data), as
//!   written and base64-encoded (how Kubernetes carries Secret data, so a dumped object is
//!   caught too);
//! - every body line of a private key the test put in ([`Secrets::pem_key`]), so key bytes
//!   logged without their armour are caught as well.
//!
//! Use: `Secrets::new().value("control token", TOKEN).assert_clean("arc log", &log)`, or
//! [`assert_no_key_material`] where a test configured no secret of its own.

use super::tls::base64;

/// What ends (and begins) the armour of every PEM private key: `-----BEGIN PRIVATE KEY-----`,
/// `-----END EC PRIVATE KEY-----`, `-----BEGIN RSA PRIVATE KEY-----`, ...
pub const PEM_KEY_ARMOUR: &str = "PRIVATE KEY-----";

/// The shortest secret value a test may register: a shorter one would match ordinary log text
/// and make the check fail for nothing (tests use long, distinctive secrets).
pub const MIN_SECRET_LEN: usize = 8;

/// Key body lines shorter than this (the last line of a PEM body can be a few characters) are
/// not searched alone; the full-length lines before them are.
const MIN_KEY_LINE: usize = 16;

/// The secret material of one test.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// (what it is, text that must not appear)
    needles: Vec<(String, String)>,
}

impl Secrets {
    pub fn new() -> Self {
        Secrets::default()
    }

    /// A secret value (token, password, Secret data): it must appear neither as written nor
    /// base64-encoded.
    pub fn value(mut self, what: &str, value: &str) -> Self {
        self.add_value(what, value);
        self
    }

    /// [`Secrets::value`] on a borrowed set (e.g. a token that changes during the test).
    pub fn add_value(&mut self, what: &str, value: &str) {
        assert!(
            value.len() >= MIN_SECRET_LEN,
            "{what}: a secret checked in logs must have at least {MIN_SECRET_LEN} characters \
             (a short one matches ordinary text): {value:?}"
        );
        self.needles.push((what.to_string(), value.to_string()));
        let encoded = base64(value.as_bytes());
        self.needles.push((
            format!("{what} (base64)"),
            encoded.trim_end_matches('=').into(),
        ));
    }

    /// A PEM document holding a private key: every body line, and the whole document
    /// base64-encoded (as a Kubernetes Secret's `tls.key`).
    pub fn pem_key(mut self, what: &str, pem: &str) -> Self {
        let mut lines = 0;
        for line in pem.lines().map(str::trim) {
            if line.starts_with("-----") || line.len() < MIN_KEY_LINE {
                continue;
            }
            lines += 1;
            self.needles
                .push((format!("{what} (key line {lines})"), line.to_string()));
        }
        assert!(lines > 0, "{what}: no key body in {pem:?}");
        let encoded = base64(pem.as_bytes());
        self.needles.push((
            format!("{what} (base64)"),
            encoded.trim_end_matches('=').into(),
        ));
        self
    }

    /// Every leak found in `log`, described (empty: clean).
    pub fn leaks(&self, log: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (n, line) in log.lines().enumerate() {
            if line.contains(PEM_KEY_ARMOUR) {
                found.push(format!("line {}: PEM private-key armour", n + 1));
            }
            for (what, needle) in &self.needles {
                if line.contains(needle.as_str()) {
                    found.push(format!("line {}: {what}", n + 1));
                }
            }
        }
        found
    }

    /// Fails the test, naming each leak and the lines, when `log` carries secret material.
    #[track_caller]
    pub fn assert_clean(&self, what: &str, log: &str) {
        let leaks = self.leaks(log);
        assert!(
            leaks.is_empty(),
            "{what} carries secret material: {leaks:?}\n--- {what} ---\n{log}"
        );
    }
}

/// [`Secrets::assert_clean`] with no secret of the test's own: no private-key armour.
#[track_caller]
pub fn assert_no_key_material(what: &str, log: &str) {
    Secrets::new().assert_clean(what, log);
}
