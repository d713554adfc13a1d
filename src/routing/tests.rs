//! Table-driven tests of compile and lookup: rows of (host, path) → expected backend.

use std::sync::Arc;

use super::*;

/// Expected answer meaning "the table default backend" (404 in a table without one).
const GLOBAL: &str = "global";
/// Expected answer meaning "no route".
const NOT_FOUND: &str = "404";

fn up(name: &str) -> Backend {
    Backend::upstream(name)
}

fn rule(name: &str, path: &str, path_type: PathType) -> RouteRule {
    RouteRule::new(name, path, path_type, up(name))
}

fn regex_rule(name: &str, pattern: &str) -> RouteRule {
    RouteRule {
        regex: true,
        ..rule(name, pattern, PathType::ImplementationSpecific)
    }
}

fn host(name: Option<&str>, rules: Vec<RouteRule>) -> HostRules {
    HostRules {
        host: name.map(str::to_string),
        rules,
        default_backend: None,
        tls: false,
    }
}

use PathType::{Exact, ImplementationSpecific, Prefix};

/// The fixture every row runs against; `global` adds the table default backend.
fn fixture(global: bool) -> RouteModel {
    RouteModel {
        hosts: vec![
            HostRules {
                tls: true,
                ..host(
                    Some("app.example.com"),
                    vec![
                        rule("app-exact", "/exact", Exact),
                        rule("app-api", "/api", Prefix),
                        rule("app-api-v1", "/api/v1/", Prefix),
                        rule("app-api-exact", "/api", Exact),
                        rule("app-case", "/Case", Prefix),
                        rule("app-nopath", "nopath", Prefix),
                    ],
                )
            },
            host(Some("*.example.com"), vec![rule("wild", "/", Prefix)]),
            HostRules {
                default_backend: Some(up("foo-default")),
                ..host(
                    Some("foo.example.com"),
                    vec![rule("foo-exact", "/foo", Prefix)],
                )
            },
            host(
                None,
                vec![
                    rule("hostless-root", "/", Prefix),
                    rule("hostless-public", "/public", Prefix),
                    rule("hostless-health", "/health", Exact),
                ],
            ),
            host(
                Some("nodefault.example.com"),
                vec![rule("nodefault-only", "/only", Prefix)],
            ),
            host(
                Some("regex.example.com"),
                vec![
                    regex_rule("re-user", "/user/[0-9]+"),
                    rule("re-user-prefix", "/user", Prefix),
                    regex_rule("re-png", r"/img/.*\.png"),
                    rule("re-static", "/static", ImplementationSpecific),
                    rule("re-profile", "/user/12345/profile", Prefix),
                    regex_rule("re-ab", "/ab."),
                    rule("re-abc-prefix", "/abc", Prefix),
                    regex_rule("re-first", "/o[a-m]"),
                    regex_rule("re-second", "/o[b-z]"),
                    regex_rule("re-broken", "/broken("),
                    regex_rule("re-escape", "/x)|(/y"),
                ],
            ),
            host(
                Some("merge.example.com"),
                vec![
                    rule("merge-a1", "/a", Prefix),
                    rule("merge-b", "/b", Prefix),
                ],
            ),
            HostRules {
                default_backend: Some(up("merge-default")),
                ..host(
                    Some("merge.example.com"),
                    vec![
                        rule("merge-a2", "/a", Prefix),
                        rule("merge-c", "/c", Prefix),
                    ],
                )
            },
            host(
                Some("Mixed.Example.COM."),
                vec![rule("mixed", "/m", Prefix)],
            ),
            host(Some("*.wild2.com"), vec![rule("wild2", "/", Prefix)]),
            host(
                Some("bad_host.test"),
                vec![rule("bad-underscore", "/", Prefix)],
            ),
            host(Some("*.*.test"), vec![rule("bad-double-wild", "/", Prefix)]),
            host(
                Some("foo.*.test"),
                vec![rule("bad-inner-wild", "/", Prefix)],
            ),
            host(Some("a..test"), vec![rule("bad-empty-label", "/", Prefix)]),
            host(Some("-a.test"), vec![rule("bad-hyphen", "/", Prefix)]),
            host(Some("port.test:80"), vec![rule("bad-port", "/", Prefix)]),
        ],
        default_backend: global.then(|| up(GLOBAL)),
    }
}

