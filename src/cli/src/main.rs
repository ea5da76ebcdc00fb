//! `berth`: the command-line client of berthd, with Docker's command names, common flags
//! and exit codes (125 for daemon errors, 126/127 when the command can't run, the
//! workload's status otherwise). `-H` or `BERTH_HOST` picks the daemon; with neither, and
//! no daemon answering on the default socket, it starts one in the background.

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEFAULT_SOCK: &str = "/run/berth/berth.sock";

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: containers in microVMs, with Docker's commands"
)]
struct Cli {
    /// Daemon socket (unix:///PATH).
    #[arg(short = 'H', long = "host", env = "BERTH_HOST", global = true)]
    host: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Default)]
struct CreateOpts {
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

#[derive(Subcommand)]
enum Cmd {
    /// Create and run a new container from an image.
    Run {
        /// Run in the background and print the container ID.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        opts: CreateOpts,
    },
    /// Create a new container.
    Create {
        #[command(flatten)]
        opts: CreateOpts,
    },
    /// Start stopped containers.
    Start {
        /// Attach and wait.
        #[arg(short = 'a', long)]
        attach: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers.
    Stop {
        #[arg(short = 't', long = "time")]
        time: Option<i64>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill running containers.
    Kill {
        #[arg(short = 's', long = "signal", default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps {
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Fetch a container's logs.
    Logs {
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(short = 't', long)]
        timestamps: bool,
        #[arg(long)]
        tail: Option<String>,
        #[arg(long)]
        since: Option<String>,
        container: String,
    },
    /// Run a command in a running container.
    Exec {
        #[arg(short = 'i', long)]
        interactive: bool,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(short = 'd', long)]
        detach: bool,
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        #[arg(short = 'w', long = "workdir")]
        workdir: Option<String>,
        #[arg(short = 'u', long = "user")]
        user: Option<String>,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Attach to a running container.
    Attach { container: String },
    /// Low-level information on containers or images.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Block until containers stop, then print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Display the running processes of a container.
    Top { container: String },
    /// Resource usage of containers (one sample).
    Stats {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Create a new image from a container's changes.
    Commit {
        container: String,
        repository: Option<String>,
    },
    /// List images.
    Images {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Download an image from a registry.
    Pull { image: String },
    /// Upload an image to a registry.
    Push { image: String },
    /// Create a tag TARGET that refers to SOURCE.
    Tag { source: String, target: String },
    /// Remove images.
    Rmi {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Save images to a tar archive (stdout by default).
    Save {
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a tar archive (stdin by default).
    Load {
        #[arg(short = 'i', long)]
        input: Option<PathBuf>,
    },
    /// Import a root filesystem tarball ("-" for stdin) as an image.
    Import {
        #[arg(short = 'c', long = "change")]
        change: Vec<String>,
        #[arg(short = 'm', long)]
        message: Option<String>,
        file: String,
        reference: Option<String>,
    },
    /// Display system-wide information.
    Info,
    /// Show the client and daemon versions.
    Version,
    /// Manage berth.
    System {
        #[command(subcommand)]
        cmd: SystemCmd,
    },
}

#[derive(Subcommand)]
enum SystemCmd {
    /// Remove stopped containers and dangling images.
    Prune {
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// A failure: the message and the exit code.
struct Fail(String, u8);

fn daemon_err(m: impl Into<String>) -> Fail {
    Fail(m.into(), 125)
}

struct Conn {
    sock: PathBuf,
}

type Resp = Response<Incoming>;

fn full(b: Bytes) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    Full::new(b).map_err(|never| match never {}).boxed()
}

impl Conn {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        raw: Option<Bytes>,
        upgrade: bool,
    ) -> Result<Resp, Fail> {
        let s = tokio::net::UnixStream::connect(&self.sock)
            .await
            .map_err(|e| {
                daemon_err(format!(
                    "Cannot connect to the berth daemon at unix://{}: {e}. Is berthd running?",
                    self.sock.display()
                ))
            })?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| daemon_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://berth/v1.44{path}"))
            .header("Host", "berth");
        if upgrade {
            b = b.header("Connection", "Upgrade").header("Upgrade", "tcp");
        }
        let req = match (body, raw) {
            (Some(v), _) => b
                .header("Content-Type", "application/json")
                .body(full(Bytes::from(v.to_string()))),
            (None, Some(r)) => b.header("Content-Type", "application/x-tar").body(full(r)),
            (None, None) => b.body(full(Bytes::new())),
        }
        .map_err(|e| daemon_err(e.to_string()))?;
        tx.send_request(req)
            .await
            .map_err(|e| daemon_err(e.to_string()))
    }

    /// A request whose reply is JSON (or empty); errors become Docker's "Error response
    /// from daemon: ...".
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Fail> {
        let r = self.send(method, path, body, None, false).await?;
        json_reply(r).await
    }
}

async fn read_body(r: Resp, mut each: impl FnMut(&[u8])) -> Result<(), Fail> {
    let mut body = r.into_body();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| daemon_err(e.to_string()))?;
        if let Some(d) = f.data_ref() {
            each(d);
        }
    }
    Ok(())
}

/// A JSON (or empty) reply; an error status becomes the daemon's message.
async fn json_reply(r: Resp) -> Result<Value, Fail> {
    let status = r.status();
    if !status.is_success() && status.as_u16() != 304 {
        return Err(error_of(r).await);
    }
    let bytes = r
        .into_body()
        .collect()
        .await
        .map_err(|e| daemon_err(e.to_string()))?
        .to_bytes();
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The daemon's error reply as Docker prints it: "Error response from daemon: ...".
async fn error_of(r: Resp) -> Fail {
    let status = r.status();
    let b = r
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let m = v["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&b)));
    daemon_err(format!("Error response from daemon: {m}"))
}

/// Prints a JSON-lines progress stream (pull, push, load); the first error fails.
async fn progress(r: Resp) -> Result<(), Fail> {
    let status = r.status();
    let tty = std::io::stdout().is_terminal();
    let mut buf = Vec::new();
    let mut err = None;
    read_body(r, |d| {
        buf.extend_from_slice(d);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(e) = v["error"].as_str() {
                err = Some(e.to_owned());
                continue;
            }
            if let Some(m) = v["message"].as_str() {
                err = Some(m.to_owned());
                continue;
            }
            if let Some(s) = v["stream"].as_str() {
                print!("{s}");
                continue;
            }
            let status = v["status"].as_str().unwrap_or("");
            let line = match v["id"].as_str() {
                Some(id) if !v["progress"].as_str().unwrap_or("").is_empty() => {
                    if !tty {
                        continue;
                    }
                    format!("\r{id}: {status} {}", v["progress"].as_str().unwrap_or(""))
                }
                Some(id) => format!("{}{id}: {status}\n", if tty { "\r\x1b[2K" } else { "" }),
                None if !status.is_empty() => format!("{status}\n"),
                None => continue,
            };
            print!("{line}");
            let _ = std::io::stdout().flush();
        }
    })
    .await?;
    if let Some(e) = err {
        return Err(daemon_err(format!("Error response from daemon: {e}")));
    }
    if !status.is_success() {
        return Err(daemon_err(format!(
            "Error response from daemon: HTTP {status}"
        )));
    }
    Ok(())
}

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

/// Puts the terminal in raw mode while it lives.
struct RawTerm(Option<libc::termios>);

impl RawTerm {
    fn new(on: bool) -> RawTerm {
        if !on || !std::io::stdin().is_terminal() {
            return RawTerm(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal (checked above); `t` is a valid out pointer.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawTerm(None);
        }
        let old = t;
        // SAFETY: cfmakeraw edits the struct in place.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: applies a valid termios to fd 0.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        RawTerm(Some(old))
    }
}

impl Drop for RawTerm {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the saved termios on fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

fn term_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it for fd 1.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer for the ioctl.
    (unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut w) } == 0 && w.ws_row > 0)
        .then_some((w.ws_row, w.ws_col))
}

/// Streams an upgraded attach/exec connection to this terminal: stdin up (then a
/// half-close), stdout/stderr down (demultiplexed unless a TTY).
async fn stream(r: Resp, tty: bool, stdin: bool) -> Result<(), Fail> {
    if r.status().as_u16() != 101 {
        return Err(error_of(r).await);
    }
    let up = hyper::upgrade::on(r)
        .await
        .map_err(|e| daemon_err(e.to_string()))?;
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
    let input = tokio::spawn(async move {
        if stdin {
            let mut i = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = i.read(&mut buf).await {
                if n == 0 || wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    if tty {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    } else {
        let mut hdr = [0u8; 8];
        while rd.read_exact(&mut hdr).await.is_ok() {
            let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
            let mut data = vec![0u8; len];
            if rd.read_exact(&mut data).await.is_err() {
                break;
            }
            let w: &mut dyn Write = if hdr[0] == 2 { &mut err } else { &mut out };
            let _ = w.write_all(&data);
            let _ = w.flush();
        }
    }
    input.abort();
    Ok(())
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

async fn run_cmd(c: &Conn, opts: CreateOpts, detach: bool) -> Result<u8, Fail> {
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

fn full_name(image: &str) -> String {
    if image.contains('@') || image.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

async fn pull(c: &Conn, image: &str) -> Result<(), Fail> {
    let (name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((n, t)) => (n.to_owned(), t.to_owned()),
        None => (image.to_owned(), "latest".to_owned()),
    };
    let r = c
        .send(
            "POST",
            &format!("/images/create?fromImage={}&tag={}", enc(&name), enc(&tag)),
            None,
            None,
            false,
        )
        .await?;
    progress(r).await
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn table(rows: Vec<Vec<String>>) {
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map(|s| s.len()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i] + 3))
            .collect();
        println!("{}", line.concat().trim_end());
    }
}

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

async fn dispatch(c: &Conn, cmd: Cmd) -> Result<u8, Fail> {
    match cmd {
        Cmd::Run { detach, opts } => run_cmd(c, opts, detach).await,
        Cmd::Create { opts } => {
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
        Cmd::Start { attach, containers } => {
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
        Cmd::Stop { time, containers } => {
            let q = time.map(|t| format!("?t={t}")).unwrap_or_default();
            each(c, &containers, |n| {
                ("POST".into(), format!("/containers/{n}/stop{q}"))
            })
            .await
        }
        Cmd::Kill { signal, containers } => {
            each(c, &containers, |n| {
                (
                    "POST".into(),
                    format!("/containers/{n}/kill?signal={signal}"),
                )
            })
            .await
        }
        Cmd::Restart { containers } => {
            each(c, &containers, |n| {
                ("POST".into(), format!("/containers/{n}/restart"))
            })
            .await
        }
        Cmd::Rm { force, containers } => {
            each(c, &containers, |n| {
                (
                    "DELETE".into(),
                    format!("/containers/{n}?force={}", u8::from(force)),
                )
            })
            .await
        }
        Cmd::Ps { all, quiet } => {
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
        Cmd::Logs {
            follow,
            timestamps,
            tail,
            since,
            container,
        } => {
            let info = c
                .call("GET", &format!("/containers/{container}/json"), None)
                .await?;
            let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
            let mut q = format!(
                "stdout=1&stderr=1&follow={}&timestamps={}",
                u8::from(follow),
                u8::from(timestamps)
            );
            if let Some(t) = tail {
                q.push_str(&format!("&tail={t}"));
            }
            if let Some(s) = since {
                q.push_str(&format!("&since={s}"));
            }
            let r = c
                .send(
                    "GET",
                    &format!("/containers/{container}/logs?{q}"),
                    None,
                    None,
                    false,
                )
                .await?;
            let mut buf = Vec::new();
            read_body(r, |d| {
                if tty {
                    let _ = std::io::stdout().write_all(d);
                    return;
                }
                buf.extend_from_slice(d);
                while buf.len() >= 8 {
                    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
                    if buf.len() < 8 + len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..8 + len).collect();
                    if frame[0] == 2 {
                        let _ = std::io::stderr().write_all(&frame[8..]);
                    } else {
                        let _ = std::io::stdout().write_all(&frame[8..]);
                        let _ = std::io::stdout().flush();
                    }
                }
            })
            .await?;
            Ok(0)
        }
        Cmd::Exec {
            interactive,
            tty,
            detach,
            env,
            workdir,
            user,
            container,
            command,
        } => {
            let mut body = json!({"Cmd": command, "Tty": tty, "AttachStdin": interactive, "AttachStdout": !detach, "AttachStderr": !detach, "Env": env});
            if let Some(w) = workdir {
                body["WorkingDir"] = json!(w);
            }
            if let Some(u) = user {
                body["User"] = json!(u);
            }
            let v = c
                .call("POST", &format!("/containers/{container}/exec"), Some(body))
                .await?;
            let id = v["Id"].as_str().unwrap_or_default().to_owned();
            let r = c
                .send(
                    "POST",
                    &format!("/exec/{id}/start"),
                    Some(json!({"Detach": detach, "Tty": tty})),
                    None,
                    !detach,
                )
                .await?;
            if detach {
                return Ok(0);
            }
            {
                let _raw = RawTerm::new(tty && interactive);
                stream(r, tty, interactive).await?;
            }
            for _ in 0..100 {
                let v = c.call("GET", &format!("/exec/{id}/json"), None).await?;
                if !v["Running"].as_bool().unwrap_or(false) && !v["ExitCode"].is_null() {
                    return Ok(v["ExitCode"].as_i64().unwrap_or(0).clamp(0, 255) as u8);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(0)
        }
        Cmd::Attach { container } => {
            let info = c
                .call("GET", &format!("/containers/{container}/json"), None)
                .await?;
            let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
            let stdin = info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
            let r = c
                .send(
                    "POST",
                    &format!(
                        "/containers/{container}/attach?stream=1&stdout=1&stderr=1&stdin={}",
                        u8::from(stdin)
                    ),
                    None,
                    None,
                    true,
                )
                .await?;
            let _raw = RawTerm::new(tty && stdin);
            stream(r, tty, stdin).await?;
            Ok(0)
        }
        Cmd::Inspect { names } => {
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
        Cmd::Wait { containers } => {
            for n in containers {
                let v = c
                    .call("POST", &format!("/containers/{n}/wait"), None)
                    .await?;
                println!("{}", v["StatusCode"]);
            }
            Ok(0)
        }
        Cmd::Top { container } => {
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
        Cmd::Stats { containers } => {
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
        Cmd::Commit {
            container,
            repository,
        } => {
            let q = repository
                .map(|r| format!("&repo={}", enc(&r)))
                .unwrap_or_default();
            let v = c
                .call("POST", &format!("/commit?container={container}{q}"), None)
                .await?;
            println!("{}", v["Id"].as_str().unwrap_or_default());
            Ok(0)
        }
        Cmd::Images { quiet } => {
            let v = c.call("GET", "/images/json", None).await?;
            let list = v.as_array().cloned().unwrap_or_default();
            let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "SIZE"]
                .map(String::from)
                .to_vec()];
            for x in list {
                let id = x["Id"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or_default()
                    .to_owned();
                if quiet {
                    println!("{id}");
                    continue;
                }
                let size = format!("{:.1}MB", x["Size"].as_f64().unwrap_or(0.0) / 1e6);
                let tags: Vec<String> = x["RepoTags"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect();
                if tags.is_empty() {
                    rows.push(vec![
                        "<none>".into(),
                        "<none>".into(),
                        id.clone(),
                        size.clone(),
                    ]);
                }
                for t in tags {
                    let (r, tag) = t
                        .rsplit_once(':')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .unwrap_or((t.clone(), String::new()));
                    rows.push(vec![r, tag, id.clone(), size.clone()]);
                }
            }
            if !quiet {
                table(rows);
            }
            Ok(0)
        }
        Cmd::Pull { image } => pull(c, &image).await.map(|_| 0),
        Cmd::Push { image } => {
            let (name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                Some((n, t)) => (n.to_owned(), t.to_owned()),
                None => (image.clone(), "latest".to_owned()),
            };
            let r = c
                .send(
                    "POST",
                    &format!("/images/{name}/push?tag={}", enc(&tag)),
                    None,
                    None,
                    false,
                )
                .await?;
            progress(r).await.map(|_| 0)
        }
        Cmd::Tag { source, target } => {
            let (repo, tag) = match target.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                Some((r, t)) => (r.to_owned(), t.to_owned()),
                None => (target.clone(), "latest".to_owned()),
            };
            c.call(
                "POST",
                &format!("/images/{source}/tag?repo={}&tag={}", enc(&repo), enc(&tag)),
                None,
            )
            .await?;
            Ok(0)
        }
        Cmd::Rmi { force, images } => {
            let mut failed = false;
            for i in images {
                match c
                    .call(
                        "DELETE",
                        &format!("/images/{i}?force={}", u8::from(force)),
                        None,
                    )
                    .await
                {
                    Ok(v) => {
                        for x in v.as_array().cloned().unwrap_or_default() {
                            if let Some(u) = x["Untagged"].as_str() {
                                println!("Untagged: {u}");
                            }
                            if let Some(d) = x["Deleted"].as_str() {
                                println!("Deleted: {d}");
                            }
                        }
                    }
                    Err(Fail(m, _)) => {
                        eprintln!("{m}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        Cmd::Save { output, images } => {
            if output.is_none() && std::io::stdout().is_terminal() {
                return Err(Fail(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                    1,
                ));
            }
            let q: Vec<String> = images.iter().map(|i| format!("names={}", enc(i))).collect();
            let r = c
                .send(
                    "GET",
                    &format!("/images/get?{}", q.join("&")),
                    None,
                    None,
                    false,
                )
                .await?;
            if !r.status().is_success() {
                return Err(error_of(r).await);
            }
            let mut sink: Box<dyn Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .map_err(|e| Fail(format!("{}: {e}", p.display()), 1))?,
                ),
                None => Box::new(std::io::stdout()),
            };
            let mut werr = None;
            read_body(r, |d| {
                if let Err(e) = sink.write_all(d) {
                    werr = Some(e.to_string());
                }
            })
            .await?;
            if let Some(e) = werr {
                return Err(Fail(e, 1));
            }
            Ok(0)
        }
        Cmd::Load { input } => {
            let data = match &input {
                Some(p) => {
                    std::fs::read(p).map_err(|e| Fail(format!("{}: {e}", p.display()), 1))?
                }
                None => {
                    let mut v = Vec::new();
                    tokio::io::stdin()
                        .read_to_end(&mut v)
                        .await
                        .map_err(|e| Fail(e.to_string(), 1))?;
                    v
                }
            };
            let r = c
                .send("POST", "/images/load", None, Some(Bytes::from(data)), false)
                .await?;
            progress(r).await.map(|_| 0)
        }
        Cmd::Import {
            change,
            message,
            file,
            reference,
        } => {
            let data = if file == "-" {
                let mut v = Vec::new();
                tokio::io::stdin()
                    .read_to_end(&mut v)
                    .await
                    .map_err(|e| Fail(e.to_string(), 1))?;
                v
            } else {
                std::fs::read(&file).map_err(|e| Fail(format!("{file}: {e}"), 1))?
            };
            let mut q = String::from("fromSrc=-");
            if let Some(r) = reference {
                let (repo, tag) = match r.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                    Some((a, b)) => (a.to_owned(), b.to_owned()),
                    None => (r.clone(), String::new()),
                };
                q.push_str(&format!("&repo={}&tag={}", enc(&repo), enc(&tag)));
            }
            for ch in change {
                q.push_str(&format!("&changes={}", enc(&ch)));
            }
            if let Some(m) = message {
                q.push_str(&format!("&message={}", enc(&m)));
            }
            let r = c
                .send(
                    "POST",
                    &format!("/images/create?{q}"),
                    None,
                    Some(Bytes::from(data)),
                    false,
                )
                .await?;
            let v = json_reply(r).await?;
            println!("{}", v["status"].as_str().unwrap_or_default());
            Ok(0)
        }
        Cmd::Info => {
            let v = c.call("GET", "/info", None).await?;
            println!("Server:");
            for k in [
                "Containers",
                "ContainersRunning",
                "ContainersStopped",
                "Images",
                "ServerVersion",
                "Isolation",
                "KernelVersion",
                "OperatingSystem",
                "NCPU",
                "DockerRootDir",
            ] {
                println!(
                    " {k}: {}",
                    v[k].as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v[k].to_string())
                );
            }
            for w in v["Warnings"].as_array().cloned().unwrap_or_default() {
                println!("WARNING: {}", w.as_str().unwrap_or_default());
            }
            Ok(0)
        }
        Cmd::Version => {
            println!(
                "Client:\n Version: {}\n API version: 1.44",
                env!("CARGO_PKG_VERSION")
            );
            let v = c.call("GET", "/version", None).await?;
            println!(
                "Server: berth\n Version: {}\n API version: {} (minimum version {})",
                v["Version"].as_str().unwrap_or(""),
                v["ApiVersion"].as_str().unwrap_or(""),
                v["MinAPIVersion"].as_str().unwrap_or("")
            );
            Ok(0)
        }
        Cmd::System {
            cmd: SystemCmd::Prune { force },
        } => {
            if !force {
                eprintln!("WARNING! This will remove all stopped containers and dangling images. Pass -f to go ahead.");
                return Ok(1);
            }
            let a = c.call("POST", "/containers/prune", None).await?;
            for id in a["ContainersDeleted"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                println!("Deleted Container: {}", id.as_str().unwrap_or_default());
            }
            let b = c.call("POST", "/images/prune", None).await?;
            for x in b["ImagesDeleted"].as_array().cloned().unwrap_or_default() {
                println!(
                    "Deleted Image: {}",
                    x["Deleted"].as_str().unwrap_or_default()
                );
            }
            println!("Total reclaimed space: {}B", b["SpaceReclaimed"]);
            Ok(0)
        }
    }
}

/// When nobody answers on the default socket, starts berthd in the background (the
/// embedded default) and waits for it.
fn ensure_daemon(sock: &PathBuf) -> Result<(), Fail> {
    if std::os::unix::net::UnixStream::connect(sock).is_ok() {
        return Ok(());
    }
    let berthd = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berthd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("berthd"));
    let log_dir = PathBuf::from("/var/log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("berthd.log"))
        .ok();
    eprintln!(
        "berth: no daemon at {}; starting {} in the background (log: /var/log/berthd.log)",
        sock.display(),
        berthd.display()
    );
    let mut cmd = std::process::Command::new(&berthd);
    cmd.arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if let Some(l) = log {
        cmd.stderr(l);
    }
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; called in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| daemon_err(format!("starting {}: {e}", berthd.display())))?;
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(daemon_err(format!(
        "berthd did not come up at {} (see /var/log/berthd.log)",
        sock.display()
    )))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sock = match &cli.host {
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None => {
                eprintln!("berth: -H {h}: only unix:///PATH is supported");
                return ExitCode::from(125);
            }
        },
        None => {
            let s = PathBuf::from(DEFAULT_SOCK);
            if let Err(Fail(m, code)) = ensure_daemon(&s) {
                eprintln!("berth: {m}");
                return ExitCode::from(code);
            }
            s
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(125);
        }
    };
    let c = Conn { sock };
    match rt.block_on(dispatch(&c, cli.cmd)) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(m, code)) => {
            if !m.is_empty() {
                eprintln!("berth: {m}");
            }
            ExitCode::from(code)
        }
    }
}
