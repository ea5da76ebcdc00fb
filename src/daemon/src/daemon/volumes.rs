//! A container's volumes and bind mounts over its life: planned at create (`-v`,
//! `--mount type=bind|volume`, `Config.Volumes` and the image's `VOLUME`s,
//! `--volumes-from`; named volumes created on first use, anonymous ones made), bound into
//! the container at each start (a volume still empty gets the image's content at that
//! path first, as Docker copies it up), and released at remove (anonymous volumes go
//! with `rm -v` and `--rm`). The volume objects are in [`crate::volume`].

use super::{Daemon, Record};
use crate::errors::{Error, Result};
use crate::models::docker;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// What a mount brings in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named or anonymous volume.
    Volume,
}

/// One bind mount or volume of a container, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRec {
    /// Bind or volume.
    pub kind: MountKind,
    /// The host path (a bind's source; a volume's is its Mountpoint, found at start).
    #[serde(default)]
    pub source: String,
    /// The volume's name ("" for a bind).
    #[serde(default)]
    pub name: String,
    /// Where it appears in the container.
    pub destination: String,
    /// Writable.
    pub rw: bool,
    /// The mode as given (`-v`'s third field), for inspect.
    #[serde(default)]
    pub mode: String,
    /// A volume gets the image's content at `destination` while it is empty (not
    /// `nocopy`).
    #[serde(default)]
    pub copy_up: bool,
}

impl MountRec {
    fn volume(name: String, destination: String, rw: bool, mode: &str, copy_up: bool) -> Self {
        MountRec {
            kind: MountKind::Volume,
            source: String::new(),
            name,
            destination,
            rw,
            mode: mode.into(),
            copy_up,
        }
    }

    fn bind(source: &Path, destination: String, rw: bool, mode: &str) -> Self {
        MountRec {
            kind: MountKind::Bind,
            source: source.display().to_string(),
            name: String::new(),
            destination,
            rw,
            mode: mode.into(),
            copy_up: false,
        }
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::InvalidParameter(m.into())
}

/// A container path: absolute, not "/", no "..".
fn check_destination(d: &str) -> Result<String> {
    let p = Path::new(d);
    if !p.is_absolute() {
        return Err(bad(format!(
            "invalid mount config: mount path must be absolute: {d}"
        )));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!("invalid mount path: {d:?} contains \"..\"")));
    }
    let clean: PathBuf = p.components().collect();
    if clean == Path::new("/") {
        return Err(bad("invalid specification: destination can't be '/'"));
    }
    Ok(clean.display().to_string())
}

/// A host path: absolute, no "..".
fn check_source(s: &str) -> Result<PathBuf> {
    let p = Path::new(s);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!("invalid mount source: {s:?} contains \"..\"")));
    }
    Ok(p.components().collect())
}

/// The most volumes and binds a microVM container takes: each is a virtio-fs device, and
/// berth-vmm has 19 device slots (the root disk, the agent's image, vsock, rng, the
/// balloon and up to four network interfaces take the others).
const MAX_VM_SHARES: usize = 10;

/// Where a microVM's agent mounts its `i`th shared directory.
fn share_path(i: usize) -> String {
    format!("/run/berth/fs/{i}")
}

/// The parts of a create body volumes read.
pub struct VolumeRequest<'a> {
    /// HostConfig.
    pub hc: &'a docker::HostConfig,
    /// Config.Volumes and the image's VOLUMEs.
    pub anonymous: Vec<String>,
}

impl Daemon {
    /// Plans a new container's mounts; named volumes it names are created, anonymous ones
    /// made. On error, nothing it made is left.
    pub fn mounts_plan(
        &self,
        isolation: crate::sandbox::Isolation,
        r: &VolumeRequest,
    ) -> Result<Vec<MountRec>> {
        let shared = self.sandboxes.get(isolation).shares();
        let asks = !r.anonymous.is_empty()
            || r.hc.binds.as_ref().is_some_and(|b| !b.is_empty())
            || r.hc.mounts.as_ref().is_some_and(|m| {
                m.iter()
                    .any(|x| !matches!(x.typ, Some(docker::MountTypeEnum::TMPFS)))
            })
            || r.hc.volumes_from.as_ref().is_some_and(|v| !v.is_empty());
        if asks && shared && self.opts.virtiofsd.is_none() {
            return Err(Error::NotImplemented(
                "volumes and bind mounts for microVM containers need virtiofsd, which this host lacks (install it, or start berthd with --virtiofsd PATH; --isolation process has them without)".into(),
            ));
        }
        let mut made: Vec<String> = Vec::new();
        let out = self.mounts_plan_inner(r, &mut made);
        let out = out.and_then(|m| {
            if shared && m.len() > MAX_VM_SHARES {
                self.release_volumes(&m);
                return Err(Error::NotImplemented(format!(
                    "{} volumes and bind mounts for a microVM container: at most {MAX_VM_SHARES} (each is a device of its own)",
                    m.len()
                )));
            }
            if shared {
                if let Some(f) = m
                    .iter()
                    .find(|x| x.kind == MountKind::Bind && !Path::new(&x.source).is_dir())
                {
                    self.release_volumes(&m);
                    return Err(Error::NotImplemented(format!(
                        "bind mount of the file {} into a microVM container: a microVM is given directories only (bind its directory, or use --isolation process)",
                        f.source
                    )));
                }
            }
            Ok(m)
        });
        if out.is_err() {
            for v in made {
                let _ = self.volumes.remove(&v);
            }
        }
        out
    }

