//! `berthd`: the berth daemon. Owns images and containers and serves the Docker Engine
//! API (1.44) on a Unix socket; every container is a microVM (berth-vmm plus the guest
//! agent) unless it asks for process isolation. See docs/daemon.md.

use berthd::daemon::{Daemon, Opts};
use berthd::log;
use berthd::router;
use berthd::sandbox::Isolation;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "the berth daemon (Docker Engine API 1.44)"
)]
struct Cli {
    /// Where to listen: unix:///PATH, or tcp://ADDR (plain TCP only with --allow-plain-tcp).
    #[arg(short = 'H', long = "host")]
    hosts: Vec<String>,
    /// Persistent state: images, container records and logs.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Runtime state: sockets.
    #[arg(long)]
    exec_root: Option<PathBuf>,
    /// Group that may use the socket (if it exists; otherwise root only).
    #[arg(short = 'G', long, default_value = "berth")]
    group: String,
    /// A JSON config file (keys as the flags: hosts, data-root, exec-root, group,
    /// insecure-registries, exec-opts, kernel, agent-initrd, virtiofsd).
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// A registry (host:port) reached over plain HTTP.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Runtime options: isolation=vm|process (the default isolation).
    #[arg(long = "exec-opt")]
    exec_opts: Vec<String>,
    /// Guest kernel for microVM containers (vmlinux).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The guest agent for microVM containers: its read-only erofs image (run in place
    /// from virtio-pmem, shared by every guest) or its initramfs (cpio).
    #[arg(long, alias = "agent-image")]
    agent_initrd: Option<PathBuf>,
    /// virtiofsd, which serves microVM containers' volumes and bind mounts (default:
    /// `virtiofsd` on PATH or /usr/libexec/virtiofsd).
    #[arg(long)]
    virtiofsd: Option<PathBuf>,
    /// The berth-agent binary (default: next to berthd).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// The berth-vmm binary (default: next to berthd).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// Listen on plain TCP without TLS (anyone who can reach it is root on this host).
    #[arg(long)]
    allow_plain_tcp: bool,
    /// TCP listeners use TLS and take only clients whose certificate the CA signed.
    #[arg(long)]
    tlsverify: bool,
    /// TLS without verifying clients: refused (anyone could connect); use --tlsverify.
    #[arg(long)]
    tls: bool,
    /// The CA that signs clients' certificates.
    #[arg(long)]
    tlscacert: Option<PathBuf>,
    /// berthd's certificate.
    #[arg(long)]
    tlscert: Option<PathBuf>,
    /// berthd's key.
    #[arg(long)]
    tlskey: Option<PathBuf>,
    /// The default bridge's address and prefix (berth0), e.g. 10.88.0.1/16.
    #[arg(long)]
    bip: Option<String>,
    /// The default bridge: "none" turns it off (containers get no network unless they
    /// name one), as dockerd's --bridge=none.
    #[arg(short = 'b', long)]
    bridge: Option<String>,
    /// The MTU of containers' links.
    #[arg(long)]
    mtu: Option<u32>,
    /// The most an image may unpack to (bytes, or 512m, 40g...; 0: no cap). Default 32g.
    #[arg(long)]
    max_image_size: Option<String>,
    /// Free space berthd leaves on the data root's filesystem when unpacking images
    /// (bytes, or 256m, 2g...). Default 256m.
    #[arg(long)]
    min_free_space: Option<String>,
    /// Jail each microVM's monitor (its own uid, namespaces, cgroup and an empty root;
    /// see docs/vmm.md). On by default; `--vmm-jail false` is for measuring its cost.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    vmm_jail: Option<bool>,
    /// The uids (and gids) jailed monitors get, one each: START:COUNT. Default
    /// 900000000:65536; no other process on the host may use them.
    #[arg(long, value_name = "START:COUNT")]
    vmm_uids: Option<String>,
    /// Diagnose microVM boots: the guest kernel's full console with timestamps in each
    /// container's console.log (off by default: a quiet boot is much faster), and the
    /// monitor's and berthd's boot steps, timed, in its agent.log.
    #[arg(long)]
    vmm_debug: bool,
    /// Start microVM containers from a snapshot of a guest booted once (its kernel and
    /// agent ready; see docs/snapshots.md) instead of booting each. On by default;
    /// `--vm-snapshots false` boots every microVM (for measuring the difference).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    vm_snapshots: Option<bool>,
}

