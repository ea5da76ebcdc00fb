//! `start`, and the supervisor that watches a running container until it exits.

use super::{now_rfc3339, Ctr, Daemon, PendingAttach, Phase, Record};
use crate::errors::{Error, Result};
use crate::sandbox::{answer, SandboxSpec};
use berth_protocol::{ContainerSpec, Request, Response};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long an exit waits for attached clients and the host log to receive the last of
/// the output once their copying stops making progress (a stuck client or guest).
const DRAIN_IDLE: Duration = Duration::from_secs(10);

impl Daemon {
    /// The OCI spec for a container's process.
    fn spec(&self, rec: &Record, booted: &crate::sandbox::Booted) -> Result<ContainerSpec> {
        let mut oci = berth_container::spec::docker_default(rec.args.clone());
        oci.set_hostname(Some(rec.hostname.clone()));
        if let Some(p) = oci.process_mut() {
            p.set_env(Some(rec.env.clone()));
            p.set_cwd(PathBuf::from(if rec.cwd.is_empty() {
                "/"
            } else {
                &rec.cwd
            }));
            p.set_terminal(Some(rec.tty));
            if !rec.user.is_empty() {
                // Resolved in the image's passwd/group by the runtime (Docker's --user forms).
                let mut u = p.user().clone();
                u.set_username(Some(rec.user.clone()));
                p.set_user(u);
            }
        }
        let set = |v: i64| (v > 0).then_some(v);
        let res =
            super::update::oci_resources(set(rec.memory), set(rec.nano_cpus), set(rec.pids_limit))?;
        if let Some(l) = oci.linux_mut() {
            l.set_resources(Some(res));
        }
        rec.confinement.apply(&mut oci)?;
        let image_root = if rec.mounts.iter().any(|m| m.copy_up) {
            let img = self.images.resolve(&rec.image_id)?;
            Some(self.images.rootfs(&img)?)
        } else {
            None
        };
        let shared = self.sandbox(rec).shares();
        self.mounts_spec(rec, image_root.as_deref(), shared, &mut oci)?;
        let etc_files = self.net_spec(rec, &mut oci)?;
        Ok(ContainerSpec {
            etc_files,
            oci,
            rootfs: booted.rootfs.clone(),
            open_stdin: rec.open_stdin,
            log_path: (!rec.log_none).then(|| booted.agent_log.clone()),
            log_max_size: rec.log_rotation.max_size,
            log_max_files: rec.log_rotation.max_files,
            seccomp_unconfined: rec.confinement.seccomp_unconfined,
            // A sandbox that keeps its own log (a microVM's, fresh at each start) goes on
            // from where the host copy ends; the host agent appends to the host log.
            log_base: if self.sandbox(rec).copies_logs() {
                berth_protocol::logfile::end_of(&self.log_path(&rec.id))
            } else {
                0
            },
        })
    }

    /// Starts a container (blocking: call from a blocking task). Attachers waiting for
    /// the start connect between the agent's create and start, so they see every byte.
    /// A failure is recorded in the state, with the sandbox released.
    pub fn start(self: &Arc<Self>, c: &Arc<Ctr>) -> Result<()> {
        let rec = c.record();
        rec.state.can_start()?;
        match self.start_in_sandbox(c, &rec) {
            Ok(pid) => {
                self.update(c, |r| {
                    // A restart by its policy is over once it runs again.
                    r.restarting = false;
                    r.paused = false;
                    r.oom_killed = false;
                    r.sandbox_sized = (r.memory, r.nano_cpus);
                    r.state.started(i64::from(pid), now_rfc3339())
                })?;
                c.phase.send_replace(Phase::Running);
                self.event("container", "start", &rec.id, &[("name", rec.name.clone())]);
                Ok(())
            }
            Err(e) => {
                self.agent(&rec).release();
                self.net_down(&rec.id);
                self.sandbox_gone(&rec);
                let (status, msg) = (e.exit_status(), e.to_string());
                if let Err(se) = self.update(c, |r| {
                    r.net.published.clear();
                    r.state.start_failed(status, msg, now_rfc3339());
                    Ok(())
                }) {
                    super::log_failure("recording a failed start", &se);
                }
                Err(e)
            }
        }
    }

