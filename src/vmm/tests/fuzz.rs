//! Fuzzing what a guest feeds the monitor: the virtqueue parsing of virtio-blk,
//! virtio-net and virtio-vsock (through their MMIO transports, as a guest driver reaches
//! them) and the vsock packet header codec. See docs/fuzzing.md.
//!
//! Each input is a small program a hostile guest driver runs: MMIO register reads and
//! writes (handshakes, queue addresses, notifies, config space), descriptor-table and
//! avail-ring entries and raw bytes written into guest memory, and host-side events (a
//! frame arriving on the tap, a host connection on the vsock socket). The runner
//! generates and mutates inputs from a seeded PRNG for a bounded time; a panic is a
//! crash, saved under `target/fuzz-crashes/` with the seed that found it.
//!
//! In the test suite each target runs for 2 s (`BERTH_FUZZ_SECS` sets it: run long with
//! `BERTH_FUZZ_SECS=600 cargo test --release -p berth-vmm --test fuzz -- --nocapture`).
//! `BERTH_FUZZ_SEED` repeats a run; `BERTH_FUZZ_REPRO=FILE` runs one saved input.

use berth_vmm::devices::virtio::block::Block;
use berth_vmm::devices::virtio::net::Net;
use berth_vmm::devices::virtio::vsock::{Header, Vsock};
use berth_vmm::devices::virtio::{MmioTransport, Registrar, VirtioDevice};
use berth_vmm::devices::BusDevice;
use std::io::Write;
use std::os::unix::io::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

/// Guest memory of every run: 1 MiB.
const MEM: u64 = 0x10_0000;
/// Where the well-formed handshake puts queue `q`: descriptors, avail and used rings.
fn ring(q: u64) -> (u64, u64, u64) {
    let base = 0x1000 + q * 0x3000;
    (base, base + 0x1000, base + 0x2000)
}
const QSZ: u16 = 16;

/// Reads the input as a program; zeros once it is used up.
struct Input<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Input<'a> {
    fn done(&self) -> bool {
        self.i >= self.d.len()
    }
    fn u8(&mut self) -> u8 {
        let v = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.i.min(self.d.len());
        let end = (self.i + n).min(self.d.len());
        self.i += n;
        &self.d[start..end]
    }
    /// A guest address: mostly inside guest memory, sometimes anywhere.
    fn addr(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            _ => u64::from(self.u32()) % MEM,
        }
    }
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// A driver's handshake: VERSION_1, every queue at its place in `ring`, DRIVER_OK.
fn handshake(t: &mut MmioTransport, queues: u64, size: u16) {
    wr(t, 0x70, 0);
    wr(t, 0x70, 3);
    wr(t, 0x24, 1);
    wr(t, 0x20, 1);
    wr(t, 0x70, 0xb);
    for q in 0..queues {
        let (d, a, u) = ring(q);
        wr(t, 0x30, q as u32);
        wr(t, 0x38, u32::from(size));
        wr(t, 0x80, d as u32);
        wr(t, 0x90, a as u32);
        wr(t, 0xa0, u as u32);
        wr(t, 0x44, 1);
    }
    wr(t, 0x70, 0xf);
}

/// One device under test: its transport, memory, event loop, and host-side hook.
struct Rig {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    epoll: Arc<Epoll>,
    queues: u64,
    host: Box<dyn FnMut(&mut Input)>,
}

