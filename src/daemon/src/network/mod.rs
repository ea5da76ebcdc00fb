//! Docker's networks: the objects (`bridge`, `host`, `none` and user-defined bridge
//! networks), their addresses (IPAM), and the pieces a container's networking is made
//! of: a Linux bridge per network ([`link`]), berth's nftables table for NAT, published
//! ports and isolation ([`nft`]), the userland proxy behind published ports ([`ports`]),
//! the embedded DNS server of user-defined networks ([`dns`]) and the files every
//! container gets in /etc ([`etc`]).
//!
//! Networks live in `<data-root>/network/<id>.json`, leases included, written atomically;
//! what a container is connected to lives in its own record ([`NetConfig`]). The daemon
//! core (`daemon/networking.rs`) joins the two over a container's life.

pub mod dns;
pub mod etc;
pub mod ipam;
pub mod link;
pub mod nft;
pub mod ports;

use crate::errors::{Error, Result};
use ipam::{Pool, Subnet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

/// What went wrong below the API: netlink, namespaces, nftables, a host port.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error("{0}: {1}")]
    Netlink(String, String),
    /// Entering a namespace or opening a netlink socket failed.
    #[error("{0}")]
    Netns(String),
    /// nft refused the ruleset.
    #[error("nftables: {0}")]
    Nft(String),
}

impl From<NetError> for Error {
    fn from(e: NetError) -> Error {
        Error::Sandbox(format!("network: {e}"))
    }
}

/// The default bridge's name on the host.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Names a user can't give a network.
pub const PREDEFINED: &[&str] = &["bridge", "host", "none"];

/// One network, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRec {
    /// 64 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// "bridge", "host" or "null".
    pub driver: String,
    /// RFC 3339.
    pub created: String,
    /// Its subnet (bridge networks).
    pub subnet: Option<Subnet>,
    /// The bridge's own address, the containers' gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Where container addresses are taken from (default: the whole subnet).
    pub ip_range: Option<Subnet>,
    /// Reaches nothing outside itself.
    pub internal: bool,
    /// `--attachable` (accepted: every local network is).
    pub attachable: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options, as given.
    pub options: BTreeMap<String, String>,
    /// The Linux bridge.
    pub bridge: String,
    /// The MTU of its links.
    pub mtu: u32,
    /// Addresses handed out, and to whom (a container ID).
    #[serde(default)]
    pub leases: BTreeMap<Ipv4Addr, String>,
    /// The tenant that made it (None: the operator's; the predefined ones are everyone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl NetworkRec {
    /// Whether the caller sees it: the predefined networks, and its own.
    pub fn visible(&self) -> bool {
        self.predefined() || crate::tenant::sees(&self.tenant)
    }

    /// `bridge`, `host` or `none`.
    pub fn predefined(&self) -> bool {
        PREDEFINED.contains(&self.name.as_str())
    }

    /// A bridge network (the default one or a user-defined one).
    pub fn is_bridge(&self) -> bool {
        self.driver == "bridge"
    }

    /// Containers on it find each other by name (user-defined networks, as in Docker).
    pub fn has_dns(&self) -> bool {
        self.is_bridge() && self.name != "bridge"
    }
}

/// berthd's network settings (`--bip`, `--mtu`, `default-address-pools`).
#[derive(Debug, Clone)]
pub struct NetOpts {
    /// The default bridge's address and prefix (`--bip`).
    pub bip: Option<(Ipv4Addr, u8)>,
    /// Where user networks' subnets come from.
    pub pools: Vec<Pool>,
    /// The default MTU.
    pub mtu: u32,
    /// Whether the default bridge network is on (`--bridge none` turns it off: containers
    /// get no network unless they name one).
    pub default_bridge: bool,
    /// Whether berthd manages links and nftables at all (off in unit tests with fake
    /// sandboxes, which must not touch the host's network).
    pub enabled: bool,
}

