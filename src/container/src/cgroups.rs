//! Container cgroups, v2 (inside berth's guests) or v1 (hosts with the legacy or "hybrid"
//! layout). Every limit asked for is either enforced or refused with a clear error.

use std::path::{Path, PathBuf};

/// Errors managing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A limit this host cannot enforce.
    #[error("cannot enforce {0}")]
    Unsupported(String),
    /// A limit with a bad value.
    #[error("invalid resource limit: {0}")]
    Invalid(String),
    /// The device allow-list could not be applied.
    #[error("{0}")]
    Devices(#[from] crate::devices::DeviceError),
    /// A cgroup file could not be written.
    #[error("cgroup {path}: {err}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        err: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |err| CgroupError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// The limits berth applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// memory.max, bytes.
    pub memory: Option<i64>,
    /// Memory plus swap, bytes (Docker's --memory-swap); equal to `memory` means no swap.
    pub memory_swap: Option<i64>,
    /// pids.max.
    pub pids: Option<i64>,
    /// CPU quota and period, microseconds.
    pub cpu_quota: Option<(i64, u64)>,
    /// cpuset.cpus.
    pub cpuset_cpus: Option<String>,
}

impl Limits {
    /// The limits in an OCI resources block.
    pub fn from_oci(r: Option<&oci_spec::runtime::LinuxResources>) -> Result<Limits, CgroupError> {
        let mut l = Limits::default();
        let Some(r) = r else { return Ok(l) };
        if let Some(m) = r.memory() {
            l.memory = m.limit().filter(|v| *v > 0);
            l.memory_swap = m.swap().filter(|v| *v > 0);
            if let (Some(mem), Some(sw)) = (l.memory, l.memory_swap) {
                if sw < mem {
                    return Err(CgroupError::Invalid(format!(
                        "memory+swap limit {sw} is smaller than the memory limit {mem}"
                    )));
                }
            }
            if l.memory.is_some_and(|m| m < 6 << 20) {
                return Err(CgroupError::Invalid(
                    "the minimum memory limit is 6 MiB".into(),
                ));
            }
        }
        if let Some(p) = r.pids() {
            l.pids = (p.limit() > 0).then_some(p.limit());
        }
        if let Some(c) = r.cpu() {
            if let Some(q) = c.quota().filter(|q| *q > 0) {
                l.cpu_quota = Some((q, c.period().unwrap_or(100_000)));
            }
            l.cpuset_cpus = c.cpus().clone().filter(|s| !s.is_empty());
        }
        Ok(l)
    }
}

