//! `/containers/...`.

use super::{body, streams, Call, Reply};
use crate::daemon::inspect::ListFilter;
use crate::daemon::{blocking, unix_of, Ctr, Daemon, Phase};
use crate::errors::Error;
use crate::http::{channel_body, empty, frame, json, streamed, ApiError, Query};
use crate::models::{docker, CreateBody, CreateResponse, ExecBody, IdResponse, UpdateBody};
use berth_protocol::logfile;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Routes `/containers/...`; None if no route matches.
pub async fn route(d: &Arc<Daemon>, call: Call) -> Option<Reply> {
    let Call {
        method,
        seg,
        q,
        req,
    } = call;
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    let find = |id: &str| d.find(id).map_err(ApiError::from);
    Some(match (&method, &seg[1..]) {
        (&Method::GET, ["json"]) => {
            let d = d.clone();
            super::off_thread(move || list(&d, &q)).await
        }
        (&Method::POST, ["create"]) => match body::<CreateBody>(req).await {
            Ok(b) => create(d, &q, b).await,
            Err(e) => Err(e),
        },
        (&Method::POST, ["prune"]) => {
            let d = d.clone();
            super::off_thread(move || {
                let (ids, space) = d.prune();
                Ok(json(
                    StatusCode::OK,
                    &docker::ContainerPruneResponse {
                        containers_deleted: Some(ids),
                        space_reclaimed: Some(space as i64),
                    },
                ))
            })
            .await
        }
        (&Method::GET, [id, "json"]) => find(id).map(|c| json(StatusCode::OK, &d.inspect(&c))),
        (&Method::POST, [id, "start"]) => match find(id) {
            Ok(c) => done(d.start_by_hand(c).await),
            Err(e) => Err(e),
        },
        (&Method::POST, [id, "stop"]) => match (find(id), q.int("t")) {
            (Ok(c), Ok(t)) => done(d.stop(c, t, q.get("signal")).await),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        (&Method::POST, [id, "restart"]) => match (find(id), q.int("t")) {
            (Ok(c), Ok(t)) => done(d.restart(c, t, q.get("signal")).await),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        (&Method::POST, [id, "kill"]) => match find(id) {
            Ok(c) => done(d.kill(c, q.get("signal")).await),
            Err(e) => Err(e),
        },
        (&Method::POST, [id, "wait"]) => find(id).and_then(|c| wait(c, &q)),
        (&Method::POST, [id, "attach"]) => find(id).and_then(|c| streams::attach(d, c, &q, req)),
        (&Method::POST, [id, "resize"]) => match find(id) {
            Ok(c) => streams::resize(d, c, None, &q).await,
            Err(e) => Err(e),
        },
        (&Method::GET, [id, "logs"]) => find(id).and_then(|c| logs(d, c, &q)),
        (&Method::GET, [id, "top"]) => match find(id) {
            Ok(c) => {
                let d2 = d.clone();
                blocking(move || d2.top(&c))
                    .await
                    .map(|t| json(StatusCode::OK, &t))
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        },
        (&Method::GET, [id, "stats"]) => match find(id) {
            Ok(c) => stats(d, c, &q).await,
            Err(e) => Err(e),
        },
        (&Method::POST, [id, "rename"]) => find(id).and_then(|c| {
            d.rename(&c, q.get("name").unwrap_or(""))
                .map(|_| empty(StatusCode::NO_CONTENT))
                .map_err(ApiError::from)
        }),
        (&Method::DELETE, [id]) => match find(id) {
            Ok(c) => done(
                d.remove(c, q.flag("force", false), q.flag("v", false))
                    .await,
            ),
            Err(e) => Err(e),
        },
        (&Method::POST, [id, "exec"]) => match body::<ExecBody>(req).await {
            Ok(b) => d
                .exec_create(id, b)
                .map(|id| json(StatusCode::CREATED, &IdResponse { id }))
                .map_err(ApiError::from),
            Err(e) => Err(e),
        },
        (&Method::POST, [id, what @ ("pause" | "unpause")]) => match find(id) {
            Ok(c) => done(d.set_paused(c, *what == "pause").await),
            Err(e) => Err(e),
        },
        (&Method::POST, [id, "update"]) => match (find(id), body::<UpdateBody>(req).await) {
            (Ok(c), Ok(b)) => d
                .update_container(c, b)
                .await
                .map(|_| {
                    json(
                        StatusCode::OK,
                        &docker::ContainerUpdateResponse {
                            warnings: Some(vec![]),
                        },
                    )
                })
                .map_err(ApiError::from),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        (&Method::HEAD | &Method::GET, [id, "archive"]) => match find(id) {
            Ok(c) => archive_get(d, c, &q, method == Method::HEAD).await,
            Err(e) => Err(e),
        },
        (&Method::PUT, [id, "archive"]) => match find(id) {
            Ok(c) => {
                let path = q.get("path").unwrap_or("").to_owned();
                let owners = q.flag("copyUIDGID", false);
                match super::body_bytes(req, 1 << 30).await {
                    Ok(tar) => {
                        let d2 = d.clone();
                        blocking(move || d2.archive_put(&c, &path, &tar, owners))
                            .await
                            .map(|_| empty(StatusCode::OK))
                            .map_err(ApiError::from)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        },
        (&Method::GET, [id, "export"]) => match find(id) {
            Ok(c) => {
                let d2 = d.clone();
                blocking(move || d2.export(&c))
                    .await
                    .map(|tar| tarball(tar, None))
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        },
        (&Method::GET, [id, "changes"]) => match find(id) {
            Ok(c) => {
                let d2 = d.clone();
                blocking(move || d2.changes(&c))
                    .await
                    .map(|ch| json(StatusCode::OK, &ch))
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        },
        _ => return None,
    })
}

/// A tar reply, with a path's stat header for the archive API.
fn tarball(tar: Vec<u8>, stat: Option<String>) -> crate::router::Resp {
    let mut r = streamed("application/x-tar", crate::http::full(tar));
    if let Some(s) = stat.and_then(|s| s.parse().ok()) {
        r.headers_mut().insert("X-Docker-Container-Path-Stat", s);
    }
    r
}

/// `HEAD`/`GET /containers/{id}/archive`.
async fn archive_get(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query, head: bool) -> Reply {
    let path = q.get("path").unwrap_or("").to_owned();
    let d2 = d.clone();
    if head {
        let stat = blocking(move || d2.archive_stat(&c, &path)).await?;
        let mut r = empty(StatusCode::OK);
        if let Ok(v) = stat.parse() {
            r.headers_mut().insert("X-Docker-Container-Path-Stat", v);
        }
        return Ok(r);
    }
    let (stat, tar) = blocking(move || d2.archive_get(&c, &path)).await?;
    Ok(tarball(tar, Some(stat)))
}

fn done(r: crate::errors::Result<()>) -> Reply {
    r.map(|_| empty(StatusCode::NO_CONTENT))
        .map_err(ApiError::from)
}

fn list(d: &Daemon, q: &Query) -> Reply {
    let mut filters = q.filters(
        "container list",
        &[
            "status",
            "name",
            "id",
            "label",
            "health",
            "ancestor",
            "exited",
            "before",
            "since",
            "isolation",
            "is-task",
        ],
    )?;
    // berth runs no swarm tasks: `is-task=true` lists nothing.
    if filters
        .remove("is-task")
        .is_some_and(|v| v.iter().any(|x| x == "true"))
    {
        return Ok(json(
            StatusCode::OK,
            &Vec::<docker::ContainerSummary>::new(),
        ));
    }
    let exited = filters
        .remove("exited")
        .unwrap_or_default()
        .iter()
        .map(|e| {
            e.parse::<i64>()
                .map_err(|_| ApiError::bad(format!("invalid filter 'exited={e}'")))
        })
        .collect::<Result<Vec<i64>, _>>()?;
    let before = filters.remove("before").and_then(|v| v.into_iter().next());
    let since = filters.remove("since").and_then(|v| v.into_iter().next());
    let mut vals = |k: &str| filters.remove(k).unwrap_or_default();
    let f = ListFilter {
        all: q.flag("all", false),
        limit: q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize),
        status: vals("status"),
        name: vals("name"),
        id: vals("id"),
        label: vals("label"),
        health: vals("health"),
        ancestor: vals("ancestor"),
        isolation: vals("isolation"),
        exited,
        before,
        since,
    };
    let mut list = d.list(&f)?;
    if q.flag("size", false) {
        d.fill_sizes(&mut list);
    }
    Ok(json(StatusCode::OK, &list))
}

async fn create(d: &Arc<Daemon>, q: &Query, b: CreateBody) -> Reply {
    let d2 = d.clone();
    let name = q.get("name").map(str::to_owned);
    let id = blocking(move || d2.create(name.as_deref(), b)).await?;
    Ok(json(
        StatusCode::CREATED,
        &CreateResponse {
            id,
            warnings: vec![],
        },
    ))
}

fn wait(c: Arc<Ctr>, q: &Query) -> Reply {
    let cond = q.get("condition").unwrap_or("not-running").to_owned();
    if !matches!(cond.as_str(), "not-running" | "next-exit" | "removed" | "") {
        return Err(ApiError::bad(format!("invalid condition: {cond:?}")));
    }
    let (tx, body) = channel_body();
    let mut rx = c.phase.subscribe();
    tokio::spawn(async move {
        let first = *rx.borrow_and_update();
        let mut code = match first {
            Phase::Exited(s) | Phase::Removed(s) => Some(s),
            _ => None,
        };
        let done = |p: Phase, fresh: bool| match (cond.as_str(), p) {
            ("removed", Phase::Removed(_)) => true,
            ("removed", _) => false,
            ("next-exit", Phase::Exited(_) | Phase::Removed(_)) => fresh,
            (_, Phase::Exited(_) | Phase::Removed(_)) => true,
            _ => false,
        };
        if !done(first, false) {
            loop {
                if rx.changed().await.is_err() {
                    break;
                }
                let p = *rx.borrow_and_update();
                if let Phase::Exited(s) | Phase::Removed(s) = p {
                    code = Some(s);
                }
                if done(p, true) {
                    break;
                }
            }
        }
        let body = docker::ContainerWaitResponse {
            status_code: code.unwrap_or(0),
            error: None,
        };
        let mut line = serde_json::to_vec(&body).unwrap_or_default();
        line.push(b'\n');
        let _ = tx.send(Bytes::from(line));
    });
    Ok(streamed("application/json", body))
}

/// One json-file log record.
#[derive(serde::Deserialize)]
struct LogLine {
    log: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    time: String,
}

/// A container's log so far, as attach's `logs=1` sends it: framed by stream, or raw
/// with a TTY.
pub(crate) async fn past_log(path: &std::path::Path, tty: bool, out: bool, err: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in logfile::files(path) {
        buf.extend(tokio::fs::read(&f).await.unwrap_or_default());
    }
    let mut res = Vec::new();
    for l in String::from_utf8_lossy(&buf).lines() {
        let Ok(v) = serde_json::from_str::<LogLine>(l) else {
            continue;
        };
        let stderr = v.stream == "stderr";
        if (stderr && !err) || (!stderr && !out) {
            continue;
        }
        if tty {
            res.extend_from_slice(v.log.as_bytes());
        } else {
            res.extend_from_slice(&frame(if stderr { 2 } else { 1 }, v.log.as_bytes()));
        }
    }
    res
}

fn logs(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Reply {
    let rec = c.record();
    if rec.log_none {
        return Err(Error::NotImplemented(
            "configured logging driver does not support reading".into(),
        )
        .into());
    }
    let (want_out, want_err) = (q.flag("stdout", false), q.flag("stderr", false));
    if !want_out && !want_err {
        return Err(ApiError::bad("You must choose at least one stream"));
    }
    let follow = q.flag("follow", false);
    let timestamps = q.flag("timestamps", false);
    let since: f64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let until: f64 = q.get("until").and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let tail: Option<usize> = match q.get("tail") {
        None | Some("all") | Some("") => None,
        Some(t) => Some(
            t.parse()
                .map_err(|_| ApiError::bad(format!("invalid tail: {t:?}")))?,
        ),
    };
    let path = d.log_path(&rec.id);
    let tty = rec.tty;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        // Lines are batched into chunks of up to 64 KiB: a chunk per line would cost a
        // write per line, which a log of 200,000 short lines makes slow.
        const CHUNK: usize = 64 * 1024;
        let emit = |line: &str, out: &mut Vec<u8>| -> Option<()> {
            let v: LogLine = serde_json::from_str(line).ok()?;
            let stderr = v.stream == "stderr";
            if (!stderr && !want_out) || (stderr && !want_err) {
                return None;
            }
            let secs = unix_of(&v.time) as f64
                + v.time
                    .get(20..29)
                    .and_then(|n| n.trim_end_matches('Z').parse::<f64>().ok())
                    .map(|n| n / 1e9)
                    .unwrap_or(0.0);
            if secs < since || (until > 0.0 && secs > until) {
                return None;
            }
            let text = if timestamps {
                format!("{} {}", v.time, v.log)
            } else {
                v.log
            };
            if tty {
                out.extend_from_slice(text.as_bytes());
            } else {
                out.extend_from_slice(&frame(if stderr { 2 } else { 1 }, text.as_bytes()));
            }
            Some(())
        };
        // Sends the batch once it is `min` bytes or more; false when the client is gone.
        let flush = |out: &mut Vec<u8>, min: usize| -> bool {
            if out.is_empty() || out.len() < min {
                return true;
            }
            tx.send(Bytes::from(std::mem::take(out))).is_ok()
        };
        let mut out = Vec::with_capacity(CHUNK);
        // The rotated files, oldest first, then the current one; then follow it by
        // logical offset across rotations.
        let mut buf = Vec::new();
        let base = logfile::base_of(&path);
        let mut current = 0u64;
        for f in logfile::files(&path) {
            let bytes = tokio::fs::read(&f).await.unwrap_or_default();
            if f == path {
                current = bytes.len() as u64;
            }
            buf.extend_from_slice(&bytes);
        }
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut carry = buf[complete..].to_vec();
        let text = String::from_utf8_lossy(&buf[..complete]);
        let lines: Vec<&str> = text.lines().collect();
        let start = tail.map(|t| lines.len().saturating_sub(t)).unwrap_or(0);
        for l in &lines[start..] {
            emit(l, &mut out);
            if !flush(&mut out, CHUNK) {
                return;
            }
        }
        if !flush(&mut out, 0) || !follow {
            return;
        }
        let mut follower = logfile::Follower::new(&path, base + current);
        let mut rx = c.phase.subscribe();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            // The exit is reported only once the log has the last line: after it, one
            // last read finds everything.
            let ended = !matches!(*rx.borrow_and_update(), Phase::Running | Phase::Created);
            let mut more = Vec::new();
            while let Ok(n) = follower.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                more.extend_from_slice(&chunk[..n]);
            }
            carry.extend_from_slice(&more);
            while let Some(i) = carry.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = carry.drain(..=i).collect();
                emit(String::from_utf8_lossy(&l).trim_end_matches('\n'), &mut out);
                if !flush(&mut out, CHUNK) {
                    return;
                }
            }
            if !flush(&mut out, 0) || (ended && more.is_empty()) || tx.is_closed() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    });
    Ok(streamed(
        if tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        },
        body,
    ))
}

async fn stats(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Reply {
    let one_shot = q.flag("one-shot", false);
    let stream = q.flag("stream", true) && !one_shot;
    let sample = |d: Arc<Daemon>, c: Arc<Ctr>| async move {
        let rec = c.record();
        blocking(move || d.stats(&rec)).await
    };
    if !stream {
        // As dockerd: unless one-shot, a second sample a second later, with the first
        // as `precpu_stats`, so that the CPU % can be computed.
        let mut s = sample(d.clone(), c.clone()).await?;
        if !one_shot && c.record().state.running() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let pre = s.cpu_stats.clone();
            s = sample(d.clone(), c).await?;
            s.precpu_stats = pre;
        }
        return Ok(json(StatusCode::OK, &s));
    }
    let (tx, body) = channel_body();
    let d = d.clone();
    tokio::spawn(async move {
        let mut pre = None;
        loop {
            let running = c.record().state.running();
            let Ok(mut s) = sample(d.clone(), c.clone()).await else {
                return;
            };
            if let Some(p) = pre.replace(s.cpu_stats.clone()) {
                s.precpu_stats = p;
            }
            let mut line = serde_json::to_vec(&s).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).is_err() || !running {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(streamed("application/json", body))
}
