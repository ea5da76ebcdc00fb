//! `/_ping`, `/version`, `/info`, `/events`, `/system/...`.

use super::{Call, Reply, API_VERSION, MIN_API_VERSION};
use crate::daemon::events::EventFilter;
use crate::daemon::Daemon;
use crate::http::{channel_body, empty, full, json, streamed, Resp};
use crate::models::{docker, Component, ComponentDetails, Info, Platform, Version};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Routes the system endpoints; None if no route matches.
pub async fn route(d: &Arc<Daemon>, call: Call) -> Option<Reply> {
    let seg: Vec<&str> = call.seg.iter().map(String::as_str).collect();
    Some(match (&call.method, seg.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping(&call.method)),
        (&Method::GET, ["version"]) => Ok(json(StatusCode::OK, &version())),
        (&Method::GET, ["info"]) => Ok(json(StatusCode::OK, &info(d))),
        (&Method::GET, ["events"]) => event_filter(&call.q).map(|f| events(d, f)),
        (&Method::GET, ["system", "df"]) => {
            let d = d.clone();
            super::off_thread(move || system_df(&d)).await
        }
        _ => return None,
    })
}

/// `system df`: images (with how many containers use each), containers (with their
/// writable layers' sizes where berthd sees them), volumes (with their sizes and how many
/// containers use each), and no build cache (berth has none).
fn system_df(d: &Daemon) -> Reply {
    let recs = d.records();
    let mut images = Vec::new();
    let mut layers = 0i64;
    for r in d.images.records()? {
        if !d.image_owners.sees(&r.id.to_string()) {
            continue;
        }
        let mut s = super::images::summary(d, &r)?;
        s.containers = recs.iter().filter(|c| c.image_id == s.id).count() as i64;
        s.shared_size = 0;
        layers += s.size;
        images.push(s);
    }
    let mut containers = d.list(&crate::daemon::inspect::ListFilter {
        all: true,
        ..Default::default()
    })?;
    d.fill_sizes(&mut containers);
    Ok(json(
        StatusCode::OK,
        &docker::SystemDataUsageResponse {
            layers_size: Some(layers),
            images: Some(images),
            containers: Some(containers),
            volumes: Some(
                d.volumes
                    .all()
                    .iter()
                    .map(|v| d.volume_view(v, true))
                    .collect(),
            ),
            build_cache: Some(vec![]),
        },
    ))
}

fn ping(m: &Method) -> Resp {
    let mut r = if m == Method::HEAD {
        empty(StatusCode::OK)
    } else {
        streamed("text/plain; charset=utf-8", full("OK"))
    };
    let h = r.headers_mut();
    for (k, v) in [
        ("API-Version", API_VERSION),
        ("Builder-Version", "1"),
        ("Docker-Experimental", "false"),
        ("Ostype", "linux"),
        ("Cache-Control", "no-cache, no-store, must-revalidate"),
        ("Pragma", "no-cache"),
    ] {
        h.insert(k, v.parse().expect("static header"));
    }
    r
}

/// The host's memory in bytes, as /proc/meminfo says.
fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn version() -> Version {
    let v = env!("CARGO_PKG_VERSION").to_owned();
    Version {
        platform: Platform {
            name: "berth".into(),
        },
        components: vec![Component {
            name: "Engine".into(),
            version: v.clone(),
            details: ComponentDetails {
                api_version: API_VERSION.into(),
                min_api_version: MIN_API_VERSION.into(),
                os: "linux".into(),
                arch: "amd64".into(),
                kernel_version: kernel_version(),
                experimental: "false".into(),
            },
        }],
        version: v,
        api_version: API_VERSION.into(),
        min_api_version: MIN_API_VERSION.into(),
        git_commit: "berth".into(),
        go_version: "n/a (Rust)".into(),
        os: "linux".into(),
        arch: "amd64".into(),
        kernel_version: kernel_version(),
        build_time: String::new(),
    }
}

