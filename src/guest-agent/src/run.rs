//! `berth-agent run [--bundle DIR] ID`: one container from an OCI bundle with this
//! process's stdio, exiting with the container's status (like `runc run`). Used for
//! like-for-like comparisons with runc.

use berth_container::{reaper, Config, Container};
use std::path::PathBuf;

/// Runs the subcommand; returns the exit status.
pub fn main(args: Vec<String>) -> i32 {
    let mut bundle = PathBuf::from(".");
    let mut id = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" | "-b" => match it.next() {
                Some(b) => bundle = b.into(),
                None => return fail("--bundle needs a directory"),
            },
            other if id.is_none() && !other.starts_with('-') => id = Some(other.to_owned()),
            other => return fail(&format!("unknown argument {other:?}")),
        }
    }
    let Some(id) = id else {
        return fail("a container ID is required");
    };
    let spec = match oci_spec::runtime::Spec::load(bundle.join("config.json")) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{}: {e}", bundle.join("config.json").display())),
    };
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    let root = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    let cfg = Config {
        id,
        spec,
        layers: vec![root],
        writable: None,
        state_dir: "/run/berth-agent".into(),
        cgroup_root: "/sys/fs/cgroup".into(),
        open_stdin: false,
        inherit_stdio: true,
        seccomp: true,
        device_filter: true,
    };
    reaper::start();
    let (mut c, _streams) = match Container::create(&cfg) {
        Ok(x) => x,
        Err(e) => return fail(&e.to_string()),
    };
    let started = c.start();
    let status = reaper::wait(c.pid);
    c.destroy();
    match started {
        Ok(()) => status,
        Err(e) => {
            eprintln!("berth-agent: {e}");
            e.exit_status().unwrap_or(status)
        }
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("berth-agent: {msg}");
    125
}
