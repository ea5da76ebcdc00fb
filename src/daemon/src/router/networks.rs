//! `/networks/...`: list, inspect, create, remove, prune, connect, disconnect.

use super::{body, Call, Reply};
use crate::daemon::{blocking, Daemon};
use crate::http::{empty, json, ApiError, Query};
use crate::models::docker;
use crate::network::NetworkRec;
use hyper::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;

/// Routes `/networks/...`; None if no route matches.
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
        (&Method::POST, ["create"]) => match body::<docker::NetworkCreateRequest>(req).await {
            Ok(b) => {
                let d = d.clone();
                blocking(move || d.network_create(&b))
                    .await
                    .map(|id| {
                        json(
                            StatusCode::CREATED,
                            &docker::NetworkCreateResponse {
                                id: Some(id),
                                warning: Some(String::new()),
                            },
                        )
                    })
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        },
        (&Method::POST, ["prune"]) => prune(d, &q).await,
        (&Method::GET, [id]) => d
            .networks
            .find(id)
            .map(|n| json(StatusCode::OK, &inspect(d, &n)))
            .map_err(ApiError::from),
        (&Method::DELETE, [id]) => {
            let (d, id) = (d.clone(), id.to_string());
            blocking(move || d.network_remove(&id))
                .await
                .map(|_| empty(StatusCode::NO_CONTENT))
                .map_err(ApiError::from)
        }
        (&Method::POST, [id, "connect"]) => {
            match body::<docker::NetworkConnectRequest>(req).await {
                Ok(b) => {
                    let (d, id) = (d.clone(), id.to_string());
                    let ctr = b.container.clone().unwrap_or_default();
                    let ep = b.endpoint_config.clone().unwrap_or_default();
                    blocking(move || d.network_connect(&id, &ctr, &ep))
                        .await
                        .map(|_| empty(StatusCode::OK))
                        .map_err(ApiError::from)
                }
                Err(e) => Err(e),
            }
        }
        (&Method::POST, [id, "disconnect"]) => {
            match body::<docker::NetworkDisconnectRequest>(req).await {
                Ok(b) => {
                    let (d, id) = (d.clone(), id.to_string());
                    let ctr = b.container.clone().unwrap_or_default();
                    let force = b.force.unwrap_or(false);
                    blocking(move || d.network_disconnect(&id, &ctr, force))
                        .await
                        .map(|_| empty(StatusCode::OK))
                        .map_err(ApiError::from)
                }
                Err(e) => Err(e),
            }
        }
        _ => return None,
    })
}

/// A network as the API shows it (with its containers when `containers`).
pub fn inspect(d: &Daemon, n: &NetworkRec) -> docker::Network {
    let containers: HashMap<String, docker::NetworkContainer> = d
        .network_users(&n.id)
        .into_iter()
        .filter(|r| r.state.running())
        .filter(|r| crate::tenant::sees(&r.tenant))
        .filter_map(|r| {
            let e = r.net.endpoints.iter().find(|e| e.network_id == n.id)?;
            Some((
                r.id.clone(),
                docker::NetworkContainer {
                    name: Some(r.name.clone()),
                    endpoint_id: Some(e.endpoint_id.clone()),
                    mac_address: Some(e.mac.clone()),
                    ipv4_address: Some(format!("{}/{}", e.ip, e.prefix)),
                    ipv6_address: Some(String::new()),
                },
            ))
        })
        .collect();
    let config = match n.subnet {
        Some(s) => vec![docker::IpamConfig {
            subnet: Some(s.to_string()),
            ip_range: n.ip_range.map(|r| r.to_string()),
            gateway: n.gateway.map(|g| g.to_string()),
            auxiliary_addresses: None,
        }],
        None => vec![],
    };
    let mut options: HashMap<String, String> = n.options.clone().into_iter().collect();
    if n.name == "bridge" {
        options.insert(
            "com.docker.network.bridge.default_bridge".into(),
            "true".into(),
        );
        options.insert("com.docker.network.bridge.name".into(), n.bridge.clone());
        options.insert("com.docker.network.driver.mtu".into(), n.mtu.to_string());
    }
    docker::Network {
        name: Some(n.name.clone()),
        id: Some(n.id.clone()),
        created: Some(n.created.clone()),
        scope: Some("local".into()),
        driver: Some(n.driver.clone()),
        enable_ipv6: Some(false),
        ipam: Some(docker::Ipam {
            driver: Some("default".into()),
            config: Some(config),
            options: Some(HashMap::new()),
        }),
        internal: Some(n.internal),
        attachable: Some(n.attachable),
        ingress: Some(false),
        containers: Some(containers),
        options: Some(options),
        labels: Some(n.labels.clone().into_iter().collect()),
    }
}

fn label_match(n: &NetworkRec, l: &str) -> bool {
    match l.split_once('=') {
        Some((k, v)) => n.labels.get(k).map(String::as_str) == Some(v),
        None => n.labels.contains_key(l),
    }
}

fn list(d: &Arc<Daemon>, q: &Query) -> Reply {
    let f = q.filters(
        "network list",
        &["name", "id", "driver", "label", "type", "scope", "dangling"],
    )?;
    let v = |k: &str| f.get(k).cloned().unwrap_or_default();
    for t in v("type") {
        if t != "custom" && t != "builtin" {
            return Err(ApiError::bad(format!("invalid filter: 'type'='{t}'")));
        }
    }
    let dangling = match v("dangling").first().map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(x) => return Err(ApiError::bad(format!("invalid filter 'dangling={x}'"))),
    };
    let mut out: Vec<docker::Network> = d
        .networks
        .visible()
        .into_iter()
        .filter(|n| v("name").is_empty() || v("name").iter().any(|x| n.name.contains(x.as_str())))
        .filter(|n| v("id").is_empty() || v("id").iter().any(|x| n.id.starts_with(x.as_str())))
        .filter(|n| v("driver").is_empty() || v("driver").contains(&n.driver))
        .filter(|n| v("label").iter().all(|l| label_match(n, l)))
        .filter(|n| {
            v("type").is_empty() || v("type").iter().any(|t| (t == "builtin") == n.predefined())
        })
        .filter(|_| v("scope").is_empty() || v("scope").iter().any(|s| s == "local"))
        .filter(|n| match dangling {
            None => true,
            Some(want) => (!n.predefined() && d.network_users(&n.id).is_empty()) == want,
        })
        .map(|n| inspect(d, &n))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(json(StatusCode::OK, &out))
}

async fn prune(d: &Arc<Daemon>, q: &Query) -> Reply {
    let f = q.filters("network prune", &["label", "label!", "until"])?;
    let labels = f.get("label").cloned().unwrap_or_default();
    let not_labels = f.get("label!").cloned().unwrap_or_default();
    let until = match f.get("until").and_then(|u| u.first()) {
        Some(u) => Some(crate::daemon::events::parse_time(u, "until")?),
        None => None,
    };
    let d = d.clone();
    let gone = blocking(move || {
        Ok(d.network_prune(|n| {
            labels.iter().all(|l| label_match(n, l))
                && !not_labels.iter().any(|l| label_match(n, l))
                && until.is_none_or(|t| crate::daemon::unix_of(&n.created) < t)
        }))
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &docker::NetworkPruneResponse {
            networks_deleted: Some(gone),
        },
    ))
}
