//! microVM isolation: one berth-vmm per container, configured by a `vm.json` (berth-vmm's
//! own [`VmConfig`], serialised), with the guest kernel, the agent (its read-only erofs
//! image on virtio-pmem, or its initramfs), the image's erofs root disk (read-only: a
//! small one on virtio-pmem, mapped with DAX, a large one on virtio-blk) and hybrid vsock.
//! The guest agent mounts the disk and runs the workload on an overlay with a tmpfs upper
//! layer; it keeps the json-file log inside the guest, and berthd copies the output to the
//! host log.
//!
//! Volumes and bind mounts are shared directories: one virtiofsd per mount (its own
//! session, sandboxed by its own namespaces and seccomp filter, `--readonly` for `ro`)
//! serving a virtio-fs device of the microVM over vhost-user. virtiofsd exits when the
//! monitor lets go of its socket, so nothing outlives the microVM (docs/volumes.md).

use super::{answer, spawn_detached, Booted, Isolation, Sandbox, SandboxSpec};
use crate::errors::{Error, Result};
use berth_image::ImageStore;
use berth_protocol::client::Endpoint;
use berth_protocol::{Request, RootfsSpec};
use berth_vmm::config::{DiskConfig, FsConfig, NetConfig, PmemConfig, VmConfig, VsockConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The guest's vsock context ID (each microVM has its own socket, so one CID does).
pub(crate) const GUEST_CID: u32 = 3;

/// Where jailed monitors' cgroups live (`<berthd's cgroup>/berth/<id>`, as process
/// containers' do: a microVM container has no other cgroup on the host).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Host memory a monitor may use besides its guest's RAM (its own heap, device buffers,
/// the page cache of the disks it reads).
const MONITOR_OVERHEAD: i64 = 64 << 20;

/// The cgroup of the monitor making a template (docs/snapshots.md), one per exec root:
/// berthds of other exec roots make theirs beside it.
fn template_cgroup(exec_root: &Path) -> String {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    exec_root.hash(&mut h);
    format!("vm-template-{:08x}", h.finish() as u32)
}

/// The microVM backend.
pub struct VmSandbox {
    vmm: PathBuf,
    /// The uid range monitors are jailed with (None: unjailed).
    jail: Option<(u32, u32)>,
    /// Held while a uid is chosen and recorded in the new monitor's `vm.json`.
    uids: std::sync::Mutex<()>,
    kernel: Option<PathBuf>,
    agent_initrd: Option<PathBuf>,
    virtiofsd: Option<PathBuf>,
    images: Arc<ImageStore>,
    /// `--vmm-debug`: full guest console, traced boot steps.
    debug: bool,
    /// Boot steps traced (`--vmm-debug`, or BERTH_VMM_TRACE in berthd's environment,
    /// which its monitors inherit: the bench's phases with a quiet console).
    trace: bool,
    /// `BERTH_VMM_TRACE=guest`: the agent also notes each request and container step
    /// with the guest's CPU time, written to the console at power-off (docs/boot.md).
    guest_steps: bool,
    /// Snapshots of booted guests microVMs start from (None: `--vm-snapshots false`).
    templates: Option<super::template::Templates>,
    /// The template monitor's cgroup.
    template_cgroup: String,
}

/// The kernel arguments for an agent image on /dev/pmem0: the guest mounts it read-only
/// with DAX and runs /init from it. rootwait: the nvdimm bus probes asynchronously.
const PMEM_ROOT_CMDLINE: &str =
    "root=/dev/pmem0 rootfstype=erofs rootflags=dax=always ro rootwait init=/init";

/// Why a microVM booting the agent image may never answer.
const PMEM_ROOT_HINT: &str = "the agent is an erofs image on virtio-pmem: the guest kernel needs VIRTIO_PMEM, NVDIMM_PFN and FS_DAX, see kernel/microvm.config; its console.log says more with berthd --vmm-debug";

/// Whether `path` is an erofs image (its superblock's magic at byte 1024) rather than an
/// initramfs.
fn is_erofs(path: &std::path::Path) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 4];
    match std::fs::File::open(path)?.read_exact_at(&mut magic, 1024) {
        Ok(()) => Ok(u32::from_le_bytes(magic) == 0xE0F5_E1E2),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The largest image root disk a guest maps with DAX from a virtio-pmem device; a larger
/// one (or one built by an older berth, not padded to 2 MiB, or any beside an initramfs
/// agent) goes on virtio-blk. A pmem device costs the guest 64 bytes of struct page per
/// 4 KiB of it, written at boot (1 MiB for 64 MiB): for a large image that costs more
/// than DAX saves (docs/boot.md, step 13).
const DAX_DISK_MAX: u64 = 64 << 20;

/// Whether an image root disk of `len` bytes goes on virtio-pmem (DAX) rather than
/// virtio-blk.
fn dax_disk(len: u64) -> bool {
    len > 0 && len.is_multiple_of(berth_vmm::devices::virtio::pmem::ALIGN) && len <= DAX_DISK_MAX
}

/// The image disk's read-ahead in the guest, KiB (the kernel's default is 128). Every page
/// a guest reads from it lands in guest RAM it touches for the first time, which is what a
/// microVM's start pays for (docs/boot.md, step 12): reading around each page fault of an
/// exec by 128 KiB read and kept pages the program never used. Long sequential reads of
/// image files make more, smaller requests instead.
const IMAGE_DISK_READ_AHEAD_KB: u32 = 16;

/// The kernel arguments `--vmm-debug` adds to berth-vmm's quiet default: every message up
/// to `info` on the console, with its time since boot.
const DEBUG_CMDLINE: &str = "loglevel=7 printk.time=1";

impl VmSandbox {
    /// A backend starting `opts.vmm`.
    pub fn new(opts: &crate::daemon::Opts, images: Arc<ImageStore>) -> VmSandbox {
        VmSandbox {
            vmm: opts.vmm.clone(),
            jail: opts.vmm_jail,
            uids: std::sync::Mutex::new(()),
            kernel: opts.kernel.clone(),
            agent_initrd: opts.agent_initrd.clone(),
            virtiofsd: opts.virtiofsd.clone(),
            images,
            debug: opts.vmm_debug,
            trace: opts.vmm_debug || std::env::var_os("BERTH_VMM_TRACE").is_some(),
            guest_steps: std::env::var_os("BERTH_VMM_TRACE").is_some_and(|v| v == "guest"),
            template_cgroup: template_cgroup(&opts.exec_root),
            templates: opts
                .vm_snapshots
                .then(|| super::template::Templates::new(&opts.data_root, &opts.exec_root)),
        }
    }

    /// The snapshot a container's microVM starts from, if its configuration has one
    /// (made now if need be; see [`super::template`]). A boot with the kernel's full
    /// console or its initcalls traced (`--vmm-debug`, `BERTH_VMM_TRACE=guest`) is a real
    /// boot.
    fn template_for(&self, config: &VmConfig) -> Option<PathBuf> {
        let t = self.templates.as_ref()?;
        if self.debug || self.guest_steps || !super::template::fits(config) {
            return None;
        }
        let make_cgroup = |c: &VmConfig| {
            if let Some(old) = berth_container::cgroups::Cgroup::existing(
                Path::new(CGROUP_ROOT),
                &self.template_cgroup,
            ) {
                old.kill_all();
                old.destroy();
            }
            berth_container::cgroups::Cgroup::create(
                Path::new(CGROUP_ROOT),
                &self.template_cgroup,
                &monitor_limits(c),
            )
            .map_err(|e| format!("the template monitor's cgroup: {e}"))
        };
        // The range's last uid is the template monitor's (containers' end before it;
        // berthd turns snapshots off for a range of one).
        let jail = self
            .jail
            .map(|(start, count)| (start + count - 1, &make_cgroup as _));
        t.get(&self.vmm, config, jail).ok()
    }

    /// When tracing, a boot step and the host's CLOCK_MONOTONIC in the container's
    /// agent.log, beside the monitor's own trace lines (`BERTH_VMM_TRACE`).
    fn trace(&self, spec: &SandboxSpec, what: &str) {
        if self.trace {
            use std::io::Write;
            let line = format!("berthd: trace {} {what}\n", berth_vmm::vm::monotonic_ns());
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .open(spec.dir.join("agent.log"))
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    /// The monitor's configuration for one container, and where its guest finds the
    /// image's root disk: on virtio-pmem, mapped with DAX, if it is small enough
    /// ([`dax_disk`]), else on virtio-blk.
    pub fn config(&self, spec: &SandboxSpec, disk: PathBuf) -> Result<(VmConfig, ImageMount)> {
        let (Some(kernel), Some(initrd)) = (&self.kernel, &self.agent_initrd) else {
            return Err(Error::Sandbox(
                "microVM containers need a guest kernel and the guest agent: start berthd with --kernel and --agent-initrd (its erofs image or initramfs)".into(),
            ));
        };
        // The agent as a read-only erofs image on virtio-pmem, run in place (DAX), or as an
        // initramfs the guest unpacks into its own memory (docs/boot.md).
        let image = is_erofs(initrd).map_err(Error::io(format!("{}", initrd.display())))?;
        let len = std::fs::metadata(&disk)
            .map_err(Error::io(format!("{}", disk.display())))?
            .len();
        let mut pmem = Vec::new();
        if image {
            pmem.push(PmemConfig {
                path: initrd.clone(),
            });
        }
        let mut disks = Vec::new();
        // Only beside the agent's own image: a kernel that boots it has virtio-pmem and
        // DAX, while an initramfs agent may run on one without them.
        let mount = image_disk(disk, len, image, &mut pmem, &mut disks);
        let config = VmConfig {
            memory_mib: vm_memory_mib(spec.memory),
            vcpus: vm_vcpus(spec.nano_cpus),
            kernel: kernel.clone(),
            initrd: (!image).then(|| initrd.clone()),
            pmem,
            disks,
            vsock: Some(VsockConfig {
                cid: GUEST_CID,
                uds: spec.run_dir.join("vm.sock"),
            }),
            control_socket: Some(spec.run_dir.join("control.sock")),
            net: spec
                .nics
                .iter()
                .map(|n| NetConfig {
                    tap: n.tap.clone(),
                    mac: Some(n.guest.mac.clone()),
                })
                .collect(),
            fs: (0..spec.shares.len())
                .map(|i| FsConfig {
                    tag: share_tag(i),
                    socket: fs_socket(&spec.run_dir, i),
                })
                .collect(),
            console: format!("file:{}", spec.dir.join("console.log").display()),
            cmdline: [
                image.then_some(PMEM_ROOT_CMDLINE),
                self.debug.then_some(DEBUG_CMDLINE),
                // The agent's own steps, on the console (docs/boot.md).
                if self.guest_steps {
                    Some("berth_trace=2 initcall_debug")
                } else {
                    self.trace.then_some("berth_trace=1")
                },
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
            ..VmConfig::default()
        };
        Ok((config, mount))
    }
}

/// Adds the image's root disk (`len` bytes) to the devices, on virtio-pmem after the
/// others if `pmem_ok` and [`dax_disk`], else on virtio-blk as the first disk; where the
/// guest finds it.
fn image_disk(
    disk: PathBuf,
    len: u64,
    pmem_ok: bool,
    pmem: &mut Vec<PmemConfig>,
    disks: &mut Vec<DiskConfig>,
) -> ImageMount {
    if pmem_ok && dax_disk(len) {
        // pmemN in the order of the devices: the virtio-pmem driver (built in) probes
        // them in the order of the command line, and each nvdimm region takes the next
        // number (the lab test of microVM containers checks /dev/pmem1).
        let mount = ImageMount::Pmem(format!("/dev/pmem{}", pmem.len()));
        pmem.push(PmemConfig { path: disk });
        mount
    } else {
        disks.insert(
            0,
            DiskConfig {
                path: disk,
                read_only: true,
            },
        );
        ImageMount::Block("/dev/vda".into())
    }
}

/// Where a guest finds its image's root disk.
#[derive(Debug, PartialEq)]
pub enum ImageMount {
    /// A virtio-pmem device, mounted with DAX.
    Pmem(String),
    /// A virtio-blk device, mounted with a small read-ahead.
    Block(String),
}

impl ImageMount {
    /// The agent's request mounting it read-only at `target`.
    fn request(&self, target: String) -> Request {
        let (source, read_ahead_kb, dax) = match self {
            ImageMount::Pmem(dev) => (dev.clone(), None, true),
            ImageMount::Block(dev) => (dev.clone(), Some(IMAGE_DISK_READ_AHEAD_KB), false),
        };
        Request::MountStorage {
            source,
            fstype: "erofs".into(),
            target,
            read_only: true,
            read_ahead_kb,
            dax,
        }
    }
}

/// The cgroup limits of a jailed monitor: its guest's RAM and vCPUs (sized from the
/// container's limits) plus the monitor's own overhead.
fn monitor_limits(config: &VmConfig) -> berth_container::cgroups::Limits {
    let memory = ((config.memory_mib as i64) << 20) + MONITOR_OVERHEAD;
    berth_container::cgroups::Limits {
        memory: Some(memory),
        memory_swap: Some(memory),
        // The waiter, the monitor, its vCPU threads, and room for virtio-fs to reconnect
        // nothing: a monitor starts no other thread.
        pids: Some(i64::from(config.vcpus) + 8),
        // The vCPUs and one more CPU for the event loop.
        cpu_quota: Some(((i64::from(config.vcpus) + 1) * 100_000, 100_000)),
        cpuset_cpus: None,
    }
}

/// The jail uids recorded in the runtime directories under `c_dir` (the monitors that
/// run, or are starting).
fn uids_in_use(c_dir: &Path) -> std::collections::HashSet<u32> {
    std::fs::read_dir(c_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("vm.json")).ok())
        .filter_map(|b| serde_json::from_slice::<VmConfig>(&b).ok())
        .filter_map(|c| c.jail.map(|j| j.uid))
        .collect()
}

/// A jailed monitor's cgroup until the boot succeeds: removed (its processes killed)
/// if it fails.
struct CgroupGuard(Option<berth_container::cgroups::Cgroup>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            cg.kill_all();
            cg.destroy();
        }
    }
}

/// Where the guest agent mounts the image's root disk (the container's lower layer).
pub fn guest_image_layer(image_hex: &str) -> String {
    format!("/run/berth/image-{}", &image_hex[..12.min(image_hex.len())])
}

/// The container's writable layer in its guest: the upper directory on the tmpfs the
/// guest agent mounts for it in its own namespace.
pub fn guest_upper(id: &str) -> String {
    format!("/run/berth/rw/{id}/upper")
}

/// The virtio-fs tag of a microVM's `i`th shared directory.
fn share_tag(i: usize) -> String {
    format!("berth{i}")
}

/// The vhost-user socket of its backend.
fn fs_socket(run_dir: &Path, i: usize) -> PathBuf {
    run_dir.join(format!("fs{i}.sock"))
}

/// The virtiofsd processes of one microVM being booted: killed (each its whole process
/// group) unless the boot succeeds, then reaped in the background when they exit.
struct Backends(Vec<std::process::Child>);

impl Backends {
    /// Starts one virtiofsd per share and waits until each listens.
    fn start(virtiofsd: &Path, spec: &SandboxSpec) -> Result<Backends> {
        use std::os::unix::process::CommandExt;
        let mut b = Backends(Vec::new());
        for (i, s) in spec.shares.iter().enumerate() {
            let socket = fs_socket(&spec.run_dir, i);
            let log_path = spec.dir.join(format!("virtiofsd-{i}.log"));
            let log = super::private_file(&log_path)?;
            let mut cmd = std::process::Command::new(virtiofsd);
            let flag = |name: &str, p: &Path| {
                let mut a = std::ffi::OsString::from(name);
                a.push(p.as_os_str());
                a
            };
            cmd.arg(flag("--socket-path=", &socket))
                .arg(flag("--shared-dir=", &s.source))
                // Close-to-open consistency: the guest sees host changes at its next
                // open or lookup, within a second for attributes.
                .arg("--cache=auto")
                .arg("--sandbox=namespace")
                .arg("--log-level=error");
            if s.read_only {
                cmd.arg("--readonly");
            }
            cmd.stdin(std::process::Stdio::null())
                .stdout(log.try_clone().map_err(Error::io("virtiofsd's log"))?)
                .stderr(log);
            // SAFETY: setsid is async-signal-safe; the child only calls it before exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .map_err(|e| Error::Sandbox(format!("starting {}: {e}", virtiofsd.display())))?;
            b.0.push(child);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !socket.exists() {
                let c = b.0.last_mut().expect("just pushed");
                if let Ok(Some(status)) = c.try_wait() {
                    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                    return Err(Error::Sandbox(format!(
                        "virtiofsd for {} exited ({status}): {}",
                        s.source.display(),
                        text.lines().last().unwrap_or("it wrote nothing")
                    )));
                }
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Sandbox(format!(
                        "virtiofsd for {} did not listen within 10s",
                        s.source.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(b)
    }

    /// The microVM is up: from now on each virtiofsd lives as long as its connection to
    /// the monitor.
    fn release(mut self) {
        for mut c in std::mem::take(&mut self.0) {
            std::thread::spawn(move || {
                let _ = c.wait();
            });
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: kill(2) of the process group the child leads (it called setsid).
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

/// Random bytes for a restored guest's generator.
fn host_entropy() -> Result<Vec<u8>> {
    use std::io::Read;
    let mut b = vec![0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(Error::io("/dev/urandom"))?;
    Ok(b)
}

/// The guest's memory for a container's limit: room for the guest kernel and agent
/// besides the workload's limit.
fn vm_memory_mib(memory: i64) -> u64 {
    if memory > 0 {
        ((memory >> 20).max(64) + 64) as u64
    } else {
        256
    }
}

/// The vCPUs for a container's CPU limit.
fn vm_vcpus(nano_cpus: i64) -> u8 {
    if nano_cpus > 0 {
        ((nano_cpus + 999_999_999) / 1_000_000_000).clamp(1, 32) as u8
    } else {
        1
    }
}

impl Sandbox for VmSandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    fn check_host(&self) -> Result<()> {
        let k = berth_hostcheck::check();
        if k.can_run_microvms() {
            Ok(())
        } else {
            Err(Error::InvalidParameter(format!(
                "cannot create a microVM container on this host: {k}. berth never falls back to weaker isolation on its own: {}",
                berth_hostcheck::LAB_HINT
            )))
        }
    }

    fn boot(&self, spec: &SandboxSpec) -> Result<Booted> {
        self.check_host()?;
        let image = self.images.resolve(&spec.image_id)?;
        let disk = self.images.disk(&image)?;
        let (mut config, image_mount) = self.config(spec, disk)?;
        let mut restored = self.template_for(&config);
        if let Some(dir) = &restored {
            config.restore_from = Some(dir.clone());
        }
        let mut cgroup = CgroupGuard(None);
        if self.jail.is_some() {
            // One a crashed berthd (or a monitor that would not die) left would make the
            // create fail: what is in it is this container's, and gone with its sandbox.
            self.cleanup(&spec.id);
            let cg = berth_container::cgroups::Cgroup::create(
                Path::new(CGROUP_ROOT),
                &spec.id,
                &monitor_limits(&config),
            )
            .map_err(|e| Error::Sandbox(format!("the microVM monitor's cgroup: {e}")))?;
            cgroup.0 = Some(cg);
        }
        let backends = match (&self.virtiofsd, spec.shares.is_empty()) {
            (_, true) => Backends(Vec::new()),
            (Some(v), false) => Backends::start(v, spec)?,
            (None, false) => {
                return Err(Error::NotImplemented(
                    "volumes and bind mounts for microVM containers need virtiofsd (start berthd with --virtiofsd PATH)".into(),
                ))
            }
        };
        let config_path = spec.run_dir.join("vm.json");
        {
            // A uid is taken from the moment a vm.json names it until its runtime
            // directory is removed: chosen and written under one lock.
            let _uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some((start, count)), Some(cg)) = (self.jail, &cgroup.0) {
                let c_dir = spec.run_dir.parent().unwrap_or(Path::new("/"));
                let used = uids_in_use(c_dir);
                // With snapshots, the last uid of the range is the template monitor's.
                let uid = (start..start + count - u32::from(self.templates.is_some()))
                    .find(|u| !used.contains(u))
                    .ok_or_else(|| {
                        Error::Sandbox(format!(
                            "all {count} jail uids from {start} (--vmm-uids) are in use by running microVMs"
                        ))
                    })?;
                config.jail = Some(berth_vmm::jail::JailConfig {
                    dir: spec.run_dir.join("jail"),
                    uid,
                    gid: uid,
                    cgroups: cg.paths().iter().map(|p| p.join("cgroup.procs")).collect(),
                });
            }
            std::fs::write(
                &config_path,
                serde_json::to_vec_pretty(&config).map_err(|e| Error::Sandbox(e.to_string()))?,
            )
            .map_err(Error::io(format!("{}", config_path.display())))?;
        }
        let spawn = || {
            let mut cmd = std::process::Command::new(&self.vmm);
            cmd.arg("--config").arg(&config_path);
            if self.trace {
                cmd.env("BERTH_VMM_TRACE", "1");
            }
            // A guest kernel without virtio-pmem or DAX waits for its root for ever,
            // quietly.
            let hint = config.initrd.is_none().then_some(PMEM_ROOT_HINT);
            spawn_detached(
                cmd,
                &spec.dir.join("agent.log"),
                &spec.dir.join(super::PIDFILE),
                &self.endpoint(&spec.run_dir),
                Duration::from_secs(120),
                "microVM",
                hint,
            )
        };
        let mut client = match spawn() {
            Ok(c) => c,
            Err(e) if restored.is_some() => {
                // The template does not restore here (another host CPU, a file changed
                // under it): it is dropped, and this microVM boots.
                eprintln!("berthd: a microVM did not start from its snapshot, booting it: {e}");
                if let Some(t) = &self.templates {
                    t.evict(&self.vmm, &config);
                }
                for f in ["vm.sock", "control.sock"] {
                    let _ = std::fs::remove_file(spec.run_dir.join(f));
                }
                restored = None;
                config.restore_from = None;
                std::fs::write(
                    &config_path,
                    serde_json::to_vec_pretty(&config)
                        .map_err(|e| Error::Sandbox(e.to_string()))?,
                )
                .map_err(Error::io(format!("{}", config_path.display())))?;
                spawn()?
            }
            Err(e) => return Err(e),
        };
        self.trace(spec, "agent answered");
        if restored.is_some() {
            answer(
                client.call(&Request::Restored {
                    realtime_ns: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0),
                    entropy: host_entropy()?,
                }),
            )?;
        }
        let layer = guest_image_layer(image.id.hex());
        answer(client.call(&image_mount.request(layer.clone())))?;
        if !spec.nics.is_empty() {
            answer(client.call(&Request::ConfigureNetwork {
                interfaces: spec.nics.iter().map(|n| n.guest.clone()).collect(),
            }))?;
        }
        for (i, s) in spec.shares.iter().enumerate() {
            answer(client.call(&Request::MountStorage {
                source: share_tag(i),
                fstype: "virtiofs".into(),
                target: s.guest_path.clone(),
                read_only: s.read_only,
                read_ahead_kb: None,
                dax: false,
            }))?;
        }
        self.trace(spec, "guest storage and network set up");
        backends.release();
        cgroup.0 = None;
        Ok(Booted {
            rootfs: RootfsSpec {
                layers: vec![layer],
                writable: None,
            },
            agent_log: format!("/run/berth/{}.log", spec.id),
            client,
        })
    }

    fn endpoint(&self, run_dir: &Path) -> Endpoint {
        Endpoint::Vsock(run_dir.join("vm.sock"), berth_protocol::AGENT_VSOCK_PORT)
    }

    fn copies_logs(&self) -> bool {
        true
    }

    fn command_of(&self, _pid: i32) -> String {
        String::new()
    }

    /// A microVM's memory and vCPUs are fixed at boot: lower limits apply in the guest's
    /// cgroup at once, higher ones than the VM has would not, and are refused.
    fn check_update(&self, sized: (i64, i64), new: (i64, i64)) -> Result<()> {
        let room = (vm_memory_mib(sized.0) as i64 - 64) << 20;
        if new.0 > room || (new.0 == 0 && sized.0 > 0) {
            return Err(Error::NotImplemented(format!(
                "Memory: this microVM was booted with room for {} MiB; a higher memory limit (or none) applies from its next start, not to the running microVM (stop it, update, start)",
                room >> 20
            )));
        }
        let cpus = i64::from(vm_vcpus(sized.1)) * 1_000_000_000;
        if new.1 > cpus {
            return Err(Error::NotImplemented(format!(
                "NanoCpus: this microVM was booted with {} vCPU(s); more CPUs apply from its next start, not to the running microVM",
                cpus / 1_000_000_000
            )));
        }
        Ok(())
    }

    /// A tap per network, and the guest agent configures virtio-net.
    fn taps(&self) -> bool {
        true
    }

    /// A virtio-fs device per volume or bind mount.
    fn shares(&self) -> bool {
        true
    }

    fn check_confinement(&self, c: &crate::daemon::confinement::Confinement) -> Result<()> {
        if !c.devices.is_empty() {
            return Err(Error::NotImplemented(
                "HostConfig.Devices (--device): a microVM container runs on its own kernel and berth-vmm passes no host device through; use --isolation process".into(),
            ));
        }
        if c.pid_host {
            return Err(Error::NotImplemented(
                "HostConfig.PidMode \"host\": a microVM container runs on its own kernel, so the host's processes are out of its reach; use --isolation process".into(),
            ));
        }
        Ok(())
    }

    fn writable_layer(&self, _dir: &Path) -> Option<PathBuf> {
        None
    }

    /// A jailed monitor's cgroup (empty once its processes are gone).
    fn cleanup(&self, id: &str) {
        if let Some(cg) = berth_container::cgroups::Cgroup::existing(Path::new(CGROUP_ROOT), id) {
            cg.kill_all();
            cg.destroy();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_padded_image_disks_go_on_pmem_the_rest_on_virtio_blk() {
        assert!(dax_disk(2 << 20));
        assert!(dax_disk(DAX_DISK_MAX));
        // Not padded to 2 MiB (built by an older berth), empty, or too large.
        assert!(!dax_disk((2 << 20) + 4096));
        assert!(!dax_disk(0));
        assert!(!dax_disk(DAX_DISK_MAX + (2 << 20)));
        // After the agent's image: /dev/pmem1.
        let agent = PmemConfig {
            path: "/agent.erofs".into(),
        };
        let (mut pmem, mut disks) = (vec![agent], vec![]);
        let m = image_disk("/small.erofs".into(), 2 << 20, true, &mut pmem, &mut disks);
        assert_eq!(m, ImageMount::Pmem("/dev/pmem1".into()));
        assert_eq!(pmem.len(), 2);
        assert_eq!(pmem[1].path, Path::new("/small.erofs"));
        assert!(disks.is_empty());
        // Beside an initramfs agent (a kernel perhaps without virtio-pmem): virtio-blk.
        let (mut pmem, mut disks) = (vec![], vec![]);
        let m = image_disk("/small.erofs".into(), 2 << 20, false, &mut pmem, &mut disks);
        assert_eq!(m, ImageMount::Block("/dev/vda".into()));
        assert!(pmem.is_empty() && disks.len() == 1);
        // A large one is virtio-blk's first disk, /dev/vda, read-only.
        let (mut pmem, mut disks) = (vec![], vec![]);
        let m = image_disk("/big.erofs".into(), 66 << 20, true, &mut pmem, &mut disks);
        assert_eq!(m, ImageMount::Block("/dev/vda".into()));
        assert!(pmem.is_empty());
        assert_eq!(disks.len(), 1);
        assert!(disks[0].read_only && disks[0].path == Path::new("/big.erofs"));
        let pmem = ImageMount::Pmem("/dev/pmem1".into()).request("/l".into());
        assert!(matches!(
            pmem,
            Request::MountStorage { ref source, dax: true, read_ahead_kb: None, .. } if source == "/dev/pmem1"
        ));
        let blk = ImageMount::Block("/dev/vda".into()).request("/l".into());
        assert!(matches!(
            blk,
            Request::MountStorage {
                dax: false,
                read_ahead_kb: Some(IMAGE_DISK_READ_AHEAD_KB),
                ..
            }
        ));
    }

    #[test]
    fn an_erofs_image_is_told_from_an_initramfs_by_its_superblock() {
        let dir = std::env::temp_dir().join(format!("berth-is-erofs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("agent.erofs");
        let mut bytes = vec![0u8; 4096];
        bytes[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        std::fs::write(&img, &bytes).unwrap();
        assert!(is_erofs(&img).unwrap());
        // A cpio (newc) starts with its magic and holds no erofs superblock.
        let cpio = dir.join("agent.cpio");
        let mut bytes = b"070701".to_vec();
        bytes.resize(2048, b'0');
        std::fs::write(&cpio, &bytes).unwrap();
        assert!(!is_erofs(&cpio).unwrap());
        // Shorter than a superblock: not an image.
        let tiny = dir.join("tiny");
        std::fs::write(&tiny, b"070701").unwrap();
        assert!(!is_erofs(&tiny).unwrap());
        let e = is_erofs(&dir.join("missing")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
