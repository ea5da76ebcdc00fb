//! `exec`: create, start and inspect processes run in a running container.

use super::{new_id, Daemon, ExecRec, Record};
use crate::errors::{Error, Result};
use crate::models::ExecBody;
use std::path::PathBuf;
use std::sync::Arc;

/// Docker's default detach keys: ctrl-p, ctrl-q.
pub const DEFAULT_DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Parses Docker's detach keys (`ctrl-p,ctrl-q`, `a`, `ctrl-@`...); "" is the default.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    if s.is_empty() {
        return Ok(DEFAULT_DETACH_KEYS.to_vec());
    }
    let bad = || Error::InvalidParameter(format!("Invalid detach keys ({s}) provided"));
    s.split(',')
        .map(|k| {
            let k = k.trim();
            match k.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let b = c.as_bytes()[0].to_ascii_lowercase();
                    match b {
                        b'a'..=b'z' => Ok(b - b'a' + 1),
                        b'@' => Ok(0),
                        b'[' => Ok(27),
                        b'\\' => Ok(28),
                        b']' => Ok(29),
                        b'^' => Ok(30),
                        b'_' => Ok(31),
                        _ => Err(bad()),
                    }
                }
                None if k.len() == 1 => Ok(k.as_bytes()[0]),
                _ => Err(bad()),
            }
        })
        .collect()
}

