//! `create`: a container record from a typed create body and the image's defaults.

use super::{new_id, now_rfc3339, parse_signal, Daemon, LogRotation, Record};
use crate::errors::{Error, Result};
use crate::models::{refuse_unapplied, CreateBody};
use crate::state::State;
use std::sync::Arc;

/// Docker's container name rule.
pub fn valid_name(n: &str) -> bool {
    let n = n.trim_start_matches('/');
    n.len() >= 2
        && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The error for a bad name.
pub fn invalid_name(n: &str) -> Error {
    Error::InvalidParameter(format!(
        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    ))
}

/// A size as Docker's json-file options take it: `1024`, `10k`, `1.5m`, `1g`, `2t` (binary).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b');
    let (num, mul) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mul as f64) as u64)
}

/// The rotation `--log-opt max-size` and `max-file` ask for.
fn log_rotation(c: Option<&std::collections::HashMap<String, String>>) -> Result<LogRotation> {
    let get = |k: &str| c.and_then(|c| c.get(k)).filter(|v| !v.is_empty());
    let max_size = match get("max-size") {
        Some(v) => parse_size(v).filter(|n| *n > 0).ok_or_else(|| {
            Error::InvalidParameter(format!("invalid value for log option max-size: {v:?}"))
        })?,
        None => 0,
    };
    let max_files = match get("max-file") {
        Some(v) => v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "invalid value for log option max-file: {v:?} (a number, at least 1)"
            ))
        })?,
        None => 1,
    };
    if max_files > 1 && max_size == 0 {
        return Err(Error::InvalidParameter(
            "max-file cannot be greater than 1 when max-size is not set".into(),
        ));
    }
    Ok(LogRotation {
        max_size,
        max_files,
    })
}

fn merge_env(into: &mut Vec<String>, more: &[String]) {
    for e in more {
        let k = e.split('=').next().unwrap_or("");
        into.retain(|x| x.split('=').next() != Some(k));
        into.push(e.clone());
    }
}

impl Daemon {
    fn random_name(&self) -> String {
        const A: &[&str] = &[
            "brave", "calm", "eager", "gentle", "jolly", "keen", "lucid", "merry", "nimble",
            "proud", "quiet", "swift", "tender", "vivid", "witty", "zealous",
        ];
        const B: &[&str] = &[
            "albattani",
            "babbage",
            "curie",
            "darwin",
            "euler",
            "fermat",
            "galileo",
            "hopper",
            "lovelace",
            "noether",
            "pascal",
            "ritchie",
            "shannon",
            "turing",
            "wozniak",
            "yalow",
        ];
        loop {
            let id = new_id();
            let b = id.as_bytes();
            let n = format!(
                "{}_{}",
                A[(b[0] as usize) % A.len()],
                B[(b[1] as usize) % B.len()]
            );
            if self.find_any(&n).is_err() {
                return n;
            }
        }
    }

    /// Checks that `n` is a valid name nobody else has.
    pub fn check_name(&self, n: &str) -> Result<String> {
        if !valid_name(n) {
            return Err(invalid_name(n));
        }
        let n = n.trim_start_matches('/').to_owned();
        if crate::tenant::current().is_some()
            && n.len() >= 12
            && n.bytes().all(|b| b.is_ascii_hexdigit())
        {
            // It would stand for another container's ID in the operator's commands.
            return Err(Error::InvalidParameter(format!(
                "Invalid container name ({n}): a tenant's container name may not look like an ID"
            )));
        }
        if let Ok(c) = self.find_any(&n) {
            if c.record().name == n && !crate::tenant::sees(&c.record().tenant) {
                // Names are host-wide; another tenant's container is not named.
                return Err(Error::Conflict(format!(
                    "Conflict. The container name \"/{n}\" is already in use. Choose another name."
                )));
            }
            if c.record().name == n {
                return Err(Error::Conflict(format!(
                    "Conflict. The container name \"/{n}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    c.id
                )));
            }
        }
        Ok(n)
    }

