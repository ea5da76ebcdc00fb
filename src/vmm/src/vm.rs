//! The boot recipe ([`Vm::build`]) and the monitor's event loop ([`Vm::run`]).

use crate::config::{Console, VmConfig};
use crate::devices::i8042::I8042;
use crate::devices::serial::{ConsoleOut, IrqTrigger, SerialDevice};
use crate::devices::virtio::{self, MmioTransport, Registrar, VirtioDevice};
use crate::devices::Bus;
use crate::layout::*;
use crate::vstate::{memory, vcpu};
use crate::{boot, mptable, ExitSignal, Stats, VmExit};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// berth's default kernel command line; the config's `cmdline` is appended.
/// `quiet`: only warnings and worse reach the serial console (every byte through the
/// emulated UART is a VM exit); append `loglevel=7` for the full console.
/// `noreplace-smp`: a guest with one vCPU keeps its kernel text as built instead of
/// rewriting every `lock` prefix for a uniprocessor: that rewrite made private copies of
/// the text pages it touched, shared between guests otherwise (docs/boot.md).
/// `percpu_alloc=page`: the per-CPU areas in the pages they use, not in a 2 MiB block the
/// kernel zeroes first (512 fresh guest pages at every boot).
/// (A KVM guest kernel already skips the timer check and port 0x80 delays by itself:
/// `no_timer_check` and `io_delay=none` would change nothing.)
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet reboot=k panic=-1 pci=off \
    8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable \
    page_reporting.page_reporting_order=9 noreplace-smp percpu_alloc=page";

/// Errors building the VM. Each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// This host can't run standard guests.
    #[error("cannot start a microVM: {0}")]
    Host(berth_hostcheck::KvmSupport),
    /// A KVM ioctl on the VM failed.
    #[error("{0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Loading the guest.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    /// The MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// A device could not be set up.
    #[error("{0}")]
    Device(String),
    /// A host resource (file, socket, eventfd).
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Taking or restoring a snapshot.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |e| VmError::Io(what, e)
}

/// Options that are not part of the VM's configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Build everything, then report the time of the first KVM_RUN and exit without
    /// running the guest (for `bench/vmm`; also works on hosts whose KVM can't run guests).
    pub bench_setup: bool,
    /// Test only (the `vmm-forbidden-syscall` example): run on the main thread once its
    /// seccomp filter is in, before the guest starts.
    pub after_filters: Option<fn()>,
}

/// Paths this monitor created, removed when it ends (or fails to start).
#[derive(Default)]
pub struct Cleanup(Vec<PathBuf>);