impl Daemon {
    /// An exec by ID.
    pub fn exec_get(&self, id: &str) -> Result<ExecRec> {
        let e = self
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("No such exec instance: {id}")))?;
        self.exec_visible(&e)?;
        Ok(e)
    }

    /// A tenant reaches only the execs of its own containers.
    fn exec_visible(&self, e: &ExecRec) -> Result<()> {
        match self.find_any(&e.container) {
            Ok(c) if crate::tenant::sees(&c.record().tenant) => Ok(()),
            // A tenant's view fails closed: a gone container's execs are nobody's.
            Err(_) if crate::tenant::current().is_none() => Ok(()),
            _ => Err(Error::NotFound(format!("No such exec instance: {}", e.id))),
        }
    }

    /// Takes an exec for one start, checking and marking it under the lock, so that of
    /// two concurrent starts exactly one gets it and the other a 409 (as dockerd's
    /// "is already running").
    pub fn exec_claim(&self, id: &str) -> Result<ExecRec> {
        self.exec_get(id)?;
        let mut map = self.execs.lock().unwrap_or_else(|e| e.into_inner());
        let e = map
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("No such exec instance: {id}")))?;
        if e.claimed || e.running || e.exit_code.is_some() {
            return Err(Error::Conflict(format!(
                "Error: Exec command {id} is already running"
            )));
        }
        e.claimed = true;
        Ok(e.clone())
    }

    /// Changes an exec's record.
    pub fn exec_update(&self, id: &str, f: impl FnOnce(&mut ExecRec)) {
        if let Some(x) = self
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            f(x);
        }
    }

    /// `POST /containers/{id}/exec`: a new exec (not started).
    pub fn exec_create(&self, container: &str, b: ExecBody) -> Result<String> {
        let c = self.find(container)?;
        let rec = self.running_unpaused(&c)?;
        if b.privileged == Some(true) {
            return Err(Error::NotImplemented("Privileged (privileged exec)".into()));
        }
        let detach_keys = parse_detach_keys(b.detach_keys.as_deref().unwrap_or(""))?;
        let cmd = b.cmd.unwrap_or_default();
        if cmd.is_empty() {
            return Err(Error::InvalidParameter("No exec command specified".into()));
        }
        let id = new_id();
        let e = ExecRec {
            id: id.clone(),
            container: rec.id.clone(),
            cmd,
            tty: b.tty.unwrap_or(false),
            stdin: b.attach_stdin.unwrap_or(false),
            stdout: b.attach_stdout.unwrap_or(false),
            stderr: b.attach_stderr.unwrap_or(false),
            env: b.env.unwrap_or_default(),
            cwd: b.working_dir.filter(|s| !s.is_empty()),
            user: b.user.filter(|s| !s.is_empty()),
            running: false,
            claimed: false,
            exit_code: None,
            pid: 0,
            detach_keys,
        };
        let what = format!("exec_create: {}", e.cmd.join(" "));
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), e);
        self.event(
            "container",
            &what,
            &rec.id,
            &[("name", rec.name.clone()), ("execID", id.clone())],
        );
        Ok(id)
    }

    /// Starts an exec at the container's agent (blocking); its PID. Its output waits in
    /// the agent's pipes until the streams are connected.
    pub fn exec_start(self: &Arc<Self>, e: &ExecRec) -> Result<i32> {
        let c = self.find(&e.container)?;
        let rec = self.running_unpaused(&c)?;
        if e.running || e.exit_code.is_some() {
            return Err(Error::Conflict(format!(
                "Error: Exec command {} is already running",
                e.id
            )));
        }
        let process = self.exec_process(
            &rec,
            e.cmd.clone(),
            &e.env,
            e.cwd.clone(),
            e.user.clone(),
            e.tty,
        )?;
        let pid = self.agent(&rec).exec(
            &e.id,
            berth_protocol::ExecSpec {
                process,
                open_stdin: e.stdin,
                archive: None,
            },
        )?;
        self.exec_update(&e.id, |x| {
            x.running = true;
            x.pid = i64::from(pid);
        });
        self.event(
            "container",
            &format!("exec_start: {}", e.cmd.join(" ")),
            &rec.id,
            &[("name", rec.name.clone()), ("execID", e.id.clone())],
        );
        Ok(pid)
    }

    /// The OCI process for a command run in a running container (an exec, or a
    /// healthcheck probe): the container's environment with `env` over it, its working
    /// directory and user unless given, and its capabilities, no_new_privs, ulimits and
    /// OOM score (seccomp and added groups the agent keeps from the container).
    pub fn exec_process(
        &self,
        rec: &Record,
        cmd: Vec<String>,
        env: &[String],
        cwd: Option<String>,
        user: Option<String>,
        tty: bool,
    ) -> Result<oci_spec::runtime::Process> {
        let mut all = rec.env.clone();
        for x in env {
            let k = x.split('=').next().unwrap_or("");
            all.retain(|y| y.split('=').next() != Some(k));
            all.push(x.clone());
        }
        let mut process = berth_container::spec::docker_default(cmd)
            .process()
            .clone()
            .ok_or_else(|| Error::Sandbox("no default process".into()))?;
        process.set_env(Some(all));
        process.set_terminal(Some(tty));
        process.set_cwd(PathBuf::from(cwd.unwrap_or_else(|| {
            if rec.cwd.is_empty() {
                "/".into()
            } else {
                rec.cwd.clone()
            }
        })));
        rec.confinement.apply_to_process(&mut process)?;
        let user = user.unwrap_or_else(|| rec.user.clone());
        if !user.is_empty() {
            let mut u = process.user().clone();
            u.set_username(Some(user));
            process.set_user(u);
        }
        Ok(process)
    }

    /// Waits (blocking) for an exec to exit and records its status.
    pub fn exec_wait(&self, e: &ExecRec) {
        let c = self.find(&e.container).ok();
        let code = c
            .as_ref()
            .and_then(|c| self.agent(&c.record()).wait(Some(e.id.clone())).ok())
            .unwrap_or(255);
        self.exec_update(&e.id, |x| {
            x.running = false;
            x.exit_code = Some(code);
        });
        let name = c.map(|c| c.record().name).unwrap_or_default();
        self.event(
            "container",
            "exec_die",
            &e.container,
            &[
                ("name", name),
                ("execID", e.id.clone()),
                ("exitCode", code.to_string()),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_dockers() {
        assert_eq!(parse_detach_keys("").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), [1, b'x']);
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-[").unwrap(), [0, 27]);
        for bad in ["ctrl-", "ctrl-1", "xy", "ctrl-p,"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad:?}");
        }
    }
}