    /// `POST /containers/create`: validates everything first, so that a refused body
    /// leaves nothing behind; returns the new ID.
    pub fn create(self: &Arc<Self>, name: Option<&str>, body: CreateBody) -> Result<String> {
        refuse_unapplied(&body)?;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => self.check_name(n)?,
            None => self.random_name(),
        };
        let mut config = body.config;
        let host_config = body.host_config.unwrap_or_default();
        let image = config
            .image
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::InvalidParameter("no image specified (the Image field is required)".into())
            })?;
        let img = self.find_image(&image)?;
        let ic = self.images.runtime_config(&img)?;
        let isolation = crate::sandbox::choose(
            host_config.isolation.as_deref().unwrap_or(""),
            self.sandboxes.default,
        )?;
        let hc = &host_config.base;
        self.sandboxes.check_tenant_choice(isolation)?;

        let entrypoint = match &config.entrypoint {
            Some(e) => e.clone(),
            None => ic.entrypoint().clone().unwrap_or_default(),
        };
        let cmd = match &config.cmd {
            Some(c) => c.clone(),
            None if config.entrypoint.is_some() => vec![],
            None => ic.cmd().clone().unwrap_or_default(),
        };
        let entrypoint: Vec<String> = if entrypoint == [""] {
            vec![]
        } else {
            entrypoint
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd.clone()).collect();
        if args.is_empty() {
            return Err(Error::InvalidParameter("No command specified".into()));
        }
        let mut env: Vec<String> = ic.env().clone().unwrap_or_default();
        merge_env(&mut env, config.env.as_deref().unwrap_or(&[]));
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        let memory = hc.memory.unwrap_or(0);
        let nano_cpus = hc.nano_cpus.unwrap_or(0);
        crate::tenant::check_host_config(hc)?;
        // Held until the container is registered: two creates never both fit in one slot.
        let _quota = self.quota_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.check_quota(memory, nano_cpus)?;
        let pids_limit = hc.pids_limit.unwrap_or(0).max(0);
        if memory < 0 || (memory > 0 && memory < 6 << 20) {
            return Err(Error::InvalidParameter(
                "Minimum memory limit allowed is 6MB".into(),
            ));
        }
        if nano_cpus < 0 {
            return Err(Error::InvalidParameter(
                "Range of CPUs is from 0.01 to the number of CPUs".into(),
            ));
        }
        let stop_signal = config
            .stop_signal
            .clone()
            .or(ic.stop_signal().clone())
            .unwrap_or_else(|| "SIGTERM".into());
        parse_signal(&stop_signal)?;
        let stop_timeout = config.stop_timeout.unwrap_or(10);
        if stop_timeout < -1 {
            return Err(Error::InvalidParameter(format!(
                "invalid StopTimeout {stop_timeout}"
            )));
        }
        let console_size = match hc.console_size.as_deref() {
            Some([r, c]) if *r > 0 && *c > 0 => Some((
                u16::try_from(*r)
                    .map_err(|_| Error::InvalidParameter("ConsoleSize out of range".into()))?,
                u16::try_from(*c)
                    .map_err(|_| Error::InvalidParameter("ConsoleSize out of range".into()))?,
            )),
            Some([_, _]) | None => None,
            Some(_) => {
                return Err(Error::InvalidParameter(
                    "ConsoleSize must be [height, width]".into(),
                ))
            }
        };
        let log_rotation = log_rotation(hc.log_config.as_ref().and_then(|l| l.config.as_ref()))?;
        let confinement = super::confinement::Confinement::from_host_config(hc)?;
        self.sandboxes
            .get(isolation)
            .check_confinement(&confinement)?;
        // Settings first, then whether this host can run the mode at all.
        self.sandboxes.get(isolation).check_host()?;
        let restart_policy = super::restart::RestartPolicy::from_host_config(hc)?;
        let health_config = super::health::merge(
            config.healthcheck.as_ref(),
            super::health::image_healthcheck(&self.images.read_document(&img.id)?).as_ref(),
        );
        let healthcheck = super::health::HealthCheck::from_config(health_config.as_ref())?;
        let id = new_id();
        let mut exposed: Vec<String> = ic.exposed_ports().clone().unwrap_or_default();
        exposed.extend(
            config
                .exposed_ports
                .iter()
                .flatten()
                .map(|(k, _)| k.clone()),
        );
        exposed.sort();
        exposed.dedup();
        let net = self.net_plan(
            &id,
            isolation,
            &super::networking::NetRequest {
                hc,
                nc: body.networking_config.as_ref(),
                domainname: config.domainname.clone().unwrap_or_default(),
                mac: config.mac_address.clone().filter(|m| !m.is_empty()),
                hostname_set: config.hostname.as_deref().is_some_and(|h| !h.is_empty()),
                exposed,
            },
        )?;
        let mut anonymous: Vec<String> = ic.volumes().clone().unwrap_or_default();
        anonymous.extend(config.volumes.iter().flatten().map(|(k, _)| k.clone()));
        let mounts =
            match self.mounts_plan(isolation, &super::volumes::VolumeRequest { hc, anonymous }) {
                Ok(m) => m,
                Err(e) => {
                    self.net_release(&id, &net);
                    return Err(e);
                }
            };
        let labels = config
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let cwd = config
            .working_dir
            .clone()
            .filter(|s| !s.is_empty())
            .or(ic.working_dir().clone())
            .unwrap_or_default();
        let user = config
            .user
            .clone()
            .filter(|s| !s.is_empty())
            .or(ic.user().clone())
            .unwrap_or_default();
        let hostname = config
            .hostname
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| id[..12].to_owned());
        // What inspect shows is what applies: the image's defaults filled in.
        config.env = Some(env.clone());
        config.cmd = Some(cmd);
        config.working_dir = Some(cwd.clone());
        config.user = Some(user.clone());
        config.hostname = Some(hostname.clone());
        config.stop_signal = Some(stop_signal.clone());
        config.image = Some(image.clone());
        config.healthcheck = health_config;
        let rec = Record {
            id: id.clone(),
            name,
            created: now_rfc3339(),
            image,
            image_id: img.id.to_string(),
            args,
            env,
            cwd,
            user,
            hostname,
            tty: config.tty.unwrap_or(false),
            open_stdin: config.open_stdin.unwrap_or(false),
            console_size,
            isolation,
            auto_remove: hc.auto_remove.unwrap_or(false),
            memory,
            nano_cpus,
            pids_limit,
            stop_signal,
            stop_timeout,
            labels,
            log_rotation,
            log_none: hc
                .log_config
                .as_ref()
                .is_some_and(|l| l.typ.as_deref() == Some("none")),
            net,
            mounts,
            confinement,
            restart_policy,
            healthcheck,
            paused: false,
            oom_killed: false,
            sandbox_sized: (0, 0),
            restart_count: 0,
            stopped_by_hand: false,
            restarting: false,
            config,
            host_config,
            state: State::default(),
            tenant: crate::tenant::current(),
        };
        let dir = self.dir(&id);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            self.net_release(&id, &rec.net);
            self.release_volumes(&rec.mounts);
            self.remove_anonymous_volumes(&rec);
            return Err(Error::io(format!("{}", dir.display()))(e));
        }
        if let Err(e) = self.save(&rec) {
            let _ = std::fs::remove_dir_all(&dir);
            self.net_release(&id, &rec.net);
            self.release_volumes(&rec.mounts);
            self.remove_anonymous_volumes(&rec);
            return Err(e);
        }
        let (name, image) = (rec.name.clone(), rec.image.clone());
        let mounts = rec.mounts.clone();
        self.insert(rec);
        self.release_volumes(&mounts);
        self.event(
            "container",
            "create",
            &id,
            &[("name", name), ("image", image)],
        );
        crate::trace(&id, "created record");
        Ok(id)
    }
}

