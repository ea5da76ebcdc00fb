//! The Docker objects berth has not built: each answers 501 naming itself. Swarm's
//! objects answer as dockerd's do on a node outside a swarm (503, "This node is not part
//! of a swarm"); creating or joining a swarm is 501.

use super::{Call, Reply};
use crate::errors::Error;

/// Routes build, swarm and the rest; None for an unknown path.
pub fn route(call: Call) -> Option<Reply> {
    let first = call.seg.first()?.as_str();
    let second = call.seg.get(1).map(String::as_str);
    // Pruning what berth has none of prunes nothing, truthfully: `docker system prune`
    // goes through every kind and must not fail on the ones not built.
    if call.method == hyper::Method::POST && call.seg.len() == 2 && second == Some("prune") {
        use crate::http::json;
        use crate::models::docker;
        use hyper::StatusCode;
        let none = || Some(vec![]);
        let reply = match first {
            "build" => Some(json(
                StatusCode::OK,
                &docker::BuildPruneResponse {
                    caches_deleted: none(),
                    space_reclaimed: Some(0),
                },
            )),
            _ => None,
        };
        if let Some(r) = reply {
            return Some(Ok(r));
        }
    }
    match (first, second) {
        ("swarm", Some("init" | "join")) => Some(Err(Error::NotImplemented(
            "swarm mode".to_owned(),
        )
        .into())),
        ("swarm" | "services" | "nodes" | "secrets" | "configs" | "tasks", _) => Some(Err(
            Error::Unavailable(
                "This node is not part of a swarm. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.".to_owned(),
            )
            .into(),
        )),
        ("build" | "plugins" | "session" | "distribution", _) => {
            Some(Err(Error::NotImplemented(first.to_owned()).into()))
        }
        _ => None,
    }
}
