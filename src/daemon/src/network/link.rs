//! Links, addresses and routes over netlink (the `rtnetlink` crate): bridges, the veth
//! pairs of process containers and the taps of microVMs. Each call runs on a thread of
//! its own with its own netlink socket, so that it can enter a container's network
//! namespace (`setns` changes only the calling thread's).

use super::NetError;
use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

type Result<T> = std::result::Result<T, NetError>;

fn nl(what: String) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |e| NetError::Netlink(what, e.to_string())
}

/// Runs `f` with a netlink handle, in the network namespace at `netns` (berthd's own
/// when None).
pub fn run<T, F, Fut>(netns: Option<PathBuf>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    std::thread::spawn(move || {
        if let Some(p) = &netns {
            let ns = std::fs::File::open(p)
                .map_err(|e| NetError::Netns(format!("{}: {e}", p.display())))?;
            // SAFETY: setns on an open network namespace fd; it changes only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(NetError::Netns(format!(
                    "entering {}: {}",
                    p.display(),
                    std::io::Error::last_os_error()
                )));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NetError::Netns(format!("a netlink runtime: {e}")))?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(|e| NetError::Netns(format!("a netlink socket: {e}")))?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .join()
    .unwrap_or_else(|_| Err(NetError::Netns("a netlink worker panicked".into())))
}

/// A link's index by name, if it exists.
pub async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

/// Every link's name.
pub async fn names(h: &Handle) -> Result<Vec<String>> {
    use rtnetlink::packet_route::link::LinkAttribute;
    let mut out = Vec::new();
    let mut links = h.link().get().execute();
    while let Some(l) = links.try_next().await.map_err(nl("listing links".into()))? {
        for a in l.attributes {
            if let LinkAttribute::IfName(n) = a {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// Makes sure bridge `name` exists, holds `gw/len` and is up.
pub async fn ensure_bridge(h: &Handle, name: &str, gw: Ipv4Addr, len: u8, mtu: u32) -> Result<()> {
    let idx = match index_of(h, name).await? {
        Some(i) => i,
        None => {
            h.link()
                .add(LinkBridge::new(name).mtu(mtu).build())
                .execute()
                .await
                .map_err(nl(format!("creating bridge {name}")))?;
            index_of(h, name)
                .await?
                .ok_or_else(|| NetError::Netns(format!("bridge {name} vanished")))?
        }
    };
    let mut has = false;
    let mut addrs = h.address().get().set_link_index_filter(idx).execute();
    while let Some(a) = addrs
        .try_next()
        .await
        .map_err(nl(format!("reading {name}'s addresses")))?
    {
        use rtnetlink::packet_route::address::AddressAttribute;
        has |= a
            .attributes
            .iter()
            .any(|x| matches!(x, AddressAttribute::Address(std::net::IpAddr::V4(v)) if *v == gw));
    }
    if !has {
        h.address()
            .add(idx, gw.into(), len)
            .execute()
            .await
            .map_err(nl(format!("adding {gw}/{len} to {name}")))?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("bringing {name} up")))
}

/// Deletes a link if it exists.
pub async fn delete(h: &Handle, name: &str) -> Result<()> {
    if let Some(i) = index_of(h, name).await? {
        match h.link().del(i).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
            Err(e) => return Err(nl(format!("deleting {name}"))(e)),
        }
    }
    Ok(())
}

/// Creates a veth pair: `host` on `bridge` (up), `peer` created directly in the network
/// namespace of process `pid` with `mac` and `mtu` (created there, not moved: moving a
/// link between namespaces waits for an RCU grace period, ~20 ms).
#[allow(clippy::too_many_arguments)]
pub async fn veth_into(
    h: &Handle,
    host: &str,
    peer: &str,
    bridge: &str,
    mtu: u32,
    mac: [u8; 6],
    pid: i32,
) -> Result<()> {
    use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo};
    delete(h, host).await?;
    let br = index_of(h, bridge)
        .await?
        .ok_or_else(|| NetError::Netns(format!("bridge {bridge} is missing")))?;
    let mut msg = LinkVeth::new(host, peer)
        .mtu(mtu)
        .controller(br)
        .up()
        .build();
    let peer_msg = LinkUnspec::new_with_name(peer)
        .mtu(mtu)
        .address(mac.to_vec())
        .setns_by_pid(pid as u32)
        .build();
    for a in msg.attributes.iter_mut() {
        if let LinkAttribute::LinkInfo(infos) = a {
            for i in infos.iter_mut() {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = i {
                    *p = peer_msg.clone();
                }
            }
        }
    }
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl(format!("creating veth {host} on {bridge}")))
}

/// Inside the container's namespace: names `tmp` `ifname`, gives it `mac`, `addr/len` and
/// `mtu`, brings it up, and routes everything through `gateway` if given.
#[allow(clippy::too_many_arguments)]
pub async fn configure(
    h: &Handle,
    tmp: &str,
    ifname: &str,
    mac: [u8; 6],
    addr: Ipv4Addr,
    len: u8,
    mtu: u32,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    let i = index_of(h, tmp)
        .await?
        .ok_or_else(|| NetError::Netns(format!("{tmp} is not in the container")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(i)
                .name(ifname.to_owned())
                .address(mac.to_vec())
                .mtu(mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("naming {ifname}")))?;
    h.address()
        .add(i, addr.into(), len)
        .execute()
        .await
        .map_err(nl(format!("adding {addr}/{len} to {ifname}")))?;
    h.link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .map_err(nl(format!("bringing {ifname} up")))?;
    if let Some(gw) = gateway {
        let r = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(i)
            .build();
        h.route()
            .add(r)
            .execute()
            .await
            .map_err(nl(format!("routing through {gw}")))?;
    }
    Ok(())
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Creates persistent tap `name` (for a microVM's virtio-net: no packet info, with the
/// virtio-net header, as berth-vmm opens it). Netlink cannot create taps: this is the
/// tun driver's own ioctl interface.
pub fn create_tap(name: &str) -> Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    if name.is_empty() || name.len() > 15 {
        return Err(NetError::Netns(format!("bad tap name {name:?}")));
    }
    let path = c"/dev/net/tun";
    // SAFETY: open(2) on a NUL-terminated path; the descriptor is owned below.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(NetError::Netns(format!(
            "/dev/net/tun (the tun module): {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(NetError::Netns(format!(
            "creating tap {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(NetError::Netns(format!(
            "making tap {name} persistent: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Puts link `name` on `bridge` with `mtu`, up.
pub async fn attach(h: &Handle, name: &str, bridge: &str, mtu: u32) -> Result<()> {
    let br = index_of(h, bridge)
        .await?
        .ok_or_else(|| NetError::Netns(format!("bridge {bridge} is missing")))?;
    let i = index_of(h, name)
        .await?
        .ok_or_else(|| NetError::Netns(format!("{name} vanished")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(i)
                .controller(br)
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("attaching {name} to {bridge}")))
}

/// Removes an interface from inside a container's namespace (`disconnect`).
pub async fn remove_in(h: &Handle, ifname: &str) -> Result<()> {
    delete(h, ifname).await
}
