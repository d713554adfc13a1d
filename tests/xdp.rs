//! XDP fast path end to end: two network namespaces made by the test, joined by a veth pair
//! (documentation addresses 192.0.2.0/24, inside those namespaces only). The real Arc binary runs
//! in one with XDP in skb mode; a denied source cannot connect, an allowed one is proxied, other
//! ports stay reachable from the denied source, a reload swaps the rules without re-attaching,
//! and the counters move. Another test shows Arc without capabilities serving normally, and one
//! replaces the program on a pinned link the way a binary upgrade does.
//!
//! Needs root (namespaces, XDP). Without it each test prints why it is skipped, except under
//! `ARC_REQUIRE_PRIVILEGED=1`, where a missing privilege fails the test.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arc_gateway::xdp::XdpProgram;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ALLOWED_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const DENIED_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const ARC_PORT: u16 = 8080;
const OTHER_PORT: u16 = 9999;
const METRICS: &str = "127.0.0.1:9090";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `Some(reason)` when the test cannot run here; panics instead under ARC_REQUIRE_PRIVILEGED=1.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not root (network namespaces and XDP need it)".to_string())
    } else if let Err(r) = sys_admin() {
        Some(r)
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` command (iproute2) is missing".to_string())
    } else if let Err(r) = arc_gateway::xdp::program::object() {
        Some(format!("XDP program not built: {r}"))
    } else {
        None
    };
    if let Some(why) = &why {
        assert!(
            std::env::var("ARC_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "ARC_REQUIRE_PRIVILEGED=1 but {why}"
        );
        eprintln!("skipping XDP namespace test: {why}");
    }
    why
}

/// Namespaces and mounts need CAP_SYS_ADMIN (which also allows XDP).
fn sys_admin() -> Result<(), String> {
    use arc_gateway::xdp::caps;
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let eff = caps::effective_caps(&status).ok_or("no CapEff line")?;
    if eff & (1u64 << caps::CAP_SYS_ADMIN) == 0 {
        return Err("root without CAP_SYS_ADMIN (needed for namespaces)".into());
    }
    Ok(())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; deleted (with the pair) on drop.
struct Net {
    server: String,
    client: String,
    server_if: String,
}

impl Net {
    fn new() -> Net {
        let id = format!(
            "{}{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net {
            server: format!("arcxs{id}"),
            client: format!("arcxc{id}"),
            server_if: format!("vxs{id}"),
        };
        let client_if = format!("vxc{id}");
        ip(&["netns", "add", &net.server]);
        ip(&["netns", "add", &net.client]);
        ip(&[
            "link",
            "add",
            &net.server_if,
            "netns",
            &net.server,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            &net.client,
        ]);
        let s = net.server.as_str();
        let c = net.client.as_str();
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            &net.server_if,
        ]);
        ip(&["-n", c, "addr", "add", "192.0.2.2/24", "dev", &client_if]);
        ip(&["-n", c, "addr", "add", "192.0.2.3/24", "dev", &client_if]);
        ip(&["-n", s, "link", "set", &net.server_if, "up"]);
        ip(&["-n", c, "link", "set", &client_if, "up"]);
        ip(&["-n", s, "link", "set", "lo", "up"]);
        ip(&["-n", c, "link", "set", "lo", "up"]);
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (only that thread moves).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A plain HTTP upstream on 127.0.0.1 inside `ns`, answering every request with `body`.
fn upstream(ns: &str, body: &'static str) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: as in `in_ns`.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        tx.send(l.local_addr().expect("addr")).expect("send addr");
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("upstream address")
}

/// Connects from `src` to `dst`; `Err` carries the io error (a timeout when XDP drops SYNs).
fn connect_from(src: Ipv4Addr, dst: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    sock.connect_timeout(&dst.into(), timeout)?;
    Ok(sock.into())
}

/// One HTTP/1.1 GET with `connection: close`; returns the whole response text.
fn get(mut s: TcpStream, host: &str, path: &str) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(text: &str, series: &str) -> Option<u64> {
    common::sample(text, series)?.parse().ok()
}

fn scrape(ns: &str) -> Option<String> {
    in_ns(ns, || {
        let s = TcpStream::connect_timeout(&METRICS.parse().ok()?, Duration::from_secs(1)).ok()?;
        Some(get(s, "metrics", "/metrics"))
    })
}

/// Arc running inside a namespace; SIGTERM and wait on drop.
struct ArcProcess {
    child: Child,
    log: PathBuf,
}

impl ArcProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) -> bool {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for ArcProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        let log = self.log();
        let _ = std::fs::remove_file(&self.log);
        // The end of every test: the captured log carries no key material.
        if !std::thread::panicking() {
            common::secrets::assert_no_key_material("arc-gateway log", &log);
        }
    }
}

fn arc_config(upstream: SocketAddr, deny: Ipv4Addr) -> String {
    format!(
        "listeners:\n  - {{ name: http, bind: \"0.0.0.0:{ARC_PORT}\", protocol: http }}\n\
         upstreams:\n  - {{ name: app, addrs: [\"{upstream}\"] }}\n\
         routes:\n  - {{ path: /, path_type: Prefix, upstream: app }}\n\
         observability: {{ metrics_bind: \"{METRICS}\" }}\n\
         logging: {{ level: info, format: text }}\n\
         node: {{ workers: 1 }}\n\
         xdp:\n  enabled: true\n  interface: auto\n  mode: skb\n  deny_cidrs: [\"{deny}/32\", \"2001:db8:bad::/48\"]\n"
    )
}

fn start_arc(net: &Net, dir: &Path, upstream: SocketAddr) -> ArcProcess {
    spawn_arc(&net.server, dir, &arc_config(upstream, DENIED_IP), &[])
}

/// The id of the XDP program attached to the server's veth, from `ip link show`.
fn attached_prog_id(net: &Net) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", &net.server, "link", "show", &net.server_if])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rest = &text[text.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Runs Arc with `config` inside namespace `ns`, behind `wrapper` (e.g. a capability dropper).
fn spawn_arc(ns: &str, dir: &Path, config: &str, wrapper: &[&str]) -> ArcProcess {
    let path = dir.join("arc.yaml");
    std::fs::write(&path, config).expect("write config");
    let log = dir.join("arc.log");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(wrapper)
        .arg(common::ARC_BIN)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn arc");
    ArcProcess { child, log }
}

#[test]
fn deny_list_drops_before_the_stack_proxies_the_rest_and_reloads_in_place() {
    if skip_reason().is_some() {
        return;
    }
    let net = Net::new();
    let dir = common::temp_dir("xdp-e2e");
    let up = upstream(&net.server, "from-upstream");
    // A service Arc does not serve, on the same host.
    let other = {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{}", net.server);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: as in `in_ns`.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, OTHER_PORT)).expect("bind other");
            tx.send(()).expect("ready");
            for mut s in l.incoming().take(4).flatten() {
                let _ = s.write_all(b"other-service\n");
                let _ = s.shutdown(Shutdown::Both);
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
    };
    assert!(other.is_ok(), "other service did not start");
    let mut arc = start_arc(&net, &dir, up);

    // Wait until the filter is attached (or Arc said why not).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < deadline {
        if let Some(t) = scrape(&net.server)
            && metric(&t, "arc_xdp_enabled") == Some(1)
        {
            text = t;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        metric(&text, "arc_xdp_enabled") == Some(1),
        "XDP not enabled; Arc log:\n{}",
        arc.log()
    );
    let attached = Command::new("ip")
        .args(["-n", &net.server, "link", "show", &net.server_if])
        .output()
        .expect("ip link show");
    let shown = String::from_utf8_lossy(&attached.stdout).into_owned();
    assert!(
        shown.contains("xdpgeneric"),
        "not attached in skb mode: {shown}"
    );

    let arc_addr = SocketAddr::V4(SocketAddrV4::new(SERVER_IP, ARC_PORT));
    let other_addr = SocketAddr::V4(SocketAddrV4::new(SERVER_IP, OTHER_PORT));

    // Allowed source: proxied to the upstream.
    let resp = in_ns(&net.client, move || {
        let s =
            connect_from(ALLOWED_IP, arc_addr, Duration::from_secs(3)).expect("allowed connect");
        get(s, "app.test", "/")
    });
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("from-upstream"), "{resp}");

    // Denied source: the SYN is dropped before the stack, so the connect times out (a refusal
    // would mean a RST came back).
    let denied = in_ns(&net.client, move || {
        connect_from(DENIED_IP, arc_addr, Duration::from_millis(1500)).map(|_| ())
    });
    let err = denied.expect_err("denied source connected");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "expected a timeout, got {err}"
    );

    // The same denied source still reaches a port Arc does not serve.
    let other_reply = in_ns(&net.client, move || {
        let mut s =
            connect_from(DENIED_IP, other_addr, Duration::from_secs(3)).expect("other port");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    assert_eq!(other_reply, "other-service\n");

    // Reload with the roles swapped: the maps change, the program and link stay.
    let prog_before = attached_prog_id(&net).expect("program attached");
    std::fs::write(dir.join("arc.yaml"), arc_config(up, ALLOWED_IP)).expect("rewrite config");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(arc.child.id() as libc::pid_t, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !arc.log().contains("XDP maps updated") {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(arc.log().contains("XDP maps updated"), "{}", arc.log());
    assert_eq!(
        attached_prog_id(&net),
        Some(prog_before),
        "reload re-attached"
    );
    let swapped = in_ns(&net.client, move || {
        let now_denied = connect_from(ALLOWED_IP, arc_addr, Duration::from_millis(1500)).is_err();
        let now_allowed = connect_from(DENIED_IP, arc_addr, Duration::from_secs(3))
            .map(|s| get(s, "app.test", "/"))
            .unwrap_or_default();
        (now_denied, now_allowed)
    });
    assert!(swapped.0, "the newly denied source still connects");
    assert!(swapped.1.ends_with("from-upstream"), "{}", swapped.1);

    // Counters reach /metrics within the reader's interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut denied_count, mut passed_count) = (0, 0);
    while Instant::now() < deadline {
        if let Some(t) = scrape(&net.server) {
            denied_count = metric(&t, "arc_xdp_packets_total{action=\"denied\"}").unwrap_or(0);
            passed_count = metric(&t, "arc_xdp_packets_total{action=\"passed\"}").unwrap_or(0);
            if denied_count >= 1 && passed_count >= 3 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(denied_count >= 1, "denied counter did not move");
    // SYN, ACK, request, FIN/ACKs of the allowed connection.
    assert!(passed_count >= 3, "passed counter: {passed_count}");

    // Final exit detaches the program.
    assert!(arc.stop(), "Arc did not exit cleanly:\n{}", arc.log());
    let after = Command::new("ip")
        .args(["-n", &net.server, "link", "show", &net.server_if])
        .output()
        .expect("ip link show");
    let shown = String::from_utf8_lossy(&after.stdout).into_owned();
    assert!(!shown.contains("xdp"), "still attached after exit: {shown}");
    let log = arc.log();
    assert!(log.contains("XDP fast path attached"), "{log}");
    assert!(log.contains("XDP fast path detached"), "{log}");
    drop(arc);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_upgrade_replaces_the_program_on_the_pinned_link() {
    if skip_reason().is_some() {
        return;
    }
    let net = Net::new();
    let ns = format!("/run/netns/{}", net.server);
    let ifname = net.server_if.clone();
    let dir = common::temp_dir("xdp-pin");
    let result = std::thread::spawn(move || {
        // A private mount namespace for this thread, with its own bpffs at `dir`.
        // SAFETY: unshare/mount/setns with valid arguments; they affect only this thread.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS), 0);
            assert_eq!(
                libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null()
                ),
                0
            );
            let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(
                libc::mount(
                    c"bpf".as_ptr(),
                    target.as_ptr(),
                    c"bpf".as_ptr(),
                    0,
                    std::ptr::null()
                ),
                0,
                "mount bpffs: {}",
                std::io::Error::last_os_error()
            );
            let f = std::fs::File::open(&ns).expect("netns");
            assert_eq!(libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET), 0);
        }
        let mut old = XdpProgram::load().expect("load old");
        let old_id = old.id().expect("old id");
        let a = old
            .attach(&ifname, aya::programs::XdpMode::Skb, Some(&dir))
            .expect("attach old");
        assert!(a.pinned() && !a.replaced_existing());
        // A fresh bpffs may hold the kernel's own debug entries; count the link pins only.
        let pins = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("link-"))
                .count()
        };
        assert_eq!(pins(&dir), 1, "one pinned link");

        // The upgraded binary takes the same link over: no gap, same pin.
        let mut new = XdpProgram::load().expect("load new");
        let new_id = new.id().expect("new id");
        assert_ne!(old_id, new_id);
        let b = new
            .attach(&ifname, aya::programs::XdpMode::Skb, Some(&dir))
            .expect("replace on link");
        assert!(b.pinned() && b.replaced_existing());
        let attached = |ifname: &str| {
            let out = Command::new("ip")
                .args(["link", "show", ifname])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(
            attached(&ifname).contains(&format!("id {new_id}")),
            "{}",
            attached(&ifname)
        );

        // The old process exits: the link is not its own any more, so it stays.
        a.detach(Some(old_id));
        drop(old);
        assert!(attached(&ifname).contains(&format!("id {new_id}")));
        assert_eq!(pins(&dir), 1);

        // The new one's final exit unpins and detaches.
        b.detach(Some(new_id));
        assert_eq!(pins(&dir), 0);
        let shown = attached(&ifname);
        assert!(!shown.contains("xdp"), "{shown}");
        // SAFETY: unmounting what this thread mounted.
        unsafe {
            let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
        dir
    })
    .join();
    match result {
        Ok(dir) => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Err(e) => std::panic::resume_unwind(e),
    }
}

#[test]
fn without_capabilities_arc_logs_why_and_serves_normally() {
    if skip_reason().is_some() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        assert!(
            std::env::var("ARC_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "ARC_REQUIRE_PRIVILEGED=1 but setpriv (util-linux) is missing"
        );
        eprintln!("skipping: setpriv (util-linux) is missing");
        return;
    }
    let net = Net::new();
    let dir = common::temp_dir("xdp-nocaps");
    let config = format!(
        "listeners:\n  - {{ name: http, bind: \"0.0.0.0:{ARC_PORT}\", protocol: http }}\n\
         routes:\n  - {{ path: /, path_type: Prefix, direct_response: {{ status: 200, body: \"served\" }} }}\n\
         observability: {{ metrics_bind: \"{METRICS}\" }}\n\
         logging: {{ level: info, format: text }}\n\
         node: {{ workers: 1 }}\n\
         xdp: {{ enabled: true, interface: {}, mode: skb, deny_cidrs: [\"{DENIED_IP}/32\"] }}\n",
        net.server_if
    );
    // Root without any capability: the bounding set is emptied before exec.
    let mut arc = spawn_arc(
        &net.server,
        &dir,
        &config,
        &["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = None;
    while Instant::now() < deadline && text.is_none() {
        text = scrape(&net.server);
        if text.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let text = text.unwrap_or_else(|| panic!("no /metrics; Arc log:\n{}", arc.log()));
    assert_eq!(metric(&text, "arc_xdp_enabled"), Some(0));
    // Served normally, even from the source the deny list names.
    let arc_addr = SocketAddr::V4(SocketAddrV4::new(SERVER_IP, ARC_PORT));
    let resp = in_ns(&net.client, move || {
        let s = connect_from(DENIED_IP, arc_addr, Duration::from_secs(3)).expect("connect");
        get(s, "app.test", "/")
    });
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("served"),
        "{resp}"
    );
    assert!(arc.stop(), "Arc did not exit cleanly:\n{}", arc.log());
    let log = arc.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("XDP")).collect();
    assert_eq!(lines.len(), 1, "one XDP log line expected:\n{log}");
    assert!(
        lines[0].contains("XDP fast path disabled") && lines[0].contains("CAP_NET_ADMIN"),
        "{log}"
    );
    drop(arc);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_reports_xdp_support_of_this_host() {
    let out = common::arc_command()
        .arg("version")
        .output()
        .expect("run version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("xdp: "))
        .unwrap_or_else(|| panic!("no xdp line in:\n{text}"));
    match (
        arc_gateway::xdp::program::object(),
        arc_gateway::xdp::caps::check_self(),
    ) {
        (Err(reason), _) => assert!(
            line.contains("unavailable") && line.contains(reason),
            "{line}"
        ),
        (Ok(_), Err(_)) => assert!(line.contains("unavailable to this process"), "{line}"),
        (Ok(_), Ok(())) => assert!(
            line.starts_with("xdp: available") || line.contains("kernel refused"),
            "{line}"
        ),
    }
}