impl Rig {
    fn new(dev: Box<dyn VirtioDevice>, queues: u64, host: Box<dyn FnMut(&mut Input)>) -> Rig {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let epoll = Arc::new(Epoll::new().unwrap());
        let t = MmioTransport::new(
            dev,
            mem.clone(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Registrar::new(epoll.clone(), 1),
        );
        Rig {
            t,
            mem,
            epoll,
            queues,
            host,
        }
    }

    /// What the event loop would do with the device's ready descriptors.
    fn events(&mut self) {
        let mut evs = vec![EpollEvent::default(); 16];
        for _ in 0..4 {
            let n = self.epoll.wait(0, &mut evs).unwrap_or(0);
            if n == 0 {
                break;
            }
            for e in &evs[..n] {
                self.t.device_event(e.data() as u32 as RawFd, e.event_set());
            }
        }
    }

    /// Runs one program; returns how many chains the device put in its used rings (how
    /// deep the input got).
    fn run(&mut self, inp: &mut Input) -> u64 {
        let mut next_avail = vec![0u16; self.queues as usize];
        if !inp.u8().is_multiple_of(4) {
            let size = match inp.u8() % 4 {
                0 => 1 << (inp.u8() % 9),
                _ => QSZ,
            };
            handshake(&mut self.t, self.queues, size);
        }
        for _ in 0..96 {
            if inp.done() {
                break;
            }
            match inp.u8() % 10 {
                0 => {
                    let off = u64::from(inp.u16() % 0x200) & !3;
                    let v = inp.u32();
                    wr(&mut self.t, off, v);
                }
                1 => {
                    let off = u64::from(inp.u16() % 0x200);
                    let mut b = [0u8; 4];
                    let n = 1 + inp.u8() as usize % 4;
                    self.t.read(off, &mut b[..n]);
                }
                2 => {
                    let addr = inp.addr();
                    let n = inp.u8() as usize * 4;
                    let bytes = inp.bytes(n);
                    let _ = self.mem.write_slice(bytes, GuestAddress(addr));
                }
                3 | 4 => {
                    // A descriptor: in-bounds index of queue q's table.
                    let q = u64::from(inp.u8()) % self.queues;
                    let idx = u64::from(inp.u8() % (QSZ as u8));
                    let (d, _, _) = ring(q);
                    let addr = inp.addr();
                    let len = match inp.u8() % 4 {
                        0 => inp.u32(),
                        _ => u32::from(inp.u16()),
                    };
                    let flags = u16::from(inp.u8() % 8);
                    let next = match inp.u8() % 4 {
                        0 => inp.u16(),
                        _ => u16::from(inp.u8() % (QSZ as u8)),
                    };
                    let mut e = [0u8; 16];
                    e[..8].copy_from_slice(&addr.to_le_bytes());
                    e[8..12].copy_from_slice(&len.to_le_bytes());
                    e[12..14].copy_from_slice(&flags.to_le_bytes());
                    e[14..16].copy_from_slice(&next.to_le_bytes());
                    let _ = self.mem.write_slice(&e, GuestAddress(d + idx * 16));
                }
                5 | 6 => {
                    // Make a chain available and kick.
                    let q = (u64::from(inp.u8()) % self.queues) as usize;
                    let (_, a, _) = ring(q as u64);
                    let head = match inp.u8() % 8 {
                        0 => inp.u16(),
                        _ => u16::from(inp.u8() % (QSZ as u8)),
                    };
                    let step = match inp.u8() % 16 {
                        0 => inp.u16(),
                        _ => 1,
                    };
                    let slot = u64::from(next_avail[q] % QSZ);
                    let _ = self.mem.write_obj(head, GuestAddress(a + 4 + slot * 2));
                    next_avail[q] = next_avail[q].wrapping_add(step);
                    let _ = self.mem.write_obj(next_avail[q], GuestAddress(a + 2));
                    self.t.notify(q);
                }
                7 => {
                    let q = inp.u8() as usize % (self.queues as usize + 2);
                    self.t.notify(q);
                }
                8 => {
                    (self.host)(inp);
                    self.events();
                }
                _ => {
                    let off = 0x100 + u64::from(inp.u16() % 0x100);
                    let n = 1 + inp.u8() as usize % 8;
                    let bytes = inp.bytes(n).to_vec();
                    self.t.write(off, &bytes);
                    let mut back = vec![0u8; n];
                    self.t.read(off, &mut back);
                }
            }
        }
        self.events();
        (0..self.queues)
            .map(|q| {
                let (_, _, u) = ring(q);
                u64::from(self.mem.read_obj::<u16>(GuestAddress(u + 2)).unwrap_or(0))
            })
            .sum()
    }
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn block_target(data: &[u8]) -> u64 {
    thread_local! {
        /// A 64 KiB disk per thread, removed when the thread ends.
        static DISK: Scratch = {
            let p = scratch().join(format!("disk-{:?}", std::thread::current().id()));
            std::fs::write(&p, vec![0u8; 64 << 10]).unwrap();
            Scratch(p)
        };
    }
    let disk = DISK.with(|p| p.0.clone());
    let mut inp = Input { d: data, i: 0 };
    let read_only = inp.u8() & 1 == 1;
    let dev = Block::open(&disk, read_only, 0).unwrap();
    Rig::new(Box::new(dev), 1, Box::new(|_| {})).run(&mut inp)
}

/// A scratch file removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // The directory goes with its last file.
        if let Some(d) = self.0.parent() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn net_target(data: &[u8]) -> u64 {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (tap, mut peer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let dev = Net::with_tap(tap, [2, 0, 0, 0, 0, 1]);
    let host = Box::new(move |inp: &mut Input| {
        // Frames from the outside: of any size, some never taken by the guest.
        let n = inp.u16() as usize % 2048;
        let frame = inp.bytes(n).to_vec();
        let _ = peer.write(&frame);
    });
    let mut inp = Input { d: data, i: 0 };
    Rig::new(Box::new(dev), 2, host).run(&mut inp)
}

fn vsock_target(data: &[u8]) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = scratch();
    let uds = dir.join(format!("v{}.sock", N.fetch_add(1, Ordering::Relaxed)));
    let dev = Vsock::new(3, &uds).unwrap();
    let host_uds = uds.clone();
    let mut clients = Vec::new();
    let host = Box::new(move |inp: &mut Input| {
        // A host program connects and sends a CONNECT line (or garbage) and data.
        if clients.len() < 8 {
            if let Ok(mut c) = std::os::unix::net::UnixStream::connect(&host_uds) {
                c.set_nonblocking(true).ok();
                let line = match inp.u8() % 4 {
                    0 => inp.bytes(16).to_vec(),
                    _ => format!("CONNECT {}\n", inp.u16() % 8).into_bytes(),
                };
                let _ = c.write(&line);
                let n = inp.u16() as usize % 4096;
                let _ = c.write(inp.bytes(n));
                clients.push(c);
            }
        } else if let Some(c) = clients.get_mut(inp.u8() as usize % 8) {
            let n = inp.u16() as usize % 4096;
            let _ = c.write(inp.bytes(n));
        }
    });
    let mut inp = Input { d: data, i: 0 };
    let _socket = Scratch(uds);
    Rig::new(Box::new(dev), 3, host).run(&mut inp)
}

fn header_target(data: &[u8]) -> u64 {
    let mut b = [0u8; 44];
    let n = data.len().min(44);
    b[..n].copy_from_slice(&data[..n]);
    let h = Header::decode(&b);
    assert_eq!(h.encode(), b, "encode(decode(b)) == b");
    assert_eq!(Header::decode(&h.encode()), h);
    0
}

/// xorshift64*: a small PRNG, seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A new input: fresh bytes, or a mutation of one already run.
fn next_input(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if pool.is_empty() || rng.below(4) == 0 {
        let n = rng.below(768);
        return (0..n).map(|_| rng.next() as u8).collect();
    }
    let mut v = pool[rng.below(pool.len())].clone();
    for _ in 0..1 + rng.below(8) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, ins);
            }
            3 if v.len() > 1 => {
                let i = rng.below(v.len());
                v.truncate(i.max(1));
            }
            4 if !v.is_empty() => {
                // Interesting values: all ones, zero, sizes around ring and page limits.
                let i = rng.below(v.len());
                let vals = [0xffu8, 0, 0x7f, 0x80, 16, 15, 17, 0x10];
                v[i] = vals[rng.below(vals.len())];
            }
            _ => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a);
                    v.extend_from_slice(&other[a..b]);
                }
            }
        }
    }
    v.truncate(4096);
    v
}

