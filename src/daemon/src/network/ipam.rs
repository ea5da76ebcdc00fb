//! IPv4 subnets and address allocation. Small enough to write here: a subnet is an
//! address and a prefix length, and allocation walks the range for the first address
//! no lease holds (leases are persisted with the network, so an address is never handed
//! out twice, across restarts too).

use crate::errors::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// An IPv4 subnet, `a.b.c.d/len`, with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub len: u8,
}

impl TryFrom<String> for Subnet {
    type Error = Error;
    fn try_from(s: String) -> Result<Subnet> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Subnet {
    type Err = Error;
    /// `a.b.c.d/len`; host bits must be clear (as Docker insists for `--subnet`).
    fn from_str(s: &str) -> Result<Subnet> {
        let bad = || Error::InvalidParameter(format!("invalid CIDR address: {s}"));
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let n = Subnet { addr, len };
        if n.network() != addr {
            return Err(Error::InvalidParameter(format!(
                "invalid subnet {s}: it has host bits set (did you mean {}?)",
                Subnet::containing(addr, len)
            )));
        }
        Ok(n)
    }
}

impl Subnet {
    /// The subnet of `len` bits that holds `addr`.
    pub fn containing(addr: Ipv4Addr, len: u8) -> Subnet {
        let s = Subnet { addr, len };
        Subnet {
            addr: s.network(),
            len,
        }
    }

    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `a` is inside.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, o: &Subnet) -> bool {
        let len = self.len.min(o.len);
        Subnet::containing(self.addr, len) == Subnet::containing(o.addr, len)
    }

    /// Whether `o` lies wholly inside.
    pub fn covers(&self, o: &Subnet) -> bool {
        o.len >= self.len && self.contains(o.addr)
    }

    /// The first usable host address (the conventional gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + u32::from(self.len < 31))
    }

    /// The `i`th subnet of `len` bits inside this one, if there is one.
    pub fn nth(&self, len: u8, i: u32) -> Option<Subnet> {
        if len < self.len || len > 32 {
            return None;
        }
        let count = 1u64 << (len - self.len);
        if u64::from(i) >= count {
            return None;
        }
        let step = if len == 0 { 0 } else { 1u64 << (32 - len) };
        let a = u64::from(u32::from(self.network())) + u64::from(i) * step;
        Some(Subnet {
            addr: Ipv4Addr::from(a as u32),
            len,
        })
    }
}

/// An address pool subnets are carved from (`default-address-pools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The pool.
    pub base: Subnet,
    /// The prefix length of each network taken from it.
    pub size: u8,
}

/// Docker's default pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
pub fn default_pools() -> Vec<Pool> {
    vec![
        Pool {
            base: Subnet {
                addr: Ipv4Addr::new(172, 17, 0, 0),
                len: 16,
            },
            size: 16,
        },
        Pool {
            base: Subnet {
                addr: Ipv4Addr::new(172, 18, 0, 0),
                len: 15,
            },
            size: 16,
        },
        Pool {
            base: Subnet {
                addr: Ipv4Addr::new(172, 20, 0, 0),
                len: 14,
            },
            size: 16,
        },
        Pool {
            base: Subnet {
                addr: Ipv4Addr::new(172, 24, 0, 0),
                len: 13,
            },
            size: 16,
        },
        Pool {
            base: Subnet {
                addr: Ipv4Addr::new(192, 168, 0, 0),
                len: 16,
            },
            size: 20,
        },
    ]
}

/// The first subnet from the pools that overlaps none of `taken` (other networks'
/// subnets and the host's routes).
pub fn choose(pools: &[Pool], taken: &[Subnet]) -> Option<Subnet> {
    for p in pools {
        let mut i = 0;
        while let Some(s) = p.base.nth(p.size, i) {
            if !taken.iter().any(|t| t.overlaps(&s)) {
                return Some(s);
            }
            i += 1;
        }
    }
    None
}

