//! XDP fast path (SPEC §8): owns the XDP program (`arc_xdp.bpf.c`, compiled by `build.rs` when
//! clang is present), its loading and attachment with aya, the pinned link that lets a binary
//! upgrade replace the program atomically, map updates on reload and the counter reader feeding
//! `arc_xdp_packets_total{action}` / `arc_xdp_enabled`. Every `unsafe` block and raw system call
//! of this feature lives in this room.
//!
//! [`XdpFilter::start`] never fails: a missing object, missing capabilities, an old kernel or an
//! attach failure logs one line saying which, leaves `arc_xdp_enabled 0`, and Arc serves
//! normally without the filter.

pub mod caps;
pub mod iface;
pub mod program;
mod sys;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use aya::programs::XdpMode;

use crate::config::cidr::{Cidr, parse_cidr};
use crate::config::{Xdp as XdpConfig, XdpMode as ConfigMode};
use crate::metrics::{XdpAction, XdpMetrics};

pub use program::{Attachment, Counters, LocalAddrs, XdpProgram};

/// bpffs mount point.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Directory of Arc's pinned links.
pub const PIN_DIR: &str = "/sys/fs/bpf/arc";
/// How often the counters are copied into the metrics.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(1);

/// Why XDP could not be used (each is logged once, with `arc_xdp_enabled 0`).
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The program was not compiled into this binary.
    #[error("XDP program not built into this binary: {0}")]
    NotBuilt(String),
    /// The process lacks the capabilities.
    #[error("insufficient privileges: {0}")]
    Privileges(String),
    /// The kernel refused to load the program or create its maps.
    #[error("the kernel refused the XDP program (old kernel?): {0}")]
    Load(String),
    /// A map operation failed.
    #[error("XDP map update failed: {0}")]
    Map(String),
    /// No interface to attach to.
    #[error("no interface to attach to: {0}")]
    NoInterface(String),
    /// Attaching failed.
    #[error("attaching XDP to {interface} failed: {reason}")]
    Attach {
        /// Interface name.
        interface: String,
        /// The kernel's or aya's reason.
        reason: String,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(String),
    /// The deny list has an invalid entry (validation normally catches it first).
    #[error("xdp.deny_cidrs[{index}]: {reason}")]
    Cidr {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// What this host and binary support, for `arc-gateway version`.
pub fn support_summary() -> String {
    if let Err(reason) = program::object() {
        return format!("unavailable ({reason})");
    }
    if let Err(reason) = caps::check_self() {
        return format!("program built in; unavailable to this process: {reason}");
    }
    match XdpProgram::load() {
        Ok(_) => "available (program built in, capabilities present, kernel accepts it)".into(),
        Err(e) => format!("program built in; unavailable: {e}"),
    }
}

/// Parses the deny list (key and index named in the error).
pub fn parse_deny_list(cidrs: &[String]) -> Result<Vec<Cidr>, XdpError> {
    cidrs
        .iter()
        .enumerate()
        .map(|(index, c)| parse_cidr(c).map_err(|reason| XdpError::Cidr { index, reason }))
        .collect()
}

/// What the control API shows of the fast path: state, rules in force and counter totals.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct XdpStatus {
    /// The program is attached and filtering.
    pub enabled: bool,
    /// Interfaces it is attached to.
    pub interfaces: Vec<String>,
    /// The deny list in force (as configured).
    pub deny_cidrs: Vec<String>,
    /// The SYN limit in force.
    pub syn_limit: Option<crate::config::SynLimit>,
    /// Packet totals by action (`passed`, `denied`, `syn_limited`, `parse_error`).
    pub packets: std::collections::BTreeMap<&'static str, u64>,
}

/// The XDP filter of a running server: attached (filtering) or off.
#[derive(Debug)]
pub struct XdpFilter {
    cfg: XdpConfig,
    listeners: Vec<SocketAddr>,
    metrics: Arc<XdpMetrics>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    program: XdpProgram,
    program_id: Option<u32>,
    links: Vec<Attachment>,
    reader: CounterReader,
}

impl XdpFilter {
    /// Starts the filter for `cfg` on the listeners bound at `listeners`. Never fails: when XDP
    /// is off or cannot be used, logs why (once) and returns a filter that does nothing.
    pub fn start(cfg: &XdpConfig, listeners: &[SocketAddr], metrics: Arc<XdpMetrics>) -> Self {
        let mut filter = XdpFilter {
            cfg: cfg.clone(),
            listeners: listeners.to_vec(),
            metrics,
            running: None,
        };
        filter.metrics.set_enabled(false);
        if cfg.enabled {
            match Running::start(cfg, listeners, &filter.metrics) {
                Ok(r) => {
                    filter.metrics.set_enabled(true);
                    filter.running = Some(r);
                }
                Err(e) => {
                    tracing::warn!(reason = %e, "XDP fast path disabled; serving without it");
                }
            }
        }
        filter
    }

    /// True when the program is attached and filtering.
    pub fn is_enabled(&self) -> bool {
        self.running.is_some()
    }

    /// Interfaces the program is attached to.
    pub fn interfaces(&self) -> Vec<String> {
        self.running.as_ref().map_or_else(Vec::new, |r| {
            r.links.iter().map(|l| l.interface().to_string()).collect()
        })
    }

    /// State, rules and counters for the control API.
    pub fn status(&self) -> XdpStatus {
        XdpStatus {
            enabled: self.is_enabled(),
            interfaces: self.interfaces(),
            deny_cidrs: self.cfg.deny_cidrs.clone(),
            syn_limit: self.cfg.syn_limit.clone(),
            packets: XdpAction::ALL
                .iter()
                .map(|a| (a.as_str(), self.metrics.packets(*a)))
                .collect(),
        }
    }

    /// Applies a reloaded `xdp` section: the deny list and SYN limit are updated in the maps
    /// without re-attaching; a change of `enabled`, `interface` or `mode` re-attaches.
    pub fn reload(&mut self, cfg: &XdpConfig) {
        let reattach = cfg.enabled != self.cfg.enabled
            || cfg.interface != self.cfg.interface
            || cfg.mode != self.cfg.mode;
        if reattach {
            tracing::info!("xdp.enabled, xdp.interface or xdp.mode changed: re-attaching XDP");
            self.stop();
            let listeners = std::mem::take(&mut self.listeners);
            *self = XdpFilter::start(cfg, &listeners, Arc::clone(&self.metrics));
            return;
        }
        self.cfg = cfg.clone();
        if let Some(r) = &mut self.running {
            match apply_rules(&mut r.program, cfg) {
                Ok(()) => tracing::info!(
                    deny_cidrs = cfg.deny_cidrs.len(),
                    syn_limit = cfg.syn_limit.is_some(),
                    "XDP maps updated"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "XDP maps not updated; the previous rules stay")
                }
            }
        }
    }

    /// Detaches (final exit) and stops the counter reader.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
        self.metrics.set_enabled(false);
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Running {
    fn start(
        cfg: &XdpConfig,
        listeners: &[SocketAddr],
        metrics: &Arc<XdpMetrics>,
    ) -> Result<Running, XdpError> {
        program::object().map_err(|r| XdpError::NotBuilt(r.to_string()))?;
        caps::check_self().map_err(XdpError::Privileges)?;
        let ifaddrs =
            iface::list().map_err(|e| XdpError::NoInterface(format!("getifaddrs: {e}")))?;
        let interfaces = interfaces_for(&cfg.interface, listeners, &ifaddrs)?;
        let mut program = XdpProgram::load()?;
        let local = iface::listener_addrs(listeners, &ifaddrs);
        program.set_local_addrs(&local)?;
        let mut ports: Vec<u16> = listeners.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        program.set_ports(&ports)?;
        apply_rules(&mut program, cfg)?;
        let pin_dir = match sys::ensure_bpffs_dir(Path::new(BPFFS_ROOT), Path::new(PIN_DIR)) {
            Ok(()) => Some(PathBuf::from(PIN_DIR)),
            Err(e) => {
                tracing::warn!(error = %e, "bpffs unavailable: the XDP link is not pinned, so an upgrade re-attaches instead of replacing");
                None
            }
        };
        let mut links = Vec::new();
        for ifname in &interfaces {
            match attach_with_mode(&mut program, ifname, cfg.mode, pin_dir.as_deref()) {
                Ok((a, mode)) => {
                    tracing::info!(
                        interface = %ifname,
                        mode,
                        pinned = a.pinned(),
                        replaced_previous = a.replaced_existing(),
                        ports = ?ports,
                        deny_cidrs = cfg.deny_cidrs.len(),
                        "XDP fast path attached"
                    );
                    links.push(a);
                }
                Err(e) => {
                    // Undo the partial attachment: all interfaces or none.
                    let id = program.id().ok();
                    for l in links {
                        l.detach(id);
                    }
                    return Err(e);
                }
            }
        }
        let program_id = program.id().ok();
        let counters = program
            .take_counters()
            .ok_or_else(|| XdpError::Map("counters map missing".into()))?;
        let local = program.take_local_addrs().map(|maps| LocalRefresh {
            maps,
            listeners: listeners.to_vec(),
            last: local,
        });
        let reader = CounterReader::spawn(counters, local, Arc::clone(metrics))?;
        Ok(Running {
            program,
            program_id,
            links,
            reader,
        })
    }

    fn stop(self) {
        self.reader.stop();
        for l in self.links {
            l.detach(self.program_id);
        }
        tracing::info!("XDP fast path detached");
        drop(self.program);
    }
}

fn apply_rules(program: &mut XdpProgram, cfg: &XdpConfig) -> Result<(), XdpError> {
    let deny = parse_deny_list(&cfg.deny_cidrs)?;
    program.set_deny(&deny)?;
    program.set_syn_limit(cfg.syn_limit.as_ref().map(|s| (s.rate, s.burst)))
}

/// `auto` → the interfaces carrying the listeners' addresses; otherwise the named one.
fn interfaces_for(
    setting: &str,
    listeners: &[SocketAddr],
    ifaddrs: &[iface::IfAddr],
) -> Result<Vec<String>, XdpError> {
    if setting != "auto" {
        return Ok(vec![setting.to_string()]);
    }
    let chosen = iface::select(listeners, ifaddrs);
    if chosen.is_empty() {
        return Err(XdpError::NoInterface(
            "no interface carries the listeners' addresses (set xdp.interface)".into(),
        ));
    }
    Ok(chosen)
}

fn attach_with_mode(
    program: &mut XdpProgram,
    ifname: &str,
    mode: ConfigMode,
    pin_dir: Option<&Path>,
) -> Result<(Attachment, &'static str), XdpError> {
    match mode {
        ConfigMode::Native => Ok((program.attach(ifname, XdpMode::Driver, pin_dir)?, "native")),
        ConfigMode::Skb => Ok((program.attach(ifname, XdpMode::Skb, pin_dir)?, "skb")),
        ConfigMode::Auto => match program.attach(ifname, XdpMode::Driver, pin_dir) {
            Ok(a) => Ok((a, "native")),
            Err(e) => {
                tracing::info!(interface = ifname, reason = %e, "native XDP unavailable; falling back to skb (generic) mode");
                Ok((program.attach(ifname, XdpMode::Skb, pin_dir)?, "skb"))
            }
        },
    }
}

/// Copies the program's counters into the metrics every [`COUNTER_INTERVAL`], and keeps the
/// listener addresses current.
#[derive(Debug)]
struct CounterReader {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl CounterReader {
    fn spawn(
        counters: Counters,
        mut local: Option<LocalRefresh>,
        metrics: Arc<XdpMetrics>,
    ) -> Result<Self, XdpError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("arc-xdp-counters".into())
            .spawn(move || {
                loop {
                    publish(&counters, &metrics);
                    if let Some(l) = &mut local {
                        l.refresh();
                    }
                    match stopped.recv_timeout(COUNTER_INTERVAL) {
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
                publish(&counters, &metrics);
            })
            .map_err(|e| XdpError::Map(format!("spawning the counter reader: {e}")))?;
        Ok(CounterReader {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Follows address changes of wildcard listeners (addresses added or removed at run time).
#[derive(Debug)]
struct LocalRefresh {
    maps: LocalAddrs,
    listeners: Vec<SocketAddr>,
    last: Vec<std::net::IpAddr>,
}

impl LocalRefresh {
    fn refresh(&mut self) {
        let Ok(ifaddrs) = iface::list() else { return };
        let now = iface::listener_addrs(&self.listeners, &ifaddrs);
        if now != self.last {
            match self.maps.set(&now) {
                Ok(()) => {
                    tracing::info!(addresses = now.len(), "XDP listener addresses updated");
                    self.last = now;
                }
                Err(e) => tracing::warn!(error = %e, "XDP listener addresses not updated"),
            }
        }
    }
}

fn publish(counters: &Counters, metrics: &XdpMetrics) {
    match counters.read() {
        Ok(values) => {
            for (action, value) in XdpAction::ALL.iter().zip(values) {
                metrics.set_packets(*action, value);
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading XDP counters failed"),
    }
}