/// Runs `target` for the configured time; panics (after saving the input) on a crash.
fn fuzz(name: &str, target: fn(&[u8]) -> u64) {
    if let Ok(p) = std::env::var("BERTH_FUZZ_REPRO") {
        target(&std::fs::read(&p).unwrap());
        return;
    }
    let secs: f64 = std::env::var("BERTH_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let mut rng = Rng(seed);
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut execs: u64 = 0;
    let mut chains: u64 = 0;
    let mut crash = None;
    while Instant::now() < deadline {
        let input = next_input(&mut rng, &pool);
        let r = std::panic::catch_unwind(|| target(&input));
        execs += 1;
        match r {
            Ok(used) => {
                chains += used;
                if pool.len() < 512 {
                    pool.push(input);
                } else {
                    let i = rng.below(pool.len());
                    pool[i] = input;
                }
            }
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                crash = Some((input, why));
                break;
            }
        }
    }
    println!("fuzz_{name}_execs {execs}");
    println!("fuzz_{name}_chains_used {chains}");
    println!("fuzz_{name}_seed {seed}");
    if let Some((input, why)) = crash {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}-{seed}.bin"));
        std::fs::write(&file, &input).unwrap();
        println!("fuzz_{name}_crashes 1");
        panic!(
            "{name}: crash after {execs} runs: {why}; input saved to {} (rerun with BERTH_FUZZ_REPRO={})",
            file.display(),
            file.display()
        );
    }
    println!("fuzz_{name}_crashes 0");
    assert!(execs > 0);
    if name.starts_with("virtio_") {
        assert!(
            chains > 0,
            "{name}: no input got a chain through the device"
        );
    }
}

#[test]
fn fuzz_virtio_blk() {
    fuzz("virtio_blk", block_target);
}

#[test]
fn fuzz_virtio_net() {
    fuzz("virtio_net", net_target);
}

#[test]
fn fuzz_virtio_vsock() {
    fuzz("virtio_vsock", vsock_target);
}

#[test]
fn fuzz_vsock_header() {
    fuzz("vsock_header", header_target);
}

/// The harness itself finds a planted bug: a target that panics on one byte pattern is
/// caught, and the input saved.
#[test]
fn the_runner_catches_a_crash_and_saves_its_input() {
    fn planted(d: &[u8]) -> u64 {
        if d.len() > 3 && d[1] == 0x42 {
            panic!("planted");
        }
        0
    }
    let r = std::panic::catch_unwind(|| fuzz("planted", planted));
    let e = r.expect_err("the planted crash was found");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("planted: crash after"), "{msg}");
    let path = msg
        .split("input saved to ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let input = std::fs::read(path).unwrap();
    assert_eq!(input[1], 0x42);
    std::fs::remove_file(path).unwrap();
}
