//! Container commands: run, create, start, stop, kill, restart, rm, ps, inspect, wait,
//! top, stats and commit, with the create flags and request body that run and create share.

use crate::client::{enc, json, Conn, Fail, Ignored};
use crate::images::{full_name, pull};
use crate::output::table;
use crate::stream::{stream, term_size, RawTerm};
use berth_api::{docker, CreateBody, CreateResponse, HostConfig, IdResponse};
use clap::Args;
use http_body_util::BodyExt;
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
fn parse_memory(s: &str, flag: &str) -> Result<i64, Fail> {
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
    let host_config = HostConfig {
        base: docker::HostConfig {
            auto_remove: Some(o.rm),
            network_mode: Some("default".into()),
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
            healthcheck: healthcheck(o)?,
            ..Default::default()
        },
        host_config: Some(host_config),
        networking_config: None,
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

/// `stop`.
pub(crate) async fn stop(c: &Conn, time: Option<i64>, containers: Vec<String>) -> Result<u8, Fail> {
    let q = time.map(|t| format!("?t={t}")).unwrap_or_default();
    each(c, &containers, |n| {
        ("POST".into(), format!("/containers/{n}/stop{q}"))
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

/// `restart`.
pub(crate) async fn restart(c: &Conn, containers: Vec<String>) -> Result<u8, Fail> {
    each(c, &containers, |n| {
        ("POST".into(), format!("/containers/{n}/restart"))
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
pub(crate) async fn rm(c: &Conn, force: bool, containers: Vec<String>) -> Result<u8, Fail> {
    each(c, &containers, |n| {
        (
            "DELETE".into(),
            format!("/containers/{n}?force={}", u8::from(force)),
        )
    })
    .await
}

/// `ps`.
pub(crate) async fn ps(c: &Conn, all: bool, quiet: bool) -> Result<u8, Fail> {
    let list: Vec<docker::ContainerSummary> = c
        .call(
            "GET",
            &format!("/containers/json?all={}", u8::from(all)),
            None,
        )
        .await?;
    let short = |id: &Option<String>| id.as_deref().unwrap_or_default().chars().take(12).collect();
    if quiet {
        for x in list {
            println!("{}", short(&x.id) as String);
        }
        return Ok(0);
    }
    let mut rows = vec![["CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"]
        .map(String::from)
        .to_vec()];
    for x in list {
        let mut cmd = x.command.clone().unwrap_or_default();
        if cmd.len() > 20 {
            cmd.truncate(19);
            cmd.push('…');
        }
        rows.push(vec![
            short(&x.id),
            x.image.clone().unwrap_or_default(),
            format!("\"{cmd}\""),
            x.status.clone().unwrap_or_default(),
            x.names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
        ]);
    }
    table(rows);
    Ok(0)
}

/// `inspect`: containers first, then images; the first unknown name fails. The objects
/// are printed as the daemon sent them, field for field (as `docker inspect` does), so
/// they are kept as JSON values, not read into a model that could drop a field.
pub(crate) async fn inspect(c: &Conn, names: Vec<String>) -> Result<u8, Fail> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    for n in &names {
        match c.call("GET", &format!("/containers/{n}/json"), None).await {
            Ok(v) => out.push(v),
            Err(_) => match c.call("GET", &format!("/images/{n}/json"), None).await {
                Ok(v) => out.push(v),
                Err(_) => {
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                    return Err(Fail(format!("Error: No such object: {n}"), 1));
                }
            },
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(0)
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