impl Default for NetOpts {
    fn default() -> NetOpts {
        NetOpts {
            bip: None,
            pools: ipam::default_pools(),
            mtu: 1500,
            default_bridge: true,
            enabled: true,
        }
    }
}

/// Parses `--bip` (`a.b.c.d/len`, the bridge's own address).
pub fn parse_bip(s: &str) -> std::result::Result<(Ipv4Addr, u8), String> {
    let (a, l) = s.split_once('/').ok_or_else(|| {
        format!("--bip {s:?}: expected an address with a prefix, like 10.88.0.1/16")
    })?;
    let a: Ipv4Addr = a.parse().map_err(|_| format!("--bip {s:?}: bad address"))?;
    let l: u8 = l
        .parse()
        .ok()
        .filter(|l| (8..=30).contains(l))
        .ok_or_else(|| format!("--bip {s:?}: the prefix must be 8 to 30"))?;
    let net = Subnet::containing(a, l);
    if a == net.network() || a == net.broadcast() {
        return Err(format!(
            "--bip {s:?}: the bridge needs a host address, not the network's or broadcast"
        ));
    }
    Ok((a, l))
}

/// Reads `default-address-pools` from the config file: `[{"base": "10.10.0.0/16",
/// "size": 24}, ...]`.
pub fn parse_pools(v: &serde_json::Value) -> std::result::Result<Vec<Pool>, String> {
    let list = v
        .as_array()
        .ok_or("default-address-pools: expected a list of {\"base\": CIDR, \"size\": N}")?;
    let mut out = Vec::new();
    for p in list {
        let base: Subnet = p["base"]
            .as_str()
            .ok_or("default-address-pools: each pool needs a \"base\" CIDR")?
            .parse()
            .map_err(|e: Error| format!("default-address-pools: {e}"))?;
        let size = p["size"]
            .as_u64()
            .filter(|s| (u64::from(base.len)..=30).contains(s))
            .ok_or_else(|| {
                format!(
                    "default-address-pools: pool {base}: \"size\" must be from {} to 30",
                    base.len
                )
            })? as u8;
        out.push(Pool { base, size });
    }
    if out.is_empty() {
        return Err("default-address-pools: the list is empty".into());
    }
    Ok(out)
}

/// How a container is networked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Loopback only (`--network none`; and records from before networks existed).
    #[default]
    None,
    /// Its own namespace, connected to bridge networks (its endpoints).
    Bridge,
    /// The host's namespace (process isolation only).
    Host,
    /// Another container's namespace (the ID).
    Container(String),
}

/// A container's connection to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The network's ID.
    pub network_id: String,
    /// 64 hex digits.
    pub endpoint_id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The network's gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Its MAC address.
    pub mac: String,
    /// Other names it answers to on this network.
    pub aliases: Vec<String>,
    /// Asked for by the user (`--ip`).
    pub static_ip: bool,
    /// The interface inside the container (eth0, eth1...).
    pub ifname: String,
}

/// A port a container asks to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReq {
    /// "tcp" or "udp".
    pub proto: String,
    /// The container's port.
    pub port: u16,
    /// The host address (None: all).
    pub host_ip: Option<Ipv4Addr>,
    /// The host ports to try, first to last (0, 0: any free one).
    pub host_ports: (u16, u16),
}

/// A port published while the container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// "tcp" or "udp".
    pub proto: String,
    /// The container's port.
    pub port: u16,
    /// The host address (None: all).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port it got.
    pub host_port: u16,
}

/// What a container's record keeps of its networking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Its mode.
    pub mode: Mode,
    /// Its networks, in interface order.
    pub endpoints: Vec<Endpoint>,
    /// Ports to publish at each start.
    pub ports: Vec<PortReq>,
    /// Ports published now (while it runs).
    pub published: Vec<Published>,
    /// `--dns`.
    pub dns: Vec<String>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    pub dns_options: Vec<String>,
    /// `--add-host`: (name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// `--domainname`.
    pub domainname: String,
}

