//! File transfer with a container's filesystem: the archive API (`docker cp` both ways,
//! also for stopped containers), `export` and `changes` (`docker diff`). The reading and
//! writing is done by berthd's archive helper, chrooted into the container's root
//! ([`berth_container::archive`]). Process isolation: a running container is entered in
//! (a private copy of) its own mounts, without the kernel's filesystems; a stopped one's
//! overlay and volumes are mounted for the helper alone (read-only for reads). A
//! microVM's running container is reached in its guest, where the guest agent runs the
//! same helper (an exec of its own binary, streams over vsock); a stopped one is its image
//! (its writable layer ended with its guest) with its volumes and binds.

use super::{Ctr, Daemon, Record};
use crate::errors::{Error, Result};
use crate::models::docker;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the helper works, and the empty directory made for it (removed when dropped;
/// the helper's mounts there live in its own mount namespace and end with it).
struct View {
    root: berth_container::archive::Root,
    made: Option<PathBuf>,
    /// Run by this agent (a microVM's, in its guest) rather than by berthd.
    agent: Option<crate::sandbox::AgentRef>,
}

impl View {
    /// The helper chrooted into a host directory (a volume, a bind's source).
    fn chrooted(dir: &Path) -> View {
        View {
            root: berth_container::archive::Root {
                dir: dir.display().to_string(),
                ..Default::default()
            },
            made: None,
            agent: None,
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(d) = &self.made {
            // An empty mount point, or the scratch tree of a stopped microVM's view (its
            // mounts were the helper's own and ended with it).
            let scratch = d
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vm-"));
            if scratch {
                let _ = std::fs::remove_dir_all(d);
            } else {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// What the helper answered.
struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Daemon {
    /// The container's root for one operation. A running container is entered in its
    /// own mounts when `live` (volumes and binds included); otherwise its layers are
    /// mounted for the helper: writable for a stopped container's `write`, with its
    /// volumes and binds when `live` (not for export).
    fn fs_view(&self, rec: &Record, write: bool, live: bool) -> Result<View> {
        let Some(upper) = self.sandbox(rec).writable_layer(&self.dir(&rec.id)) else {
            return self.vm_view(rec, write, live);
        };
        if rec.state.running() && (live || write) {
            return Ok(View {
                root: berth_container::archive::Root {
                    live_pid: Some(rec.state.pid() as i32),
                    ..Default::default()
                },
                made: None,
                agent: None,
            });
        }
        let img = self.images.resolve(&rec.image_id)?;
        let image_root = self.images.rootfs(&img)?;
        let rw = upper.parent().map(Path::to_path_buf).unwrap_or_default();
        let work = rw.join("work");
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("{}", d.display())))?;
        }
        let target = self
            .opts
            .exec_root
            .join("archive")
            .join(&super::new_id()[..16]);
        std::fs::create_dir_all(&target).map_err(Error::io(format!("{}", target.display())))?;
        // A stopped container's own view (cp either way) is its writable overlay, where
        // its volumes' mount points can be made, as its start makes them; export reads
        // the layers alone.
        let writable = live && !rec.state.running();
        let overlay = if writable {
            format!(
                "lowerdir={},upperdir={},workdir={}",
                image_root.display(),
                upper.display(),
                work.display()
            )
        } else {
            format!("lowerdir={}:{}", upper.display(), image_root.display())
        };
        let binds = if live {
            self.view_binds(rec)
        } else {
            Vec::new()
        };
        Ok(View {
            root: berth_container::archive::Root {
                live_pid: None,
                dir: target.display().to_string(),
                overlay: Some(overlay),
                read_only: !writable,
                binds,
            },
            made: Some(target),
            agent: None,
        })
    }

    /// A microVM container's root. Running: in its guest, entered by the guest agent's
    /// helper in the container's own mounts (`live` or `write`), or its layers mounted
    /// read-only there (export). Stopped: its image, read-only, with its volumes and binds
    /// when `live`; a write goes to [`Daemon::stopped_vm_mount`] instead.
    fn vm_view(&self, rec: &Record, write: bool, live: bool) -> Result<View> {
        if rec.state.running() {
            let agent = Some(self.agent(rec));
            if live || write {
                return Ok(View {
                    root: berth_container::archive::Root {
                        live_pid: Some(rec.state.pid() as i32),
                        ..Default::default()
                    },
                    made: None,
                    agent,
                });
            }
            let img = self.images.resolve(&rec.image_id)?;
            return Ok(View {
                root: berth_container::archive::Root {
                    dir: "/run/berth/archive".into(),
                    overlay: Some(format!(
                        "lowerdir={}:{}",
                        crate::sandbox::vm::guest_upper(&rec.id),
                        crate::sandbox::vm::guest_image_layer(img.id.hex())
                    )),
                    read_only: true,
                    ..Default::default()
                },
                made: None,
                agent,
            });
        }
        if write {
            return Err(Error::NotImplemented(
                "copying into a stopped microVM container outside its volumes and binds: its root filesystem is made afresh from the image at each start (copy into a volume, or start it first)".into(),
            ));
        }
        let img = self.images.resolve(&rec.image_id)?;
        let image_root = self.images.rootfs(&img)?;
        if !live {
            return Ok(View {
                root: berth_container::archive::Root {
                    dir: image_root.display().to_string(),
                    read_only: true,
                    ..Default::default()
                },
                made: None,
                agent: None,
            });
        }
        // The image under a throwaway upper layer, where the volumes' and binds' mount
        // points can be made (mounted in the helper's own namespace; all of it removed
        // with the view, or with the container after a crash). In the container's
        // directory: a filesystem that can hold an overlay's upper layer.
        let scratch = self
            .dir(&rec.id)
            .join(format!("vm-{}", &super::new_id()[..16]));
        let (target, upper, work) = (
            scratch.join("root"),
            scratch.join("upper"),
            scratch.join("work"),
        );
        for d in [&target, &upper, &work] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("{}", d.display())))?;
        }
        Ok(View {
            root: berth_container::archive::Root {
                dir: target.display().to_string(),
                overlay: Some(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    image_root.display(),
                    upper.display(),
                    work.display()
                )),
                binds: self.view_binds(rec),
                ..Default::default()
            },
            made: Some(scratch),
            agent: None,
        })
    }

    /// For a write into a stopped microVM container: the volume or bind holding `path` (the
    /// deepest, as at run time), as its host directory and the path inside it; a
    /// read-only one refuses.
    fn stopped_vm_mount(&self, rec: &Record, path: &str) -> Result<Option<(PathBuf, String)>> {
        // Component-wise: /data holds /data/x, not /database.
        let Some(m) = rec
            .mounts
            .iter()
            .filter(|m| Path::new(path).starts_with(&m.destination))
            .max_by_key(|m| Path::new(&m.destination).components().count())
        else {
            return Ok(None);
        };
        if !m.rw {
            return Err(Error::Forbidden(format!(
                "{} is a read-only mount of the container",
                m.destination
            )));
        }
        let dir = self.mount_source(m);
        let rel = Path::new(path)
            .strip_prefix(&m.destination)
            .map(|r| r.display().to_string())
            .unwrap_or_default();
        Ok(Some((dir, format!("/{rel}"))))
    }

    /// A container's volumes and binds as (host source, destination, read-only).
    fn view_binds(&self, rec: &Record) -> Vec<(String, String, bool)> {
        rec.mounts
            .iter()
            .map(|m| {
                (
                    self.mount_source(m).display().to_string(),
                    m.destination.clone(),
                    !m.rw,
                )
            })
            .collect()
    }

    fn helper(&self, v: &View, args: &[&str], input: Option<&[u8]>) -> Result<Out> {
        let root = serde_json::to_string(&v.root)
            .map_err(|e| Error::Sandbox(format!("the archive helper's root: {e}")))?;
        if let Some(agent) = &v.agent {
            let mut all = vec![root];
            all.extend(args.iter().map(|a| a.to_string()));
            return helper_in_guest(agent, all, input);
        }
        // This very binary, even if the file was replaced since berthd started.
        let mut child = Command::new("/proc/self/exe")
            .arg("__archive")
            .arg(root)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io("starting berthd's archive helper"))?;
        let writer = match (input, child.stdin.take()) {
            (Some(data), Some(mut stdin)) => {
                let data = data.to_vec();
                Some(std::thread::spawn(move || {
                    let _ = stdin.write_all(&data);
                }))
            }
            _ => None,
        };
        let out = child
            .wait_with_output()
            .map_err(Error::io("waiting for berthd's archive helper"))?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok(Out {
            code: out.status.code().unwrap_or(1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }

    fn stat_in(&self, v: &View, rec: &Record, path: &str) -> Result<String> {
        let o = self.helper(v, &["stat", path], None)?;
        match o.code {
            0 => {
                use base64::Engine;
                let json = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                Ok(base64::engine::general_purpose::STANDARD.encode(json))
            }
            2 => Err(Error::NotFound(format!(
                "Could not find the file {path} in container {}",
                rec.name
            ))),
            _ => Err(Error::Sandbox(o.stderr)),
        }
    }

    /// `HEAD /containers/{id}/archive`: the `X-Docker-Container-Path-Stat` header.
    pub fn archive_stat(&self, c: &Ctr, path: &str) -> Result<String> {
        let _op = c.op.blocking_lock();
        let rec = c.record();
        let path = check_path(path)?;
        let v = self.fs_view(&rec, false, true)?;
        self.stat_in(&v, &rec, &path)
    }

    /// `GET /containers/{id}/archive`: the stat header and a tar of the path.
    pub fn archive_get(&self, c: &Ctr, path: &str) -> Result<(String, Vec<u8>)> {
        let _op = c.op.blocking_lock();
        let rec = c.record();
        let path = check_path(path)?;
        let v = self.fs_view(&rec, false, true)?;
        let stat = self.stat_in(&v, &rec, &path)?;
        let o = self.helper(&v, &["get", &path], None)?;
        match o.code {
            0 => Ok((stat, o.stdout)),
            2 => Err(Error::NotFound(format!(
                "Could not find the file {path} in container {}",
                rec.name
            ))),
            _ => Err(Error::Sandbox(o.stderr)),
        }
    }

    /// `PUT /containers/{id}/archive`: unpacks a tar into a directory of the container,
    /// the archive's owners kept (as dockerd without `copyUIDGID`).
    pub fn archive_put(&self, c: &Ctr, path: &str, tar: &[u8], copy_uid_gid: bool) -> Result<()> {
        let _op = c.op.blocking_lock();
        let rec = c.record();
        let path = check_path(path)?;
        // Which mount a path is in is decided on its words: "/vol/../etc" is not in /vol.
        if Path::new(&path)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Error::InvalidParameter(format!(
                "{path}: a destination with \"..\" (name the directory itself)"
            )));
        }
        if copy_uid_gid && !rec.user.is_empty() {
            return Err(Error::NotImplemented(
                "copyUIDGID (docker cp -a) for a container with a User: the files keep the archive's owners".into(),
            ));
        }
        // A read-only root takes files only in its writable volumes and binds.
        let in_writable_mount = rec
            .mounts
            .iter()
            .any(|m| m.rw && Path::new(&path).starts_with(&m.destination));
        if rec.confinement.readonly_rootfs && !in_writable_mount {
            return Err(Error::Forbidden(
                "container rootfs is marked read-only".into(),
            ));
        }
        let stopped_vm = !rec.state.running()
            && self
                .sandbox(&rec)
                .writable_layer(&self.dir(&rec.id))
                .is_none();
        let mount = if stopped_vm {
            self.stopped_vm_mount(&rec, &path)?
        } else {
            None
        };
        let (v, path) = match mount {
            // Into one of a stopped microVM's volumes or binds: the helper chrooted there.
            Some((dir, rel)) => (View::chrooted(&dir), rel),
            None => (self.fs_view(&rec, true, true)?, path),
        };
        let o = self.helper(&v, &["put", &path], Some(tar))?;
        match o.code {
            0 => Ok(()),
            2 => Err(Error::NotFound(format!(
                "Could not find the file {path} in container {}",
                rec.name
            ))),
            3 => Err(Error::InvalidParameter(o.stderr)),
            _ => Err(Error::Sandbox(o.stderr)),
        }
    }

    /// Unpacks `tar` into host directory `dir` (a volume) through the helper, chrooted
    /// there.
    pub(super) fn unpack_into(&self, dir: &Path, tar: &[u8]) -> Result<()> {
        let v = View::chrooted(dir);
        let o = self.helper(&v, &["put", "/"], Some(tar))?;
        if o.code != 0 {
            return Err(Error::Sandbox(format!(
                "copying the image's content into a volume: {}",
                o.stderr
            )));
        }
        Ok(())
    }

    /// `GET /containers/{id}/export`: the container's filesystem (its image and its
    /// changes, without volumes or runtime mounts) as a tar.
    pub fn export(&self, c: &Ctr) -> Result<Vec<u8>> {
        let _op = c.op.blocking_lock();
        let rec = c.record();
        let v = self.fs_view(&rec, false, false)?;
        let o = self.helper(&v, &["export"], None)?;
        if o.code != 0 {
            return Err(Error::Sandbox(o.stderr));
        }
        self.event(
            "container",
            "export",
            &rec.id,
            &[("name", rec.name.clone())],
        );
        Ok(o.stdout)
    }

    /// `GET /containers/{id}/changes`: what its writable layer added, changed and
    /// deleted against its image.
    pub fn changes(&self, c: &Ctr) -> Result<Vec<docker::FilesystemChange>> {
        let rec = c.record();
        let img = self.images.resolve(&rec.image_id)?;
        let found = match self.sandbox(&rec).writable_layer(&self.dir(&rec.id)) {
            Some(upper) => {
                let image_root = self.images.rootfs(&img)?;
                berth_container::archive::changes(&upper, &image_root)
            }
            // A microVM's writable layer is in its guest while it runs, and gone once it
            // stopped (each start begins from the image).
            None if rec.state.running() => {
                let _op = c.op.blocking_lock();
                let o = helper_in_guest(
                    &self.agent(&rec),
                    vec![
                        "{}".into(),
                        "changes".into(),
                        crate::sandbox::vm::guest_upper(&rec.id),
                        crate::sandbox::vm::guest_image_layer(img.id.hex()),
                    ],
                    None,
                )?;
                if o.code != 0 {
                    return Err(Error::Sandbox(o.stderr));
                }
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| {
                        let (k, p) = l.split_once(' ')?;
                        Some((
                            berth_container::archive::Change::from_u8(k.parse().ok()?)?,
                            p.to_owned(),
                        ))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let mut out: Vec<docker::FilesystemChange> = found
            .into_iter()
            .map(|(kind, path)| docker::FilesystemChange {
                path,
                kind: change_type(kind),
            })
            .collect();
        // Mount points berth made in the writable layer are not the workload's changes
        // (dockerd leaves them out too).
        let mut skip: Vec<String> = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        skip.extend(rec.mounts.iter().map(|m| m.destination.clone()));
        skip.extend(rec.confinement.tmpfs.iter().map(|t| t.target.clone()));
        out.retain(|ch| !skip.contains(&ch.path));
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// An absolute container path without NULs.
fn check_path(p: &str) -> Result<String> {
    if p.is_empty() || p.contains('\0') {
        return Err(Error::InvalidParameter("path is empty or has a NUL".into()));
    }
    Ok(if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    })
}

/// Docker's change type for a change.
fn change_type(c: berth_container::archive::Change) -> docker::ChangeType {
    use berth_container::archive::Change;
    match c {
        Change::Modified => docker::ChangeType::_0,
        Change::Added => docker::ChangeType::_1,
        Change::Deleted => docker::ChangeType::_2,
    }
}

/// The most a guest's helper may send back (a tar of a path, an export): as `PUT`'s limit.
const GUEST_OUTPUT_MAX: u64 = 1 << 30;
/// Its error text.
const GUEST_STDERR_MAX: u64 = 64 << 10;
/// How long a guest's helper may stay silent before the transfer is given up.
const GUEST_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the file-transfer helper in a microVM's guest, through its agent: an exec of the
/// agent's own binary, its streams over vsock. The guest is not trusted: its output is
/// capped, a stream silent for [`GUEST_IDLE`] ends the transfer, and on any failure the
/// helper is killed.
fn helper_in_guest(
    agent: &crate::sandbox::AgentRef,
    args: Vec<String>,
    input: Option<&[u8]>,
) -> Result<Out> {
    let exec_id = format!("archive-{}", &super::new_id()[..16]);
    agent.exec(
        &exec_id,
        berth_protocol::ExecSpec {
            process: oci_spec::runtime::Process::default(),
            open_stdin: input.is_some(),
            archive: Some(args),
        },
    )?;
    let r = guest_transfer(agent, &exec_id, input);
    if r.is_err() {
        let _ = agent.call(&berth_protocol::Request::Signal {
            id: agent.id.clone(),
            exec_id: Some(exec_id),
            signal: libc::SIGKILL,
            all: false,
        });
    }
    r
}

fn guest_transfer(
    agent: &crate::sandbox::AgentRef,
    exec_id: &str,
    input: Option<&[u8]>,
) -> Result<Out> {
    use berth_protocol::StreamKind;
    use std::io::Read;
    let open = |kind| -> Result<std::os::unix::net::UnixStream> {
        let s = agent.open(Some(exec_id.to_owned()), kind)?;
        s.set_read_timeout(Some(GUEST_IDLE))
            .and_then(|_| s.set_write_timeout(Some(GUEST_IDLE)))
            .map_err(Error::io("the guest's archive helper"))?;
        Ok(s)
    };
    let writer = match input {
        Some(data) => {
            let mut s = open(StreamKind::Stdin)?;
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = s.write_all(&data);
                let _ = s.shutdown(std::net::Shutdown::Write);
            }))
        }
        None => None,
    };
    let err_stream = open(StreamKind::Stderr)?;
    let stderr = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_stream.take(GUEST_STDERR_MAX).read_to_end(&mut b);
        b
    });
    let mut stdout = Vec::new();
    open(StreamKind::Stdout)?
        .take(GUEST_OUTPUT_MAX + 1)
        .read_to_end(&mut stdout)
        .map_err(|e| {
            Error::Sandbox(format!(
                "reading from the microVM's archive helper: {e} (nothing for {}s, or the guest went away)",
                GUEST_IDLE.as_secs()
            ))
        })?;
    if stdout.len() as u64 > GUEST_OUTPUT_MAX {
        return Err(Error::InvalidParameter(format!(
            "the microVM's archive is larger than {} GiB: copy a smaller path",
            GUEST_OUTPUT_MAX >> 30
        )));
    }
    let stderr = stderr.join().unwrap_or_default();
    if let Some(w) = writer {
        let _ = w.join();
    }
    // Its status: the helper's streams ended, so a guest that answers keeps it short.
    let (tx, rx) = std::sync::mpsc::channel();
    let (a, id) = (agent.clone(), exec_id.to_owned());
    std::thread::spawn(move || {
        let _ = tx.send(a.wait(Some(id)));
    });
    let code = rx.recv_timeout(GUEST_IDLE).map_err(|_| {
        Error::Sandbox(format!(
            "the microVM's archive helper did not report its status within {}s",
            GUEST_IDLE.as_secs()
        ))
    })??;
    Ok(Out {
        code: code as i32,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
    })
}
