//! virtio over MMIO (virtio 1.1, §4.2, register layout version 2) and the devices behind it.
//!
//! A device is a [`VirtioDevice`]; [`MmioTransport`] puts it on the MMIO bus. The guest's
//! queue notifications arrive on ioeventfds (KVM handles the write in the kernel, no vCPU
//! exit) and interrupts leave through irqfds. The event loop calls
//! [`VirtioDevice::process_queue`] when a queue is kicked and
//! [`VirtioDevice::process_event`] when one of the device's own file descriptors (a tap, a
//! socket) is ready.

pub mod balloon;
pub mod block;
pub mod fs;
pub mod net;
pub mod pmem;
pub mod rng;
pub mod vsock;

use super::BusDevice;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Feature bit: the device complies with virtio 1.0+.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device IDs (virtio 1.1 §5).
pub mod ids {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Memory balloon (here: free page reporting only).
    pub const BALLOON: u32 = 5;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// Persistent memory (here: a read-only image).
    pub const PMEM: u32 = 27;
    /// File system device (virtio-fs).
    pub const FS: u32 = 26;
}

/// Device status bits (virtio 1.1 §2.1).
mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// The interrupt of one device: the ISR bits the guest reads, and the irqfd that raises
/// its line.
pub struct Interrupt {
    status: AtomicU32,
    evt: EventFd,
    /// The device found a queue the driver broke ([`pop`]): the transport asks for a
    /// reset.
    broken: AtomicBool,
}

/// ISR bit: a used buffer was added.
const INT_VRING: u32 = 1;
/// ISR bit: the configuration changed.
const INT_CONFIG: u32 = 2;

impl Interrupt {
    /// An interrupt raised through `evt` (registered as an irqfd).
    pub fn new(evt: EventFd) -> Interrupt {
        Interrupt {
            status: AtomicU32::new(0),
            evt,
            broken: AtomicBool::new(false),
        }
    }

    /// Tells the guest a queue has used buffers.
    pub fn signal_used(&self) {
        self.status.fetch_or(INT_VRING, Ordering::SeqCst);
        let _ = self.evt.write(1);
    }

    fn signal_config(&self) {
        self.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        let _ = self.evt.write(1);
    }

    /// The ISR bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }
}

/// The next chain the driver made available on `q`, if any. A driver that moved the avail
/// index further ahead than the ring holds (or put the ring where it cannot be read) has
/// broken the queue: nothing more is taken from it, and the transport sets
/// DEVICE_NEEDS_RESET, as the virtio spec has a device do on such an error.
pub fn pop<M>(q: &mut Queue, mem: M, irq: &Interrupt) -> Option<virtio_queue::DescriptorChain<M>>
where
    M: Clone + std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    if !q.ready() {
        return None;
    }
    match q.avail_idx(&*mem, Ordering::Acquire) {
        Ok(idx) if idx.0.wrapping_sub(q.next_avail()) <= q.size() => q.pop_descriptor_chain(mem),
        _ => {
            irq.broken.store(true, Ordering::SeqCst);
            None
        }
    }
}

/// Serves every chain the driver made available on `q` with `serve`, which returns the
/// bytes it wrote into the chain; hands each chain back with that length, and interrupts
/// the driver once if any was served and it asked to be told.
pub fn serve_queue<'m>(
    q: &mut Queue,
    mem: &'m GuestMemoryMmap,
    irq: &Interrupt,
    mut serve: impl FnMut(virtio_queue::DescriptorChain<&'m GuestMemoryMmap>) -> u32,
) {
    let mut used = false;
    while let Some(chain) = pop(q, mem, irq) {
        let head = chain.head_index();
        let len = serve(chain);
        let _ = q.add_used(mem, head, len);
        used = true;
    }
    if used && q.needs_notification(mem).unwrap_or(true) {
        irq.signal_used();
    }
}

/// Lines about a guest's driver errors the monitor logs at most: a guest that breaks and
/// resets a device in a loop cannot fill the host's disk through the monitor's log.
const MAX_GUEST_ERROR_LINES: u32 = 32;

