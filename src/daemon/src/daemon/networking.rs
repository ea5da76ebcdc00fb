//! A container's networking over its life: planned at create (its networks, addresses
//! and ports, leases taken), set up at each start (ports bound before the sandbox boots,
//! then a veth per network into the container's namespace between the agent's create and
//! start), torn down at each exit, and released at remove. The network objects
//! themselves are in [`crate::network`].

use super::{Ctr, Daemon, Record};
use crate::errors::{Error, Result};
use crate::models::docker;
use crate::network::{self, dns, etc, link, nft, ports, Endpoint, Mode, NetConfig, NetworkRec};
use crate::sandbox::Isolation;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

/// What berthd holds for networks while it runs.
#[derive(Default)]
pub struct NetRuntime {
    /// Published ports' proxies, by container ID.
    pub proxies: Mutex<HashMap<String, Vec<ports::Proxy>>>,
    /// DNS servers, by network ID.
    pub dns: Mutex<HashMap<String, dns::Server>>,
    /// Serialises changes to links and the nftables table.
    pub lock: Mutex<()>,
    /// Containers whose networking is up (from their start's plugging to their exit's
    /// teardown): the ones the ruleset and the default bridge are kept for.
    plugged: Mutex<std::collections::HashSet<String>>,
    /// What this berthd last put in place (touched only under `lock`).
    applied: Mutex<Applied>,
}

/// The ruleset and default bridge this berthd put in place, so that a berthd with no
/// networks in use never touches the host's nftables or links (another berthd in the same
/// namespace, a test's, keeps its own).
#[derive(Default)]
struct Applied {
    /// The ruleset last loaded (None: nothing known yet).
    rules: Option<Option<String>>,
    /// This berthd brought the default bridge up.
    default_bridge: bool,
    /// A removal of the unused default bridge is scheduled.
    reaping: bool,
}

/// How long the default bridge (and its rules) outlive its last container: back-to-back
/// `run --rm`s reuse them instead of creating and deleting a bridge and rewriting the
/// table each time (deleting a bridge alone takes tens of milliseconds).
const DEFAULT_BRIDGE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn bad(m: impl Into<String>) -> Error {
    Error::InvalidParameter(m.into())
}

/// The create body's parts networking reads.
pub struct NetRequest<'a> {
    /// HostConfig.
    pub hc: &'a docker::HostConfig,
    /// NetworkingConfig.
    pub nc: Option<&'a docker::NetworkingConfig>,
    /// Config.Domainname.
    pub domainname: String,
    /// Config.MacAddress.
    pub mac: Option<String>,
    /// Config.Hostname was given.
    pub hostname_set: bool,
    /// Exposed ports, the image's and the body's ("80/tcp").
    pub exposed: Vec<String>,
}

impl Daemon {
    fn default_mode_is_none(&self) -> bool {
        !self.networks.opts.enabled || !self.networks.opts.default_bridge
    }