    fn start_in_sandbox(self: &Arc<Self>, c: &Arc<Ctr>, rec: &Record) -> Result<i32> {
        crate::trace(&rec.id, "start");
        let run = self.run_dir(&rec.id);
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).map_err(Error::io(format!("{}", run.display())))?;
        let sandbox = self.sandbox(rec);
        // Host ports first: a taken one fails the start before anything boots.
        let proxies = self.net_bind(rec)?;
        // A microVM's taps go on their bridges before it boots.
        let nics = self.net_taps(rec)?;
        let shares = if sandbox.shares() {
            self.shares(rec)?
        } else {
            Vec::new()
        };
        crate::trace(&rec.id, "taps and shares");
        let mut booted = sandbox.boot(&SandboxSpec {
            id: rec.id.clone(),
            dir: self.dir(&rec.id),
            run_dir: run,
            log_path: self.log_path(&rec.id),
            image_id: rec.image_id.clone(),
            memory: rec.memory,
            nano_cpus: rec.nano_cpus,
            nics,
            shares,
        })?;
        crate::trace(&rec.id, "booted");
        let spec = self.spec(rec, &booted)?;
        let pid = match answer(booted.client.call(&Request::Create {
            id: rec.id.clone(),
            spec: Box::new(spec),
        }))? {
            Response::Created { pid } => pid,
            other => {
                return Err(Error::Sandbox(format!(
                    "the container's agent answered {other:?}"
                )))
            }
        };
        crate::trace(&rec.id, "created");
        self.net_up(c, rec, pid, proxies)?;
        crate::trace(&rec.id, "network up");
        let agent = self.agent(rec);
        if let (true, Some((rows, cols))) = (rec.tty, rec.console_size) {
            agent.resize(None, rows, cols)?;
        }
        // Attachers connect now: before the first byte of output.
        let pending: Vec<PendingAttach> =
            std::mem::take(&mut *c.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut acks = Vec::new();
        for p in pending {
            if p.ready.send(self.agent(rec)).is_ok() {
                acks.push(p.ack);
            }
        }
        for a in acks {
            let _ = a.blocking_recv();
        }
        answer(booted.client.call(&Request::Start { id: rec.id.clone() }))?;
        crate::trace(&rec.id, "started");
        self.supervise(c.clone());
        Ok(pid)
    }

    /// Watches a running container from a task of its own: keeps the host copy of its
    /// log if the sandbox needs one; when its process exits (the agent answers only once
    /// the output is drained), waits for the host log and the attached clients to have the
    /// last byte, lets the sandbox go (its process gone, killed if need be), records the
    /// status, and removes the container if it asked for that.
    pub fn supervise(self: &Arc<Self>, c: Arc<Ctr>) {
        Self::health_starting(&c);
        let d = self.clone();
        self.rt.spawn(async move {
            let began = std::time::Instant::now();
            let rec = c.record();
            let agent = d.agent(&rec);
            let copier = if d.sandbox(&rec).copies_logs() && !rec.log_none {
                match super::logs::copy_to_host_log(&agent, d.log_path(&rec.id), rec.log_rotation)
                    .await
                {
                    Ok(c) => Some(c),
                    Err(e) => {
                        super::log_failure("following a container's log", &e);
                        None
                    }
                }
            } else {
                None
            };
            let health = d.watch_health(c.clone());
            let mut status = None;
            for _ in 0..3 {
                match agent.wait_async(None).await {
                    Ok(s) => {
                        status = Some(s);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            crate::trace(&rec.id, "exited");
            if let Some(h) = health {
                h.abort();
            }
            if let Some(copier) = copier {
                copier.finish(DRAIN_IDLE).await;
            }
            crate::trace(&rec.id, "log copied");
            c.relays_done(DRAIN_IDLE).await;
            crate::trace(&rec.id, "relays done");
            let (status, oom, err) = match status {
                Some((s, oom)) => (s, oom, ""),
                None => (255, false, "lost contact with the container's agent"),
            };
            // The sandbox goes before the exit is reported: whoever acts on the exit (rm,
            // restart, a waiting `run --rm`) finds no monitor, agent or socket left.
            agent.release_async().await;
            crate::trace(&rec.id, "released");
            let (d2, r2) = (d.clone(), rec.clone());
            let _ = tokio::task::spawn_blocking(move || d2.sandbox_gone(&r2)).await;
            crate::trace(&rec.id, "sandbox gone");
            // Records and removals write files: off the async workers.
            let (d2, c2) = (d.clone(), c.clone());
            let _ = tokio::task::spawn_blocking(move || d2.finish(&c2, status, oom, err)).await;
            crate::trace(&rec.id, "finished");
            if !rec.auto_remove {
                d.maybe_restart(c.clone(), status, began.elapsed()).await;
            }
            if rec.auto_remove {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = d.remove_now(&c, true) {
                        super::log_failure("removing an --rm container", &e);
                    }
                })
                .await;
            }
        });
    }

    /// Records an exit (`oom`: the kernel's OOM killer ended it).
    pub fn finish(&self, c: &Arc<Ctr>, status: i64, oom: bool, error: &str) {
        let name = c.record().name;
        self.net_down(&c.id);
        if let Err(e) = self.update(c, |r| {
            r.paused = false;
            r.oom_killed = oom;
            r.net.published.clear();
            r.state.exited(status, error.into(), now_rfc3339())
        }) {
            super::log_failure("recording an exit", &e);
        }
        if oom {
            self.event("container", "oom", &c.id, &[("name", name.clone())]);
        }
        self.event(
            "container",
            "die",
            &c.id,
            &[("exitCode", status.to_string()), ("name", name)],
        );
        c.phase.send_replace(Phase::Exited(status));
    }
}
