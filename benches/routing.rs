//! Routing benchmarks: lookup cost at 10, 1 000 and 100 000 routes (it should stay nearly flat)
//! and the compile time of 10 000 Ingress-equivalents. Also checks that lookup never allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_gateway::routing::{
    Backend, HostRules, Lookup, PathType, RouteModel, RouteRule, RoutingTable, compile,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Counts allocations so the bench can assert that lookup allocates nothing.
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn rule(name: String, path: &str, path_type: PathType) -> RouteRule {
    let backend = Backend::upstream(name.clone());
    RouteRule::new(name, path, path_type, backend)
}

/// One Ingress-like host: an exact health path and three prefixes.
fn service_host(i: usize, paths: usize) -> HostRules {
    let all = [
        ("/", PathType::Prefix),
        ("/api", PathType::Prefix),
        ("/api/v1", PathType::Prefix),
        ("/healthz", PathType::Exact),
        ("/static", PathType::ImplementationSpecific),
    ];
    HostRules {
        host: Some(format!("svc{i}.example.com")),
        rules: all
            .iter()
            .take(paths)
            .map(|(p, t)| rule(format!("ns/svc{i}{p}"), p, *t))
            .collect(),
        default_backend: None,
        tls: i.is_multiple_of(2),
    }
}

/// A model with about `routes` routes: service hosts of 4 paths, wildcard hosts (one per 100
/// service hosts, at least one), a regex host and host-less routes.
fn model(routes: usize) -> RouteModel {
    let services = (routes / 4).max(1);
    let mut hosts: Vec<HostRules> = (0..services).map(|i| service_host(i, 4)).collect();
    for z in 0..(services / 100).max(1) {
        hosts.push(HostRules {
            host: Some(format!("*.zone{z}.example.org")),
            rules: vec![rule(format!("zone{z}"), "/", PathType::Prefix)],
            ..HostRules::default()
        });
    }
    let regex = |name: &str, pattern: &str| RouteRule {
        regex: true,
        ..rule(name.to_string(), pattern, PathType::ImplementationSpecific)
    };
    hosts.push(HostRules {
        host: Some("re.example.com".to_string()),
        rules: vec![
            regex("re-user", "/user/[0-9]+/profile"),
            regex("re-img", r"/img/.*\.(png|jpg)"),
            rule("re-prefix".to_string(), "/user", PathType::Prefix),
        ],
        ..HostRules::default()
    });
    hosts.push(HostRules {
        host: None,
        rules: vec![
            rule("hostless-static".to_string(), "/static", PathType::Prefix),
            rule("hostless-root".to_string(), "/", PathType::Prefix),
        ],
        ..HostRules::default()
    });
    RouteModel {
        hosts,
        default_backend: Some(Backend::upstream("default")),
    }
}

/// (label, host, path) of the measured requests; `{mid}` is a service host in the middle.
fn requests(routes: usize) -> Vec<(&'static str, String, &'static str)> {
    let mid = (routes / 4).max(1) / 2;
    vec![
        (
            "exact_host_prefix",
            format!("svc{mid}.example.com"),
            "/api/v1/users/42",
        ),
        (
            "exact_host_exact_path",
            format!("svc{mid}.example.com"),
            "/healthz",
        ),
        (
            "upper_case_port",
            format!("SVC{mid}.Example.com:8443"),
            "/api/x",
        ),
        ("wildcard", "tenant.zone0.example.org".to_string(), "/a/b"),
        ("hostless", "unknown.test".to_string(), "/static/app.js"),
        ("regex", "re.example.com".to_string(), "/user/123/profile"),
    ]
}

/// Fails the bench if any request allocates once warm.
fn assert_no_allocation(table: &RoutingTable, reqs: &[(&str, String, &str)]) {
    for (_, host, path) in reqs {
        black_box(table.lookup(host, path));
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..100 {
        for (_, host, path) in reqs {
            let found = table.lookup(black_box(host), black_box(path));
            assert!(matches!(found, Lookup::Found(_)), "{host} {path}");
            black_box(found);
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after, before, "lookup allocated");
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for routes in [10usize, 1_000, 100_000] {
        let compiled = compile(&model(routes), 1);
        assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
        let table = compiled.table;
        let reqs = requests(routes);
        assert_no_allocation(&table, &reqs);
        for (label, host, path) in &reqs {
            group.bench_with_input(BenchmarkId::new(*label, routes), &routes, |b, _| {
                b.iter(|| {
                    table
                        .lookup(black_box(host), black_box(path))
                        .backend()
                        .is_some()
                })
            });
        }
        // Many different hosts in turn, so the hash-map probes are not always the same lines.
        let mixed: Vec<String> = (0..1024)
            .map(|i| format!("svc{}.example.com", (i * 7919) % (routes / 4).max(1)))
            .collect();
        let mut next = 0usize;
        group.bench_with_input(BenchmarkId::new("mixed_hosts", routes), &routes, |b, _| {
            b.iter(|| {
                next = (next + 1) % mixed.len();
                let host = mixed.get(next).map_or("", String::as_str);
                table
                    .lookup(black_box(host), black_box("/api/v1/x"))
                    .backend()
                    .is_some()
            })
        });
    }
    group.finish();
}

fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let ingresses = RouteModel {
        hosts: (0..10_000).map(|i| service_host(i, 2 + i % 2)).collect(),
        default_backend: None,
    };
    group.bench_function("10000_ingresses", |b| {
        b.iter(|| compile(black_box(&ingresses), 1).table.route_count())
    });
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_compile);
criterion_main!(benches);
