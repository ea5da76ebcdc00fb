//! `/exec/...` (exec create is `POST /containers/{id}/exec`, in the containers router).

use super::streams::{is_upgrade, open_streams, relay, resize, upgraded_resp, Want};
use super::{body, Call, Reply};
use crate::daemon::{blocking, Daemon, ExecRec};
use crate::http::{empty, json, ApiError};
use crate::models::{docker, ExecStartBody};
use hyper::{Method, StatusCode};
use std::sync::Arc;

/// Routes `/exec/...`; None if no route matches.
pub async fn route(d: &Arc<Daemon>, call: Call) -> Option<Reply> {
    let Call {
        method,
        seg,
        q,
        mut req,
    } = call;
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    Some(match (&method, &seg[1..]) {
        (&Method::POST, [id, "start"]) => {
            let e = match d.exec_get(id) {
                Ok(e) => e,
                Err(err) => return Some(Err(err.into())),
            };
            let upgrade = is_upgrade(&req);
            let on_up = upgrade.then(|| hyper::upgrade::on(&mut req));
            match body::<ExecStartBody>(req).await {
                Ok(b) => start(d, e, b, on_up).await,
                Err(err) => Err(err),
            }
        }
        (&Method::POST, [id, "resize"]) => match d
            .exec_get(id)
            .and_then(|e| Ok((d.find(&e.container)?, e.id)))
        {
            Ok((c, eid)) => resize(d, c, Some(eid), &q).await,
            Err(e) => Err(e.into()),
        },
        (&Method::GET, [id, "json"]) => d
            .exec_get(id)
            .map(|e| json(StatusCode::OK, &inspect(&e)))
            .map_err(ApiError::from),
        _ => return None,
    })
}

fn inspect(e: &ExecRec) -> docker::ExecInspectResponse {
    docker::ExecInspectResponse {
        id: Some(e.id.clone()),
        running: Some(e.running),
        exit_code: e.exit_code,
        container_id: Some(e.container.clone()),
        pid: Some(e.pid),
        open_stdin: Some(e.stdin),
        open_stdout: Some(e.stdout),
        open_stderr: Some(e.stderr),
        can_remove: Some(false),
        detach_keys: Some(String::new()),
        process_config: Some(docker::ProcessConfig {
            tty: Some(e.tty),
            entrypoint: e.cmd.first().cloned(),
            arguments: Some(e.cmd.get(1..).unwrap_or(&[]).to_vec()),
            privileged: Some(false),
            user: e.user.clone(),
        }),
    }
}

/// `POST /exec/{id}/start`. Attached, the 101 goes out before the process starts, so a
/// client reading the raw socket right after the headers misses nothing; a command that
/// cannot start (missing: 127, not executable: 126) is then reported in the stream and
/// as the exec's exit code, as dockerd does. The framing follows the start request's
/// `Tty` (the docker CLI sends the exec's own).
async fn start(
    d: &Arc<Daemon>,
    e: ExecRec,
    b: ExecStartBody,
    on_up: Option<hyper::upgrade::OnUpgrade>,
) -> Reply {
    let detach = b.detach.unwrap_or(false);
    let on_up = match (detach, on_up) {
        (true, _) => None,
        (false, Some(u)) => Some(u),
        (false, None) => return Err(ApiError::bad("exec start needs an HTTP upgrade (send Connection: Upgrade and Upgrade: tcp), or Detach")),
    };
    // What would fail the request itself is checked before the 101; the claim makes
    // one start of the exec win, even against a concurrent one.
    d.running_unpaused(&*d.find(&e.container)?)?;
    let e = d.exec_claim(&e.id)?;
    let Some(on_up) = on_up else {
        let (d2, e2) = (d.clone(), e.clone());
        if let Err(err) = blocking(move || d2.exec_start(&e2)).await {
            // It never ran: done, with the status a start failure gets.
            d.exec_update(&e.id, |x| x.exit_code = Some(err.exit_status()));
            return Err(err.into());
        }
        let (d2, e2) = (d.clone(), e.clone());
        tokio::task::spawn_blocking(move || d2.exec_wait(&e2));
        return Ok(empty(StatusCode::OK));
    };
    let tty = b.tty.unwrap_or(e.tty);
    let d = d.clone();
    tokio::spawn(async move {
        let Ok(up) = on_up.await else { return };
        let (d2, e2) = (d.clone(), e.clone());
        let opened = blocking(move || {
            d2.exec_start(&e2)?;
            let agent = d2.agent(&d2.find(&e2.container)?.record());
            let want = Want {
                tty: e2.tty,
                stdin: e2.stdin,
                stdout: e2.stdout || e2.tty,
                stderr: e2.stderr,
            };
            open_streams(&agent, Some(e2.id.clone()), &want)
        })
        .await;
        match opened {
            Ok(streams) => {
                // Record the exit code when it exits, before the stream closes.
                let (d2, e2) = (d.clone(), e.clone());
                let waiter = tokio::task::spawn_blocking(move || d2.exec_wait(&e2));
                relay(up, tty, streams, Some(waiter), None, e.detach_keys.clone()).await;
            }
            Err(err) => {
                let code = match err.exit_status() {
                    255 => 126,
                    c => c,
                };
                d.exec_update(&e.id, |x| {
                    x.running = false;
                    x.exit_code = Some(code);
                });
                let msg = format!("OCI runtime exec failed: {err}\r\n");
                let data = if tty {
                    bytes::Bytes::from(msg)
                } else {
                    crate::http::frame(1, msg.as_bytes())
                };
                let mut io = hyper_util::rt::TokioIo::new(up);
                use tokio::io::AsyncWriteExt;
                let _ = io.write_all(&data).await;
                let _ = io.shutdown().await;
            }
        }
    });
    Ok(upgraded_resp(tty))
}