    /// Plans a new container's networking and takes its addresses. On error nothing is
    /// held.
    pub fn net_plan(&self, id: &str, isolation: Isolation, r: &NetRequest) -> Result<NetConfig> {
        let hc = r.hc;
        let mode_s = hc.network_mode.clone().unwrap_or_default();
        let eps: Vec<(String, docker::EndpointSettings)> = {
            let mut v: Vec<(String, docker::EndpointSettings)> =
                r.nc.and_then(|n| n.endpoints_config.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        // A sandbox with its own kernel (a microVM) cannot share a network namespace.
        let vm = self.sandboxes.get(isolation).taps();
        let mut cfg = NetConfig {
            dns: hc.dns.clone().unwrap_or_default(),
            dns_search: hc.dns_search.clone().unwrap_or_default(),
            dns_options: hc.dns_options.clone().unwrap_or_default(),
            domainname: r.domainname.clone(),
            ..Default::default()
        };
        for d in &cfg.dns {
            d.parse::<std::net::IpAddr>()
                .map_err(|_| bad(format!("{d} is not an ip address (--dns)")))?;
        }
        for h in hc.extra_hosts.iter().flatten() {
            let (name, addr) = h
                .split_once(':')
                .or_else(|| h.split_once('='))
                .ok_or_else(|| bad(format!("bad format for add-host: {h:?}")))?;
            if name.is_empty() {
                return Err(bad(format!("bad format for add-host: {h:?}")));
            }
            if addr != "host-gateway" && addr.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(format!("invalid IP address in add-host: {addr:?}")));
            }
            cfg.extra_hosts.push((name.to_owned(), addr.to_owned()));
        }
        if hc.links.as_ref().is_some_and(|l| !l.is_empty())
            || eps
                .iter()
                .any(|(_, e)| e.links.as_ref().is_some_and(|l| !l.is_empty()))
        {
            return Err(Error::NotImplemented(
                "links (--link, a legacy feature; user-defined networks resolve names)".into(),
            ));
        }
        let primary: Option<String> = match mode_s.as_str() {
            "" | "default" if self.default_mode_is_none() => {
                cfg.mode = Mode::None;
                None
            }
            "" | "default" | "bridge" => {
                if !self.networks.opts.default_bridge {
                    return Err(bad(
                        "the default bridge network is disabled on this berthd (--bridge none): use a user-defined network",
                    ));
                }
                cfg.mode = Mode::Bridge;
                Some("bridge".into())
            }
            "none" => {
                cfg.mode = Mode::None;
                None
            }
            "host" => {
                if vm {
                    return Err(bad(
                        "the host network is not available to microVM containers: a microVM has its own kernel and network stack (use --isolation process to share the host's)",
                    ));
                }
                cfg.mode = Mode::Host;
                None
            }
            m if m.starts_with("container:") => {
                if vm {
                    return Err(bad(
                        "--network container: is not available to microVM containers: each microVM has its own kernel, so two of them cannot share a network namespace",
                    ));
                }
                let other = self.find(&m["container:".len()..])?;
                if other.id == id {
                    return Err(bad("cannot join own network"));
                }
                cfg.mode = Mode::Container(other.id.clone());
                None
            }
            name => {
                cfg.mode = Mode::Bridge;
                Some(name.to_owned())
            }
        };
        if cfg.mode != Mode::Bridge {
            if let Some((n, _)) = eps.iter().find(|(n, e)| {
                !matches!(n.as_str(), "default" | "host" | "none") && !n.starts_with("container:")
                    || has_settings(e)
            }) {
                if n == &mode_s || matches!(n.as_str(), "default" | "host" | "none") {
                    return Err(bad(format!(
                        "IP addresses, aliases and MAC addresses are supported on bridge networks only (network mode {mode_s:?})"
                    )));
                }
                return Err(bad(format!(
                    "container cannot be connected to network {n} in network mode {mode_s:?}"
                )));
            }
            // Refused with none too: there is no interface to give it to.
            if r.mac.is_some() {
                return Err(bad("conflicting options: mac-address and the network mode"));
            }
            if r.hostname_set && matches!(cfg.mode, Mode::Container(_)) {
                return Err(bad("conflicting options: hostname and the network mode"));
            }
            if hc.port_bindings.as_ref().is_some_and(|p| !p.is_empty())
                || hc.publish_all_ports.unwrap_or(false)
            {
                return Err(bad(format!(
                    "published ports need a bridge network (network mode {:?})",
                    if mode_s.is_empty() {
                        "default"
                    } else {
                        &mode_s
                    }
                )));
            }
            if matches!(cfg.mode, Mode::Container(_))
                && (!cfg.dns.is_empty()
                    || !cfg.dns_search.is_empty()
                    || !cfg.dns_options.is_empty()
                    || !cfg.extra_hosts.is_empty())
            {
                return Err(bad(
                    "conflicting options: dns, dns-search, dns-option and add-host cannot be set with --network container:",
                ));
            }
            return Ok(cfg);
        }
        cfg.ports = ports::requests(
            hc.port_bindings.as_ref(),
            hc.publish_all_ports.unwrap_or(false),
            &r.exposed,
        )?;
        // The networks: the mode's first, then any other the body names.
        let primary = primary.unwrap_or_default();
        let mut wanted: Vec<(NetworkRec, docker::EndpointSettings)> = Vec::new();
        let first = self.networks.find(&primary)?;
        let first_eps = eps
            .iter()
            .find(|(n, _)| n == &primary || n == "default" || *n == first.id || *n == first.name)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        wanted.push((first, first_eps));
        for (n, e) in &eps {
            if n == &primary || n == "default" {
                continue;
            }
            let net = self.networks.find(n)?;
            if wanted.iter().any(|(w, _)| w.id == net.id) {
                continue;
            }
            wanted.push((net, e.clone()));
        }
        for (net, _) in &wanted {
            if vm && net.mtu > 1500 {
                return Err(Error::NotImplemented(format!(
                    "network {} has MTU {}: microVM containers take networks with an MTU of 1500 at most (berth-vmm's virtio-net has no large receive buffers)",
                    net.name, net.mtu
                )));
            }
            if !net.is_bridge() {
                return Err(bad(format!(
                    "container cannot be disconnected from host network or connected to host network ({})",
                    net.name
                )));
            }
        }
        let mut taken: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for (i, (net, e)) in wanted.iter().enumerate() {
            let mac = if i == 0 { r.mac.clone() } else { None }
                .or(e.mac_address.clone())
                .filter(|m| !m.is_empty());
            match self.endpoint_for(id, net, e, mac.as_deref(), &format!("eth{i}")) {
                Ok(ep) => {
                    taken.push(net.id.clone());
                    out.push(ep);
                }
                Err(err) => {
                    for t in taken {
                        let _ = self.networks.release(&t, id);
                    }
                    return Err(err);
                }
            }
        }
        cfg.endpoints = out;
        Ok(cfg)
    }

