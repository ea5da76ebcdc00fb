//! berth's packet filtering and NAT: one nftables table, `ip berth`, rewritten whole in
//! one transaction each time networks or published ports change (so it always matches
//! berthd's state, and a crash leaves the last consistent ruleset). Nothing outside this
//! table is touched, and the table goes when the last bridge does.
//!
//! The ruleset is written in nft's own language and loaded with `nft -f -` (Debian's
//! `nftables`): the rules read the same in the source as in `nft list table ip berth`,
//! and the crates for nftables drive this same binary through its JSON form, which is
//! several times longer for the same rules.

use super::ipam::Subnet;
use super::NetError;
use std::net::Ipv4Addr;

/// berth's table.
pub const TABLE: &str = "berth";

/// A bridge network, as the rules see it.
#[derive(Debug, Clone)]
pub struct BridgeRules {
    /// The bridge's name.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Subnet,
    /// Reaches nothing outside itself.
    pub internal: bool,
}

/// A published port, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    /// "tcp" or "udp".
    pub proto: String,
    /// The host address it listens on (None: all of them).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's port.
    pub port: u16,
}

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

/// The table for these bridges and ports (None: no bridge, no table).
pub fn ruleset(bridges: &[BridgeRules], ports: &[Dnat]) -> Option<String> {
    if bridges.is_empty() {
        return None;
    }
    let mut t = String::new();
    t.push_str(&format!("table ip {TABLE} {{\n"));
    // Published ports: traffic to any local address but loopback (which berthd's proxy
    // serves) goes to the container.
    // Containers reaching a published port through the host's address are served by
    // the proxy (as Docker's userland proxy does): their traffic is not rewritten.
    let all: Vec<String> = bridges.iter().map(|b| q(&b.bridge)).collect();
    t.push_str(&format!(
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname != {{ {} }} fib daddr type local jump publish\n  }}\n",
        all.join(", ")
    ));
    t.push_str(
        "  chain output {\n    type nat hook output priority -100; policy accept;\n    ip daddr != 127.0.0.0/8 fib daddr type local jump publish\n  }\n",
    );
    t.push_str("  chain publish {\n");
    for p in ports {
        let daddr = p
            .host_ip
            .map(|a| format!("ip daddr {a} "))
            .unwrap_or_default();
        t.push_str(&format!(
            "    {daddr}{} dport {} dnat to {}:{}\n",
            p.proto, p.host_port, p.ip, p.port
        ));
    }
    t.push_str("  }\n");
    // Outbound NAT for networks that reach outside.
    t.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for b in bridges.iter().filter(|b| !b.internal) {
        t.push_str(&format!(
            "    ip saddr {} oifname != {} masquerade\n",
            b.subnet,
            q(&b.bridge)
        ));
    }
    t.push_str("  }\n");
    // Isolation: no network reaches another; an internal one reaches nothing outside.
    t.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    for b in bridges {
        let br = q(&b.bridge);
        if b.internal {
            t.push_str(&format!("    iifname {br} oifname != {br} drop\n"));
            t.push_str(&format!("    oifname {br} iifname != {br} drop\n"));
        }
    }
    for b in bridges {
        let others: Vec<String> = bridges
            .iter()
            .filter(|o| o.bridge != b.bridge)
            .map(|o| q(&o.bridge))
            .collect();
        if !others.is_empty() {
            t.push_str(&format!(
                "    iifname {} oifname {{ {} }} drop\n",
                q(&b.bridge),
                others.join(", ")
            ));
        }
    }
    // Nothing outside reaches a container unless it answers the container or is a
    // published port (forwarding is on, and the host's own policy may accept).
    for b in bridges.iter().filter(|b| !b.internal) {
        let br = q(&b.bridge);
        t.push_str(&format!(
            "    oifname {br} iifname != {br} ct state established,related accept\n"
        ));
        t.push_str(&format!(
            "    oifname {br} iifname != {br} ct status dnat accept\n"
        ));
        t.push_str(&format!("    oifname {br} iifname != {br} drop\n"));
    }
    t.push_str("  }\n}\n");
    Some(t)
}

/// Replaces berth's table with `ruleset` (removes it for None), in one transaction.
pub fn apply(ruleset: Option<&str>) -> Result<(), NetError> {
    use std::io::Write;
    // Declaring the table first makes the delete succeed when it does not exist yet.
    let mut script = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if let Some(r) = ruleset {
        script.push_str(r);
    }
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Nft(format!("running nft (Debian's nftables package): {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(script.as_bytes())
            .map_err(|e| NetError::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Nft(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(NetError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_isolates_networks_and_publishes_ports() {
        assert_eq!(ruleset(&[], &[]), None);
        let b = |n: &str, s: &str, internal| BridgeRules {
            bridge: n.into(),
            subnet: s.parse().unwrap(),
            internal,
        };
        let r = ruleset(
            &[
                b("berth0", "172.17.0.0/16", false),
                b("br-a", "172.18.0.0/16", false),
                b("br-i", "172.19.0.0/16", true),
            ],
            &[Dnat {
                proto: "tcp".into(),
                host_ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
                host_port: 8080,
                ip: Ipv4Addr::new(172, 17, 0, 2),
                port: 80,
            }],
        )
        .unwrap();
        assert!(
            r.contains("ip daddr 127.0.0.1 tcp dport 8080 dnat to 172.17.0.2:80"),
            "{r}"
        );
        assert!(r.contains("ip saddr 172.18.0.0/16 oifname != \"br-a\" masquerade"));
        assert!(
            !r.contains("172.19.0.0/16 oifname"),
            "an internal network is not NATed"
        );
        assert!(r.contains("iifname \"br-i\" oifname != \"br-i\" drop"));
        assert!(r.contains("iifname \"berth0\" oifname { \"br-a\", \"br-i\" } drop"));
        assert!(r.contains("iifname != { \"berth0\", \"br-a\", \"br-i\" } fib daddr"));
        assert!(r.contains("oifname \"br-a\" iifname != \"br-a\" ct status dnat accept"));
        assert!(r.contains("oifname \"br-a\" iifname != \"br-a\" drop"));
    }
}
