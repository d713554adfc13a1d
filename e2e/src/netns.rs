//! Network-namespace test hosts: one isolated namespace per test, joined to the host by a veth
//! pair on a private /30 (10.200.X.0/30, X claimed per test through a lock file so parallel
//! tests and processes never share one), echo backends listening inside it, a route check that
//! traffic to it stays on the veth, and teardown on drop even when the test fails.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::echo::{EchoState, Mode};

/// Errors creating or using a test network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// Arguments given.
        args: String,
        /// What it printed.
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Every 10.200.X.0/30 slot is taken.
    #[error("no free 10.200.X.0/30 slot")]
    NoSlot,
    /// Traffic to the namespace would not leave over the veth.
    #[error("route to {addr} does not use {dev}: {route}")]
    Route {
        /// Destination checked.
        addr: Ipv4Addr,
        /// Expected device.
        dev: String,
        /// What `ip route get` said.
        route: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let context = context.into();
    move |source| NetError::Io { context, source }
}

/// Runs `ip ARGS`, returning stdout.
fn ip(args: &[&str]) -> Result<String, NetError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io("running ip"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

const LOCK_DIR: &str = "/run/arc-e2e-net";

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    pid > 0 && unsafe { libc::kill(pid, 0) == 0 }
}

fn names(x: u8) -> (String, String, String) {
    (format!("arc-e2e-{x}"), format!("ae{x}h"), format!("ae{x}n"))
}

fn remove_leftovers(x: u8) {
    let (ns, host_if, _) = names(x);
    let _ = ip(&["netns", "del", &ns]);
    let _ = ip(&["link", "del", &host_if]);
}

/// Claims a free X by creating `LOCK_DIR/X` exclusively; reclaims slots of dead processes.
fn claim_slot() -> Result<(u8, PathBuf), NetError> {
    std::fs::create_dir_all(LOCK_DIR).map_err(io(format!("creating {LOCK_DIR}")))?;
    let start = (std::process::id() % 200) as u16;
    for i in 0..256u16 {
        let x = ((start + i) % 256) as u8;
        let path = Path::new(LOCK_DIR).join(x.to_string());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok((x, path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    match owner {
                        Some(pid) if pid_alive(pid) => break,
                        // A file being written right now has no pid yet; leave it.
                        None => break,
                        Some(_) => {
                            remove_leftovers(x);
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(io(format!("creating {}", path.display()))(e)),
            }
        }
    }
    Err(NetError::NoSlot)
}

struct Backend {
    name: String,
    addr: SocketAddr,
    state: Arc<EchoState>,
    task: Option<JoinHandle<()>>,
    child: Option<Child>,
}

/// One test's network namespace with its veth pair and backends. Dropping it kills the
/// backends and deletes the namespace and links.
pub struct TestNet {
    x: u8,
    ns: String,
    host_if: String,
    ns_if: String,
    lock: PathBuf,
    backends: Mutex<Vec<Backend>>,
}

impl std::fmt::Debug for TestNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNet")
            .field("ns", &self.ns)
            .field("host_if", &self.host_if)
            .field("backend_ip", &self.backend_ip())
            .finish_non_exhaustive()
    }
}

