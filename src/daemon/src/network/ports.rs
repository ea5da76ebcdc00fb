//! Published ports: what a container asks for (`-p`, `-P`), and the userland proxy that
//! holds each host port while the container runs. The proxy is what answers connections
//! from the host itself (127.0.0.1 included); connections from elsewhere are sent to the
//! container by berth's nftables DNAT rules before they reach it. Holding the port in
//! berthd also makes a taken port an error at start ("address already in use"), and a
//! port is free again as soon as berthd lets go of it, a crash included.

use super::{PortReq, Published};
use crate::errors::{Error, Result};
use crate::models::docker;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

fn bad(m: String) -> Error {
    Error::InvalidParameter(m)
}

/// Splits "80/tcp" (the protocol defaults to tcp).
pub fn parse_key(k: &str) -> Result<(u16, String)> {
    let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
    let proto = proto.to_ascii_lowercase();
    match proto.as_str() {
        "tcp" | "udp" => {}
        "sctp" => {
            return Err(Error::NotImplemented(format!(
                "publishing SCTP ports ({k})"
            )))
        }
        _ => return Err(bad(format!("invalid proto: {proto}"))),
    }
    let port: u16 = p
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("invalid containerPort: {p}")))?;
    Ok((port, proto))
}

fn host_ports(s: &str) -> Result<(u16, u16)> {
    if s.is_empty() {
        return Ok((0, 0));
    }
    let one =
        |x: &str| -> Result<u16> { x.parse().map_err(|_| bad(format!("invalid hostPort: {s}"))) };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a == 0 || b < a {
                return Err(bad(format!("invalid hostPort: {s}")));
            }
            Ok((a, b))
        }
        None => {
            let p = one(s)?;
            Ok((p, p))
        }
    }
}

/// The ports a create body asks to publish: its PortBindings, and with PublishAllPorts
/// every exposed port (the image's and the body's) not bound already, on any free port.
pub fn requests(
    bindings: Option<&docker::PortMap>,
    publish_all: bool,
    exposed: &[String],
) -> Result<Vec<PortReq>> {
    let mut out = Vec::new();
    let mut keys: Vec<(&String, &Option<Vec<docker::PortBinding>>)> =
        bindings.map(|b| b.iter().collect()).unwrap_or_default();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (k, list) in keys {
        let (port, proto) = parse_key(k)?;
        let list = list.clone().unwrap_or_default();
        let list = if list.is_empty() {
            vec![docker::PortBinding::default()]
        } else {
            list
        };
        for b in list {
            let host_ip = match b.host_ip.as_deref().unwrap_or("") {
                "" | "0.0.0.0" => None,
                ip => match ip.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(a)) => Some(a),
                    Ok(std::net::IpAddr::V6(_)) => {
                        return Err(Error::NotImplemented(format!(
                            "publishing on an IPv6 host address ({ip})"
                        )))
                    }
                    Err(_) => return Err(bad(format!("invalid IP address: {ip}"))),
                },
            };
            out.push(PortReq {
                proto: proto.clone(),
                port,
                host_ip,
                host_ports: host_ports(b.host_port.as_deref().unwrap_or(""))?,
            });
        }
    }
    if publish_all {
        for k in exposed {
            let (port, proto) = parse_key(k)?;
            if !out.iter().any(|r| r.port == port && r.proto == proto) {
                out.push(PortReq {
                    proto,
                    port,
                    host_ip: None,
                    host_ports: (0, 0),
                });
            }
        }
    }
    Ok(out)
}

/// A published port's proxy; dropping it frees the host port.
pub struct Proxy {
    /// What it publishes.
    pub published: Published,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn bind_one(proto: &str, addr: SocketAddr) -> std::io::Result<(Bound, u16)> {
    if proto == "udp" {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        let p = s.local_addr()?.port();
        Ok((Bound::Udp(s), p))
    } else {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let p = l.local_addr()?.port();
        Ok((Bound::Tcp(l), p))
    }
}

/// Takes the host port `r` asks for and forwards it to `target`. `who` names the
/// container in errors.
pub fn bind(
    r: &PortReq,
    target: Ipv4Addr,
    rt: &tokio::runtime::Handle,
    who: &str,
) -> Result<Proxy> {
    let ip = r.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let (lo, hi) = r.host_ports;
    let mut last = None;
    let mut got = None;
    for p in lo..=hi {
        match bind_one(&r.proto, SocketAddr::new(ip.into(), p)) {
            Ok(b) => {
                got = Some(b);
                break;
            }
            Err(e) => last = Some((p, e)),
        }
    }
    let (bound, host_port) = got.ok_or_else(|| {
        let (p, e) = last.expect("a port range is never empty");
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            "bind: address already in use".to_owned()
        } else {
            e.to_string()
        };
        Error::Conflict(format!(
            "driver failed programming external connectivity on endpoint {who}: Error starting userland proxy: listen {}4 {ip}:{p}: {why}",
            r.proto
        ))
    })?;
    let to = SocketAddr::new(target.into(), r.port);
    let task = match bound {
        Bound::Tcp(l) => rt.spawn(tcp(l, to)),
        Bound::Udp(s) => rt.spawn(udp(s, to)),
    };
    Ok(Proxy {
        published: Published {
            proto: r.proto.clone(),
            port: r.port,
            host_ip: r.host_ip,
            host_port,
        },
        task,
    })
}