/// The host's IPv4 routes' destinations (from /proc/net/route), default route excluded.
pub fn host_routes() -> Vec<Subnet> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc/net/route prints the words in host (little-endian) order.
            let (dest, mask) = (u32::from_be(dest), u32::from_be(mask));
            (mask != 0).then(|| Subnet {
                addr: Ipv4Addr::from(dest),
                len: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// Takes an address for `owner`: `want` if given (it must be in the subnet, free, and
/// not the gateway, network or broadcast address), else the first free one in `range`
/// (or the whole subnet).
pub fn allocate(
    subnet: &Subnet,
    range: Option<&Subnet>,
    gateway: Option<Ipv4Addr>,
    leases: &mut BTreeMap<Ipv4Addr, String>,
    owner: &str,
    want: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let reserved = |a: Ipv4Addr| {
        Some(a) == gateway
            || (subnet.len < 31 && (a == subnet.network() || a == subnet.broadcast()))
    };
    if let Some(a) = want {
        if !subnet.contains(a) {
            return Err(Error::InvalidParameter(format!(
                "requested IP address {a} is not in the network's subnet {subnet}"
            )));
        }
        if reserved(a) || leases.contains_key(&a) {
            return Err(Error::Conflict(format!(
                "Address already in use: {a} is taken on this network"
            )));
        }
        leases.insert(a, owner.to_owned());
        return Ok(a);
    }
    let r = range.unwrap_or(subnet);
    let (lo, hi) = (u32::from(r.network()), u32::from(r.broadcast()));
    for n in lo..=hi {
        let a = Ipv4Addr::from(n);
        if !reserved(a) && !leases.contains_key(&a) {
            leases.insert(a, owner.to_owned());
            return Ok(a);
        }
    }
    Err(Error::Unavailable(format!(
        "no available IPv4 addresses on the network's range {r}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Subnet {
        x.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_refuse_host_bits() {
        assert_eq!(s("10.1.0.0/16").to_string(), "10.1.0.0/16");
        let e = "10.1.2.3/16".parse::<Subnet>().unwrap_err().to_string();
        assert!(e.contains("host bits") && e.contains("10.1.0.0/16"), "{e}");
        assert!("10.1.0.0".parse::<Subnet>().is_err());
        assert!("10.1.0.0/33".parse::<Subnet>().is_err());
        assert!(s("10.0.0.0/8").overlaps(&s("10.5.0.0/16")));
        assert!(!s("10.0.0.0/16").overlaps(&s("10.1.0.0/16")));
        assert!(s("10.0.0.0/8").covers(&s("10.5.0.0/16")));
        assert!(!s("10.5.0.0/16").covers(&s("10.0.0.0/8")));
        assert_eq!(s("10.0.0.0/24").broadcast(), Ipv4Addr::new(10, 0, 0, 255));
        assert_eq!(s("10.0.0.0/24").first_host(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn pools_skip_what_is_taken() {
        let pools = default_pools();
        assert_eq!(choose(&pools, &[]), Some(s("172.17.0.0/16")));
        let taken = [s("172.17.0.0/16"), s("172.16.0.0/12")];
        assert_eq!(choose(&pools, &taken), Some(s("192.168.0.0/20")));
        let small = [Pool {
            base: s("10.9.0.0/23"),
            size: 24,
        }];
        assert_eq!(choose(&small, &[s("10.9.0.0/24")]), Some(s("10.9.1.0/24")));
        assert_eq!(choose(&small, &[s("10.9.0.0/23")]), None);
    }

    #[test]
    fn addresses_are_never_handed_out_twice() {
        let net = s("10.0.0.0/29");
        let gw = Some(Ipv4Addr::new(10, 0, 0, 1));
        let mut leases = BTreeMap::new();
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| allocate(&net, None, gw, &mut leases, &format!("c{i}"), None).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 0, 0, 6));
        let e = allocate(&net, None, gw, &mut leases, "x", None).unwrap_err();
        assert!(e.to_string().contains("no available"), "{e}");
        leases.remove(&Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(
            allocate(&net, None, gw, &mut leases, "y", None).unwrap(),
            Ipv4Addr::new(10, 0, 0, 4)
        );
        // Static addresses: inside, free, not the gateway.
        let mut leases = BTreeMap::new();
        let want = |a| allocate(&net, None, gw, &mut BTreeMap::new(), "z", Some(a));
        assert!(want(Ipv4Addr::new(10, 0, 1, 2)).is_err());
        assert!(want(Ipv4Addr::new(10, 0, 0, 1)).is_err());
        assert!(want(Ipv4Addr::new(10, 0, 0, 7)).is_err());
        allocate(
            &net,
            None,
            gw,
            &mut leases,
            "a",
            Some(Ipv4Addr::new(10, 0, 0, 5)),
        )
        .unwrap();
        assert!(allocate(
            &net,
            None,
            gw,
            &mut leases,
            "b",
            Some(Ipv4Addr::new(10, 0, 0, 5))
        )
        .is_err());
        // A range.
        let r = s("10.0.0.4/30");
        assert_eq!(
            allocate(&net, Some(&r), gw, &mut leases, "c", None).unwrap(),
            Ipv4Addr::new(10, 0, 0, 4)
        );
    }
}
