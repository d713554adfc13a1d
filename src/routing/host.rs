//! Host names: validation and normalisation of rule hosts at compile time, and the
//! allocation-free normalisation of request hosts at lookup time.

/// Longest DNS name Arc matches against host entries (RFC 1035, without the trailing dot).
pub(crate) const MAX_HOST_LEN: usize = 253;

/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// A validated rule host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleHost {
    /// Lowercased host as written (`app.example.com` or `*.example.com`), trailing dot removed.
    pub(crate) display: String,
    /// `true` for `*.suffix` hosts.
    pub(crate) wildcard: bool,
}

impl RuleHost {
    /// The key the host is stored under: the full name, or the suffix after `*.` for wildcards.
    pub(crate) fn key(&self) -> &str {
        if self.wildcard {
            self.display.get(2..).unwrap_or_default()
        } else {
            &self.display
        }
    }
}

/// Validates a rule host and lowercases it; the error says what is wrong.
pub(crate) fn parse_rule_host(raw: &str) -> Result<RuleHost, String> {
    let lower = raw.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if trimmed.len() > MAX_HOST_LEN {
        return Err(format!("longer than {MAX_HOST_LEN} bytes"));
    }
    let (wildcard, name) = match trimmed.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, trimmed),
    };
    if name.contains('*') {
        return Err("a wildcard must be the whole first label, as in *.example.com".to_string());
    }
    if name.is_empty() {
        return Err("empty host name".to_string());
    }
    for label in name.split('.') {
        check_label(label)?;
    }
    Ok(RuleHost {
        display: trimmed.to_string(),
        wildcard,
    })
}

/// Checks one DNS label (RFC 1123: letters, digits, inner hyphens; 1..=63 bytes).
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label".to_string());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!("label {label:?} longer than {MAX_LABEL_LEN} bytes"));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("character {bad:?} not allowed in label {label:?}"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} starts or ends with '-'"));
    }
    Ok(())
}

/// Removes a `:port` (also after a `[v6]` literal) and one trailing dot from a request host.
pub(crate) fn strip_request_host(host: &str) -> &str {
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        }
    } else {
        match host.bytes().position(|b| b == b':') {
            Some(colon) => host.get(..colon).unwrap_or(host),
            None => host,
        }
    };
    without_port.strip_suffix('.').unwrap_or(without_port)
}

/// Normalises a request host for map lookups without allocating: strips port and trailing dot
/// and lowercases into `buf` when needed. `None` when the name is too long to be a host entry.
pub(crate) fn normalize_request_host<'a>(
    host: &'a str,
    buf: &'a mut [u8; MAX_HOST_LEN],
) -> Option<&'a str> {
    let host = strip_request_host(host);
    if host.len() > MAX_HOST_LEN {
        return None;
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(host);
    }
    let out = buf.get_mut(..host.len())?;
    for (dst, src) in out.iter_mut().zip(host.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    // ASCII lowercasing keeps UTF-8 valid, so this cannot fail; treat failure as no match.
    std::str::from_utf8(out).ok()
}

/// The suffix a request host is looked up under among wildcard entries: everything after a
/// non-empty first label (`foo.example.com` → `example.com`).
pub(crate) fn wildcard_suffix(host: &str) -> Option<&str> {
    let dot = host.find('.')?;
    if dot == 0 {
        return None;
    }
    let suffix = host.get(dot + 1..)?;
    (!suffix.is_empty()).then_some(suffix)
}
