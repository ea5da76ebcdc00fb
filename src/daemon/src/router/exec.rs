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
                Ok(b) => start(d, e, b.detach.unwrap_or(false), on_up).await,
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

async fn start(
    d: &Arc<Daemon>,
    e: ExecRec,
    detach: bool,
    on_up: Option<hyper::upgrade::OnUpgrade>,
) -> Reply {
    if !detach && on_up.is_none() {
        return Err(ApiError::bad("exec start needs an HTTP upgrade (send Connection: Upgrade and Upgrade: tcp), or Detach"));
    }
    let (d2, e2) = (d.clone(), e.clone());
    blocking(move || d2.exec_start(&e2)).await?;
    let streams = if detach {
        None
    } else {
        let agent = d.agent(&d.find(&e.container)?.record());
        let want = Want {
            tty: e.tty,
            stdin: e.stdin,
            stdout: e.stdout || e.tty,
            stderr: e.stderr,
        };
        let eid = e.id.clone();
        Some(blocking(move || open_streams(&agent, Some(eid), &want)).await?)
    };
    // Record the exit code when it exits.
    let (d2, e2) = (d.clone(), e.clone());
    let waiter = tokio::task::spawn_blocking(move || d2.exec_wait(&e2));
    if let (Some(streams), Some(on_up)) = (streams, on_up) {
        let tty = e.tty;
        tokio::spawn(async move {
            if let Ok(up) = on_up.await {
                relay(up, tty, streams, Some(waiter), None).await;
            }
        });
        return Ok(upgraded_resp(e.tty));
    }
    Ok(empty(StatusCode::OK))
}
