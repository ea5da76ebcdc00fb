//! Named volumes, Docker's `local` driver: a directory each, `<data-root>/volumes/<name>/_data`
//! (its Mountpoint), with the volume's record beside it in `<name>/volume.json`, written
//! atomically. A volume outlives its containers; which containers use one is read from
//! their records (the daemon core refuses to remove a volume in use).
//!
//! Anonymous volumes (an image's `VOLUME`, `-v /path`) are named with 64 hex digits and
//! marked so: `rm -v` and `--rm` remove them with their container.

use crate::errors::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One volume, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRec {
    /// Its name.
    pub name: String,
    /// Always "local".
    pub driver: String,
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Made for one container (an image's VOLUME, `-v /path`), removed with it by `rm -v`.
    #[serde(default)]
    pub anonymous: bool,
    /// The tenant that made it (None: the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The volume store.
pub struct Volumes {
    dir: PathBuf,
    vols: Mutex<BTreeMap<String, VolumeRec>>,
    /// Volumes a container being created will use, before its record exists (counted).
    held: Mutex<BTreeMap<String, usize>>,
}

/// The label Docker puts on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// Checks a volume name as Docker's local driver does.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidParameter(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )))
    }
}

impl Volumes {
    /// Opens (creating) the store under `dir`.
    pub fn open(dir: PathBuf) -> Result<Volumes> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("{}", dir.display())))?;
        // Traversable by root only: a setuid file a container leaves in a volume is not
        // reachable by the host's users (as dockerd's 0701).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o701))
            .map_err(Error::io(format!("{}", dir.display())))?;
        let mut vols = BTreeMap::new();
        for e in std::fs::read_dir(&dir)
            .map_err(Error::io(format!("{}", dir.display())))?
            .flatten()
        {
            let p = e.path().join("volume.json");
            let Ok(text) = std::fs::read(&p) else {
                // A creation cut short (no record): not a volume.
                continue;
            };
            match serde_json::from_slice::<VolumeRec>(&text) {
                Ok(v) => {
                    vols.insert(v.name.clone(), v);
                }
                Err(e) => crate::log(
                    "warn",
                    "skipping an unreadable volume record",
                    &[
                        ("path", &p.display().to_string()),
                        ("error", &e.to_string()),
                    ],
                ),
            }
        }
        Ok(Volumes {
            dir,
            vols: Mutex::new(vols),
            held: Mutex::new(BTreeMap::new()),
        })
    }

    /// Marks volumes as about to be used (a create in progress); `release` undoes it.
    pub fn hold(&self, names: &[String]) {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for n in names {
            *h.entry(n.clone()).or_default() += 1;
        }
    }

    /// Undoes [`Volumes::hold`].
    pub fn release(&self, names: &[String]) {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for n in names {
            if let Some(c) = h.get_mut(n) {
                *c -= 1;
                if *c == 0 {
                    h.remove(n);
                }
            }
        }
    }

    /// Whether a create in progress holds the volume.
    pub fn is_held(&self, name: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// A volume's directory, what containers mount (its Mountpoint).
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Creates a volume; an existing one of that name is returned as it is (as Docker).
    /// `name` None: an anonymous volume.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        opts: &BTreeMap<String, String>,
    ) -> Result<(VolumeRec, bool)> {
        if let Some((k, _)) = opts.iter().next() {
            return Err(Error::NotImplemented(format!(
                "the local volume driver's option {k:?} (berth's volumes are directories; type, device and o are not built)"
            )));
        }
        let (name, anonymous) = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                check_name(n)?;
                (n.to_owned(), false)
            }
            None => (crate::daemon::new_id(), true),
        };
        let mut vols = self.vols.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = vols.get(&name) {
            if !crate::tenant::sees(&v.tenant) {
                // Names are host-wide; another tenant's volume is not shared.
                return Err(Error::Forbidden(format!(
                    "the volume name {name:?} is taken; choose another"
                )));
            }
            return Ok((v.clone(), false));
        }
        let mut labels = labels;
        if anonymous {
            labels.insert(ANONYMOUS_LABEL.into(), String::new());
        }
        let v = VolumeRec {
            name: name.clone(),
            driver: "local".into(),
            labels,
            created: crate::daemon::now_rfc3339(),
            anonymous,
            tenant: crate::tenant::current(),
        };
        let data = self.mountpoint(&name);
        std::fs::create_dir_all(&data).map_err(Error::io(format!("{}", data.display())))?;
        if let Err(e) = self.save(&v) {
            let _ = std::fs::remove_dir_all(self.dir.join(&name));
            return Err(e);
        }
        vols.insert(name, v.clone());
        Ok((v, true))
    }

    fn save(&self, v: &VolumeRec) -> Result<()> {
        crate::persist::write_json(
            &self.dir.join(&v.name).join("volume.json"),
            v,
            &format!("saving volume {}", v.name),
        )
    }

    /// A volume by name (a tenant gets only its own).
    pub fn get(&self, name: &str) -> Result<VolumeRec> {
        self.vols
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .filter(|v| crate::tenant::sees(&v.tenant))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("get {name}: no such volume")))
    }

    /// Every volume the caller sees, by name.
    pub fn all(&self) -> Vec<VolumeRec> {
        self.vols
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|v| crate::tenant::sees(&v.tenant))
            .cloned()
            .collect()
    }

    /// Removes a volume and its data (the caller checked that no container uses it).
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut vols = self.vols.lock().unwrap_or_else(|e| e.into_inner());
        if !vols
            .get(name)
            .is_some_and(|v| crate::tenant::sees(&v.tenant))
        {
            return Err(Error::NotFound(format!("get {name}: no such volume")));
        }
        let dir = self.dir.join(name);
        // The record first: a volume whose data could not all be removed is gone as an
        // object, and what is left is reported, not half-listed.
        let rec = dir.join("volume.json");
        match std::fs::remove_file(&rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("{}", rec.display()))(e)),
        }
        vols.remove(name);
        drop(vols);
        std::fs::remove_dir_all(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(Error::io(format!("removing {}", dir.display())))
    }

    /// The bytes a volume's files take.
    pub fn size(&self, name: &str) -> i64 {
        du(&self.mountpoint(name))
    }
}