impl Daemon {
    /// A tenant's new container must fit its quotas (config file `tenants`): its count of
    /// containers, and the memory and vCPUs their limits add up to. With a memory or CPU
    /// quota, a container must set that limit (`--memory`, `--cpus`), or it would have
    /// none. A 403 naming the quota.
    fn check_quota(&self, memory: i64, nano_cpus: i64) -> Result<()> {
        self.quota(None, memory, nano_cpus)
    }

    /// [`Daemon::check_quota`] for new limits of an existing container (`update`).
    pub(super) fn check_quota_for(&self, id: &str, memory: i64, nano_cpus: i64) -> Result<()> {
        self.quota(Some(id), memory, nano_cpus)
    }

    fn quota(&self, replacing: Option<&str>, memory: i64, nano_cpus: i64) -> Result<()> {
        let Some(t) = crate::tenant::current() else {
            return Ok(());
        };
        let Some(q) = self.opts.tenants.as_ref().and_then(|all| all.get(&t)) else {
            return Ok(());
        };
        let mine: Vec<Record> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.record())
            .filter(|r| r.tenant.as_deref() == Some(t.as_str()))
            .filter(|r| Some(r.id.as_str()) != replacing)
            .collect();
        let over = |what: String| Err(Error::Forbidden(format!("tenant {t}: {what}")));
        if let (Some(n), None) = (q.containers, replacing) {
            if mine.len() as u64 >= n {
                return over(format!("the quota of {n} containers is reached"));
            }
        }
        if let Some(m) = q.memory {
            if memory <= 0 {
                return over(format!("a memory quota ({m} bytes) applies: give --memory"));
            }
            let used: u128 = mine.iter().map(|r| r.memory.max(0) as u128).sum();
            if used + memory as u128 > m as u128 {
                return over(format!(
                    "--memory {memory} would bring its containers to {} of its {m} bytes",
                    used + memory as u128
                ));
            }
        }
        if let Some(c) = q.cpus {
            if nano_cpus <= 0 {
                return over(format!("a CPU quota ({c} vCPUs) applies: give --cpus"));
            }
            let used: u128 = mine.iter().map(|r| r.nano_cpus.max(0) as u128).sum();
            let want = (used + nano_cpus as u128) as f64 / 1e9;
            if want > c + 1e-9 {
                return over(format!(
                    "--cpus {} would bring its containers to {want} of its {c} vCPUs",
                    nano_cpus as f64 / 1e9
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_options_as_docker_reads_them() {
        assert_eq!(parse_size("10k"), Some(10 << 10));
        assert_eq!(parse_size("1.5m"), Some(3 << 19));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
        let m = |kv: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            log_rotation(Some(&m(&[("max-size", "1m"), ("max-file", "3")]))).unwrap(),
            LogRotation {
                max_size: 1 << 20,
                max_files: 3
            }
        );
        assert!(log_rotation(Some(&m(&[("max-file", "3")]))).is_err());
        assert!(log_rotation(Some(&m(&[("max-size", "x")]))).is_err());
        assert!(log_rotation(Some(&m(&[("max-size", "1k"), ("max-file", "0")]))).is_err());
        assert_eq!(log_rotation(None).unwrap().max_size, 0);
    }
}