/// (request host, request path, expected upstream or [`GLOBAL`] / [`NOT_FOUND`]).
const ROWS: &[(&str, &str, &str)] = &[
    // Host normalisation: case, port, trailing dot, IPv6 literal, empty host.
    ("app.example.com", "/api/x", "app-api"),
    ("APP.Example.COM", "/api/x", "app-api"),
    ("app.example.com:8443", "/api/x", "app-api"),
    ("app.example.com.", "/api/x", "app-api"),
    ("App.Example.Com.:80", "/api/x", "app-api"),
    ("app.example.com..", "/api/x", "hostless-root"),
    ("[::1]:8080", "/public", "hostless-public"),
    ("[::1]", "/x", "hostless-root"),
    ("10.0.0.1:80", "/health", "hostless-health"),
    ("", "/public/a", "hostless-public"),
    ("mixed.example.com", "/m/1", "mixed"),
    ("MIXED.example.com", "/m", "mixed"),
    // Exact vs Prefix, element-wise prefix, trailing slash in the rule, longest prefix.
    ("app.example.com", "/api", "app-api-exact"),
    ("app.example.com", "/api/", "app-api"),
    ("app.example.com", "/api/users/1", "app-api"),
    ("app.example.com", "/apix", GLOBAL),
    ("app.example.com", "/api/v1", "app-api-v1"),
    ("app.example.com", "/api/v1/", "app-api-v1"),
    ("app.example.com", "/api/v1/items", "app-api-v1"),
    ("app.example.com", "/api/v10", "app-api"),
    ("app.example.com", "/api//v1", "app-api"),
    ("app.example.com", "/exact", "app-exact"),
    ("app.example.com", "/exact/", GLOBAL),
    ("app.example.com", "/exact/more", GLOBAL),
    // Query strings are ignored.
    ("app.example.com", "/exact?x=1", "app-exact"),
    ("app.example.com", "/api?next=/api/v1", "app-api-exact"),
    ("app.example.com", "/api/v1?", "app-api-v1"),
    // Paths are case-sensitive.
    ("app.example.com", "/API/users", GLOBAL),
    ("app.example.com", "/Case/x", "app-case"),
    ("app.example.com", "/case/x", GLOBAL),
    // A matched host never falls through to host-less routes; the invalid path was dropped.
    ("app.example.com", "/", GLOBAL),
    ("app.example.com", "/public", GLOBAL),
    ("app.example.com", "/health", GLOBAL),
    ("app.example.com", "nopath", GLOBAL),
    // Wildcards: exactly one extra label; exact hosts win.
    ("bar.example.com", "/anything", "wild"),
    ("BAR.EXAMPLE.COM:8080", "/", "wild"),
    ("a.b.example.com", "/", "hostless-root"),
    ("example.com", "/", "hostless-root"),
    (".example.com", "/", "hostless-root"),
    ("foo.example.com", "/foo/x", "foo-exact"),
    ("foo.example.com", "/", "foo-default"),
    ("foo.example.com", "/bar", "foo-default"),
    ("x.wild2.com", "/p", "wild2"),
    ("wild2.com", "/p", "hostless-root"),
    // Host default, then table default, then 404.
    ("nodefault.example.com", "/only/x", "nodefault-only"),
    ("nodefault.example.com", "/other", GLOBAL),
    ("nodefault.example.com", "/", GLOBAL),
    // Host-less routes serve unknown hosts.
    ("unknown.test", "/public/x", "hostless-public"),
    ("unknown.test", "/publicity", "hostless-root"),
    ("unknown.test", "/health", "hostless-health"),
    ("unknown.test", "/health/x", "hostless-root"),
    ("unknown.test", "/anything/at/all", "hostless-root"),
    ("unknown.test", "/", "hostless-root"),
    ("unknown.test", "*", "hostless-root"),
    ("unknown.test", "", "hostless-root"),
    // Regex: anchored at the start, case-insensitive, longest rule path wins, ties to Prefix.
    ("regex.example.com", "/user/42", "re-user"),
    ("regex.example.com", "/USER/42", "re-user"),
    ("regex.example.com", "/user/42/profile", "re-user"),
    ("regex.example.com", "/user/abc", "re-user-prefix"),
    ("regex.example.com", "/user", "re-user-prefix"),
    ("regex.example.com", "/user/12345/profile", "re-profile"),
    ("regex.example.com", "/user/12345/profile/x", "re-profile"),
    ("regex.example.com", "/x/user/42", GLOBAL),
    ("regex.example.com", "/img/a.png", "re-png"),
    ("regex.example.com", "/IMG/A.PNG", "re-png"),
    ("regex.example.com", "/img/a.gif", GLOBAL),
    ("regex.example.com", "/static/x.css", "re-static"),
    ("regex.example.com", "/staticx", GLOBAL),
    ("regex.example.com", "/abc", "re-abc-prefix"),
    ("regex.example.com", "/abc/d", "re-abc-prefix"),
    ("regex.example.com", "/abd", "re-ab"),
    ("regex.example.com", "/ABD", "re-ab"),
    ("regex.example.com", "/ob", "re-first"),
    ("regex.example.com", "/oz", "re-second"),
    ("regex.example.com", "/broken(", GLOBAL),
    ("regex.example.com", "/y", GLOBAL),
    // Merged entries: first route wins, later entries add routes and the default.
    ("merge.example.com", "/a", "merge-a1"),
    ("merge.example.com", "/a/b", "merge-a1"),
    ("merge.example.com", "/b", "merge-b"),
    ("merge.example.com", "/c", "merge-c"),
    ("merge.example.com", "/zzz", "merge-default"),
    // Invalid hosts are dropped: their requests go where they would without them.
    ("bad_host.test", "/", "hostless-root"),
    ("a..test", "/", "hostless-root"),
    ("-a.test", "/", "hostless-root"),
];

