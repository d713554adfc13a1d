//! Module boundaries, checked by a tool instead of prose (issue 21).
//!
//! A small, dependency-free Rust source scanner (below, [`scan`]) reads every `.rs` file of the
//! `arc-gateway` crate (`src/`) and of the `arc-e2e` crate (`e2e/src/`), starting at each crate
//! root and following `mod` declarations (`#[path]` included). For every file-level module it
//! collects the crate modules it refers to — `use` trees, `crate::a::b` / `super::x` / child
//! module paths in code, `arc_gateway::` from the binary — and the external crates it names.
//! References are resolved to the module that *defines* the item (following `pub use`
//! re-exports), so a re-export cannot hide an edge and a room's facade (`mod.rs` re-exporting
//! its children) does not fake a loop.
//!
//! The rules are data ([`ROOM_RULES`], [`EXTERN_ONLY_IN`], [`LAYERS`]), taken from the room table
//! of `ARCHITECTURE.md`:
//! - no module import cycle (a -> b -> a) in `src/` or `e2e/src/`, and no cycle between rooms.
//!   A module naming its own ancestor (`use super::X` where `X` is defined in the room's
//!   `mod.rs`) is not counted as a loop: the parent's `mod child;` is a declaration, not an
//!   import, and `mod.rs` is where a room's children share types. Siblings, cousins and rooms
//!   naming each other are;
//! - no room imports what the table says it never imports ([`ROOM_RULES`]);
//! - no lower layer imports a higher one ([`LAYERS`]);
//! - the syscall and Kubernetes crates only in the rooms that own them ([`EXTERN_ONLY_IN`]),
//!   and no async runtime or HTTP server crate in the pure rooms ([`PURE_ROOMS_NO_EXTERN`]).
//!
//! Comments and string literals are skipped, so doc links (`[`crate::x`]`) are not edges:
//! they create no compile-time dependency. Rooms that do not exist (yet) are tolerated.
//!
//! The scanner is tested on tiny fixtures first (`fixture_*` tests): a cycle is found and
//! named, a forbidden edge is named, re-exports are followed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// The rules (data).
// ---------------------------------------------------------------------------------------------

/// One room's "never imports" rule: `room` (a module prefix: `proxy` matches
/// `proxy::core::conn`) never imports a module under any of `never`, except under `except`.
struct Rule {
    room: &'static str,
    never: &'static [&'static str],
    except: &'static [&'static str],
    why: &'static str,
}

/// The room table of `ARCHITECTURE.md` ("never imports"), as data.
const ROOM_RULES: &[Rule] = &[
    Rule {
        room: "routing",
        never: &[
            "proxy",
            "controller",
            "crd",
            "admin",
            "lifecycle",
            "runtime",
            "xdp",
            "metrics",
            "logging",
            "config",
        ],
        except: &[],
        why: "routing is the pure route model and lookup: no proxy, no kube, no io",
    },
    Rule {
        room: "config",
        never: &[
            "proxy",
            "controller",
            "crd",
            "admin",
            "lifecycle",
            "runtime",
            "xdp",
            "logging",
        ],
        except: &[],
        why: "config is schema, loading and validation: below every room that reads it",
    },
    Rule {
        room: "crd",
        never: &["controller", "proxy", "admin", "lifecycle", "runtime"],
        except: &[],
        why: "crd only defines the ArcPolicy types",
    },
    Rule {
        room: "proxy::http1",
        never: &[
            "proxy::core",
            "proxy::uring",
            "proxy::epoll",
            "proxy::worker",
            "proxy::driver",
            "proxy::listener",
            "proxy::stop",
            "proxy::upstream",
            "proxy::session",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
            "xdp",
        ],
        except: &[],
        why: "proxy::http1 is the sans-IO codec: bytes and time in, actions out",
    },
    Rule {
        room: "proxy::exchange",
        never: &[
            "proxy::core",
            "proxy::uring",
            "proxy::epoll",
            "proxy::worker",
            "proxy::driver",
            "proxy::listener",
            "proxy::stop",
            "proxy::session",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
            "xdp",
        ],
        except: &[],
        why: "proxy::exchange is the pure, protocol-neutral request pipeline below the core",
    },
    Rule {
        room: "proxy::core",
        never: &[
            "proxy::uring",
            "proxy::epoll",
            "proxy::worker",
            "proxy::driver",
            "proxy::listener",
            "proxy::stop",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
        ],
        except: &[],
        why: "proxy::core is one connection's logic over the codec; the drivers call it, not the reverse",
    },
    Rule {
        room: "proxy::uring",
        never: &[
            "proxy::worker",
            "proxy::epoll",
            "routing",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
        ],
        except: &[],
        why: "a driver receives the contract (proxy::driver, proxy::listener, proxy::stop), never the worker set or routing internals",
    },
    Rule {
        room: "proxy::epoll",
        never: &[
            "proxy::worker",
            "proxy::uring",
            "routing",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
        ],
        except: &[],
        why: "a driver receives the contract (proxy::driver, proxy::listener, proxy::stop), never the worker set or routing internals",
    },
    Rule {
        room: "proxy::session",
        never: &[
            "proxy::worker",
            "proxy::uring",
            "proxy::epoll",
            "routing",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
        ],
        except: &[],
        why: "the driver-neutral session layer is below both drivers",
    },
    Rule {
        room: "desired",
        never: &[
            "proxy::uring",
            "proxy::epoll",
            "proxy::worker",
            "proxy::session",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
            "xdp",
        ],
        except: &[],
        why: "desired is the pure, typed desired state both sources build; the runtime turns it into a snapshot",
    },
    Rule {
        room: "proxy::driver",
        never: &["proxy::worker", "proxy::uring", "proxy::epoll"],
        except: &[],
        why: "the driver contract is below the drivers and the worker set",
    },
    Rule {
        room: "proxy::listener",
        never: &[
            "proxy::worker",
            "proxy::uring",
            "proxy::epoll",
            "proxy::driver",
            "proxy::stop",
        ],
        except: &[],
        why: "listener binding is below the drivers and the worker set",
    },
    Rule {
        room: "proxy::stop",
        never: &["proxy"],
        except: &[],
        why: "the stop signal and heartbeats are a leaf of the data plane",
    },
    Rule {
        room: "proxy::upstream",
        never: &["proxy::core", "controller", "admin", "lifecycle", "runtime"],
        except: &[],
        why: "pools and selection know nothing of Kubernetes, the process or one connection's logic",
    },
    Rule {
        room: "proxy::tls",
        never: &[
            "proxy::core",
            "proxy::http1",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
        ],
        except: &[],
        why: "rustls configs and the SNI resolver over the snapshot's certificates",
    },
    Rule {
        room: "admin",
        never: &["proxy", "lifecycle", "runtime", "controller"],
        // It reads snapshots (the data plane's published state) and certificate info.
        except: &["proxy::core::snapshot", "proxy::tls"],
        why: "admin reads snapshots and metrics, never proxy internals",
    },
    Rule {
        room: "controller",
        never: &["proxy", "admin", "lifecycle", "runtime"],
        // Certificates from Secrets are checked with the TLS room's parser.
        except: &["proxy::tls"],
        why: "the controller produces route models, never touches proxy internals",
    },
    Rule {
        room: "metrics",
        never: &[
            "routing",
            "config",
            "controller",
            "crd",
            "admin",
            "lifecycle",
            "runtime",
            "proxy",
            "xdp",
            "logging",
        ],
        except: &[],
        why: "metrics is the registry and typed labels: it holds no logic room",
    },
    Rule {
        room: "lifecycle",
        never: &["routing"],
        except: &[],
        why: "lifecycle is signals, drain, fd handoff, sd_notify: it never looks at routes",
    },
    Rule {
        room: "xdp",
        never: &[
            "routing",
            "proxy",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
        ],
        except: &[],
        why: "xdp owns the loader, maps and counters",
    },
    Rule {
        room: "logging",
        never: &[
            "proxy",
            "controller",
            "admin",
            "lifecycle",
            "runtime",
            "xdp",
        ],
        except: &[],
        why: "logging formats what it is handed",
    },
];

