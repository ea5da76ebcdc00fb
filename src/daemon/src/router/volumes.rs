//! `/volumes/...`: list, create, inspect, remove, prune.

use super::{body, Call, Reply};
use crate::daemon::{blocking, Daemon};
use crate::http::{empty, json, ApiError, Query};
use crate::models::docker;
use crate::volume::VolumeRec;
use hyper::{Method, StatusCode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Routes `/volumes/...`; None if no route matches.
pub async fn route(d: &Arc<Daemon>, call: Call) -> Option<Reply> {
    let Call {
        method,
        seg,
        q,
        req,
    } = call;
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    Some(match (&method, &seg[1..]) {
        (&Method::GET, []) => list(d, &q),
        (&Method::POST, ["create"]) => match body::<docker::VolumeCreateOptions>(req).await {
            Ok(b) => create(d, b).await,
            Err(e) => Err(e),
        },
        (&Method::POST, ["prune"]) => prune(d, &q).await,
        (&Method::GET, [name]) => d
            .volumes
            .get(name)
            .map(|v| json(StatusCode::OK, &d.volume_view(&v, false)))
            .map_err(ApiError::from),
        (&Method::DELETE, [name]) => {
            let (d, name, force) = (d.clone(), name.to_string(), q.flag("force", false));
            blocking(move || d.volume_remove(&name, force))
                .await
                .map(|_| empty(StatusCode::NO_CONTENT))
                .map_err(ApiError::from)
        }
        _ => return None,
    })
}

async fn create(d: &Arc<Daemon>, b: docker::VolumeCreateOptions) -> Reply {
    if b.driver
        .as_deref()
        .is_some_and(|x| !x.is_empty() && x != "local")
    {
        return Err(ApiError::from(crate::errors::Error::NotImplemented(
            format!(
                "the volume driver {:?} (berth has \"local\")",
                b.driver.unwrap_or_default()
            ),
        )));
    }
    if b.cluster_volume_spec.is_some() {
        return Err(ApiError::from(crate::errors::Error::NotImplemented(
            "cluster volumes".into(),
        )));
    }
    let d = d.clone();
    blocking(move || {
        let labels: BTreeMap<String, String> = b.labels.unwrap_or_default().into_iter().collect();
        let opts: BTreeMap<String, String> =
            b.driver_opts.unwrap_or_default().into_iter().collect();
        let (v, new) = d.volumes.create(b.name.as_deref(), labels, &opts)?;
        if new {
            d.event("volume", "create", &v.name, &[("driver", v.driver.clone())]);
        }
        Ok(d.volume_view(&v, false))
    })
    .await
    .map(|v| json(StatusCode::CREATED, &v))
    .map_err(ApiError::from)
}

fn label_match(v: &VolumeRec, l: &str) -> bool {
    match l.split_once('=') {
        Some((k, val)) => v.labels.get(k).map(String::as_str) == Some(val),
        None => v.labels.contains_key(l),
    }
}

fn list(d: &Arc<Daemon>, q: &Query) -> Reply {
    let f = q.filters("volume list", &["name", "driver", "label", "dangling"])?;
    let v = |k: &str| f.get(k).cloned().unwrap_or_default();
    let dangling = match v("dangling").first().map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(x) => return Err(ApiError::bad(format!("invalid filter 'dangling={x}'"))),
    };
    let vols: Vec<docker::Volume> = d
        .volumes
        .all()
        .into_iter()
        .filter(|x| v("name").is_empty() || v("name").iter().any(|n| x.name.contains(n.as_str())))
        .filter(|x| v("driver").is_empty() || v("driver").contains(&x.driver))
        .filter(|x| v("label").iter().all(|l| label_match(x, l)))
        .filter(|x| dangling.is_none_or(|want| d.volume_users(&x.name).is_empty() == want))
        .map(|x| d.volume_view(&x, false))
        .collect();
    Ok(json(
        StatusCode::OK,
        &docker::VolumeListResponse {
            volumes: Some(vols),
            warnings: Some(vec![]),
        },
    ))
}

async fn prune(d: &Arc<Daemon>, q: &Query) -> Reply {
    let f = q.filters("volume prune", &["label", "label!", "all"])?;
    let labels = f.get("label").cloned().unwrap_or_default();
    let not_labels = f.get("label!").cloned().unwrap_or_default();
    // Since API 1.42 only anonymous volumes are pruned unless all=true.
    let all = f
        .get("all")
        .and_then(|a| a.first())
        .is_some_and(|a| a == "true" || a == "1");
    let d = d.clone();
    let (gone, bytes) = blocking(move || {
        let mut gone = Vec::new();
        let mut bytes = 0i64;
        for v in d.volumes.all() {
            let keep = labels.iter().all(|l| label_match(&v, l))
                && !not_labels.iter().any(|l| label_match(&v, l))
                && (all || v.anonymous);
            if !keep || !d.volume_users(&v.name).is_empty() {
                continue;
            }
            let size = d.volumes.size(&v.name);
            if d.volume_remove(&v.name, false).is_ok() {
                bytes += size;
                gone.push(v.name);
            }
        }
        Ok((gone, bytes))
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &docker::VolumePruneResponse {
            volumes_deleted: Some(gone),
            space_reclaimed: Some(bytes),
        },
    ))
}
