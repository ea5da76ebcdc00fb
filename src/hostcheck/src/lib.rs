//! Can this host run berth microVMs?
//!
//! berth boots an unmodified Linux guest under KVM. That needs `/dev/kvm` backed by
//! hardware virtualization (Intel VT-x `vmx` or AMD-V `svm`). Some hosts expose a
//! `/dev/kvm` that is *paravirtual* (PVM, module `kvm_pvm`): KVM ioctls work but a
//! standard guest kernel does not run usefully on it. [`check`] tells these apart so the
//! CLI, the daemon and the monitor can say so plainly instead of failing obscurely or
//! downgrading isolation.

use std::fmt;
use std::path::Path;

/// The API version every KVM since Linux 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;
/// `KVM_GET_API_VERSION` = `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// Which hardware virtualization extension the CPU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
}

/// What this host can do with microVMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmSupport {
    /// `/dev/kvm` works and the CPU has hardware virtualization: microVMs run here.
    Hardware(Extension),
    /// `/dev/kvm` works but is PVM (paravirtual KVM) with no vmx/svm: standard guests
    /// can't run here.
    PvmOnly,
    /// No usable `/dev/kvm`; the string says why.
    Unusable(String),
}

impl KvmSupport {
    /// True when microVMs can boot on this host.
    pub fn can_run_microvms(&self) -> bool {
        matches!(self, KvmSupport::Hardware(_))
    }
}

/// Where the lab lives, for messages.
pub const LAB_HINT: &str = "run microVMs inside the lab (tests/lab/run -- COMMAND), \
or use process isolation (--isolation process)";

impl fmt::Display for KvmSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmSupport::Hardware(Extension::Vmx) => {
                write!(
                    f,
                    "KVM with hardware virtualization (Intel VT-x): microVMs can run"
                )
            }
            KvmSupport::Hardware(Extension::Svm) => {
                write!(
                    f,
                    "KVM with hardware virtualization (AMD-V): microVMs can run"
                )
            }
            KvmSupport::PvmOnly => write!(
                f,
                "/dev/kvm on this host is PVM (module kvm_pvm) and the CPU has no vmx/svm: \
                 it cannot run a standard Linux guest; {LAB_HINT}"
            ),
            KvmSupport::Unusable(why) => write!(f, "no usable KVM: {why}; {LAB_HINT}"),
        }
    }
}

/// What [`classify`] looks at, gathered from the host by [`Probe::from_host`].
#[derive(Debug, Clone)]
pub struct Probe {
    /// The `flags` of /proc/cpuinfo (any CPU's; they match).
    pub cpu_flags: Vec<String>,
    /// Whether the `kvm_pvm` module is loaded.
    pub pvm_loaded: bool,
    /// The result of opening `/dev/kvm` and asking its API version.
    pub dev_kvm: Result<i32, String>,
}

impl Probe {
    /// Reads the real host: /proc/cpuinfo, /sys/module, /dev/kvm.
    pub fn from_host() -> Probe {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Probe {
            cpu_flags: cpu_flags(&cpuinfo),
            pvm_loaded: Path::new("/sys/module/kvm_pvm").exists(),
            dev_kvm: kvm_api_version(Path::new("/dev/kvm")),
        }
    }
}

/// The flags of the first CPU listed in a /proc/cpuinfo text.
pub fn cpu_flags(cpuinfo: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "flags").then(|| value.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// Opens a KVM device node and returns its API version, or why it can't be used.
pub fn kvm_api_version(dev: &Path) -> Result<i32, String> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is a
    // valid open file for the duration of the call.
    let v = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if v < 0 {
        return Err(format!(
            "{} is not a KVM device: {}",
            dev.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(v)
}

/// Decides what a probed host can do.
pub fn classify(probe: &Probe) -> KvmSupport {
    match &probe.dev_kvm {
        Err(why) => return KvmSupport::Unusable(why.clone()),
        Ok(v) if *v != KVM_API_VERSION => {
            return KvmSupport::Unusable(format!(
                "/dev/kvm reports API version {v}, expected {KVM_API_VERSION}"
            ))
        }
        Ok(_) => {}
    }
    let has = |f: &str| probe.cpu_flags.iter().any(|x| x == f);
    if has("vmx") {
        KvmSupport::Hardware(Extension::Vmx)
    } else if has("svm") {
        KvmSupport::Hardware(Extension::Svm)
    } else if probe.pvm_loaded {
        KvmSupport::PvmOnly
    } else {
        KvmSupport::Unusable("/dev/kvm works but the CPU reports neither vmx nor svm".to_owned())
    }
}

/// Probes this host and classifies it.
pub fn check() -> KvmSupport {
    classify(&Probe::from_host())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(flags: &str, pvm: bool, kvm: Result<i32, String>) -> Probe {
        Probe {
            cpu_flags: cpu_flags(&format!("processor\t: 0\nflags\t\t: {flags}\n")),
            pvm_loaded: pvm,
            dev_kvm: kvm,
        }
    }

    #[test]
    fn hardware_hosts_run_microvms() {
        let p = probe("fpu vme svm sse", false, Ok(12));
        assert_eq!(classify(&p), KvmSupport::Hardware(Extension::Svm));
        assert!(classify(&p).can_run_microvms());
        let p = probe("fpu vmx", false, Ok(12));
        assert_eq!(classify(&p), KvmSupport::Hardware(Extension::Vmx));
    }

    #[test]
    fn pvm_is_named_and_points_at_the_lab() {
        let s = classify(&probe("fpu sse hypervisor", true, Ok(12)));
        assert_eq!(s, KvmSupport::PvmOnly);
        assert!(!s.can_run_microvms());
        let msg = s.to_string();
        assert!(
            msg.contains("PVM") && msg.contains("tests/lab/run"),
            "{msg}"
        );
    }

    #[test]
    fn missing_dev_kvm_is_unusable() {
        let s = classify(&probe(
            "vmx",
            false,
            Err("cannot open /dev/kvm: No such file".into()),
        ));
        assert!(matches!(&s, KvmSupport::Unusable(w) if w.contains("/dev/kvm")));
        let s = classify(&probe("sse", false, Ok(12)));
        assert!(matches!(s, KvmSupport::Unusable(_)));
        let s = classify(&probe("svm", false, Ok(11)));
        assert!(matches!(&s, KvmSupport::Unusable(w) if w.contains("API version 11")));
    }

    #[test]
    fn flags_come_from_the_flags_line_only() {
        let f = cpu_flags("model name\t: svm-like cpu\nflags\t\t: a b\n");
        assert_eq!(f, vec!["a", "b"]);
        assert!(cpu_flags("").is_empty());
    }

    #[test]
    fn a_regular_file_is_not_a_kvm_device() {
        let r = kvm_api_version(Path::new("/proc/self/status"));
        assert!(r.is_err());
        let r = kvm_api_version(Path::new("/nonexistent/kvm"));
        assert!(r.unwrap_err().contains("cannot open /nonexistent/kvm"));
    }
}
