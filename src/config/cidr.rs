//! Source CIDRs of `xdp.deny_cidrs`: parsing with clear errors, and the prefix/address form the
//! program's LPM tries use. Pure: no sockets, no clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One deny-list entry: network address (host bits zero) and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cidr {
    /// IPv4 network, prefix 0..=32.
    V4(Ipv4Addr, u8),
    /// IPv6 network, prefix 0..=128.
    V6(Ipv6Addr, u8),
}

impl Cidr {
    /// Whether `addr` falls inside this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Cidr::V4(net, len), IpAddr::V4(a)) => mask_v4(u32::from(a), *len) == u32::from(*net),
            (Cidr::V6(net, len), IpAddr::V6(a)) => mask_v6(u128::from(a), *len) == u128::from(*net),
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cidr::V4(a, l) => write!(f, "{a}/{l}"),
            Cidr::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}

fn mask_v4(a: u32, len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => a,
        l => a & (u32::MAX << (32 - u32::from(l))),
    }
}

fn mask_v6(a: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => a,
        l => a & (u128::MAX << (128 - u32::from(l))),
    }
}

/// Parses `addr/len`, or a bare address (a single host). Host bits set below the prefix are
/// refused, naming the network that was probably meant.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty CIDR".into());
    }
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| format!("invalid CIDR \"{text}\": \"{addr_text}\" is not an IP address"))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max && !l.starts_with('+') => n,
            _ => {
                return Err(format!(
                    "invalid CIDR \"{text}\": prefix length must be 0 to {max}"
                ));
            }
        },
    };
    let cidr = match addr {
        IpAddr::V4(a) => Cidr::V4(Ipv4Addr::from(mask_v4(u32::from(a), len)), len),
        IpAddr::V6(a) => Cidr::V6(Ipv6Addr::from(mask_v6(u128::from(a), len)), len),
    };
    let same = match (cidr, addr) {
        (Cidr::V4(n, _), IpAddr::V4(a)) => n == a,
        (Cidr::V6(n, _), IpAddr::V6(a)) => n == a,
        _ => false,
    };
    if !same {
        return Err(format!(
            "invalid CIDR \"{text}\": host bits are set (the network is {cidr})"
        ));
    }
    Ok(cidr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_hosts() {
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Ok(Cidr::V4(Ipv4Addr::new(10, 0, 0, 0), 8))
        );
        assert_eq!(
            parse_cidr("192.0.2.7"),
            Ok(Cidr::V4(Ipv4Addr::new(192, 0, 2, 7), 32))
        );
        assert_eq!(
            parse_cidr("2001:db8::/32"),
            Ok(Cidr::V6("2001:db8::".parse().unwrap(), 32))
        );
        assert_eq!(parse_cidr("::1"), Ok(Cidr::V6(Ipv6Addr::LOCALHOST, 128)));
        assert_eq!(
            parse_cidr("0.0.0.0/0"),
            Ok(Cidr::V4(Ipv4Addr::UNSPECIFIED, 0))
        );
    }

    #[test]
    fn refuses_bad_syntax_with_reasons() {
        assert!(parse_cidr("").unwrap_err().contains("empty"));
        assert!(parse_cidr("10.0.0/8").unwrap_err().contains("not an IP"));
        assert!(parse_cidr("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(parse_cidr("::/129").unwrap_err().contains("0 to 128"));
        assert!(parse_cidr("10.0.0.0/x").unwrap_err().contains("prefix"));
        assert!(parse_cidr("10.0.0.0/+8").unwrap_err().contains("prefix"));
        let e = parse_cidr("10.1.2.3/8").unwrap_err();
        assert!(e.contains("host bits") && e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn contains_matches_the_prefix_only() {
        let c = parse_cidr("198.51.100.0/24").unwrap();
        assert!(c.contains("198.51.100.200".parse().unwrap()));
        assert!(!c.contains("198.51.101.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let v6 = parse_cidr("fd00:1::/64").unwrap();
        assert!(v6.contains("fd00:1::5".parse().unwrap()));
        assert!(!v6.contains("fd00:2::5".parse().unwrap()));
    }
}
