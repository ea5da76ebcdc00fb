//! What confines a container's processes beyond its resource limits, from its HostConfig:
//! a read-only root, capabilities, seccomp, no_new_privs, ulimits, tmpfs mounts, the OOM
//! score, /dev/shm's size, added groups, system paths. Checked when the container is
//! created (a bad value is a 400 naming it), kept in its record, written into the OCI spec
//! at start, and given to every process exec'd in it, as Docker does. The agent applies
//! the spec in both modes (in the guest for a microVM), so each setting means the same in
//! both.

use crate::errors::{Error, Result};
use crate::models::docker;
use oci_spec::runtime::{
    Capability, MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Spec,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A container's confinement, as applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Confinement {
    /// `--read-only`: the root filesystem is mounted read-only.
    pub readonly_rootfs: bool,
    /// The capabilities (`CAP_...`) after `--cap-add`/`--cap-drop`; None: Docker's default.
    pub capabilities: Option<Vec<String>>,
    /// `--security-opt seccomp=unconfined`.
    pub seccomp_unconfined: bool,
    /// `--security-opt no-new-privileges=false` (berth sets no_new_privs by default).
    pub allow_new_privileges: bool,
    /// `--security-opt systempaths=unconfined`: no masked or read-only /proc and /sys
    /// paths.
    pub systempaths_unconfined: bool,
    /// `--ulimit`s.
    pub ulimits: Vec<Ulimit>,
    /// `--tmpfs` and `--mount type=tmpfs`.
    pub tmpfs: Vec<Tmpfs>,
    /// `--oom-score-adj` (None: inherited, 0 in practice).
    pub oom_score_adj: Option<i32>,
    /// `--shm-size` in bytes (None: Docker's 64 MiB).
    pub shm_size: Option<u64>,
    /// `--group-add`: names in the container's /etc/group, or numbers.
    pub group_add: Vec<String>,
    /// `--init`: a minimal init as PID 1 that forwards signals and reaps orphans.
    pub init: bool,
    /// `--pid host`: no pid namespace (process isolation only).
    pub pid_host: bool,
    /// `--privileged`: every capability, no seccomp filter, no masked or read-only
    /// system paths, /sys writable, and every device of the agent's /dev (the host's in
    /// process isolation; the guest's in a microVM, where the VM stays the boundary).
    pub privileged: bool,
    /// `--device`s: host device nodes made in the container's /dev and allowed by its
    /// device controller (process isolation only).
    pub devices: Vec<DeviceGrant>,
}

/// One `--device HOST[:CONTAINER[:PERMISSIONS]]`, resolved when the container is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGrant {
    /// The node on the host.
    pub path_on_host: String,
    /// Where it appears in the container (under /dev).
    pub path_in_container: String,
    /// `c` or `b`.
    pub kind: char,
    /// Its numbers.
    pub major: i64,
    /// Its numbers.
    pub minor: i64,
    /// The host node's permission bits, owner and group.
    pub file_mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// What the container may do with it: some of `r`, `w`, `m`.
    pub access: String,
}

/// Resolves `--device`s as dockerd does: the host path must be a device node; the path
/// in the container defaults to it; permissions default to `rwm`.
fn devices(list: &[docker::DeviceMapping]) -> Result<Vec<DeviceGrant>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out: Vec<DeviceGrant> = Vec::new();
    for d in list {
        let host = d.path_on_host.clone().unwrap_or_default();
        if host.is_empty() {
            return Err(bad("HostConfig.Devices: PathOnHost is empty"));
        }
        let inner = d
            .path_in_container
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| host.clone());
        let access = d
            .cgroup_permissions
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "rwm".into());
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(bad(format!("invalid device mode: {access}")));
        }
        let m = std::fs::metadata(&host).map_err(|e| {
            bad(format!(
                "error gathering device information while adding custom device {host:?}: {e}"
            ))
        })?;
        let kind = if m.file_type().is_char_device() {
            'c'
        } else if m.file_type().is_block_device() {
            'b'
        } else {
            return Err(bad(format!(
                "error gathering device information while adding custom device {host:?}: not a device node"
            )));
        };
        if berth_container::container::under_dev(std::path::Path::new(&inner)).is_none() {
            return Err(bad(format!(
                "--device {host}:{inner}: the path in the container must be a name under /dev"
            )));
        }
        if out.iter().any(|g| g.path_in_container == inner) {
            return Err(bad(format!("--device: {inner} is given twice")));
        }
        out.push(DeviceGrant {
            path_on_host: host,
            path_in_container: inner,
            kind,
            major: libc::major(m.rdev()) as i64,
            minor: libc::minor(m.rdev()) as i64,
            file_mode: m.mode() & 0o777,
            uid: m.uid(),
            gid: m.gid(),
            access,
        });
    }
    Ok(out)
}

