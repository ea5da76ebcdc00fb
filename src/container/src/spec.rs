//! OCI runtime specs: Docker's defaults, and turning a spec into what the runtime needs.

use crate::process::{Namespaces, ProcessConfig};
use crate::security::{self, CapSets};
use crate::Error;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxNamespaceType, PosixRlimitBuilder, PosixRlimitType,
    Process, Spec,
};
use std::collections::HashSet;

/// Docker's default PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The spec Docker would give `args`: default mounts, masked and read-only paths, new
/// pid/mount/ipc/uts/network namespaces, Docker's capabilities, seccomp, no_new_privs.
pub fn docker_default(args: Vec<String>) -> Spec {
    let mut spec = Spec::default();
    let caps: HashSet<Capability> = security::DOCKER_DEFAULT_CAPS
        .iter()
        .filter_map(|c| {
            serde_json::from_value::<Capability>(serde_json::Value::String((*c).into())).ok()
        })
        .collect();
    let mut process = Process::default();
    process.set_args(Some(args));
    process.set_env(Some(vec![format!("PATH={DEFAULT_PATH}")]));
    process.set_terminal(Some(false));
    process.set_no_new_privileges(Some(true));
    process.set_capabilities(Some(capabilities(caps)));
    // Docker passes its daemon's open-file limit down; so do we.
    let mut nofile = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes into `nofile`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    process.set_rlimits(Some(vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(nofile.rlim_max)
        .hard(nofile.rlim_max)
        .build()
        .expect("a complete rlimit")]));
    spec.set_process(Some(process));
    spec.set_hostname(None);
    // Docker's root is writable (the spec's default is read-only).
    let mut root = oci_spec::runtime::Root::default();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
        }
        if let Some(mp) = linux.masked_paths_mut() {
            for p in [
                "/proc/asound",
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
                "/sys/devices/virtual/powercap",
            ] {
                if !mp.iter().any(|m| m == p) {
                    mp.push(p.into());
                }
            }
        }
    }
    if let Some(mounts) = spec.mounts_mut() {
        mounts.retain(|m| m.typ().as_deref() != Some("cgroup"));
        // /proc as runc mounts it: no setuid binaries, device nodes or programs there.
        for m in mounts
            .iter_mut()
            .filter(|m| m.typ().as_deref() == Some("proc"))
        {
            m.set_options(Some(vec!["nosuid".into(), "noexec".into(), "nodev".into()]));
        }
    }
    spec
}

/// A capabilities block with `caps` in the bounding, effective and permitted sets, and
/// none inheritable or ambient: what Docker (20.10.14 and later) gives a container. An
/// empty inheritable set keeps a binary's file-inheritable capabilities from raising
/// anything for a non-root user (CVE-2022-24769).
pub fn capabilities(caps: HashSet<Capability>) -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(caps.clone()));
    c.set_effective(Some(caps.clone()));
    c.set_permitted(Some(caps));
    c.set_inheritable(Some(HashSet::new()));
    c.set_ambient(Some(HashSet::new()));
    c
}

