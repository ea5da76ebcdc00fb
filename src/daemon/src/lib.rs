//! berthd, the berth daemon, as a library: the Docker Engine API routers (`router`), the
//! daemon core (`daemon`), its one error type (`errors`), typed Docker models (`models`),
//! the container state machine (`state`) and the isolation backends (`sandbox`).
//! See docs/daemon.md for the shape and where new things go.

pub mod daemon;
pub mod errors;
pub mod http;
pub mod models;
pub mod network;
pub mod persist;
pub mod router;
pub mod sandbox;
pub mod state;
pub mod tenant;
pub mod tls;
pub mod volume;

/// One structured log line (JSON) on stderr.
pub fn log(level: &str, msg: &str, fields: &[(&str, &str)]) {
    let mut m = serde_json::Map::new();
    m.insert("time".into(), daemon::now_rfc3339().into());
    m.insert("level".into(), level.into());
    m.insert("msg".into(), msg.into());
    for (k, v) in fields {
        m.insert((*k).into(), (*v).into());
    }
    eprintln!("{}", serde_json::Value::Object(m));
}

/// With `BERTH_VMM_TRACE` set in berthd's environment, one line on stderr: the host's
/// CLOCK_MONOTONIC in nanoseconds, a container's short ID and a step of its life
/// (`berthd: trace NS ID STEP`), for bench/run's and docs/boot.md's phases.
pub fn trace(id: &str, step: &str) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("BERTH_VMM_TRACE").is_some()) {
        eprintln!(
            "berthd: trace {} {} {step}",
            berth_vmm::vm::monotonic_ns(),
            id.get(..12).unwrap_or(id)
        );
    }
}
