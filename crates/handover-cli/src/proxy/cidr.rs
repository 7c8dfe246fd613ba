//! `--trusted-proxy CIDR`: `10.0.0.0/8`, `::1/128`, or a plain address. The network
//! arithmetic is `ipnet`'s; this adds the plain-address form, IPv4-mapped IPv6 addresses
//! counted as IPv4, and the command line's error message.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| {
            format!("invalid network {s:?}: {why}; expected e.g. 10.0.0.0/8, ::1/128 or 127.0.0.1")
        };
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip.parse().map_err(|_| invalid("not an IP address"))?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| invalid("bad prefix length"))?,
        };
        let net = IpNet::new(net, prefix).map_err(|_| invalid("bad prefix length"))?;
        Ok(Cidr(net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_networks() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains("::1".parse().unwrap()));
        assert!(!all.contains("1.2.3.4".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten".parse::<Cidr>().is_err());
    }
}
