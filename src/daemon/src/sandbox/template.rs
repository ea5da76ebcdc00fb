//! Snapshots of a booted guest that microVM containers start from (docs/snapshots.md).
//!
//! The first microVM container of a guest configuration (kernel, agent image, memory,
//! vCPUs, monitor build) waits while berthd boots a template guest with no container
//! devices, in its own jailed monitor, until its agent answers; the monitor then writes the
//! paused guest to `<data-root>/vm-templates/<key>/` and exits. Every microVM of that
//! configuration then starts from it: berth-vmm maps its memory copy-on-write, the
//! container's disk and interfaces fill the slots the template left empty, and the agent
//! sets the clock, reseeds its kernel's random generator and probes the added devices
//! (`Request::Restored`). A configuration the snapshot cannot serve (an initramfs agent,
//! volumes, more devices than empty slots, `--vmm-debug`) boots as before.

use berth_protocol::client::Endpoint;
use berth_vmm::config::{VmConfig, VsockConfig};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// virtio-mmio slots a template leaves empty: the image's disk and up to three
/// interfaces.
pub const EMPTY_SLOTS: u8 = 4;

/// How long a template's boot and snapshot may take.
const MAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// The template monitor's jail uid, and what makes its cgroup.
pub type TemplateJail<'a> = (
    u32,
    &'a dyn Fn(&VmConfig) -> Result<berth_container::cgroups::Cgroup, String>,
);

/// The templates of one berthd.
pub struct Templates {
    /// `<data-root>/vm-templates`.
    store: PathBuf,
    /// A template monitor's runtime directory (sockets, pidfile).
    run_dir: PathBuf,
    /// Each configuration's template, or why it could not be made (not tried again).
    made: Mutex<HashMap<u64, Result<PathBuf, String>>>,
    /// Held while a template is made: one at a time (the template monitor's uid is
    /// one), while microVMs of configurations that have theirs start meanwhile.
    making: Mutex<()>,
    /// The host's boot (part of every key), read once.
    boot_id: String,
}

/// What a snapshot depends on: the monitor, the kernel, the agent image (the first pmem
/// device), the guest's size and command line.
pub fn key(vmm: &Path, boot_id: &str, c: &VmConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same key for the same inputs in every berthd run.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    let identity = berth_vmm::snapshot::file_identity;
    identity(vmm).hash(&mut h);
    identity(&c.kernel).hash(&mut h);
    c.pmem.first().map(|p| identity(&p.path)).hash(&mut h);
    // A snapshot holds the host CPU's view of its boot: not carried over a host reboot.
    boot_id.hash(&mut h);
    c.memory_mib.hash(&mut h);
    c.vcpus.hash(&mut h);
    c.cmdline.hash(&mut h);
    EMPTY_SLOTS.hash(&mut h);
    h.finish()
}

/// Whether a container's monitor configuration can start from a template: the agent is
/// an image (no initramfs), no shares (their backends map guest RAM, which a restored
/// guest has as a private copy), and its container devices fit the empty slots.
pub fn fits(c: &VmConfig) -> bool {
    c.initrd.is_none()
        && !c.pmem.is_empty()
        && c.fs.is_empty()
        && c.disks.len() + c.pmem.len() - 1 + c.net.len() <= usize::from(EMPTY_SLOTS)
}

impl Templates {
    /// Templates kept under `data_root`, made with sockets under `exec_root`.
    pub fn new(data_root: &Path, exec_root: &Path) -> Templates {
        let t = Templates {
            store: data_root.join("vm-templates"),
            run_dir: exec_root.join("vm-template"),
            made: Mutex::new(HashMap::new()),
            making: Mutex::new(()),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        };
        t.reconcile();
        t
    }

