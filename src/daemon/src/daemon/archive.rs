//! File transfer with a container's filesystem: the archive API (`docker cp` both ways,
//! also for stopped containers), `export` and `changes` (`docker diff`). The reading and
//! writing is done by berthd's archive helper, chrooted into the container's root
//! ([`crate::archive_helper`]). Process isolation: a running container is entered in
//! (a private copy of) its own mounts, without the kernel's filesystems; a stopped one's
//! overlay and volumes are mounted for the helper alone (read-only for reads). A
//! microVM's filesystem lives in its guest: 501 until the agent serves it.

use super::{Ctr, Daemon, Record};
use crate::errors::{Error, Result};
use crate::models::docker;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the helper works, and the empty directory made for it (removed when dropped;
/// the helper's mounts there live in its own mount namespace and end with it).
struct View {
    root: crate::archive_helper::Root,
    made: Option<PathBuf>,
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(d) = &self.made {
            let _ = std::fs::remove_dir(d);
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
            return Err(Error::NotImplemented(
                "copying files to and from a microVM container (its filesystem lives in its guest; --isolation process has it)".into(),
            ));
        };
        if rec.state.running() && (live || write) {
            return Ok(View {
                root: crate::archive_helper::Root {
                    live_pid: Some(rec.state.pid() as i32),
                    ..Default::default()
                },
                made: None,
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
            rec.mounts
                .iter()
                .map(|m| {
                    let src = match m.kind {
                        super::volumes::MountKind::Bind => m.source.clone(),
                        super::volumes::MountKind::Volume => {
                            self.volumes.mountpoint(&m.name).display().to_string()
                        }
                    };
                    (src, m.destination.clone(), !m.rw)
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(View {
            root: crate::archive_helper::Root {
                live_pid: None,
                dir: target.display().to_string(),
                overlay: Some(overlay),
                read_only: !writable,
                binds,
            },
            made: Some(target),
        })
    }

    fn helper(&self, v: &View, args: &[&str], input: Option<&[u8]>) -> Result<Out> {
        let root = serde_json::to_string(&v.root)
            .map_err(|e| Error::Sandbox(format!("the archive helper's root: {e}")))?;
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
        let v = self.fs_view(&rec, true, true)?;
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
        let v = View {
            root: crate::archive_helper::Root {
                dir: dir.display().to_string(),
                ..Default::default()
            },
            made: None,
        };
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
        let Some(upper) = self.sandbox(&rec).writable_layer(&self.dir(&rec.id)) else {
            return Err(Error::NotImplemented(
                "changes of a microVM container (its writable layer lives in its guest)".into(),
            ));
        };
        let img = self.images.resolve(&rec.image_id)?;
        let image_root = self.images.rootfs(&img)?;
        let mut out = Vec::new();
        if upper.is_dir() {
            walk_changes(&upper, &image_root, Path::new("/"), &mut out);
        }
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

fn walk_changes(upper: &Path, lower: &Path, rel: &Path, out: &mut Vec<docker::FilesystemChange>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(rd) = std::fs::read_dir(upper.join(rel.strip_prefix("/").unwrap_or(rel))) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let path = rel.join(&name);
        let Ok(m) = e.metadata() else { continue };
        let shown = path.display().to_string();
        // A whiteout (0/0 character device): deleted from the image.
        if m.file_type().is_char_device() && m.rdev() == 0 {
            out.push(docker::FilesystemChange {
                path: shown,
                kind: docker::ChangeType::_2,
            });
            continue;
        }
        let in_lower =
            std::fs::symlink_metadata(lower.join(path.strip_prefix("/").unwrap_or(&path))).is_ok();
        out.push(docker::FilesystemChange {
            path: shown,
            kind: if in_lower {
                docker::ChangeType::_0
            } else {
                docker::ChangeType::_1
            },
        });
        if m.is_dir() {
            walk_changes(upper, lower, &path, out);
        }
    }
}
