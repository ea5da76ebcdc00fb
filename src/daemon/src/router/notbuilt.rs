//! The Docker objects berth has not built: each answers 501 naming itself. Swarm's
//! objects answer as dockerd's do on a node outside a swarm (503, "This node is not part
//! of a swarm"); creating or joining a swarm is 501.

use super::{Call, Reply};
use crate::errors::Error;

/// Routes networks, volumes, build, swarm and the rest; None for an unknown path.
pub fn route(call: Call) -> Option<Reply> {
    let first = call.seg.first()?.as_str();
    let second = call.seg.get(1).map(String::as_str);
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
        ("networks" | "volumes" | "build" | "plugins" | "session" | "distribution" | "auth", _) => {
            Some(Err(Error::NotImplemented(first.to_owned()).into()))
        }
        _ => None,
    }
}