impl Cleanup {
    /// Remembers a path to remove.
    pub fn add(&mut self, p: PathBuf) {
        self.0.push(p);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A virtio-mmio slot being built: its device (none for an empty slot), and for a restore
/// the snapshot's state of its transport.
type Slot = (
    Option<Box<dyn VirtioDevice>>,
    Option<virtio::TransportState>,
);

/// Token device number of the monitor's own event sources.
const MONITOR: u32 = 0;

/// A built microVM, ready to run.
pub struct Vm {
    _kvm: Kvm,
    vm: VmFd,
    mem: vm_memory::GuestMemoryMmap,
    memory_mib: u64,
    vcpus: Vec<VcpuFd>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    epoll: Arc<Epoll>,
    exit: Arc<ExitSignal>,
    stats: Arc<Stats>,
    serial: Arc<Mutex<SerialDevice>>,
    pub(crate) i8042: Arc<Mutex<I8042>>,
    /// The virtio-mmio slots in order; `None` for an empty one.
    transports: Vec<Option<Arc<Mutex<MmioTransport>>>>,
    /// The virtio-pmem images' (address, length).
    pmem_regions: Vec<(u64, u64)>,
    /// Where the `snapshot` control action writes (`snapshot_to`), and what the snapshot
    /// depends on.
    snapshot_out: Option<(
        crate::snapshot::SnapshotFiles,
        crate::snapshot::Dependencies,
    )>,
    queue_events: HashMap<u64, (usize, usize, EventFd)>,
    stdin: bool,
    signals: RawFd,
    control: Option<crate::control::Control>,
    pub(crate) vcpu_control: Arc<vcpu::Control>,
    opts: RunOptions,
    /// The seccomp filters' mode, and whether the monitor is jailed.
    seccomp: (crate::seccomp::Mode, bool),
    /// This process's /proc status, opened before any jail (for `stats`).
    pub(crate) proc_status: Option<std::fs::File>,
    /// Removes the sockets this monitor created when the VM is dropped.
    _cleanup: Cleanup,
    /// The full kernel command line the guest got.
    pub cmdline: String,
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SAFETY: `signals` is the signalfd this Vm created and still owns.
        unsafe { libc::close(self.signals) };
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and the threads it starts) and returns
/// a signalfd that reports them.
fn signalfd() -> std::io::Result<RawFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    // SAFETY: `set` is initialized; a null old-set pointer is allowed.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: -1 asks for a new signalfd; `set` is initialized.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

impl Vm {
    /// The boot recipe. On error everything created so far is released (sockets removed).
    pub fn build(config: &VmConfig, opts: RunOptions) -> Result<Vm, VmError> {
        trace("build");
        let console = config.validate()?;
        if !opts.bench_setup {
            let support = berth_hostcheck::check();
            if !support.can_run_microvms() {
                return Err(VmError::Host(support));
            }
        }
        let mut cleanup = Cleanup::default();
        let restore = match &config.restore_from {
            Some(dir) => {
                let s = crate::snapshot::Snapshot::read(dir)?;
                if s.memory_mib != config.memory_mib || s.vcpus.len() != usize::from(config.vcpus) {
                    return Err(crate::snapshot::SnapshotError::Invalid(format!(
                        "{}: the snapshot's guest has {} MiB and {} vCPUs, this configuration {} MiB and {}",
                        dir.display(),
                        s.memory_mib,
                        s.vcpus.len(),
                        config.memory_mib,
                        config.vcpus
                    ))
                    .into());
                }
                Some((dir.clone(), s))
            }
            None => None,
        };

        // The VM: in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT.
        let kvm = Kvm::new().map_err(|e| VmError::Kvm("opening /dev/kvm", e))?;
        let vm = kvm
            .create_vm()
            .map_err(|e| VmError::Kvm("KVM_CREATE_VM", e))?;
        vm.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(|e| VmError::Kvm("KVM_SET_TSS_ADDR", e))?;
        vm.create_irq_chip()
            .map_err(|e| VmError::Kvm("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit)
            .map_err(|e| VmError::Kvm("KVM_CREATE_PIT2", e))?;

        // Memory.
        let mem = memory::create(config.memory_mib, !config.fs.is_empty())?;
        if let Some((dir, s)) = &restore {
            crate::snapshot::map_memory(&mem, dir, &s.ram)?;
        }
        trace("memory allocated");
        let snapshot_files = match &config.snapshot_to {
            Some(dir) => Some(crate::snapshot::SnapshotFiles::create(
                dir,
                config.memory_mib << 20,
            )?),
            None => None,
        };
        let registering = memory::register_in_background(&vm, &mem)?;

        let epoll = Arc::new(Epoll::new().map_err(io_err("epoll"))?);
        let exit = Arc::new(ExitSignal::new().map_err(io_err("eventfd"))?);
        let stats = Arc::new(Stats::default());

        // Legacy devices on the port-I/O bus.
        let mut pio = Bus::new();
        let sink: Box<dyn std::io::Write + Send> = match &console {
            Console::Stdout => Box::new(std::io::stdout()),
            Console::Off => Box::new(std::io::sink()),
            Console::File(p) => Box::new(
                std::fs::File::create(p)
                    .map_err(io_err(format!("console file {}", p.display())))?,
            ),
        };
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        vm.register_irqfd(&serial_irq, SERIAL_IRQ)
            .map_err(|e| VmError::Kvm("KVM_IRQFD (serial)", e))?;
        let serial_state = restore
            .as_ref()
            .map(|(_, s)| s.serial.to_state())
            .unwrap_or_default();
        let serial = Arc::new(Mutex::new(SerialDevice(
            vm_superio::Serial::from_state(
                &serial_state,
                IrqTrigger(serial_irq),
                vm_superio::serial::NoEvents,
                ConsoleOut::new(sink, exit.clone()),
            )
            .map_err(|e| VmError::Device(format!("COM1: {e:?}")))?,
        )));
        pio.insert(serial.clone(), u64::from(SERIAL_PORT), 8)
            .map_err(|e| VmError::Device(e.to_string()))?;
        let kbd_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        vm.register_irqfd(&kbd_irq, KBD_IRQ)
            .map_err(|e| VmError::Kvm("KVM_IRQFD (i8042)", e))?;
        let i8042 = Arc::new(Mutex::new(I8042::new(exit.clone(), Some(kbd_irq))));
        if let Some((_, s)) = &restore {
            i8042
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore(&s.i8042);
        }
        pio.insert(i8042.clone(), u64::from(I8042_PORT), 5)
            .map_err(|e| VmError::Device(e.to_string()))?;

        // virtio devices on the MMIO bus, announced on the command line.
        let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
        for (i, d) in config.disks.iter().enumerate() {
            let b = virtio::block::Block::open(&d.path, d.read_only, i)
                .map_err(|e| VmError::Device(e.to_string()))?;
            devices.push(Box::new(b));
        }
        // Read-only images, each in a read-only KVM memory slot of its own above RAM.
        let mut pmem_end = None;
        let mut pmem_regions = Vec::new();
        let ram_slots = {
            use vm_memory::GuestMemoryBackend;
            mem.num_regions()
        };
        for (i, p) in config.pmem.iter().enumerate() {
            let gpa = crate::layout::pmem_address(config.memory_mib, pmem_end);
            let dev = virtio::pmem::Pmem::open(&p.path, gpa)
                .map_err(|e| VmError::Device(e.to_string()))?;
            let (gpa, host, len) = dev.region();
            memory::register_read_only(&vm, (ram_slots + i) as u32, gpa, host, len)?;
            pmem_end = Some(gpa + len);
            pmem_regions.push((gpa, len));
            devices.push(Box::new(dev));
        }
        if let Some((dir, s)) = &restore {
            // The snapshot's guest maps its images where they were.
            if pmem_regions.get(..s.pmem.len()) != Some(&s.pmem[..]) {
                return Err(crate::snapshot::SnapshotError::Invalid(format!(
                    "{}: the snapshot's pmem images {:x?} (address, length) are not this configuration's first ones {:x?}",
                    dir.display(),
                    s.pmem,
                    pmem_regions
                ))
                .into());
            }
        }
        for n in &config.net {
            let mac = match &n.mac {
                Some(m) => crate::config::parse_mac(m)?,
                None => virtio::net::random_mac(),
            };
            let dev =
                virtio::net::Net::open(&n.tap, mac).map_err(|e| VmError::Device(e.to_string()))?;
            devices.push(Box::new(dev));
        }
        if let Some(v) = &config.vsock {
            let dev = virtio::vsock::Vsock::new(v.cid, &v.uds)
                .map_err(|e| VmError::Device(e.to_string()))?;
            cleanup.add(v.uds.clone());
            devices.push(Box::new(dev));
        }
        for f in &config.fs {
            let dev = virtio::fs::Fs::connect(&f.socket, &f.tag)
                .map_err(|e| VmError::Device(e.to_string()))?;
            devices.push(Box::new(dev));
        }
        devices.push(Box::new(
            virtio::rng::Rng::new().map_err(io_err("/dev/urandom"))?,
        ));
        // Memory the guest frees goes back to the host (docs/vmm.md).
        devices.push(Box::new(virtio::balloon::Balloon::new(stats.clone())));

        let mut mmio = Bus::new();
        let mut transports = Vec::new();
        let mut queue_events = HashMap::new();
        let mut announce = Vec::new();
        // Each slot's device, and for a restore the snapshot's state of it.
        let slots: Vec<Slot> = match &restore {
            None => devices
                .into_iter()
                .map(Some)
                .chain((0..config.empty_slots).map(|_| None))
                .map(|d| (d, None))
                .collect(),
            Some((_, s)) => {
                let types: Vec<u32> = devices.iter().map(|d| d.device_type()).collect();
                let order = crate::snapshot::assign_slots(&types, &s.slots)?;
                let mut devices: Vec<Option<Box<dyn VirtioDevice>>> =
                    devices.into_iter().map(Some).collect();
                order
                    .iter()
                    .zip(&s.slots)
                    .map(|(k, st)| (k.and_then(|k| devices[k].take()), st.clone()))
                    .collect()
            }
        };
        let mut restored_transports = Vec::new();
        for (i, (dev, state)) in slots.into_iter().enumerate() {
            let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
            let irq = FIRST_VIRTIO_IRQ + i as u32;
            let dev_no = i as u32 + 1;
            let Some(dev) = dev else {
                mmio.insert(
                    Arc::new(Mutex::new(virtio::EmptySlot)),
                    base,
                    VIRTIO_MMIO_SIZE,
                )
                .map_err(|e| VmError::Device(e.to_string()))?;
                announce.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
                transports.push(None);
                continue;
            };
            let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
            vm.register_irqfd(&irq_evt, irq)
                .map_err(|e| VmError::Kvm("KVM_IRQFD (virtio)", e))?;
            let t = MmioTransport::new(
                dev,
                mem.clone(),
                irq_evt,
                Registrar::new(epoll.clone(), dev_no),
            );
            for q in 0..t.queue_count() {
                let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
                vm.register_ioevent(
                    &evt,
                    &IoEventAddress::Mmio(base + virtio::QUEUE_NOTIFY_OFFSET),
                    q as u32,
                )
                .map_err(|e| VmError::Kvm("KVM_IOEVENTFD", e))?;
                let tok = virtio::token(dev_no, evt.as_raw_fd());
                epoll
                    .ctl(
                        ControlOperation::Add,
                        evt.as_raw_fd(),
                        EpollEvent::new(EventSet::IN, tok),
                    )
                    .map_err(io_err("epoll"))?;
                queue_events.insert(tok, (i, q, evt));
            }
            let t = Arc::new(Mutex::new(t));
            mmio.insert(t.clone(), base, VIRTIO_MMIO_SIZE)
                .map_err(|e| VmError::Device(e.to_string()))?;
            announce.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
            if let Some(st) = state {
                restored_transports.push((t.clone(), st));
            }
            transports.push(Some(t));
        }

        trace("devices");
        // The guest: kernel, initramfs, command line, zero page, MP table, boot tables
        // (a restored guest has all of them in its memory already).
        let cmdline = boot::build_cmdline(DEFAULT_CMDLINE, &announce, &config.cmdline)?;
        let mut entry = None;
        if restore.is_none() {
            let kernel = boot::load_kernel(&mem, &config.kernel)?;
            let initrd = match &config.initrd {
                Some(p) => Some(boot::load_initrd(&mem, p, kernel.end)?),
                None => None,
            };
            boot::write_boot_params(&mem, &kernel, &cmdline, initrd)?;
            mptable::write(&mem, config.vcpus)?;
            vcpu::write_boot_tables(&mem)?;
            entry = Some(kernel.entry);
        }

        // vCPUs.
        trace("guest loaded");
        registering
            .join()
            .map_err(|_| VmError::Device("the memory registration thread panicked".into()))??;
        trace("memory registered");
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmError::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        let cpuids: Vec<_> = (0..config.vcpus)
            .map(|id| vcpu::vcpu_cpuid(&supported, id, config.vcpus))
            .collect();
        let vcpus = (0..config.vcpus)
            .map(|id| vm.create_vcpu(u64::from(id)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VmError::Kvm("KVM_CREATE_VCPU", e))?;
        // What a snapshot this monitor takes or restores depends on (docs/snapshots.md).
        let deps = match restore.is_some() || config.snapshot_to.is_some() {
            true => Some(crate::snapshot::Dependencies {
                host: crate::snapshot::HostIdentity {
                    tsc_khz: vcpus[0]
                        .get_tsc_khz()
                        .map_err(|e| VmError::Kvm("KVM_GET_TSC_KHZ", e))?,
                    cpuid: cpuids.iter().map(|c| c.as_slice().to_vec()).collect(),
                },
                files: std::iter::once(&config.kernel)
                    .chain(config.pmem.iter().map(|p| &p.path))
                    .map(|p| crate::snapshot::file_identity(p))
                    .collect(),
                cmdline: config.cmdline.clone(),
            }),
            false => None,
        };
        if let (Some((dir, s)), Some(d)) = (&restore, &deps) {
            s.check(d)
                .map_err(|e| VmError::Device(format!("restoring {}: {e}", dir.display())))?;
        }
        for (id, (fd, cpuid)) in (0u8..).zip(vcpus.iter().zip(&cpuids)) {
            match &restore {
                None => vcpu::configure(fd, id, cpuid, entry.filter(|_| id == 0))?,
                Some((_, s)) => {
                    fd.set_cpuid2(cpuid)
                        .map_err(|e| VmError::Kvm("KVM_SET_CPUID2", e))?;
                    crate::snapshot::restore_vcpu(fd, &s.vcpus[usize::from(id)])?;
                }
            }
        }
        if let Some((dir, s)) = &restore {
            crate::snapshot::restore_vm(&vm, &s.vm)?;
            // Last, so that what a device tells its driver on waking reaches restored
            // interrupt controllers.
            for (t, st) in &restored_transports {
                t.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .restore(st)
                    .map_err(|e| VmError::Device(format!("restoring {}: {e}", dir.display())))?;
            }
        }
        // The MSRs a snapshot saves.
        let msr_list = match snapshot_files {
            Some(_) => crate::snapshot::msrs_to_save(
                kvm.get_msr_index_list()
                    .map_err(|e| VmError::Kvm("KVM_GET_MSR_INDEX_LIST", e))?
                    .as_slice(),
            ),
            None => Vec::new(),
        };

        // Monitor event sources: the exit signal, SIGTERM & co, the console input, control.
        trace("vcpus");
        let signals = signalfd().map_err(io_err("signalfd"))?;
        let add = |fd: RawFd| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, virtio::token(MONITOR, fd)),
            )
        };
        add(exit.eventfd().as_raw_fd()).map_err(io_err("epoll"))?;
        if let Err(e) = add(signals) {
            // SAFETY: `signals` was just created here and is not shared.
            unsafe { libc::close(signals) };
            return Err(VmError::Io("epoll".into(), e));
        }
        // Console input only from a pipe or terminal (epoll refuses regular files).
        let stdin = console == Console::Stdout && add(libc::STDIN_FILENO).is_ok();
        let control = match &config.control_socket {
            Some(p) => {
                let c = crate::control::Control::bind(p)
                    .map_err(io_err(format!("control socket {}", p.display())))?;
                cleanup.add(p.clone());
                add(c.fd()).map_err(io_err("epoll"))?;
                Some(c)
            }
            None => None,
        };

        let cmdline = cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Vm {
            _kvm: kvm,
            vm,
            mem,
            memory_mib: config.memory_mib,
            pmem_regions,
            snapshot_out: snapshot_files.zip(deps),
            vcpus,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            epoll,
            exit,
            stats,
            serial,
            i8042,
            transports,
            queue_events,
            stdin,
            signals,
            control,
            vcpu_control: Arc::new(vcpu::Control::new(config.vcpus as usize, msr_list)),
            opts,
            seccomp: (config.seccomp, config.jail.is_some()),
            proc_status: std::fs::File::open("/proc/self/status").ok(),
            _cleanup: cleanup,
            cmdline,
        })
    }

    /// Starts the vCPUs and runs the event loop until the VM stops. Returns why.
    ///
    /// Every thread installs its seccomp filter before the guest runs: each vCPU thread
    /// installs its own and waits; this thread installs the main filter once all are
    /// started (none is started after), then lets them go.
    pub fn run(mut self) -> VmExit {
        use crate::seccomp::{self, Thread};
        if let Err(e) = vcpu::install_kick_handler() {
            return VmExit::failed(format!("installing the vCPU kick signal handler: {e}"));
        }
        let (mode, jailed) = self.seccomp;
        let filters = seccomp::Options {
            unjailed: !jailed,
            snapshot: self.snapshot_out.is_some(),
        };
        let vcpus = std::mem::take(&mut self.vcpus);
        let go = Arc::new(std::sync::Barrier::new(vcpus.len() + 1));
        let mut handles = Vec::new();
        for (id, fd) in vcpus.into_iter().enumerate() {
            let (pio, mmio, stats, exit, ctl, go) = (
                self.pio.clone(),
                self.mmio.clone(),
                self.stats.clone(),
                self.exit.clone(),
                self.vcpu_control.clone(),
                go.clone(),
            );
            let bench = self.opts.bench_setup && id == 0;
            let h = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let filtered =
                        seccomp::install(Thread::Vcpu, &format!("vcpu{id}"), mode, filters);
                    go.wait();
                    if let Err(e) = filtered {
                        exit.set(VmExit::failed(e.to_string()));
                        return;
                    }
                    if bench {
                        println!("first_kvm_run_monotonic_ns {}", monotonic_ns());
                        exit.set(VmExit::ok(
                            "setup benchmark: stopped before the first KVM_RUN",
                        ));
                        return;
                    }
                    let stop = vcpu::run(fd, id as u8, pio, mmio, stats, exit.clone(), ctl);
                    exit.set(match stop {
                        vcpu::VcpuStop::GuestShutdown => VmExit::ok("the guest shut down"),
                        vcpu::VcpuStop::Failed(why) => VmExit::failed(why),
                    });
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => return VmExit::failed(format!("starting vCPU thread {id}: {e}")),
            }
        }
        self.vcpu_control.set_threads(&handles);
        // The guest has not run yet: a failure here leaves the vCPUs waiting, and the
        // process exits.
        if let Err(e) = seccomp::install(Thread::Main, "main", mode, filters) {
            return VmExit::failed(e.to_string());
        }
        if let Some(hook) = self.opts.after_filters {
            hook();
        }
        go.wait();
        self.event_loop()
    }

