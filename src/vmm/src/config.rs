//! The microVM's configuration: a JSON file, command-line flags, or both (flags win).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file can't be read.
    #[error("config file {path}: {err}")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The config file is not valid JSON for this schema.
    #[error("config file {path}: {err}")]
    Parse {
        /// The path given.
        path: String,
        /// What serde said (names the field).
        err: serde_json::Error,
    },
    /// A flag or field has a bad value.
    #[error("{field}: {why}")]
    Invalid {
        /// The field or flag.
        field: String,
        /// What is wrong with it.
        why: String,
    },
}

fn invalid(field: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        why: why.into(),
    }
}

/// A block device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Host file backing the disk.
    pub path: PathBuf,
    /// Guest writes fail with an I/O error.
    #[serde(default)]
    pub read_only: bool,
}

/// A read-only persistent-memory image (virtio-pmem). Its size must be a multiple of
/// 2 MiB; the guest cannot write to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PmemConfig {
    /// Host file holding the image.
    pub path: PathBuf,
}

/// A network interface backed by a tap device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Name of an existing tap device on the host.
    pub tap: String,
    /// Guest MAC address (aa:bb:cc:dd:ee:ff); random if absent.
    #[serde(default)]
    pub mac: Option<String>,
}

/// The vsock device (Firecracker's hybrid vsock over a Unix socket).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more).
    pub cid: u32,
    /// Host Unix socket path the monitor listens on.
    pub uds: PathBuf,
}

/// A shared directory: a virtio-fs device whose requests a vhost-user backend (virtiofsd)
/// serves. The guest mounts it with `mount -t virtiofs TAG DIR`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The mount tag the guest sees (1 to 36 bytes).
    pub tag: String,
    /// The backend's vhost-user socket (listening already).
    pub socket: PathBuf,
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Console {
    /// The monitor's stdout (and stdin to the guest).
    #[default]
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// Nowhere.
    Off,
}

impl std::str::FromStr for Console {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Console, ConfigError> {
        match s {
            "stdout" | "stdio" => Ok(Console::Stdout),
            "off" | "none" => Ok(Console::Off),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(Console::File(p.into())),
                _ => Err(invalid(
                    "console",
                    format!("{s:?} is not stdout, off or file:PATH"),
                )),
            },
        }
    }
}

/// Most empty virtio-mmio slots a guest can be given.
pub const MAX_EMPTY_SLOTS: u8 = 8;

/// The whole configuration of one microVM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Number of vCPUs (1..=32).
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Guest kernel: vmlinux (ELF) or bzImage.
    #[serde(default)]
    pub kernel: PathBuf,
    /// Initramfs.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Appended to berth's default kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// Block devices, /dev/vda first.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// Read-only images the guest sees as persistent memory (virtio-pmem, /dev/pmem0
    /// first), mapped from one host file into every guest that uses it.
    #[serde(default)]
    pub pmem: Vec<PmemConfig>,
    /// Network interfaces, eth0 first.
    #[serde(default)]
    pub net: Vec<NetConfig>,
    /// The vsock device.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Shared directories (virtio-fs over vhost-user); guest RAM is then a memfd the
    /// backends map.
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    /// The serial console: "stdout", "off" or "file:PATH".
    #[serde(default = "default_console")]
    pub console: String,
    /// Control socket path.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Run confined in a jail (see [`crate::jail`]): what berthd always asks for.
    #[serde(default)]
    pub jail: Option<crate::jail::JailConfig>,
    /// What a system call outside the monitor's seccomp filters does: "kill" (the
    /// default) or "log" (development).
    #[serde(default)]
    pub seccomp: crate::seccomp::Mode,
    /// A directory the `snapshot` control action writes the paused guest into
    /// (`state.json` and `memory`; docs/snapshots.md). The monitor exits once it is written.
    #[serde(default)]
    pub snapshot_to: Option<PathBuf>,
    /// A directory holding a snapshot to start from instead of booting the kernel: the
    /// snapshot's devices must all be in this configuration (the same images for its
    /// pmem devices); devices beyond them fill its empty slots.
    #[serde(default)]
    pub restore_from: Option<PathBuf>,
    /// virtio-mmio slots announced to a booting guest with no device behind them, for
    /// devices added when a snapshot of it is restored (at most 8).
    #[serde(default)]
    pub empty_slots: u8,
}