/// Logs one line about a driver error, the first [`MAX_GUEST_ERROR_LINES`] times.
fn log_guest_error(line: std::fmt::Arguments) {
    static LOGGED: AtomicU32 = AtomicU32::new(0);
    match LOGGED.fetch_add(1, Ordering::Relaxed) {
        n if n < MAX_GUEST_ERROR_LINES => eprintln!("{line}"),
        n if n == MAX_GUEST_ERROR_LINES => {
            eprintln!("berth-vmm: more virtio driver errors from this guest are not logged")
        }
        _ => {}
    }
}

/// Lets a device watch its own file descriptors in the monitor's event loop.
#[derive(Clone)]
pub struct Registrar {
    epoll: Arc<Epoll>,
    device: u32,
}

/// Event-loop tokens: the high 32 bits name the device (or a monitor source), the low 32
/// bits the file descriptor.
pub fn token(device: u32, fd: RawFd) -> u64 {
    (u64::from(device) << 32) | u64::from(fd as u32)
}

impl Registrar {
    /// A registrar for device number `device` on `epoll`.
    pub fn new(epoll: Arc<Epoll>, device: u32) -> Registrar {
        Registrar { epoll, device }
    }

    /// Starts watching `fd` for `events`.
    pub fn add(&self, fd: RawFd, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events, token(self.device, fd)),
        )
    }

    /// Changes the events watched on `fd`.
    pub fn modify(&self, fd: RawFd, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Modify,
            fd,
            EpollEvent::new(events, token(self.device, fd)),
        )
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The queues, configured and validated by the transport.
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// To watch the device's own file descriptors.
    pub registrar: Registrar,
    /// The device was running in a snapshot this monitor restored: its driver knows
    /// nothing of the backend state it had (vsock resets its connections).
    pub restored: bool,
}

/// The running state of a device with a receive and a transmit queue (net, vsock).
pub struct RxTx {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// Queue 0: device → driver.
    pub rx: Queue,
    /// Queue 1: driver → device.
    pub tx: Queue,
    /// The device's interrupt.
    pub irq: Arc<Interrupt>,
    /// To watch the device's own file descriptors.
    pub registrar: Registrar,
}

impl RxTx {
    /// Takes the first two queues of an activation (`device` names it in the error).
    pub fn take(a: Activation, device: &str) -> Result<RxTx, String> {
        let mut qs = a.queues.into_iter();
        let (Some(rx), Some(tx)) = (qs.next(), qs.next()) else {
            return Err(format!("{device} needs a receive and a transmit queue"));
        };
        Ok(RxTx {
            mem: a.mem,
            rx,
            tx,
            irq: a.interrupt,
            registrar: a.registrar,
        })
    }
}

/// A virtio device model.
pub trait VirtioDevice: Send {
    /// Device ID (see [`ids`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device. An error leaves it inactive and marks it as needing a reset.
    fn activate(&mut self, a: Activation) -> Result<(), String>;
    /// The guest kicked queue `index`.
    fn process_queue(&mut self, index: usize);
    /// One of the device's own file descriptors is ready.
    fn process_event(&mut self, _fd: RawFd, _events: EventSet) {}
    /// The driver reset the device: drop the queues and any backend state tied to them.
    fn reset(&mut self);
    /// Device state a snapshot keeps besides the transport's (none by default).
    fn snapshot_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Takes a snapshot's [`VirtioDevice::snapshot_state`], before the device starts.
    fn restore_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// Reads `data.len()` bytes of a little-endian config structure at `offset`.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    let start = offset as usize;
    match config.get(start..start.saturating_add(data.len())) {
        Some(src) => data.copy_from_slice(src),
        None => data.fill(0),
    }
}

/// The virtio-mmio transport of one device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    registrar: Registrar,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    active: bool,
    /// The queues as the driver set them up, kept when they go to the device at
    /// DRIVER_OK (for a snapshot).
    activated_queues: Vec<QueueConfig>,
}

/// One queue as the driver set it up (a snapshot's part of a transport).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfig {
    /// Entries.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
}

