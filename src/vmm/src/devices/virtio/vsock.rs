//! virtio-vsock in Firecracker's hybrid form: guest streams are bridged to host Unix
//! sockets, no vhost needed.
//!
//! - Host → guest: a host program connects to the VM's socket (`uds`), writes
//!   `CONNECT <port>\n`; once the guest accepts, the monitor answers `OK <hostport>\n` and
//!   the stream carries the connection's bytes.
//! - Guest → host: a guest connection to (CID 2, port P) is bridged to the Unix socket
//!   `<uds>_P`, which a host program listens on.
//!
//! Flow control follows the virtio-vsock credit scheme: the monitor never sends the guest
//! more than the guest's advertised buffer allows, and advertises [`CONN_BUF`] bytes of its
//! own, buffering what the host socket can't take yet.

use super::{
    ids, read_config_bytes, Activation, Registrar, RxTx, VirtioDevice, VIRTIO_F_VERSION_1,
};
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_queue::{QueueOwnedT, QueueT};

use vmm_sys_util::epoll::EventSet;

/// The host's context ID.
pub const HOST_CID: u64 = 2;
/// Bytes of guest data the monitor buffers per connection (its advertised buf_alloc).
pub const CONN_BUF: u32 = 256 * 1024;
/// Largest payload accepted from the guest in one packet.
const MAX_PKT_PAYLOAD: usize = 64 * 1024;
const HDR_LEN: usize = 44;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const SHUTDOWN_RCV: u32 = 1;
const SHUTDOWN_SEND: u32 = 2;
const RXQ: usize = 0;
const TXQ: usize = 1;
const EVQ: usize = 2;
/// The event a driver gets when its device's transport was reset (virtio 1.1 §5.10.6.7).
const EVENT_TRANSPORT_RESET: u32 = 0;
/// First local port handed to host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// Longest `CONNECT <port>\n` line accepted.
const MAX_CONNECT_LINE: usize = 32;
/// Control packets (responses, resets, credit updates) the monitor keeps for a guest that
/// has not posted receive buffers; past this, it stops taking the guest's transmit queue
/// until some went out (a guest that never reads cannot grow the monitor's memory).
const MAX_CONTROL: usize = 256;
/// Connections one microVM may have open through its vsock; a request beyond is reset.
const MAX_CONNECTIONS: usize = 1024;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The host socket can't be created.
    #[error("vsock socket {path}: {err}")]
    Bind {
        /// The path.
        path: String,
        /// Why.
        err: std::io::Error,
    },
}

