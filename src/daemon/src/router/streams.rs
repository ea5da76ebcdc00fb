//! Attach and exec streams over an upgraded HTTP connection: a raw stream with a TTY,
//! Docker's 8-byte multiplexed frames without; stdin half-close is EOF for the process.

use super::Reply;
use crate::daemon::{blocking, Ctr, Daemon, PendingAttach, Phase, RelayGuard};
use crate::errors::Error;
use crate::http::{empty, frame, ApiError, Query, Resp};
use crate::sandbox::AgentRef;
use berth_protocol::StreamKind;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the client asked for an upgrade.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().get("Upgrade").is_some()
}

/// The 101 reply.
pub fn upgraded_resp(tty: bool) -> Resp {
    let mut r = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert("Connection", "Upgrade".parse().expect("static"));
    h.insert("Upgrade", "tcp".parse().expect("static"));
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    h.insert("Content-Type", ct.parse().expect("static"));
    r
}

/// The agent streams an attacher or exec needs: outputs (with their stream number) and
/// an input.
pub struct AgentStreams {
    outs: Vec<(u8, std::os::unix::net::UnixStream)>,
    input: Option<std::os::unix::net::UnixStream>,
}

/// Which streams to open.
pub struct Want {
    /// A terminal (one raw stream both ways).
    pub tty: bool,
    /// stdin.
    pub stdin: bool,
    /// stdout.
    pub stdout: bool,
    /// stderr.
    pub stderr: bool,
}

/// Opens the streams (blocking).
pub fn open_streams(
    agent: &AgentRef,
    exec_id: Option<String>,
    w: &Want,
) -> crate::errors::Result<AgentStreams> {
    let open = |k: StreamKind| agent.open(exec_id.clone(), k);
    if w.tty {
        let s = open(StreamKind::Pty)?;
        let input = if w.stdin {
            Some(s.try_clone().map_err(Error::io("the terminal stream"))?)
        } else {
            None
        };
        return Ok(AgentStreams {
            outs: vec![(1, s)],
            input,
        });
    }
    let mut outs = Vec::new();
    if w.stdout {
        outs.push((1, open(StreamKind::Stdout)?));
    }
    if w.stderr {
        outs.push((2, open(StreamKind::Stderr)?));
    }
    let input = if w.stdin {
        Some(open(StreamKind::Stdin)?)
    } else {
        None
    };
    Ok(AgentStreams { outs, input })
}

/// Copies between an upgraded connection and the agent's streams until the outputs end.
/// `done`, when given, is awaited before the connection closes (an exec's exit code is
/// recorded by then, as the docker CLI reads it once right after the stream ends).
/// `guard` counts this relay for the container's exit until its output is copied.
/// `detach`: the detach keys; typed on a terminal's input, they end the session (not the
/// process) and are not passed on.
pub async fn relay(
    up: hyper::upgrade::Upgraded,
    tty: bool,
    s: AgentStreams,
    done: Option<tokio::task::JoinHandle<()>>,
    guard: Option<RelayGuard>,
    detach: Vec<u8>,
) {
    let progress = guard.as_ref().map(|g| g.progress());
    let io = TokioIo::new(up);
    let (mut rd, wr) = tokio::io::split(io);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let mut tasks = Vec::new();
    for (kind, out) in s.outs {
        let _ = out.set_nonblocking(true);
        let Ok(mut out) = tokio::net::UnixStream::from_std(out) else {
            continue;
        };
        let wr = wr.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let data = if tty {
                    Bytes::copy_from_slice(&buf[..n])
                } else {
                    frame(kind, &buf[..n])
                };
                if wr.lock().await.write_all(&data).await.is_err() {
                    break;
                }
                if let Some(p) = &progress {
                    p.relays
                        .copied
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let input = s.input.and_then(|i| {
        let _ = i.set_nonblocking(true);
        tokio::net::UnixStream::from_std(i).ok()
    });
    let (detached_tx, detached_rx) = tokio::sync::oneshot::channel::<()>();
    let in_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        // As dockerd: detach keys only on a terminal (piped binary input passes whole).
        let mut escape = EscapeProxy::new(if tty { detach } else { vec![] });
        match input {
            Some(mut input) => {
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let (pass, detached) = escape.feed(&buf[..n]);
                            if input.write_all(&pass).await.is_err() {
                                break;
                            }
                            if detached {
                                // The session ends; the process and its stdin stay.
                                let _ = detached_tx.send(());
                                return;
                            }
                        }
                    }
                }
                // The client half-closed: the process sees EOF on stdin.
                if !tty {
                    let _ = input.shutdown().await;
                }
            }
            None => while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {},
        }
        drop(detached_tx);
    });
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let outputs = async {
        for t in tasks {
            let _ = t.await;
        }
        if let Some(d) = done {
            let _ = d.await;
        }
    };
    let detached = async {
        match detached_rx.await {
            Ok(()) => {}
            // The input ended without the keys: only the outputs end the session.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = outputs => {}
        _ = detached => {
            for a in aborts {
                a.abort();
            }
        }
    }
    let _ = wr.lock().await.flush().await;
    drop(guard);
    let _ = wr.lock().await.shutdown().await;
    in_task.abort();
}

