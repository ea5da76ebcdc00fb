//! Container commands: run, create, start, stop, kill, restart, rm, ps, inspect, wait,
//! top, stats and commit, with the create flags and request body that run and create share.

use crate::client::{enc, Conn, Fail};
use crate::images::{full_name, pull};
use crate::output::table;
use crate::stream::{stream, term_size, RawTerm};
use clap::Args;
use http_body_util::BodyExt;
use serde_json::{json, Value};
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
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Parses a `--memory` size (b, k, m or g) into bytes.
fn parse_memory(s: &str) -> Result<i64, Fail> {
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
                format!("invalid argument \"{s}\" for \"-m, --memory\" flag: invalid size"),
                125,
            )
        })
}

/// The `/containers/create` body for the flags.
fn create_body(o: &CreateOpts) -> Result<Value, Fail> {
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
    let mut hc = json!({"AutoRemove": o.rm, "NetworkMode": "default"});
    if let Some(m) = &o.memory {
        hc["Memory"] = json!(parse_memory(m)?);
    }
    if let Some(c) = o.cpus {
        hc["NanoCpus"] = json!((c * 1e9) as i64);
    }
    if let Some(p) = o.pids_limit {
        hc["PidsLimit"] = json!(p);
    }
    if let Some(i) = &o.isolation {
        hc["Isolation"] = json!(i);
    }
    let mut v = json!({
        "Image": o.image, "Env": env, "Tty": o.tty, "OpenStdin": o.interactive, "StdinOnce": o.interactive,
        "AttachStdin": o.interactive, "AttachStdout": true, "AttachStderr": true, "HostConfig": hc,
    });
    if !o.command.is_empty() {
        v["Cmd"] = json!(o.command);
    }
    if let Some(e) = &o.entrypoint {
        v["Entrypoint"] = json!([e]);
    }
    for (k, val) in [
        ("WorkingDir", &o.workdir),
        ("User", &o.user),
        ("Hostname", &o.hostname),
    ] {
        if let Some(x) = val {
            v[k] = json!(x);
        }
    }
    Ok(v)
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
    let body = create_body(&opts)?;
    let q = opts
        .name
        .as_deref()
        .map(|n| format!("?name={n}"))
        .unwrap_or_default();
    let created = match c
        .call(
            "POST",
            &format!("/containers/create{q}"),
            Some(body.clone()),
        )
        .await
    {
        Ok(v) => v,
        Err(Fail(m, _)) if m.contains("No such image") => {
            eprintln!("Unable to find image '{}' locally", full_name(&opts.image));
            pull(c, &opts.image).await?;
            c.call("POST", &format!("/containers/create{q}"), Some(body))
                .await?
        }
        Err(e) => return Err(e),
    };
    let id = created["Id"].as_str().unwrap_or_default().to_owned();
    if detach {
        if let Err(Fail(m, _)) = c
            .call("POST", &format!("/containers/{id}/start"), None)
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
        .call("POST", &format!("/containers/{id}/start"), None)
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
                .call(
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
    let v: Value = serde_json::from_slice(&code).unwrap_or(Value::Null);
    Ok(v["StatusCode"].as_i64().unwrap_or(125).clamp(0, 255) as u8)
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
        match c.call(&method, &path, None).await {
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
    let v = c
        .call(
            "POST",
            &format!("/containers/create{q}"),
            Some(create_body(&opts)?),
        )
        .await?;
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(0)
}

/// `start`; with `-a` and one container, attaches and returns its exit code.
pub(crate) async fn start(c: &Conn, attach: bool, containers: Vec<String>) -> Result<u8, Fail> {
    if attach && containers.len() == 1 {
        let id = &containers[0];
        let info = c
            .call("GET", &format!("/containers/{id}/json"), None)
            .await?;
        let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
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
        c.call("POST", &format!("/containers/{id}/start"), None)
            .await?;
        let b = w
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let _ = s.await;
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        return Ok(v["StatusCode"].as_i64().unwrap_or(0).clamp(0, 255) as u8);
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
    let v = c
        .call(
            "GET",
            &format!("/containers/json?all={}", u8::from(all)),
            None,
        )
        .await?;
    let list = v.as_array().cloned().unwrap_or_default();
    if quiet {
        for x in list {
            println!("{}", &x["Id"].as_str().unwrap_or_default()[..12]);
        }
        return Ok(0);
    }
    let mut rows = vec![["CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"]
        .map(String::from)
        .to_vec()];
    for x in list {
        let mut cmd = x["Command"].as_str().unwrap_or_default().to_owned();
        if cmd.len() > 20 {
            cmd.truncate(19);
            cmd.push('…');
        }
        rows.push(vec![
            x["Id"].as_str().unwrap_or_default()[..12].to_owned(),
            x["Image"].as_str().unwrap_or_default().to_owned(),
            format!("\"{cmd}\""),
            x["Status"].as_str().unwrap_or_default().to_owned(),
            x["Names"][0]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
        ]);
    }
    table(rows);
    Ok(0)
}

/// `inspect`: containers first, then images; the first unknown name fails.
pub(crate) async fn inspect(c: &Conn, names: Vec<String>) -> Result<u8, Fail> {
    let mut out = Vec::new();
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
        let v = c
            .call("POST", &format!("/containers/{n}/wait"), None)
            .await?;
        println!("{}", v["StatusCode"]);
    }
    Ok(0)
}

/// `top`.
pub(crate) async fn top(c: &Conn, container: String) -> Result<u8, Fail> {
    let v = c
        .call("GET", &format!("/containers/{container}/top"), None)
        .await?;
    let mut rows = vec![v["Titles"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_owned())
        .collect()];
    for p in v["Processes"].as_array().cloned().unwrap_or_default() {
        rows.push(
            p.as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|t| t.as_str().unwrap_or_default().to_owned())
                .collect(),
        );
    }
    table(rows);
    Ok(0)
}

/// `stats`: one sample per container.
pub(crate) async fn stats(c: &Conn, containers: Vec<String>) -> Result<u8, Fail> {
    let mut rows = vec![["CONTAINER", "MEM USAGE", "LIMIT", "PIDS"]
        .map(String::from)
        .to_vec()];
    for n in containers {
        let v = c
            .call("GET", &format!("/containers/{n}/stats?stream=0"), None)
            .await?;
        rows.push(vec![
            n,
            v["memory_stats"]["usage"].to_string(),
            v["memory_stats"]["limit"].to_string(),
            v["pids_stats"]["current"].to_string(),
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
    let v = c
        .call("POST", &format!("/commit?container={container}{q}"), None)
        .await?;
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(0)
}
