//! Fuzz entry point for host/path normalisation and routing lookup: a small route model is
//! decoded from the input (hosts, paths, path types, regex flags and backends from small
//! alphabets plus raw input text), compiled, and probed with hosts and paths from the input.
//!
//! [`routing`] never panics on any input; it panics only when an invariant breaks:
//! - compiling the same model twice gives tables that answer every probe the same;
//! - a lookup is deterministic and ignores the query string, ASCII case, a `:port` and one
//!   trailing dot of the host;
//! - every `Exact` (non-regex) route of an exact or host-less entry is found by a lookup of
//!   its own host and path;
//! - every route of the table came from the model, and every dropped route is reported.

use super::{Backend, HostRules, Lookup, MatchKind, PathType, RouteModel, RouteRule, compile};

const HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "*.example.com",
    "x.a.example.com",
    "A.Example.COM.",
    "",
    "localhost",
    "*.a.example.com",
    "bad_host",
    "*.com",
    "a..b",
    "-a.com",
    "xn--bcher-kva.example",
    "1.2.3.4",
];

const PATHS: &[&str] = &[
    "/", "/a", "/a/", "/a/b", "/ab", "", "a", "/a.*", "/(", "/a//b", "/%2F", "/A", "/a/b/c/",
    "/.*", "/[a-z]+", "/a?b", "/é", "(?i)/x",
];

/// Reads the fuzz input.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// A string: from `table` (high bit clear) or raw input text up to 24 bytes.
    fn text(&mut self, table: &[&str]) -> String {
        let b = self.byte();
        if b & 0x80 == 0 {
            return table[usize::from(b) % table.len()].to_string();
        }
        let n = usize::from(b & 0x1f);
        let end = (self.pos + n).min(self.data.len());
        let raw = self.data.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        String::from_utf8_lossy(raw).into_owned()
    }

    fn backend(&mut self) -> Backend {
        match self.byte() % 6 {
            0 => Backend::DirectResponse {
                status: u16::from(self.byte()) * 3,
                body: "b".into(),
                content_type: "text/plain".into(),
            },
            1 => Backend::Redirect {
                location: "https://x/".into(),
                code: 300 + u16::from(self.byte() % 10),
            },
            2 => Backend::upstream(""),
            n => Backend::upstream(format!("up{n}")),
        }
    }
}

/// What a lookup chose, owned (so two tables' answers compare).
type Answer = Option<(
    Backend,
    Option<(String, String)>,
    Option<String>,
    bool,
    MatchKind,
)>;

fn answer(l: Lookup<'_>) -> Answer {
    match l {
        Lookup::NotFound => None,
        Lookup::Found(m) => Some((
            Backend::clone(m.backend),
            m.route
                .map(|r| (r.name().to_string(), r.path().to_string())),
            m.host.map(str::to_string),
            m.tls,
            m.kind,
        )),
    }
}

fn model_from(input: &mut Input<'_>) -> RouteModel {
    let mut model = RouteModel::default();
    let hosts = usize::from(input.byte() % 5);
    for hi in 0..hosts {
        let host = input.text(HOSTS);
        let mut entry = HostRules {
            host: (input.byte() & 7 != 0).then_some(host),
            tls: input.byte() & 1 != 0,
            ..HostRules::default()
        };
        for ri in 0..usize::from(input.byte() % 5) {
            let path = input.text(PATHS);
            let flags = input.byte();
            let path_type = match flags % 3 {
                0 => PathType::Exact,
                1 => PathType::Prefix,
                _ => PathType::ImplementationSpecific,
            };
            let mut rule = RouteRule::new(format!("r{hi}.{ri}"), path, path_type, input.backend());
            rule.regex = flags & 4 != 0;
            rule.ssl_redirect = flags & 8 != 0;
            entry.rules.push(rule);
        }
        if input.byte() & 3 == 0 {
            entry.default_backend = Some(input.backend());
        }
        model.hosts.push(entry);
    }
    if input.byte() & 3 == 0 {
        model.default_backend = Some(input.backend());
    }
    model
}