impl QueueConfig {
    fn of(q: &Queue) -> QueueConfig {
        QueueConfig {
            size: q.size(),
            ready: q.ready(),
            desc: q.desc_table(),
            avail: q.avail_ring(),
            used: q.used_ring(),
        }
    }
}

/// A transport's registers in a snapshot: taken while the vCPUs are paused and every
/// chain the device took is back in the used ring (devices complete each chain before
/// the event loop runs again).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    /// The device ID behind it.
    pub device_type: u32,
    /// Device status.
    pub status: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// ISR bits not yet acknowledged.
    pub interrupt_status: u32,
    /// Whether the device was started.
    pub active: bool,
    /// The queues.
    pub queues: Vec<QueueConfig>,
    /// The device's own state ([`VirtioDevice::snapshot_state`]).
    #[serde(default)]
    pub device: serde_json::Value,
}

/// A virtio-mmio slot with no device (yet): the guest reads zeros, so its probe finds no
/// magic value and leaves the slot unbound until it is probed again (a device added when a
/// snapshot is restored; docs/snapshots.md).
pub struct EmptySlot;

impl BusDevice for EmptySlot {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

impl MmioTransport {
    /// Wraps `device`; its interrupt leaves through `irq`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
        registrar: Registrar,
    ) -> MmioTransport {
        let queues = Self::fresh_queues(device.as_ref());
        MmioTransport {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irq)),
            registrar,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            active: false,
            activated_queues: Vec::new(),
        }
    }

    /// What the device gets to start on `queues`.
    fn activation(&self, queues: Vec<Queue>, restored: bool) -> Activation {
        Activation {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            acked_features: self.driver_features,
            registrar: self.registrar.clone(),
            restored,
        }
    }

    /// The transport's registers, for a snapshot.
    pub fn state(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            active: self.active,
            queues: if self.active {
                self.activated_queues.clone()
            } else {
                self.queues.iter().map(QueueConfig::of).collect()
            },
            device: self.device.snapshot_state(),
        }
    }

    /// Takes a snapshot's registers; a device that was started starts again on queues
    /// resumed where the used rings (in the restored guest memory) say.
    pub fn restore(&mut self, s: &TransportState) -> Result<(), String> {
        let kind = self.device.device_type();
        if s.device_type != kind || s.queues.len() != self.queue_count() {
            return Err(format!(
                "device type {kind} with {} queues does not match the snapshot's (type {}, {} queues)",
                self.queue_count(),
                s.device_type,
                s.queues.len()
            ));
        }
        let mut queues = Vec::new();
        for (c, &max) in s.queues.iter().zip(self.device.queue_max_sizes()) {
            let next = if s.active && c.ready {
                use vm_memory::{Bytes, GuestAddress};
                self.mem
                    .read_obj::<u16>(GuestAddress(c.used.wrapping_add(2)))
                    .map_err(|e| format!("reading a used ring: {e}"))?
            } else {
                0
            };
            let q = virtio_queue::QueueState {
                max_size: max,
                next_avail: next,
                next_used: next,
                event_idx_enabled: false,
                size: c.size,
                ready: c.ready,
                desc_table: c.desc,
                avail_ring: c.avail,
                used_ring: c.used,
            };
            queues.push(Queue::try_from(q).map_err(|e| format!("a queue: {e:?}"))?);
        }
        self.device.restore_state(&s.device)?;
        self.status = s.status;
        self.driver_features = s.driver_features;
        self.config_generation = s.config_generation;
        self.interrupt
            .status
            .store(s.interrupt_status, Ordering::SeqCst);
        if !s.active {
            self.queues = queues;
            return Ok(());
        }
        self.activated_queues = s.queues.clone();
        let act = self.activation(queues, true);
        self.device.activate(act)?;
        self.active = true;
        // A queue the driver kicked just before the snapshot, which the monitor had not
        // served yet, is served now: the kick itself is not in the snapshot.
        for q in 0..self.queue_count() {
            self.notify(q);
        }
        // Whatever the driver was told before the snapshot, it is told again.
        if s.interrupt_status != 0 {
            let _ = self.interrupt.evt.write(1);
        }
        Ok(())
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
        device
            .queue_max_sizes()
            .iter()
            .map(|&m| Queue::new(m).expect("queue max sizes are powers of two"))
            .collect()
    }

    /// Number of queues (for registering one ioeventfd per queue).
    pub fn queue_count(&self) -> usize {
        self.device.queue_max_sizes().len()
    }

    /// The device ID, for the kernel command line and logs.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The guest kicked queue `index` (through its ioeventfd).
    pub fn notify(&mut self, index: usize) {
        if self.active {
            self.device.process_queue(index);
            self.check_broken();
        }
    }

    /// A device file descriptor is ready.
    pub fn device_event(&mut self, fd: RawFd, events: EventSet) {
        if self.active {
            self.device.process_event(fd, events);
            self.check_broken();
        }
    }

    /// A queue the driver broke: the device needs a reset (once, with a log line).
    fn check_broken(&mut self) {
        if self.interrupt.broken.swap(false, Ordering::SeqCst)
            && self.status & status::DEVICE_NEEDS_RESET == 0
        {
            log_guest_error(format_args!(
                "berth-vmm: virtio device {}: the driver moved a queue's avail index past its size; device needs reset",
                self.device.device_type()
            ));
            self.needs_reset();
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        if self.active {
            return None;
        }
        self.queues.get_mut(self.queue_select as usize)
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.queues = Self::fresh_queues(self.device.as_ref());
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt.status.store(0, Ordering::SeqCst);
        self.interrupt.broken.store(false, Ordering::SeqCst);
    }

    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt.signal_config();
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let added = v & !self.status;
        if added & status::FEATURES_OK != 0 && self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            // Only modern drivers: refuse FEATURES_OK without VERSION_1.
            self.status = v & !status::FEATURES_OK;
            return;
        }
        self.status = v;
        if added & status::DRIVER_OK != 0 && !self.active {
            let wanted = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
            if v & wanted != wanted || v & status::FAILED != 0 {
                self.needs_reset();
                return;
            }
            if let Some(i) = self
                .queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(&self.mem))
            {
                log_guest_error(format_args!(
                    "berth-vmm: virtio device {}: queue {i} is invalid; device needs reset",
                    self.device.device_type()
                ));
                self.needs_reset();
                return;
            }
            let queues = std::mem::take(&mut self.queues);
            self.activated_queues = queues.iter().map(QueueConfig::of).collect();
            let act = self.activation(queues, false);
            match self.device.activate(act) {
                Ok(()) => self.active = true,
                Err(e) => {
                    log_guest_error(format_args!(
                        "berth-vmm: virtio device {} failed to start: {e}",
                        self.device.device_type()
                    ));
                    self.queues = Self::fresh_queues(self.device.as_ref());
                    self.needs_reset();
                }
            }
        }
    }
}

