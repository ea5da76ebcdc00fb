//! Container commands: run, create, start, stop, kill, restart, rm, ps, inspect, wait,
//! top, stats and commit, with the create flags and request body that run and create share.

use crate::client::{enc, json, Conn, Fail, Ignored};
use crate::format::Format;
use crate::images::{full_name, pull};
use crate::output::table;
use crate::stream::{stream, term_size, RawTerm};
use berth_api::{docker, CreateBody, CreateResponse, HostConfig, IdResponse};
use clap::Args;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::path::PathBuf;

// The flags and arguments of `run` and `create`. (A plain comment, not a doc comment:
// clap can take a doc comment here as the about text of the commands that flatten it.)
#[derive(Args, Clone, Default)]
pub(crate) struct CreateOpts {
    /// Assign a name.
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long = "memory")]
    memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<f64>,
    /// Tune the container's pids limit.
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    /// Container isolation: vm (default) or process.
    #[arg(long)]
    isolation: Option<String>,
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Container hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Restart policy (no, always, unless-stopped, on-failure[:max-retries]).
    #[arg(long)]
    restart: Option<String>,
    /// Mount the container's root filesystem as read only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Add Linux capabilities.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Security options (seccomp=unconfined, no-new-privileges...).
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Ulimit options (e.g. nofile=1024:2048).
    #[arg(long = "ulimit")]
    ulimit: Vec<String>,
    /// Mount a tmpfs directory (PATH[:OPTIONS]).
    #[arg(long = "tmpfs")]
    tmpfs: Vec<String>,
    /// Add additional groups to join.
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// Tune host's OOM preferences (-1000 to 1000).
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    oom_score_adj: Option<i64>,
    /// Size of /dev/shm (e.g. 64m).
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Give extended privileges to this container.
    #[arg(long)]
    privileged: bool,
    /// PID namespace to use (host: the host's; process isolation only).
    #[arg(long)]
    pid: Option<String>,
    /// Command to run to check health.
    #[arg(long = "health-cmd")]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(long = "health-interval")]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(long = "health-timeout")]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long = "health-retries")]
    health_retries: Option<i64>,
    /// Start period for the container to initialize before counting retries (ms|s|m|h).
    #[arg(long = "health-start-period")]
    health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h).
    #[arg(long = "health-start-interval")]
    health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// Logging driver for the container (json-file or none).
    #[arg(long = "log-driver")]
    log_driver: Option<String>,
    /// Log driver options (max-size=10m, max-file=3).
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// Publish a container's port(s) to the host ([ip:][hostPort:]containerPort[/proto]).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish all exposed ports to random ports.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Expose a port or a range of ports.
    #[arg(long)]
    expose: Vec<String>,
    /// Bind mount a volume (SRC:DST[:OPTS], or a path for an anonymous volume).
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=,target=,...).
    #[arg(long)]
    mount: Vec<String>,
    /// Mount volumes from the specified container(s) (NAME[:ro|rw]).
    #[arg(long = "volumes-from")]
    volumes_from: Vec<String>,
    /// Connect the container to a network (bridge, host, none, container:NAME, or a
    /// user-defined network).
    #[arg(long, visible_alias = "net")]
    network: Option<String>,
    /// Add a network-scoped alias for the container.
    #[arg(long = "network-alias", visible_alias = "net-alias")]
    network_alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104).
    #[arg(long)]
    ip: Option<String>,
    /// Container NIS domain name.
    #[arg(long)]
    domainname: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33).
    #[arg(long = "mac-address")]
    mac_address: Option<String>,
    /// Set custom DNS servers.
    #[arg(long)]
    dns: Vec<String>,
    /// Set custom DNS search domains.
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// Set DNS options.
    #[arg(long = "dns-option")]
    dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip).
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Set meta data on a container.
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Signal to stop the container.
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long = "stop-timeout", allow_hyphen_values = true)]
    stop_timeout: Option<i64>,
    /// Add a host device to the container.
    #[arg(long)]
    device: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Parses `--restart` (`no`, `always`, `unless-stopped`, `on-failure[:N]`).
