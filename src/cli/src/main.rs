//! `berth`: the command-line client of berthd, with Docker's command names, common flags
//! and exit codes (125 for daemon errors, 126/127 when the command can't run, the
//! workload's status otherwise). `-H` or `BERTH_HOST` picks the daemon; with neither, and
//! no daemon answering on the default socket, it starts one in the background.

mod client;
mod containers;
mod exec;
mod files;
mod format;
mod images;
mod login;
mod logs;
mod networks;
mod output;
mod runflags;
mod stream;
mod system;
mod volumes;

use clap::{Parser, Subcommand};
use client::{daemon_err, Conn, Fail};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

#[derive(Subcommand)]
enum Cmd {
    /// Create and run a new container from an image.
    Run {
        /// Run in the background and print the container ID.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        opts: containers::CreateOpts,
    },
    /// Create a new container.
    Create {
        #[command(flatten)]
        opts: containers::CreateOpts,
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
    Stop(containers::StopOpts),
    /// Kill running containers.
    Kill {
        #[arg(short = 's', long = "signal", default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart(containers::StopOpts),
    /// Pause all processes within containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause all processes within containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Update the resource limits or restart policy of containers.
    Update(containers::UpdateOpts),
    /// Remove containers.
    Rm {
        #[arg(short = 'f', long)]
        force: bool,
        /// Remove anonymous volumes associated with the container.
        #[arg(short = 'v', long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps(containers::PsOpts),
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
    Exec(exec::ExecOpts),
    /// Attach to a running container.
    Attach { container: String },
    /// Low-level information on containers or images.
    Inspect(containers::InspectOpts),
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
    Images(images::ImagesOpts),
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
    /// Log in to a registry.
    Login(login::LoginOpts),
    /// Log out from a registry.
    Logout { server: Option<String> },
    /// Display system-wide information.
    Info,
    /// Show the client and daemon versions.
    Version,
    /// Copy files/folders between a container and the local filesystem
    /// (CONTAINER:SRC DEST, SRC CONTAINER:DEST; "-" is a tar on stdin or stdout).
    Cp {
        /// Archive mode (copy all uid/gid information).
        #[arg(short = 'a', long)]
        archive: bool,
        src: String,
        dest: String,
    },
    /// Export a container's filesystem as a tar archive.
    Export {
        /// Write to a file, instead of STDOUT.
        #[arg(short = 'o', long)]
        output: Option<String>,
        container: String,
    },
    /// Inspect changes to files or directories on a container's filesystem.
    Diff { container: String },
    /// Manage volumes.
    Volume {
        #[command(subcommand)]
        cmd: volumes::VolumeCmd,
    },
    /// Manage networks.
    Network {
        #[command(subcommand)]
        cmd: networks::NetworkCmd,
    },
    /// List port mappings or a specific mapping for the container.
    Port {
        container: String,
        private_port: Option<String>,
    },
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

/// Runs the command; `Ok` is the exit code.
async fn dispatch(c: &Conn, cmd: Cmd) -> Result<u8, Fail> {
    match cmd {
        Cmd::Run { detach, opts } => containers::run(c, opts, detach).await,
        Cmd::Create { opts } => containers::create(c, opts).await,
        Cmd::Start { attach, containers } => containers::start(c, attach, containers).await,
        Cmd::Stop(o) => containers::stop(c, "stop", o).await,
        Cmd::Kill { signal, containers } => containers::kill(c, signal, containers).await,
        Cmd::Restart(o) => containers::stop(c, "restart", o).await,
        Cmd::Pause { containers } => containers::pause(c, "pause", containers).await,
        Cmd::Unpause { containers } => containers::pause(c, "unpause", containers).await,
        Cmd::Update(o) => containers::update(c, o).await,
        Cmd::Rm {
            force,
            volumes,
            containers,
        } => containers::rm(c, force, volumes, containers).await,
        Cmd::Ps(o) => containers::ps(c, o).await,
        Cmd::Logs {
            follow,
            timestamps,
            tail,
            since,
            container,
        } => logs::logs(c, follow, timestamps, tail, since, container).await,
        Cmd::Exec(o) => exec::exec(c, o).await,
        Cmd::Attach { container } => exec::attach(c, container).await,
        Cmd::Inspect(o) => containers::inspect(c, o).await,
        Cmd::Wait { containers } => containers::wait(c, containers).await,
        Cmd::Top { container } => containers::top(c, container).await,
        Cmd::Stats { containers } => containers::stats(c, containers).await,
        Cmd::Commit {
            container,
            repository,
        } => containers::commit(c, container, repository).await,
        Cmd::Images(o) => images::images(c, o).await,
        Cmd::Login(o) => login::login(c, o).await,
        Cmd::Logout { server } => login::logout(server),
        Cmd::Pull { image } => images::pull(c, &image).await.map(|_| 0),
        Cmd::Push { image } => images::push(c, image).await,
        Cmd::Tag { source, target } => images::tag(c, source, target).await,
        Cmd::Rmi { force, images } => images::rmi(c, force, images).await,
        Cmd::Save { output, images } => images::save(c, output, images).await,
        Cmd::Load { input } => images::load(c, input).await,
        Cmd::Import {
            change,
            message,
            file,
            reference,
        } => images::import(c, change, message, file, reference).await,
        Cmd::Info => system::info(c).await,
        Cmd::Network { cmd } => networks::network(c, cmd).await,
        Cmd::Volume { cmd } => volumes::volume(c, cmd).await,
        Cmd::Cp { archive, src, dest } => files::cp(c, src, dest, archive).await,
        Cmd::Export { output, container } => files::export(c, output, container).await,
        Cmd::Diff { container } => files::diff(c, container).await,
        Cmd::Port {
            container,
            private_port,
        } => networks::port(c, container, private_port).await,
        Cmd::Version => system::version(c).await,
        Cmd::System {
            cmd: SystemCmd::Prune { force },
        } => system::prune(c, force).await,
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
    // A closed stdout (`berth ps | head -1`) ends berth quietly, as it ends docker, not
    // with a panic.
    // SAFETY: setting a signal's disposition to the default; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Usage errors exit 125, as the docker CLI's do; --help and --version exit 0.
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 125 } else { 0 });
        }
    };
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