    fn mounts_plan_inner(
        &self,
        r: &VolumeRequest,
        made: &mut Vec<String>,
    ) -> Result<Vec<MountRec>> {
        let held = std::cell::RefCell::new(Vec::<String>::new());
        let out = self.mounts_plan_body(r, made, &held);
        if out.is_err() {
            self.volumes.release(&held.borrow());
        }
        out
    }

    fn mounts_plan_body(
        &self,
        r: &VolumeRequest,
        made: &mut Vec<String>,
        held: &std::cell::RefCell<Vec<String>>,
    ) -> Result<Vec<MountRec>> {
        let hc = r.hc;
        let mut out: Vec<MountRec> = Vec::new();
        let volume = |name: Option<&str>,
                      labels: BTreeMap<String, String>,
                      made: &mut Vec<String>|
         -> Result<String> {
            let (v, new) = self.volumes.create(name, labels, &BTreeMap::new())?;
            // Held until the container's record exists: not pruned under the create.
            self.volumes.hold(std::slice::from_ref(&v.name));
            held.borrow_mut().push(v.name.clone());
            if new {
                made.push(v.name.clone());
                self.event("volume", "create", &v.name, &[("driver", v.driver.clone())]);
            }
            Ok(v.name)
        };
        for b in hc.binds.iter().flatten() {
            let parts: Vec<&str> = b.split(':').collect();
            let (src, dst, mode) = match parts.as_slice() {
                [d] => ("", *d, ""),
                [s, d] => (*s, *d, ""),
                [s, d, m] => (*s, *d, *m),
                _ => return Err(bad(format!("invalid volume specification: '{b}'"))),
            };
            let destination = check_destination(dst)
                .map_err(|e| bad(format!("invalid volume specification: '{b}': {e}")))?;
            let mut rw = true;
            let mut nocopy = false;
            for o in mode.split(',').filter(|o| !o.is_empty()) {
                match o {
                    "ro" => rw = false,
                    "rw" => rw = true,
                    // SELinux relabelling: a no-op on a host without SELinux, as dockerd.
                    "z" | "Z" => {}
                    "nocopy" => nocopy = true,
                    "private" | "rprivate" => {}
                    "shared" | "rshared" | "slave" | "rslave" => {
                        return Err(Error::NotImplemented(format!(
                            "bind propagation {o:?} (berth's binds are rprivate)"
                        )))
                    }
                    _ => return Err(bad(format!("invalid mode: {o}"))),
                }
            }
            if !src.starts_with('/') {
                // A named volume, or an anonymous one for `-v /path`.
                let name = volume(Some(src).filter(|s| !s.is_empty()), BTreeMap::new(), made)?;
                out.push(MountRec::volume(name, destination, rw, mode, !nocopy));
            } else {
                if nocopy {
                    return Err(bad(format!("invalid mode: nocopy (for a bind mount: {b})")));
                }
                let source = check_source(src)?;
                // `-v` creates a missing host directory, as Docker.
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(Error::io(format!(
                        "creating bind source {}",
                        source.display()
                    )))?;
                }
                out.push(MountRec::bind(&source, destination, rw, mode));
            }
        }
        for m in hc.mounts.iter().flatten() {
            let typ = m.typ.unwrap_or(docker::MountTypeEnum::EMPTY);
            let kind = match typ {
                docker::MountTypeEnum::BIND => MountKind::Bind,
                docker::MountTypeEnum::VOLUME => MountKind::Volume,
                // tmpfs mounts are the confinement's.
                docker::MountTypeEnum::TMPFS => continue,
                other => {
                    return Err(Error::NotImplemented(format!(
                        "HostConfig.Mounts of type {:?}",
                        other.to_string()
                    )))
                }
            };
            let target = m.target.clone().unwrap_or_default();
            let destination = check_destination(&target)?;
            let rw = !m.read_only.unwrap_or(false);
            if m.consistency
                .as_deref()
                .is_some_and(|c| !matches!(c, "" | "default" | "consistent"))
            {
                return Err(Error::NotImplemented(format!(
                    "mount consistency {:?}",
                    m.consistency.clone().unwrap_or_default()
                )));
            }
            if m.tmpfs_options.is_some() {
                return Err(bad(format!(
                    "invalid mount config for type \"{}\": TmpfsOptions given for a {} mount",
                    typ, typ
                )));
            }
            let src = m.source.clone().unwrap_or_default();
            match kind {
                MountKind::Bind => {
                    if m.volume_options.is_some() {
                        return Err(bad(
                            "invalid mount config for type \"bind\": VolumeOptions given for a bind mount",
                        ));
                    }
                    if let Some(o) = &m.bind_options {
                        if o.propagation.is_some_and(|p| {
                            !matches!(
                                p,
                                docker::MountBindOptionsPropagationEnum::EMPTY
                                    | docker::MountBindOptionsPropagationEnum::PRIVATE
                                    | docker::MountBindOptionsPropagationEnum::RPRIVATE
                            )
                        }) {
                            return Err(Error::NotImplemented(
                                "bind-propagation other than private/rprivate (berth's binds are rprivate)".into(),
                            ));
                        }
                        if o.non_recursive.unwrap_or(false)
                            || o.create_mountpoint.unwrap_or(false)
                            || o.read_only_non_recursive.unwrap_or(false)
                            || o.read_only_force_recursive.unwrap_or(false)
                        {
                            return Err(Error::NotImplemented(
                                "bind options NonRecursive, CreateMountpoint, ReadOnlyNonRecursive and ReadOnlyForceRecursive".into(),
                            ));
                        }
                    }
                    if !src.starts_with('/') {
                        return Err(bad(format!(
                            "invalid mount config for type \"bind\": invalid mount path: '{src}' mount path must be absolute"
                        )));
                    }
                    let source = check_source(&src)?;
                    if !source.exists() {
                        return Err(bad(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            source.display()
                        )));
                    }
                    out.push(MountRec::bind(&source, destination, rw, ""));
                }
                MountKind::Volume => {
                    if m.bind_options.is_some() {
                        return Err(bad(
                            "invalid mount config for type \"volume\": BindOptions given for a volume mount",
                        ));
                    }
                    let o = m.volume_options.clone().unwrap_or_default();
                    if let Some(dc) = &o.driver_config {
                        if dc
                            .name
                            .as_deref()
                            .is_some_and(|n| !n.is_empty() && n != "local")
                            || dc.options.as_ref().is_some_and(|x| !x.is_empty())
                        {
                            return Err(Error::NotImplemented(
                                "volume drivers and driver options (berth has the local driver, without options)".into(),
                            ));
                        }
                    }
                    let labels: BTreeMap<String, String> =
                        o.labels.clone().unwrap_or_default().into_iter().collect();
                    let name = volume(Some(src.as_str()).filter(|s| !s.is_empty()), labels, made)?;
                    out.push(MountRec::volume(
                        name,
                        destination,
                        rw,
                        "",
                        !o.no_copy.unwrap_or(false),
                    ));
                }
            }
        }
        for spec in hc.volumes_from.iter().flatten() {
            let (who, mode) = match spec.rsplit_once(':') {
                Some((w, m)) if matches!(m, "ro" | "rw") => (w, Some(m)),
                _ => (spec.as_str(), None),
            };
            let other = self.find(who)?.record();
            for m in &other.mounts {
                let mut m = m.clone();
                if let Some(mode) = mode {
                    m.rw = mode == "rw";
                }
                m.copy_up = false;
                out.push(m);
            }
        }
        // Anonymous volumes for the image's and the body's VOLUMEs not mounted otherwise.
        let mut anon = r.anonymous.clone();
        anon.sort();
        anon.dedup();
        for d in anon {
            let destination = check_destination(&d)?;
            if out.iter().any(|m| m.destination == destination) {
                continue;
            }
            let name = volume(None, BTreeMap::new(), made)?;
            out.push(MountRec::volume(name, destination, true, "", true));
        }
        let mut seen = std::collections::HashSet::new();
        for m in &out {
            if !seen.insert(m.destination.clone()) {
                return Err(bad(format!("Duplicate mount point: {}", m.destination)));
            }
        }
        Ok(out)
    }

    /// Adds a container's binds and volumes to its spec, copying the image's content
    /// into volumes that are still empty. `image_root`: the image's root on the host.
    ///
    /// `shared`: the sandbox has the mounts as shared directories ([`Daemon::shares`]),
    /// which its agent mounted at their guest paths; those are the sources then.
    pub fn mounts_spec(
        &self,
        rec: &Record,
        image_root: Option<&Path>,
        shared: bool,
        oci: &mut oci_spec::runtime::Spec,
    ) -> Result<()> {
        use oci_spec::runtime::MountBuilder;
        if rec.mounts.is_empty() {
            return Ok(());
        }
        let mut mounts = oci.mounts().clone().unwrap_or_default();
        // Shallow first: `/a` is mounted before `/a/b`, never over it (as Docker).
        let mut ordered: Vec<(usize, &MountRec)> = rec.mounts.iter().enumerate().collect();
        ordered.sort_by_key(|(_, m)| Path::new(&m.destination).components().count());
        for (i, m) in ordered {
            let source = match m.kind {
                MountKind::Bind => PathBuf::from(&m.source),
                MountKind::Volume => {
                    self.volumes.get(&m.name)?;
                    let dir = self.volumes.mountpoint(&m.name);
                    if let (true, Some(root)) = (m.copy_up, image_root) {
                        // One copy-up at a time: two containers starting on one empty
                        // volume seed it once.
                        let _g = COPY_UP.lock().unwrap_or_else(|e| e.into_inner());
                        if crate::volume::is_empty_dir(&dir) {
                            if let Some(tar) = image_tar(root, &m.destination)? {
                                self.unpack_into(&dir, &tar)?;
                            }
                        }
                    }
                    dir
                }
            };
            if !source.exists() {
                return Err(bad(format!(
                    "bind source path does not exist: {}",
                    source.display()
                )));
            }
            let source = if shared {
                PathBuf::from(share_path(i))
            } else {
                source
            };
            let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
            if !m.rw {
                opts.push("ro".into());
            }
            mounts.retain(|x| x.destination() != Path::new(&m.destination));
            mounts.push(
                MountBuilder::default()
                    .destination(m.destination.clone())
                    .typ("bind")
                    .source(source)
                    .options(opts)
                    .build()
                    .map_err(|e| Error::Sandbox(format!("a mount: {e}")))?,
            );
        }
        oci.set_mounts(Some(mounts));
        Ok(())
    }

    /// A mount's host directory: a bind's source, a volume's `_data`.
    pub(super) fn mount_source(&self, m: &MountRec) -> PathBuf {
        match m.kind {
            MountKind::Bind => PathBuf::from(&m.source),
            MountKind::Volume => self.volumes.mountpoint(&m.name),
        }
    }

    /// A microVM's shared directories: one per mount, in the record's order, each its
    /// host directory (a volume's `_data`, a bind's source) with the mount's `ro`.
    pub fn shares(&self, rec: &Record) -> Result<Vec<crate::sandbox::Share>> {
        rec.mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if m.kind == MountKind::Volume {
                    self.volumes.get(&m.name)?;
                }
                let source = self.mount_source(m);
                if !source.is_dir() {
                    return Err(Error::NotImplemented(format!(
                        "{}: a microVM container is given directories only (a volume or a bind of a directory); {} is not one",
                        m.destination,
                        source.display()
                    )));
                }
                Ok(crate::sandbox::Share {
                    source,
                    guest_path: share_path(i),
                    read_only: !m.rw,
                })
            })
            .collect()
    }

    /// Lets go of the volumes a create held ([`Daemon::mounts_plan`]), once its record
    /// exists or the create failed.
    pub fn release_volumes(&self, mounts: &[MountRec]) {
        let names: Vec<String> = mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| m.name.clone())
            .collect();
        self.volumes.release(&names);
    }

    /// Containers using volume `name` (a container being created counts, before its
    /// record exists).
    pub fn volume_in_use(&self, name: &str) -> bool {
        self.volumes.is_held(name) || !self.volume_users(name).is_empty()
    }

    /// Containers using volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<Record> {
        self.all_records()
            .into_iter()
            .filter(|r| {
                r.mounts
                    .iter()
                    .any(|m| m.kind == MountKind::Volume && m.name == name)
            })
            .collect()
    }

    /// Removes a container's anonymous volumes that no other container uses (`rm -v`,
    /// `--rm`).
    pub fn remove_anonymous_volumes(&self, rec: &Record) {
        for m in rec.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let anonymous = self.volumes.get(&m.name).is_ok_and(|v| v.anonymous);
            let others = self.volume_users(&m.name).iter().any(|r| r.id != rec.id);
            if anonymous && !others {
                match self.volumes.remove(&m.name) {
                    Ok(()) => {
                        self.event("volume", "destroy", &m.name, &[("driver", "local".into())])
                    }
                    Err(e) => super::log_failure("removing an anonymous volume", &e),
                }
            }
        }
    }

    /// `DELETE /volumes/{name}`: refused while a container uses it (409), unless
    /// `force`... which Docker also refuses for a volume in use.
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        let v = match self.volumes.get(name) {
            Ok(v) => v,
            Err(_) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        let users = self.volume_users(&v.name);
        if !users.is_empty() || self.volumes.is_held(&v.name) {
            return Err(Error::Conflict(format!(
                "remove {}: volume is in use - [{}]",
                v.name,
                users
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.volumes.remove(&v.name)?;
        self.event("volume", "destroy", &v.name, &[("driver", v.driver)]);
        Ok(())
    }

    /// A volume as the API shows it.
    pub fn volume_view(&self, v: &crate::volume::VolumeRec, usage: bool) -> docker::Volume {
        docker::Volume {
            name: v.name.clone(),
            driver: v.driver.clone(),
            mountpoint: self.volumes.mountpoint(&v.name).display().to_string(),
            created_at: Some(v.created.clone()),
            status: None,
            labels: v.labels.clone().into_iter().collect(),
            scope: Some(docker::VolumeScopeEnum::LOCAL),
            cluster_volume: None,
            options: Default::default(),
            usage_data: usage.then(|| docker::VolumeUsageData {
                size: self.volumes.size(&v.name),
                ref_count: self.volume_users(&v.name).len() as i64,
            }),
        }
    }

    /// `Mounts` in a container's inspect and ps.
    pub fn mount_points(&self, rec: &Record) -> Vec<docker::MountPoint> {
        rec.mounts
            .iter()
            .map(|m| docker::MountPoint {
                typ: Some(match m.kind {
                    MountKind::Bind => docker::MountPointTypeEnum::BIND,
                    MountKind::Volume => docker::MountPointTypeEnum::VOLUME,
                }),
                name: (m.kind == MountKind::Volume).then(|| m.name.clone()),
                source: Some(match m.kind {
                    MountKind::Bind => m.source.clone(),
                    MountKind::Volume => self.mount_source(m).display().to_string(),
                }),
                destination: Some(m.destination.clone()),
                driver: (m.kind == MountKind::Volume).then(|| "local".into()),
                mode: Some(m.mode.clone()),
                rw: Some(m.rw),
                propagation: Some(match m.kind {
                    MountKind::Bind => "rprivate".into(),
                    MountKind::Volume => String::new(),
                }),
            })
            .collect()
    }
}

/// Serialises copy-ups.
static COPY_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A tar of the image's content at `dest` (under `root`, berth's own extracted image),
/// None if there is nothing there: a symlink on the way to `dest` means nothing, and
/// no symlink inside is followed. The volume gets it through the archive helper,
/// chrooted into the volume, so that whatever a container left there can't redirect a
/// write to the host.
fn image_tar(root: &Path, dest: &str) -> Result<Option<Vec<u8>>> {
    let mut p = root.to_path_buf();
    for c in Path::new(dest).components() {
        if let Component::Normal(n) = c {
            p.push(n);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => return Ok(None),
                Ok(_) => {}
                Err(_) => return Ok(None),
            }
        }
    }
    if !p.is_dir() {
        return Ok(None);
    }
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b.append_dir_all(".", &p)
        .and_then(|_| b.into_inner())
        .map(Some)
        .map_err(Error::io(format!(
            "reading the image's {dest} for its volume"
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_absolute_clean_and_not_root() {
        assert_eq!(check_destination("/data/").unwrap(), "/data");
        assert_eq!(check_destination("/a//b").unwrap(), "/a/b");
        assert!(check_destination("data").is_err());
        assert!(check_destination("/").is_err());
        assert!(check_destination("/a/../etc").is_err());
        assert!(check_source("/a/../etc").is_err());
    }

    #[test]
    fn the_images_content_is_archived_without_following_symlinks() {
        let base = std::env::temp_dir().join(format!("berth-copyup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::write(root.join("data/sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("data/link")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        let tar = image_tar(&root, "/data").unwrap().unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type().is_symlink(),
            ));
        }
        assert!(names.contains(&("sub/f".to_string(), false)), "{names:?}");
        assert!(
            names.contains(&("link".to_string(), true)),
            "a symlink stays one"
        );
        assert!(
            image_tar(&root, "/evil").unwrap().is_none(),
            "not followed out of the image"
        );
        assert!(image_tar(&root, "/none").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&base);
    }
}
