//! The compiled XDP program in the kernel: loading it (aya), filling its maps, reading its
//! per-CPU counters, attaching it to interfaces with a pinned link, and running it on a packet
//! through `BPF_PROG_TEST_RUN` (which aya 0.14 does not wrap).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};

use super::XdpError;
use crate::config::cidr::Cidr;

/// Name of the program in the object (its C function).
const PROGRAM: &str = "arc_xdp";
/// Counter slots of `arc_counters`, in the program's order.
pub const COUNTERS: usize = 4;

/// XDP verdicts the tests compare against (`enum xdp_action`).
pub mod action {
    /// `XDP_ABORTED`.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
}

/// The embedded object, or why there is none.
pub fn object() -> Result<&'static [u8], &'static str> {
    #[cfg(arc_xdp_object)]
    {
        Ok(include_bytes!(env!("ARC_XDP_OBJECT")))
    }
    #[cfg(not(arc_xdp_object))]
    {
        Err(env!("ARC_XDP_UNAVAILABLE"))
    }
}

/// `arc_syn_config` value: rate 0 = off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SynConfig {
    rate: u64,
    burst: u64,
}

// SAFETY: plain `repr(C)` integers without padding, matching `struct arc_syn_config`.
unsafe impl aya::Pod for SynConfig {}

/// The loaded program with its maps.
pub struct XdpProgram {
    ebpf: Ebpf,
    counters: Option<PerCpuArray<MapData, u64>>,
    local: Option<LocalAddrs>,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram").finish_non_exhaustive()
    }
}

impl XdpProgram {
    /// Loads the embedded object and the program into the kernel (maps created, verifier run).
    pub fn load() -> Result<Self, XdpError> {
        let bytes = object().map_err(|r| XdpError::NotBuilt(r.to_string()))?;
        let mut ebpf = Ebpf::load(bytes).map_err(|e| XdpError::Load(e.to_string()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Load(format!("program {PROGRAM} missing from the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| XdpError::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| XdpError::Load(verifier_detail(&e)))?;
        let counters = ebpf
            .take_map("arc_counters")
            .ok_or_else(|| XdpError::Load("map arc_counters missing".into()))?;
        let counters = PerCpuArray::try_from(counters).map_err(map_err("arc_counters"))?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| XdpError::Load(format!("map {name} missing")))
        };
        let v4 = HashMap::try_from(take("arc_local_v4")?).map_err(map_err("arc_local_v4"))?;
        let v6 = HashMap::try_from(take("arc_local_v6")?).map_err(map_err("arc_local_v6"))?;
        Ok(XdpProgram {
            ebpf,
            counters: Some(counters),
            local: Some(LocalAddrs { v4, v6 }),
        })
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .ok_or_else(|| XdpError::Load(format!("program {PROGRAM} missing")))
    }

    /// The kernel's id of the loaded program.
    pub fn id(&mut self) -> Result<u32, XdpError> {
        let info = self
            .program()?
            .info()
            .map_err(|e| XdpError::Load(e.to_string()))?;
        Ok(info.id())
    }

    /// Sets the destination ports the program filters (Arc's listener ports).
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut("arc_ports")
            .ok_or_else(|| XdpError::Map("arc_ports missing".into()))?;
        let mut map: HashMap<_, u16, u8> = HashMap::try_from(map).map_err(map_err("arc_ports"))?;
        let wanted: BTreeSet<u16> = ports.iter().map(|p| p.to_be()).collect();
        for p in &wanted {
            map.insert(p, 1, 0).map_err(map_err("arc_ports"))?;
        }
        let stale: Vec<u16> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        for k in stale {
            map.remove(&k).map_err(map_err("arc_ports"))?;
        }
        Ok(())
    }

    /// Sets the destination addresses Arc listens on (see [`super::iface::listener_addrs`]).
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        match &mut self.local {
            Some(local) => local.set(addrs),
            None => Err(XdpError::Map("local address maps were taken".into())),
        }
    }

    /// Takes the local-address maps out, for the refresher that follows address changes.
    pub fn take_local_addrs(&mut self) -> Option<LocalAddrs> {
        self.local.take()
    }

    /// Replaces the deny list: new entries are inserted before stale ones are removed, so an
    /// entry present in both lists never lapses.
    pub fn set_deny(&mut self, cidrs: &[Cidr]) -> Result<(), XdpError> {
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        for c in cidrs {
            match c {
                Cidr::V4(a, l) => v4.insert((u32::from(*l), a.octets())),
                Cidr::V6(a, l) => v6.insert((u32::from(*l), a.octets())),
            };
        }
        self.sync_trie::<4>("arc_deny_v4", &v4)?;
        self.sync_trie::<16>("arc_deny_v6", &v6)
    }

