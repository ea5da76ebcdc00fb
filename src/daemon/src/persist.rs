//! Records on disk: written aside, synced, then renamed over the old one, so that a crash
//! leaves the old record or the new one, never half of one. Containers, networks and
//! volumes are all kept this way.

use crate::errors::{Error, Result};
use std::path::Path;

/// Writes `v` as pretty JSON to `p` atomically; `what` names it in errors.
pub fn write_json(p: &Path, v: &impl serde::Serialize, what: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = p.with_extension("tmp");
    let body = serde_json::to_vec_pretty(v).map_err(|e| Error::Io {
        what: what.to_owned(),
        err: std::io::Error::other(e),
    })?;
    // Records hold environments (passwords): root's alone.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io(what.to_owned()))?;
    // (a leftover .tmp keeps its mode through open)
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(Error::io(what.to_owned()))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(Error::io(what.to_owned()))?;
    std::fs::rename(&tmp, p).map_err(Error::io(what.to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("berth-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.json");
        super::write_json(&p, &serde_json::json!({"a": 1}), "r").unwrap();
        super::write_json(&p, &serde_json::json!({"a": 2}), "r").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["a"], 2);
        assert!(!dir.join("r.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