/// MMIO register offsets (virtio 1.1 §4.2.2).
mod reg {
    pub const MAGIC: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const DEVICE_ID: u64 = 0x08;
    pub const VENDOR_ID: u64 = 0x0c;
    pub const DEVICE_FEATURES: u64 = 0x10;
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    pub const DRIVER_FEATURES: u64 = 0x20;
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    pub const QUEUE_SEL: u64 = 0x30;
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    pub const QUEUE_NUM: u64 = 0x38;
    pub const QUEUE_READY: u64 = 0x44;
    pub const QUEUE_NOTIFY: u64 = 0x50;
    pub const INTERRUPT_STATUS: u64 = 0x60;
    pub const INTERRUPT_ACK: u64 = 0x64;
    pub const STATUS: u64 = 0x70;
    pub const QUEUE_DESC_LOW: u64 = 0x80;
    pub const QUEUE_DESC_HIGH: u64 = 0x84;
    pub const QUEUE_AVAIL_LOW: u64 = 0x90;
    pub const QUEUE_AVAIL_HIGH: u64 = 0x94;
    pub const QUEUE_USED_LOW: u64 = 0xa0;
    pub const QUEUE_USED_HIGH: u64 = 0xa4;
    pub const CONFIG_GENERATION: u64 = 0xfc;
    pub const CONFIG: u64 = 0x100;
}