    /// Takes an address on `net` for container `id` and describes its endpoint there.
    fn endpoint_for(
        &self,
        id: &str,
        net: &NetworkRec,
        e: &docker::EndpointSettings,
        mac: Option<&str>,
        ifname: &str,
    ) -> Result<Endpoint> {
        let aliases: Vec<String> = e.aliases.clone().unwrap_or_default();
        let want: Option<Ipv4Addr> = match e
            .ipam_config
            .as_ref()
            .and_then(|c| c.ipv4_address.as_deref())
            .filter(|s| !s.is_empty())
        {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| bad(format!("invalid IPv4 address {s:?}")))?,
            ),
            None => None,
        };
        if e.ipam_config
            .as_ref()
            .is_some_and(|c| c.ipv6_address.as_deref().is_some_and(|s| !s.is_empty()))
        {
            return Err(Error::NotImplemented("IPv6 addresses (--ip6)".into()));
        }
        if net.name == "bridge" {
            if want.is_some() {
                return Err(bad(
                    "user specified IP address is supported on user defined networks only",
                ));
            }
            if !aliases.is_empty() {
                return Err(bad(
                    "network-scoped alias is supported only for containers in user defined networks",
                ));
            }
        }
        let mac = match mac {
            Some(m) => Some(
                network::parse_mac(m).ok_or_else(|| bad(format!("invalid MAC address: {m}")))?,
            ),
            None => None,
        };
        if e.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(Error::NotImplemented("endpoint DriverOpts".into()));
        }
        if e.links.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(Error::NotImplemented(
                "links (--link, a legacy feature; user-defined networks resolve names)".into(),
            ));
        }
        if e.ipam_config
            .as_ref()
            .and_then(|c| c.link_local_ips.as_ref())
            .is_some_and(|l| !l.is_empty())
        {
            return Err(Error::NotImplemented(
                "link-local addresses (--link-local-ip)".into(),
            ));
        }
        let (n, ip) = self.networks.lease(&net.id, id, want)?;
        let subnet = n.subnet.ok_or_else(|| bad("the network has no subnet"))?;
        Ok(Endpoint {
            network_id: n.id.clone(),
            endpoint_id: super::new_id(),
            ip,
            prefix: subnet.len,
            gateway: n.gateway,
            mac: network::mac_text(mac.unwrap_or_else(|| network::mac_of(ip))),
            aliases,
            static_ip: want.is_some(),
            ifname: ifname.to_owned(),
        })
    }

    /// Gives back every address a container holds (at remove).
    pub fn net_release(&self, id: &str, cfg: &NetConfig) {
        for e in &cfg.endpoints {
            if let Err(err) = self.networks.release(&e.network_id, id) {
                super::log_failure("releasing a container's address", &err);
            }
        }
    }

    /// Writes the container's /etc/hosts, /etc/hostname and /etc/resolv.conf and binds
    /// them in; shares the host's or another container's network namespace for those
    /// modes. Called while building the container's spec.
    ///
    /// A sandbox with its own kernel gets the files' content instead (its agent writes and
    /// binds them in the guest), and its container uses the guest's own network
    /// namespace, where the agent configured the interfaces: the microVM is the boundary.
    pub fn net_spec(
        &self,
        rec: &Record,
        oci: &mut oci_spec::runtime::Spec,
    ) -> Result<Vec<berth_protocol::EtcFile>> {
        use oci_spec::runtime::{LinuxNamespaceType, MountBuilder};
        let taps = self.sandbox(rec).taps();
        let dir = self.dir(&rec.id);
        let cfg = &rec.net;
        let (files_dir, share) = match &cfg.mode {
            Mode::Container(other) => {
                let o = self.find(other).map_err(|_| {
                    bad(format!(
                        "cannot join network of a non running container: {other}"
                    ))
                })?;
                let orec = self.running(&o).map_err(|_| {
                    bad(format!(
                        "cannot join network of a non running container: {}",
                        o.record().name
                    ))
                })?;
                let pid = orec.state.pid();
                (self.dir(&orec.id), Some(format!("/proc/{pid}/ns/net")))
            }
            _ => (dir.clone(), None),
        };
        if !matches!(cfg.mode, Mode::Container(_)) {
            let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let own: Vec<Ipv4Addr> = cfg.endpoints.iter().map(|e| e.ip).collect();
            let extra = extra_hosts(cfg);
            let (hosts, resolv) = match cfg.mode {
                Mode::Host => (
                    std::fs::read_to_string("/etc/hosts").unwrap_or_default()
                        + &extra
                            .iter()
                            .map(|(n, a)| format!("{a}\t{n}\n"))
                            .collect::<String>(),
                    etc::resolv_conf(
                        &host_resolv,
                        None,
                        &cfg.dns,
                        &cfg.dns_search,
                        &cfg.dns_options,
                    ),
                ),
                _ => {
                    let embedded = cfg.endpoints.iter().find_map(|e| {
                        self.networks
                            .find(&e.network_id)
                            .ok()
                            .filter(NetworkRec::has_dns)
                            .and(e.gateway)
                    });
                    (
                        etc::hosts(&rec.hostname, &cfg.domainname, &own, &extra),
                        etc::resolv_conf(
                            &host_resolv,
                            embedded,
                            &cfg.dns,
                            &cfg.dns_search,
                            &cfg.dns_options,
                        ),
                    )
                }
            };
            let files = [
                ("hosts", hosts),
                ("resolv.conf", resolv),
                ("hostname", format!("{}\n", rec.hostname)),
            ];
            if taps {
                if !cfg.endpoints.is_empty() {
                    if let Some(l) = oci.linux_mut() {
                        let mut ns = l.namespaces().clone().unwrap_or_default();
                        ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
                        l.set_namespaces(Some(ns));
                    }
                }
                return Ok(files
                    .into_iter()
                    .map(|(name, content)| berth_protocol::EtcFile {
                        name: name.into(),
                        content,
                    })
                    .collect());
            }
            for (name, body) in files {
                let p = dir.join(name);
                std::fs::write(&p, body).map_err(Error::io(format!("{}", p.display())))?;
            }
        }
        let mut mounts = oci.mounts().clone().unwrap_or_default();
        for name in ["hosts", "resolv.conf", "hostname"] {
            let dest = format!("/etc/{name}");
            if mounts
                .iter()
                .any(|m| m.destination().to_str() == Some(&dest))
            {
                continue;
            }
            mounts.push(
                MountBuilder::default()
                    .destination(dest)
                    .typ("bind")
                    .source(files_dir.join(name))
                    .options(vec!["rbind".into(), "rprivate".into()])
                    .build()
                    .map_err(|e| Error::Sandbox(format!("a mount: {e}")))?,
            );
        }
        oci.set_mounts(Some(mounts));
        if let Some(l) = oci.linux_mut() {
            let mut ns = l.namespaces().clone().unwrap_or_default();
            match (&cfg.mode, share) {
                (Mode::Host, _) => ns.retain(|n| n.typ() != LinuxNamespaceType::Network),
                (_, Some(path)) => {
                    for n in ns.iter_mut() {
                        if n.typ() == LinuxNamespaceType::Network {
                            n.set_path(Some(path.clone().into()));
                        }
                    }
                }
                _ => {}
            }
            l.set_namespaces(Some(ns));
        }
        Ok(Vec::new())
    }

    /// A microVM's taps, one per network, on their bridges (nothing for other
    /// sandboxes). On error none is left.
    pub fn net_taps(&self, rec: &Record) -> Result<Vec<crate::sandbox::Nic>> {
        if !self.sandbox(rec).taps() || rec.net.endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut nics = Vec::new();
        let mut route = true;
        let r = (|| {
            for e in &rec.net.endpoints {
                let net = self.networks.find(&e.network_id)?;
                self.ensure_bridge(&net)?;
                let tap = network::tap_name(&rec.id, &net.id);
                let (t, bridge, mtu) = (tap.clone(), net.bridge.clone(), net.mtu);
                link::run(None, move |h| async move {
                    link::delete(&h, &t).await?;
                    link::create_tap(&t)?;
                    link::attach(&h, &t, &bridge, mtu).await
                })?;
                let gateway = e.gateway.filter(|_| route && !net.internal);
                route &= net.internal;
                nics.push(crate::sandbox::Nic {
                    tap,
                    guest: berth_protocol::GuestInterface {
                        mac: e.mac.clone(),
                        ifname: e.ifname.clone(),
                        address: e.ip,
                        prefix_len: e.prefix,
                        mtu: net.mtu,
                        gateway,
                    },
                });
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.delete_taps(rec);
            return Err(e);
        }
        // Its bridges are in use from now on (the default one is not reaped while the
        // microVM boots).
        self.plugged(&rec.id, true);
        Ok(nics)
    }

    /// Deletes a container's taps (if it has any). Idempotent.
    pub fn delete_taps(&self, rec: &Record) {
        if !self.sandbox(rec).taps() {
            return;
        }
        let taps: Vec<String> = rec
            .net
            .endpoints
            .iter()
            .map(|e| network::tap_name(&rec.id, &e.network_id))
            .collect();
        let r = link::run(None, move |h| async move {
            for t in taps {
                link::delete(&h, &t).await?;
            }
            Ok(())
        });
        if let Err(e) = r {
            super::log_failure("removing a microVM's taps", &e.into());
        }
    }

    /// Takes the host ports a container publishes, before its sandbox boots (a taken
    /// port fails the start at once, with nothing to undo).
    pub fn net_bind(&self, rec: &Record) -> Result<Vec<ports::Proxy>> {
        let Some(ep) = rec.net.endpoints.first() else {
            return Ok(Vec::new());
        };
        rec.net
            .ports
            .iter()
            .map(|p| ports::bind(p, ep.ip, &self.rt, &rec.name))
            .collect()
    }

    /// Connects a created container (its init is `pid`, waiting to start) to its
    /// networks, and publishes its ports.
    pub fn net_up(
        &self,
        c: &Ctr,
        rec: &Record,
        pid: i32,
        proxies: Vec<ports::Proxy>,
    ) -> Result<()> {
        let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut route = true;
        // A microVM's taps went on their bridges before it booted.
        let endpoints = if self.sandbox(rec).taps() {
            &[][..]
        } else {
            &rec.net.endpoints[..]
        };
        for e in endpoints {
            let net = self.networks.find(&e.network_id)?;
            self.plug(&rec.id, &net, e, pid, route && !net.internal)?;
            route &= net.internal;
        }
        let published: Vec<network::Published> =
            proxies.iter().map(|p| p.published.clone()).collect();
        self.net_rt
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rec.id.clone(), proxies);
        self.update(c, |r| {
            r.net.published = published;
            Ok(())
        })?;
        self.plugged(&rec.id, true);
        self.sync_rules_locked()
    }

    /// One veth: the host end on the network's bridge, the other as `e.ifname` in the
    /// namespace of `pid`, with a default route through the gateway if `route`.
    fn plug(&self, id: &str, net: &NetworkRec, e: &Endpoint, pid: i32, route: bool) -> Result<()> {
        self.ensure_bridge(net)?;
        let host = network::veth_name(id, &net.id);
        let (bridge, mtu) = (net.bridge.clone(), net.mtu);
        let (ifname, ip, len) = (e.ifname.clone(), e.ip, e.prefix);
        let mac = network::parse_mac(&e.mac).unwrap_or_else(|| network::mac_of(ip));
        let (h2, p2, peer) = (host.clone(), ifname.clone(), ifname.clone());
        link::run(None, move |h| async move {
            link::veth_into(&h, &h2, &p2, &bridge, mtu, mac, pid).await
        })?;
        let gw = if route { e.gateway } else { None };
        let r = link::run(
            Some(format!("/proc/{pid}/ns/net").into()),
            move |h| async move { link::configure(&h, &peer, &ifname, mac, ip, len, mtu, gw).await },
        );
        if r.is_err() {
            let _ = link::run(None, move |h| async move { link::delete(&h, &host).await });
        }
        Ok(r?)
    }

    /// Makes sure a bridge network's bridge is up (and its DNS server running).
    fn ensure_bridge(&self, net: &NetworkRec) -> Result<()> {
        if !self.networks.opts.enabled {
            return Ok(());
        }
        let (Some(subnet), Some(gw)) = (net.subnet, net.gateway) else {
            return Err(bad(format!("network {} has no subnet", net.name)));
        };
        let (name, mtu) = (net.bridge.clone(), net.mtu);
        link::run(None, move |h| async move {
            link::ensure_bridge(&h, &name, gw, subnet.len, mtu).await
        })?;
        if net.name == "bridge" {
            // Up now: reaped once unused, whatever happens to the start that wanted it.
            self.net_rt
                .applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .default_bridge = true;
        }
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|s| s.trim() != "1") {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(Error::io("enabling IPv4 forwarding (net.ipv4.ip_forward)"))?;
        }
        if net.has_dns() {
            let mut servers = self.net_rt.dns.lock().unwrap_or_else(|e| e.into_inner());
            if !servers.contains_key(&net.id) {
                let dir: Arc<dyn dns::Directory> = Arc::new(DaemonDirectory(self.me()));
                let s = dns::serve(net.id.clone(), gw, dir, &self.rt).map_err(|e| {
                    Error::Sandbox(format!(
                        "network {}: starting its DNS server on {gw}:53: {e}",
                        net.name
                    ))
                })?;
                servers.insert(net.id.clone(), s);
            }
        }
        Ok(())
    }

    /// Tears down what a container's run held: its ports' proxies and their rules (its
    /// veths went with its namespace). Idempotent.
    pub fn net_down(&self, id: &str) {
        let held = self
            .net_rt
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        drop(held);
        let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(c) = self.find(id) {
            self.delete_taps(&c.record());
        }
        self.plugged(id, false);
        if let Err(e) = self.sync_rules_locked() {
            super::log_failure("updating berth's nftables table", &e);
        }
    }

    /// Marks a container's networking up or down.
    fn plugged(&self, id: &str, up: bool) {
        let mut p = self
            .net_rt
            .plugged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if up {
            p.insert(id.to_owned());
        } else {
            p.remove(id);
        }
    }

    /// The containers whose networking is up.
    fn live(&self) -> Vec<Record> {
        let p = self
            .net_rt
            .plugged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.all_records()
            .into_iter()
            .filter(|r| p.contains(&r.id))
            .collect()
    }

    /// Rewrites berth's nftables table from the networks and the running containers'
    /// published ports, and removes the default bridge when nothing uses it (the caller
    /// holds `net_rt.lock`).
    fn sync_rules_locked(&self) -> Result<()> {
        if !self.networks.opts.enabled {
            return Ok(());
        }
        let live = self.live();
        let kept = self
            .net_rt
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .default_bridge;
        let proxies = self
            .net_rt
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut bridges = Vec::new();
        let mut default_used = false;
        for n in self
            .networks
            .all()
            .into_iter()
            .filter(NetworkRec::is_bridge)
        {
            let used = live
                .iter()
                .any(|r| r.net.endpoints.iter().any(|e| e.network_id == n.id));
            if n.name == "bridge" {
                default_used = used;
                // Still up in its grace period: its rules stay as they are.
                if !used && !kept {
                    continue;
                }
            }
            if let Some(s) = n.subnet {
                bridges.push(nft::BridgeRules {
                    bridge: n.bridge.clone(),
                    subnet: s,
                    internal: n.internal,
                });
            }
        }
        let mut dnats = Vec::new();
        for r in &live {
            let Some(ep) = r.net.endpoints.first() else {
                continue;
            };
            for p in proxies.get(&r.id).into_iter().flatten() {
                let p = &p.published;
                if p.host_ip.is_some_and(|a| a.is_loopback()) {
                    continue;
                }
                dnats.push(nft::Dnat {
                    proto: p.proto.clone(),
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                    ip: ep.ip,
                    port: p.port,
                });
            }
        }
        drop(proxies);
        let rules = nft::ruleset(&bridges, &dnats);
        let mut applied = self
            .net_rt
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Nothing of ours to remove, and nothing to add: leave the host as it is.
        let first_and_empty = applied.rules.is_none() && rules.is_none();
        if !first_and_empty && applied.rules.as_ref() != Some(&rules) {
            nft::apply(rules.as_deref())?;
        }
        applied.rules = Some(rules);
        if default_used {
            applied.default_bridge = true;
        } else if applied.default_bridge && !applied.reaping {
            applied.reaping = true;
            let me = self.me();
            std::thread::spawn(move || {
                std::thread::sleep(DEFAULT_BRIDGE_GRACE);
                if let Some(d) = me.upgrade() {
                    d.reap_default_bridge();
                }
            });
        }
        Ok(())
    }

    /// Removes the default bridge and its rules if nothing used it during its grace.
    fn reap_default_bridge(&self) {
        let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        let used = self.live().iter().any(|r| {
            r.net.endpoints.iter().any(|e| {
                self.networks
                    .find(&e.network_id)
                    .is_ok_and(|n| n.name == "bridge")
            })
        });
        {
            let mut applied = self
                .net_rt
                .applied
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            applied.reaping = false;
            if used || !applied.default_bridge {
                return;
            }
            applied.default_bridge = false;
        }
        if let Err(e) = self.sync_rules_locked() {
            super::log_failure("updating berth's nftables table", &e);
        }
        if let Err(e) = link::run(None, |h| async move {
            link::delete(&h, network::DEFAULT_BRIDGE).await
        }) {
            super::log_failure("removing the default bridge", &e.into());
        }
    }

    /// After a restart: bridges and DNS servers back, running containers' ports bound
    /// again, veths of containers that are gone removed, leases of containers that are
    /// gone released, and the table rewritten.
    pub fn net_reconcile(&self) {
        if !self.networks.opts.enabled {
            return;
        }
        let recs = self.all_records();
        let ids: std::collections::HashSet<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        for n in self.networks.all() {
            for owner in n.leases.values().filter(|o| !ids.contains(o.as_str())) {
                let _ = self.networks.release(&n.id, owner);
            }
            let user = n.is_bridge() && n.name != "bridge";
            if user {
                if let Err(e) = self.ensure_bridge(&n) {
                    super::log_failure("restoring a network's bridge", &e);
                }
            }
        }
        let mut keep: std::collections::HashSet<String> = std::collections::HashSet::new();
        for r in recs.iter().filter(|r| r.state.running()) {
            self.plugged(&r.id, true);
            for e in &r.net.endpoints {
                keep.insert(network::veth_name(&r.id, &e.network_id));
                keep.insert(network::tap_name(&r.id, &e.network_id));
                if let Ok(n) = self.networks.find(&e.network_id) {
                    if let Err(e) = self.ensure_bridge(&n) {
                        super::log_failure("restoring a network's bridge", &e);
                    }
                }
            }
            let rebound: Vec<ports::Proxy> = r
                .net
                .published
                .iter()
                .filter_map(|p| {
                    let ep = r.net.endpoints.first()?;
                    let req = network::PortReq {
                        proto: p.proto.clone(),
                        port: p.port,
                        host_ip: p.host_ip,
                        host_ports: (p.host_port, p.host_port),
                    };
                    match ports::bind(&req, ep.ip, &self.rt, &r.name) {
                        Ok(x) => Some(x),
                        Err(e) => {
                            super::log_failure("publishing a port again", &e);
                            None
                        }
                    }
                })
                .collect();
            self.net_rt
                .proxies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(r.id.clone(), rebound);
        }
        match link::run(None, |h| async move { link::names(&h).await }) {
            Ok(names) => {
                if names.iter().any(|n| n == network::DEFAULT_BRIDGE) {
                    // Left by an earlier berthd of this data root: reaped once unused.
                    self.net_rt
                        .applied
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .default_bridge = true;
                }
                for n in names {
                    if network::is_endpoint_link(&n) && !keep.contains(&n) {
                        let _ = link::run(None, move |h| async move { link::delete(&h, &n).await });
                    }
                }
            }
            Err(e) => super::log_failure("listing links", &e.into()),
        }
        let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = self.sync_rules_locked() {
            super::log_failure("restoring berth's nftables table", &e);
        }
    }

    /// `POST /networks/create`.
    pub fn network_create(&self, req: &docker::NetworkCreateRequest) -> Result<String> {
        let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.networks.plan(req)?;
        if self.networks.opts.enabled {
            let names = link::run(None, |h| async move { link::names(&h).await })?;
            if names.contains(&n.bridge) {
                return Err(Error::Conflict(format!(
                    "bridge name {} is already in use by another interface on this host",
                    n.bridge
                )));
            }
        }
        self.networks.insert(n.clone())?;
        let up = self
            .ensure_bridge(&n)
            .and_then(|_| self.sync_rules_locked());
        if let Err(e) = up {
            self.drop_network(&n);
            let _ = self.networks.delete(&n.id);
            return Err(e);
        }
        self.event_network("create", &n, None);
        Ok(n.id)
    }

    fn drop_network(&self, n: &NetworkRec) {
        self.net_rt
            .dns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&n.id);
        let b = n.bridge.clone();
        if let Err(e) = link::run(None, move |h| async move { link::delete(&h, &b).await }) {
            super::log_failure("removing a bridge", &e.into());
        }
    }

    /// Containers with an endpoint on network `id`.
    pub fn network_users(&self, id: &str) -> Vec<Record> {
        self.all_records()
            .into_iter()
            .filter(|r| r.net.endpoints.iter().any(|e| e.network_id == id))
            .collect()
    }

    /// `DELETE /networks/{id}`.
    pub fn network_remove(&self, key: &str) -> Result<()> {
        let n = self.networks.find(key)?;
        if n.predefined() {
            return Err(Error::Forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        let users = self.network_users(&n.id);
        if !users.is_empty() {
            return Err(Error::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                n.name,
                n.id,
                users
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.networks.delete(&n.id)?;
        self.drop_network(&n);
        self.sync_rules_locked()?;
        self.event_network("destroy", &n, None);
        Ok(())
    }

    /// Publishes a network event.
    pub fn event_network(&self, action: &str, n: &NetworkRec, container: Option<&str>) {
        let mut attrs = vec![("name", n.name.clone()), ("type", n.driver.clone())];
        if let Some(c) = container {
            attrs.push(("container", c.to_owned()));
        }
        self.event("network", action, &n.id, &attrs);
    }

    /// `POST /networks/{id}/connect`: a created or stopped container gets the network
    /// at its next start; a running process container is plugged in at once.
    pub fn network_connect(
        &self,
        key: &str,
        ctr: &str,
        e: &docker::EndpointSettings,
    ) -> Result<()> {
        let n = self.networks.find(key)?;
        let c = self.find(ctr)?;
        let _op = c.op.blocking_lock();
        let rec = c.record();
        if !n.is_bridge() {
            return Err(bad(format!(
                "container cannot be disconnected from host network or connected to host network ({})",
                n.name
            )));
        }
        if rec.state.running() && self.sandbox(&rec).taps() {
            return Err(hot_plug());
        }
        match rec.net.mode {
            Mode::Bridge => {}
            _ => {
                return Err(bad(format!(
                    "container {} is in network mode {:?}: it cannot be connected to a network",
                    rec.name,
                    rec.host_config
                        .base
                        .network_mode
                        .clone()
                        .unwrap_or_default()
                )))
            }
        }
        if rec.net.endpoints.iter().any(|x| x.network_id == n.id) {
            return Err(Error::Forbidden(format!(
                "endpoint with name {} already exists in network {}",
                rec.name, n.name
            )));
        }
        let used: Vec<&str> = rec
            .net
            .endpoints
            .iter()
            .map(|e| e.ifname.as_str())
            .collect();
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(&n.as_str()))
            .unwrap_or_default();
        let ep = self.endpoint_for(
            &rec.id,
            &n,
            e,
            e.mac_address.as_deref().filter(|m| !m.is_empty()),
            &ifname,
        )?;
        // One lock scope from the veth to the record: the default bridge is not reaped
        // in between.
        let guard = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
        if rec.state.running() {
            let route = rec.net.endpoints.is_empty() && !n.internal;
            if let Err(err) = self.plug(&rec.id, &n, &ep, rec.state.pid() as i32, route) {
                let _ = self.networks.release(&n.id, &rec.id);
                return Err(err);
            }
        }
        let saved = self.update(&c, |r| {
            r.net.endpoints.push(ep.clone());
            Ok(())
        });
        if let Err(err) = saved {
            let _ = self.networks.release(&n.id, &rec.id);
            return Err(err);
        }
        if rec.state.running() {
            self.sync_rules_locked()?;
        }
        drop(guard);
        self.rewrite_hosts(&c);
        self.event_network("connect", &n, Some(&rec.id));
        Ok(())
    }

    /// `POST /networks/{id}/disconnect`.
    pub fn network_disconnect(&self, key: &str, ctr: &str, _force: bool) -> Result<()> {
        let n = self.networks.find(key)?;
        let c = self.find(ctr)?;
        let _op = c.op.blocking_lock();
        let rec = c.record();
        let Some(ep) = rec
            .net
            .endpoints
            .iter()
            .find(|e| e.network_id == n.id)
            .cloned()
        else {
            return Err(Error::Forbidden(format!(
                "container {} is not connected to network {}",
                rec.name, n.name
            )));
        };
        if rec.state.running() && self.sandbox(&rec).taps() {
            return Err(hot_plug());
        }
        if rec.state.running()
            && !rec.net.published.is_empty()
            && rec.net.endpoints.first().map(|f| &f.network_id) == Some(&n.id)
        {
            return Err(Error::Forbidden(format!(
                "container {} publishes ports on network {}: stop it before disconnecting it",
                rec.name, n.name
            )));
        }
        if rec.state.running() {
            let pid = rec.state.pid();
            let ifname = ep.ifname.clone();
            link::run(
                Some(format!("/proc/{pid}/ns/net").into()),
                move |h| async move { link::remove_in(&h, &ifname).await },
            )?;
        }
        self.update(&c, |r| {
            r.net.endpoints.retain(|e| e.network_id != n.id);
            Ok(())
        })?;
        self.networks.release(&n.id, &rec.id)?;
        {
            let _g = self.net_rt.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.sync_rules_locked()?;
        }
        self.rewrite_hosts(&c);
        self.event_network("disconnect", &n, Some(&rec.id));
        Ok(())
    }

    /// Rewrites a running container's /etc/hosts in place (its bind mount sees it) after
    /// its addresses change.
    fn rewrite_hosts(&self, c: &Ctr) {
        let rec = c.record();
        let p = self.dir(&rec.id).join("hosts");
        if !p.exists() || matches!(rec.net.mode, Mode::Host | Mode::Container(_)) {
            return;
        }
        let own: Vec<Ipv4Addr> = rec.net.endpoints.iter().map(|e| e.ip).collect();
        let extra = extra_hosts(&rec.net);
        // Written in place, not renamed over: the container's bind mount holds the inode.
        let _ = std::fs::write(
            &p,
            etc::hosts(&rec.hostname, &rec.net.domainname, &own, &extra),
        );
    }

    /// `POST /networks/prune`: removes user networks no container uses.
    pub fn network_prune(&self, keep: impl Fn(&NetworkRec) -> bool) -> Vec<String> {
        let mut gone = Vec::new();
        for n in self.networks.all() {
            if n.predefined() || !keep(&n) || !self.network_users(&n.id).is_empty() {
                continue;
            }
            if self.network_remove(&n.id).is_ok() {
                gone.push(n.name);
            }
        }
        gone
    }

    /// A weak handle on this daemon (for the DNS servers).
    fn me(&self) -> Weak<Daemon> {
        self.weak.get().cloned().unwrap_or_default()
    }
}

/// `--add-host` entries with `host-gateway` made the container's gateway (the host's
/// address on its first network; loopback without one).
fn extra_hosts(cfg: &NetConfig) -> Vec<(String, String)> {
    let gw = cfg.endpoints.first().and_then(|e| e.gateway);
    cfg.extra_hosts
        .iter()
        .map(|(n, a)| {
            let a = if a == "host-gateway" {
                gw.map(|g| g.to_string())
                    .unwrap_or_else(|| "127.0.0.1".into())
            } else {
                a.clone()
            };
            (n.clone(), a)
        })
        .collect()
}

/// Refusal of connect and disconnect on a running microVM.
fn hot_plug() -> Error {
    Error::NotImplemented(
        "connecting or disconnecting a running microVM container (virtio-net hot-plug is not built): stop it, connect or disconnect, and start it again"
            .into(),
    )
}

fn has_settings(e: &docker::EndpointSettings) -> bool {
    e.aliases.as_ref().is_some_and(|a| !a.is_empty())
        || e.ipam_config.is_some()
        || e.ip_address.as_deref().is_some_and(|s| !s.is_empty())
}

/// The DNS servers' view of the daemon.
struct DaemonDirectory(Weak<Daemon>);

impl dns::Directory for DaemonDirectory {
    fn lookup(&self, net: &str, from: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
        let d = self.0.upgrade()?;
        // Containers whose networking is up: a workload asks as soon as it starts, before
        // its start is recorded.
        let recs: Vec<Record> = d.live();
        let asker = recs.iter().find(|r| {
            r.net
                .endpoints
                .iter()
                .any(|e| e.network_id == net && e.ip == from)
        })?;
        // The network asked on first, then the asker's others (as Docker's resolver).
        let mut nets: Vec<&str> = vec![net];
        nets.extend(
            asker
                .net
                .endpoints
                .iter()
                .map(|e| e.network_id.as_str())
                .filter(|n| *n != net),
        );
        for n in nets {
            let mut out = Vec::new();
            for r in &recs {
                let Some(e) = r.net.endpoints.iter().find(|e| e.network_id == n) else {
                    continue;
                };
                let hit = r.name.eq_ignore_ascii_case(name)
                    || r.id[..12].eq_ignore_ascii_case(name)
                    || r.hostname.eq_ignore_ascii_case(name)
                    || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name));
                if hit {
                    out.push(e.ip);
                }
            }
            if !out.is_empty() {
                return Some(out);
            }
        }
        Some(Vec::new())
    }

    fn upstreams(&self, net: &str, from: Ipv4Addr) -> Vec<SocketAddr> {
        let Some(d) = self.0.upgrade() else {
            return Vec::new();
        };
        let Some(asker) = d.live().into_iter().find(|r| {
            r.net
                .endpoints
                .iter()
                .any(|e| e.network_id == net && e.ip == from)
        }) else {
            return Vec::new();
        };
        // Forwarded when the asker reaches outside through any of its networks.
        let outside = asker
            .net
            .endpoints
            .iter()
            .any(|e| d.networks.find(&e.network_id).is_ok_and(|n| !n.internal));
        if !outside {
            return Vec::new();
        }
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        etc::upstreams(&host, &asker.net.dns)
    }

    fn network_name(&self, net: &str) -> Option<String> {
        self.0.upgrade()?.networks.find(net).ok().map(|n| n.name)
    }
}