/// One resource limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name (`nofile`, `nproc`...).
    pub name: String,
    /// Soft limit (u64::MAX: unlimited).
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Where, in the container.
    pub target: String,
    /// Mount options, Docker's defaults (`nosuid,nodev,noexec`) first.
    pub options: Vec<String>,
}

/// Every capability Linux 6.1 has, as Docker's `ALL` means it.
pub const ALL_CAPS: [&str; 41] = berth_container::security::CAP_NAMES;

const ULIMITS: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

fn bad(m: impl Into<String>) -> Error {
    Error::InvalidParameter(m.into())
}

fn not_built(m: impl Into<String>) -> Error {
    Error::NotImplemented(m.into())
}

/// Docker's capability name normalisation: `ALL` stays, anything else gets `CAP_` and
/// capitals, and must be a capability Linux has.
fn normalise_caps(list: &[String], flag: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in list {
        let up = c.trim().to_ascii_uppercase();
        let full = if up == "ALL" || up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if full != "ALL" && !ALL_CAPS.contains(&full.as_str()) {
            return Err(bad(format!("{flag}: unknown capability: {c:?}")));
        }
        if !out.contains(&full) {
            out.push(full);
        }
    }
    Ok(out)
}

/// Docker's rule: `--cap-add ALL` is everything but the drops; `--cap-drop ALL` is only
/// the adds; otherwise the defaults less the drops plus the adds.
fn capabilities(add: &[String], drop: &[String]) -> Result<Option<Vec<String>>> {
    if add.is_empty() && drop.is_empty() {
        return Ok(None);
    }
    let add = normalise_caps(add, "HostConfig.CapAdd")?;
    let drop = normalise_caps(drop, "HostConfig.CapDrop")?;
    let all = |v: &Vec<String>| v.iter().any(|c| c == "ALL");
    let caps: Vec<String> = if all(&add) {
        ALL_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    } else if all(&drop) {
        add
    } else {
        let mut caps: Vec<String> = berth_container::security::DOCKER_DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect();
        for c in add {
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        caps
    };
    Ok(Some(caps))
}

/// A `key[=:]bool` security option's value (no value: true).
fn opt_bool(v: Option<&str>, whole: &str) -> Result<bool> {
    match v {
        None => Ok(true),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(bad(format!(
            "invalid --security-opt {whole:?}: expected true or false"
        ))),
    }
}

fn security_opts(opts: &[String], c: &mut Confinement) -> Result<()> {
    for o in opts {
        let (k, v) = match o.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("no-new-privileges", v) => c.allow_new_privileges = !opt_bool(v, o)?,
            ("seccomp", Some("unconfined")) => c.seccomp_unconfined = true,
            ("seccomp", Some("builtin") | Some("")) => c.seccomp_unconfined = false,
            ("seccomp", Some(_)) => {
                return Err(not_built(
                    "HostConfig.SecurityOpt: custom seccomp profiles are not built \
                     (berth has Docker's default profile, or seccomp=unconfined)",
                ))
            }
            // berth applies no AppArmor profile and no SELinux label: asking for none is
            // what it does; asking for one is not built.
            ("apparmor", Some("unconfined")) | ("label", Some("disable")) => {}
            ("apparmor", _) => {
                return Err(not_built(format!(
                    "HostConfig.SecurityOpt {o:?}: AppArmor profiles are not built"
                )))
            }
            ("label", _) => {
                return Err(not_built(format!(
                    "HostConfig.SecurityOpt {o:?}: SELinux labels are not built"
                )))
            }
            ("systempaths", Some("unconfined")) => c.systempaths_unconfined = true,
            _ => return Err(bad(format!("invalid --security-opt: {o:?}"))),
        }
    }
    Ok(())
}