/// `--vmm-uids START:COUNT`: a range clear of root, of "no change" (-1), and of overflow.
fn parse_uid_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!("--vmm-uids {s:?}: expected START:COUNT, e.g. 900000000:65536, above 0 and below 4294967295")
    };
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (start, count): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if start == 0 || count == 0 || start.checked_add(count).is_none_or(|end| end == u32::MAX) {
        return Err(bad());
    }
    Ok((start, count))
}

fn main() -> std::process::ExitCode {
    // berthd's own archive helper (`docker cp`, export): a child chrooted into a
    // container's root (src/container/src/archive.rs, shared with the guest agent).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__archive") {
        return std::process::ExitCode::from(berth_container::archive::main(&args[2..]) as u8);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log("error", &e, &[]);
            eprintln!("berthd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> Result<(), String> {
    let file: serde_json::Value = match &cli.config_file {
        Some(p) => {
            serde_json::from_slice(&std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?)
                .map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => serde_json::json!({}),
    };
    if let Some(o) = file.as_object() {
        const KNOWN: &[&str] = &[
            "hosts",
            "data-root",
            "exec-root",
            "group",
            "insecure-registries",
            "exec-opts",
            "kernel",
            "agent-initrd",
            "virtiofsd",
            "bip",
            "bridge",
            "mtu",
            "default-address-pools",
            "max-image-size",
            "min-free-space",
            "tls",
            "tlsverify",
            "tlscacert",
            "tlscert",
            "tlskey",
            "tenants",
            "vmm-jail",
            "vmm-uids",
            "vmm-debug",
            "vm-snapshots",
        ];
        if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("config file: unknown key {k:?}"));
        }
    }
    let strs = |k: &str| -> Vec<String> {
        file[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    if cli.hosts.is_empty() {
        cli.hosts = strs("hosts");
    }
    if cli.hosts.is_empty() {
        cli.hosts.push("unix:///run/berth/berth.sock".into());
    }
    cli.insecure_registries.extend(strs("insecure-registries"));
    cli.exec_opts.extend(strs("exec-opts"));
    let path_of = |flag: Option<PathBuf>, key: &str, default: &str| -> PathBuf {
        flag.or_else(|| file[key].as_str().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let data_root = path_of(cli.data_root.take(), "data-root", "/var/lib/berth");
    let exec_root = path_of(cli.exec_root.take(), "exec-root", "/run/berth");
    let mut default_isolation: Isolation = Default::default();
    for o in &cli.exec_opts {
        match o.split_once('=') {
            Some(("isolation", v)) => {
                default_isolation = v
                    .parse()
                    .map_err(|e: berthd::errors::Error| format!("--exec-opt {o:?}: {e}"))?
            }
            _ => {
                return Err(format!(
                    "--exec-opt {o:?}: berthd knows isolation=vm|process"
                ))
            }
        }
    }
    let mut net = berthd::network::NetOpts::default();
    if let Some(b) = cli
        .bip
        .clone()
        .or_else(|| file["bip"].as_str().map(str::to_owned))
    {
        net.bip = Some(berthd::network::parse_bip(&b)?);
    }
    if let Some(m) = cli.mtu.or_else(|| file["mtu"].as_u64().map(|m| m as u32)) {
        if !(68..=65535).contains(&m) {
            return Err(format!("--mtu {m}: 68 to 65535"));
        }
        net.mtu = m;
    }
    match cli
        .bridge
        .clone()
        .or_else(|| file["bridge"].as_str().map(str::to_owned))
        .as_deref()
    {
        None | Some("") | Some("berth0") => {}
        Some("none") => net.default_bridge = false,
        Some(b) => {
            let why = "berthd manages its own default bridge (berth0); \"none\" turns it off";
            return Err(format!("--bridge {b:?}: {why}"));
        }
    }
    if let Some(pools) = file.get("default-address-pools") {
        net.pools = berthd::network::parse_pools(pools)?;
    }
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|p| p.to_owned()))
        .unwrap_or_default();
    let virtiofsd = cli
        .virtiofsd
        .clone()
        .or_else(|| file["virtiofsd"].as_str().map(PathBuf::from));
    if let Some(v) = &virtiofsd {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(v) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
            _ => {
                return Err(format!(
                    "--virtiofsd {}: not an executable file",
                    v.display()
                ))
            }
        }
    }
    let size_of = |flag: Option<String>, key: &str, default: u64| -> Result<u64, String> {
        let from_file = match &file[key] {
            serde_json::Value::Null => None,
            serde_json::Value::String(v) => Some(v.clone()),
            serde_json::Value::Number(n) if n.is_u64() => Some(n.to_string()),
            other => return Err(format!("config file: {key} {other}: expected a size such as 1073741824, \"512m\" or \"40g\"")),
        };
        match flag.or(from_file) {
            None => Ok(default),
            Some(v) => berthd::daemon::create::parse_size(&v).ok_or_else(|| {
                format!("--{key} {v:?}: expected a size such as 1073741824, 512m or 40g")
            }),
        }
    };
    let max_image_size = size_of(cli.max_image_size.take(), "max-image-size", 32 << 30)?;
    let image_limits = berth_image::images::Limits {
        max_image_size: (max_image_size > 0).then_some(max_image_size),
        min_free_space: size_of(cli.min_free_space.take(), "min-free-space", 256 << 20)?,
    };
    let tenants: Option<berthd::tenant::Tenants> = match file.get("tenants") {
        None => None,
        Some(v) => Some(
            serde_json::from_value(v.clone()).map_err(|e| format!("config file: tenants: {e}"))?,
        ),
    };
    if tenants.is_some() && !(cli.tlsverify || file["tlsverify"].as_bool().unwrap_or(false)) {
        return Err(
            "config file: tenants are named by TLS client certificates: give --tlsverify".into(),
        );
    }
    let uids = match (&cli.vmm_uids, &file["vmm-uids"]) {
        (Some(u), _) => Some(u.clone()),
        (None, serde_json::Value::String(u)) => Some(u.clone()),
        (None, serde_json::Value::Null) => None,
        (None, other) => {
            return Err(format!(
                "config file: vmm-uids {other}: expected \"START:COUNT\", e.g. \"900000000:65536\""
            ))
        }
    };
    let vmm_jail =
        match cli.vmm_jail.or_else(|| file["vmm-jail"].as_bool()) {
            Some(false) if uids.is_some() => return Err(
                "--vmm-uids names the jailed monitors' uids: it has no use with --vmm-jail false"
                    .into(),
            ),
            Some(false) => None,
            _ => Some(parse_uid_range(
                uids.as_deref().unwrap_or("900000000:65536"),
            )?),
        };
    if !matches!(
        file["vmm-jail"],
        serde_json::Value::Null | serde_json::Value::Bool(_)
    ) {
        return Err("config file: vmm-jail is true or false".into());
    }
    let vmm_debug = match &file["vmm-debug"] {
        serde_json::Value::Null => cli.vmm_debug,
        serde_json::Value::Bool(b) => cli.vmm_debug || *b,
        _ => return Err("config file: vmm-debug is true or false".into()),
    };
    if !matches!(
        file["vm-snapshots"],
        serde_json::Value::Null | serde_json::Value::Bool(_)
    ) {
        return Err("config file: vm-snapshots is true or false".into());
    }
    let asked = cli.vm_snapshots.or_else(|| file["vm-snapshots"].as_bool());
    // The template monitor takes the last jail uid: a range of one leaves none for it.
    let one_uid = matches!(vmm_jail, Some((_, count)) if count < 2);
    let vm_snapshots = match asked {
        Some(true) if one_uid => {
            return Err(
                "--vm-snapshots needs two --vmm-uids or more (the last is the template monitor's)"
                    .into(),
            )
        }
        Some(b) => b,
        None if one_uid => {
            eprintln!("berthd: microVMs boot without snapshots: --vmm-uids has one uid, and the template monitor needs its own");
            false
        }
        None => true,
    };
    let opts = Opts {
        vmm_jail,
        vmm_debug,
        vm_snapshots,
        data_root,
        exec_root,
        agent: cli.agent.unwrap_or_else(|| here.join("berth-agent")),
        vmm: cli.vmm.unwrap_or_else(|| here.join("berth-vmm")),
        kernel: cli
            .kernel
            .or_else(|| file["kernel"].as_str().map(PathBuf::from)),
        agent_initrd: cli
            .agent_initrd
            .or_else(|| file["agent-initrd"].as_str().map(PathBuf::from)),
        virtiofsd: virtiofsd.or_else(find_virtiofsd),
        default_isolation,
        insecure_registries: cli.insecure_registries,
        net,
        image_limits,
        tenants,
    };
    // One berthd per data root and per exec root, held until this process ends (the kernel
    // lets go of a SIGKILLed one's): before any socket is touched.
    // Both are root's alone (records hold containers' environments, logs and files); the
    // exec root lets the socket's group through to reach the socket when it lives there.
    let gid = group_id(&cli.group);
    let _data_lock = lock_root(&opts.data_root, "data-root", None)?;
    let _exec_lock = if opts.exec_root != opts.data_root {
        Some(lock_root(&opts.exec_root, "exec-root", gid)?)
    } else {
        None
    };
    let tlsverify = cli.tlsverify || file["tlsverify"].as_bool().unwrap_or(false);
    if (cli.tls || file["tls"].as_bool().unwrap_or(false)) && !tlsverify {
        return Err("--tls without --tlsverify would let any client in, and the API is root on this host: give --tlsverify with --tlscacert".into());
    }
    let tls = if tlsverify {
        let need = |flag: Option<PathBuf>, key: &str| {
            flag.or_else(|| file[key].as_str().map(PathBuf::from))
                .ok_or_else(|| format!("--tlsverify needs --{key}"))
        };
        let files = berthd::tls::TlsFiles {
            ca: need(cli.tlscacert.take(), "tlscacert")?,
            cert: need(cli.tlscert.take(), "tlscert")?,
            key: need(cli.tlskey.take(), "tlskey")?,
        };
        Some(Arc::new(
            berthd::tls::acceptor(&files).map_err(|e| e.to_string())?,
        ))
    } else {
        for (f, k) in [
            (&cli.tlscacert, "tlscacert"),
            (&cli.tlscert, "tlscert"),
            (&cli.tlskey, "tlskey"),
        ] {
            if f.is_some() || file.get(k).is_some() {
                return Err(format!("--{k} is used only with --tlsverify"));
            }
        }
        None
    };
    let mut listeners = Vec::new();
    for h in &cli.hosts {
        if let Some(p) = h.strip_prefix("unix://") {
            listeners.push(Listener::Unix(bind_unix(PathBuf::from(p), gid)?));
        } else if let (Some(addr), Some(acc)) = (h.strip_prefix("tcp://"), &tls) {
            let l = std::net::TcpListener::bind(addr).map_err(|e| format!("-H {h}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            listeners.push(Listener::Tls(l, acc.clone()));
        } else if let Some(addr) = h.strip_prefix("tcp://") {
            if !cli.allow_plain_tcp {
                return Err(format!(
                    "-H {h}: plain TCP gives anyone who can reach it root on this host; use --tlsverify with --tlscacert, --tlscert and --tlskey (or force plain TCP with --allow-plain-tcp)"
                ));
            }
            log("warn", "serving the API on plain TCP without TLS: anyone who can reach it is root on this host", &[("host", h)]);
            let l = std::net::TcpListener::bind(addr).map_err(|e| format!("-H {h}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            listeners.push(Listener::Tcp(l));
        } else {
            return Err(format!("-H {h}: expected unix:///PATH or tcp://ADDR"));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let d = Daemon::open(opts, rt.handle().clone())?;
    rt.block_on(serve(d, listeners, cli.hosts))
}

/// The gid of `group`, if such a group exists.
fn group_id(group: &str) -> Option<u32> {
    std::ffi::CString::new(group).ok().and_then(|g| {
        // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer to static
        // storage or null; the gid is copied out at once.
        let gr = unsafe { libc::getgrnam(g.as_ptr()) };
        // SAFETY: non-null pointers from getgrnam point at a valid group entry.
        (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
    })
}

fn bind_unix(path: PathBuf, gid: Option<u32>) -> Result<std::os::unix::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "{}: another daemon is listening there",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(&path);
    }
    let l = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // rw for root and the group (if it exists), nobody else.
    if let Some(gid) = gid {
        let _ = std::os::unix::fs::chown(&path, Some(0), Some(gid));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

/// A socket berthd listens on.
enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
    Tls(std::net::TcpListener, Arc<openssl::ssl::SslAcceptor>),
}

/// How long a client may take to send a request's headers (also the idle time allowed
/// between requests on a kept-alive connection), as hyper's default.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long berthd waits at shutdown for lifecycle requests in flight to finish.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves HTTP/1.1 (with upgrades, for attach and exec) on one connection, holding one of
/// the connection permits until it ends.
fn serve_conn<S>(
    d: Arc<Daemon>,
    s: S,
    permit: tokio::sync::OwnedSemaphorePermit,
    caller: router::Caller,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};
    tokio::spawn(async move {
        let _permit = permit;
        let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(caller.clone());
            router::handle(d.clone(), req)
        });
        let _ = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(s), svc)
            .with_upgrades()
            .await;
    });
}

/// Accepts connections while a permit is free; an accept error (out of descriptors, say)
/// backs off, 10 ms doubling to 1 s, instead of spinning.
async fn accept_loop<F, Fut, S, C>(
    permits: Arc<tokio::sync::Semaphore>,
    host: String,
    accept: F,
    on_conn: C,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
    C: Fn(S, tokio::sync::OwnedSemaphorePermit),
{
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match accept().await {
            Ok(s) => {
                backoff = std::time::Duration::from_millis(10);
                on_conn(s, permit);
            }
            Err(e) => {
                drop(permit);
                if backoff == std::time::Duration::from_millis(10) {
                    log(
                        "warn",
                        "accepting a connection failed; backing off",
                        &[("host", &host), ("error", &e.to_string())],
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit (every container holds a few:
/// its agent's socket, log, streams), and returns it.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed, which lives here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

async fn serve(d: Arc<Daemon>, listeners: Vec<Listener>, hosts: Vec<String>) -> Result<(), String> {
    // At most half the descriptors go to API connections (up to 4096 a listener); the
    // rest stay for containers. Clients past the cap wait in the listen backlog.
    let nofile = raise_nofile();
    let share = (nofile / 2 / listeners.len().max(1) as u64).clamp(16, 4096) as usize;
    let mut loops = Vec::new();
    for (l, host) in listeners.into_iter().zip(hosts.iter().cloned()) {
        // Each listener has its own share, so that a flood on a TCP port (TLS handshakes
        // hold their permit for up to 10 s) never locks the operator out of the Unix
        // socket.
        let d = d.clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(share));
        let operator = router::Caller::default();
        loops.push(match l {
            Listener::Unix(l) => {
                let l = tokio::net::UnixListener::from_std(l).map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    accept_loop(
                        permits,
                        host,
                        || async { l.accept().await.map(|(s, _)| s) },
                        |s, p| serve_conn(d.clone(), s, p, operator.clone()),
                    )
                    .await
                })
            }
            Listener::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    accept_loop(
                        permits,
                        host,
                        || async { l.accept().await.map(|(s, _)| s) },
                        |s, p| serve_conn(d.clone(), s, p, operator.clone()),
                    )
                    .await
                })
            }
            Listener::Tls(l, acc) => {
                let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    accept_loop(
                        permits,
                        host,
                        || async { l.accept().await },
                        |(s, peer): (tokio::net::TcpStream, std::net::SocketAddr), p| {
                            // The handshake in the connection's own task: a slow client
                            // holds its permit, not the accept loop.
                            let (d, acc) = (d.clone(), acc.clone());
                            tokio::spawn(async move {
                                match berthd::tls::accept(&acc, s).await {
                                    Ok((s, tenant)) => {
                                        serve_conn(d, s, p, router::Caller::tenant(tenant))
                                    }
                                    Err(e) => log(
                                        "info",
                                        "refused a TLS client",
                                        &[("peer", &peer.to_string()), ("error", &e.to_string())],
                                    ),
                                }
                            });
                        },
                    )
                    .await
                })
            }
        });
    }
    log(
        "info",
        "berthd is serving the Docker Engine API",
        &[
            ("hosts", &hosts.join(",")),
            ("api", router::API_VERSION),
            ("nofile", &nofile.to_string()),
        ],
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // In this order: stop accepting (the listeners close with their loops), let the
    // lifecycle requests in flight finish, and only then remove the sockets. Containers
    // keep running: their agents are independent of berthd.
    log("info", "berthd stopping; containers keep running", &[]);
    for l in &loops {
        l.abort();
    }
    for l in loops {
        let _ = l.await;
    }
    let left = router::drain(DRAIN_LIMIT).await;
    if left > 0 {
        log(
            "warn",
            "requests still running at shutdown are cancelled",
            &[("count", &left.to_string())],
        );
    }
    // The last replies are handed over; give their connections a moment to write them.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for h in hosts {
        if let Some(p) = h.strip_prefix("unix://") {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}

/// virtiofsd where distributions put it: on PATH, or in /usr/libexec.
fn find_virtiofsd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("virtiofsd"))
        .chain([PathBuf::from("/usr/libexec/virtiofsd")])
        .find(|p| p.is_file())
}

/// Takes `<dir>/berthd.lock` exclusively (flock) for as long as the returned file is open.
/// It is closed on exec, so the agents and monitors berthd starts never hold it. A second
/// berthd on the same root is refused with the first one's PID.
///
/// The root is made root's alone: 0700, or 0710 owned by group `gid` (which may pass
/// through it, to the socket, and read nothing), also when an older berthd made it 0755.
fn lock_root(dir: &std::path::Path, flag: &str, gid: Option<u32>) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|e| format!("--{flag} {}: {e}", dir.display()))?;
    let path = dir.join("berthd.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        return Err(format!(
            "--{flag} {}: another berthd (pid {}) is using it; stop that one first, or give this one its own --{flag}",
            dir.display(),
            pid.trim()
        ));
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = writeln!(f, "{}", std::process::id());
    // Only the berthd holding the lock changes the root's owner and mode.
    std::os::unix::fs::chown(dir, Some(0), Some(gid.unwrap_or(0)))
        .map_err(|e| format!("--{flag} {}: {e}", dir.display()))?;
    let mode = if gid.is_some() { 0o710 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("--{flag} {}: {e}", dir.display()))?;
    Ok(f)
}