/// Watches an input stream for the detach keys, as dockerd's escape proxy does: bytes
/// that start the sequence are held until it completes (detach) or breaks (passed on).
pub struct EscapeProxy {
    keys: Vec<u8>,
    matched: usize,
}

impl EscapeProxy {
    /// A proxy for `keys` (none: every byte passes).
    pub fn new(keys: Vec<u8>) -> EscapeProxy {
        EscapeProxy { keys, matched: 0 }
    }

    /// The bytes to pass on, and whether the keys were typed (then the rest is dropped).
    pub fn feed(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(data.len());
        if self.keys.is_empty() {
            out.extend_from_slice(data);
            return (out, false);
        }
        for &b in data {
            if b != self.keys[self.matched] && self.matched > 0 {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// `POST /containers/{id}/attach`.
pub fn attach(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query, mut req: Request<Incoming>) -> Reply {
    if !is_upgrade(&req) {
        return Err(ApiError::bad(
            "attach needs an HTTP upgrade (send Connection: Upgrade and Upgrade: tcp)",
        ));
    }
    let rec = c.record();
    let detach = crate::daemon::exec::parse_detach_keys(q.get("detachKeys").unwrap_or(""))?;
    let want = Want {
        tty: rec.tty,
        stdin: q.flag("stdin", false) && rec.open_stdin,
        stdout: q.flag("stdout", false),
        stderr: q.flag("stderr", false),
    };
    // `logs=1`: what it printed so far first; with `stream=0`, only that, in any state.
    let (with_logs, stream) = (q.flag("logs", false), q.flag("stream", false));
    let log_path = d.log_path(&rec.id);
    let (log_out, log_err) = (want.stdout, want.stderr);
    if with_logs && !stream {
        d.event(
            "container",
            "attach",
            &rec.id,
            &[("name", rec.name.clone())],
        );
        let on_up = hyper::upgrade::on(&mut req);
        let resp = upgraded_resp(rec.tty);
        tokio::spawn(async move {
            let past = super::containers::past_log(&log_path, rec.tty, log_out, log_err).await;
            let Ok(up) = on_up.await else { return };
            let mut io = TokioIo::new(up);
            let _ = io.write_all(&past).await;
            let _ = io.shutdown().await;
        });
        return Ok(resp);
    }
    let phase = *c.phase.borrow();
    let (ready_rx, ack_tx) = match phase {
        Phase::Created => {
            let (rtx, rrx) = tokio::sync::oneshot::channel();
            let (atx, arx) = tokio::sync::oneshot::channel();
            c.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(PendingAttach {
                    ready: rtx,
                    ack: arx,
                });
            (Some(rrx), Some(atx))
        }
        Phase::Running => (None, None),
        _ => {
            return Err(ApiError::conflict(
                "You cannot attach to a stopped container, start it first",
            ))
        }
    };
    d.event(
        "container",
        "attach",
        &rec.id,
        &[("name", rec.name.clone())],
    );
    let on_up = hyper::upgrade::on(&mut req);
    let d = d.clone();
    let resp = upgraded_resp(rec.tty);
    tokio::spawn(async move {
        let agent = match ready_rx {
            Some(rx) => match rx.await {
                Ok(a) => a,
                Err(_) => return,
            },
            None => d.agent(&rec),
        };
        let guard = c.relay();
        let streams = tokio::task::spawn_blocking(move || open_streams(&agent, None, &want)).await;
        if let Some(a) = ack_tx {
            let _ = a.send(());
        }
        let Ok(Ok(streams)) = streams else { return };
        let Ok(up) = on_up.await else { return };
        let up = if with_logs {
            let past = super::containers::past_log(&log_path, rec.tty, log_out, log_err).await;
            let mut io = TokioIo::new(up);
            if io.write_all(&past).await.is_err() {
                return;
            }
            io.into_inner()
        } else {
            up
        };
        relay(up, rec.tty, streams, None, Some(guard), detach).await;
    });
    Ok(resp)
}

/// `POST /containers/{id}/resize` and `/exec/{id}/resize`.
pub async fn resize(d: &Arc<Daemon>, c: Arc<Ctr>, exec_id: Option<String>, q: &Query) -> Reply {
    let (h, w) = (q.int("h")?.unwrap_or(0), q.int("w")?.unwrap_or(0));
    if !(0..=u16::MAX as i64).contains(&h) || !(0..=u16::MAX as i64).contains(&w) {
        return Err(ApiError::bad("invalid terminal size"));
    }
    let rec = d.running(&c)?;
    let agent = d.agent(&rec);
    blocking(move || agent.resize(exec_id, h as u16, w as u16)).await?;
    Ok(empty(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_detach_as_dockers() {
        let mut p = EscapeProxy::new(vec![16, 17]);
        assert_eq!(p.feed(b"ab"), (b"ab".to_vec(), false));
        // A start of the sequence is held, then passed on when it breaks.
        assert_eq!(p.feed(&[16]), (vec![], false));
        assert_eq!(p.feed(b"c"), (vec![16, b'c'], false));
        assert_eq!(p.feed(&[16, 16, 17, b'z']), (vec![16], true));
        let mut p = EscapeProxy::new(vec![b'q']);
        assert_eq!(p.feed(b"aq"), (b"a".to_vec(), true));
    }
}