fn default_vcpus() -> u8 {
    1
}
fn default_memory() -> u64 {
    128
}
fn default_console() -> String {
    "stdout".into()
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: default_vcpus(),
            memory_mib: default_memory(),
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![],
            pmem: vec![],
            net: vec![],
            vsock: None,
            fs: vec![],
            console: default_console(),
            control_socket: None,
            jail: None,
            seccomp: crate::seccomp::Mode::Kill,
            snapshot_to: None,
            restore_from: None,
            empty_slots: 0,
        }
    }
}

/// Parses a MAC address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || {
        invalid(
            "mac",
            format!("{s:?} is not a MAC address like 02:00:00:00:00:01"),
        )
    };
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(invalid("mac", format!("{s} is a multicast address")));
    }
    Ok(mac)
}

impl VmConfig {
    /// Reads a JSON config file.
    pub fn from_file(path: &std::path::Path) -> Result<VmConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: shown.clone(),
            err,
        })?;
        serde_json::from_str(&text).map_err(|err| ConfigError::Parse { path: shown, err })
    }

    /// Checks what can be checked without touching KVM.
    pub fn validate(&self) -> Result<Console, ConfigError> {
        if self.vcpus == 0 || self.vcpus > crate::layout::MAX_VCPUS {
            return Err(invalid(
                "vcpus",
                format!(
                    "{} is out of range 1..={}",
                    self.vcpus,
                    crate::layout::MAX_VCPUS
                ),
            ));
        }
        if self.kernel.as_os_str().is_empty() {
            return Err(invalid("kernel", "no kernel given (--kernel PATH)"));
        }
        if !self.kernel.is_file() {
            return Err(invalid(
                "kernel",
                format!("{}: no such file", self.kernel.display()),
            ));
        }
        if let Some(i) = &self.initrd {
            if !i.is_file() {
                return Err(invalid("initrd", format!("{}: no such file", i.display())));
            }
        }
        let max_devices = (crate::layout::LAST_IRQ - crate::layout::FIRST_VIRTIO_IRQ + 1) as usize;
        for p in &self.pmem {
            if !p.path.is_file() {
                return Err(invalid(
                    "pmem",
                    format!("{}: no such file", p.path.display()),
                ));
            }
        }
        let n = self.disks.len()
            + self.pmem.len()
            + self.net.len()
            + self.fs.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.empty_slots)
            + 2;
        if n > max_devices {
            return Err(invalid(
                "devices",
                format!(
                    "{n} virtio devices (disks, interfaces, shares, vsock, rng and balloon); at most {max_devices}"
                ),
            ));
        }
        for n in &self.net {
            if n.tap.is_empty() || n.tap.len() >= libc::IFNAMSIZ {
                return Err(invalid(
                    "net",
                    format!("tap name {:?} is not a valid interface name", n.tap),
                ));
            }
            if let Some(m) = &n.mac {
                parse_mac(m)?;
            }
        }
        let mut tags = std::collections::HashSet::new();
        for f in &self.fs {
            if f.tag.is_empty() || f.tag.len() > 36 || f.tag.contains('\0') {
                return Err(invalid(
                    "fs",
                    format!("tag {:?}: a tag is 1 to 36 bytes, without NUL", f.tag),
                ));
            }
            if !tags.insert(f.tag.as_str()) {
                return Err(invalid("fs", format!("tag {:?} is given twice", f.tag)));
            }
            use std::os::unix::fs::FileTypeExt;
            match std::fs::metadata(&f.socket) {
                Ok(m) if m.file_type().is_socket() => {}
                Ok(_) => {
                    return Err(invalid(
                        "fs",
                        format!("{}: not a socket", f.socket.display()),
                    ))
                }
                Err(e) => return Err(invalid("fs", format!("{}: {e}", f.socket.display()))),
            }
        }
        if let Some(v) = &self.vsock {
            if v.cid < 3 || v.cid == u32::MAX {
                return Err(invalid(
                    "vsock",
                    format!("guest CID {} is reserved; use 3 or more", v.cid),
                ));
            }
            check_socket_path("vsock", &v.uds)?;
        }
        if let Some(c) = &self.control_socket {
            check_socket_path("control_socket", c)?;
        }
        if let Some(j) = &self.jail {
            j.validate().map_err(|m| invalid("jail", m))?;
        }
        if self.empty_slots > MAX_EMPTY_SLOTS {
            return Err(invalid(
                "empty_slots",
                format!(
                    "{} empty slots; at most {MAX_EMPTY_SLOTS}",
                    self.empty_slots
                ),
            ));
        }
        if let Some(d) = &self.snapshot_to {
            if self.restore_from.is_some() {
                return Err(invalid(
                    "snapshot_to",
                    "a restored guest cannot be snapshot again (restore_from is set)",
                ));
            }
            if !self.fs.is_empty() {
                return Err(invalid(
                    "snapshot_to",
                    "a guest with virtio-fs shares cannot be restored (their backends map guest RAM, a restored guest's is a private copy)",
                ));
            }
            if !d.is_dir() {
                return Err(invalid(
                    "snapshot_to",
                    format!("{}: no such directory", d.display()),
                ));
            }
        }
        if let Some(d) = &self.restore_from {
            if !d.join(crate::snapshot::STATE_FILE).is_file() {
                return Err(invalid(
                    "restore_from",
                    format!(
                        "{}: no snapshot there (no {})",
                        d.display(),
                        crate::snapshot::STATE_FILE
                    ),
                ));
            }
            if !self.fs.is_empty() {
                return Err(invalid(
                    "restore_from",
                    "virtio-fs shares need guest RAM the backends can map; a restored guest's RAM is a private copy of the snapshot",
                ));
            }
            if self.initrd.is_some() {
                return Err(invalid(
                    "restore_from",
                    "a restored guest has already booted: no initrd",
                ));
            }
            if self.empty_slots != 0 {
                return Err(invalid(
                    "empty_slots",
                    "a restored guest has the snapshot's slots; empty_slots is for a booting one",
                ));
            }
        }
        self.console.parse()
    }
}

