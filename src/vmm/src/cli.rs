//! The command line of `berth-vmm` (see `berth-vmm --help`), shared by the binary and
//! the test-only example that adds a hook ([`RunOptions::after_filters`]).

use crate::config::{DiskConfig, FsConfig, NetConfig, PmemConfig, VmConfig, VsockConfig};
use crate::vm::{RunOptions, Vm};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: berth-vmm [--config FILE] [OPTIONS]

Runs one microVM until its guest shuts down. Flags override the config file.

  --config FILE        JSON configuration (see docs/vmm.md)
  --kernel PATH        guest kernel: vmlinux (ELF) or bzImage
  --initrd PATH        initramfs
  --cmdline STRING     appended to berth's default kernel command line
  --vcpus N            vCPUs (default 1)
  --memory MIB         guest memory in MiB (default 128)
  --disk PATH[,ro]     a virtio-blk disk (repeatable; /dev/vda first)
  --pmem PATH          a read-only virtio-pmem image (repeatable; /dev/pmem0 first);
                       its size must be a multiple of 2 MiB; with DAX the guest runs
                       its files in place, one page cache for every guest
  --net TAP[,mac=MAC]  a virtio-net interface on an existing tap (repeatable)
  --vsock CID,PATH     virtio-vsock with guest CID and host Unix socket PATH
  --fs TAG=SOCKET      a virtio-fs share served by the vhost-user backend (virtiofsd)
                       listening on SOCKET; the guest mounts it with -t virtiofs TAG
                       (repeatable; guest RAM is then a memfd the backend maps)
  --console WHERE      stdout (default), off, or file:PATH
  --control PATH       control socket (stats, pause, resume, stop, snapshot)
  --snapshot-to DIR    the control socket's snapshot action writes the guest to DIR
                       (docs/snapshots.md); the monitor exits once it is written
  --restore DIR        start from the snapshot in DIR instead of booting; devices
                       beyond the snapshot's fill its empty slots
  --empty-slots N      virtio-mmio slots announced empty, for devices a restore adds
  --jail DIR           confine the monitor (see docs/vmm.md): DIR becomes its root;
                       needs --jail-uid and --jail-gid; berth-vmm must start as root
  --jail-uid N         the jailed monitor's uid (not 0; one per microVM)
  --jail-gid N         its gid
  --jail-cgroup FILE   a cgroup.procs file to join first (repeatable)
  --seccomp-log        development: log system calls outside the seccomp filters
                       (dmesg) instead of stopping the monitor
  --bench-setup        build the VM, print the time of the first KVM_RUN, and exit

Exit status: 0 when the guest shuts down; 1 with a one-line reason on a failure;
128+N when stopped by signal N; 2 for bad usage.";