    fn sync_trie<const N: usize>(
        &mut self,
        name: &str,
        wanted: &BTreeSet<(u32, [u8; N])>,
    ) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| XdpError::Map(format!("{name} missing")))?;
        let mut trie: LpmTrie<_, [u8; N], u8> = LpmTrie::try_from(map).map_err(map_err(name))?;
        for (len, addr) in wanted {
            trie.insert(&Key::new(*len, *addr), 1, 0)
                .map_err(map_err(name))?;
        }
        let stale: Vec<Key<[u8; N]>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            trie.remove(&k).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Sets the per-source SYN limit (`None` = off).
    pub fn set_syn_limit(&mut self, limit: Option<(u32, u32)>) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut("arc_syn_config")
            .ok_or_else(|| XdpError::Map("arc_syn_config missing".into()))?;
        let mut arr: Array<_, SynConfig> =
            Array::try_from(map).map_err(map_err("arc_syn_config"))?;
        let value = limit.map_or(SynConfig::default(), |(rate, burst)| SynConfig {
            rate: u64::from(rate),
            burst: u64::from(burst),
        });
        arr.set(0, value, 0).map_err(map_err("arc_syn_config"))
    }

    /// Takes the counters map out, for a reader that outlives borrows of the program.
    pub fn take_counters(&mut self) -> Option<Counters> {
        self.counters.take().map(|map| Counters { map })
    }

    /// Reads the counters now (summed over CPUs), if they were not taken.
    pub fn counters(&self) -> Result<[u64; COUNTERS], XdpError> {
        match &self.counters {
            Some(map) => read_counters(map),
            None => Err(XdpError::Map("counters were taken by the reader".into())),
        }
    }

    /// Attaches to `ifname` in `mode`. With `pin_dir`, an existing pinned link for this
    /// interface is reused (the program on it is replaced atomically) and a new link is pinned
    /// there; without it the link lives as long as the returned [`Attachment`].
    pub fn attach(
        &mut self,
        ifname: &str,
        mode: XdpMode,
        pin_dir: Option<&Path>,
    ) -> Result<Attachment, XdpError> {
        let pin_path = pin_dir.map(|d| d.join(pin_name(ifname)));
        if let Some(path) = &pin_path
            && path.exists()
        {
            match self.replace_on_pinned(ifname, path) {
                Ok(a) => return Ok(a),
                Err(e) => {
                    tracing::warn!(interface = ifname, path = %path.display(), error = %e, "pinned XDP link not reusable; removing it and attaching anew");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let link_err = |e: aya::programs::ProgramError| XdpError::Attach {
            interface: ifname.to_string(),
            reason: e.to_string(),
        };
        let prog = self.program()?;
        let id = prog.attach(ifname, mode).map_err(link_err)?;
        let link = prog.take_link(id).map_err(link_err)?;
        let fd = match FdLink::try_from(link) {
            Ok(fd) => fd,
            // Netlink attachment (kernels without XDP bpf_link): nothing to pin.
            Err(_) => {
                return Ok(Attachment {
                    interface: ifname.to_string(),
                    link: AttachedLink::Netlink,
                    replaced: false,
                });
            }
        };
        let Some(path) = pin_path else {
            return Ok(Attachment {
                interface: ifname.to_string(),
                link: AttachedLink::Fd(fd),
                replaced: false,
            });
        };
        match fd.pin(&path) {
            Ok(pinned) => Ok(Attachment {
                interface: ifname.to_string(),
                link: AttachedLink::Pinned(FdLink::from(pinned), path),
                replaced: false,
            }),
            Err(e) => {
                // Pinning consumed (and so detached) the link: attach once more, unpinned.
                tracing::warn!(interface = ifname, error = %e, "cannot pin the XDP link; a binary upgrade will re-attach instead of replacing");
                self.attach(ifname, mode, None)
            }
        }
    }

    fn replace_on_pinned(&mut self, ifname: &str, path: &Path) -> Result<Attachment, XdpError> {
        let err = |reason: String| XdpError::Attach {
            interface: ifname.to_string(),
            reason,
        };
        let pinned = PinnedLink::from_pin(path).map_err(|e| err(e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| err(e.to_string()))?;
        let prog = self.program()?;
        let id = prog.attach_to_link(link).map_err(|e| err(e.to_string()))?;
        let link = prog.take_link(id).map_err(|e| err(e.to_string()))?;
        let fd = FdLink::try_from(link).map_err(|e| err(e.to_string()))?;
        Ok(Attachment {
            interface: ifname.to_string(),
            link: AttachedLink::Pinned(fd, path.to_path_buf()),
            replaced: true,
        })
    }

    /// Runs the program once on `packet` (`BPF_PROG_TEST_RUN`) and returns its verdict.
    pub fn test_run(&mut self, packet: &[u8]) -> Result<u32, XdpError> {
        self.test_run_repeat(packet, 1)
    }

    /// Runs the program `repeat` times in a row on `packet` on one CPU; returns the last verdict.
    pub fn test_run_repeat(&mut self, packet: &[u8], repeat: u32) -> Result<u32, XdpError> {
        let prog = self.program()?;
        let fd = prog.fd().map_err(|e| XdpError::Load(e.to_string()))?;
        super::sys::prog_test_run(fd.as_fd().as_raw_fd(), packet, repeat)
            .map_err(|e| XdpError::TestRun(e.to_string()))
    }
}

/// The maps of destination addresses Arc listens on, updatable from another thread.
pub struct LocalAddrs {
    v4: HashMap<MapData, u32, u8>,
    v6: HashMap<MapData, [u8; 16], u8>,
}

impl std::fmt::Debug for LocalAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAddrs").finish_non_exhaustive()
    }
}

impl LocalAddrs {
    /// Replaces the address set (new entries first, then stale ones removed).
    pub fn set(&mut self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        for a in addrs {
            match a {
                // Keys hold the address bytes as they appear in the packet.
                IpAddr::V4(a) => v4.insert(u32::from_ne_bytes(a.octets())),
                IpAddr::V6(a) => v6.insert(a.octets()),
            };
        }
        for k in &v4 {
            self.v4.insert(k, 1, 0).map_err(map_err("arc_local_v4"))?;
        }
        for k in &v6 {
            self.v6.insert(k, 1, 0).map_err(map_err("arc_local_v6"))?;
        }
        let stale4: Vec<u32> = self
            .v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !v4.contains(k))
            .collect();
        for k in stale4 {
            self.v4.remove(&k).map_err(map_err("arc_local_v4"))?;
        }
        let stale6: Vec<[u8; 16]> = self
            .v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !v6.contains(k))
            .collect();
        for k in stale6 {
            self.v6.remove(&k).map_err(map_err("arc_local_v6"))?;
        }
        Ok(())
    }
}

