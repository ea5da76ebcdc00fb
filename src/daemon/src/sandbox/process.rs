//! Process isolation: `berth-agent --listen unix:...` on the host. The image's unpacked
//! tree is the overlay's lower layer, `<container dir>/rw` its upper, and the agent writes
//! the json-file log itself (so it keeps growing while berthd is away).

use super::{spawn_detached, Booted, Isolation, Sandbox, SandboxSpec};
use crate::errors::{Error, Result};
use berth_image::ImageStore;
use berth_protocol::client::Endpoint;
use berth_protocol::RootfsSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The process backend.
pub struct ProcessSandbox {
    agent: PathBuf,
    images: Arc<ImageStore>,
}

impl ProcessSandbox {
    /// A backend starting `opts.agent`.
    pub fn new(opts: &crate::daemon::Opts, images: Arc<ImageStore>) -> ProcessSandbox {
        ProcessSandbox {
            agent: opts.agent.clone(),
            images,
        }
    }
}

impl Sandbox for ProcessSandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Process
    }

    fn check_host(&self) -> Result<()> {
        Ok(())
    }

    fn boot(&self, spec: &SandboxSpec) -> Result<Booted> {
        let image = self.images.resolve(&spec.image_id)?;
        let layer = self.images.rootfs(&image)?;
        let rw = spec.dir.join("rw");
        std::fs::create_dir_all(&rw).map_err(Error::io(format!("{}", rw.display())))?;
        let mut cmd = std::process::Command::new(&self.agent);
        cmd.arg("--listen")
            .arg(format!(
                "unix:{}",
                spec.run_dir.join("agent.sock").display()
            ))
            .arg("--state-dir")
            .arg(spec.run_dir.join("state"));
        let client = spawn_detached(
            cmd,
            &spec.dir.join("agent.log"),
            &spec.dir.join(super::PIDFILE),
            &self.endpoint(&spec.run_dir),
            Duration::from_secs(10),
            "container's agent",
            None,
        )?;
        Ok(Booted {
            rootfs: RootfsSpec {
                layers: vec![layer.display().to_string()],
                writable: Some(rw.display().to_string()),
            },
            agent_log: spec.log_path.display().to_string(),
            client,
        })
    }

    fn endpoint(&self, run_dir: &Path) -> Endpoint {
        Endpoint::Unix(run_dir.join("agent.sock"))
    }

    fn copies_logs(&self) -> bool {
        false
    }

    fn command_of(&self, pid: i32) -> String {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    fn writable_layer(&self, dir: &Path) -> Option<PathBuf> {
        Some(dir.join("rw").join("upper"))
    }
}