/// Offset of QueueNotify, where the per-queue ioeventfds sit.
pub const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// "virt" in little endian.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// Vendor ID berth reports.
const VENDOR_ID: u32 = 0x4854_5242; // "BRTH"

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let v = match offset {
            reg::MAGIC => MMIO_MAGIC,
            reg::VERSION => 2,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_select as usize)
                .map(|q| u32::from(q.max_size()))
                .unwrap_or(0),
            reg::QUEUE_READY => self
                .queues
                .get(self.queue_select as usize)
                .map(|q| u32::from(q.ready()))
                .unwrap_or(u32::from(self.active)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if !self.active || self.status & status::DRIVER_OK == 0 {
                self.device.write_config(offset - reg::CONFIG, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_select = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_select = v,
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => {
                let offered = self.device.features();
                match self.driver_features_select {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff)
                            | (u64::from(v) & offered & 0xffff_ffff)
                    }
                    1 => {
                        self.driver_features = (self.driver_features & 0xffff_ffff)
                            | ((u64::from(v) << 32) & offered & !0xffff_ffff)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_select = v,
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    // An invalid size (not a power of two, over the max) is kept out;
                    // the queue then fails validation at DRIVER_OK.
                    let _ = q.try_set_size(v as u16);
                    if v > u32::from(u16::MAX) {
                        q.set_size(0);
                    }
                }
            }
            reg::QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            reg::QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            reg::QUEUE_DESC_HIGH => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            reg::QUEUE_AVAIL_LOW => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            reg::QUEUE_AVAIL_HIGH => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            reg::QUEUE_USED_LOW => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            reg::QUEUE_USED_HIGH => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            // Normally KVM consumes these through the ioeventfd; handle a stray one anyway.
            reg::QUEUE_NOTIFY => self.notify(v as usize),
            reg::INTERRUPT_ACK => {
                self.interrupt.status.fetch_and(!v, Ordering::SeqCst);
            }
            reg::STATUS => self.set_status(v),
            _ => {}
        }
    }
}

