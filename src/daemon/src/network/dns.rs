//! The embedded DNS server of a user-defined network, as Docker's 127.0.0.11: containers
//! on the network resolve each other by container name, network alias, short ID and
//! hostname; every other name is forwarded to the container's `--dns` servers or the
//! host's. It listens on the network's gateway address (port 53, UDP), which is the one
//! nameserver in the containers' resolv.conf: no rules or sockets inside each container
//! are needed, and a microVM reaches it the same way. Messages are parsed and written
//! with `hickory-proto`.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What the server knows: the daemon's containers.
pub trait Directory: Send + Sync + 'static {
    /// The addresses `name` (lower case, no trailing dot) has for the container at
    /// `from` on network `net`: on `net` first, then on its other networks. None when no
    /// running container on `net` has the address `from` (its question is refused).
    fn lookup(&self, net: &str, from: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// Where to forward other names asked by the container at `from` on `net` (none for
    /// an internal network, which reaches nothing outside).
    fn upstreams(&self, net: &str, from: Ipv4Addr) -> Vec<SocketAddr>;
    /// The network's name (for `name.network` queries).
    fn network_name(&self, net: &str) -> Option<String>;
}

/// How long a forwarded query waits for each upstream.
const FORWARD_WAIT: Duration = Duration::from_secs(3);

/// A running server; dropping it stops it.
pub struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the server of network `net` on `addr`:53.
pub fn serve(
    net: String,
    addr: Ipv4Addr,
    dir: Arc<dyn Directory>,
    rt: &tokio::runtime::Handle,
) -> std::io::Result<Server> {
    let s = std::net::UdpSocket::bind((addr, 53))?;
    s.set_nonblocking(true)?;
    let task = rt.spawn(async move {
        let Ok(s) = tokio::net::UdpSocket::from_std(s) else {
            return;
        };
        let s = Arc::new(s);
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                continue;
            };
            let q = buf[..n].to_vec();
            let (s, dir, net) = (s.clone(), dir.clone(), net.clone());
            tokio::spawn(async move {
                if let Some(reply) = answer(&q, from, &net, dir.as_ref()).await {
                    let _ = s.send_to(&reply, from).await;
                }
            });
        }
    });
    Ok(Server(task))
}

/// The reply to one query (None: not a query worth answering).
pub async fn answer(q: &[u8], from: SocketAddr, net: &str, dir: &dyn Directory) -> Option<Vec<u8>> {
    let msg = Message::from_vec(q).ok()?;
    if msg.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true);
    let Some(query) = msg.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply.to_vec().ok();
    };
    reply.add_query(query.clone());
    let mut name = query.name().to_ascii().to_ascii_lowercase();
    if name.ends_with('.') {
        name.pop();
    }
    let client = match from.ip() {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let Some(mut ips) = dir.lookup(net, client, &name) else {
        // Not one of the network's containers: nothing is told to strangers.
        reply.set_response_code(ResponseCode::Refused);
        return reply.to_vec().ok();
    };
    if ips.is_empty() {
        if let Some(short) = dir.network_name(net).and_then(|n| {
            name.strip_suffix(&format!(".{}", n.to_ascii_lowercase()))
                .map(str::to_owned)
        }) {
            ips = dir.lookup(net, client, &short).unwrap_or_default();
        }
    }
    if !ips.is_empty() {
        // A container's name: its addresses for A, no other records (no forwarding).
        if matches!(query.query_type(), RecordType::A | RecordType::ANY) {
            for ip in ips {
                reply.add_answer(Record::from_rdata(
                    query.name().clone(),
                    600,
                    RData::A(A::from(ip)),
                ));
            }
        }
        return reply.to_vec().ok();
    }
    for up in dir.upstreams(net, client) {
        if let Some(r) = forward(q, up).await {
            return Some(r);
        }
    }
    reply.set_response_code(ResponseCode::ServFail);
    reply.to_vec().ok()
}

async fn forward(q: &[u8], up: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = tokio::net::UdpSocket::bind(bind).await.ok()?;
    s.connect(up).await.ok()?;
    s.send(q).await.ok()?;
    let mut b = vec![0u8; 4096];
    let n = tokio::time::timeout(FORWARD_WAIT, s.recv(&mut b))
        .await
        .ok()?
        .ok()?;
    b.truncate(n);
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    struct Dir(Option<SocketAddr>);

    impl Directory for Dir {
        fn lookup(&self, net: &str, from: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
            if from != Ipv4Addr::new(10, 0, 0, 3) {
                return None;
            }
            Some(match (net, name) {
                ("n1", "web") | ("n1", "alias") => vec![Ipv4Addr::new(10, 0, 0, 2)],
                _ => vec![],
            })
        }
        fn upstreams(&self, _: &str, _: Ipv4Addr) -> Vec<SocketAddr> {
            self.0.into_iter().collect()
        }
        fn network_name(&self, _: &str) -> Option<String> {
            Some("front".into())
        }
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn ask(d: &Dir, name: &str, t: RecordType) -> Message {
        ask_from(d, name, t, "10.0.0.3:5000")
    }

    fn ask_from(d: &Dir, name: &str, t: RecordType, from: &str) -> Message {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let from: SocketAddr = from.parse().unwrap();
        let r = rt.block_on(answer(&query(name, t), from, "n1", d)).unwrap();
        Message::from_vec(&r).unwrap()
    }

    #[test]
    fn names_on_the_network_resolve_and_others_are_forwarded() {
        let d = Dir(None);
        for n in ["web.", "WEB.", "alias.", "web.front."] {
            let m = ask(&d, n, RecordType::A);
            assert_eq!(m.id(), 7);
            assert_eq!(m.answers().len(), 1, "{n}");
            assert_eq!(m.answers()[0].data(), &RData::A(A::new(10, 0, 0, 2)));
        }
        let m = ask(&d, "web.", RecordType::AAAA);
        assert_eq!(
            (m.response_code(), m.answers().len()),
            (ResponseCode::NoError, 0)
        );
        // A stranger gets nothing, not even forwarding.
        let m = ask_from(&d, "web.", RecordType::A, "10.9.9.9:53");
        assert_eq!(
            (m.response_code(), m.answers().len()),
            (ResponseCode::Refused, 0)
        );
        // Unknown, with nowhere to forward: SERVFAIL.
        assert_eq!(
            ask(&d, "db.", RecordType::A).response_code(),
            ResponseCode::ServFail
        );
        // Forwarded to an upstream, its answer relayed as it is.
        let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = up.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut b = [0u8; 512];
            let (n, from) = up.recv_from(&mut b).unwrap();
            let q = Message::from_vec(&b[..n]).unwrap();
            let mut r = Message::new();
            r.set_id(q.id()).set_message_type(MessageType::Response);
            r.add_query(q.queries()[0].clone());
            r.add_answer(Record::from_rdata(
                q.queries()[0].name().clone(),
                5,
                RData::A(A::new(192, 0, 2, 1)),
            ));
            up.send_to(&r.to_vec().unwrap(), from).unwrap();
        });
        let m = ask(&Dir(Some(addr)), "example.org.", RecordType::A);
        assert_eq!(m.answers()[0].data(), &RData::A(A::new(192, 0, 2, 1)));
        t.join().unwrap();
    }
}
