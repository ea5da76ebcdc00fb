//! microVM isolation: one berth-vmm per container, configured by a `vm.json` (berth-vmm's
//! own [`VmConfig`], serialised), with the guest kernel, the agent's initramfs, the
//! image's erofs root disk (`/dev/vda`, read-only) and hybrid vsock. The guest agent
//! mounts the disk and runs the workload on an overlay with a tmpfs upper layer; it keeps
//! the json-file log inside the guest, and berthd copies the output to the host log.

use super::{answer, spawn_detached, Booted, Isolation, Sandbox, SandboxSpec};
use crate::errors::{Error, Result};
use berth_image::ImageStore;
use berth_protocol::client::Endpoint;
use berth_protocol::{Request, RootfsSpec};
use berth_vmm::config::{DiskConfig, NetConfig, VmConfig, VsockConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The guest's vsock context ID (each microVM has its own socket, so one CID does).
const GUEST_CID: u32 = 3;

/// The microVM backend.
pub struct VmSandbox {
    vmm: PathBuf,
    kernel: Option<PathBuf>,
    agent_initrd: Option<PathBuf>,
    images: Arc<ImageStore>,
}

impl VmSandbox {
    /// A backend starting `opts.vmm`.
    pub fn new(opts: &crate::daemon::Opts, images: Arc<ImageStore>) -> VmSandbox {
        VmSandbox {
            vmm: opts.vmm.clone(),
            kernel: opts.kernel.clone(),
            agent_initrd: opts.agent_initrd.clone(),
            images,
        }
    }

    /// The monitor's configuration for one container.
    pub fn config(&self, spec: &SandboxSpec, disk: PathBuf) -> Result<VmConfig> {
        let (Some(kernel), Some(initrd)) = (&self.kernel, &self.agent_initrd) else {
            return Err(Error::Sandbox(
                "microVM containers need a guest kernel and the agent initramfs: start berthd with --kernel and --agent-initrd".into(),
            ));
        };
        Ok(VmConfig {
            memory_mib: vm_memory_mib(spec.memory),
            vcpus: vm_vcpus(spec.nano_cpus),
            kernel: kernel.clone(),
            initrd: Some(initrd.clone()),
            disks: vec![DiskConfig {
                path: disk,
                read_only: true,
            }],
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
            console: format!("file:{}", spec.dir.join("console.log").display()),
            ..VmConfig::default()
        })
    }
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
        let config = self.config(spec, disk)?;
        let config_path = spec.run_dir.join("vm.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).map_err(|e| Error::Sandbox(e.to_string()))?,
        )
        .map_err(Error::io(format!("{}", config_path.display())))?;
        let mut cmd = std::process::Command::new(&self.vmm);
        cmd.arg("--config").arg(&config_path);
        let mut client = spawn_detached(
            cmd,
            &spec.dir.join("agent.log"),
            &spec.dir.join(super::PIDFILE),
            &self.endpoint(&spec.run_dir),
            Duration::from_secs(120),
            "microVM",
        )?;
        let layer = format!("/run/berth/image-{}", &image.id.hex()[..12]);
        answer(client.call(&Request::MountStorage {
            source: "/dev/vda".into(),
            fstype: "erofs".into(),
            target: layer.clone(),
            read_only: true,
        }))?;
        if !spec.nics.is_empty() {
            answer(client.call(&Request::ConfigureNetwork {
                interfaces: spec.nics.iter().map(|n| n.guest.clone()).collect(),
            }))?;
        }
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

    fn check_confinement(&self, c: &crate::daemon::confinement::Confinement) -> Result<()> {
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
}