/// Resource usage read from the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of memory in use.
    pub memory: u64,
    /// Memory limit in bytes (0: none).
    pub memory_limit: u64,
    /// Number of processes.
    pub pids: u64,
    /// CPU time, microseconds.
    pub cpu_usec: u64,
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub enum Cgroup {
    /// Unified hierarchy: one directory.
    V2(PathBuf),
    /// Legacy hierarchy: one directory per controller.
    V1(Vec<(&'static str, PathBuf)>),
}

const V1_CONTROLLERS: [&str; 7] = [
    "memory", "pids", "cpuacct", "cpu", "cpuset", "freezer", "devices",
];

/// The cgroup this process is in, per v1 controller ("" key for v2).
fn own_cgroups() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            Some((ctrls.to_owned(), path.to_owned()))
        })
        .collect()
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io(path))
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Cgroup {
    /// Creates the cgroup `berth/<id>` under this process's own cgroup and applies
    /// `limits`. On error nothing is left behind.
    pub fn create(root: &Path, id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(CgroupError::Invalid(format!(
                "container id {id:?} is not a valid cgroup name"
            )));
        }
        let cg = if root.join("cgroup.controllers").exists() {
            Self::create_v2(root, id, limits)?
        } else {
            Self::create_v1(root, id, limits)?
        };
        if let Err(e) = cg.apply(limits) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_v2(root: &Path, id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let own = own_cgroups()
            .into_iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| p)
            .unwrap_or_else(|| "/".into());
        let base = root.join(own.trim_start_matches('/')).join("berth");
        std::fs::create_dir_all(&base).map_err(io(&base))?;
        let mut wanted = vec!["memory", "pids", "cpu"];
        if limits.cpuset_cpus.is_some() {
            wanted.push("cpuset");
        }
        let read_available =
            || std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        let mut available = read_available();
        // A controller the parent has but does not pass down (a freshly mounted hierarchy
        // with berthd at its root): pass it down, where the kernel allows (it refuses in a
        // parent that holds processes other than the root).
        if let Some(parent) = base.parent() {
            let has =
                std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
            for c in &wanted {
                let missing = !available.split_whitespace().any(|a| a == *c);
                if missing && has.split_whitespace().any(|a| a == *c) {
                    let _ = std::fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
            available = read_available();
        }
        for c in &wanted {
            if !available.split_whitespace().any(|a| a == *c) {
                if (*c == "memory" && limits.memory.is_some())
                    || (*c == "pids" && limits.pids.is_some())
                {
                    return Err(CgroupError::Unsupported(format!(
                        "a {c} limit: the {c} controller is not available"
                    )));
                }
                continue;
            }
            let f = base.join("cgroup.subtree_control");
            write(&f, &format!("+{c}"))?;
        }
        let dir = base.join(id);
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(Cgroup::V2(dir))
    }

    fn create_v1(root: &Path, id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let own = own_cgroups();
        let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
        let mut mounts: Vec<(PathBuf, PathBuf)> = Vec::new();
        for ctrl in V1_CONTROLLERS {
            // The cpu controller is joined even without a quota, so that `update` can set
            // one later; a cpuset only when asked for (a v1 cpuset starts empty).
            let needed = match ctrl {
                "cpuset" => limits.cpuset_cpus.is_some(),
                _ => true,
            };
            let mount = root.join(ctrl);
            if !needed {
                continue;
            }
            if !mount.join("cgroup.procs").exists() {
                let asked = match ctrl {
                    "memory" if limits.memory.is_some() => "a memory limit",
                    "pids" if limits.pids.is_some() => "a pids limit",
                    "cpu" if limits.cpu_quota.is_some() => "a CPU quota",
                    "cpuset" => "a cpuset",
                    _ => continue,
                };
                let cg = Cgroup::V1(dirs);
                cg.destroy();
                return Err(CgroupError::Unsupported(format!(
                    "{asked}: the cgroup v1 {ctrl} controller is not mounted at {}",
                    mount.display()
                )));
            }
            let own_path = own
                .iter()
                .find(|(c, _)| c.split(',').any(|x| x == ctrl))
                .map(|(_, p)| p.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            let base = mount.join(own_path).join("berth");
            let dir = base.join(id);
            // Co-mounted controllers (cpu,cpuacct) share one directory.
            let real = mount.canonicalize().unwrap_or_else(|_| mount.clone());
            if let Some((_, d)) = mounts.iter().find(|(m, _)| *m == real) {
                dirs.push((ctrl, d.clone()));
                continue;
            }
            mounts.push((real, dir.clone()));
            let made = std::fs::create_dir_all(&base).and_then(|_| std::fs::create_dir(&dir));
            if let Err(e) = made {
                Cgroup::V1(dirs).destroy();
                return Err(io(&dir)(e));
            }
            if ctrl == "cpuset" {
                // A v1 cpuset starts empty: copy the parent's memory nodes (and CPUs) down.
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    for d in [&base, &dir] {
                        let parent = d.parent().unwrap_or(d).join(f);
                        let v = std::fs::read_to_string(&parent).unwrap_or_default();
                        let _ = std::fs::write(d.join(f), v.trim());
                    }
                }
            }
            dirs.push((ctrl, dir));
        }
        Ok(Cgroup::V1(dirs))
    }

    /// Lets the container's processes open only the devices `rules` list (creating nodes
    /// is up to each rule's MKNOD bit): the v1 `devices` controller, or a v2 BPF program.
    pub fn restrict_devices(&self, rules: &[crate::devices::Rule]) -> Result<(), CgroupError> {
        match self {
            Cgroup::V2(d) => crate::devices::apply_v2(d, rules)?,
            Cgroup::V1(_) => {
                let d = self.dir("devices").ok_or_else(|| {
                    CgroupError::Unsupported(
                        "the default device allow-list: the cgroup v1 devices controller is not mounted".into(),
                    )
                })?;
                crate::devices::apply_v1(d, rules)?
            }
        }
        Ok(())
    }

    fn dir(&self, ctrl: &str) -> Option<&Path> {
        match self {
            Cgroup::V2(d) => Some(d),
            Cgroup::V1(dirs) => dirs
                .iter()
                .find(|(c, _)| *c == ctrl)
                .map(|(_, d)| d.as_path()),
        }
    }

    fn apply(&self, l: &Limits) -> Result<(), CgroupError> {
        match self {
            Cgroup::V2(d) => {
                if let Some(m) = l.memory {
                    write(&d.join("memory.max"), &m.to_string())?;
                    // Docker: no --memory-swap means swap equal to the memory limit.
                    let swap = l.memory_swap.map(|s| s - m).unwrap_or(m).max(0);
                    let f = d.join("memory.swap.max");
                    if f.exists() {
                        write(&f, &swap.to_string())?;
                    }
                }
                if let Some(p) = l.pids {
                    write(&d.join("pids.max"), &p.to_string())?;
                }
                if let Some((q, p)) = l.cpu_quota {
                    write(&d.join("cpu.max"), &format!("{q} {p}"))?;
                }
                if let Some(c) = &l.cpuset_cpus {
                    write(&d.join("cpuset.cpus"), c)?;
                }
            }
            Cgroup::V1(_) => {
                if let (Some(m), Some(d)) = (l.memory, self.dir("memory")) {
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    let sw = l.memory_swap.unwrap_or(2 * m);
                    // v1 keeps memory <= memory+swap at every step: raising both (an
                    // update) writes memory+swap first.
                    if memsw.exists() && read_u64(&memsw) < m as u64 {
                        write(&memsw, &sw.to_string())?;
                    }
                    write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                    match (l.memory_swap, memsw.exists()) {
                        (Some(s), true) => write(&memsw, &s.to_string())?,
                        (None, true) => write(&memsw, &(2 * m).to_string())?,
                        (Some(_), false) => {
                            return Err(CgroupError::Unsupported(
                                "a memory+swap limit: swap accounting is off on this host (cgroup v1 without memory.memsw)".into(),
                            ))
                        }
                        (None, false) => {}
                    }
                }
                if let (Some(p), Some(d)) = (l.pids, self.dir("pids")) {
                    write(&d.join("pids.max"), &p.to_string())?;
                }
                if let (Some((q, p)), Some(d)) = (l.cpu_quota, self.dir("cpu")) {
                    write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
                    write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
                if let (Some(c), Some(d)) = (&l.cpuset_cpus, self.dir("cpuset")) {
                    write(&d.join("cpuset.cpus"), c)?;
                }
            }
        }
        Ok(())
    }

    /// Changes the limits of a live cgroup (`docker update`): the ones given are written,
    /// the others stay.
    pub fn update(&self, l: &Limits) -> Result<(), CgroupError> {
        if let Cgroup::V1(_) = self {
            for (ctrl, set, what) in [
                ("cpu", l.cpu_quota.is_some(), "a CPU quota"),
                ("cpuset", l.cpuset_cpus.is_some(), "a cpuset"),
                ("memory", l.memory.is_some(), "a memory limit"),
                ("pids", l.pids.is_some(), "a pids limit"),
            ] {
                if set && self.dir(ctrl).is_none() {
                    return Err(CgroupError::Unsupported(format!(
                        "{what}: the container's cgroup has no {ctrl} controller"
                    )));
                }
            }
        }
        self.apply(l)
    }

    /// Freezes (`docker pause`) or thaws every process in the cgroup, and waits until the
    /// kernel says it is done: cgroup v2's `cgroup.freeze`, or v1's freezer controller.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        // (the file to write, the value, the file that says when it is done, the line it
        // then holds)
        let (file, value, state, reached) = match self {
            Cgroup::V2(d) => (
                d.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
                d.join("cgroup.events"),
                if frozen { "frozen 1" } else { "frozen 0" },
            ),
            Cgroup::V1(_) => {
                let d = self.dir("freezer").ok_or_else(|| {
                    CgroupError::Unsupported(
                        "pause: the cgroup v1 freezer controller is not mounted on this host"
                            .into(),
                    )
                })?;
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (d.join("freezer.state"), v, d.join("freezer.state"), v)
            }
        };
        let done = || {
            std::fs::read_to_string(&state)
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() == reached)
        };
        write(&file, value)?;
        for _ in 0..1000 {
            if done() {
                return Ok(());
            }
            // v1 can stay FREEZING while a task is in an uninterruptible sleep: ask again.
            if frozen {
                let _ = std::fs::write(&file, value);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(CgroupError::Io {
            path: file.display().to_string(),
            err: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the cgroup did not reach {value} within 5 s"),
            ),
        })
    }

    /// Moves the calling process into the cgroup (used by the child before it execs).
    pub fn join_self(&self) -> Result<(), CgroupError> {
        let pid = std::process::id().to_string();
        match self {
            Cgroup::V2(d) => write(&d.join("cgroup.procs"), &pid),
            Cgroup::V1(dirs) => dirs
                .iter()
                .try_for_each(|(_, d)| write(&d.join("cgroup.procs"), &pid)),
        }
    }

    /// The PIDs in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let d = self.dir("pids").or_else(|| self.dir("memory"));
        d.and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// How many processes the kernel's OOM killer killed in the cgroup (`oom_kill` in
    /// v2's memory.events, or v1's memory.oom_control).
    pub fn oom_kills(&self) -> u64 {
        let file = match self {
            Cgroup::V2(d) => d.join("memory.events"),
            Cgroup::V1(_) => match self.dir("memory") {
                Some(d) => d.join("memory.oom_control"),
                None => return 0,
            },
        };
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Resource usage.
    pub fn usage(&self) -> Usage {
        match self {
            Cgroup::V2(d) => {
                let max = std::fs::read_to_string(d.join("memory.max")).unwrap_or_default();
                let cpu = std::fs::read_to_string(d.join("cpu.stat")).unwrap_or_default();
                Usage {
                    memory: read_u64(&d.join("memory.current")),
                    memory_limit: max.trim().parse().unwrap_or(0),
                    pids: read_u64(&d.join("pids.current")),
                    cpu_usec: cpu
                        .lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0),
                }
            }
            Cgroup::V1(_) => {
                let get = |c: &str, f: &str| self.dir(c).map(|d| read_u64(&d.join(f))).unwrap_or(0);
                let limit = get("memory", "memory.limit_in_bytes");
                Usage {
                    memory: get("memory", "memory.usage_in_bytes"),
                    memory_limit: if limit >= (1 << 62) { 0 } else { limit },
                    pids: get("pids", "pids.current"),
                    cpu_usec: get("cpuacct", "cpuacct.usage") / 1000,
                }
            }
        }
    }

    /// The `berth` directories under this process's own cgroup that [`Cgroup::create`]
    /// makes containers' cgroups in, with the controller each is for ("" on v2).
    fn bases(root: &Path) -> Vec<(&'static str, PathBuf)> {
        let own = own_cgroups();
        if root.join("cgroup.controllers").exists() {
            let p = own
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|(_, p)| p.as_str());
            return vec![(
                "",
                root.join(p.unwrap_or("/").trim_start_matches('/'))
                    .join("berth"),
            )];
        }
        V1_CONTROLLERS
            .iter()
            .map(|ctrl| {
                let own_path = own
                    .iter()
                    .find(|(c, _)| c.split(',').any(|x| x == *ctrl))
                    .map(|(_, p)| p.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                (*ctrl, root.join(ctrl).join(own_path).join("berth"))
            })
            .collect()
    }

    /// The names of the containers' cgroups that exist under this process's own cgroup
    /// (so also other daemons' in the same cgroup: callers pick theirs by name).
    pub fn names(root: &Path) -> Vec<String> {
        let mut out: Vec<String> = Self::bases(root)
            .iter()
            .flat_map(|(_, b)| std::fs::read_dir(b).into_iter().flatten().flatten())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The cgroup `berth/<id>` under this process's own cgroup, as [`Cgroup::create`]
    /// made it, if it exists: what a crashed berthd left, for it to remove.
    pub fn existing(root: &Path, id: &str) -> Option<Cgroup> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return None;
        }
        let dirs: Vec<(&'static str, PathBuf)> = Self::bases(root)
            .into_iter()
            .map(|(c, b)| (c, b.join(id)))
            .filter(|(_, d)| d.is_dir())
            .collect();
        match dirs.first() {
            None => None,
            Some(("", d)) => Some(Cgroup::V2(d.clone())),
            Some(_) => Some(Cgroup::V1(dirs)),
        }
    }

    /// Kills every process in the cgroup (SIGKILL, thawed first) and waits up to 5 s for
    /// them to go.
    pub fn kill_all(&self) {
        let _ = self.freeze(false);
        if let Cgroup::V2(d) = self {
            // The kernel kills the whole subtree at once where it can (5.14 and later).
            let _ = std::fs::write(d.join("cgroup.kill"), "1");
        }
        fn procs(dir: &Path, out: &mut Vec<i32>) {
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    procs(&e.path(), out);
                }
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut pids = Vec::new();
            for d in self.paths() {
                procs(&d, &mut pids);
            }
            if pids.is_empty() || std::time::Instant::now() >= deadline {
                return;
            }
            for pid in pids {
                // SAFETY: kill takes plain integers; the PIDs are the cgroup's members.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Removes the cgroup once its processes are gone (retrying briefly: the kernel
    /// releases a cgroup shortly after its last process is reaped).
    pub fn destroy(&self) {
        let dirs: Vec<&Path> = match self {
            Cgroup::V2(d) => vec![d.as_path()],
            Cgroup::V1(dirs) => dirs.iter().map(|(_, d)| d.as_path()).collect(),
        };
        for d in dirs {
            for _ in 0..200 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        }
    }

    /// The directories making up the cgroup.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V2(d) => vec![d.clone()],
            Cgroup::V1(dirs) => dirs.iter().map(|(_, d)| d.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

    #[test]
    fn limits_come_from_the_oci_resources() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20i64).build().unwrap())
            .build()
            .unwrap();
        let l = Limits::from_oci(Some(&r)).unwrap();
        assert_eq!(l.memory, Some(64 << 20));
        assert_eq!(l.pids, Some(20));
        assert_eq!(Limits::from_oci(None).unwrap(), Limits::default());
    }

    #[test]
    fn nonsense_limits_are_refused() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1024i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(Limits::from_oci(Some(&r))
            .unwrap_err()
            .to_string()
            .contains("minimum memory limit"));
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(32i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(Limits::from_oci(Some(&r)).is_err());
    }

    #[test]
    fn a_missing_controller_with_a_limit_is_an_error_not_silence() {
        let dir = std::env::temp_dir().join(format!("berth-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let l = Limits {
            memory: Some(64 << 20),
            ..Default::default()
        };
        let e = Cgroup::create(&dir, "c1", &l).unwrap_err().to_string();
        assert!(e.contains("cannot enforce a memory limit"), "{e}");
        let e = Cgroup::create(&dir, "../x", &l).unwrap_err().to_string();
        assert!(e.contains("not a valid cgroup name"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