/// The namespaces a spec asks for.
pub fn namespaces(spec: &Spec) -> Result<Namespaces, Error> {
    let mut ns = Namespaces::default();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in list {
        let (flag, name) = match n.typ() {
            LinuxNamespaceType::Pid => (libc::CLONE_NEWPID, "pid"),
            LinuxNamespaceType::Mount => (libc::CLONE_NEWNS, "mount"),
            LinuxNamespaceType::Ipc => (libc::CLONE_NEWIPC, "ipc"),
            LinuxNamespaceType::Uts => (libc::CLONE_NEWUTS, "uts"),
            LinuxNamespaceType::Network => (libc::CLONE_NEWNET, "network"),
            LinuxNamespaceType::Cgroup => (libc::CLONE_NEWCGROUP, "cgroup"),
            other => {
                return Err(Error::InvalidSpec(format!(
                    "linux.namespaces: {other:?} namespaces are not supported"
                )))
            }
        };
        match n.path() {
            Some(p) if name == "network" => ns.net_path = Some(p.clone()),
            Some(p) => {
                return Err(Error::InvalidSpec(format!(
                    "linux.namespaces: joining an existing {name} namespace ({}) is not supported",
                    p.display()
                )))
            }
            None => ns.flags |= flag,
        }
    }
    if ns.flags & libc::CLONE_NEWNS == 0 {
        return Err(Error::InvalidSpec(
            "linux.namespaces: a mount namespace is required".into(),
        ));
    }
    // No pid namespace is Docker's `--pid host`: the workload sees the host's processes
    // and is not PID 1 (berthd allows it for process isolation only).
    Ok(ns)
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// What the runtime needs from an OCI process. The user is Docker-style: the process's
/// `user.username` if set, otherwise its numeric `uid:gid`.
pub fn process_config(p: &Process, seccomp: bool) -> Result<ProcessConfig, Error> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::InvalidSpec("process.args: no command given".into()));
    }
    if !p.cwd().is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "process.cwd {} is not absolute",
            p.cwd().display()
        )));
    }
    let caps = match p.capabilities() {
        Some(c) => CapSets::from_oci(c)
            .map_err(|e| Error::InvalidSpec(format!("process.capabilities: {e}")))?,
        None => CapSets::uniform(security::cap_mask(security::DOCKER_DEFAULT_CAPS).unwrap_or(0)),
    };
    let user = match p.user().username() {
        Some(u) if !u.is_empty() => Some(u.clone()),
        _ if p.user().uid() != 0 || p.user().gid() != 0 => {
            Some(format!("{}:{}", p.user().uid(), p.user().gid()))
        }
        _ => None,
    };
    let mut env = p.env().clone().unwrap_or_default();
    if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
        return Err(Error::InvalidSpec(format!(
            "process.env: {bad:?} is not KEY=VALUE"
        )));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    Ok(ProcessConfig {
        args,
        env,
        cwd: p.cwd().clone(),
        user,
        caps,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        seccomp,
        rlimits: p
            .rlimits()
            .iter()
            .flatten()
            .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
            .collect(),
        oom_score_adj: p.oom_score_adj(),
        group_add: vec![],
        init: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults() {
        let spec = docker_default(vec!["sh".into()]);
        let ns = namespaces(&spec).unwrap();
        for f in [
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWNET,
        ] {
            assert_ne!(ns.flags & f, 0);
        }
        let pc = process_config(spec.process().as_ref().unwrap(), true).unwrap();
        assert_eq!(pc.caps.bounding.count_ones(), 14);
        assert!(pc.no_new_privs);
        assert!(pc.env.iter().any(|e| e.starts_with("PATH=")));
        let mounts: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        assert!(mounts.contains(&"/proc".into()) && mounts.contains(&"/dev/pts".into()));
        let proc = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == std::path::Path::new("/proc"))
            .unwrap();
        assert_eq!(
            proc.options().clone().unwrap_or_default(),
            vec!["nosuid", "noexec", "nodev"]
        );
        assert!(spec
            .linux()
            .as_ref()
            .unwrap()
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut spec = docker_default(vec![]);
        let e = process_config(spec.process().as_ref().unwrap(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("process.args"), "{e}");
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(vec!["true".into()]));
        p.set_cwd("relative".into());
        assert!(process_config(&p, true)
            .unwrap_err()
            .to_string()
            .contains("process.cwd"));
        p.set_cwd("/".into());
        p.set_env(Some(vec!["NOEQUALS".into()]));
        assert!(process_config(&p, true)
            .unwrap_err()
            .to_string()
            .contains("process.env"));
        if let Some(l) = spec.linux_mut() {
            l.set_namespaces(Some(vec![]));
        }
        assert!(namespaces(&spec)
            .unwrap_err()
            .to_string()
            .contains("mount namespace is required"));
    }
}