    fn event_loop(&mut self) -> VmExit {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return VmExit::failed(format!("epoll_wait failed: {e}")),
            };
            for ev in &events[..n] {
                let tok = ev.data();
                let dev = (tok >> 32) as u32;
                let fd = tok as u32 as RawFd;
                if dev == MONITOR {
                    if let Some(exit) = self.monitor_event(fd) {
                        return exit;
                    }
                } else if let Some((d, q, evt)) = self.queue_events.get(&tok) {
                    let _ = evt.read();
                    if let Some(t) = &self.transports[*d] {
                        t.lock().unwrap_or_else(|e| e.into_inner()).notify(*q);
                    }
                } else if let Some(Some(t)) = self.transports.get(dev as usize - 1) {
                    t.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .device_event(fd, ev.event_set());
                }
            }
        }
    }

    /// Handles one of the monitor's own sources; returns the exit when the VM must stop.
    fn monitor_event(&mut self, fd: RawFd) -> Option<VmExit> {
        if fd == self.exit.eventfd().as_raw_fd() {
            let _ = self.exit.eventfd().read();
            return Some(
                self.exit
                    .take()
                    .unwrap_or_else(|| VmExit::failed("stopped")),
            );
        }
        if fd == self.signals {
            // SAFETY: signalfd_siginfo is plain data, fully written by read() when it
            // returns its size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading at most `size` bytes into `info`, which is that big.
            let n = unsafe { libc::read(fd, &mut info as *mut _ as *mut libc::c_void, size) };
            if n as usize == size {
                let sig = info.ssi_signo as i32;
                return Some(VmExit {
                    code: 128 + sig,
                    reason: format!("stopped by signal {sig}"),
                });
            }
            return None;
        }
        if self.stdin && fd == libc::STDIN_FILENO {
            let mut buf = [0u8; 64];
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = self
                        .epoll
                        .ctl(ControlOperation::Delete, fd, EpollEvent::default());
                    self.stdin = false;
                }
                Ok(n) => {
                    self.serial
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .input(&buf[..n]);
                }
            }
            return None;
        }
        if let Some(c) = &self.control {
            if fd == c.fd() {
                let vm: &Vm = self;
                if let Some(exit) = c.accept(vm) {
                    return Some(exit);
                }
            }
        }
        None
    }

    /// The monitor has entered its jail: the paths it created are out of its reach now
    /// (and its filters refuse `unlink`), so whoever started it removes them.
    pub fn jailed(&mut self) {
        self._cleanup.0.clear();
    }

    /// Bytes read and written through each device, for `stats`.
    pub fn device_count(&self) -> usize {
        self.transports.iter().flatten().count()
    }

    /// Pauses the guest and writes it to the `snapshot_to` directory; returns the bytes
    /// of guest memory written. The guest does not run again in this monitor: it exits
    /// after the reply (a snapshot taken, the VM is a template).
    pub fn snapshot(&self) -> Result<u64, String> {
        let Some((out, deps)) = &self.snapshot_out else {
            return Err("this monitor was started without snapshot_to".into());
        };
        let vcpus = self.vcpu_control.pause_and_save()?;
        let written = self.write_snapshot(out, deps, vcpus);
        if written.is_err() {
            self.vcpu_control.resume();
        }
        written
    }

    /// The rest of a snapshot, the vCPUs paused and saved.
    fn write_snapshot(
        &self,
        out: &crate::snapshot::SnapshotFiles,
        deps: &crate::snapshot::Dependencies,
        vcpus: Vec<crate::snapshot::VcpuState>,
    ) -> Result<u64, String> {
        let vm = crate::snapshot::save_vm(&self.vm).map_err(|e| e.to_string())?;
        let slots = self
            .transports
            .iter()
            .map(|t| {
                t.as_ref()
                    .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).state())
            })
            .collect();
        let s = crate::snapshot::Snapshot {
            format: crate::snapshot::FORMAT,
            memory_mib: self.memory_mib,
            vcpus,
            vm,
            slots,
            pmem: self.pmem_regions.clone(),
            serial: crate::devices::serial::SerialSnapshot::of(
                &self
                    .serial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .state(),
            ),
            i8042: self.i8042.lock().unwrap_or_else(|e| e.into_inner()).state(),
            ram: Vec::new(),
            depends: deps.clone(),
        };
        out.write(&self.mem, s).map_err(|e| e.to_string())
    }

    /// The vCPU exit counter and others.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// With BERTH_VMM_TRACE set, one line on stderr: the time and a step of the start-up.
pub(crate) fn trace(what: &str) {
    if std::env::var_os("BERTH_VMM_TRACE").is_some() {
        trace_line(&format!("berth-vmm: trace {} {what}\n", monotonic_ns()));
    }
}

/// Writes one whole line to stderr in one call: `eprintln!` writes its pieces one by one,
/// and the jail's waiter and monitor share the log.
pub fn trace_line(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}