impl Daemon {
    /// `HostConfig.NetworkMode` as inspect shows it.
    pub fn net_mode_name(&self, r: &Record) -> String {
        let given = r.host_config.base.network_mode.clone().unwrap_or_default();
        match (&r.net.mode, given.as_str()) {
            (Mode::None, _) => "none".into(),
            (Mode::Bridge, "" | "default") => "bridge".into(),
            _ => given,
        }
    }

    /// `NetworkSettings` for inspect: the endpoints by network name, the published ports
    /// (exposed ones with no binding as null), and the default bridge's endpoint in the
    /// legacy top-level fields, as dockerd fills them.
    pub fn net_settings(&self, r: &Record, exposed: &[String]) -> docker::NetworkSettings {
        let mut networks = HashMap::new();
        let mut legacy: Option<(&Endpoint, String)> = None;
        for e in &r.net.endpoints {
            let Ok(n) = self.networks.find(&e.network_id) else {
                continue;
            };
            if n.name == "bridge" {
                legacy = Some((e, n.bridge.clone()));
            }
            let mut dns_names = vec![r.name.clone(), r.id[..12].to_owned()];
            dns_names.extend(e.aliases.iter().cloned());
            networks.insert(
                n.name.clone(),
                docker::EndpointSettings {
                    ipam_config: e.static_ip.then(|| docker::EndpointIpamConfig {
                        ipv4_address: Some(e.ip.to_string()),
                        ..Default::default()
                    }),
                    links: None,
                    mac_address: Some(e.mac.clone()),
                    aliases: Some(e.aliases.clone()),
                    network_id: Some(n.id.clone()),
                    endpoint_id: Some(e.endpoint_id.clone()),
                    gateway: Some(e.gateway.map(|g| g.to_string()).unwrap_or_default()),
                    ip_address: Some(e.ip.to_string()),
                    ip_prefix_len: Some(i64::from(e.prefix)),
                    ipv6_gateway: Some(String::new()),
                    global_ipv6_address: Some(String::new()),
                    global_ipv6_prefix_len: Some(0),
                    driver_opts: None,
                    dns_names: n.has_dns().then_some(dns_names),
                },
            );
        }
        if matches!(r.net.mode, Mode::Host | Mode::None) {
            let name = if r.net.mode == Mode::Host {
                "host"
            } else {
                "none"
            };
            if let Ok(n) = self.networks.find(name) {
                networks.insert(
                    name.to_owned(),
                    docker::EndpointSettings {
                        network_id: Some(n.id),
                        ..Default::default()
                    },
                );
            }
        }
        let mut ports: docker::PortMap = HashMap::new();
        if r.net.mode == Mode::Bridge {
            for k in exposed {
                ports.insert(k.clone(), None);
            }
            for p in &r.net.ports {
                ports
                    .entry(format!("{}/{}", p.port, p.proto))
                    .or_insert(None);
            }
            for p in &r.net.published {
                let v = ports
                    .entry(format!("{}/{}", p.port, p.proto))
                    .or_insert(None)
                    .get_or_insert_with(Vec::new);
                v.push(docker::PortBinding {
                    host_ip: Some(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string()),
                    host_port: Some(p.host_port.to_string()),
                });
            }
        }
        let running = r.state.running();
        let s = |v: Option<String>| Some(v.unwrap_or_default());
        let (ip, len, gw, mac, bridge) = match &legacy {
            Some((e, b)) => (
                Some(e.ip.to_string()),
                i64::from(e.prefix),
                e.gateway.map(|g| g.to_string()),
                Some(e.mac.clone()),
                Some(b.clone()),
            ),
            None => (None, 0, None, None, None),
        };
        docker::NetworkSettings {
            bridge: s(None),
            sandbox_id: s(running.then(|| r.id.clone())),
            hairpin_mode: Some(false),
            link_local_ipv6_address: s(None),
            link_local_ipv6_prefix_len: Some(0),
            ports: Some(ports),
            sandbox_key: s(running.then(|| format!("/proc/{}/ns/net", r.state.pid()))),
            secondary_ip_addresses: Some(vec![]),
            secondary_ipv6_addresses: Some(vec![]),
            endpoint_id: s(legacy.map(|(e, _)| e.endpoint_id.clone())),
            gateway: s(gw),
            global_ipv6_address: s(None),
            global_ipv6_prefix_len: Some(0),
            ip_address: s(ip),
            ip_prefix_len: Some(len),
            ipv6_gateway: s(None),
            mac_address: s(mac.filter(|_| bridge.is_some())),
            networks: Some(networks),
        }
    }