/// The networks.
pub struct Networks {
    dir: PathBuf,
    /// Settings.
    pub opts: NetOpts,
    nets: Mutex<BTreeMap<String, NetworkRec>>,
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Networks {
    /// Loads the networks under `dir`, creating the predefined ones where missing.
    pub fn open(dir: PathBuf, opts: NetOpts) -> Result<Networks> {
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("{}", dir.display())))?;
        let mut nets = BTreeMap::new();
        for e in std::fs::read_dir(&dir)
            .map_err(Error::io(format!("{}", dir.display())))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read(&p).map_err(Error::io(format!("{}", p.display())))?;
                match serde_json::from_slice::<NetworkRec>(&text) {
                    Ok(n) => {
                        nets.insert(n.id.clone(), n);
                    }
                    Err(e) => crate::log(
                        "warn",
                        "skipping an unreadable network record",
                        &[
                            ("path", &p.display().to_string()),
                            ("error", &e.to_string()),
                        ],
                    ),
                }
            }
        }
        let n = Networks {
            dir,
            opts,
            nets: Mutex::new(nets),
        };
        n.predefine()?;
        Ok(n)
    }

    fn predefine(&self) -> Result<()> {
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            let existing = self.by_name(name);
            let mut rec = match existing {
                Some(r) => r,
                None => NetworkRec {
                    id: crate::daemon::new_id(),
                    name: name.into(),
                    driver: driver.into(),
                    created: crate::daemon::now_rfc3339(),
                    subnet: None,
                    gateway: None,
                    ip_range: None,
                    internal: false,
                    attachable: false,
                    labels: BTreeMap::new(),
                    options: BTreeMap::new(),
                    bridge: String::new(),
                    mtu: self.opts.mtu,
                    leases: BTreeMap::new(),
                    tenant: None,
                },
            };
            if name == "bridge" {
                let want = self
                    .opts
                    .bip
                    .map(|(gw, len)| (Subnet::containing(gw, len), gw));
                match (want, rec.subnet) {
                    (Some((s, gw)), _) => {
                        if rec.subnet != Some(s) && !rec.leases.is_empty() {
                            return Err(Error::InvalidParameter(format!(
                                "--bip {gw}/{}: the default bridge network has containers on {}; remove them first",
                                s.len,
                                rec.subnet.map(|s| s.to_string()).unwrap_or_default()
                            )));
                        }
                        rec.subnet = Some(s);
                        rec.gateway = Some(gw);
                    }
                    (None, Some(_)) => {}
                    (None, None) => {
                        let s = self.free_subnet(&rec.id)?;
                        rec.subnet = Some(s);
                        rec.gateway = Some(s.first_host());
                    }
                }
                rec.bridge = DEFAULT_BRIDGE.into();
                rec.mtu = self.opts.mtu;
            }
            self.save(&rec)?;
            self.nets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rec.id.clone(), rec);
        }
        Ok(())
    }

    /// A subnet from the pools that overlaps no other network and no host route.
    fn free_subnet(&self, except: &str) -> Result<Subnet> {
        let mut taken: Vec<Subnet> = self
            .all()
            .into_iter()
            .filter(|n| n.id != except)
            .filter_map(|n| n.subnet)
            .collect();
        taken.extend(ipam::host_routes());
        ipam::choose(&self.opts.pools, &taken).ok_or_else(|| {
            Error::Unavailable(
                "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
            )
        })
    }

    /// Writes a network's record atomically.
    pub fn save(&self, n: &NetworkRec) -> Result<()> {
        crate::persist::write_json(
            &self.dir.join(format!("{}.json", n.id)),
            n,
            &format!("saving network {}", n.name),
        )
    }

    /// The networks the caller sees ([`NetworkRec::visible`]).
    pub fn visible(&self) -> Vec<NetworkRec> {
        self.all().into_iter().filter(NetworkRec::visible).collect()
    }

    /// Every network (berthd's own bookkeeping: bridges, subnets, rules).
    pub fn all(&self) -> Vec<NetworkRec> {
        self.nets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn by_name(&self, name: &str) -> Option<NetworkRec> {
        self.all().into_iter().find(|n| n.name == name)
    }

    /// A network by ID, name or unique ID prefix (as dockerd finds them).
    pub fn find(&self, key: &str) -> Result<NetworkRec> {
        let all = self.visible();
        if let Some(n) = all.iter().find(|n| n.id == key) {
            return Ok(n.clone());
        }
        if let Some(n) = all.iter().find(|n| n.name == key) {
            return Ok(n.clone());
        }
        let hits: Vec<&NetworkRec> = all
            .iter()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match hits.len() {
            1 => Ok(hits[0].clone()),
            0 => Err(Error::NotFound(format!("network {key} not found"))),
            _ => Err(Error::InvalidParameter(format!(
                "network {key} is ambiguous ({} matches found based on ID prefix)",
                hits.len()
            ))),
        }
    }

    /// Checks a create request and builds the network's record (not yet saved or
    /// set up).
    pub fn plan(&self, req: &crate::models::docker::NetworkCreateRequest) -> Result<NetworkRec> {
        let name = req.name.clone();
        if !valid_name(&name) {
            return Err(Error::InvalidParameter(format!(
                "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if PREDEFINED.contains(&name.as_str()) {
            return Err(Error::InvalidParameter(format!(
                "operation is not permitted on predefined {name} network"
            )));
        }
        if let Some(t) = crate::tenant::current() {
            // Addresses and bridge names are the host's: a tenant's network takes a free
            // subnet from berthd's pools, under berthd's name.
            let custom_ipam = req
                .ipam
                .as_ref()
                .is_some_and(|i| i.config.as_ref().is_some_and(|c| !c.is_empty()));
            if custom_ipam || req.options.as_ref().is_some_and(|o| !o.is_empty()) {
                return Err(Error::Forbidden(format!(
                    "tenant {t}: subnets, gateways and driver options of a network are for the operator only"
                )));
            }
        }
        if self.by_name(&name).is_some() {
            return Err(Error::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        match req.driver.as_deref().unwrap_or("") {
            "" | "bridge" => {}
            d @ ("host" | "null") => {
                return Err(Error::InvalidParameter(format!(
                    "only one instance of \"{d}\" network is allowed"
                )))
            }
            d => {
                return Err(Error::NotImplemented(format!(
                    "the {d:?} network driver (berth has \"bridge\")"
                )))
            }
        }
        if req.enable_ipv6.unwrap_or(false) {
            return Err(Error::NotImplemented(
                "EnableIPv6 (IPv6 networks; berth's networks are IPv4)".into(),
            ));
        }
        if req.ingress.unwrap_or(false) {
            return Err(Error::NotImplemented(
                "Ingress (a swarm's routing mesh)".into(),
            ));
        }
        let mut mtu = self.opts.mtu;
        let mut bridge = None;
        let options: BTreeMap<String, String> = req
            .options
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (k, v) in &options {
            match k.as_str() {
                "com.docker.network.driver.mtu" => {
                    mtu = v.parse().ok().filter(|m| (68..=65535).contains(m)).ok_or_else(|| {
                        Error::InvalidParameter(format!("invalid MTU {v:?}: 68 to 65535"))
                    })?
                }
                "com.docker.network.bridge.name" => {
                    if v.is_empty() || v.len() > 15 || v.contains(['/', ' ']) {
                        return Err(Error::InvalidParameter(format!(
                            "invalid bridge name {v:?}: up to 15 characters, no '/' or spaces"
                        )));
                    }
                    if self.all().iter().any(|n| n.bridge == *v) {
                        return Err(Error::Conflict(format!("bridge {v} is used by another network")));
                    }
                    bridge = Some(v.clone());
                }
                other => {
                    return Err(Error::NotImplemented(format!(
                        "the bridge driver option {other:?} (berth applies com.docker.network.driver.mtu and com.docker.network.bridge.name)"
                    )))
                }
            }
        }
        let ipam = req.ipam.clone().unwrap_or_default();
        if !matches!(ipam.driver.as_deref(), None | Some("") | Some("default")) {
            return Err(Error::NotImplemented(format!(
                "the IPAM driver {:?} (berth has \"default\")",
                ipam.driver.unwrap_or_default()
            )));
        }
        if ipam.options.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(Error::NotImplemented("IPAM.Options".into()));
        }
        let configs = ipam.config.unwrap_or_default();
        if configs.len() > 1 {
            return Err(Error::NotImplemented(
                "more than one IPAM.Config (one IPv4 subnet per network)".into(),
            ));
        }
        let id = crate::daemon::new_id();
        let (subnet, gateway, ip_range) = match configs.first() {
            Some(c) if c.subnet.as_deref().is_some_and(|s| !s.is_empty()) => {
                if c.auxiliary_addresses
                    .as_ref()
                    .is_some_and(|a| !a.is_empty())
                {
                    return Err(Error::NotImplemented(
                        "IPAM.Config.AuxiliaryAddresses".into(),
                    ));
                }
                let s: Subnet = c.subnet.as_deref().unwrap_or_default().parse()?;
                if s.len > 30 {
                    return Err(Error::InvalidParameter(format!(
                        "subnet {s} is too small: a /30 at most"
                    )));
                }
                if let Some(o) = self
                    .all()
                    .iter()
                    .find(|n| n.subnet.is_some_and(|x| x.overlaps(&s)))
                {
                    return Err(Error::Conflict(format!(
                        "Pool overlaps with other one on this address space (network {} has {})",
                        o.name,
                        o.subnet.map(|x| x.to_string()).unwrap_or_default()
                    )));
                }
                let gw = match c.gateway.as_deref().filter(|g| !g.is_empty()) {
                    Some(g) => {
                        let g: Ipv4Addr = g.parse().map_err(|_| {
                            Error::InvalidParameter(format!("invalid gateway address {g:?}"))
                        })?;
                        if !s.contains(g) || g == s.network() || g == s.broadcast() {
                            return Err(Error::InvalidParameter(format!(
                                "gateway {g} is not a host address of subnet {s}"
                            )));
                        }
                        g
                    }
                    None => s.first_host(),
                };
                let range = match c.ip_range.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => {
                        let r: Subnet = r.parse()?;
                        if !s.covers(&r) {
                            return Err(Error::InvalidParameter(format!(
                                "ip range {r} is not inside subnet {s}"
                            )));
                        }
                        Some(r)
                    }
                    None => None,
                };
                (s, gw, range)
            }
            Some(c)
                if c.gateway.as_deref().is_some_and(|g| !g.is_empty())
                    || c.ip_range.as_deref().is_some_and(|g| !g.is_empty()) =>
            {
                return Err(Error::InvalidParameter(
                    "a gateway or an ip range needs a subnet (--subnet)".into(),
                ))
            }
            _ => {
                let s = self.free_subnet("")?;
                (s, s.first_host(), None)
            }
        };
        Ok(NetworkRec {
            bridge: bridge.unwrap_or_else(|| format!("br-{}", &id[..12])),
            id,
            name,
            driver: "bridge".into(),
            created: crate::daemon::now_rfc3339(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range,
            internal: req.internal.unwrap_or(false),
            attachable: req.attachable.unwrap_or(false),
            labels: req.labels.clone().unwrap_or_default().into_iter().collect(),
            options,
            mtu,
            leases: BTreeMap::new(),
            tenant: crate::tenant::current(),
        })
    }

    /// Adds a planned network (saved first).
    pub fn insert(&self, n: NetworkRec) -> Result<()> {
        self.save(&n)?;
        self.nets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n.id.clone(), n);
        Ok(())
    }

    /// Forgets a network (its record file too); refused while it has leases.
    pub fn delete(&self, id: &str) -> Result<()> {
        let mut map = self.nets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(id).filter(|n| !n.leases.is_empty()) {
            return Err(Error::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.name, n.id
            )));
        }
        let p = self.dir.join(format!("{id}.json"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("{}", p.display()))(e)),
        }
        map.remove(id);
        Ok(())
    }

    /// Takes an address on network `id` for container `owner` (saved before it returns).
    pub fn lease(
        &self,
        id: &str,
        owner: &str,
        want: Option<Ipv4Addr>,
    ) -> Result<(NetworkRec, Ipv4Addr)> {
        let mut map = self.nets.lock().unwrap_or_else(|e| e.into_inner());
        let n = map
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("network {id} not found")))?;
        let subnet = n.subnet.ok_or_else(|| {
            Error::InvalidParameter(format!("network {} hands out no addresses", n.name))
        })?;
        let mut next = n.clone();
        let ip = ipam::allocate(
            &subnet,
            next.ip_range.as_ref(),
            next.gateway,
            &mut next.leases,
            owner,
            want,
        )?;
        self.save(&next)?;
        map.insert(id.to_owned(), next.clone());
        Ok((next, ip))
    }

    /// Gives back every address held by a container not in `known` (one a crashed
    /// berthd was removing); returns how many.
    pub fn release_unknown(&self, known: &std::collections::HashSet<String>) -> usize {
        let mut map = self.nets.lock().unwrap_or_else(|e| e.into_inner());
        let mut freed = 0;
        let ids: Vec<String> = map.keys().cloned().collect();
        for id in ids {
            let n = &map[&id];
            let stale = n.leases.values().filter(|o| !known.contains(*o)).count();
            if stale == 0 {
                continue;
            }
            let mut next = n.clone();
            next.leases.retain(|_, o| known.contains(o));
            if self.save(&next).is_ok() {
                freed += stale;
                map.insert(id, next);
            }
        }
        freed
    }

    /// Gives back container `owner`'s address on network `id` (and any other it holds
    /// there).
    pub fn release(&self, id: &str, owner: &str) -> Result<()> {
        let mut map = self.nets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(n) = map.get(id) else {
            return Ok(());
        };
        if !n.leases.values().any(|o| o == owner) {
            return Ok(());
        }
        let mut next = n.clone();
        next.leases.retain(|_, o| o != owner);
        self.save(&next)?;
        map.insert(id.to_owned(), next);
        Ok(())
    }
}