    /// At berthd's start: a template monitor an earlier berthd left (it crashed while
    /// making one) is killed, and the templates of earlier runs are removed (their
    /// keys name the monitor, kernel and agent files of their time; a template is made
    /// again on first use, once).
    fn reconcile(&self) {
        super::reap_sandbox(&self.run_dir.join(super::PIDFILE), Duration::ZERO);
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.store);
    }

    /// Forgets and removes the template of `config` (a restore from it failed).
    pub fn evict(&self, vmm: &Path, config: &VmConfig) {
        let key = key(vmm, &self.boot_id, config);
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Err("a restore from it failed".into()));
        let _ = std::fs::remove_dir_all(self.store.join(format!("{key:016x}")));
    }

    /// The snapshot directory for `config` (a container's, which [`fits`]), made now if
    /// it does not exist yet. `jail` is the (uid, cgroup) the template monitor runs
    /// confined with.
    pub fn get(
        &self,
        vmm: &Path,
        config: &VmConfig,
        jail: Option<TemplateJail<'_>>,
    ) -> Result<PathBuf, String> {
        let key = key(vmm, &self.boot_id, config);
        let known = |t: &Templates| {
            t.made
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned()
        };
        if let Some(r) = known(self) {
            return r;
        }
        let _making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = known(self) {
            return r;
        }
        let dir = self.store.join(format!("{key:016x}"));
        let r = if berth_vmm::snapshot::Snapshot::read(&dir).is_ok() {
            Ok(dir)
        } else {
            let r = self.make(vmm, config, &dir, jail);
            if let Err(e) = &r {
                eprintln!(
                    "berthd: microVMs of this configuration boot without a snapshot: making one failed: {e}"
                );
            }
            r
        };
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, r.clone());
        r
    }

    fn make(
        &self,
        vmm: &Path,
        base: &VmConfig,
        dir: &Path,
        jail: Option<TemplateJail<'_>>,
    ) -> Result<PathBuf, String> {
        use std::os::unix::fs::DirBuilderExt;
        let tmp = dir.with_extension("new");
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(&self.run_dir);
        for d in [&tmp, &self.run_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut c = base.clone();
        c.pmem.truncate(1);
        c.disks.clear();
        c.net.clear();
        c.fs.clear();
        c.vsock = Some(VsockConfig {
            cid: super::vm::GUEST_CID,
            uds: self.run_dir.join("vm.sock"),
        });
        c.control_socket = Some(self.run_dir.join("control.sock"));
        c.console = format!("file:{}", tmp.join("console.log").display());
        c.empty_slots = EMPTY_SLOTS;
        c.snapshot_to = Some(tmp.clone());
        c.restore_from = None;
        c.jail = None;
        let mut cgroup = None;
        let r = match jail.map(|(uid, make_cgroup)| (uid, make_cgroup(&c))) {
            Some((_, Err(e))) => Err(e),
            Some((uid, Ok(cg))) => {
                c.jail = Some(berth_vmm::jail::JailConfig {
                    dir: self.run_dir.join("jail"),
                    uid,
                    gid: uid,
                    cgroups: cg.paths().iter().map(|p| p.join("cgroup.procs")).collect(),
                });
                cgroup = Some(cg);
                self.boot_and_snapshot(vmm, &c, &tmp)
            }
            None => self.boot_and_snapshot(vmm, &c, &tmp),
        };
        if let Some(cg) = cgroup {
            cg.kill_all();
            cg.destroy();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
        match r {
            Ok(()) => {
                std::fs::rename(&tmp, dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(dir.to_path_buf())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    /// Boots the template, waits for its agent, has the monitor write the snapshot and
    /// waits for it to exit.
    fn boot_and_snapshot(&self, vmm: &Path, c: &VmConfig, tmp: &Path) -> Result<(), String> {
        let config_path = self.run_dir.join("vm.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(c).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let mut cmd = std::process::Command::new(vmm);
        cmd.arg("--config").arg(&config_path);
        let pidfile = self.run_dir.join(super::PIDFILE);
        let endpoint = Endpoint::Vsock(
            self.run_dir.join("vm.sock"),
            berth_protocol::AGENT_VSOCK_PORT,
        );
        let client = super::spawn_detached(
            cmd,
            &tmp.join("monitor.log"),
            &pidfile,
            &endpoint,
            MAKE_TIMEOUT,
            "template microVM",
            None,
        )
        .map_err(|e| e.to_string())?;
        // The agent answered: it listens, and its guest has nothing else to do. The
        // connection is dropped; the restored guests' vsock devices reset it anyway.
        drop(client);
        let reply = snapshot_request(&self.run_dir.join("control.sock"));
        // After a refused request the monitor runs on: killed at once.
        let gone = reply.is_ok() && wait_gone(&pidfile, MAKE_TIMEOUT);
        if !gone {
            super::reap_sandbox(&pidfile, Duration::ZERO);
        }
        let reply =
            reply.map_err(|e| format!("{e} ({})", super::log_tail(&tmp.join("monitor.log"))))?;
        if !reply.contains("\"ok\":true") {
            return Err(format!(
                "the template monitor refused the snapshot: {}",
                reply.trim()
            ));
        }
        if !gone {
            return Err("the template monitor did not exit after its snapshot".into());
        }
        berth_vmm::snapshot::Snapshot::read(tmp)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Asks a monitor for its snapshot; its one-line reply.
fn snapshot_request(socket: &Path) -> Result<String, String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let _ = s.set_read_timeout(Some(MAKE_TIMEOUT));
    (&s).write_all(b"{\"action\":\"snapshot\"}\n")
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    Ok(line)
}

/// Waits until the process `pidfile` records is gone (reaped by spawn_detached's thread).
fn wait_gone(pidfile: &Path, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if super::recorded_process(pidfile).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_vmm::config::{DiskConfig, FsConfig, NetConfig, PmemConfig};

    fn config() -> VmConfig {
        VmConfig {
            pmem: vec![PmemConfig {
                path: "/agent.erofs".into(),
            }],
            ..VmConfig::default()
        }
    }

    #[test]
    fn only_an_agent_image_without_shares_and_with_few_devices_fits() {
        let mut c = config();
        assert!(fits(&c));
        c.pmem.push(PmemConfig {
            path: "/image.erofs".into(),
        });
        for i in 0..3 {
            c.net.push(NetConfig {
                tap: format!("tap{i}"),
                mac: None,
            });
        }
        assert!(
            fits(&c),
            "the image and three interfaces fill the four slots"
        );
        c.disks.push(DiskConfig {
            path: "/d".into(),
            read_only: true,
        });
        assert!(!fits(&c), "one device too many");
        let mut c = config();
        c.fs.push(FsConfig {
            tag: "v0".into(),
            socket: "/s".into(),
        });
        assert!(!fits(&c), "shares need shared guest RAM");
        let mut c = config();
        c.initrd = Some("/agent.cpio".into());
        c.pmem.clear();
        assert!(!fits(&c), "an initramfs agent boots");
    }

    #[test]
    fn the_key_follows_the_guests_size_and_command_line_not_its_container_devices() {
        let vmm = Path::new("/nonexistent/berth-vmm");
        let c = config();
        let mut d = c.clone();
        d.net.push(NetConfig {
            tap: "t".into(),
            mac: None,
        });
        d.pmem.push(PmemConfig {
            path: "/image.erofs".into(),
        });
        assert_eq!(key(vmm, "b", &c), key(vmm, "b", &d));
        let mut m = c.clone();
        m.memory_mib = 512;
        assert_ne!(key(vmm, "b", &c), key(vmm, "b", &m));
        let mut t = c.clone();
        t.cmdline = "berth_trace=1".into();
        assert_ne!(key(vmm, "b", &c), key(vmm, "b", &t));
        assert_ne!(key(vmm, "b", &c), key(vmm, "another boot", &c));
    }
}
