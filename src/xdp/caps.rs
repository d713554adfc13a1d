//! Capability check: whether this process may load and attach XDP programs, read from the
//! effective set in `/proc/self/status`.

#![forbid(unsafe_code)]

/// `CAP_NET_ADMIN` bit.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN` bit.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_BPF` bit (Linux 5.8+).
pub const CAP_BPF: u32 = 39;

/// The effective capability mask from the text of `/proc/<pid>/status`.
pub fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// `Ok(())` when `caps` allows XDP (CAP_NET_ADMIN + CAP_BPF, or CAP_SYS_ADMIN), otherwise the
/// names of what is missing.
pub fn xdp_allowed(caps: u64) -> Result<(), String> {
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_NET_ADMIN) && has(CAP_BPF)) {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    Err(format!(
        "missing {} (needs CAP_NET_ADMIN and CAP_BPF, or CAP_SYS_ADMIN)",
        missing.join(" and ")
    ))
}

/// Checks this process's effective capabilities.
pub fn check_self() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let caps = effective_caps(&status).ok_or("no CapEff line in /proc/self/status")?;
    xdp_allowed(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tarc\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }

    #[test]
    fn needs_net_admin_and_bpf_or_sys_admin() {
        assert!(xdp_allowed(1 << CAP_SYS_ADMIN).is_ok());
        assert!(xdp_allowed((1 << CAP_NET_ADMIN) | (1 << CAP_BPF)).is_ok());
        let e = xdp_allowed(1 << CAP_NET_ADMIN).unwrap_err();
        assert!(
            e.contains("CAP_BPF") && !e.contains("missing CAP_NET_ADMIN"),
            "{e}"
        );
        let e = xdp_allowed(0).unwrap_err();
        assert!(e.contains("CAP_NET_ADMIN and CAP_BPF"), "{e}");
    }
}
