//! Re-adoption after a restart: every record is read back; containers that were running
//! are reconnected to their agents (and supervised again), or marked exited (255) if the
//! agent is gone. Then [`Daemon::reconcile`] removes what a crash (mid-`rm`, say) left
//! without an owner.

use super::{Daemon, Record};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where containers' cgroups live (`<berthd's cgroup>/berth/<id>`, made by the agent).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Daemon {
    /// Reads every record under the data root back.
    pub(super) fn adopt(self: &Arc<Self>) {
        let dir = self.opts.data_root.join("containers");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path().join("config.v2.json");
            let rec = match std::fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) => r,
                Ok(Err(err)) => {
                    crate::log(
                        "warn",
                        "skipping an unreadable container record",
                        &[
                            ("path", &p.display().to_string()),
                            ("error", &err.to_string()),
                        ],
                    );
                    continue;
                }
                Err(_) => continue,
            };
            let running = rec.state.running();
            let c = self.insert(rec.clone());
            if !running {
                continue;
            }
            // A re-adopted microVM's host log catches up on what it printed while berthd
            // was away, and follows it again (see `supervise`).
            if self.agent(&rec).alive(Duration::from_millis(1500)) {
                self.supervise(c);
            } else {
                self.finish(
                    &c,
                    255,
                    false,
                    "the container's agent was gone when berthd restarted",
                );
            }
        }
    }

    /// Makes what is on the host match the records: every agent, monitor, cgroup,
    /// directory and address berthd owns belongs to a known container or is removed.
    /// Run once at start, under the data root's lock, after [`Daemon::adopt`].
    /// Run directories and sandbox processes name a container by its short ID (12
    /// digits), so that is what ownership is decided on.
    pub(super) fn reconcile(self: &Arc<Self>) {
        let known: HashSet<String> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let data = self.opts.data_root.join("containers");
        let dirs: Vec<String> = names_in(&data);
        // A directory with a record file berthd could not read is left alone (and was
        // logged): it is somebody's data, not a leftover.
        let owned: HashSet<String> = known
            .iter()
            .cloned()
            .chain(
                dirs.iter()
                    .filter(|id| data.join(id).join("config.v2.json").exists())
                    .cloned(),
            )
            .map(|id| short(&id).to_owned())
            .collect();
        let ours: Vec<std::path::PathBuf> = [
            Some(&self.opts.agent),
            Some(&self.opts.vmm),
            self.opts.virtiofsd.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
        let procs = sandbox_processes(&self.opts.exec_root.join("c"), &ours, self.opts.vmm_jail);
        let mut orphans: BTreeSet<String> = dirs
            .iter()
            .map(|id| short(id).to_owned())
            .chain(names_in(&self.opts.exec_root.join("c")))
            .chain(procs.iter().map(|(_, id)| id.clone()))
            .filter(|s| !owned.contains(s))
            .collect();
        // A stopped container's sandbox is gone: one still running (berthd was killed
        // while releasing it, or while starting it) goes the same way, its record kept.
        let stopped: Vec<String> = known
            .iter()
            .filter(|id| self.find(id).is_ok_and(|c| !c.record().state.running()))
            .cloned()
            .collect();
        for id in &stopped {
            let pidfile = self.dir(id).join(crate::sandbox::PIDFILE);
            if crate::sandbox::recorded_process(&pidfile).is_some()
                || procs.iter().any(|(_, p)| p == short(id))
            {
                orphans.insert(short(id).to_owned());
            }
        }
        // Every process first (the list is fresh: no PID has been reused since), then
        // what each left.
        for (pid, _) in procs.iter().filter(|(_, p)| orphans.contains(p)) {
            kill_sandbox(*pid);
        }
        let cgroups = berth_container::cgroups::Cgroup::names(Path::new(CGROUP_ROOT));
        for s in &orphans {
            let full: Vec<&String> = dirs.iter().filter(|id| short(id) == s).collect();
            for id in &full {
                crate::sandbox::reap_sandbox(
                    &self.dir(id).join(crate::sandbox::PIDFILE),
                    Duration::ZERO,
                );
            }
            for cg in cgroups.iter().filter(|c| c.len() == 64 && short(c) == s) {
                if let Some(cg) =
                    berth_container::cgroups::Cgroup::existing(Path::new(CGROUP_ROOT), cg)
                {
                    cg.kill_all();
                    cg.destroy();
                }
            }
            let _ = std::fs::remove_dir_all(self.opts.exec_root.join("c").join(s));
            let what = if owned.contains(s) {
                "stopped the sandbox of a stopped container"
            } else {
                for id in &full {
                    let _ = std::fs::remove_dir_all(self.dir(id));
                }
                "removed what a container without a record left (berthd stopped while removing it?)"
            };
            crate::log("warn", what, &[("id", s)]);
        }
        // A container whose record could not be read keeps its addresses too.
        let mut holders = known.clone();
        holders.extend(
            dirs.iter()
                .filter(|id| data.join(id).join("config.v2.json").exists())
                .cloned(),
        );
        let freed = self.networks.release_unknown(&holders);
        if freed > 0 {
            crate::log(
                "warn",
                "released addresses of containers that no longer exist",
                &[("count", &freed.to_string())],
            );
        }
    }
}

/// A container's short ID: the first 12 digits (a name that is not an ID is itself).
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The names in a directory.
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// berthd's own sandbox processes, with their container's short ID: root's processes
/// (or a jailed monitor's uid's) running one of `ours` (the agent, the monitor, virtiofsd) whose command line names
/// `<exec-root>/c/<short id>/`. Nobody else's process is ever taken for one.
fn sandbox_processes(
    c_dir: &Path,
    ours: &[std::path::PathBuf],
    jail_uids: Option<(u32, u32)>,
) -> Vec<(i32, String)> {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("{}/", c_dir.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Root's, or a jailed monitor's (one of berthd's jail uids).
        let jailed = |u: u32| jail_uids.is_some_and(|(start, n)| u >= start && u - start < n);
        if !std::fs::metadata(e.path())
            .map(|m| m.uid())
            .is_ok_and(|u| u == 0 || jailed(u))
        {
            continue;
        }
        // (a binary replaced since, by an upgrade, reads "PATH (deleted)")
        let exe = std::fs::read_link(e.path().join("exe"))
            .map(|p| {
                let t = p.to_string_lossy();
                std::path::PathBuf::from(t.strip_suffix(" (deleted)").unwrap_or(&t))
            })
            .ok();
        if !exe.is_some_and(|x| ours.contains(&x)) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        for arg in cmd.split(|b| *b == 0) {
            let arg = String::from_utf8_lossy(arg);
            // The path starts the argument, or follows `unix:` or `--flag=`.
            let at = arg
                .match_indices(&prefix)
                .map(|(i, _)| i)
                .find(|&i| i == 0 || matches!(arg.as_bytes()[i - 1], b':' | b'='));
            if let Some(i) = at {
                let id: String = arg[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                if id.len() == 12 {
                    out.push((pid, id));
                    break;
                }
            }
        }
    }
    out
}

/// SIGKILLs a sandbox process, and its process group when it leads its own session (as
/// berthd starts them).
fn kill_sandbox(pid: i32) {
    // SAFETY: getsid and kill take plain integers.
    unsafe {
        if libc::getsid(pid) == pid {
            libc::kill(-pid, libc::SIGKILL);
        }
        libc::kill(pid, libc::SIGKILL);
    }
}