/// Fuzz target: compile a model from the input, then look up hosts and paths from the rest.
pub fn routing(data: &[u8]) {
    let mut input = Input { data, pos: 0 };
    let model = model_from(&mut input);
    let a = compile(&model, 1);
    let b = compile(&model, 2);
    assert_eq!(a.problems, b.problems, "compile is not deterministic");

    // Every compiled route comes from the model; kept + dropped routes account for all.
    let model_routes: usize = model.hosts.iter().map(|h| h.rules.len()).sum();
    let dropped_routes = a.problems.iter().filter(|p| p.path.is_some()).count();
    assert_eq!(a.table.route_count() + dropped_routes, model_routes);
    for entry in a.table.hosts() {
        for r in entry.routes() {
            assert!(
                model
                    .hosts
                    .iter()
                    .flat_map(|h| &h.rules)
                    .any(|m| m.name == r.name() && m.backend == **r.backend()),
                "route {} not in the model",
                r.name()
            );
        }
    }

    // Exact routes are found at their own host and path.
    for entry in a.table.hosts() {
        if entry.is_wildcard() {
            continue;
        }
        let host = entry.host().unwrap_or("");
        for r in entry.routes() {
            if r.path_type() != PathType::Exact || r.is_regex() || r.path().contains('?') {
                continue;
            }
            let found = answer(a.table.lookup(host, r.path()));
            let got = found.as_ref().and_then(|f| f.1.clone());
            assert_eq!(
                got,
                Some((r.name().to_string(), r.path().to_string())),
                "exact route {} {host:?} {:?} not found",
                r.name(),
                r.path()
            );
        }
    }

    // Probes.
    let mut probes = 0;
    while !input.done() && probes < 64 {
        probes += 1;
        let host = input.text(HOSTS);
        let path = input.text(PATHS);
        let first = answer(a.table.lookup(&host, &path));
        assert_eq!(
            first,
            answer(a.table.lookup(&host, &path)),
            "not deterministic"
        );
        assert_eq!(first, answer(b.table.lookup(&host, &path)), "tables differ");
        if !path.contains('?') {
            let q = format!("{path}?q=/x&y");
            assert_eq!(
                first,
                answer(a.table.lookup(&host, &q)),
                "query changed {path:?}"
            );
        }
        // Spellings of the same host (only for plain DNS-like names, where they are defined).
        let plain = !host.is_empty()
            && host.len() < 200
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !host.ends_with('.');
        if plain {
            for other in [
                host.to_ascii_uppercase(),
                format!("{host}:8080"),
                format!("{host}."),
                format!("{host}.:443"),
            ] {
                assert_eq!(
                    first,
                    answer(a.table.lookup(&other, &path)),
                    "{host:?} and {other:?} differ"
                );
            }
        }
    }
}

/// Seed inputs (byte strings decoded by [`routing`]).
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        // One host, two rules, then probes.
        vec![1, 0, 1, 0, 2, 1, 1, 3, 2, 0, 5, 1, 0, 0, 1, 0, 2, 4, 3, 0],
        // Wildcard + host-less + regex rules + defaults.
        vec![
            3, 2, 1, 0, 2, 7, 6, 3, 5, 8, 5, 2, 0, 4, 0, 3, 5, 0, 0, 2, 1, 0, 14, 3, 0, 2, 0, 0, 3,
            0, 0, 3, 4, 2, 3, 13,
        ],
        // Raw text hosts and paths.
        vec![
            2, 0x85, b'a', b'.', b'c', b'o', b'm', 1, 0, 1, 0x82, b'/', b'x', 1, 3, 0, 0, 0, 0x85,
            b'A', b'.', b'C', b'O', b'M', 0x82, b'/', b'x',
        ],
        vec![0, 0, 4, 1, 0, 0],
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_routing_seeds_and_mutations() {
        let dict: &[&[u8]] = &[&[0x80], &[0x84, b'/', b'a', b'/', b'b'], &[2, 0, 4], &[4]];
        crate::fuzz_smoke::run(&super::seeds(), dict, 20_000, super::routing);
    }
}
