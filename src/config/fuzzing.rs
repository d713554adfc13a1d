//! Fuzz entry point for the configuration loader: text in any of the three formats through
//! [`parse_str`] (syntax, deserialization, validation, route compilation).
//!
//! [`config`] never panics on any input; it panics only when an invariant breaks:
//! - an error has at least one problem, each naming a key (`(document)` for the whole text)
//!   and saying something;
//! - parsing is deterministic (same text, same result);
//! - a configuration accepted in one format is accepted again after a round trip through
//!   JSON (the loader reads what the schema writes).

use super::{Format, parse_str};

/// Fuzz target: the first byte picks the format (YAML, JSON, TOML); the rest is the text
/// (invalid UTF-8 replaced, as a file read would refuse it before the loader sees it).
pub fn config(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = match sel % 3 {
        0 => Format::Yaml,
        1 => Format::Json,
        _ => Format::Toml,
    };
    let text = String::from_utf8_lossy(rest);
    let first = parse_str(&text, format, "fuzz");
    match &first {
        Ok(cfg) => {
            let json = serde_json::to_string(cfg).unwrap_or_else(|e| panic!("serialize: {e}"));
            if let Err(e) = parse_str(&json, Format::Json, "round-trip") {
                panic!("accepted config refused after a JSON round trip: {e}\n{json}");
            }
        }
        Err(e) => {
            assert_eq!(e.origin, "fuzz");
            assert!(!e.problems.is_empty(), "an error without problems");
            for p in &e.problems {
                assert!(!p.key.is_empty(), "a problem without a key: {p:?}");
                assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
            }
        }
    }
    let again = parse_str(&text, format, "fuzz");
    assert_eq!(first, again, "parse_str is not deterministic");
}

/// Seed inputs: the example configuration (YAML), small JSON and TOML documents, and a few
/// hostile shapes (deep nesting, YAML aliases).
pub fn seeds() -> Vec<Vec<u8>> {
    let docs: &[(u8, &str)] = &[
        (0, include_str!("../../arc.example.yaml")),
        (0, ""),
        (
            0,
            "listeners:\n  - name: http\n    bind: \"127.0.0.1:8080\"\nupstreams:\n  - name: app\n    addr: \"127.0.0.1:9000\"\nroutes:\n  - host: a.example.com\n    path: /api\n    upstream: app\n",
        ),
        (0, "limits:\n  max_header_bytes: 4KiB\n  idle_timeout: 5s\n"),
        (0, "a: &x [1, 2]\nb: [*x, *x]\n"),
        (0, "node: {workers: -1}\nmax_connections: 1e3\n"),
        (
            1,
            "{\"listeners\":[{\"name\":\"h\",\"bind\":\"[::]:80\"}],\"routes\":[{\"path\":\"/(\",\"path_type\":\"ImplementationSpecific\",\"regex\":true,\"upstream\":\"x\"}]}",
        ),
        (
            1,
            "{\"max_connections\": 10, \"io_uring\": {\"enabled\": \"auto\"}}",
        ),
        (
            1,
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ),
        (
            2,
            "max_connections = 100\n[[listeners]]\nname = \"http\"\nbind = \"0.0.0.0:80\"\n",
        ),
        (
            2,
            "[limits]\nidle_timeout = \"1h\"\nmax_body_bytes = \"1GiB\"\n",
        ),
        (2, "a = [[[[1]]]]\n"),
    ];
    docs.iter()
        .map(|(sel, text)| {
            let mut v = vec![*sel];
            v.extend_from_slice(text.as_bytes());
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_config_seeds_and_mutations() {
        let dict: &[&[u8]] = &[
            b"\n",
            b": ",
            b"- ",
            b"&a ",
            b"*a",
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b",",
            b"=",
            b"upstreams",
            b"routes",
            b"listeners",
            b"limits",
            b"tls",
            b"0s",
            b"1KiB",
            b"-1",
            b"regex: true",
            b"path: /",
            b"\xff",
        ];
        crate::fuzz_smoke::run(&super::seeds(), dict, 3_000, super::config);
    }

    /// Nested YAML aliases (a "billion laughs" document) are refused, not expanded without
    /// bound.
    #[test]
    fn yaml_alias_expansion_is_bounded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = super::super::parse_str(&doc, super::Format::Yaml, "t")
            .expect_err("alias bomb accepted");
        assert!(err.to_string().contains("alias"), "{err}");
    }
}