/// Docker's MAC for an address: 02:42 and the address's four bytes.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A MAC address as text.
pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

/// The host-side name of a container's veth on a network (stable, so that a restarted
/// berthd can find and remove it): "vb" and 10 hex digits of the two IDs.
pub fn veth_name(ctr: &str, net: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ctr.bytes().chain(net.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("vb{:010x}", h & 0xff_ffff_ffff)
}

/// The tap of a microVM container `ctr` on network `net` ("tb" and ten hex digits).
pub fn tap_name(ctr: &str, net: &str) -> String {
    format!("tb{}", &veth_name(ctr, net)[2..])
}

/// Whether link `name` is one berth names after a container (a veth's host end or a tap).
pub fn is_endpoint_link(name: &str) -> bool {
    name.len() == 12
        && (name.starts_with("vb") || name.starts_with("tb"))
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::docker;

    fn req(name: &str) -> docker::NetworkCreateRequest {
        docker::NetworkCreateRequest {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn networks_are_predefined_created_checked_and_persisted() {
        let dir = std::env::temp_dir().join(format!("berth-net-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = NetOpts {
            bip: Some((Ipv4Addr::new(10, 200, 0, 1), 24)),
            ..Default::default()
        };
        let n = Networks::open(dir.clone(), opts.clone()).unwrap();
        let bridge = n.find("bridge").unwrap();
        assert_eq!(bridge.subnet.unwrap().to_string(), "10.200.0.0/24");
        assert_eq!(bridge.bridge, DEFAULT_BRIDGE);
        assert!(n.find("host").is_ok() && n.find("none").is_ok());
        // Names and drivers.
        assert!(n.plan(&req("bridge")).is_err());
        assert!(n.plan(&req("-x")).is_err());
        let mut r = req("o");
        r.driver = Some("overlay".into());
        assert!(matches!(n.plan(&r), Err(Error::NotImplemented(_))));
        let mut r = req("o");
        r.options = Some(
            [(
                "com.docker.network.bridge.enable_icc".to_string(),
                "false".to_string(),
            )]
            .into(),
        );
        assert!(matches!(n.plan(&r), Err(Error::NotImplemented(m)) if m.contains("enable_icc")));
        // A subnet: host bits, overlap, gateway, range.
        let sub = |s: &str, gw: Option<&str>, range: Option<&str>| {
            let mut r = req("s");
            r.ipam = Some(docker::Ipam {
                config: Some(vec![docker::IpamConfig {
                    subnet: Some(s.into()),
                    gateway: gw.map(Into::into),
                    ip_range: range.map(Into::into),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            n.plan(&r)
        };
        assert!(sub("10.200.0.0/16", None, None)
            .unwrap_err()
            .to_string()
            .contains("overlaps"));
        assert!(sub("10.9.0.1/24", None, None).is_err());
        assert!(sub("10.9.0.0/24", Some("10.9.1.1"), None).is_err());
        assert!(sub("10.9.0.0/24", None, Some("10.8.0.0/25")).is_err());
        let s = sub("10.9.0.0/24", Some("10.9.0.254"), Some("10.9.0.128/25")).unwrap();
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 9, 0, 254)));
        n.insert(s.clone()).unwrap();
        let (_, ip) = n.lease(&s.id, "c1", None).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 9, 0, 128));
        // A chosen subnet avoids the others; a second "s" is a conflict.
        let auto = n.plan(&req("auto")).unwrap();
        assert!(!auto
            .subnet
            .unwrap()
            .overlaps(&"10.200.0.0/24".parse().unwrap()));
        assert!(matches!(n.plan(&req("s")), Err(Error::Conflict(_))));
        // Reopened: the same networks, IDs and leases.
        drop(n);
        let n = Networks::open(dir.clone(), opts).unwrap();
        assert_eq!(n.find("bridge").unwrap().id, bridge.id);
        let s2 = n.find("s").unwrap();
        assert_eq!(
            s2.leases
                .get(&Ipv4Addr::new(10, 9, 0, 128))
                .map(String::as_str),
            Some("c1")
        );
        let (_, ip) = n.lease(&s.id, "c2", None).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 9, 0, 129));
        n.release(&s.id, "c1").unwrap();
        assert_eq!(n.find(&s.id[..5]).unwrap().leases.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn addresses_of_containers_that_no_longer_exist_are_released() {
        let dir = std::env::temp_dir().join(format!("berth-net-rel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = NetOpts {
            bip: Some((Ipv4Addr::new(10, 201, 0, 1), 24)),
            ..Default::default()
        };
        let n = Networks::open(dir.clone(), opts.clone()).unwrap();
        let id = n.find("bridge").unwrap().id;
        let (_, kept) = n.lease(&id, "alive", None).unwrap();
        n.lease(&id, "gone", None).unwrap();
        let known: std::collections::HashSet<String> = ["alive".to_owned()].into();
        assert_eq!(n.release_unknown(&known), 1);
        assert_eq!(n.release_unknown(&known), 0);
        // Saved: a reopened store agrees.
        let again = Networks::open(dir.clone(), opts).unwrap();
        let leases = again.find("bridge").unwrap().leases;
        assert_eq!(leases.len(), 1);
        assert_eq!(leases.get(&kept).map(String::as_str), Some("alive"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_of_links_and_macs() {
        let v = veth_name("a".repeat(64).as_str(), "b");
        assert!(v.len() <= 15 && v.starts_with("vb"), "{v}");
        assert_ne!(v, veth_name("a", "c"));
        let m = mac_of(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac_text(m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(m));
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert!(parse_bip("10.1.0.1/16").is_ok());
        assert!(parse_bip("10.1.0.0/16").is_err());
        assert!(parse_bip("10.1.0.1").is_err());
    }
}