/// A socket path must be free (berth never removes what it did not create) and fit in
/// sockaddr_un.
fn check_socket_path(field: &str, p: &std::path::Path) -> Result<(), ConfigError> {
    if p.as_os_str().len() >= 100 {
        return Err(invalid(
            field,
            format!("{}: socket path too long", p.display()),
        ));
    }
    if p.symlink_metadata().is_ok() {
        return Err(invalid(
            field,
            format!("{}: already in use (the path exists)", p.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_file() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    #[test]
    fn a_full_config_parses() {
        let c: VmConfig = serde_json::from_str(
            r#"{"vcpus": 2, "memory_mib": 256, "kernel": "/k", "initrd": "/i", "cmdline": "quiet",
                "disks": [{"path": "/d", "read_only": true}],
                "net": [{"tap": "tap0", "mac": "02:00:00:00:00:01"}],
                "vsock": {"cid": 3, "uds": "/tmp/v.sock"},
                "console": "off", "control_socket": "/tmp/c.sock"}"#,
        )
        .unwrap();
        assert_eq!(c.vcpus, 2);
        assert!(c.disks[0].read_only);
        assert_eq!(c.vsock.unwrap().cid, 3);
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "vpcus": 2}"#).unwrap_err();
        assert!(e.to_string().contains("vpcus"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let base = VmConfig {
            kernel: kernel_file(),
            ..Default::default()
        };
        let e = VmConfig {
            vcpus: 0,
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("vcpus:"), "{e}");
        let e = VmConfig {
            kernel: "/no/such/vmlinux".into(),
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("/no/such/vmlinux: no such file"), "{e}");
        let e = VmConfig {
            console: "serial".into(),
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("console:"), "{e}");
        let e = VmConfig {
            vsock: Some(VsockConfig {
                cid: 2,
                uds: "/tmp/x".into(),
            }),
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("CID 2 is reserved"), "{e}");
        let e = VmConfig {
            control_socket: Some("/".into()),
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("already in use"), "{e}");
        let fs = |tag: &str, socket: &str| FsConfig {
            tag: tag.into(),
            socket: socket.into(),
        };
        let e = VmConfig {
            fs: vec![fs(&"x".repeat(37), "/")],
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("1 to 36 bytes"), "{e}");
        let e = VmConfig {
            fs: vec![fs("data", "/")],
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("/: not a socket"), "{e}");
        let e = VmConfig {
            fs: vec![fs("data", "/no/such.sock")],
            ..base.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("fs: /no/such.sock"), "{e}");
        assert_eq!(base.validate().unwrap(), Console::Stdout);
    }

    #[test]
    fn macs_are_checked() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
        assert!(parse_mac("01:00:00:00:00:00").is_err());
    }
}