fn answer(table: &RoutingTable, host: &str, path: &str) -> String {
    match table.lookup(host, path) {
        Lookup::Found(m) => match &**m.backend {
            Backend::Upstream { name } => name.clone(),
            other => format!("{other:?}"),
        },
        Lookup::NotFound => NOT_FOUND.to_string(),
    }
}

fn check_rows(table: &RoutingTable, with_global: bool) {
    let mut failures = Vec::new();
    for &(host, path, expected) in ROWS {
        let expected = if expected == GLOBAL && !with_global {
            NOT_FOUND
        } else {
            expected
        };
        let got = answer(table, host, path);
        if got != expected {
            failures.push(format!("{host:?} {path:?}: expected {expected}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rows_with_table_default() {
    assert!(ROWS.len() >= 60, "{} rows", ROWS.len());
    check_rows(&compile(&fixture(true), 1).table, true);
}

#[test]
fn rows_without_table_default_answer_404() {
    check_rows(&compile(&fixture(false), 1).table, false);
}

#[test]
fn fixture_problems_name_route_host_and_kind() {
    let compiled = compile(&fixture(true), 1);
    let got: Vec<(&str, Option<&str>, &str)> = compiled
        .problems
        .iter()
        .map(|p| (p.name.as_str(), p.host.as_deref(), p.kind.label()))
        .collect();
    let expected = vec![
        ("app-nopath", Some("app.example.com"), "invalid_path"),
        ("re-broken", Some("regex.example.com"), "invalid_regex"),
        ("re-escape", Some("regex.example.com"), "invalid_regex"),
        ("merge-a2", Some("merge.example.com"), "conflict"),
        ("bad-underscore", Some("bad_host.test"), "invalid_host"),
        ("bad-double-wild", Some("*.*.test"), "invalid_host"),
        ("bad-inner-wild", Some("foo.*.test"), "invalid_host"),
        ("bad-empty-label", Some("a..test"), "invalid_host"),
        ("bad-hyphen", Some("-a.test"), "invalid_host"),
        ("bad-port", Some("port.test:80"), "invalid_host"),
    ];
    assert_eq!(got, expected);
    let conflict = compiled
        .problems
        .iter()
        .find(|p| p.name == "merge-a2")
        .map(|p| (p.kind.clone(), p.path.clone()));
    assert_eq!(
        conflict,
        Some((
            ProblemKind::Conflict {
                winner: "merge-a1".to_string()
            },
            Some("/a".to_string())
        ))
    );
    let text = compiled.problems[0].to_string();
    assert!(
        text.contains("app-nopath") && text.contains("app.example.com") && text.contains("nopath"),
        "{text}"
    );
}

#[test]
fn version_and_empty_table() {
    assert_eq!(compile(&fixture(true), 42).table.version(), 42);
    let empty = RoutingTable::empty(7);
    assert_eq!(empty.version(), 7);
    assert_eq!(empty.lookup("a.test", "/"), Lookup::NotFound);
    let compiled = compile(&RouteModel::default(), 3);
    assert!(compiled.problems.is_empty());
    assert_eq!(compiled.table.lookup("a.test", "/x"), Lookup::NotFound);
}

#[test]
fn match_details_carry_route_host_tls_and_kind() {
    let table = compile(&fixture(true), 1).table;
    let Lookup::Found(m) = table.lookup("APP.example.com:443", "/api/v1/x") else {
        panic!("expected a match");
    };
    assert_eq!(m.kind, MatchKind::Route);
    assert_eq!(m.host, Some("app.example.com"));
    assert!(m.tls);
    assert_eq!(m.name(), "app-api-v1");
    let route = m.route.map(|r| (r.path(), r.path_type(), r.is_regex()));
    assert_eq!(route, Some(("/api/v1/", Prefix, false)));

    let Lookup::Found(m) = table.lookup("foo.example.com", "/nothing") else {
        panic!("expected the host default");
    };
    assert_eq!(
        (m.kind, m.route, m.name()),
        (MatchKind::HostDefault, None, "default-backend")
    );
    assert!(!m.tls);

    let Lookup::Found(m) = table.lookup("nodefault.example.com", "/x") else {
        panic!("expected the table default");
    };
    assert_eq!(
        (m.kind, m.host),
        (MatchKind::TableDefault, Some("nodefault.example.com"))
    );

    let Lookup::Found(m) = table.lookup("zz.wild2.com", "/") else {
        panic!("expected the wildcard");
    };
    assert_eq!(m.host, Some("*.wild2.com"));

    let Lookup::Found(m) = table.lookup("regex.example.com", "/user/7") else {
        panic!("expected the regex route");
    };
    assert!(
        m.route
            .is_some_and(|r| r.is_regex() && r.path() == "/user/[0-9]+")
    );
}

#[test]
fn very_long_host_falls_to_hostless() {
    let table = compile(&fixture(true), 1).table;
    let long = format!("{}.example.com", "a".repeat(300));
    assert_eq!(answer(&table, &long, "/public"), "hostless-public");
    let upper_long = format!("{}.EXAMPLE.com", "A".repeat(250));
    assert_eq!(answer(&table, &upper_long, "/"), "hostless-root");
    // Exactly 253 bytes is still a host name (here matched by the wildcard).
    let label = "b".repeat(253 - ".example.com".len());
    let at_limit = format!("{}.example.com", label.to_uppercase());
    assert_eq!(at_limit.len(), 253);
    assert_eq!(answer(&table, &at_limit, "/"), "wild");
}

#[test]
fn hostless_default_then_table_default_then_404() {
    let mut model = RouteModel {
        hosts: vec![HostRules {
            default_backend: Some(up("hostless-default")),
            ..host(None, vec![rule("hl", "/hl", Prefix)])
        }],
        default_backend: Some(up(GLOBAL)),
    };
    let table = compile(&model, 1).table;
    assert_eq!(answer(&table, "x.test", "/hl/1"), "hl");
    assert_eq!(answer(&table, "x.test", "/other"), "hostless-default");

    model.hosts[0].default_backend = None;
    let table = compile(&model, 2).table;
    assert_eq!(answer(&table, "x.test", "/other"), GLOBAL);

    model.default_backend = None;
    let table = compile(&model, 3).table;
    assert_eq!(answer(&table, "x.test", "/other"), NOT_FOUND);

    // No host-less entry at all: an unknown host goes to the table default.
    let model = RouteModel {
        hosts: vec![host(Some("a.test"), vec![rule("a", "/", Prefix)])],
        default_backend: Some(up(GLOBAL)),
    };
    let table = compile(&model, 4).table;
    assert_eq!(answer(&table, "b.test", "/"), GLOBAL);
    assert_eq!(answer(&table, "a.test", "/"), "a");
}

#[test]
fn conflicts_first_wins_per_identity_and_per_matcher() {
    let model = RouteModel {
        hosts: vec![
            host(
                Some("c.test"),
                vec![
                    rule("prefix-1", "/foo", Prefix),
                    rule("exact-1", "/foo", Exact),
                    rule("prefix-slash", "/foo/", Prefix),
                    rule("impl-prefix", "/foo", ImplementationSpecific),
                    rule("exact-2", "/foo", Exact),
                    regex_rule("re-1", "/r[0-9]"),
                    rule("impl-bar", "/bar", ImplementationSpecific),
                    regex_rule("impl-bar-regex", "/bar"),
                ],
            ),
            host(Some("C.TEST."), vec![regex_rule("re-2", "/r[0-9]")]),
        ],
        default_backend: None,
    };
    let compiled = compile(&model, 1);
    let got: Vec<(&str, Option<&str>, ProblemKind)> = compiled
        .problems
        .iter()
        .map(|p| (p.name.as_str(), p.host.as_deref(), p.kind.clone()))
        .collect();
    let conflict = |w: &str| ProblemKind::Conflict {
        winner: w.to_string(),
    };
    assert_eq!(
        got,
        vec![
            ("prefix-slash", Some("c.test"), conflict("prefix-1")),
            ("impl-prefix", Some("c.test"), conflict("prefix-1")),
            ("exact-2", Some("c.test"), conflict("exact-1")),
            ("impl-bar-regex", Some("c.test"), conflict("impl-bar")),
            ("re-2", Some("C.TEST."), conflict("re-1")),
        ]
    );
    let table = compiled.table;
    assert_eq!(answer(&table, "c.test", "/foo"), "exact-1");
    assert_eq!(answer(&table, "c.test", "/foo/x"), "prefix-1");
    assert_eq!(answer(&table, "c.test", "/r1"), "re-1");
    assert_eq!(answer(&table, "c.test", "/BAR"), NOT_FOUND);
    assert_eq!(answer(&table, "c.test", "/bar/x"), "impl-bar");
    assert_eq!(table.route_count(), 4);
}

#[test]
fn default_backend_conflicts_only_when_different() {
    let entry = |backend: &str| HostRules {
        default_backend: Some(up(backend)),
        ..host(Some("d.test"), vec![])
    };
    let model = RouteModel {
        hosts: vec![entry("first"), entry("first"), entry("second")],
        default_backend: None,
    };
    let compiled = compile(&model, 1);
    assert_eq!(compiled.problems.len(), 1);
    assert_eq!(
        compiled.problems[0].kind,
        ProblemKind::ConflictingDefaultBackend
    );
    assert_eq!(answer(&compiled.table, "d.test", "/x"), "first");
}

#[test]
fn invalid_backends_are_dropped_and_reported() {
    let direct = |status| Backend::DirectResponse {
        status,
        body: "hi".to_string(),
        content_type: "text/plain".to_string(),
    };
    let redirect = |location: &str, code| Backend::Redirect {
        location: location.to_string(),
        code,
    };
    let model = RouteModel {
        hosts: vec![host(
            Some("b.test"),
            vec![
                RouteRule::new("ok-direct", "/d", Prefix, direct(200)),
                RouteRule::new("bad-status", "/s", Prefix, direct(99)),
                RouteRule::new("ok-redirect", "/r", Prefix, redirect("https://x/", 308)),
                RouteRule::new("bad-code", "/c", Prefix, redirect("https://x/", 200)),
                RouteRule::new(
                    "bad-location",
                    "/l",
                    Prefix,
                    redirect("https://x/\r\nX: y", 301),
                ),
                RouteRule::new("bad-upstream", "/u", Prefix, up("")),
            ],
        )],
        default_backend: Some(redirect("", 302)),
    };
    let compiled = compile(&model, 1);
    let names: Vec<&str> = compiled.problems.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "bad-status",
            "bad-code",
            "bad-location",
            "bad-upstream",
            "default-backend"
        ]
    );
    assert!(
        compiled
            .problems
            .iter()
            .all(|p| p.kind.label() == "invalid_backend")
    );
    let table = compiled.table;
    assert_eq!(table.default_backend(), None);
    assert_eq!(
        table.lookup("b.test", "/d").backend().map(|b| &**b),
        Some(&direct(200))
    );
    assert_eq!(
        table.lookup("b.test", "/r/x").backend().map(|b| &**b),
        Some(&redirect("https://x/", 308))
    );
    assert_eq!(table.lookup("b.test", "/s"), Lookup::NotFound);
}

#[test]
fn invalid_paths_are_reported() {
    let model = RouteModel {
        hosts: vec![host(
            None,
            vec![
                rule("relative", "api", Prefix),
                rule("empty-prefix", "", Prefix),
                rule("empty-impl", "", ImplementationSpecific),
                rule("query", "/a?b", Exact),
                rule("control", "/a\nb", Prefix),
                regex_rule("relative-regex", "x.*"),
            ],
        )],
        default_backend: None,
    };
    let compiled = compile(&model, 1);
    let got: Vec<(&str, &str)> = compiled
        .problems
        .iter()
        .map(|p| (p.name.as_str(), p.kind.label()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("relative", "invalid_path"),
            ("empty-prefix", "invalid_path"),
            ("query", "invalid_path"),
            ("control", "invalid_path"),
            ("relative-regex", "invalid_path"),
        ]
    );
    // An empty ImplementationSpecific path means `/`.
    assert_eq!(answer(&compiled.table, "any", "/whatever"), "empty-impl");
}

#[test]
fn oversized_regex_is_rejected() {
    let huge = format!("/{}", "(a|b)".repeat(1000));
    let deep = format!("/{}x{}", "(".repeat(100), ")".repeat(100));
    let repeat = "/a{1000}{1000}".to_string();
    let model = RouteModel {
        hosts: vec![host(
            Some("r.test"),
            vec![
                regex_rule("huge", &huge),
                regex_rule("deep", &deep),
                regex_rule("repeat", &repeat),
                regex_rule("fine", "/fine/.+"),
            ],
        )],
        default_backend: None,
    };
    let compiled = compile(&model, 1);
    let names: Vec<&str> = compiled.problems.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["huge", "deep", "repeat"]);
    assert_eq!(answer(&compiled.table, "r.test", "/FINE/x"), "fine");
}

#[test]
fn regex_flag_is_ignored_for_exact_and_prefix() {
    let model = RouteModel {
        hosts: vec![host(
            None,
            vec![
                RouteRule {
                    regex: true,
                    ..rule("prefix", "/p.", Prefix)
                },
                RouteRule {
                    regex: true,
                    ..rule("exact", "/e.", Exact)
                },
            ],
        )],
        default_backend: None,
    };
    let table = compile(&model, 1).table;
    assert_eq!(answer(&table, "h", "/p./x"), "prefix");
    assert_eq!(answer(&table, "h", "/px"), NOT_FOUND);
    assert_eq!(answer(&table, "h", "/e."), "exact");
    assert_eq!(answer(&table, "h", "/ex"), NOT_FOUND);
    assert!(
        table
            .hosts()
            .flat_map(|h| h.routes())
            .all(|r| !r.is_regex())
    );
}

#[test]
fn tls_merges_and_ssl_redirect_skips_acme() {
    let model = RouteModel {
        hosts: vec![
            host(
                Some("s.test"),
                vec![
                    RouteRule {
                        ssl_redirect: true,
                        ..rule("secure", "/", Prefix)
                    },
                    rule("plain", "/plain", Prefix),
                ],
            ),
            HostRules {
                tls: true,
                default_backend: Some(up("s-default")),
                ..host(Some("s.test"), vec![])
            },
            host(
                Some("n.test"),
                vec![RouteRule {
                    ssl_redirect: true,
                    ..rule("no-tls", "/", Prefix)
                }],
            ),
            HostRules {
                tls: true,
                default_backend: Some(up("t-default")),
                ..host(Some("t.test"), vec![])
            },
        ],
        default_backend: Some(up(GLOBAL)),
    };
    let table = compile(&model, 1).table;
    let redirect = |host: &str, path: &str| {
        table
            .lookup(host, path)
            .found()
            .is_some_and(|m| m.ssl_redirect(path))
    };
    assert!(redirect("s.test", "/x"));
    assert!(!redirect("s.test", "/plain/x"));
    assert!(!redirect("s.test", "/.well-known/acme-challenge/token"));
    assert!(!redirect("n.test", "/x"));
    assert!(redirect("t.test", "/x"));
    assert!(!redirect("other.test", "/x"));
    assert!(table.lookup("s.test", "/").found().is_some_and(|m| m.tls));
}

#[test]
fn hosts_iteration_and_upstream_names() {
    let compiled = compile(&fixture(true), 1);
    let table = &compiled.table;
    let hosts: Vec<Option<&str>> = table.hosts().map(|h| h.host()).collect();
    assert_eq!(
        hosts,
        vec![
            Some("app.example.com"),
            Some("*.example.com"),
            Some("foo.example.com"),
            None,
            Some("nodefault.example.com"),
            Some("regex.example.com"),
            Some("merge.example.com"),
            Some("mixed.example.com"),
            Some("*.wild2.com"),
        ]
    );
    let merge = table
        .hosts()
        .find(|h| h.host() == Some("merge.example.com"))
        .map(|h| {
            (
                h.routes().iter().map(Route::name).collect::<Vec<_>>(),
                h.default_backend().cloned(),
                h.is_wildcard(),
            )
        });
    assert_eq!(
        merge,
        Some((
            vec!["merge-a1", "merge-b", "merge-c"],
            Some(Arc::new(up("merge-default"))),
            false
        ))
    );
    assert!(
        table
            .hosts()
            .any(|h| h.is_wildcard() && h.host() == Some("*.wild2.com"))
    );
    let names = table.upstream_names();
    assert!(names.contains(GLOBAL) && names.contains("foo-default") && names.contains("re-ab"));
    assert!(
        !names.contains("merge-a2") && !names.contains("bad-port") && !names.contains("re-broken")
    );
    assert_eq!(names.len(), table.route_count() + 3);
}
