//! Interface selection for `xdp.interface: auto`: the interfaces that carry the listeners'
//! bind addresses. An unspecified bind address (`0.0.0.0`, `::`) means every interface that is
//! up, except loopback.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// Interface name.
    pub name: String,
    /// Address assigned to it (None for link-level entries).
    pub addr: Option<IpAddr>,
    /// `IFF_UP` is set.
    pub up: bool,
    /// `IFF_LOOPBACK` is set.
    pub loopback: bool,
}

/// Chooses the interfaces for the given listener addresses from `ifaddrs` (pure).
pub fn select(listeners: &[SocketAddr], ifaddrs: &[IfAddr]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for l in listeners {
        let ip = l.ip();
        for i in ifaddrs {
            let wanted = if ip.is_unspecified() {
                i.up && !i.loopback
            } else {
                i.addr == Some(ip)
            };
            if wanted {
                out.insert(i.name.clone());
            }
        }
    }
    out.into_iter().collect()
}

/// The destination addresses Arc accepts connections on: each listener's bind address, or for
/// a wildcard bind every local address of that family (`::` also takes IPv4, as a dual-stack
/// socket does). Sorted, without duplicates.
pub fn listener_addrs(listeners: &[SocketAddr], ifaddrs: &[IfAddr]) -> Vec<IpAddr> {
    let mut out = BTreeSet::new();
    for l in listeners {
        match l.ip() {
            IpAddr::V4(a) if a.is_unspecified() => {
                out.extend(
                    ifaddrs
                        .iter()
                        .filter_map(|i| i.addr)
                        .filter(IpAddr::is_ipv4),
                );
            }
            IpAddr::V6(a) if a.is_unspecified() => {
                out.extend(ifaddrs.iter().filter_map(|i| i.addr));
            }
            ip => {
                out.insert(ip);
            }
        }
    }
    out.into_iter().collect()
}

/// Every address of every interface of this network namespace (`getifaddrs`).
pub fn list() -> std::io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_name.is_null() {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            let flags = ifa.ifa_flags;
            out.push(IfAddr {
                name,
                // SAFETY: ifa_addr is null or points at a sockaddr of its family's size.
                addr: unsafe { sockaddr_ip(ifa.ifa_addr) },
                up: flags & libc::IFF_UP as u32 != 0,
                loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
            });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// # Safety
/// `sa` must be null or point at a valid sockaddr whose storage matches its family.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: AF_INET entries are sockaddr_in.
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6 entries are sockaddr_in6.
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifa(name: &str, addr: &str, up: bool, loopback: bool) -> IfAddr {
        IfAddr {
            name: name.into(),
            addr: addr.parse().ok(),
            up,
            loopback,
        }
    }

    #[test]
    fn unspecified_means_every_up_non_loopback_interface() {
        let ifs = [
            ifa("lo", "127.0.0.1", true, true),
            ifa("eth0", "192.0.2.10", true, false),
            ifa("eth1", "198.51.100.1", false, false),
            ifa("eth2", "fd00::1", true, false),
        ];
        let l: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(select(&[l], &ifs), vec!["eth0", "eth2"]);
    }

    #[test]
    fn a_specific_address_selects_its_interface() {
        let ifs = [
            ifa("lo", "127.0.0.1", true, true),
            ifa("eth0", "192.0.2.10", true, false),
            ifa("eth2", "fd00::1", true, false),
        ];
        let a: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let b: SocketAddr = "[fd00::1]:443".parse().unwrap();
        assert_eq!(select(&[a, b], &ifs), vec!["eth0", "eth2"]);
        let none: SocketAddr = "203.0.113.1:80".parse().unwrap();
        assert!(select(&[none], &ifs).is_empty());
    }

    #[test]
    fn listener_addresses_expand_wildcards_by_family() {
        let ifs = [
            ifa("lo", "127.0.0.1", true, true),
            ifa("eth0", "192.0.2.10", true, false),
            ifa("eth0", "fd00::1", true, false),
        ];
        let v4: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let ips = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        assert_eq!(
            listener_addrs(&[v4], &ifs),
            ips(&["127.0.0.1", "192.0.2.10"])
        );
        let v6: SocketAddr = "[::]:80".parse().unwrap();
        assert_eq!(
            listener_addrs(&[v6], &ifs),
            ips(&["127.0.0.1", "192.0.2.10", "fd00::1"])
        );
        let one: SocketAddr = "192.0.2.10:443".parse().unwrap();
        assert_eq!(listener_addrs(&[one, one], &ifs), ips(&["192.0.2.10"]));
    }

    #[test]
    fn lists_this_namespace() {
        let all = list().unwrap();
        assert!(all.iter().any(|i| i.loopback), "{all:?}");
    }
}