impl TestNet {
    /// Creates the namespace, the veth pair and the /30, then checks the route.
    /// Needs root; gate the test with [`crate::env::require_privileged`].
    pub fn create() -> Result<TestNet, NetError> {
        let (x, lock) = claim_slot()?;
        let (ns, host_if, ns_if) = names(x);
        let net = TestNet {
            x,
            ns,
            host_if,
            ns_if,
            lock,
            backends: Mutex::new(Vec::new()),
        };
        // `net` is dropped (and cleans up) if any step fails.
        remove_leftovers(x);
        let host_cidr = format!("{}/30", net.host_ip());
        let ns_cidr = format!("{}/30", net.backend_ip());
        ip(&["netns", "add", &net.ns])?;
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.ns_if,
            "netns",
            &net.ns,
        ])?;
        ip(&["addr", "add", &host_cidr, "dev", &net.host_if])?;
        ip(&["link", "set", &net.host_if, "up"])?;
        ip(&["-n", &net.ns, "addr", "add", &ns_cidr, "dev", &net.ns_if])?;
        ip(&["-n", &net.ns, "link", "set", &net.ns_if, "up"])?;
        ip(&["-n", &net.ns, "link", "set", "lo", "up"])?;
        net.verify_route()?;
        Ok(net)
    }

    /// Name of the network namespace (for `ip netns exec`).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Host side of the veth pair.
    pub fn host_interface(&self) -> &str {
        &self.host_if
    }

    /// Host address on the veth (10.200.X.1).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.x, 1)
    }

    /// Address of the namespace, where backends listen (10.200.X.2).
    pub fn backend_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.x, 2)
    }

    /// Checks with `ip route get` that traffic to the namespace leaves over the veth, and the
    /// namespace's way back uses its end of it.
    pub fn verify_route(&self) -> Result<(), NetError> {
        let there = ip(&["route", "get", &self.backend_ip().to_string()])?;
        if !there
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["dev", self.host_if.as_str()])
        {
            return Err(NetError::Route {
                addr: self.backend_ip(),
                dev: self.host_if.clone(),
                route: there.trim().to_string(),
            });
        }
        let back = ip(&["-n", &self.ns, "route", "get", &self.host_ip().to_string()])?;
        if !back
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["dev", self.ns_if.as_str()])
        {
            return Err(NetError::Route {
                addr: self.host_ip(),
                dev: self.ns_if.clone(),
                route: back.trim().to_string(),
            });
        }
        Ok(())
    }

    /// Binds a TCP listener inside the namespace (port 0 picks one) from a helper thread that
    /// joins the namespace; the socket stays in the namespace when handed back.
    pub fn bind_inside(&self, port: u16) -> Result<std::net::TcpListener, NetError> {
        let path = PathBuf::from(format!("/var/run/netns/{}", self.ns));
        let addr = SocketAddr::from((self.backend_ip(), port));
        let joined = std::thread::spawn(move || -> Result<std::net::TcpListener, NetError> {
            let f =
                std::fs::File::open(&path).map_err(io(format!("opening {}", path.display())))?;
            // SAFETY: setns on a valid namespace fd affects only this short-lived thread.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io("setns")(std::io::Error::last_os_error()));
            }
            let l = std::net::TcpListener::bind(addr)
                .map_err(io(format!("binding {addr} in the namespace")))?;
            l.set_nonblocking(true).map_err(io("set_nonblocking"))?;
            Ok(l)
        })
        .join();
        match joined {
            Ok(r) => r,
            Err(_) => Err(io("namespace thread")(std::io::Error::other("panicked"))),
        }
    }

    /// Starts an in-process echo backend inside the namespace; returns its address.
    /// Must be called within a tokio runtime.
    pub fn start_echo(&self, name: &str, port: u16) -> Result<SocketAddr, NetError> {
        let std_listener = self.bind_inside(port)?;
        let addr = std_listener.local_addr().map_err(io("local_addr"))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(io("registering the listener"))?;
        let state = EchoState::new(name);
        let task = tokio::spawn(crate::echo::serve(listener, state.clone()));
        self.lock_backends().push(Backend {
            name: name.to_string(),
            addr,
            state,
            task: Some(task),
            child: None,
        });
        Ok(addr)
    }

    /// Starts the `arc-e2e-echo` binary inside the namespace with `ip netns exec`; returns its
    /// address once it reports listening.
    pub fn spawn_echo_process(
        &self,
        bin: &Path,
        name: &str,
        port: u16,
    ) -> Result<SocketAddr, NetError> {
        use std::io::BufRead;
        let listen = SocketAddr::from((self.backend_ip(), port)).to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(bin)
            .args(["--name", name, "--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io(format!("spawning {}", bin.display())))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io(format!("starting {}", bin.display()))(
                std::io::Error::other(format!("unexpected first line {line:?}")),
            ));
        };
        self.lock_backends().push(Backend {
            name: name.to_string(),
            addr,
            state: EchoState::new(name),
            task: None,
            child: Some(child),
        });
        Ok(addr)
    }

    fn lock_backends(&self) -> std::sync::MutexGuard<'_, Vec<Backend>> {
        self.backends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Kills a backend: its listener and every connection close.
    pub fn kill(&self, name: &str) -> bool {
        let mut backends = self.lock_backends();
        let mut found = false;
        for b in backends.iter_mut().filter(|b| b.name == name) {
            found = true;
            if let Some(t) = b.task.take() {
                t.abort();
            }
            if let Some(mut c) = b.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        found
    }

    /// Sets how an in-process backend answers (process backends take the `/__echo/` paths).
    pub fn set_mode(&self, name: &str, mode: Mode) -> bool {
        let backends = self.lock_backends();
        let mut found = false;
        for b in backends
            .iter()
            .filter(|b| b.name == name && b.child.is_none())
        {
            b.state.set_mode(mode);
            found = true;
        }
        found
    }

    /// Requests an in-process backend has echoed.
    pub fn count(&self, name: &str) -> Option<u64> {
        self.lock_backends()
            .iter()
            .find(|b| b.name == name && b.child.is_none())
            .map(|b| b.state.count())
    }

    /// Address of a backend.
    pub fn addr_of(&self, name: &str) -> Option<SocketAddr> {
        self.lock_backends()
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.addr)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let names: Vec<String> = self
            .lock_backends()
            .iter()
            .map(|b| b.name.clone())
            .collect();
        for n in names {
            self.kill(&n);
        }
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = std::fs::remove_file(&self.lock);
    }
}
