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
        "paused" => S::PAUSED,
        _ => S::DEAD,
    }
}

/// Every key dockerd's inspect carries in `HostConfig`, with Docker's value for "not
/// set" where the container did not set it (berth's own `Isolation` stays outside).
fn fill_host_config(h: &mut docker::HostConfig) {
    macro_rules! zero {
        ($($f:ident),*) => { $( h.$f.get_or_insert_with(Default::default); )* };
    }
    zero!(
        cpu_shares,
        memory,
        cgroup_parent,
        blkio_weight,
        blkio_weight_device,
        blkio_device_read_bps,
        blkio_device_write_bps,
        blkio_device_read_iops,
        blkio_device_write_iops,
        cpu_period,
        cpu_quota,
        cpu_realtime_period,
        cpu_realtime_runtime,
        cpuset_cpus,
        cpuset_mems,
        devices,
        device_cgroup_rules,
        device_requests,
        kernel_memory_tcp,
        memory_reservation,
        memory_swap,
        nano_cpus,
        oom_kill_disable,
        init,
        pids_limit,
        ulimits,
        cpu_count,
        cpu_percent,
        io_maximum_iops,
        io_maximum_bandwidth,
        binds,
        container_id_file,
        log_config,
        network_mode,
        port_bindings,
        restart_policy,
        auto_remove,
        volume_driver,
        volumes_from,
        mounts,
        console_size,
        cap_add,
        cap_drop,
        dns,
        dns_options,
        dns_search,
        extra_hosts,
        group_add,
        ipc_mode,
        cgroup,
        links,
        oom_score_adj,
        pid_mode,
        privileged,
        publish_all_ports,
        readonly_rootfs,
        security_opt,
        tmpfs,
        uts_mode,
        userns_mode,
        shm_size,
        runtime,
        masked_paths,
        readonly_paths
    );
    h.memory_swappiness.get_or_insert(-1);
    // No cgroup namespace of its own, in either mode (`spec::docker_default`).
    h.cgroupns_mode
        .get_or_insert(docker::HostConfigCgroupnsModeEnum::HOST);
    if h.ipc_mode.as_deref() == Some("") {
        h.ipc_mode = Some("private".into());
    }
    let log = h.log_config.get_or_insert_with(Default::default);
    if log.typ.as_deref().is_none_or(str::is_empty) {
        log.typ = Some("json-file".into());
    }
    log.config.get_or_insert_with(Default::default);
    if h.runtime.as_deref() == Some("") {
        h.runtime = Some("berth".into());
    }
}

/// Every key dockerd's inspect carries in `Config`, from the record where it has them.
fn fill_config(c: &mut docker::ContainerConfig, r: &Record) {
    c.tty = Some(r.tty);
    c.open_stdin = Some(r.open_stdin);
    c.domainname.get_or_insert_with(String::new);
    c.attach_stdin.get_or_insert(false);
    c.attach_stdout.get_or_insert(false);
    c.attach_stderr.get_or_insert(false);
    c.stdin_once.get_or_insert(false);
    c.network_disabled.get_or_insert(false);
    c.entrypoint.get_or_insert_with(Vec::new);
    c.on_build.get_or_insert_with(Vec::new);
    c.volumes.get_or_insert_with(Default::default);
}

/// The host's CPU time so far, all CPUs, in nanoseconds (the `cpu` line of /proc/stat,
/// as dockerd reads it).
fn host_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(7)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf takes a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks * (1_000_000_000 / hz as u64))
}

/// The state as Docker names it: created, running, paused, restarting or exited.
pub fn status_name(r: &Record) -> &'static str {
    match r.state.status() {
        "running" if r.paused => "paused",
        "exited" if r.restarting => "restarting",
        s => s,
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
        berth_api::human_duration(now - unix_of(t))
    };
    match r.state.status() {
        "running" if r.paused => format!("Up {} (Paused)", ago(r.state.started_at())),
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
    /// By image: a reference or an image ID (prefix).
    pub ancestor: Vec<String>,
    /// Exited with one of these codes.
    pub exited: Vec<i64>,
    /// Created before this container (name or ID).
    pub before: Option<String>,
    /// Created after this container (name or ID).
    pub since: Option<String>,
    /// By isolation (`vm`, `process`).
    pub isolation: Vec<String>,
}

