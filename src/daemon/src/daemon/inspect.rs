//! `inspect`, `ps`, `top` and `stats`: what a container is, from its record and its agent.

use super::{now_rfc3339, unix_of, Ctr, Daemon, Record};
use crate::errors::{Error, Result};
use crate::models::{
    docker, ContainerInspect, ContainerStats, CpuStats, CpuUsage, MemoryStats, PidsStats,
};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn or_zero(t: &str) -> String {
    if t.is_empty() {
        ZERO_TIME.to_owned()
    } else {
        t.to_owned()
    }
}

fn status_enum(s: &str) -> docker::ContainerStateStatusEnum {
    use docker::ContainerStateStatusEnum as S;
    match s {
        "created" => S::CREATED,
        "running" => S::RUNNING,
        "exited" => S::EXITED,
        "restarting" => S::RESTARTING,
        _ => S::DEAD,
    }
}

/// `docker ps`'s STATUS column (with the health, as `(healthy)` or `(health: starting)`,
/// while it runs).
pub fn status_line(r: &Record, health: Option<&docker::Health>) -> String {
    let ago = |t: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let s = (now - unix_of(t)).max(0);
        match s {
            0..=1 => "Less than a second".to_owned(),
            2..=59 => format!("{s} seconds"),
            60..=119 => "About a minute".to_owned(),
            120..=3599 => format!("{} minutes", s / 60),
            _ => format!("{} hours", s / 3600),
        }
    };
    match r.state.status() {
        "exited" if r.restarting => format!(
            "Restarting ({}) {} ago",
            r.state.exit_code(),
            ago(r.state.finished_at())
        ),
        "running" => match health.map(super::health::status_str) {
            Some("starting") => format!("Up {} (health: starting)", ago(r.state.started_at())),
            Some(h @ ("healthy" | "unhealthy")) => {
                format!("Up {} ({h})", ago(r.state.started_at()))
            }
            _ => format!("Up {}", ago(r.state.started_at())),
        },
        "exited" => format!(
            "Exited ({}) {} ago",
            r.state.exit_code(),
            ago(r.state.finished_at())
        ),
        _ => "Created".into(),
    }
}

/// Which containers `ps` lists.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Stopped ones too.
    pub all: bool,
    /// At most this many (newest first).
    pub limit: Option<usize>,
    /// By state.
    pub status: Vec<String>,
    /// By name substring.
    pub name: Vec<String>,
    /// By ID prefix.
    pub id: Vec<String>,
    /// By label (`k` or `k=v`), all must match.
    pub label: Vec<String>,
    /// By health (`starting`, `healthy`, `unhealthy`, `none`).
    pub health: Vec<String>,
}

