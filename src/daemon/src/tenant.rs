//! Tenants: callers named by their TLS client certificate, each seeing and touching only
//! its own containers, images, volumes and networks, within its quotas (docs/tenants.md).
//!
//! The caller of the request being served is a task-local ([`scope`]); every lookup and
//! list of an object asks [`sees`] with the object's owner. Requests without one (the
//! Unix socket, berthd's own work such as restarts) act as the operator, who sees all.

use crate::errors::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

tokio::task_local! {
    static TENANT: Option<String>;
}

/// Runs `f` as `tenant`'s request (None: the operator).
pub async fn scope<F: std::future::Future>(tenant: Option<String>, f: F) -> F::Output {
    TENANT.scope(tenant, f).await
}

/// Runs blocking `f` as the current request's caller (for work moved to another thread).
pub fn carry<T>(f: impl FnOnce() -> T + Send) -> impl FnOnce() -> T + Send {
    let t = current();
    move || TENANT.sync_scope(t, f)
}

/// The tenant making the current request; None for the operator.
pub fn current() -> Option<String> {
    TENANT.try_with(|t| t.clone()).unwrap_or(None)
}

/// Whether the current caller sees an object owned by `owner` (None: the operator's).
pub fn sees(owner: &Option<String>) -> bool {
    match current() {
        None => true,
        Some(t) => owner.as_deref() == Some(t.as_str()),
    }
}

/// One tenant's quotas (config file `tenants`); None: no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Containers it may have (in any state).
    #[serde(default)]
    pub containers: Option<u64>,
    /// Memory its containers' limits may add up to (bytes, or "4g").
    #[serde(default, deserialize_with = "size")]
    pub memory: Option<u64>,
    /// vCPUs (`--cpus`) its containers may add up to.
    #[serde(default)]
    pub cpus: Option<f64>,
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| D::Error::custom("memory: a size in bytes")),
        serde_json::Value::String(s) => crate::daemon::create::parse_size(&s)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("memory {s:?}: a size such as 4g"))),
        other => Err(D::Error::custom(format!(
            "memory {other}: a size such as 4g"
        ))),
    }
}

/// The tenants berthd knows (config file key `tenants`: name to quotas).
pub type Tenants = BTreeMap<String, Quota>;

/// What a tenant may not ask of HostConfig: anything that reaches the host beyond its
/// own containers (host paths, host namespaces, devices, privileges). A 403 naming it.
pub fn check_host_config(h: &crate::models::docker::HostConfig) -> Result<()> {
    let Some(t) = current() else {
        return Ok(());
    };
    let refuse = |what: &str| {
        Err(Error::Forbidden(format!(
            "tenant {t}: {what} is for the operator only"
        )))
    };
    for b in h.binds.iter().flatten() {
        if b.starts_with('/') {
            return refuse("a bind mount of a host path (-v /PATH:...)");
        }
    }
    for m in h.mounts.iter().flatten() {
        let kind = m.typ.as_ref().map(|t| format!("{t:?}")).unwrap_or_default();
        if kind.eq_ignore_ascii_case("bind") || kind.eq_ignore_ascii_case("npipe") {
            return refuse("a bind mount (--mount type=bind)");
        }
    }
    if h.privileged.unwrap_or(false) {
        return refuse("--privileged");
    }
    if h.cap_add.as_ref().is_some_and(|c| !c.is_empty()) {
        return refuse("--cap-add");
    }
    if h.devices.as_ref().is_some_and(|d| !d.is_empty()) {
        return refuse("--device");
    }
    for o in h.security_opt.iter().flatten() {
        if o.contains("unconfined") || o.replace(':', "=") == "no-new-privileges=false" {
            return refuse(&format!("--security-opt {o}"));
        }
    }
    for (mode, flag) in [
        (&h.pid_mode, "--pid host"),
        (&h.ipc_mode, "--ipc host"),
        (&h.uts_mode, "--uts host"),
        (&h.userns_mode, "--userns host"),
        (&h.network_mode, "--network host"),
    ] {
        if mode.as_deref() == Some("host") {
            return refuse(flag);
        }
    }
    if h.cgroup_parent.as_ref().is_some_and(|c| !c.is_empty()) {
        return refuse("--cgroup-parent");
    }
    // Real-time scheduling escapes the CPU quota; locked memory and a raised priority
    // take from the host; an OOM-proof container makes the killer take someone else's.
    for u in h.ulimits.iter().flatten() {
        let n = u.name.as_deref().unwrap_or("");
        if matches!(n, "rtprio" | "rttime" | "nice" | "memlock") {
            return refuse(&format!("--ulimit {n}"));
        }
    }
    if h.oom_score_adj.is_some_and(|a| a < 0) {
        return refuse("a negative --oom-score-adj");
    }
    Ok(())
}

