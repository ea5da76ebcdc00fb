//! The Docker objects berth has not built: each answers 501 naming itself.

use super::{Call, Reply};
use crate::errors::Error;

/// Routes networks, volumes, build, swarm and the rest; None for an unknown path.
pub fn route(call: Call) -> Option<Reply> {
    let first = call.seg.first()?.as_str();
    match first {
        "networks" | "volumes" | "build" | "swarm" | "services" | "nodes" | "secrets"
        | "configs" | "plugins" | "session" | "distribution" | "tasks" | "auth" => {
            Some(Err(Error::NotImplemented(first.to_owned()).into()))
        }
        _ => None,
    }
}
