//! Reaping children. berth's agent is PID 1 in its guest (or a subreaper on the host):
//! every orphan in its subtree ends up as its child. One thread reaps them all and keeps
//! the exit statuses for whoever waits for a PID.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Most exit statuses kept for PIDs nobody waited for yet.
const MAX_KEPT: usize = 4096;

struct State {
    exited: Mutex<HashMap<i32, i32>>,
    changed: Condvar,
    /// Forks so far: the reaper sleeps only while none happened since its last waitpid.
    forks: Mutex<u64>,
    spawned: Condvar,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let s = State {
            exited: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            forks: Mutex::new(0),
            spawned: Condvar::new(),
        };
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(reap_forever)
            .expect("starting the reaper thread");
        s
    })
}

/// A wait status as Docker reports it: the exit code, or 128+N when killed by signal N.
pub fn exit_status(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

fn reap_forever() {
    let s = state();
    loop {
        // Read before waitpid: a fork between its "no children" and the sleep below is
        // seen, not slept through.
        let seen = *s.forks.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`, a valid c_int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if pid > 0 {
            let mut m = s.exited.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= MAX_KEPT {
                if let Some(k) = m.keys().next().copied() {
                    m.remove(&k);
                }
            }
            m.insert(pid, exit_status(status));
            s.changed.notify_all();
            continue;
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // No children: sleep until someone forks, or for 500 ms (orphans may have been
        // reparented to us meanwhile).
        let forks = s.forks.lock().unwrap_or_else(|e| e.into_inner());
        if *forks == seen {
            let _ = s
                .spawned
                .wait_timeout(forks, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Starts the reaper and makes this process the subreaper of its descendants
/// (idempotent). Call before forking anything: the container's PID 1 is a grandchild.
pub fn start() {
    static SUBREAPER: std::sync::Once = std::sync::Once::new();
    SUBREAPER.call_once(|| {
        let _ = become_subreaper();
    });
    state();
}

/// Tells the reaper a child exists (call after every fork).
pub fn spawned() {
    let s = state();
    *s.forks.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    s.spawned.notify_all();
}

/// Waits for `pid` to exit and returns its Docker-style status.
pub fn wait(pid: i32) -> i32 {
    wait_timeout(pid, None).unwrap_or(255)
}

/// Waits at most `timeout` (forever if None); None if it has not exited by then.
pub fn wait_timeout(pid: i32, timeout: Option<Duration>) -> Option<i32> {
    let s = state();
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let mut m = s.exited.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(st) = m.remove(&pid) {
            return Some(st);
        }
        let wait = match deadline {
            Some(d) => d.checked_duration_since(std::time::Instant::now())?,
            None => Duration::from_secs(3600),
        };
        m = s
            .changed
            .wait_timeout(m, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Makes this process the reaper of its orphaned descendants (on the host; PID 1 is one
/// already).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