fn ulimits(list: &[docker::ResourcesUlimits]) -> Result<Vec<Ulimit>> {
    let mut out: Vec<Ulimit> = Vec::new();
    for u in list {
        let name = u.name.clone().unwrap_or_default();
        if !ULIMITS.contains(&name.as_str()) {
            return Err(bad(format!("invalid ulimit type: {name:?}")));
        }
        let lim = |v: Option<i64>| -> Result<u64> {
            match v.unwrap_or(-1) {
                -1 => Ok(u64::MAX),
                n if n >= 0 => Ok(n as u64),
                n => Err(bad(format!("invalid ulimit {name}: {n}"))),
            }
        };
        let (soft, hard) = (lim(u.soft)?, lim(u.hard)?);
        if soft > hard {
            return Err(bad(format!(
                "ulimit {name}: soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )));
        }
        out.retain(|x| x.name != name);
        out.push(Ulimit { name, soft, hard });
    }
    Ok(out)
}

fn check_target(t: &str, what: &str) -> Result<()> {
    if !t.starts_with('/') || t == "/" || t.split('/').any(|p| p == "..") {
        return Err(bad(format!(
            "{what}: invalid mount path {t:?}: an absolute path other than / is required"
        )));
    }
    Ok(())
}

/// Docker's tmpfs options: its defaults (`nosuid,nodev,noexec`), then the user's, each a
/// mount flag or one of tmpfs's own `key=value`s.
fn tmpfs_options(target: &str, opts: &str, what: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = ["nosuid", "nodev", "noexec"].map(String::from).to_vec();
    for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let flag = matches!(
            o,
            "rw" | "ro"
                | "exec"
                | "noexec"
                | "suid"
                | "nosuid"
                | "dev"
                | "nodev"
                | "atime"
                | "noatime"
                | "relatime"
                | "strictatime"
        );
        let key = o.split_once('=').map(|(k, _)| k);
        if !flag && !matches!(key, Some("size" | "mode" | "uid" | "gid" | "nr_inodes")) {
            return Err(bad(format!(
                "{what}: invalid tmpfs option {o:?} for {target}"
            )));
        }
        out.push(o.to_owned());
    }
    Ok(out)
}

fn tmpfs(h: &docker::HostConfig) -> Result<Vec<Tmpfs>> {
    let mut out: Vec<Tmpfs> = Vec::new();
    let mut push = |t: Tmpfs| -> Result<()> {
        if out.iter().any(|x| x.target == t.target) {
            return Err(bad(format!("Duplicate mount point: {}", t.target)));
        }
        out.push(t);
        Ok(())
    };
    let mut tmpfs: Vec<(&String, &String)> = h.tmpfs.iter().flatten().collect();
    tmpfs.sort();
    for (target, opts) in tmpfs {
        check_target(target, "HostConfig.Tmpfs")?;
        push(Tmpfs {
            target: target.clone(),
            options: tmpfs_options(target, opts, "HostConfig.Tmpfs")?,
        })?;
    }
    for m in h.mounts.iter().flatten() {
        // Binds and volumes are the volumes' (daemon/volumes.rs).
        if m.typ != Some(docker::MountTypeEnum::TMPFS) {
            continue;
        }
        let target = m.target.clone().unwrap_or_default();
        check_target(&target, "HostConfig.Mounts")?;
        if m.source.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(bad(format!(
                "HostConfig.Mounts: a tmpfs mount takes no source ({target})"
            )));
        }
        let mut opts = Vec::new();
        if m.read_only.unwrap_or(false) {
            opts.push("ro".to_owned());
        }
        if let Some(o) = &m.tmpfs_options {
            if let Some(s) = o.size_bytes.filter(|s| *s != 0) {
                if s < 0 {
                    return Err(bad(format!(
                        "HostConfig.Mounts: invalid tmpfs size {s} for {target}"
                    )));
                }
                opts.push(format!("size={s}"));
            }
            if let Some(mode) = o.mode.filter(|m| *m != 0) {
                if !(0..=0o7777).contains(&mode) {
                    return Err(bad(format!(
                        "HostConfig.Mounts: invalid tmpfs mode {mode:o} for {target}"
                    )));
                }
                opts.push(format!("mode={mode:o}"));
            }
        }
        // Docker's defaults for a tmpfs mount, as for `--tmpfs`.
        let mut options: Vec<String> = ["nosuid", "nodev", "noexec"].map(String::from).to_vec();
        options.extend(opts);
        push(Tmpfs { target, options })?;
    }
    Ok(out)
}

impl Confinement {
    /// Reads and checks the HostConfig's settings (a bad value is a 400 naming it; one
    /// berth has not built is a 501).
    pub fn from_host_config(h: &docker::HostConfig) -> Result<Confinement> {
        let mut c = Confinement {
            readonly_rootfs: h.readonly_rootfs.unwrap_or(false),
            capabilities: capabilities(
                h.cap_add.as_deref().unwrap_or_default(),
                h.cap_drop.as_deref().unwrap_or_default(),
            )?,
            ulimits: ulimits(h.ulimits.as_deref().unwrap_or_default())?,
            tmpfs: tmpfs(h)?,
            init: h.init.unwrap_or(false),
            pid_host: match h.pid_mode.as_deref().unwrap_or("") {
                "" | "private" => false,
                "host" => true,
                other if other.starts_with("container:") => {
                    return Err(not_built(format!(
                        "HostConfig.PidMode {other:?}: joining another container's PID namespace is not built"
                    )))
                }
                other => return Err(bad(format!("invalid PID mode: {other:?}"))),
            },
            ..Default::default()
        };
        if h.privileged.unwrap_or(false) {
            c.privileged = true;
            c.capabilities = Some(ALL_CAPS.iter().map(|s| s.to_string()).collect());
            c.systempaths_unconfined = true;
            // Docker sets no no_new_privs; `--security-opt no-new-privileges` still can.
            c.allow_new_privileges = true;
        }
        security_opts(h.security_opt.as_deref().unwrap_or_default(), &mut c)?;
        if c.privileged {
            c.seccomp_unconfined = true;
        }
        if let Some(adj) = h.oom_score_adj.filter(|a| *a != 0) {
            if !(-1000..=1000).contains(&adj) {
                return Err(bad(format!(
                    "Invalid value {adj}, range for oom score adj is [-1000, 1000]"
                )));
            }
            c.oom_score_adj = Some(adj as i32);
        }
        match h.shm_size {
            Some(s) if s < 0 => return Err(bad("SHM size can not be less than 0")),
            Some(s) if s > 0 => c.shm_size = Some(s as u64),
            _ => {}
        }
        for g in h.group_add.iter().flatten() {
            let g = g.trim();
            if g.is_empty() || g.contains([',', ':', '\n']) {
                return Err(bad(format!("HostConfig.GroupAdd: invalid group {g:?}")));
            }
            c.group_add.push(g.to_owned());
        }
        c.devices = devices(h.devices.as_deref().unwrap_or_default())?;
        Ok(c)
    }

    fn caps(&self) -> Option<HashSet<Capability>> {
        self.capabilities.as_ref().map(|list| {
            list.iter()
                .filter_map(|c| serde_json::from_value(serde_json::Value::String(c.clone())).ok())
                .collect()
        })
    }

    fn rlimits(&self) -> Result<Vec<PosixRlimit>> {
        self.ulimits
            .iter()
            .map(|u| {
                let typ: PosixRlimitType = serde_json::from_value(serde_json::Value::String(
                    format!("RLIMIT_{}", u.name.to_ascii_uppercase()),
                ))
                .map_err(|e| bad(format!("ulimit {}: {e}", u.name)))?;
                PosixRlimitBuilder::default()
                    .typ(typ)
                    .soft(u.soft)
                    .hard(u.hard)
                    .build()
                    .map_err(|e| bad(e.to_string()))
            })
            .collect()
    }

    /// Applies what concerns a process (the container's or an exec'd one): capabilities,
    /// no_new_privs, ulimits, the OOM score.
    pub fn apply_to_process(&self, p: &mut Process) -> Result<()> {
        if let Some(caps) = self.caps() {
            p.set_capabilities(Some(berth_container::spec::capabilities(caps)));
        }
        if self.allow_new_privileges {
            p.set_no_new_privileges(Some(false));
        }
        if !self.ulimits.is_empty() {
            let mut limits = p.rlimits().clone().unwrap_or_default();
            for r in self.rlimits()? {
                limits.retain(|x| x.typ() != r.typ());
                limits.push(r);
            }
            p.set_rlimits(Some(limits));
        }
        if self.oom_score_adj.is_some() {
            p.set_oom_score_adj(self.oom_score_adj);
        }
        Ok(())
    }

    /// Applies everything to a container's spec.
    pub fn apply(&self, spec: &mut Spec) -> Result<()> {
        if let Some(p) = spec.process_mut() {
            self.apply_to_process(p)?;
        }
        if self.readonly_rootfs {
            let mut root = spec.root().clone().unwrap_or_default();
            root.set_readonly(Some(true));
            spec.set_root(Some(root));
        }
        if self.systempaths_unconfined {
            if let Some(l) = spec.linux_mut() {
                l.set_masked_paths(Some(vec![]));
                l.set_readonly_paths(Some(vec![]));
            }
        }
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        if self.privileged {
            // /sys writable, as Docker mounts it for a privileged container.
            for m in mounts
                .iter_mut()
                .filter(|m| m.destination().as_os_str() == "/sys")
            {
                let opts: Vec<String> = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o != "ro")
                    .collect();
                m.set_options(Some(opts));
            }
        }
        if let Some(size) = self.shm_size {
            for m in mounts
                .iter_mut()
                .filter(|m| m.destination().as_os_str() == "/dev/shm")
            {
                let mut opts: Vec<String> = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| !o.starts_with("size="))
                    .collect();
                opts.push(format!("size={size}"));
                m.set_options(Some(opts));
            }
        }
        for t in &self.tmpfs {
            mounts.retain(|m| m.destination().as_os_str() != t.target.as_str());
            mounts.push(
                MountBuilder::default()
                    .destination(&t.target)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(t.options.clone())
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            );
        }
        spec.set_mounts(Some(mounts));
        if self.pid_host {
            if let Some(ns) = spec
                .linux_mut()
                .as_mut()
                .and_then(|l| l.namespaces_mut().as_mut())
            {
                ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Pid);
            }
        }
        if !self.devices.is_empty() {
            use oci_spec::runtime::{
                LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources,
            };
            let linux = spec.linux_mut().get_or_insert_with(Default::default);
            let mut nodes = linux.devices().clone().unwrap_or_default();
            let mut resources: LinuxResources = linux.resources().clone().unwrap_or_default();
            let mut rules = resources.devices().clone().unwrap_or_default();
            for d in &self.devices {
                let typ = if d.kind == 'b' {
                    LinuxDeviceType::B
                } else {
                    LinuxDeviceType::C
                };
                nodes.push(
                    LinuxDeviceBuilder::default()
                        .path(&d.path_in_container)
                        .typ(typ)
                        .major(d.major)
                        .minor(d.minor)
                        .file_mode(d.file_mode)
                        .uid(d.uid)
                        .gid(d.gid)
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                );
                rules.push(
                    LinuxDeviceCgroupBuilder::default()
                        .allow(true)
                        .typ(typ)
                        .major(d.major)
                        .minor(d.minor)
                        .access(&d.access)
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                );
            }
            linux.set_devices(Some(nodes));
            resources.set_devices(Some(rules));
            linux.set_resources(Some(resources));
        }
        let mut a = spec.annotations().clone().unwrap_or_default();
        if !self.group_add.is_empty() {
            a.insert(
                berth_container::GROUP_ADD_ANNOTATION.to_owned(),
                self.group_add.join(","),
            );
        }
        if self.init {
            a.insert(berth_container::INIT_ANNOTATION.to_owned(), "true".into());
        }
        if self.privileged {
            a.insert(
                berth_container::PRIVILEGED_ANNOTATION.to_owned(),
                "true".into(),
            );
        }
        if !a.is_empty() {
            spec.set_annotations(Some(a));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(f: impl FnOnce(&mut docker::HostConfig)) -> Result<Confinement> {
        let mut h = docker::HostConfig::default();
        f(&mut h);
        Confinement::from_host_config(&h)
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn capabilities_follow_dockers_rules() {
        assert_eq!(hc(|_| {}).unwrap().capabilities, None);
        let c = hc(|h| h.cap_drop = strs(&["ALL"])).unwrap();
        assert_eq!(c.capabilities, Some(vec![]));
        let c = hc(|h| {
            h.cap_drop = strs(&["all"]);
            h.cap_add = strs(&["net_admin", "CAP_CHOWN"]);
        })
        .unwrap();
        assert_eq!(c.capabilities, strs(&["CAP_NET_ADMIN", "CAP_CHOWN"]));
        let c = hc(|h| {
            h.cap_add = strs(&["ALL"]);
            h.cap_drop = strs(&["SYS_ADMIN"]);
        })
        .unwrap();
        let caps = c.capabilities.unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_owned()));
        let c = hc(|h| {
            h.cap_drop = strs(&["chown"]);
            h.cap_add = strs(&["SYS_PTRACE"]);
        })
        .unwrap();
        let caps = c.capabilities.unwrap();
        assert_eq!(caps.len(), 14);
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
        assert!(caps.contains(&"CAP_SYS_PTRACE".to_owned()));
        let e = hc(|h| h.cap_add = strs(&["FLY"])).unwrap_err().to_string();
        assert!(e.contains("unknown capability") && e.contains("FLY"), "{e}");
    }

    #[test]
    fn security_options_are_applied_or_refused_by_name() {
        let c = hc(|h| h.security_opt = strs(&["seccomp=unconfined", "no-new-privileges:false"]))
            .unwrap();
        assert!(c.seccomp_unconfined && c.allow_new_privileges);
        assert!(hc(|h| h.security_opt = strs(&["apparmor=unconfined", "label=disable"])).is_ok());
        for (opt, status) in [
            (r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#, 501),
            ("apparmor=docker-default", 501),
            ("label=type:svirt_t", 501),
            ("no-new-privileges=maybe", 400),
            ("bogus", 400),
        ] {
            let e = hc(|h| h.security_opt = strs(&[opt])).unwrap_err();
            assert_eq!(crate::router::status_of(&e).as_u16(), status, "{opt}: {e}");
        }
    }

    #[test]
    fn ulimits_tmpfs_and_the_rest_are_checked() {
        let c = hc(|h| {
            h.ulimits = Some(vec![docker::ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(1024),
                hard: Some(2048),
            }])
        })
        .unwrap();
        assert_eq!(
            c.ulimits,
            [Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        let e = hc(|h| {
            h.ulimits = Some(vec![docker::ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(4096),
                hard: Some(2048),
            }])
        })
        .unwrap_err();
        assert!(e.to_string().contains("soft limit"), "{e}");
        let c = hc(|h| h.tmpfs = Some([("/run".to_owned(), "size=1m,exec".to_owned())].into()))
            .unwrap();
        assert_eq!(
            c.tmpfs[0].options,
            ["nosuid", "nodev", "noexec", "size=1m", "exec"]
        );
        for bad_tmpfs in [("relative", ""), ("/", ""), ("/x", "bogus=1")] {
            assert!(
                hc(|h| h.tmpfs = Some([(bad_tmpfs.0.into(), bad_tmpfs.1.into())].into())).is_err(),
                "{bad_tmpfs:?}"
            );
        }
        // Binds and volumes are not the confinement's (daemon/volumes.rs plans them).
        let c = hc(|h| {
            h.mounts = Some(vec![docker::Mount {
                typ: Some(docker::MountTypeEnum::BIND),
                target: Some("/x".into()),
                ..Default::default()
            }])
        })
        .unwrap();
        assert!(c.tmpfs.is_empty());
        assert!(hc(|h| h.oom_score_adj = Some(1001)).is_err());
        assert!(hc(|h| h.shm_size = Some(-1)).is_err());
        assert!(hc(|h| h.group_add = strs(&["a,b"])).is_err());
    }

    #[test]
    fn the_spec_gets_every_setting() {
        let c = hc(|h| {
            h.readonly_rootfs = Some(true);
            h.cap_drop = strs(&["ALL"]);
            h.shm_size = Some(1 << 20);
            h.oom_score_adj = Some(500);
            h.group_add = strs(&["audio", "1234"]);
            h.tmpfs = Some([("/scratch".to_owned(), String::new())].into());
            h.init = Some(true);
        })
        .unwrap();
        let mut spec = berth_container::spec::docker_default(vec!["sh".into()]);
        assert!(!berth_container::wants_init(&spec));
        c.apply(&mut spec).unwrap();
        assert!(berth_container::wants_init(&spec));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.oom_score_adj(), Some(500));
        let caps = p.capabilities().as_ref().unwrap();
        assert!(caps.effective().as_ref().unwrap().is_empty());
        assert!(caps.bounding().as_ref().unwrap().is_empty());
        let mounts = spec.mounts().as_ref().unwrap();
        let shm = mounts
            .iter()
            .find(|m| m.destination().as_os_str() == "/dev/shm")
            .unwrap();
        assert!(shm
            .options()
            .as_ref()
            .unwrap()
            .contains(&"size=1048576".to_owned()));
        assert!(mounts
            .iter()
            .any(|m| m.destination().as_os_str() == "/scratch"
                && m.typ().as_deref() == Some("tmpfs")));
        assert_eq!(berth_container::group_add(&spec), ["audio", "1234"]);
    }
}