impl MmioTransport {
    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if self.status & status::DRIVER_OK == 0 {
            if let Some(q) = self.selected_queue() {
                f(q)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A driver's view of a transport, for device tests.
    use super::*;
    use vm_memory::GuestAddress;

    pub fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
    }

    pub fn registrar() -> Registrar {
        Registrar::new(Arc::new(Epoll::new().unwrap()), 1)
    }

    /// An activation with all features acked and a fresh interrupt.
    pub fn activation(m: &GuestMemoryMmap, queues: Vec<Queue>) -> Activation {
        Activation {
            mem: m.clone(),
            queues,
            interrupt: Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
            acked_features: u64::MAX,
            registrar: registrar(),
            restored: false,
        }
    }

    pub fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    pub fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn transport() -> MmioTransport {
        let dev = rng::Rng::new().unwrap();
        MmioTransport::new(
            Box::new(dev),
            mem(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            registrar(),
        )
    }

    fn negotiate(t: &mut MmioTransport) {
        wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(t, reg::DRIVER_FEATURES_SEL, 1);
        wr(t, reg::DRIVER_FEATURES, 1); // VERSION_1
        wr(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    /// A transport whose driver set up queue 0 (16 entries: descriptors at 0x1000,
    /// available ring at 0x2000, used ring at 0x3000) and started the device.
    fn started() -> MmioTransport {
        let mut t = transport();
        negotiate(&mut t);
        wr(&mut t, reg::QUEUE_SEL, 0);
        wr(&mut t, reg::QUEUE_NUM, 16);
        wr(&mut t, reg::QUEUE_DESC_LOW, 0x1000);
        wr(&mut t, reg::QUEUE_AVAIL_LOW, 0x2000);
        wr(&mut t, reg::QUEUE_USED_LOW, 0x3000);
        wr(&mut t, reg::QUEUE_READY, 1);
        wr(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert!(t.active);
        t
    }

    #[test]
    fn identifies_as_a_modern_virtio_mmio_device() {
        let mut t = transport();
        assert_eq!(rd(&mut t, reg::MAGIC), MMIO_MAGIC);
        assert_eq!(rd(&mut t, reg::VERSION), 2);
        assert_eq!(rd(&mut t, reg::DEVICE_ID), ids::RNG);
        wr(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, reg::DEVICE_FEATURES), 1);
    }

    #[test]
    fn a_snapshot_of_a_started_transport_restores_started_on_a_new_device() {
        use vm_memory::{Bytes, GuestAddress};
        let mut t = started();
        // The driver had made 5 buffers available and the device used them: the
        // restored queue goes on from there (served at once, with nothing new).
        t.mem.write_obj(5u16, GuestAddress(0x2002)).unwrap();
        t.mem.write_obj(5u16, GuestAddress(0x3002)).unwrap();
        let s = t.state();
        assert_eq!(s.queues[0].size, 16);
        assert_eq!(s.queues[0].used, 0x3000);
        let mut r = MmioTransport::new(
            Box::new(rng::Rng::new().unwrap()),
            t.mem.clone(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            registrar(),
        );
        r.restore(&s).unwrap();
        assert!(r.active);
        assert_eq!(r.state(), s);
        assert_eq!(rd(&mut r, reg::STATUS), rd(&mut t, reg::STATUS));
        // Another kind of device is refused, naming both.
        let mut other = MmioTransport::new(
            Box::new(balloon::Balloon::new(Arc::new(crate::Stats::default()))),
            t.mem.clone(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            registrar(),
        );
        let e = other.restore(&s).unwrap_err();
        assert!(e.contains("device type 5") && e.contains("type 4"), "{e}");
    }

    #[test]
    fn an_empty_slot_reads_as_no_device() {
        let mut e = EmptySlot;
        let mut d = [0xaa; 4];
        e.read(reg::MAGIC, &mut d);
        assert_eq!(
            d, [0; 4],
            "no magic value: the guest's probe finds no device"
        );
    }

    #[test]
    fn a_legacy_driver_cannot_set_features_ok() {
        let mut t = transport();
        wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(rd(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn features_not_offered_are_not_accepted() {
        let mut t = transport();
        wr(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        wr(&mut t, reg::DRIVER_FEATURES, 0xffff_ffff);
        assert_eq!(t.driver_features, 0);
    }

    #[test]
    fn a_queue_in_unmapped_memory_makes_the_device_need_a_reset() {
        let mut t = transport();
        negotiate(&mut t);
        wr(&mut t, reg::QUEUE_SEL, 0);
        wr(&mut t, reg::QUEUE_NUM, 16);
        wr(&mut t, reg::QUEUE_DESC_LOW, 0);
        wr(&mut t, reg::QUEUE_DESC_HIGH, 0x10); // far outside guest memory
        wr(&mut t, reg::QUEUE_READY, 1);
        wr(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert!(!t.active);
        assert_ne!(rd(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(rd(&mut t, reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
        wr(&mut t, reg::STATUS, 0);
        assert_eq!(rd(&mut t, reg::STATUS), 0);
    }

    #[test]
    fn a_runaway_avail_index_makes_the_device_need_a_reset() {
        use vm_memory::{Bytes, GuestAddress};
        let mut t = started();
        // 1000 entries made available on a ring of 16.
        t.mem.write_obj(1000u16, GuestAddress(0x2002)).unwrap();
        t.notify(0);
        assert_ne!(rd(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(rd(&mut t, reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
        wr(&mut t, reg::STATUS, 0);
        assert_eq!(rd(&mut t, reg::STATUS), 0, "a reset clears it");
    }

    #[test]
    fn odd_sized_accesses_and_unknown_registers_are_harmless() {
        let mut t = transport();
        let mut b = [0xaa; 2];
        t.read(reg::MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(reg::STATUS, &[1, 2]);
        wr(&mut t, 0x200 + reg::CONFIG, 5);
        wr(&mut t, reg::QUEUE_SEL, 99);
        assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 0);
        wr(&mut t, reg::QUEUE_NUM, 16);
        wr(&mut t, reg::QUEUE_NOTIFY, 7);
    }
}