/// A vsock packet header (virtio 1.1 §5.10.6), little endian on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1 = stream).
    pub kind: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes a header.
    pub fn decode(b: &[u8; HDR_LEN]) -> Header {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16::from_le_bytes([b[28], b[29]]),
            op: u16::from_le_bytes([b[30], b[31]]),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes a header.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// (local port on the host side, the guest's port).
type Key = (u32, u32);

#[derive(Debug, PartialEq, Eq)]
enum ConnState {
    /// Host-initiated, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

struct Conn {
    stream: UnixStream,
    state: ConnState,
    /// The guest's receive buffer and how much of it the guest has consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    /// Bytes of guest data written to the host socket, and the value last told the guest.
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    /// Guest data the host socket could not take yet.
    to_host: VecDeque<u8>,
    /// The host socket may have data to read (edge-triggered).
    readable: bool,
    /// The host sent EOF; the guest was told.
    host_eof: bool,
    /// The guest will send no more: shut the socket's write side once `to_host` drains.
    guest_done_sending: bool,
    watching_out: bool,
}

impl Conn {
    fn new(stream: UnixStream, state: ConnState, peer: &Header) -> Conn {
        Conn {
            stream,
            state,
            peer_buf_alloc: peer.buf_alloc,
            peer_fwd_cnt: peer.fwd_cnt,
            tx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            to_host: VecDeque::new(),
            readable: true,
            host_eof: false,
            guest_done_sending: false,
            watching_out: false,
        }
    }

    /// Bytes the guest can still take.
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Writes buffered guest data to the host socket. Err on a broken socket.
    fn flush_to_host(&mut self) -> std::io::Result<()> {
        while !self.to_host.is_empty() {
            let (a, _) = self.to_host.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.guest_done_sending {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

/// The vsock device.
pub struct Vsock {
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    config: [u8; 8],
    state: Option<RxTx>,
    /// Host connections that have not sent their CONNECT line yet.
    handshakes: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    conns: HashMap<Key, Conn>,
    by_fd: HashMap<RawFd, Key>,
    /// Control packets waiting for a guest receive buffer.
    control: VecDeque<Header>,
    /// Host connections' requests waiting for a guest receive buffer: apart from
    /// `control`, whose cap holds the guest's transmit queue (a guest that has as many
    /// replies to send as it has receive buffers stops reading until it can send them;
    /// holding its transmit queue for requests it did not ask for would stall both).
    requests: VecDeque<Header>,
    next_port: u32,
    /// The transmit queue was left with packets because `control` was full.
    tx_held: bool,
}

impl Vsock {
    /// Listens on `uds` for host connections to guest `cid`.
    pub fn new(cid: u32, uds: &Path) -> Result<Vsock, VsockError> {
        let listener = UnixListener::bind(uds).map_err(|err| VsockError::Bind {
            path: uds.display().to_string(),
            err,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| VsockError::Bind {
                path: uds.display().to_string(),
                err,
            })?;
        Ok(Vsock {
            cid: u64::from(cid),
            uds: uds.to_owned(),
            listener,
            config: u64::from(cid).to_le_bytes(),
            state: None,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            control: VecDeque::new(),
            requests: VecDeque::new(),
            next_port: FIRST_HOST_PORT,
            tx_held: false,
        })
    }

    /// A header from the host to the guest for connection `key`.
    fn reply(&self, key: Key, op: u16, flags: u32) -> Header {
        let fwd_cnt = self.conns.get(&key).map(|c| c.fwd_cnt).unwrap_or(0);
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF,
            fwd_cnt,
        }
    }

    fn registrar(&self) -> Option<&Registrar> {
        self.state.as_ref().map(|a| &a.registrar)
    }

    fn watch(&self, fd: RawFd, out: bool) {
        if let Some(r) = self.registrar() {
            let mut ev = EventSet::IN | EventSet::EDGE_TRIGGERED | EventSet::READ_HANG_UP;
            if out {
                ev |= EventSet::OUT;
            }
            if r.modify(fd, ev).is_err() {
                let _ = r.add(fd, ev);
            }
        }
    }

    fn drop_conn(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            let fd = c.stream.as_raw_fd();
            self.by_fd.remove(&fd);
            if let Some(r) = self.registrar() {
                r.remove(fd);
            }
        }
    }

    /// Resets a connection: tells the guest and closes the host socket.
    fn reset_conn(&mut self, key: Key) {
        let h = self.reply(key, OP_RST, 0);
        self.control.push_back(h);
        self.drop_conn(key);
    }

    fn alloc_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.conns.contains_key(&(p, guest_port)) {
                return p;
            }
        }
    }

    // ---- guest → host ----

    fn process_tx(&mut self) {
        let Some(mut a) = self.state.take() else {
            return;
        };
        let mut used = false;
        self.tx_held = false;
        loop {
            if self.control.len() >= MAX_CONTROL {
                self.tx_held = true;
                break;
            }
            let Some(chain) = super::pop(&mut a.tx, &a.mem, &a.irq) else {
                break;
            };
            let head = chain.head_index();
            let pkt = chain.reader(&a.mem).ok().and_then(|mut r| {
                let mut hb = [0u8; HDR_LEN];
                r.read_exact(&mut hb).ok()?;
                let hdr = Header::decode(&hb);
                let len = hdr.len as usize;
                if len > MAX_PKT_PAYLOAD || len > r.available_bytes() {
                    return Some((hdr, None));
                }
                let mut payload = vec![0u8; len];
                r.read_exact(&mut payload).ok()?;
                Some((hdr, Some(payload)))
            });
            let _ = a.tx.add_used(&a.mem, head, 0);
            used = true;
            self.state = Some(a);
            if let Some((hdr, payload)) = pkt {
                self.guest_packet(hdr, payload);
            }
            a = self.state.take().expect("state restored above");
        }
        if used && a.tx.needs_notification(&a.mem).unwrap_or(true) {
            a.irq.signal_used();
        }
        self.state = Some(a);
    }

    /// Handles one packet from the guest. `payload` is None when its length was invalid.
    fn guest_packet(&mut self, hdr: Header, payload: Option<Vec<u8>>) {
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.src_cid != self.cid
            || hdr.dst_cid != HOST_CID
            || hdr.kind != TYPE_STREAM
            || payload.is_none()
        {
            if hdr.op != OP_RST {
                self.control.push_back(self.reply(key, OP_RST, 0));
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = hdr.buf_alloc;
            c.peer_fwd_cnt = hdr.fwd_cnt;
        }
        match hdr.op {
            OP_REQUEST => self.guest_connect(key, &hdr),
            OP_RESPONSE => {
                let Some(c) = self.conns.get_mut(&key) else {
                    self.control.push_back(self.reply(key, OP_RST, 0));
                    return;
                };
                if c.state == ConnState::Connecting {
                    c.state = ConnState::Established;
                    let line = format!("OK {}\n", key.0);
                    if c.stream.write_all(line.as_bytes()).is_err() {
                        self.reset_conn(key);
                    }
                }
            }
            OP_RST => self.drop_conn(key),
            OP_SHUTDOWN => {
                let Some(c) = self.conns.get_mut(&key) else {
                    return;
                };
                if hdr.flags & SHUTDOWN_SEND != 0 {
                    c.guest_done_sending = true;
                }
                if hdr.flags & (SHUTDOWN_SEND | SHUTDOWN_RCV) == SHUTDOWN_SEND | SHUTDOWN_RCV {
                    // The guest closed: deliver what is buffered, then reset.
                    let _ = c.stream.set_nonblocking(false);
                    let _ = c
                        .stream
                        .set_write_timeout(Some(std::time::Duration::from_millis(200)));
                    let _ = c.flush_to_host();
                    self.reset_conn(key);
                } else if c.to_host.is_empty() && c.guest_done_sending {
                    let _ = c.stream.shutdown(std::net::Shutdown::Write);
                }
            }
            OP_RW => {
                let Some(c) = self.conns.get_mut(&key) else {
                    self.control.push_back(self.reply(key, OP_RST, 0));
                    return;
                };
                let data = payload.unwrap_or_default();
                if c.to_host.len() + data.len() > CONN_BUF as usize {
                    // The guest ignored our credit.
                    self.reset_conn(key);
                    return;
                }
                c.to_host.extend(data);
                let fd = c.stream.as_raw_fd();
                let broken = c.flush_to_host().is_err();
                let want_out = !c.to_host.is_empty();
                let update = c.fwd_cnt.wrapping_sub(c.fwd_cnt_sent) >= CONN_BUF / 2;
                if broken {
                    self.reset_conn(key);
                    return;
                }
                if want_out != c.watching_out {
                    c.watching_out = want_out;
                    self.watch(fd, want_out);
                }
                if update {
                    self.credit_update(key);
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => self.credit_update(key),
            _ => self.reset_conn(key),
        }
    }

    fn credit_update(&mut self, key: Key) {
        if let Some(c) = self.conns.get_mut(&key) {
            c.fwd_cnt_sent = c.fwd_cnt;
            let h = self.reply(key, OP_CREDIT_UPDATE, 0);
            self.control.push_back(h);
        }
    }

    /// The guest connects to host port `key.0`: bridge to `<uds>_<port>`.
    fn guest_connect(&mut self, key: Key, hdr: &Header) {
        if self.conns.contains_key(&key) {
            self.reset_conn(key);
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            self.control.push_back(self.reply(key, OP_RST, 0));
            return;
        }
        let path = format!("{}_{}", self.uds.display(), key.0);
        match UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
            Ok(stream) => {
                let fd = stream.as_raw_fd();
                self.conns
                    .insert(key, Conn::new(stream, ConnState::Established, hdr));
                self.by_fd.insert(fd, key);
                self.watch(fd, false);
                self.control.push_back(self.reply(key, OP_RESPONSE, 0));
            }
            Err(_) => self.control.push_back(self.reply(key, OP_RST, 0)),
        }
    }

    /// Takes the transmit queue again once control packets held it back went out.
    fn resume_tx(&mut self) {
        if self.tx_held && self.control.len() < MAX_CONTROL {
            self.process_tx();
            self.process_rx();
        }
    }

    // ---- host → guest ----

    fn host_accept(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = s.as_raw_fd();
            if let Some(r) = self.registrar() {
                if r.add(fd, EventSet::IN | EventSet::READ_HANG_UP).is_err() {
                    continue;
                }
            }
            self.handshakes.insert(fd, (s, Vec::new()));
        }
    }

    /// Reads a host connection's `CONNECT <port>\n`, a byte at a time so that no data
    /// after the line is consumed.
    fn host_handshake(&mut self, fd: RawFd) {
        let Some((s, line)) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut b = [0u8; 1];
        let done = loop {
            match s.read(&mut b) {
                Ok(0) => break Err(()),
                Ok(_) => {
                    line.push(b[0]);
                    if b[0] == b'\n' {
                        break Ok(());
                    }
                    if line.len() > MAX_CONNECT_LINE {
                        break Err(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break Err(()),
            }
        };
        let (s, line) = self.handshakes.remove(&fd).expect("present above");
        let port = done.ok().and_then(|_| parse_connect(&line));
        let Some(port) = port else {
            if let Some(r) = self.registrar() {
                r.remove(fd);
            }
            return; // dropping `s` closes it
        };
        let local = self.alloc_port(port);
        let key = (local, port);
        let peer = Header::default();
        self.conns
            .insert(key, Conn::new(s, ConnState::Connecting, &peer));
        self.by_fd.insert(fd, key);
        self.watch(fd, false);
        self.requests.push_back(self.reply(key, OP_REQUEST, 0));
    }

    /// Fills guest receive buffers with control packets, then data from readable host
    /// sockets, within each connection's credit.
    fn process_rx(&mut self) {
        let Some(mut a) = self.state.take() else {
            return;
        };
        let mut used = false;
        let mut buf = vec![0u8; MAX_PKT_PAYLOAD];
        'chains: loop {
            // What to send next: a control packet, or data from some connection.
            let next_data = self
                .conns
                .iter()
                .find(|(_, c)| {
                    c.state == ConnState::Established
                        && c.readable
                        && !c.host_eof
                        && c.peer_credit() > 0
                })
                .map(|(k, _)| *k);
            if self.control.is_empty() && self.requests.is_empty() && next_data.is_none() {
                break;
            }
            let Some(chain) = super::pop(&mut a.rx, &a.mem, &a.irq) else {
                break;
            };
            let head = chain.head_index();
            let Ok(mut w) = chain.writer(&a.mem) else {
                let _ = a.rx.add_used(&a.mem, head, 0);
                used = true;
                continue;
            };
            if w.available_bytes() < HDR_LEN {
                let _ = a.rx.add_used(&a.mem, head, 0);
                used = true;
                continue;
            }
            let mut sent = None;
            if let Some(h) = self
                .control
                .pop_front()
                .or_else(|| self.requests.pop_front())
            {
                sent = Some((h, 0usize));
            } else if let Some(key) = next_data {
                let room = (w.available_bytes() - HDR_LEN).min(MAX_PKT_PAYLOAD);
                let c = self.conns.get_mut(&key).expect("found above");
                let want = room.min(c.peer_credit() as usize);
                match c.stream.read(&mut buf[..want]) {
                    Ok(0) => {
                        c.host_eof = true;
                        let h = self.reply(key, OP_SHUTDOWN, SHUTDOWN_SEND);
                        sent = Some((h, 0));
                    }
                    Ok(n) => {
                        c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
                        let mut h = self.reply(key, OP_RW, 0);
                        h.len = n as u32;
                        sent = Some((h, n));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.readable = false,
                    Err(_) => {
                        self.drop_conn(key);
                        sent = Some((self.reply(key, OP_RST, 0), 0));
                    }
                }
            }
            match sent {
                Some((h, n)) => {
                    let ok = w.write_all(&h.encode()).is_ok() && w.write_all(&buf[..n]).is_ok();
                    let _ =
                        a.rx.add_used(&a.mem, head, if ok { (HDR_LEN + n) as u32 } else { 0 });
                    used = true;
                }
                None => {
                    // Nothing after all (the socket was drained): give the buffer back.
                    a.rx.go_to_previous_position();
                    continue 'chains;
                }
            }
        }
        if used && a.rx.needs_notification(&a.mem).unwrap_or(true) {
            a.irq.signal_used();
        }
        self.state = Some(a);
    }

    fn host_event(&mut self, fd: RawFd, events: EventSet) {
        let Some(&key) = self.by_fd.get(&fd) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if events.contains(EventSet::OUT) {
            let broken = c.flush_to_host().is_err();
            if broken {
                self.reset_conn(key);
                return;
            }
            if c.to_host.is_empty() {
                c.watching_out = false;
                self.watch(fd, false);
                self.credit_update(key);
            }
        }
        if let Some(c) = self.conns.get_mut(&key) {
            if events.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
                c.readable = true;
            }
            if events.contains(EventSet::ERROR) {
                self.reset_conn(key);
            }
        }
    }
}

/// Puts a transport reset event in the driver's first event buffer and interrupts it.
fn transport_reset(q: &mut virtio_queue::Queue, a: &RxTx) -> Result<(), String> {
    use vm_memory::Bytes;
    let Some(chain) = super::pop(q, &a.mem, &a.irq) else {
        return Err("the restored guest's vsock driver posted no event buffer".into());
    };
    let head = chain.head_index();
    let mut written = 0;
    for d in chain {
        if d.is_write_only() && d.len() >= 4 {
            a.mem
                .write_obj(EVENT_TRANSPORT_RESET, d.addr())
                .map_err(|e| format!("writing the vsock reset event: {e}"))?;
            written = 4;
            break;
        }
    }
    let _ = q.add_used(&a.mem, head, written);
    a.irq.signal_used();
    Ok(())
}

/// Parses `CONNECT <port>\n`.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?;
    let s = s.strip_suffix('\n')?;
    s.strip_prefix("CONNECT ")?.trim().parse().ok()
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        ids::VSOCK
    }
    /// The receive queue holds 64 buffers: Linux's driver fills it with 4 KiB buffers at
    /// probe, so its size is guest memory touched at boot (1 MiB at 256) for a device that
    /// carries the agent's protocol, logs and stdio (docs/boot.md).
    fn queue_max_sizes(&self) -> &[u16] {
        &[64, 256, 256]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }
    fn activate(&mut self, mut a: Activation) -> Result<(), String> {
        let restored = a.restored;
        let events = (a.queues.len() > EVQ).then(|| a.queues.remove(EVQ));
        let active = RxTx::take(a, "virtio-vsock")?;
        if restored {
            // The guest's connections were to a monitor that is gone: as Firecracker
            // does after a restore, tell the driver its transport was reset, which
            // resets every connected socket (listening ones stay).
            match events {
                Some(mut q) => transport_reset(&mut q, &active)?,
                None => return Err("virtio-vsock restored without its event queue".into()),
            }
        }
        active
            .registrar
            .add(self.listener.as_raw_fd(), EventSet::IN)
            .map_err(|e| format!("watching {}: {e}", self.uds.display()))?;
        self.state = Some(active);
        Ok(())
    }
    fn process_queue(&mut self, index: usize) {
        match index {
            TXQ => self.process_tx(),
            RXQ => {}
            _ => return, // the event queue: berth sends no events
        }
        self.process_rx();
        self.resume_tx();
    }
    fn process_event(&mut self, fd: RawFd, events: EventSet) {
        if fd == self.listener.as_raw_fd() {
            self.host_accept();
        } else if self.handshakes.contains_key(&fd) {
            self.host_handshake(fd);
        } else {
            self.host_event(fd, events);
        }
        self.process_rx();
        self.resume_tx();
    }
    /// The next local port for a host connection: a restored guest may still hold the
    /// snapshot's connections, closing (a reset removes them only after the kernel's close
    /// timeout), and a new connection from the same port would be refused.
    fn snapshot_state(&self) -> serde_json::Value {
        serde_json::json!({ "next_port": self.next_port })
    }
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), String> {
        if let Some(p) = state.get("next_port").and_then(|p| p.as_u64()) {
            self.next_port = u32::try_from(p)
                .ok()
                .filter(|p| *p >= FIRST_HOST_PORT)
                .ok_or_else(|| format!("vsock: next_port {p} is out of range"))?;
        }
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(a) = self.state.take() {
            a.registrar.remove(self.listener.as_raw_fd());
            for fd in self.handshakes.keys().chain(self.by_fd.keys()) {
                a.registrar.remove(*fd);
            }
        }
        self.handshakes.clear();
        self.conns.clear();
        self.by_fd.clear();
        self.control.clear();
        self.requests.clear();
        self.tx_held = false;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const GUEST_CID: u64 = 3;

    fn d(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
    }

    struct Rig {
        dir: PathBuf,
        m: GuestMemoryMmap,
        rxq: MockSplitQueue<'static, GuestMemoryMmap>,
        txq: MockSplitQueue<'static, GuestMemoryMmap>,
        dev: Vsock,
        tx_next: u64,
        rx_seen: u16,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn rig(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("berth-vsock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let m: &'static GuestMemoryMmap = Box::leak(Box::new(mem()));
        let rxq = MockSplitQueue::create(m, GuestAddress(0x1000), 64);
        let txq = MockSplitQueue::create(m, GuestAddress(0x8000), 64);
        let mut dev = Vsock::new(GUEST_CID as u32, &dir.join("v.sock")).unwrap();
        dev.activate(activation(
            m,
            vec![
                rxq.create_queue().unwrap(),
                txq.create_queue().unwrap(),
                Queue::new(16).unwrap(),
            ],
        ))
        .unwrap();
        Rig {
            dir,
            m: m.clone(),
            rxq,
            txq,
            dev,
            tx_next: 0,
            rx_seen: 0,
        }
    }

    #[test]
    fn a_restored_device_tells_the_driver_its_transport_was_reset() {
        let dir = std::env::temp_dir().join(format!("berth-vsock-reset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let m: &'static GuestMemoryMmap = Box::leak(Box::new(mem()));
        let rxq = MockSplitQueue::create(m, GuestAddress(0x1000), 64);
        let txq = MockSplitQueue::create(m, GuestAddress(0x8000), 64);
        let evq = MockSplitQueue::create(m, GuestAddress(0xc000), 16);
        // The driver's event buffer holds garbage until the device writes the event.
        m.write_obj(0xffff_ffffu32, GuestAddress(0x20_0000))
            .unwrap();
        evq.add_desc_chains(&[d(0x20_0000, 8, VRING_DESC_F_WRITE)], 0)
            .unwrap();
        let mut dev = Vsock::new(GUEST_CID as u32, &dir.join("v.sock")).unwrap();
        let mut a = activation(
            m,
            vec![
                rxq.create_queue().unwrap(),
                txq.create_queue().unwrap(),
                evq.create_queue().unwrap(),
            ],
        );
        a.restored = true;
        dev.activate(a).unwrap();
        let used = evq.used();
        assert_eq!(used.idx().load(), 1, "one event buffer used");
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x20_0000)).unwrap(),
            EVENT_TRANSPORT_RESET
        );
        // A first activation sends nothing.
        let r = rig("no-reset");
        assert!(r.dev.state.is_some());
        // Host connections of the restored device take ports after the snapshot's.
        let mut fresh = Vsock::new(GUEST_CID as u32, &dir.join("w.sock")).unwrap();
        fresh
            .restore_state(&serde_json::json!({ "next_port": FIRST_HOST_PORT + 7 }))
            .unwrap();
        assert_eq!(fresh.snapshot_state()["next_port"], FIRST_HOST_PORT + 7);
        assert!(fresh
            .restore_state(&serde_json::json!({ "next_port": 5 }))
            .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    impl Rig {
        /// The guest sends a packet.
        fn send(&mut self, h: Header, payload: &[u8]) {
            let addr = 0x10_0000 + self.tx_next * 0x1_0000;
            self.tx_next += 1;
            let mut h = h;
            h.len = payload.len() as u32;
            self.m.write_slice(&h.encode(), GuestAddress(addr)).unwrap();
            self.m
                .write_slice(payload, GuestAddress(addr + HDR_LEN as u64))
                .unwrap();
            let descs = [d(addr, (HDR_LEN + payload.len()) as u32, 0)];
            self.txq
                .add_desc_chains(&descs, (self.tx_next - 1) as u16)
                .unwrap();
            self.dev.process_queue(TXQ);
        }

        /// The guest offers `n` receive buffers of 4 KiB + header.
        fn offer_rx(&mut self, n: u16) {
            for i in 0..n {
                let idx = self.rx_seen + i;
                let addr = 0x80_0000 + u64::from(idx) * 0x2000;
                self.rxq
                    .add_desc_chains(&[d(addr, (HDR_LEN + 4096) as u32, VRING_DESC_F_WRITE)], idx)
                    .unwrap();
            }
        }

        /// The packets the device has delivered since the last call.
        fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
            let used = self.rxq.used().idx().load();
            let mut out = vec![];
            while self.rx_seen < used {
                let e = self
                    .rxq
                    .used()
                    .ring()
                    .ref_at(self.rx_seen as usize)
                    .unwrap()
                    .load();
                let addr = 0x80_0000 + u64::from(e.id()) * 0x2000;
                let mut hb = [0u8; HDR_LEN];
                self.m.read_slice(&mut hb, GuestAddress(addr)).unwrap();
                let h = Header::decode(&hb);
                let mut p = vec![0u8; h.len as usize];
                self.m
                    .read_slice(&mut p, GuestAddress(addr + HDR_LEN as u64))
                    .unwrap();
                out.push((h, p));
                self.rx_seen += 1;
            }
            out
        }
    }

    fn guest_hdr(src_port: u32, dst_port: u32, op: u16) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            kind: TYPE_STREAM,
            op,
            buf_alloc: 64 * 1024,
            ..Default::default()
        }
    }

    #[test]
    fn a_guest_that_never_reads_its_replies_cannot_grow_them() {
        let mut r = rig("held");
        for i in 0..MAX_CONTROL as u32 {
            let h = r.dev.reply((i, 1), OP_RST, 0);
            r.dev.control.push_back(h);
        }
        r.send(guest_hdr(7, 9, OP_REQUEST), b"");
        assert!(r.dev.tx_held);
        assert_eq!(r.dev.control.len(), MAX_CONTROL);
        assert_eq!(
            r.txq.used().idx().load(),
            0,
            "the request waits in the guest's ring"
        );
        r.offer_rx(64);
        r.dev.process_queue(RXQ);
        assert_eq!(r.received().len(), 64);
        assert_eq!(r.txq.used().idx().load(), 1, "taken once replies went out");
        assert!(!r.dev.tx_held);
        assert_eq!(r.dev.control.len(), MAX_CONTROL - 64 + 1);
    }

    #[test]
    fn header_round_trips() {
        let h = guest_hdr(1, 2, OP_RW);
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[test]
    fn connect_lines_are_parsed_strictly() {
        assert_eq!(parse_connect(b"CONNECT 52\n"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52"), None);
        assert_eq!(parse_connect(b"connect 52\n"), None);
        assert_eq!(parse_connect(b"CONNECT x\n"), None);
    }

    #[test]
    fn host_connects_to_a_guest_port_and_bytes_flow_both_ways() {
        let mut r = rig("h2g");
        r.offer_rx(8);
        let mut host = UnixStream::connect(r.dir.join("v.sock")).unwrap();
        r.dev
            .process_event(r.dev.listener.as_raw_fd(), EventSet::IN);
        host.write_all(b"CONNECT 1234\n").unwrap();
        let fd = *r.dev.handshakes.keys().next().unwrap();
        r.dev.process_event(fd, EventSet::IN);
        let pkts = r.received();
        assert_eq!(pkts.len(), 1);
        let req = pkts[0].0;
        assert_eq!(
            (req.op, req.dst_port, req.dst_cid),
            (OP_REQUEST, 1234, GUEST_CID)
        );
        // The guest accepts.
        r.send(guest_hdr(1234, req.src_port, OP_RESPONSE), &[]);
        let mut line = [0u8; 64];
        let n = host.read(&mut line).unwrap();
        assert_eq!(
            std::str::from_utf8(&line[..n]).unwrap(),
            format!("OK {}\n", req.src_port)
        );
        // Host → guest data.
        host.write_all(b"ping").unwrap();
        r.dev.process_event(fd, EventSet::IN);
        let pkts = r.received();
        assert_eq!(pkts.len(), 1);
        assert_eq!((pkts[0].0.op, &pkts[0].1[..]), (OP_RW, &b"ping"[..]));
        // Guest → host data.
        r.send(guest_hdr(1234, req.src_port, OP_RW), b"pong");
        let n = host.read(&mut line).unwrap();
        assert_eq!(&line[..n], b"pong");
        // Host EOF becomes a SHUTDOWN to the guest.
        host.shutdown(std::net::Shutdown::Write).unwrap();
        r.dev
            .process_event(fd, EventSet::IN | EventSet::READ_HANG_UP);
        let pkts = r.received();
        assert_eq!(pkts.last().unwrap().0.op, OP_SHUTDOWN);
    }

    #[test]
    fn a_bad_connect_line_closes_the_socket() {
        let r = &mut rig("badline");
        let mut host = UnixStream::connect(r.dir.join("v.sock")).unwrap();
        r.dev
            .process_event(r.dev.listener.as_raw_fd(), EventSet::IN);
        host.write_all(b"HELLO\n").unwrap();
        let fd = *r.dev.handshakes.keys().next().unwrap();
        r.dev.process_event(fd, EventSet::IN);
        let mut b = [0u8; 8];
        assert_eq!(host.read(&mut b).unwrap(), 0);
        assert!(r.dev.conns.is_empty());
    }

    #[test]
    fn guest_connects_to_a_host_listener() {
        let mut r = rig("g2h");
        r.offer_rx(8);
        let l = UnixListener::bind(format!("{}_5000", r.dir.join("v.sock").display())).unwrap();
        r.send(guest_hdr(40000, 5000, OP_REQUEST), &[]);
        let (mut s, _) = l.accept().unwrap();
        let pkts = r.received();
        assert_eq!(pkts[0].0.op, OP_RESPONSE);
        r.send(guest_hdr(40000, 5000, OP_RW), b"hello host");
        let mut b = [0u8; 32];
        let n = s.read(&mut b).unwrap();
        assert_eq!(&b[..n], b"hello host");
        // Nobody listens on port 5001: the guest gets RST.
        r.send(guest_hdr(40001, 5001, OP_REQUEST), &[]);
        assert_eq!(r.received()[0].0.op, OP_RST);
    }

    #[test]
    fn host_data_never_exceeds_the_guests_credit() {
        let mut r = rig("credit");
        r.offer_rx(16);
        let l = UnixListener::bind(format!("{}_6000", r.dir.join("v.sock").display())).unwrap();
        let mut h = guest_hdr(40000, 6000, OP_REQUEST);
        h.buf_alloc = 1000;
        r.send(h, &[]);
        let (mut s, _) = l.accept().unwrap();
        r.received();
        s.write_all(&[7u8; 5000]).unwrap();
        let fd = r.dev.conns.values().next().unwrap().stream.as_raw_fd();
        r.dev.process_event(fd, EventSet::IN);
        let total: usize = r.received().iter().map(|(_, p)| p.len()).sum();
        assert_eq!(total, 1000);
        // The guest consumed it all: more flows.
        let mut upd = guest_hdr(40000, 6000, OP_CREDIT_UPDATE);
        upd.buf_alloc = 1000;
        upd.fwd_cnt = 1000;
        r.send(upd, &[]);
        let total: usize = r.received().iter().map(|(_, p)| p.len()).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn malformed_packets_get_a_reset_and_break_nothing() {
        let mut r = rig("bad");
        r.offer_rx(8);
        // Wrong source CID.
        let mut h = guest_hdr(1, 2, OP_REQUEST);
        h.src_cid = 99;
        r.send(h, &[]);
        // A length larger than the buffer.
        let mut h = guest_hdr(1, 2, OP_RW);
        h.len = 1 << 30;
        let addr = 0x10_0000 + r.tx_next * 0x1_0000;
        r.m.write_slice(&h.encode(), GuestAddress(addr)).unwrap();
        r.txq
            .add_desc_chains(&[d(addr, HDR_LEN as u32, 0)], r.tx_next as u16)
            .unwrap();
        r.tx_next += 1;
        r.dev.process_queue(TXQ);
        // Data for a connection that does not exist.
        r.send(guest_hdr(7, 8, OP_RW), b"x");
        let pkts = r.received();
        assert_eq!(pkts.len(), 3);
        assert!(pkts.iter().all(|(h, _)| h.op == OP_RST));
        // A descriptor outside guest memory.
        r.txq
            .add_desc_chains(&[d(0xffff_0000_0000, 44, 0)], r.tx_next as u16)
            .unwrap();
        r.dev.process_queue(TXQ);
    }
}