impl Daemon {
    /// `GET /containers/{id}/json`.
    pub fn inspect(&self, c: &Ctr) -> ContainerInspect {
        let r = c.record();
        let mut hc = r.host_config.clone();
        hc.isolation = Some(r.isolation.as_str().to_owned());
        if hc.base.network_mode.as_deref().is_none_or(|m| m.is_empty()) {
            hc.base.network_mode = Some("none".into());
        }
        let mut config = r.config.clone();
        config.labels = Some(r.labels.clone().into_iter().collect());
        ContainerInspect {
            base: docker::ContainerInspectResponse {
                id: Some(r.id.clone()),
                created: Some(r.created.clone()),
                path: r.args.first().cloned(),
                args: Some(r.args.get(1..).unwrap_or(&[]).to_vec()),
                state: Some(docker::ContainerState {
                    status: Some(status_enum(if r.restarting {
                        "restarting"
                    } else {
                        r.state.status()
                    })),
                    running: Some(r.state.running()),
                    paused: Some(false),
                    restarting: Some(r.restarting),
                    oom_killed: Some(false),
                    dead: Some(false),
                    pid: Some(r.state.pid()),
                    exit_code: Some(r.state.exit_code()),
                    error: Some(r.state.error().to_owned()),
                    started_at: Some(or_zero(r.state.started_at())),
                    finished_at: Some(or_zero(r.state.finished_at())),
                    health: c.health.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                }),
                image: Some(r.image_id.clone()),
                resolv_conf_path: Some(String::new()),
                hostname_path: Some(String::new()),
                hosts_path: Some(String::new()),
                log_path: Some(self.log_path(&r.id).display().to_string()),
                name: Some(format!("/{}", r.name)),
                restart_count: Some(r.restart_count),
                driver: Some("berth-overlay".into()),
                platform: Some("linux".into()),
                mount_label: Some(String::new()),
                process_label: Some(String::new()),
                app_armor_profile: Some(String::new()),
                mounts: Some(vec![]),
                config: Some(config),
                network_settings: Some(docker::NetworkSettings {
                    networks: Some(Default::default()),
                    ports: Some(Default::default()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            host_config: hc,
        }
    }

    /// `GET /containers/json`.
    pub fn list(&self, f: &ListFilter) -> Vec<docker::ContainerSummary> {
        let mut recs: Vec<(Record, Option<docker::Health>)> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| {
                let h = c.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
                (c.record(), h)
            })
            .collect();
        recs.sort_by(|a, b| b.0.created.cmp(&a.0.created));
        recs.into_iter()
            .filter(|(r, h)| {
                f.health.is_empty() || {
                    let s = match h {
                        Some(h) if r.state.running() => super::health::status_str(h),
                        _ => "none",
                    };
                    f.health.iter().any(|x| x == s)
                }
            })
            .filter(|(r, _)| f.all || r.state.running() || !f.status.is_empty())
            .filter(|(r, _)| f.status.is_empty() || f.status.iter().any(|s| s == r.state.status()))
            .filter(|(r, _)| {
                f.name.is_empty()
                    || f.name
                        .iter()
                        .any(|n| r.name.contains(n.trim_start_matches('/')))
            })
            .filter(|(r, _)| f.id.is_empty() || f.id.iter().any(|i| r.id.starts_with(i)))
            .filter(|(r, _)| {
                f.label.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => r.labels.get(k).map(String::as_str) == Some(v),
                    None => r.labels.contains_key(l),
                })
            })
            .take(f.limit.unwrap_or(usize::MAX))
            .map(|(r, h)| docker::ContainerSummary {
                id: Some(r.id.clone()),
                names: Some(vec![format!("/{}", r.name)]),
                image: Some(r.image.clone()),
                image_id: Some(r.image_id.clone()),
                command: Some(r.args.join(" ")),
                created: Some(unix_of(&r.created)),
                ports: Some(vec![]),
                labels: Some(r.labels.clone().into_iter().collect()),
                state: Some(r.state.status().to_owned()),
                status: Some(status_line(&r, h.as_ref())),
                host_config: Some(docker::ContainerSummaryHostConfig {
                    network_mode: Some("none".into()),
                }),
                network_settings: Some(docker::ContainerSummaryNetworkSettings {
                    networks: Some(Default::default()),
                }),
                mounts: Some(vec![]),
                ..Default::default()
            })
            .collect()
    }

    /// `GET /containers/{id}/top` (blocking).
    pub fn top(&self, c: &Ctr) -> Result<docker::ContainerTopResponse> {
        let rec = self.running(c)?;
        let pids = self.agent(&rec).pids()?;
        let sandbox = self.sandbox(&rec);
        Ok(docker::ContainerTopResponse {
            titles: Some(vec!["PID".into(), "CMD".into()]),
            processes: Some(
                pids.iter()
                    .map(|p| vec![p.to_string(), sandbox.command_of(*p)])
                    .collect(),
            ),
        })
    }

    /// One `GET /containers/{id}/stats` sample (blocking); empty for a stopped container.
    pub fn stats(&self, rec: &Record) -> Result<ContainerStats> {
        let mut out = ContainerStats {
            read: now_rfc3339(),
            id: rec.id.clone(),
            name: format!("/{}", rec.name),
            ..Default::default()
        };
        if !rec.state.running() {
            return Ok(out);
        }
        let s = self.agent(rec).stats().map_err(|e| match e {
            Error::NotFound(m) => Error::Conflict(m),
            e => e,
        })?;
        out.memory_stats = MemoryStats {
            usage: Some(s.memory_bytes),
            limit: Some(s.memory_limit_bytes),
        };
        out.cpu_stats = CpuStats {
            cpu_usage: CpuUsage {
                total_usage: s.cpu_usec * 1000,
            },
            online_cpus: Some(1),
        };
        out.pids_stats = PidsStats {
            current: Some(s.pids),
        };
        Ok(out)
    }
}
