//! `berth-agent`: serves the berth agent protocol.
//!
//! - As PID 1 of a microVM (no arguments): sets up the guest (mounts, cgroup2, loopback)
//!   and serves on vsock port 1024; `shutdown` syncs and reboots (which ends every
//!   process in the guest, and the VM).
//! - On the host (`--listen unix:PATH`): process isolation; `shutdown` stops every
//!   container and exits.
//!
//! A bad request never stops the agent: in a microVM its death is a kernel panic.

mod init;
mod net;
mod output;
mod restore;
mod run;
mod server;
mod steps;
mod vsock;

use std::path::PathBuf;

fn usage() -> ! {
    eprintln!(
        "usage: berth-agent                      (as PID 1 of a berth microVM)\n       \
         berth-agent --listen unix:PATH [--state-dir DIR] [--cgroup-root DIR]\n       \
         berth-agent run [--bundle DIR] ID   (one container from an OCI bundle, like `runc run`)"
    );
    std::process::exit(2)
}

fn main() {
    let pid1 = std::process::id() == 1;
    // The file-transfer helper, started by the agent itself for `cp`, `export`, `diff`.
    if !pid1 && std::env::args().nth(1).as_deref() == Some("__archive") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        std::process::exit(berth_container::archive::main(&args));
    }
    if !pid1 && std::env::args().nth(1).as_deref() == Some("run") {
        std::process::exit(run::main(std::env::args().skip(2).collect()));
    }
    let mut listen = None;
    let mut state_dir = PathBuf::from(if pid1 {
        "/run/berth/containers"
    } else {
        "/run/berth-agent"
    });
    let mut cgroup_root = PathBuf::from("/sys/fs/cgroup");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = Some(args.next().unwrap_or_else(|| usage())),
            "--state-dir" => state_dir = args.next().unwrap_or_else(|| usage()).into(),
            "--cgroup-root" => cgroup_root = args.next().unwrap_or_else(|| usage()).into(),
            "-h" | "--help" => usage(),
            other if pid1 => eprintln!("berth-agent: ignoring argument {other:?}"),
            _ => usage(),
        }
    }
    if pid1 {
        init::trace("started");
        // Before any thread starts, so that every thread inherits the mask.
        init::block_shutdown_signals();
    }
    berth_container::reaper::start();
    if pid1 {
        if let Err(e) = init::setup_guest() {
            eprintln!("berth-agent: guest setup: {e}");
        }
        init::trace("guest set up");
        steps::note("set up");
        berth_container::set_step_hook(steps::note);
    }
    let agent = server::Agent::new(state_dir, cgroup_root, pid1);
    if pid1 {
        init::on_shutdown_signal(agent.clone());
    }
    let result = match listen.as_deref() {
        Some(l) => match l.strip_prefix("unix:") {
            Some(path) => server::serve_unix(agent, path.into()),
            None => {
                eprintln!("berth-agent: --listen {l}: only unix:PATH is supported");
                std::process::exit(2)
            }
        },
        None if pid1 => server::serve_vsock(agent, berth_protocol::AGENT_VSOCK_PORT),
        None => usage(),
    };
    if let Err(e) = result {
        eprintln!("berth-agent: {e}");
        if pid1 {
            init::power_off();
        }
        std::process::exit(1);
    }
}