/// Bytes under `p` (files' sizes; symlinks not followed).
fn du(p: &Path) -> i64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len() as i64;
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

/// Whether a volume's directory holds nothing yet (copy-up happens then).
pub fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_once_listed_persisted_and_removed() {
        let dir = std::env::temp_dir().join(format!("berth-vol-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let v = Volumes::open(dir.clone()).unwrap();
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let (rec, new) = v
            .create(Some("data"), labels.clone(), &BTreeMap::new())
            .unwrap();
        assert!(new && rec.labels == labels && !rec.anonymous);
        std::fs::write(v.mountpoint("data").join("f"), "12345").unwrap();
        let (again, new) = v
            .create(Some("data"), BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        assert!(
            !new && again == rec,
            "an existing volume is returned as it is"
        );
        let (anon, _) = v.create(None, BTreeMap::new(), &BTreeMap::new()).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        assert!(anon.labels.contains_key(ANONYMOUS_LABEL));
        // Reopened: the same volumes.
        let v2 = Volumes::open(dir.clone()).unwrap();
        assert_eq!(v2.all().len(), 2);
        assert_eq!(v2.get("data").unwrap(), rec);
        assert_eq!(v2.size("data"), 5);
        v2.remove("data").unwrap();
        assert!(!dir.join("data").exists());
        assert!(matches!(v2.get("data"), Err(Error::NotFound(_))));
        // Bad names and driver options are refused, and leave nothing.
        assert!(matches!(
            v2.create(Some("a/b"), BTreeMap::new(), &BTreeMap::new()),
            Err(Error::InvalidParameter(_))
        ));
        let opts: BTreeMap<String, String> = [("type".to_string(), "tmpfs".to_string())].into();
        assert!(matches!(
            v2.create(Some("t"), BTreeMap::new(), &opts),
            Err(Error::NotImplemented(_))
        ));
        assert_eq!(v2.all().len(), 1);
        // Held by two creates in progress, free after both let go.
        let n = vec![anon.name.clone()];
        v2.hold(&n);
        v2.hold(&n);
        v2.release(&n);
        assert!(v2.is_held(&anon.name));
        v2.release(&n);
        assert!(!v2.is_held(&anon.name));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_follow_the_local_drivers_rule() {
        for ok in ["data", "my_vol-1.2", "A1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "-x", ".x", "a/b", "a b", "/abs"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