/// Which tenants have each image (by ID): those that pulled, imported, loaded, committed
/// or tagged it. Images are shared read-only by content, so one image may have several;
/// an image with none is the operator's. Kept in `<data-root>/image-owners.json`.
pub struct ImageOwners {
    path: std::path::PathBuf,
    map: std::sync::Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
}

impl ImageOwners {
    /// Reads the file (none yet: nobody owns anything).
    pub fn open(path: std::path::PathBuf) -> std::result::Result<ImageOwners, String> {
        let map = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(ImageOwners {
            path,
            map: std::sync::Mutex::new(map),
        })
    }

    /// Whether the caller sees image `id`: the operator all, a tenant those it has.
    pub fn sees(&self, id: &str) -> bool {
        match current() {
            None => true,
            Some(t) => self.has(&t, id),
        }
    }

    /// Whether `tenant` has image `id`.
    pub fn has(&self, tenant: &str, id: &str) -> bool {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|o| o.contains(tenant))
    }

    /// Whether anyone but `tenant` (another tenant, or the operator when nobody has it)
    /// would lose image `id` if it went.
    pub fn others(&self, tenant: &str, id: &str) -> bool {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_none_or(|o| o.iter().any(|x| x != tenant))
    }

    /// Gives `tenant` image `id`.
    pub fn add(&self, tenant: &str, id: &str) -> Result<()> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.entry(id.to_owned())
            .or_default()
            .insert(tenant.to_owned())
        {
            crate::persist::write_json(&self.path, &*m, "saving image owners")?;
        }
        Ok(())
    }

    /// Takes image `id` from `tenant`.
    pub fn remove(&self, tenant: &str, id: &str) -> Result<()> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some(o) = m.get_mut(id) else {
            return Ok(());
        };
        if o.remove(tenant) {
            if o.is_empty() {
                m.remove(id);
            }
            crate::persist::write_json(&self.path, &*m, "saving image owners")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_operator_sees_all_and_a_tenant_its_own() {
        assert!(sees(&Some("a".into())) && sees(&None));
        scope(Some("a".into()), async {
            assert!(sees(&Some("a".into())));
            assert!(!sees(&Some("b".into())) && !sees(&None));
            let f = carry(current);
            assert_eq!(std::thread::spawn(f).join().unwrap().as_deref(), Some("a"));
        })
        .await;
    }

    #[tokio::test]
    async fn a_tenant_reaches_nothing_of_the_host() {
        let hc = |f: &dyn Fn(&mut crate::models::docker::HostConfig)| {
            let mut h = crate::models::docker::HostConfig::default();
            f(&mut h);
            h
        };
        let bad = [
            hc(&|h| h.binds = Some(vec!["/etc:/x".into()])),
            hc(&|h| h.privileged = Some(true)),
            hc(&|h| h.cap_add = Some(vec!["SYS_ADMIN".into()])),
            hc(&|h| h.security_opt = Some(vec!["seccomp=unconfined".into()])),
            hc(&|h| h.pid_mode = Some("host".into())),
            hc(&|h| h.network_mode = Some("host".into())),
        ];
        for h in &bad {
            assert!(check_host_config(h).is_ok(), "the operator may");
        }
        scope(Some("a".into()), async {
            for h in &bad {
                assert!(matches!(check_host_config(h), Err(Error::Forbidden(_))));
            }
            let ok = hc(&|h| h.binds = Some(vec!["named:/x".into()]));
            assert!(check_host_config(&ok).is_ok());
        })
        .await;
    }
}