fn parse(args: Vec<String>) -> Result<(VmConfig, RunOptions), String> {
    let mut it = args.into_iter();
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut config_file = None;
    let mut opts = RunOptions::default();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--bench-setup" => opts.bench_setup = true,
            "--seccomp-log" => overrides.push((flag, String::new())),
            "--config" | "--kernel" | "--initrd" | "--cmdline" | "--vcpus" | "--memory"
            | "--disk" | "--pmem" | "--net" | "--vsock" | "--fs" | "--console" | "--control"
            | "--jail" | "--jail-uid" | "--jail-gid" | "--jail-cgroup" | "--snapshot-to"
            | "--restore" | "--empty-slots" => {
                let v = match inline.or_else(|| it.next()) {
                    Some(v) => v,
                    None => return Err(format!("{flag} needs a value")),
                };
                if flag == "--config" {
                    config_file = Some(PathBuf::from(v));
                } else {
                    overrides.push((flag, v));
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut c = match config_file {
        Some(p) => VmConfig::from_file(&p).map_err(|e| e.to_string())?,
        None => VmConfig::default(),
    };
    let mut jail: (Option<PathBuf>, Option<u32>, Option<u32>, Vec<PathBuf>) =
        (None, None, None, Vec::new());
    let id = |flag: &str, v: &str| {
        v.parse::<u32>()
            .map_err(|_| format!("{flag}: {v:?} is not a number"))
    };
    for (flag, v) in overrides {
        match flag.as_str() {
            "--seccomp-log" => c.seccomp = crate::seccomp::Mode::Log,
            "--jail" => jail.0 = Some(v.into()),
            "--jail-uid" => jail.1 = Some(id(&flag, &v)?),
            "--jail-gid" => jail.2 = Some(id(&flag, &v)?),
            "--jail-cgroup" => jail.3.push(v.into()),
            "--kernel" => c.kernel = v.into(),
            "--initrd" => c.initrd = Some(v.into()),
            "--cmdline" => c.cmdline = v,
            "--vcpus" => {
                c.vcpus = v
                    .parse()
                    .map_err(|_| format!("--vcpus: {v:?} is not a number 1..=32"))?
            }
            "--memory" => {
                c.memory_mib = v
                    .parse()
                    .map_err(|_| format!("--memory: {v:?} is not a number of MiB"))?
            }
            "--disk" => {
                let (path, ro) = match v.strip_suffix(",ro") {
                    Some(p) => (p, true),
                    None => (v.strip_suffix(",rw").unwrap_or(&v), false),
                };
                c.disks.push(DiskConfig {
                    path: path.into(),
                    read_only: ro,
                });
            }
            "--pmem" => c.pmem.push(PmemConfig { path: v.into() }),
            "--net" => {
                let mut parts = v.split(',');
                let tap = parts.next().unwrap_or_default().to_owned();
                let mut mac = None;
                for p in parts {
                    match p.strip_prefix("mac=") {
                        Some(m) => mac = Some(m.to_owned()),
                        None => {
                            return Err(format!("--net: unknown option {p:?} (expected mac=MAC)"))
                        }
                    }
                }
                c.net.push(NetConfig { tap, mac });
            }
            "--vsock" => {
                let (cid, path) = v
                    .split_once(',')
                    .ok_or_else(|| format!("--vsock: {v:?} is not CID,PATH"))?;
                let cid = cid
                    .parse()
                    .map_err(|_| format!("--vsock: CID {cid:?} is not a number"))?;
                c.vsock = Some(VsockConfig {
                    cid,
                    uds: path.into(),
                });
            }
            "--fs" => {
                let (tag, socket) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--fs: {v:?} is not TAG=SOCKET"))?;
                c.fs.push(FsConfig {
                    tag: tag.to_owned(),
                    socket: socket.into(),
                });
            }
            "--console" => c.console = v,
            "--control" => c.control_socket = Some(v.into()),
            "--snapshot-to" => c.snapshot_to = Some(v.into()),
            "--restore" => c.restore_from = Some(v.into()),
            "--empty-slots" => {
                c.empty_slots = v
                    .parse()
                    .map_err(|_| format!("--empty-slots: {v:?} is not a number 0..=8"))?
            }
            _ => unreachable!("only known flags are collected"),
        }
    }
    match jail {
        (None, None, None, cg) if cg.is_empty() => {}
        (Some(dir), Some(uid), Some(gid), cgroups) => {
            c.jail = Some(crate::jail::JailConfig {
                dir,
                uid,
                gid,
                cgroups,
            })
        }
        _ => return Err("--jail needs --jail-uid and --jail-gid (and they need --jail)".into()),
    }
    Ok((c, opts))
}

/// Runs berth-vmm with `args` (without the program name); `hook` is for tests only.
pub fn main(args: Vec<String>, hook: Option<fn()>) -> ExitCode {
    if std::env::var_os("BERTH_VMM_TRACE").is_some() {
        crate::vm::trace_line(&format!(
            "berth-vmm: trace {} main\n",
            crate::vm::monotonic_ns()
        ));
    }
    let (config, mut opts) = match parse(args) {
        Ok(x) => x,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("berth-vmm: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    opts.after_filters = hook;
    if let Some(j) = &config.jail {
        // Checked before anything is created or joined.
        if let Err(e) = config.validate() {
            eprintln!("berth-vmm: {e}");
            return ExitCode::from(1);
        }
        let started =
            crate::jail::prepare(j).and_then(|()| crate::jail::fork_monitor(j, config.seccomp));
        if let Err(e) = started {
            eprintln!("berth-vmm: {e}");
            return ExitCode::from(1);
        }
    }
    let mut vm = match Vm::build(&config, opts) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("berth-vmm: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(j) = &config.jail {
        if let Err(e) = crate::jail::enter(j, crate::jail::Rlimits::for_vm(&config)) {
            eprintln!("berth-vmm: {e}");
            return ExitCode::from(1);
        }
        vm.jailed();
    }
    let exit = vm.run();
    if std::env::var_os("BERTH_VMM_TRACE").is_some() {
        crate::vm::trace_line(&format!(
            "berth-vmm: trace {} stopped\n",
            crate::vm::monotonic_ns()
        ));
    }
    if exit.code != 0 {
        eprintln!("berth-vmm: {}", exit.reason);
    }
    // The vCPU threads may still be inside KVM_RUN: leave without unwinding them, after
    // removing the sockets this monitor created.
    std::process::exit(exit.code);
}