fn restart_policy(s: &str) -> Result<docker::RestartPolicy, Fail> {
    use docker::RestartPolicyNameEnum as N;
    let (name, max) = match s.split_once(':') {
        Some((n, m)) => (
            n,
            Some(m.parse::<i64>().map_err(|_| {
                Fail(format!("invalid restart policy format: maximum retry count must be an integer: {m:?}"), 125)
            })?),
        ),
        None => (s, None),
    };
    let name = match name {
        "" | "no" => N::NO,
        "always" => N::ALWAYS,
        "unless-stopped" => N::UNLESS_STOPPED,
        "on-failure" => N::ON_FAILURE,
        other => {
            return Err(Fail(
                format!("invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"),
                125,
            ))
        }
    };
    Ok(docker::RestartPolicy {
        name: Some(name),
        maximum_retry_count: max,
    })
}

/// Parses a `--ulimit` (`name=soft[:hard]`).
fn parse_ulimit(s: &str) -> Result<docker::ResourcesUlimits, Fail> {
    let bad = || {
        Fail(
            format!("invalid argument \"{s}\" for \"--ulimit\" flag: expected name=soft[:hard]"),
            125,
        )
    };
    let (name, lim) = s.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = match lim.split_once(':') {
        Some((a, b)) => (a, b),
        None => (lim, lim),
    };
    let n = |v: &str| v.parse::<i64>().map_err(|_| bad());
    Ok(docker::ResourcesUlimits {
        name: Some(name.to_owned()),
        soft: Some(n(soft)?),
        hard: Some(n(hard)?),
    })
}

/// A `--security-opt`: `seccomp=FILE` sends the file's JSON, as the docker CLI does.
fn security_opt(s: &str) -> Result<String, Fail> {
    match s.split_once(['=', ':']) {
        Some(("seccomp", f)) if f != "unconfined" && f != "builtin" => {
            let json = std::fs::read_to_string(f)
                .map_err(|e| Fail(format!("opening seccomp profile ({f}) failed: {e}"), 125))?;
            Ok(format!("seccomp={json}"))
        }
        _ => Ok(s.to_owned()),
    }
}

/// Parses a Go duration (`1h2m3.5s`, `500ms`, `90s`) into nanoseconds, as the docker CLI
/// reads its `--health-*` flags.
fn parse_duration(s: &str, flag: &str) -> Result<i64, Fail> {
    let bad = || {
        Fail(
            format!("invalid argument \"{s}\" for \"{flag}\" flag: time: invalid duration \"{s}\""),
            125,
        )
    };
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mul = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * mul;
        rest = &rest[unit_len..];
    }
    Ok(total as i64)
}

/// The `Healthcheck` the `--health-*` flags ask for, as the docker CLI builds it.
fn healthcheck(o: &CreateOpts) -> Result<Option<docker::HealthConfig>, Fail> {
    let dur =
        |v: &Option<String>, flag: &str| v.as_deref().map(|d| parse_duration(d, flag)).transpose();
    let any_opt = o.health_interval.is_some()
        || o.health_timeout.is_some()
        || o.health_retries.is_some()
        || o.health_start_period.is_some()
        || o.health_start_interval.is_some();
    if o.no_healthcheck {
        if o.health_cmd.is_some() || any_opt {
            return Err(Fail(
                "--no-healthcheck conflicts with --health-* options".into(),
                125,
            ));
        }
        return Ok(Some(docker::HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        }));
    }
    if o.health_cmd.is_none() && !any_opt {
        return Ok(None);
    }
    Ok(Some(docker::HealthConfig {
        test: o
            .health_cmd
            .as_ref()
            .map(|c| vec!["CMD-SHELL".into(), c.clone()]),
        interval: dur(&o.health_interval, "--health-interval")?,
        timeout: dur(&o.health_timeout, "--health-timeout")?,
        start_period: dur(&o.health_start_period, "--health-start-period")?,
        start_interval: dur(&o.health_start_interval, "--health-start-interval")?,
        retries: o.health_retries,
    }))
}