/// External crates only some rooms may name: `(crate, rooms that may, why)`. Any other module
/// of `src/` naming the crate fails. (The `e2e` crate and the binary's `main.rs` are not rooms
/// of the library and are not checked here.)
const EXTERN_ONLY_IN: &[(&str, &[&str], &str)] = &[
    (
        "kube",
        // Checked on the tree: the controller builds and owns the kube client (leader lease
        // and events included); crd derives `CustomResource`. No other room names kube.
        &["controller", "crd"],
        "the Kubernetes client belongs to the controller",
    ),
    (
        "k8s_openapi",
        &["controller", "crd"],
        "Kubernetes objects become route models only in the controller",
    ),
    (
        "libc",
        &["proxy::uring", "proxy::epoll", "xdp"],
        "raw syscalls live in the io drivers and xdp",
    ),
    (
        "rustix",
        // `proxy::stop`: the stop eventfd each driver polls; `lifecycle`: fd handoff to the
        // next process of an upgrade (SCM_RIGHTS) and process signals.
        &[
            "proxy::uring",
            "proxy::epoll",
            "proxy::stop",
            "xdp",
            "lifecycle",
        ],
        "syscalls live in the io drivers, xdp and the process lifecycle",
    ),
    (
        "socket2",
        &["proxy::uring", "proxy::epoll", "proxy::listener"],
        "sockets are made by the listener binding and the drivers",
    ),
    (
        "io_uring",
        &["proxy::uring"],
        "the io_uring crate belongs to the io_uring driver",
    ),
    ("aya", &["xdp"], "the eBPF loader belongs to xdp"),
];

/// Other external crates the pure rooms never name: `(room, crates)`. (Clock and socket calls
/// of `std` are kept out of them by clippy's `disallowed-methods`, see `clippy.toml`.)
const PURE_ROOMS_NO_EXTERN: &[(&str, &[&str])] = &[
    (
        "routing",
        &["tokio", "hyper", "hyper_util", "futures", "redis"],
    ),
    (
        "proxy::http1",
        &["tokio", "hyper", "hyper_util", "futures", "redis"],
    ),
    (
        "proxy::exchange",
        &["tokio", "hyper", "hyper_util", "futures", "redis"],
    ),
    ("proxy::core", &["tokio", "hyper", "hyper_util", "futures"]),
    (
        "proxy::session",
        &["tokio", "hyper", "hyper_util", "futures", "redis"],
    ),
    (
        "desired",
        &["tokio", "hyper", "hyper_util", "futures", "redis"],
    ),
    ("config", &["tokio", "hyper", "hyper_util"]),
    ("metrics", &["tokio", "hyper"]),
];