/// The TCP proxy's buffer, each way.
const PROXY_BUF: usize = 64 << 10;

async fn tcp(l: std::net::TcpListener, to: SocketAddr) {
    let Ok(l) = tokio::net::TcpListener::from_std(l) else {
        return;
    };
    loop {
        let Ok((mut c, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(Ok(mut up)) =
                tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(to))
                    .await
            {
                let _ = c.set_nodelay(true);
                let _ = up.set_nodelay(true);
                // 64 KiB buffers: a bulk transfer moves in fewer, larger writes.
                let _ =
                    tokio::io::copy_bidirectional_with_sizes(&mut c, &mut up, PROXY_BUF, PROXY_BUF)
                        .await;
            }
        });
    }
}

/// How long a UDP flow's upstream socket lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(90);

async fn udp(s: std::net::UdpSocket, to: SocketAddr) {
    let Ok(s) = tokio::net::UdpSocket::from_std(s) else {
        return;
    };
    let s = Arc::new(s);
    let flows: Arc<tokio::sync::Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> =
        Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf).await else {
            continue;
        };
        let up = {
            let mut f = flows.lock().await;
            match f.get(&from) {
                Some(u) => u.clone(),
                None => {
                    let Ok(u) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else {
                        continue;
                    };
                    if u.connect(to).await.is_err() {
                        continue;
                    }
                    let u = Arc::new(u);
                    f.insert(from, u.clone());
                    let (back, u2, flows2) = (s.clone(), u.clone(), flows.clone());
                    tokio::spawn(async move {
                        let mut b = vec![0u8; 65536];
                        while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut b)).await
                        {
                            let _ = back.send_to(&b[..n], from).await;
                        }
                        flows2.lock().await.remove(&from);
                    });
                    u
                }
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(k: &str, ip: &str, port: &str) -> docker::PortMap {
        [(
            k.to_string(),
            Some(vec![docker::PortBinding {
                host_ip: Some(ip.into()),
                host_port: Some(port.into()),
            }]),
        )]
        .into()
    }

    #[test]
    fn requests_read_dockers_port_bindings() {
        let r = requests(Some(&pm("80/tcp", "", "8080")), false, &[]).unwrap();
        assert_eq!(r[0].host_ports, (8080, 8080));
        assert_eq!(r[0].host_ip, None);
        let r = requests(Some(&pm("53/udp", "127.0.0.1", "")), false, &[]).unwrap();
        assert_eq!((r[0].proto.as_str(), r[0].host_ports), ("udp", (0, 0)));
        assert_eq!(r[0].host_ip, Some(Ipv4Addr::LOCALHOST));
        let r = requests(Some(&pm("80", "", "9000-9005")), false, &[]).unwrap();
        assert_eq!(r[0].host_ports, (9000, 9005));
        assert!(requests(Some(&pm("80/tcp", "", "x")), false, &[]).is_err());
        assert!(requests(Some(&pm("0/tcp", "", "1")), false, &[]).is_err());
        assert!(matches!(
            requests(Some(&pm("80/sctp", "", "1")), false, &[]),
            Err(Error::NotImplemented(_))
        ));
        assert!(matches!(
            requests(Some(&pm("80/tcp", "::1", "1")), false, &[]),
            Err(Error::NotImplemented(_))
        ));
        let r = requests(
            Some(&pm("80/tcp", "", "8080")),
            true,
            &["80/tcp".into(), "443/tcp".into()],
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].port, r[1].host_ports), (443, (0, 0)));
    }

    #[test]
    fn a_taken_port_is_an_error_naming_it_and_a_proxy_forwards() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bport = backend.local_addr().unwrap().port();
        let req = PortReq {
            proto: "tcp".into(),
            port: bport,
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_ports: (0, 0),
        };
        let p = bind(&req, Ipv4Addr::LOCALHOST, rt.handle(), "t").unwrap();
        let hp = p.published.host_port;
        assert_ne!(hp, 0);
        let again = PortReq {
            host_ports: (hp, hp),
            ..req.clone()
        };
        let e = bind(&again, Ipv4Addr::LOCALHOST, rt.handle(), "t2")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("address already in use") && e.contains(&hp.to_string()),
            "{e}"
        );
        let t = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = backend.accept().unwrap();
            s.write_all(b"hello").unwrap();
        });
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", hp)).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        t.join().unwrap();
        drop(p);
        std::thread::sleep(Duration::from_millis(100));
        // Freed once dropped.
        std::net::TcpListener::bind(("127.0.0.1", hp)).unwrap();
    }
}