/// `--log-driver` and `--log-opt` as a `LogConfig`.
fn log_config(o: &CreateOpts) -> Result<Option<docker::HostConfigLogConfig>, Fail> {
    if o.log_driver.is_none() && o.log_opt.is_empty() {
        return Ok(None);
    }
    let mut config = std::collections::HashMap::new();
    for kv in &o.log_opt {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Fail(
                format!("invalid argument \"{kv}\" for \"--log-opt\" flag: expected key=value"),
                125,
            )
        })?;
        config.insert(k.to_owned(), v.to_owned());
    }
    Ok(Some(docker::HostConfigLogConfig {
        typ: o.log_driver.clone(),
        config: Some(config),
    }))
}

/// Parses a `--memory` size (b, k, m or g) into bytes.
pub(crate) fn parse_memory(s: &str, flag: &str) -> Result<i64, Fail> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.trim_end_matches('b').chars().last() {
        Some('k') => (&s[..s.trim_end_matches('b').len() - 1], 1i64 << 10),
        Some('m') => (&s[..s.trim_end_matches('b').len() - 1], 1 << 20),
        Some('g') => (&s[..s.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (s.trim_end_matches('b'), 1),
    };
    num.parse::<f64>()
        .map(|n| (n * mul as f64) as i64)
        .map_err(|_| {
            Fail(
                format!("invalid argument \"{s}\" for \"{flag}\" flag: invalid size"),
                125,
            )
        })
}

/// The `/containers/create` body for the flags.
fn create_body(o: &CreateOpts) -> Result<CreateBody, Fail> {
    let mut env = Vec::new();
    for f in &o.env_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Fail(format!("open {}: {e}", f.display()), 125))?;
        for l in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            env.push(if l.contains('=') {
                l.to_owned()
            } else {
                format!("{l}={}", std::env::var(l).unwrap_or_default())
            });
        }
    }
    for e in &o.env {
        env.push(if e.contains('=') {
            e.clone()
        } else {
            format!("{e}={}", std::env::var(e).unwrap_or_default())
        });
    }
    let (mut exposed, port_bindings) = crate::runflags::publish(&o.publish)?;
    exposed.extend(crate::runflags::expose(&o.expose)?);
    let (binds, anonymous) = crate::runflags::volumes(&o.volume)?;
    let mounts = o
        .mount
        .iter()
        .map(|m| crate::runflags::mount(m))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = o
        .device
        .iter()
        .map(|d| crate::runflags::device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let set = |v: Vec<String>| {
        (!v.is_empty()).then(|| {
            v.into_iter()
                .map(|k| (k, HashMap::new()))
                .collect::<HashMap<_, _>>()
        })
    };
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host_config = HostConfig {
        base: docker::HostConfig {
            auto_remove: Some(o.rm),
            network_mode: Some(o.network.clone().unwrap_or_else(|| "default".into())),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            publish_all_ports: o.publish_all.then_some(true),
            binds: (!binds.is_empty()).then_some(binds),
            mounts: (!mounts.is_empty()).then_some(mounts),
            volumes_from: (!o.volumes_from.is_empty()).then(|| o.volumes_from.clone()),
            devices: (!devices.is_empty()).then_some(devices),
            dns: some_vec(&o.dns),
            dns_search: some_vec(&o.dns_search),
            dns_options: some_vec(&o.dns_option),
            extra_hosts: some_vec(&o.add_host),
            memory: o
                .memory
                .as_deref()
                .map(|m| parse_memory(m, "-m, --memory"))
                .transpose()?,
            nano_cpus: o.cpus.map(|c| (c * 1e9) as i64),
            pids_limit: o.pids_limit,
            readonly_rootfs: o.read_only.then_some(true),
            restart_policy: o.restart.as_deref().map(restart_policy).transpose()?,
            cap_add: (!o.cap_add.is_empty()).then(|| o.cap_add.clone()),
            cap_drop: (!o.cap_drop.is_empty()).then(|| o.cap_drop.clone()),
            security_opt: (!o.security_opt.is_empty())
                .then(|| o.security_opt.iter().map(|s| security_opt(s)).collect())
                .transpose()?,
            ulimits: (!o.ulimit.is_empty())
                .then(|| o.ulimit.iter().map(|u| parse_ulimit(u)).collect())
                .transpose()?,
            tmpfs: (!o.tmpfs.is_empty()).then(|| {
                o.tmpfs
                    .iter()
                    .map(|t| match t.split_once(':') {
                        Some((p, opts)) => (p.to_owned(), opts.to_owned()),
                        None => (t.clone(), String::new()),
                    })
                    .collect()
            }),
            group_add: (!o.group_add.is_empty()).then(|| o.group_add.clone()),
            oom_score_adj: o.oom_score_adj,
            init: o.init.then_some(true),
            privileged: o.privileged.then_some(true),
            pid_mode: o.pid.clone(),
            log_config: log_config(o)?,
            shm_size: o
                .shm_size
                .as_deref()
                .map(|m| parse_memory(m, "--shm-size"))
                .transpose()?,
            ..Default::default()
        },
        isolation: o.isolation.clone(),
    };
    Ok(CreateBody {
        config: docker::ContainerConfig {
            image: Some(o.image.clone()),
            env: Some(env),
            tty: Some(o.tty),
            open_stdin: Some(o.interactive),
            stdin_once: Some(o.interactive),
            attach_stdin: Some(o.interactive),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: (!o.command.is_empty()).then(|| o.command.clone()),
            entrypoint: o.entrypoint.clone().map(|e| vec![e]),
            working_dir: o.workdir.clone(),
            user: o.user.clone(),
            hostname: o.hostname.clone(),
            domainname: o.domainname.clone(),
            mac_address: o.mac_address.clone(),
            healthcheck: healthcheck(o)?,
            exposed_ports: set(exposed),
            volumes: set(anonymous),
            labels: (!o.label.is_empty()).then(|| crate::runflags::labels(&o.label)),
            stop_signal: o.stop_signal.clone(),
            stop_timeout: o.stop_timeout,
            ..Default::default()
        },
        host_config: Some(host_config),
        networking_config: (o.ip.is_some() || !o.network_alias.is_empty()).then(|| {
            let net = o.network.clone().unwrap_or_else(|| "default".into());
            docker::NetworkingConfig {
                endpoints_config: Some(
                    [(
                        net,
                        docker::EndpointSettings {
                            aliases: (!o.network_alias.is_empty()).then(|| o.network_alias.clone()),
                            ipam_config: o.ip.clone().map(|ip| docker::EndpointIpamConfig {
                                ipv4_address: Some(ip),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )]
                    .into(),
                ),
            }
        }),
    })
}

/// The exit code in a `wait` reply (125 when there is none: the wait itself failed).
fn exit_code_of(reply: &[u8], missing: u8) -> u8 {
    serde_json::from_slice::<docker::ContainerWaitResponse>(reply)
        .map(|w| w.status_code.clamp(0, 255) as u8)
        .unwrap_or(missing)
}

/// The exit code `docker run` uses for a start failure.
fn start_failure_code(m: &str) -> u8 {
    if m.contains("executable file not found") || m.contains("no such file or directory") {
        127
    } else if m.contains("permission denied") {
        126
    } else {
        125
    }
}

/// `run`: create, attach, start and wait (or start and print the ID when detached).
pub(crate) async fn run(c: &Conn, opts: CreateOpts, detach: bool) -> Result<u8, Fail> {
    let body = json(&create_body(&opts)?);
    let q = opts
        .name
        .as_deref()
        .map(|n| format!("?name={n}"))
        .unwrap_or_default();
    let created: CreateResponse = match c
        .call("POST", &format!("/containers/create{q}"), body.clone())
        .await
    {
        Ok(v) => v,
        Err(Fail(m, _)) if m.contains("No such image") => {
            eprintln!("Unable to find image '{}' locally", full_name(&opts.image));
            pull(c, &opts.image).await?;
            c.call("POST", &format!("/containers/create{q}"), body)
                .await?
        }
        Err(e) => return Err(e),
    };
    let id = created.id;
    if detach {
        if let Err(Fail(m, _)) = c
            .call::<Ignored>("POST", &format!("/containers/{id}/start"), None)
            .await
        {
            return Err(Fail(m.clone(), start_failure_code(&m)));
        }
        println!("{id}");
        return Ok(0);
    }
    let attach = c
        .send(
            "POST",
            &format!(
                "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
                u8::from(opts.interactive)
            ),
            None,
            None,
            true,
        )
        .await?;
    let cond = if opts.rm { "removed" } else { "next-exit" };
    let wait = c
        .send(
            "POST",
            &format!("/containers/{id}/wait?condition={cond}"),
            None,
            None,
            false,
        )
        .await?;
    let (tty, stdin) = (opts.tty, opts.interactive);
    let _raw = RawTerm::new(tty && stdin);
    let streaming = tokio::spawn(stream(attach, tty, stdin));
    if let Err(Fail(m, _)) = c
        .call::<Ignored>("POST", &format!("/containers/{id}/start"), None)
        .await
    {
        drop(_raw);
        eprintln!("berth: {m}");
        if opts.rm {
            let _ = wait.into_body().collect().await;
        }
        return Err(Fail(String::new(), start_failure_code(&m)));
    }
    if tty {
        if let Some((h, w)) = term_size() {
            let _ = c
                .call::<Ignored>(
                    "POST",
                    &format!("/containers/{id}/resize?h={h}&w={w}"),
                    None,
                )
                .await;
        }
    }
    let code = wait
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let _ = streaming.await;
    Ok(exit_code_of(&code, 125))
}

/// Runs one request per name, printing the name on success and the error otherwise.
async fn each(
    c: &Conn,
    names: &[String],
    f: impl Fn(&str) -> (String, String),
) -> Result<u8, Fail> {
    let mut failed = false;
    for n in names {
        let (method, path) = f(n);
        match c.call::<Ignored>(&method, &path, None).await {
            Ok(_) => println!("{n}"),
            Err(Fail(m, _)) => {
                eprintln!("{m}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `create`: prints the new container's ID.
pub(crate) async fn create(c: &Conn, opts: CreateOpts) -> Result<u8, Fail> {
    let q = opts
        .name
        .as_deref()
        .map(|n| format!("?name={n}"))
        .unwrap_or_default();
    let v: CreateResponse = c
        .call(
            "POST",
            &format!("/containers/create{q}"),
            json(&create_body(&opts)?),
        )
        .await?;
    println!("{}", v.id);
    Ok(0)
}

/// `start`; with `-a` and one container, attaches and returns its exit code.
pub(crate) async fn start(c: &Conn, attach: bool, containers: Vec<String>) -> Result<u8, Fail> {
    if attach && containers.len() == 1 {
        let id = &containers[0];
        let tty = tty_of(c, id).await?.0;
        let a = c
            .send(
                "POST",
                &format!("/containers/{id}/attach?stream=1&stdout=1&stderr=1"),
                None,
                None,
                true,
            )
            .await?;
        let w = c
            .send(
                "POST",
                &format!("/containers/{id}/wait?condition=next-exit"),
                None,
                None,
                false,
            )
            .await?;
        let s = tokio::spawn(stream(a, tty, false));
        c.call::<Ignored>("POST", &format!("/containers/{id}/start"), None)
            .await?;
        let b = w
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let _ = s.await;
        return Ok(exit_code_of(&b, 0));
    }
    each(c, &containers, |n| {
        ("POST".into(), format!("/containers/{n}/start"))
    })
    .await
}

// The flags of `stop` and `restart`.
#[derive(Args, Clone, Default)]
pub(crate) struct StopOpts {
    /// Seconds to wait before killing the container.
    #[arg(
        short = 't',
        long = "timeout",
        visible_alias = "time",
        allow_hyphen_values = true
    )]
    time: Option<i64>,
    /// Signal to send to the container.
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stop` and `restart` (with `-t` and `-s`).
pub(crate) async fn stop(c: &Conn, verb: &str, o: StopOpts) -> Result<u8, Fail> {
    let mut q: Vec<String> = Vec::new();
    if let Some(t) = o.time {
        q.push(format!("t={t}"));
    }
    if let Some(s) = &o.signal {
        q.push(format!("signal={}", enc(s)));
    }
    let q = if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    };
    each(c, &o.containers, |n| {
        ("POST".into(), format!("/containers/{n}/{verb}{q}"))
    })
    .await
}

/// `kill`.
pub(crate) async fn kill(c: &Conn, signal: String, containers: Vec<String>) -> Result<u8, Fail> {
    each(c, &containers, |n| {
        (
            "POST".into(),
            format!("/containers/{n}/kill?signal={signal}"),
        )
    })
    .await
}

/// `pause` and `unpause`.
pub(crate) async fn pause(c: &Conn, verb: &str, containers: Vec<String>) -> Result<u8, Fail> {
    each(c, &containers, |n| {
        ("POST".into(), format!("/containers/{n}/{verb}"))
    })
    .await
}

// The flags of `update`.
#[derive(Args, Clone, Default)]
pub(crate) struct UpdateOpts {
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long = "memory")]
    memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<f64>,
    /// Tune the container's pids limit.
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits.
    #[arg(long)]
    restart: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `update`.
pub(crate) async fn update(c: &Conn, o: UpdateOpts) -> Result<u8, Fail> {
    let body = berth_api::UpdateBody {
        resources: docker::Resources {
            memory: o
                .memory
                .as_deref()
                .map(|m| parse_memory(m, "-m, --memory"))
                .transpose()?,
            nano_cpus: o.cpus.map(|c| (c * 1e9) as i64),
            pids_limit: o.pids_limit,
            ..Default::default()
        },
        restart_policy: o.restart.as_deref().map(restart_policy).transpose()?,
    };
    let mut failed = false;
    for n in &o.containers {
        match c
            .call::<Ignored>("POST", &format!("/containers/{n}/update"), json(&body))
            .await
        {
            Ok(_) => println!("{n}"),
            Err(Fail(m, _)) => {
                eprintln!("{m}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `rm`.
pub(crate) async fn rm(
    c: &Conn,
    force: bool,
    volumes: bool,
    containers: Vec<String>,
) -> Result<u8, Fail> {
    each(c, &containers, |n| {
        (
            "DELETE".into(),
            format!(
                "/containers/{n}?force={}&v={}",
                u8::from(force),
                u8::from(volumes)
            ),
        )
    })
    .await
}

// The flags of `inspect`.
#[derive(Args, Clone, Default)]
pub(crate) struct InspectOpts {
    /// Format output using a Go template or "json".
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Only inspect objects of this type (container or image).
    #[arg(long = "type")]
    typ: Option<String>,
    /// Display total file sizes if the type is container.
    #[arg(short = 's', long)]
    size: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

// The flags of `ps`.
#[derive(Args, Clone, Default)]
pub(crate) struct PsOpts {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Filter output based on conditions provided (e.g. status=exited, label=k=v).
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a Go template, "table", "table TEMPLATE" or "json".
    #[arg(long)]
    format: Option<String>,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_hyphen_values = true)]
    last: i64,
    /// Show the latest created container (includes all states).
    #[arg(short = 'l', long)]
    latest: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Display total file sizes.
    #[arg(short = 's', long)]
    size: bool,
}

/// `--filter key=value` flags as the API's `filters` parameter (JSON: key -> values).
pub(crate) fn filters_query(filters: &[String]) -> Result<String, Fail> {
    let mut map: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for f in filters {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            Fail(format!("invalid argument \"{f}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"), 125)
        })?;
        map.entry(k.trim()).or_default().push(v);
    }
    if map.is_empty() {
        return Ok(String::new());
    }
    Ok(format!(
        "&filters={}",
        enc(&serde_json::to_string(&map).unwrap_or_default())
    ))
}

/// A Unix time as Go prints a `time.Time` in UTC (`2006-01-02 15:04:05 +0000 UTC`), as
/// Docker's `CreatedAt` columns show it.
pub(crate) fn go_time(secs: i64) -> String {
    let t = berth_image::archive::rfc3339(secs);
    format!(
        "{} {} +0000 UTC",
        t.get(..10).unwrap_or_default(),
        t.get(11..19).unwrap_or_default()
    )
}

/// Seconds since a Unix time.
pub(crate) fn since(secs: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now - secs
}

/// A size as Docker's `units.HumanSizeWithPrecision(size, 3)`: "1.5MB", "742kB", "0B".
pub(crate) fn human_size(n: i64) -> String {
    let mut v = n.max(0) as f64;
    let mut unit = 0;
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    while v >= 1000.0 && unit < units.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    // Go's `%.3g`: three significant digits, trailing zeros dropped.
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{}", units[unit])
}

/// The column headers of `ps --format table`, field by field, as Docker's.
const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

/// One container as `ps --format` sees it (the fields of Docker's ps formatter).
fn ps_item(x: &docker::ContainerSummary, trunc: bool) -> serde_json::Value {
    let id = x.id.clone().unwrap_or_default();
    let mut cmd = x.command.clone().unwrap_or_default();
    if trunc && cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    let mut labels: Vec<String> = x
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    let names: Vec<&str> = x
        .names
        .iter()
        .flatten()
        .map(|n| n.trim_start_matches('/'))
        .collect();
    let size = match (x.size_rw, x.size_root_fs) {
        (Some(rw), Some(root)) => format!("{} (virtual {})", human_size(rw), human_size(root)),
        (Some(rw), None) => human_size(rw),
        _ => "0B".into(),
    };
    let networks: Vec<String> = x
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| {
            let mut v: Vec<String> = n.keys().cloned().collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    let created = x.created.unwrap_or_default();
    serde_json::json!({
        "ID": if trunc { id.chars().take(12).collect() } else { id },
        "Image": x.image.clone().unwrap_or_default(),
        // Quoted as Go's strconv.Quote does (JSON's escapes, for what a command holds).
        "Command": serde_json::to_string(&cmd).unwrap_or_default(),
        "CreatedAt": go_time(created),
        "RunningFor": format!("{} ago", berth_api::human_duration(since(created))),
        "Ports": "",
        "State": x.state.clone().unwrap_or_default(),
        "Status": x.status.clone().unwrap_or_default(),
        "Size": size,
        "Names": names.join(","),
        "Labels": labels.join(","),
        "Mounts": "",
        "Networks": networks.join(","),
        "LocalVolumes": "0",
    })
}

/// `ps`, with Docker's flags: `-a`, `-q`, `--filter`, `--format`, `-n`, `-l`,
/// `--no-trunc`, `-s`.
pub(crate) async fn ps(c: &Conn, o: PsOpts) -> Result<u8, Fail> {
    let format = Format::parse(o.format.as_deref())?;
    let limit = if o.latest { 1 } else { o.last };
    let all = o.all || limit > 0;
    let mut q = format!("/containers/json?all={}", u8::from(all));
    if limit > 0 {
        q.push_str(&format!("&limit={limit}"));
    }
    if o.size {
        q.push_str("&size=1");
    }
    q.push_str(&filters_query(&o.filter)?);
    let list: Vec<docker::ContainerSummary> = c.call("GET", &q, None).await?;
    let items: Vec<serde_json::Value> = list.iter().map(|x| ps_item(x, !o.no_trunc)).collect();
    if o.quiet {
        if o.format.is_some() {
            eprintln!(
                "WARNING: Ignoring custom format, because both --format and --quiet are set."
            );
        }
        for i in &items {
            println!("{}", i["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    if !format.is_default() {
        format.print(&items, PS_HEADERS, true)?;
        return Ok(0);
    }
    let mut head = vec![
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    if o.size {
        head.push("SIZE");
    }
    let mut rows = vec![head.into_iter().map(String::from).collect::<Vec<_>>()];
    for i in &items {
        let f = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
        let mut row = vec![
            f("ID"),
            f("Image"),
            f("Command"),
            f("RunningFor"),
            f("Status"),
            f("Ports"),
            f("Names"),
        ];
        if o.size {
            row.push(f("Size"));
        }
        rows.push(row);
    }
    table(rows);
    Ok(0)
}

/// `inspect`: containers first, then images; the first unknown name fails. The objects
/// are printed as the daemon sent them, field for field (as `docker inspect` does), so
/// they are kept as JSON values, not read into a model that could drop a field.
pub(crate) async fn inspect(c: &Conn, o: InspectOpts) -> Result<u8, Fail> {
    let format = Format::parse(o.format.as_deref())?;
    if matches!(format, Format::Table(..)) {
        return Err(Fail(
            "Error: inspect does not take a \"table\" format".into(),
            1,
        ));
    }
    let kinds: &[&str] = match o.typ.as_deref() {
        None => &["container", "image"],
        Some("container") => &["container"],
        Some("image") => &["image"],
        Some(t) => {
            return Err(Fail(
                format!("Error: \"{t}\" is not a valid value for --type"),
                1,
            ))
        }
    };
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut missing = None;
    for n in &o.names {
        let mut found = None;
        for k in kinds {
            let path = match *k {
                "container" => format!("/containers/{n}/json?size={}", u8::from(o.size)),
                _ => format!("/images/{n}/json"),
            };
            if let Ok(v) = c.call::<serde_json::Value>("GET", &path, None).await {
                found = Some(v);
                break;
            }
        }
        match found {
            Some(v) => out.push(v),
            None => {
                missing = Some(match o.typ.as_deref() {
                    Some(t) => format!("Error: No such {t}: {n}"),
                    None => format!("Error: No such object: {n}"),
                });
                break;
            }
        }
    }
    match format {
        Format::Default => {
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default())
        }
        // `--format json`: the objects as one JSON array.
        Format::Json => println!("{}", serde_json::to_string(&out).unwrap_or_default()),
        _ => format.print(&out, &[], false)?,
    }
    match missing {
        Some(m) => Err(Fail(m, 1)),
        None => Ok(0),
    }
}

/// `wait`: prints each container's exit code.
pub(crate) async fn wait(c: &Conn, containers: Vec<String>) -> Result<u8, Fail> {
    for n in containers {
        let v: docker::ContainerWaitResponse = c
            .call("POST", &format!("/containers/{n}/wait"), None)
            .await?;
        println!("{}", v.status_code);
    }
    Ok(0)
}

/// `top`.
pub(crate) async fn top(c: &Conn, container: String) -> Result<u8, Fail> {
    let v: docker::ContainerTopResponse = c
        .call("GET", &format!("/containers/{container}/top"), None)
        .await?;
    let mut rows = vec![v.titles.unwrap_or_default()];
    rows.extend(v.processes.unwrap_or_default());
    table(rows);
    Ok(0)
}

/// `stats`: one sample per container.
pub(crate) async fn stats(c: &Conn, containers: Vec<String>) -> Result<u8, Fail> {
    let mut rows = vec![["CONTAINER", "MEM USAGE", "LIMIT", "PIDS"]
        .map(String::from)
        .to_vec()];
    for n in containers {
        let v: berth_api::ContainerStats = c
            .call("GET", &format!("/containers/{n}/stats?stream=0"), None)
            .await?;
        let shown = |x: Option<u64>| x.map_or_else(|| "null".to_owned(), |x| x.to_string());
        rows.push(vec![
            n,
            shown(v.memory_stats.usage),
            shown(v.memory_stats.limit),
            shown(v.pids_stats.current),
        ]);
    }
    table(rows);
    Ok(0)
}

/// `commit`: prints the new image's ID.
pub(crate) async fn commit(
    c: &Conn,
    container: String,
    repository: Option<String>,
) -> Result<u8, Fail> {
    let q = repository
        .map(|r| format!("&repo={}", enc(&r)))
        .unwrap_or_default();
    let v: IdResponse = c
        .call("POST", &format!("/commit?container={container}{q}"), None)
        .await?;
    println!("{}", v.id);
    Ok(0)
}

/// A container's `Tty` and `OpenStdin`, from its inspect object.
pub(crate) async fn tty_of(c: &Conn, container: &str) -> Result<(bool, bool), Fail> {
    let info: berth_api::ContainerInspect = c
        .call("GET", &format!("/containers/{container}/json"), None)
        .await?;
    let cfg = info.base.config.unwrap_or_default();
    Ok((cfg.tty.unwrap_or(false), cfg.open_stdin.unwrap_or(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_parses_them() {
        let p = |s| parse_duration(s, "--health-interval").ok();
        assert_eq!(p("30s"), Some(30_000_000_000));
        assert_eq!(p("1m30s"), Some(90_000_000_000));
        assert_eq!(p("500ms"), Some(500_000_000));
        assert_eq!(p("1.5h"), Some(5_400_000_000_000));
        assert_eq!(p("0"), Some(0));
        for bad in ["", "10", "5x", "s", "1m-2s"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }
}