    /// `Ports` for `ps`: published ports, and exposed ones with no binding.
    pub fn ps_ports(&self, r: &Record) -> Vec<docker::Port> {
        let typ = |p: &str| match p {
            "udp" => docker::PortTypeEnum::UDP,
            _ => docker::PortTypeEnum::TCP,
        };
        let mut out: Vec<docker::Port> = r
            .net
            .published
            .iter()
            .map(|p| docker::Port {
                ip: Some(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string()),
                private_port: p.port,
                public_port: Some(p.host_port),
                typ: Some(typ(&p.proto)),
            })
            .collect();
        for p in &r.net.ports {
            if !out.iter().any(|o| o.private_port == p.port) {
                out.push(docker::Port {
                    ip: None,
                    private_port: p.port,
                    public_port: None,
                    typ: Some(typ(&p.proto)),
                });
            }
        }
        out
    }

    /// Network names for `ps`'s summary.
    pub fn ps_networks(&self, r: &Record) -> HashMap<String, docker::EndpointSettings> {
        self.net_settings(r, &[]).networks.unwrap_or_default()
    }
}

impl Daemon {
    /// Where a container's /etc file is kept on the host ("" until its first start).
    pub fn etc_path(&self, r: &Record, name: &str) -> String {
        let p = self.dir(&r.id).join(name);
        if p.exists() {
            p.display().to_string()
        } else {
            String::new()
        }
    }
}