/// The per-CPU counters map, readable from another thread.
pub struct Counters {
    map: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl Counters {
    /// Totals of passed, denied, syn-limited and parse-error packets, summed over CPUs.
    pub fn read(&self) -> Result<[u64; COUNTERS], XdpError> {
        read_counters(&self.map)
    }
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> Result<[u64; COUNTERS], XdpError> {
    let mut out = [0u64; COUNTERS];
    for (i, slot) in out.iter_mut().enumerate() {
        let values = map.get(&(i as u32), 0).map_err(map_err("arc_counters"))?;
        *slot = values.iter().fold(0u64, |a, v| a.wrapping_add(*v));
    }
    Ok(out)
}

/// How the program is attached to one interface.
#[derive(Debug)]
enum AttachedLink {
    /// A bpf_link pinned at the path.
    Pinned(FdLink, PathBuf),
    /// A bpf_link held only by this process.
    Fd(FdLink),
    /// A netlink attachment (old kernels); stays until detached by hand or the interface goes.
    Netlink,
}

/// The program attached to one interface.
#[derive(Debug)]
pub struct Attachment {
    interface: String,
    link: AttachedLink,
    replaced: bool,
}

impl Attachment {
    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// True when an existing pinned link was taken over (a binary upgrade).
    pub fn replaced_existing(&self) -> bool {
        self.replaced
    }

    /// True when the link is pinned in bpffs.
    pub fn pinned(&self) -> bool {
        matches!(self.link, AttachedLink::Pinned(..))
    }

    /// Detaches on final exit: a pinned link still running `program_id` is unpinned and closed;
    /// one that another process took over (an upgrade) is left to it.
    pub fn detach(self, program_id: Option<u32>) {
        match self.link {
            AttachedLink::Pinned(fd, path) => {
                let ours = fd.info().ok().map(|i| i.program_id());
                if ours.is_some() && ours == program_id {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot unpin the XDP link");
                    }
                } else {
                    tracing::info!(interface = %self.interface, "XDP link now runs another process's program; leaving it attached");
                }
                drop(fd);
            }
            AttachedLink::Fd(fd) => drop(fd),
            AttachedLink::Netlink => {}
        }
    }
}

/// Pin file name: network namespace inode and interface, so namespaces sharing one bpffs do
/// not collide.
fn pin_name(ifname: &str) -> String {
    let ns = std::fs::read_link("/proc/self/ns/net")
        .ok()
        .map(|p| {
            p.to_string_lossy()
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    format!("link-{ns}-{ifname}")
}

fn map_err(name: &str) -> impl Fn(aya::maps::MapError) -> XdpError + '_ {
    move |e| XdpError::Map(format!("{name}: {e}"))
}

/// The verifier log's last lines, when the kernel refused the program.
fn verifier_detail(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            format!(
                "{io_error}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => other.to_string(),
    }
}