/// Layers of `arc-gateway`, lowest first: a module may import its own layer or lower ones, never
/// a higher one. A module's layer is that of its longest listed prefix. Data-plane rooms are
/// ordered among themselves (codec and TLS below the connection logic, the contract below the
/// drivers, the drivers below the worker set).
const LAYERS: &[(&str, u8)] = &[
    // Foundations.
    ("routing", 0),
    ("crd", 0),
    ("metrics", 0),
    // Configuration: schema and validation over the route model.
    ("config", 10),
    // Consumers of the configuration below the data plane.
    ("logging", 20),
    ("xdp", 20),
    // The data plane.
    ("proxy", 30),
    ("proxy::http1", 30),
    ("proxy::tls", 30),
    ("proxy::stop", 30),
    ("proxy::io", 31),
    ("proxy::listener", 31),
    ("proxy::exchange", 32),
    ("proxy::upstream", 32),
    ("proxy::driver", 32),
    ("proxy::core", 33),
    ("proxy::session", 33),
    ("proxy::uring", 34),
    ("proxy::epoll", 34),
    ("proxy::worker", 35),
    // The typed desired state both sources build.
    ("desired", 38),
    // The control plane over it.
    ("controller", 40),
    ("admin", 40),
    // The process wiring and its life.
    ("runtime", 50),
    ("lifecycle", 60),
];

// ---------------------------------------------------------------------------------------------
// The check on the real tree.
// ---------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_module_cycles_in_arc_gateway() {
    let graph =
        Graph::load(&repo().join("src"), &["lib.rs", "main.rs"], "arc_gateway").expect("scan src/");
    assert!(
        graph.modules.len() > 50,
        "scanned too few modules: {:?}",
        graph.modules.keys()
    );
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "module import cycles in src/:\n{}",
        report_cycles(&cycles)
    );
}

#[test]
fn no_room_cycles_in_arc_gateway() {
    let graph =
        Graph::load(&repo().join("src"), &["lib.rs", "main.rs"], "arc_gateway").expect("scan src/");
    let cycles = graph.room_cycles();
    assert!(
        cycles.is_empty(),
        "room import cycles in src/:\n{}",
        report_cycles(&cycles)
    );
}

#[test]
fn no_module_cycles_in_e2e() {
    let mut roots = vec!["lib.rs".to_string()];
    let bins = repo().join("e2e/src/bin");
    for entry in std::fs::read_dir(&bins).expect("read e2e/src/bin") {
        let entry = entry.expect("e2e/src/bin entry");
        roots.push(format!("bin/{}", entry.file_name().to_string_lossy()));
    }
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let graph = Graph::load(&repo().join("e2e/src"), &roots, "arc_e2e").expect("scan e2e/src/");
    assert!(
        graph.modules.contains_key("emulator"),
        "{:?}",
        graph.modules.keys()
    );
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "module import cycles in e2e/src/:\n{}",
        report_cycles(&cycles)
    );
}

#[test]
fn rooms_import_only_what_the_room_table_allows() {
    let graph =
        Graph::load(&repo().join("src"), &["lib.rs", "main.rs"], "arc_gateway").expect("scan src/");
    let violations = check_rooms(&graph);
    assert!(
        violations.is_empty(),
        "room boundaries broken (ARCHITECTURE.md room table):\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_rule_names_a_real_room_or_a_planned_one() {
    // A typo in the rules would silently check nothing: every room must exist, except the
    // rooms being added in parallel (tolerated while missing).
    const PLANNED: &[&str] = &["proxy::exchange", "proxy::session"];
    let graph =
        Graph::load(&repo().join("src"), &["lib.rs", "main.rs"], "arc_gateway").expect("scan src/");
    let exists = |room: &str| graph.modules.keys().any(|m| in_room(m, room));
    let mut names: Vec<&str> = Vec::new();
    for rule in ROOM_RULES {
        names.push(rule.room);
        names.extend(rule.never.iter());
        names.extend(rule.except.iter());
    }
    for (_, rooms, _) in EXTERN_ONLY_IN {
        names.extend(rooms.iter());
    }
    for (room, _) in PURE_ROOMS_NO_EXTERN {
        names.push(room);
    }
    names.extend(LAYERS.iter().map(|(r, _)| *r));
    let unknown: BTreeSet<&str> = names
        .into_iter()
        .filter(|r| !exists(r) && !PLANNED.contains(r))
        .collect();
    assert!(
        unknown.is_empty(),
        "rules name rooms that do not exist: {unknown:?}"
    );
}

fn report_cycles(cycles: &[Vec<String>]) -> String {
    let mut out = String::new();
    for c in cycles {
        let _ = writeln!(out, "  {} -> {}", c.join(" -> "), c[0]);
    }
    out
}

fn in_room(module: &str, room: &str) -> bool {
    module == room
        || module
            .strip_prefix(room)
            .is_some_and(|rest| rest.starts_with("::"))
}

fn layer_of(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(room, _)| in_room(module, room))
        .max_by_key(|(room, _)| room.len())
        .map(|(_, l)| *l)
}

