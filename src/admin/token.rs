//! The control API's bearer token: where it comes from (config file or the Kubernetes Secret
//! `arc-gateway-secret`, swapped live) and how a request's token is checked (constant time).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

/// Outcome of checking a request against the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// No token is configured: the control API is disabled (404).
    Disabled,
    /// Missing or wrong token (401, no detail).
    Denied,
    /// The bearer token matches.
    Allowed,
}

/// The current control-API token, shared by the admin server and whoever sets it.
///
/// Cloning shares the value. `None` disables the API rather than opening it.
#[derive(Debug, Clone, Default)]
pub struct ControlToken {
    current: Arc<ArcSwapOption<Box<[u8]>>>,
}

impl ControlToken {
    /// A token holder starting with `token` (`None` or empty: API disabled).
    pub fn new(token: Option<String>) -> Self {
        let t = ControlToken::default();
        t.set(token);
        t
    }

    /// Replaces the token (config reload, Secret change). Empty counts as none.
    pub fn set(&self, token: Option<String>) {
        let value = token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(t.into_bytes().into_boxed_slice()));
        self.current.store(value);
    }

    /// Whether a token is configured (the API is enabled).
    pub fn is_configured(&self) -> bool {
        self.current.load().is_some()
    }

    /// Follows a watch channel (e.g. the controller's view of `arc-gateway-secret`) until its
    /// sender is dropped; each value replaces the token.
    pub async fn follow(self, mut rx: watch::Receiver<Option<String>>) {
        loop {
            let value = rx.borrow_and_update().clone();
            self.set(value);
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&[u8]>) -> TokenCheck {
        let current = self.current.load();
        let Some(expected) = current.as_deref() else {
            return TokenCheck::Disabled;
        };
        let presented = authorization.and_then(bearer).unwrap_or_default();
        if constant_time_eq(presented, expected) {
            TokenCheck::Allowed
        } else {
            TokenCheck::Denied
        }
    }
}

/// The token of a `Bearer <token>` header value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    let token = rest.get(start..)?;
    let end = token.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    token.get(..end)
}

#[cfg(test)]
thread_local! {
    static COMPARISONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// differ: every byte of the longer one is visited and differences are OR-ed together.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    #[cfg(test)]
    COMPARISONS.with(|c| c.set(c.get() + 1));
    let n = a.len().max(b.len());
    // Length difference folds into the result instead of returning early.
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparisons() -> u64 {
        COMPARISONS.with(std::cell::Cell::get)
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(
            !constant_time_eq(b"a\0", b"a"),
            "padding never makes a match"
        );
    }

    #[test]
    fn none_wrong_and_right_tokens() {
        let t = ControlToken::new(Some("s3cr3t".into()));
        assert_eq!(t.check(None), TokenCheck::Denied);
        assert_eq!(t.check(Some(b"Bearer nope")), TokenCheck::Denied);
        assert_eq!(t.check(Some(b"Basic s3cr3t")), TokenCheck::Denied);
        assert_eq!(t.check(Some(b"Bearer s3cr3")), TokenCheck::Denied);
        assert_eq!(t.check(Some(b"Bearer ")), TokenCheck::Denied);
        assert_eq!(t.check(Some(b"Bearer s3cr3t")), TokenCheck::Allowed);
        assert_eq!(t.check(Some(b"bearer  s3cr3t ")), TokenCheck::Allowed);
    }

    #[test]
    fn the_check_goes_through_the_constant_time_comparison() {
        let t = ControlToken::new(Some("s3cr3t".into()));
        let before = comparisons();
        assert_eq!(t.check(Some(b"Bearer wrong")), TokenCheck::Denied);
        assert_eq!(t.check(None), TokenCheck::Denied, "compared against empty");
        assert_eq!(t.check(Some(b"Bearer s3cr3t")), TokenCheck::Allowed);
        assert_eq!(comparisons() - before, 3);
    }

    #[test]
    fn no_token_disables_and_set_swaps() {
        let t = ControlToken::new(None);
        assert_eq!(t.check(Some(b"Bearer x")), TokenCheck::Disabled);
        assert!(!t.is_configured());
        let shared = t.clone();
        shared.set(Some("x".into()));
        assert_eq!(t.check(Some(b"Bearer x")), TokenCheck::Allowed);
        shared.set(Some(String::new()));
        assert_eq!(t.check(Some(b"Bearer x")), TokenCheck::Disabled);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn follows_a_watch_channel() {
        let t = ControlToken::new(Some("from-config".into()));
        let (tx, rx) = watch::channel(Some("from-secret".into()));
        let task = tokio::spawn(t.clone().follow(rx));
        tokio::task::yield_now().await;
        for _ in 0..100 {
            if t.check(Some(b"Bearer from-secret")) == TokenCheck::Allowed {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(t.check(Some(b"Bearer from-secret")), TokenCheck::Allowed);
        tx.send(None).expect("send");
        drop(tx);
        task.await.expect("follow ends with the sender");
        assert_eq!(t.check(Some(b"Bearer from-secret")), TokenCheck::Disabled);
    }
}