fn info(d: &Daemon) -> Info {
    let recs = d.records();
    let running = recs
        .iter()
        .filter(|r| r.state.running() && !r.paused)
        .count() as i64;
    let paused = recs
        .iter()
        .filter(|r| r.state.running() && r.paused)
        .count() as i64;
    let kvm = berth_hostcheck::check();
    Info {
        base: docker::SystemInfo {
            id: Some("berth".into()),
            containers: Some(recs.len() as i64),
            containers_running: Some(running),
            containers_paused: Some(paused),
            containers_stopped: Some(recs.len() as i64 - running - paused),
            images: Some(
                d.images
                    .records()
                    .map(|r| {
                        r.iter()
                            .filter(|i| d.image_owners.sees(&i.id.to_string()))
                            .count() as i64
                    })
                    .unwrap_or(0),
            ),
            driver: Some("berth-overlay".into()),
            docker_root_dir: Some(d.opts.data_root.display().to_string()),
            operating_system: Some("berth".into()),
            os_type: Some("linux".into()),
            architecture: Some("x86_64".into()),
            kernel_version: Some(kernel_version()),
            ncpu: Some(
                std::thread::available_parallelism()
                    .map(|n| n.get() as i64)
                    .unwrap_or(1),
            ),
            mem_total: Some(mem_total()),
            memory_limit: Some(true),
            swap_limit: Some(false),
            cpu_cfs_period: Some(true),
            cpu_cfs_quota: Some(true),
            cpu_shares: Some(false),
            cpu_set: Some(false),
            pids_limit: Some(true),
            oom_kill_disable: Some(false),
            kernel_memory_tcp: Some(false),
            ipv4_forwarding: Some(false),
            bridge_nf_iptables: Some(false),
            bridge_nf_ip6tables: Some(false),
            debug: Some(false),
            nfd: Some(0),
            n_goroutines: Some(0),
            n_events_listener: Some(d.events.receiver_count() as i64),
            system_time: Some(berth_protocol::time::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0),
                None,
            )),
            cgroup_version: Some(
                if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                    docker::SystemInfoCgroupVersionEnum::_2
                } else {
                    docker::SystemInfoCgroupVersionEnum::_1
                },
            ),
            os_version: Some(String::new()),
            index_server_address: Some("https://index.docker.io/v1/".into()),
            driver_status: Some(vec![]),
            plugins: Some(docker::PluginsInfo {
                volume: Some(vec!["local".into()]),
                network: Some(vec!["bridge".into(), "host".into(), "null".into()]),
                authorization: Some(vec![]),
                log: Some(vec!["json-file".into(), "none".into()]),
            }),
            labels: Some(vec![]),
            experimental_build: Some(false),
            http_proxy: Some(String::new()),
            https_proxy: Some(String::new()),
            no_proxy: Some(String::new()),
            live_restore_enabled: Some(true),
            swarm: Some(docker::SwarmInfo {
                node_id: Some(String::new()),
                node_addr: Some(String::new()),
                local_node_state: Some(docker::LocalNodeState::INACTIVE),
                control_available: Some(false),
                error: Some(String::new()),
                remote_managers: Some(vec![]),
                ..Default::default()
            }),
            init_binary: Some(String::new()),
            containerd_commit: Some(docker::Commit {
                id: Some(String::new()),
                expected: Some(String::new()),
            }),
            runc_commit: Some(docker::Commit {
                id: Some(String::new()),
                expected: Some(String::new()),
            }),
            init_commit: Some(docker::Commit {
                id: Some(String::new()),
                expected: Some(String::new()),
            }),
            default_address_pools: Some(vec![]),
            cdi_spec_dirs: Some(vec![]),
            name: Some("berth".into()),
            server_version: Some(env!("CARGO_PKG_VERSION").into()),
            default_runtime: Some("berth".into()),
            runtimes: Some(
                [(
                    "berth".to_owned(),
                    docker::Runtime {
                        path: Some(d.opts.agent.display().to_string()),
                        ..Default::default()
                    },
                )]
                .into_iter()
                .collect(),
            ),
            security_options: Some(vec!["name=seccomp,profile=builtin".into()]),
            cgroup_driver: Some(docker::SystemInfoCgroupDriverEnum::CGROUPFS),
            logging_driver: Some("json-file".into()),
            warnings: Some(if kvm.can_run_microvms() {
                vec![]
            } else {
                vec![format!("microVM isolation is unavailable: {kvm}")]
            }),
            registry_config: Some(docker::RegistryServiceConfig {
                insecure_registry_cidrs: Some(vec!["127.0.0.0/8".into()]),
                index_configs: Some(Default::default()),
                mirrors: Some(vec![]),
                allow_nondistributable_artifacts_cidrs: Some(vec![]),
                allow_nondistributable_artifacts_hostnames: Some(vec![]),
            }),
            ..Default::default()
        },
        isolation: d.sandboxes.default.as_str().into(),
        generic_resources: vec![],
    }
}

fn event_filter(q: &crate::http::Query) -> Result<EventFilter, crate::http::ApiError> {
    let time = |k: &str| {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| crate::daemon::events::parse_time(v, k))
            .transpose()
    };
    Ok(EventFilter {
        tenant: crate::tenant::current(),
        filters: q.filters("events", &crate::daemon::events::FILTERS)?,
        since: time("since")?,
        until: time("until")?,
    })
}

/// Sends the history since `since` (up to `until`), then live events until `until`
/// (forever without one); events already sent from the history are not sent twice.
fn events(d: &Daemon, f: EventFilter) -> Resp {
    let (tx, body) = channel_body();
    // Subscribe before reading the history: nothing falls between the two.
    let mut rx = d.events.subscribe();
    let past: Vec<docker::EventMessage> = match f.since.or(f.until) {
        Some(_) => d
            .event_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| f.matches(e))
            .cloned()
            .collect(),
        None => vec![],
    };
    let sent_until = past.last().and_then(|e| e.time_nano).unwrap_or(0);
    let send = move |tx: &tokio::sync::mpsc::UnboundedSender<Bytes>, ev: &docker::EventMessage| {
        let mut line = serde_json::to_vec(ev).unwrap_or_default();
        line.push(b'\n');
        tx.send(Bytes::from(line)).is_ok()
    };
    tokio::spawn(async move {
        for ev in &past {
            if !send(&tx, ev) {
                return;
            }
        }
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            let wait = match f.until {
                Some(u) if now >= u => return,
                Some(u) => Duration::from_nanos((u - now) as u64),
                None => Duration::from_secs(3600),
            };
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Ok(ev)) => {
                    if ev.time_nano.unwrap_or(0) <= sent_until || !f.matches(&ev) {
                        continue;
                    }
                    if !send(&tx, &ev) {
                        return;
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => return,
                Err(_) if f.until.is_some() => return,
                Err(_) => continue,
            }
        }
    });
    streamed("application/json", body)
}