/// Every broken room rule, one line each, naming the importing module, the imported one and
/// the rule.
fn check_rooms(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (module, info) in &graph.modules {
        if info.is_bin {
            continue;
        }
        for target in &info.imports {
            for rule in ROOM_RULES {
                if !in_room(module, rule.room) || rule.except.iter().any(|e| in_room(target, e)) {
                    continue;
                }
                if let Some(f) = rule.never.iter().find(|f| in_room(target, f)) {
                    out.push(format!(
                        "  {module} -> {target}: `{}` never imports `{f}` ({}) [{}]",
                        rule.room,
                        rule.why,
                        info.file.display()
                    ));
                }
            }
            if let (Some(from), Some(to)) = (layer_of(module), layer_of(target))
                && to > from
            {
                out.push(format!(
                    "  {module} -> {target}: a lower room (layer {from}) imports a higher one (layer {to}) [{}]",
                    info.file.display()
                ));
            }
        }
        for ext in &info.externs {
            for (krate, rooms, why) in EXTERN_ONLY_IN {
                if ext == krate && !rooms.iter().any(|r| in_room(module, r)) {
                    out.push(format!(
                        "  {module} names crate `{krate}`: only {rooms:?} may ({why})"
                    ));
                }
            }
            for (room, crates) in PURE_ROOMS_NO_EXTERN {
                if in_room(module, room) && crates.contains(&ext.as_str()) {
                    out.push(format!(
                        "  {module} names crate `{ext}`: the pure room `{room}` never does"
                    ));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// The scanner's own tests (tiny fixtures on disk).
// ---------------------------------------------------------------------------------------------

fn fixture(files: &[(&str, &str)]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "arc-architecture-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("fixture parent")).expect("fixture dir");
        std::fs::write(&p, text).expect("fixture file");
    }
    dir
}

#[test]
fn fixture_cycle_between_siblings_is_found_and_named() {
    let dir = fixture(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "use crate::b::Thing;\npub struct Other;\n"),
        // A path in code (not a `use`) counts too; comments and strings do not.
        (
            "b.rs",
            "pub struct Thing;\nfn f() { let _ = crate::a::Other; }\n// crate::c::X\n",
        ),
        ("c.rs", "const S: &str = \"crate::a::Other\";\n"),
    ]);
    let graph = Graph::load(&dir, &["lib.rs"], "fix").expect("scan fixture");
    assert_eq!(graph.cycles(), vec![vec!["a".to_string(), "b".to_string()]]);
    assert_eq!(report_cycles(&graph.cycles()), "  a -> b -> a\n");
    assert!(
        graph.modules["c"].imports.is_empty(),
        "{:?}",
        graph.modules["c"]
    );
}

#[test]
fn fixture_super_paths_resolve_from_inline_modules_and_path_attributes() {
    let dir = fixture(&[
        ("lib.rs", "pub mod room;\n"),
        (
            "room/mod.rs",
            "pub mod x;\npub mod y;\n#[path = \"extra/z.rs\"]\nmod z;\n",
        ),
        // `super` inside an inline module is relative to it: super::super::y is room::y.
        (
            "room/x.rs",
            "mod tests {\n use super::super::y::Y;\n use super::*;\n}\n",
        ),
        ("room/y.rs", "pub struct Y;\n"),
        ("room/extra/z.rs", "use super::x;\n"),
    ]);
    let graph = Graph::load(&dir, &["lib.rs"], "fix").expect("scan fixture");
    assert_eq!(
        graph.modules["room::x"].imports,
        BTreeSet::from(["room::y".to_string()])
    );
    assert_eq!(
        graph.modules["room::z"].imports,
        BTreeSet::from(["room::x".to_string()])
    );
    assert!(graph.cycles().is_empty());
}

#[test]
fn fixture_reexports_are_followed_to_the_defining_module() {
    let dir = fixture(&[
        ("lib.rs", "pub mod room;\npub mod user;\n"),
        // The facade re-exports its child; a child naming the facade's item is no loop ...
        (
            "room/mod.rs",
            "mod inner;\npub use inner::{Item, helper as renamed};\npub struct Own;\n",
        ),
        (
            "room/inner.rs",
            "pub struct Item;\npub fn helper() {}\nuse super::Item as _Same;\n",
        ),
        // ... and a user of `room::Item` depends on `room::inner`, where it is defined.
        ("user.rs", "use crate::room::{Item, renamed, Own};\n"),
    ]);
    let graph = Graph::load(&dir, &["lib.rs"], "fix").expect("scan fixture");
    assert_eq!(
        graph.modules["user"].imports,
        BTreeSet::from(["room".to_string(), "room::inner".to_string()])
    );
    assert!(graph.cycles().is_empty(), "{:?}", graph.cycles());
    // A child naming an item its room's facade defines is an edge to an ancestor: seen, but
    // no loop (the facade declares the child, it does not import it) ...
    let dir = fixture(&[
        ("lib.rs", "pub mod room;\npub mod other;\n"),
        (
            "room/mod.rs",
            "mod inner;\nmod sib;\npub use inner::Item;\npub struct Own;\n",
        ),
        (
            "room/inner.rs",
            "pub struct Item;\nuse super::Own;\nuse super::sib::S;\n",
        ),
        // ... but siblings naming each other are, and so are rooms.
        (
            "room/sib.rs",
            "pub struct S;\nfn f() { let _ = super::inner::Item; crate::other::g(); }\n",
        ),
        ("other.rs", "pub fn g() { let _ = crate::room::Own; }\n"),
    ]);
    let graph = Graph::load(&dir, &["lib.rs"], "fix").expect("scan fixture");
    assert!(graph.modules["room::inner"].imports.contains("room"));
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        graph.cycles(),
        vec![names(&["other", "room", "room::inner", "room::sib"])]
    );
    assert_eq!(
        report_cycles(&graph.cycles()),
        "  other -> room -> room::inner -> room::sib -> other\n"
    );
    assert_eq!(graph.room_cycles(), vec![names(&["other", "room"])]);
}

#[test]
fn fixture_forbidden_edges_and_crates_are_named() {
    let dir = fixture(&[
        (
            "lib.rs",
            "pub mod routing;\npub mod proxy;\npub mod lifecycle;\n",
        ),
        (
            "routing.rs",
            "use tokio::sync::watch;\npub fn f() { crate::proxy::g(); }\n",
        ),
        ("proxy.rs", "pub fn g() { let _ = libc::getpid(); }\n"),
        ("lifecycle.rs", "use crate::routing::f;\n"),
    ]);
    let graph = Graph::load(&dir, &["lib.rs"], "fix").expect("scan fixture");
    let v = check_rooms(&graph);
    let all = v.join("\n");
    assert!(
        all.contains("routing -> proxy: `routing` never imports `proxy`"),
        "{all}"
    );
    assert!(all.contains("routing names crate `tokio`"), "{all}");
    assert!(all.contains("proxy names crate `libc`"), "{all}");
    assert!(
        all.contains("lifecycle -> routing: `lifecycle` never imports `routing`"),
        "{all}"
    );
    assert!(
        all.contains("routing -> proxy: a lower room (layer 0) imports a higher one (layer 30)"),
        "{all}"
    );
    assert_eq!(v.len(), 5, "{all}");
}

#[test]
fn fixture_use_trees_and_child_paths() {
    let dir = fixture(&[
        ("lib.rs", "pub mod a;\npub mod b;\nmod c;\n"),
        // Nested groups, self, globs, aliases; a child module named in code; a raw string and
        // char literals that look like paths; a lifetime.
        (
            "a.rs",
            "mod kid;\nuse crate::{b::{self, B as Bee}, c::*};\n\
             fn f<'x>(s: &'x str) -> char { let _ = kid::K; let _ = r#\"crate::zzz\"#; '\"' }\n",
        ),
        ("a/kid.rs", "pub struct K;\n"),
        ("b.rs", "pub struct B;\n"),
        (
            "c.rs",
            "pub struct C;\nuse std::fmt;\nuse serde::Serialize;\n",
        ),
    ]);
    let graph = Graph::load(&dir, &["lib.rs"], "fix").expect("scan fixture");
    assert_eq!(
        graph.modules["a"].imports,
        BTreeSet::from(["a::kid".to_string(), "b".to_string(), "c".to_string()])
    );
    assert_eq!(
        graph.modules["c"].externs,
        BTreeSet::from(["serde".to_string()])
    );
}

// ---------------------------------------------------------------------------------------------
// The scanner.
// ---------------------------------------------------------------------------------------------

/// One file-level module.
#[derive(Debug, Default)]
struct ModInfo {
    file: PathBuf,
    /// Crate modules (file-level, `::`-joined, no `crate` prefix) this one refers to.
    imports: BTreeSet<String>,
    /// External crates it names (std, core and alloc left out).
    externs: BTreeSet<String>,
    /// A binary crate root: it may name the library by its crate name.
    is_bin: bool,
}

/// What one file declares, before resolution.
#[derive(Debug, Default)]
struct FileScan {
    /// `mod name;` declarations (file modules): (scope inside the file, name, `#[path]`).
    mod_decls: Vec<(Vec<String>, String, Option<String>)>,
    /// Inline `mod name { .. }` scopes (relative to the file).
    inline_mods: BTreeSet<Vec<String>>,
    /// Names defined at the top level of the file.
    defined: BTreeSet<String>,
    /// `pub use` re-exports at the top level: exported name -> path (as written) and scope.
    reexports: BTreeMap<String, Vec<String>>,
    /// `pub use path::*` at the top level.
    glob_reexports: Vec<Vec<String>>,
    /// Every path referenced: (scope inside the file, segments as written).
    paths: Vec<(Vec<String>, Vec<String>)>,
}

struct Graph {
    /// File-level modules by path (`proxy::http1::head`); the crate root is `""`.
    modules: BTreeMap<String, ModInfo>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    /// `::`
    PathSep,
    /// A literal (string, char, number): never part of a path.
    Lit,
}

/// Splits Rust source into identifiers and punctuation, dropping comments, literals'
/// contents and whitespace.
fn tokenize(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let n = b.len();
    while i < n {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < n && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < n {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&b, i + 1);
            out.push(Tok::Lit);
        } else if (c == 'r' || c == 'b' || c == 'c') && raw_string_start(&b, i).is_some() {
            let (hashes, start) = raw_string_start(&b, i).unwrap_or((0, i));
            i = skip_raw_string(&b, start, hashes);
            out.push(Tok::Lit);
        } else if (c == 'b' || c == 'c') && b.get(i + 1) == Some(&'"') {
            i = skip_string(&b, i + 2);
            out.push(Tok::Lit);
        } else if c == 'b' && b.get(i + 1) == Some(&'\'') {
            i = skip_char(&b, i + 2);
            out.push(Tok::Lit);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime / label ('a).
            if b.get(i + 1) == Some(&'\\') {
                i = skip_char(&b, i + 1);
                out.push(Tok::Lit);
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push(Tok::Lit);
            } else {
                i += 1;
                while i < n && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Lit);
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            if c == 'r' && b.get(i + 1) == Some(&'#') {
                i += 2;
            }
            let word_start = i;
            while i < n && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let _ = start;
            out.push(Tok::Ident(b[word_start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < n && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '.') {
                if b[i] == '.' && !b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    break;
                }
                i += 1;
            }
            out.push(Tok::Lit);
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

fn skip_string(b: &[char], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn skip_char(b: &[char], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            '\\' => i += 2,
            '\'' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// At `r"`, `r#"`, `br"`, `cr#"`...: the number of `#` and the index of the opening quote.
fn raw_string_start(b: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if b[j] == 'b' || b[j] == 'c' {
        j += 1;
    }
    if b.get(j) != Some(&'r') {
        return None;
    }
    // Not the tail of an identifier (`for"`, `bar"` cannot happen in Rust, but `xr"` can't either).
    if i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some((hashes, j))
}

fn skip_raw_string(b: &[char], quote: usize, hashes: usize) -> usize {
    let mut i = quote + 1;
    while i < b.len() {
        if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

const ITEM_KEYWORDS: &[&str] = &[
    "fn", "struct", "enum", "trait", "type", "const", "static", "union",
];

/// Reads one file's declarations and references.
fn scan(src: &str) -> FileScan {
    let toks = tokenize(src);
    let mut out = FileScan::default();
    // Inline module scopes: (name, brace depth at which its body opened).
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_path: Option<String> = None;
    let mut i = 0;
    let ident = |k: usize| match toks.get(k) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let scope_names = |scope: &Vec<(String, usize)>| -> Vec<String> {
        scope.iter().map(|(n, _)| n.clone()).collect()
    };
    while i < toks.len() {
        let top = scope.last().map_or(0, |(_, d)| *d) == depth;
        match &toks[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if scope.last().is_some_and(|(_, d)| *d == depth) {
                    scope.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Punct('#') => {
                // #[path = "..."]: the literal was dropped, so read it from the source text.
                if ident(i + 2) == Some("path") && toks.get(i + 3) == Some(&Tok::Punct('=')) {
                    pending_path = Some(String::new());
                }
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => {
                let Some(name) = ident(i + 1) else {
                    i += 1;
                    continue;
                };
                let name = name.to_string();
                match toks.get(i + 2) {
                    Some(Tok::Punct(';')) => {
                        let path = pending_path.take().map(|_| String::new());
                        out.mod_decls
                            .push((scope_names(&scope), name.clone(), path));
                        if top && scope.is_empty() {
                            out.defined.insert(name);
                        }
                        i += 3;
                    }
                    Some(Tok::Punct('{')) => {
                        pending_path = None;
                        if scope.is_empty() && top {
                            out.defined.insert(name.clone());
                        }
                        depth += 1;
                        scope.push((name, depth));
                        let mut names = scope_names(&scope);
                        out.inline_mods.insert(std::mem::take(&mut names));
                        i += 3;
                    }
                    _ => i += 1,
                }
            }
            Tok::Ident(w) if w == "use" => {
                let public = i > 0
                    && (ident(i - 1) == Some("pub")
                        || (toks.get(i - 1) == Some(&Tok::Punct(')'))
                            && (2..=4).any(|k| i >= k && ident(i - k) == Some("pub"))));
                let mut j = i + 1;
                let mut leaves = Vec::new();
                parse_use_tree(&toks, &mut j, Vec::new(), &mut leaves);
                let names = scope_names(&scope);
                let at_top = scope.is_empty() && top;
                for (path, alias, glob) in leaves {
                    if path.is_empty() {
                        continue;
                    }
                    if public && at_top {
                        if glob {
                            out.glob_reexports.push(path.clone());
                        } else if let Some(alias) = alias.clone() {
                            out.reexports.insert(alias, path.clone());
                        }
                    }
                    if at_top
                        && let Some(alias) = alias
                        && alias != "_"
                    {
                        // `use x::Y;` makes Y a name of this module too (private re-exports
                        // resolve like public ones for `super::Y` from children).
                        out.reexports.entry(alias).or_insert_with(|| path.clone());
                    }
                    out.paths.push((names.clone(), path));
                }
                i = j;
            }
            Tok::Ident(w) if w == "macro_rules" && toks.get(i + 1) == Some(&Tok::Punct('!')) => {
                if let Some(name) = ident(i + 2)
                    && scope.is_empty()
                    && top
                {
                    out.defined.insert(name.to_string());
                }
                i += 2;
            }
            Tok::Ident(w) if ITEM_KEYWORDS.contains(&w.as_str()) => {
                if let Some(name) = ident(i + 1)
                    && scope.is_empty()
                    && top
                {
                    out.defined.insert(name.to_string());
                }
                i += 1;
            }
            Tok::Ident(first) => {
                // A path in code: ident (:: ident)+, not preceded by `::` or `$`.
                let preceded = i > 0
                    && matches!(
                        toks[i - 1],
                        Tok::PathSep | Tok::Punct('$') | Tok::Punct('.')
                    );
                if !preceded && toks.get(i + 1) == Some(&Tok::PathSep) {
                    let mut segs = vec![first.clone()];
                    let mut j = i + 1;
                    while toks.get(j) == Some(&Tok::PathSep) {
                        match toks.get(j + 1) {
                            Some(Tok::Ident(s)) => {
                                segs.push(s.clone());
                                j += 2;
                            }
                            _ => break,
                        }
                    }
                    out.paths.push((scope_names(&scope), segs));
                    i = j;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    // Fill in #[path] values from the raw text (in declaration order).
    let mut paths = src
        .match_indices("#[path")
        .filter_map(|(at, _)| {
            let rest = &src[at..];
            let open = rest.find('"')?;
            let close = rest[open + 1..].find('"')?;
            Some(rest[open + 1..open + 1 + close].to_string())
        })
        .collect::<Vec<_>>()
        .into_iter();
    for decl in out.mod_decls.iter_mut() {
        if decl.2.is_some() {
            decl.2 = paths.next();
        }
    }
    out
}

/// Parses a use tree at `toks[*j]` up to its end (`;` or the `,`/`}` closing it), pushing
/// (full path, name it binds, is glob) for every leaf.
fn parse_use_tree(
    toks: &[Tok],
    j: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, bool)>,
) {
    let mut path = prefix;
    if toks.get(*j) == Some(&Tok::PathSep) {
        *j += 1;
    }
    loop {
        match toks.get(*j) {
            Some(Tok::Ident(s)) if s == "as" => {
                let alias = match toks.get(*j + 1) {
                    Some(Tok::Ident(a)) => Some(a.clone()),
                    Some(Tok::Punct('_')) => Some("_".to_string()),
                    _ => None,
                };
                // Replace the bound name of the last leaf.
                if let Some(last) = out.last_mut() {
                    last.1 = alias;
                }
                *j += 2;
                return;
            }
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *j += 1;
                if toks.get(*j) == Some(&Tok::PathSep) {
                    *j += 1;
                    continue;
                }
                // A leaf: `self` binds the parent's last segment.
                let (full, name) = if s == "self" {
                    path.pop();
                    (path.clone(), path.last().cloned())
                } else {
                    (path.clone(), Some(s.clone()))
                };
                out.push((full, name, false));
                if let Some(Tok::Ident(a)) = toks.get(*j)
                    && a == "as"
                {
                    continue;
                }
                return;
            }
            Some(Tok::Punct('*')) => {
                *j += 1;
                out.push((path, None, true));
                return;
            }
            Some(Tok::Punct('{')) => {
                *j += 1;
                loop {
                    match toks.get(*j) {
                        Some(Tok::Punct('}')) => {
                            *j += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => *j += 1,
                        None => return,
                        _ => parse_use_tree(toks, j, path.clone(), out),
                    }
                }
                return;
            }
            _ => return,
        }
    }
}

/// A file-level module, resolved from mod declarations.
struct ModFile {
    file: PathBuf,
    path: Vec<String>,
    scan: FileScan,
    is_bin: bool,
}

impl Graph {
    /// Scans the crate under `dir` from its root files (`lib.rs`; binaries are their own
    /// crates that name the library as `lib_name`).
    fn load(dir: &Path, roots: &[&str], lib_name: &str) -> Result<Graph, String> {
        let mut files: Vec<ModFile> = Vec::new();
        for root in roots {
            let is_bin = *root != "lib.rs";
            let base = if is_bin {
                // A binary's modules live in a namespace of their own.
                vec![format!("bin:{}", root.trim_end_matches(".rs"))]
            } else {
                Vec::new()
            };
            collect(dir, &dir.join(root), base, true, is_bin, &mut files)?;
        }
        // Module tree: file modules and inline modules (mapped to their file module).
        let mut owner: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for (k, f) in files.iter().enumerate() {
            owner.insert(f.path.clone(), k);
            for inline in &f.scan.inline_mods {
                let mut p = f.path.clone();
                p.extend(inline.iter().cloned());
                owner.entry(p).or_insert(k);
            }
        }
        let mut modules: BTreeMap<String, ModInfo> = BTreeMap::new();
        for f in &files {
            let mut info = ModInfo {
                file: f.file.clone(),
                is_bin: f.is_bin,
                ..ModInfo::default()
            };
            let root: Vec<String> = if f.is_bin {
                f.path[..1].to_vec()
            } else {
                Vec::new()
            };
            for (inner, segs) in &f.scan.paths {
                let mut here = f.path.clone();
                here.extend(inner.iter().cloned());
                match resolve(&files, &owner, &root, &here, segs, lib_name, 0) {
                    Resolved::Module(k) => {
                        let target = &files[k];
                        if target.path != f.path {
                            info.imports.insert(target.path.join("::"));
                        }
                    }
                    Resolved::Extern(name) => {
                        if !["std", "core", "alloc", "Self", "self", "super", "crate"]
                            .contains(&name.as_str())
                        {
                            info.externs.insert(name);
                        }
                    }
                    Resolved::Unknown => {}
                }
            }
            modules.insert(f.path.join("::"), info);
        }
        Ok(Graph { modules })
    }

    /// Module import cycles (see [`find_cycles`]). An edge from a module to one of its own
    /// ancestors (a child naming what its room's `mod.rs` defines, `use super::X`) does not
    /// count: the parent's `mod` declaration is not an import, and a room's `mod.rs` is where
    /// its children share types. Siblings, cousins and rooms importing each other do count.
    fn cycles(&self) -> Vec<Vec<String>> {
        let adj = self
            .modules
            .iter()
            .map(|(m, info)| {
                let out = info
                    .imports
                    .iter()
                    .filter(|t| !in_room(m, t))
                    .cloned()
                    .collect();
                (m.clone(), out)
            })
            .collect();
        find_cycles(&adj)
    }

    /// Cycles between rooms: modules collapsed to their room (the top-level module, or
    /// `proxy::x` inside the data plane), edges within a room dropped.
    fn room_cycles(&self) -> Vec<Vec<String>> {
        let mut adj: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, info) in &self.modules {
            let from = room_of(m);
            let entry = adj.entry(from.clone()).or_default();
            for t in &info.imports {
                let to = room_of(t);
                if to != from && !in_room(&from, &to) {
                    entry.insert(to);
                }
            }
        }
        find_cycles(&adj)
    }
}

/// The room of a module: its top-level module, or the first two segments under `proxy`.
fn room_of(module: &str) -> String {
    let mut it = module.split("::");
    let first = it.next().unwrap_or_default();
    match (first, it.next()) {
        ("proxy", Some(second)) => format!("proxy::{second}"),
        _ => first.to_string(),
    }
}

/// Cycles of a directed graph, each starting at its smallest node. To keep the report short,
/// one cycle per group of nodes that reach each other: the shortest through its smallest
/// member not yet named in an earlier cycle.
fn find_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let names: Vec<&String> = graph.keys().collect();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(k, n)| (n.as_str(), k))
        .collect();
    let adj: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            graph[*n]
                .iter()
                .filter_map(|t| index.get(t.as_str()).copied())
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    let mut reported: BTreeSet<usize> = BTreeSet::new();
    for start in 0..names.len() {
        if reported.contains(&start) {
            continue;
        }
        // Shortest path from a successor of start back to start (breadth first).
        let mut prev: Vec<Option<usize>> = vec![None; names.len()];
        let mut seen = vec![false; names.len()];
        let mut queue = std::collections::VecDeque::new();
        for &s in &adj[start] {
            if !seen[s] {
                seen[s] = true;
                queue.push_back(s);
            }
        }
        let mut found = false;
        while let Some(v) = queue.pop_front() {
            if v == start {
                found = true;
                break;
            }
            for &w in &adj[v] {
                if !seen[w] {
                    seen[w] = true;
                    prev[w] = Some(v);
                    queue.push_back(w);
                }
            }
        }
        if !found {
            continue;
        }
        // Walk back from start through the predecessors to the first successor.
        let mut cycle = vec![start];
        let mut v = prev[start];
        while let Some(x) = v {
            cycle.push(x);
            v = prev[x];
        }
        cycle[1..].reverse();
        reported.extend(cycle.iter().copied());
        out.push(cycle.into_iter().map(|k| names[k].clone()).collect());
    }
    out
}

enum Resolved {
    Module(usize),
    Extern(String),
    Unknown,
}

/// Resolves a path written in module `here` (file path + inline scopes) to the file-level
/// module defining its item.
fn resolve(
    files: &[ModFile],
    owner: &BTreeMap<Vec<String>, usize>,
    root: &[String],
    here: &[String],
    segs: &[String],
    lib_name: &str,
    hops: usize,
) -> Resolved {
    if hops > 8 || segs.is_empty() {
        return Resolved::Unknown;
    }
    let mut at: Vec<String>;
    let mut rest = segs;
    match segs[0].as_str() {
        "crate" => {
            at = root.to_vec();
            rest = &segs[1..];
        }
        "self" => {
            at = here.to_vec();
            rest = &segs[1..];
        }
        "super" => {
            at = here.to_vec();
            while rest.first().is_some_and(|s| s == "super") {
                at.pop();
                rest = &rest[1..];
            }
        }
        first if first == lib_name && !root.is_empty() => {
            at = Vec::new();
            rest = &segs[1..];
        }
        first => {
            let mut child = here.to_vec();
            child.push(first.to_string());
            if owner.contains_key(&child) {
                at = here.to_vec();
            } else if let Some(&k) = owner.get(here)
                && let Some(target) = files[k].scan.reexports.get(first)
                && here == files[k].path.as_slice()
                && target.first().map(String::as_str) != Some(first)
            {
                // A name brought in by `use` (e.g. `use crate::proxy::http1;` then
                // `http1::parse(..)`): already an edge through the `use` itself.
                let _ = target;
                return Resolved::Unknown;
            } else {
                return Resolved::Extern(first.to_string());
            }
        }
    }
    // Descend through modules.
    while let Some(seg) = rest.first() {
        let mut next = at.clone();
        next.push(seg.clone());
        if owner.contains_key(&next) {
            at = next;
            rest = &rest[1..];
        } else {
            break;
        }
    }
    let Some(&k) = owner.get(&at) else {
        return Resolved::Unknown;
    };
    // Follow re-exports of the named item, when `at` is the file module itself.
    if let Some(item) = rest.first()
        && files[k].path == at
        && !files[k].scan.defined.contains(item)
    {
        if let Some(target) = files[k].scan.reexports.get(item) {
            let target = target.clone();
            if let Resolved::Module(m) =
                resolve(files, owner, root, &at, &target, lib_name, hops + 1)
            {
                return Resolved::Module(m);
            }
        }
        for glob in &files[k].scan.glob_reexports {
            let mut target = glob.clone();
            target.push(item.clone());
            if let Resolved::Module(m) =
                resolve(files, owner, root, &at, &target, lib_name, hops + 1)
                && files[m].scan.defined.contains(item)
            {
                return Resolved::Module(m);
            }
        }
    }
    Resolved::Module(k)
}

/// Reads `file` as module `path` and every file module it declares.
fn collect(
    crate_dir: &Path,
    file: &Path,
    path: Vec<String>,
    is_root: bool,
    is_bin: bool,
    out: &mut Vec<ModFile>,
) -> Result<(), String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("read {}: {e}", file.display()))?;
    let scan = scan(&text);
    let dir = file.parent().unwrap_or(crate_dir).to_path_buf();
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    // Children of a non-mod.rs file live in a directory named after it.
    let child_dir = if is_root || stem == "mod" {
        dir.clone()
    } else {
        dir.join(&stem)
    };
    let decls = scan.mod_decls.clone();
    out.push(ModFile {
        file: file.to_path_buf(),
        path: path.clone(),
        scan,
        is_bin,
    });
    for (inline, name, attr) in decls {
        let mut child_path = path.clone();
        child_path.extend(inline.iter().cloned());
        child_path.push(name.clone());
        let child_file = match attr {
            Some(p) => dir.join(p),
            None => {
                let mut base = child_dir.clone();
                for s in &inline {
                    base = base.join(s);
                }
                let flat = base.join(format!("{name}.rs"));
                if flat.exists() {
                    flat
                } else {
                    base.join(&name).join("mod.rs")
                }
            }
        };
        collect(crate_dir, &child_file, child_path, false, is_bin, out)?;
    }
    Ok(())
}