impl Daemon {
    /// `GET /containers/{id}/json`.
    pub fn inspect(&self, c: &Ctr) -> ContainerInspect {
        let r = c.record();
        let mut hc = r.host_config.clone();
        hc.isolation = Some(r.isolation.as_str().to_owned());
        hc.base.network_mode = Some(self.net_mode_name(&r));
        fill_host_config(&mut hc.base);
        let mut config = r.config.clone();
        config.labels = Some(r.labels.clone().into_iter().collect());
        fill_config(&mut config, &r);
        let exec_ids: Vec<String> = self
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.container == r.id && e.running)
            .map(|e| e.id.clone())
            .collect();
        ContainerInspect {
            base: docker::ContainerInspectResponse {
                id: Some(r.id.clone()),
                created: Some(r.created.clone()),
                path: r.args.first().cloned(),
                args: Some(r.args.get(1..).unwrap_or(&[]).to_vec()),
                state: Some(docker::ContainerState {
                    status: Some(status_enum(status_name(&r))),
                    running: Some(r.state.running()),
                    paused: Some(r.paused),
                    restarting: Some(r.restarting),
                    oom_killed: Some(r.oom_killed),
                    dead: Some(false),
                    pid: Some(r.state.pid()),
                    exit_code: Some(r.state.exit_code()),
                    error: Some(r.state.error().to_owned()),
                    started_at: Some(or_zero(r.state.started_at())),
                    finished_at: Some(or_zero(r.state.finished_at())),
                    health: c.health.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                }),
                image: Some(r.image_id.clone()),
                resolv_conf_path: Some(self.etc_path(&r, "resolv.conf")),
                hostname_path: Some(self.etc_path(&r, "hostname")),
                hosts_path: Some(self.etc_path(&r, "hosts")),
                log_path: Some(if r.log_none {
                    String::new()
                } else {
                    self.log_path(&r.id).display().to_string()
                }),
                name: Some(format!("/{}", r.name)),
                restart_count: Some(r.restart_count),
                driver: Some("berth-overlay".into()),
                platform: Some("linux".into()),
                mount_label: Some(String::new()),
                process_label: Some(String::new()),
                app_armor_profile: Some(String::new()),
                mounts: Some(self.mount_points(&r)),
                config: Some(config),
                exec_ids: Some(exec_ids),
                graph_driver: Some(docker::GraphDriverData {
                    name: "berth-overlay".into(),
                    data: Default::default(),
                }),
                network_settings: Some(
                    self.net_settings(
                        &r,
                        &r.config
                            .exposed_ports
                            .as_ref()
                            .map(|m| m.keys().cloned().collect::<Vec<_>>())
                            .unwrap_or_default(),
                    ),
                ),
                ..Default::default()
            },
            host_config: hc,
        }
    }

    /// `GET /containers/json`.
    pub fn list(&self, f: &ListFilter) -> crate::errors::Result<Vec<docker::ContainerSummary>> {
        let created_of =
            |n: &str| -> crate::errors::Result<String> { Ok(self.find(n)?.record().created) };
        let before = f.before.as_deref().map(created_of).transpose()?;
        let since = f.since.as_deref().map(created_of).transpose()?;
        let ancestors: Vec<String> = f
            .ancestor
            .iter()
            .map(|a| {
                self.images
                    .resolve(a)
                    .map(|i| i.id.to_string())
                    .unwrap_or_else(|_| a.clone())
            })
            .collect();
        let mut recs: Vec<(Record, Option<docker::Health>)> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| {
                let h = c.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
                (c.record(), h)
            })
            .filter(|(r, _)| crate::tenant::sees(&r.tenant))
            .collect();
        recs.sort_by(|a, b| b.0.created.cmp(&a.0.created));
        Ok(recs
            .into_iter()
            .filter(|(r, _)| before.as_ref().is_none_or(|b| r.created < *b))
            .filter(|(r, _)| since.as_ref().is_none_or(|s| r.created > *s))
            .filter(|(r, _)| {
                ancestors.is_empty()
                    || ancestors.iter().any(|a| {
                        r.image_id == *a
                            || r.image_id
                                .trim_start_matches("sha256:")
                                .starts_with(a.trim_start_matches("sha256:"))
                                && a.len() >= 4
                            || r.image == *a
                    })
            })
            .filter(|(r, _)| {
                f.exited.is_empty()
                    || (r.state.status() == "exited" && f.exited.contains(&r.state.exit_code()))
            })
            .filter(|(r, _)| {
                f.isolation.is_empty() || f.isolation.iter().any(|i| i == r.isolation.as_str())
            })
            .filter(|(r, h)| {
                f.health.is_empty() || {
                    let s = match h {
                        Some(h) if r.state.running() => super::health::status_str(h),
                        _ => "none",
                    };
                    f.health.iter().any(|x| x == s)
                }
            })
            .filter(|(r, _)| {
                f.all || r.state.running() || !f.status.is_empty() || !f.exited.is_empty()
            })
            .filter(|(r, _)| f.status.is_empty() || f.status.iter().any(|s| s == status_name(r)))
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
                ports: Some(self.ps_ports(&r)),
                labels: Some(r.labels.clone().into_iter().collect()),
                state: Some(status_name(&r).to_owned()),
                status: Some(status_line(&r, h.as_ref())),
                host_config: Some(docker::ContainerSummaryHostConfig {
                    network_mode: Some(self.net_mode_name(&r)),
                }),
                network_settings: Some(docker::ContainerSummaryNetworkSettings {
                    networks: Some(self.ps_networks(&r)),
                }),
                mounts: Some(self.mount_points(&r)),
                ..Default::default()
            })
            .collect())
    }

    /// `ps --size`: each container's writable layer (where berthd sees it) and that plus
    /// its image.
    pub fn fill_sizes(&self, list: &mut [docker::ContainerSummary]) {
        for s in list {
            let Some(c) = s.id.as_deref().and_then(|id| self.find(id).ok()) else {
                continue;
            };
            let r = c.record();
            let image = self
                .images
                .resolve(&r.image_id)
                .map(|i| i.size as i64)
                .unwrap_or(0);
            if let Some(rw) = self.rw_size(&r) {
                s.size_rw = Some(rw);
                s.size_root_fs = Some(rw + image);
            }
        }
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
            online_cpus: Some(
                std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1),
            ),
            system_cpu_usage: host_cpu_ns(),
        };
        out.pids_stats = PidsStats {
            current: Some(s.pids),
        };
        Ok(out)
    }
}
