//! `/events`: the last [`HISTORY`] events replayed for `since`, then the live ones until
//! `until`, through Docker's filters (`type`, `event`, `container`, `image`, `label`,
//! `scope`). A filter berth has no objects for (networks, volumes...) is refused by name,
//! never ignored.

use crate::errors::{Error, Result};
use crate::models::docker;
use std::collections::HashMap;

/// Events kept for `since`.
pub const HISTORY: usize = 1024;

/// The filters `/events` takes.
pub const FILTERS: [&str; 6] = ["type", "event", "container", "image", "label", "scope"];

/// A Docker time bound: Unix seconds (`1700000000`, `1700000000.5`), as the docker CLI
/// sends `--since`/`--until`, in nanoseconds.
pub fn parse_time(s: &str, what: &str) -> Result<i64> {
    let bad = || Error::InvalidParameter(format!("invalid {what} time: {s:?}"));
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        nanos = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    }
    Ok(secs * 1_000_000_000 + nanos)
}

/// The event attribute naming the tenant an event belongs to (absent: the operator's).
pub const TENANT_ATTR: &str = "berth.tenant";

/// Which events to send.
#[derive(Debug, Default)]
pub struct EventFilter {
    /// The tenant asking (None: the operator, who sees every event).
    pub tenant: Option<String>,
    /// By `filters`: each key must match one of its values.
    pub filters: HashMap<String, Vec<String>>,
    /// Not before (ns).
    pub since: Option<i64>,
    /// Not after (ns).
    pub until: Option<i64>,
}

impl EventFilter {
    /// Whether `ev` passes.
    pub fn matches(&self, ev: &docker::EventMessage) -> bool {
        if let Some(t) = &self.tenant {
            let owner = ev
                .actor
                .as_ref()
                .and_then(|a| a.attributes.as_ref())
                .and_then(|a| a.get(TENANT_ATTR));
            if owner != Some(t) {
                return false;
            }
        }
        let t = ev.time_nano.unwrap_or(0);
        if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
            return false;
        }
        let typ = ev.typ.map(|t| t.to_string()).unwrap_or_default();
        let action = ev.action.clone().unwrap_or_default();
        let actor = ev.actor.clone().unwrap_or_default();
        let id = actor.id.unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        let name = attrs.get("name").cloned().unwrap_or_default();
        self.filters.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "type" => typ == *v,
                // `health_status: healthy` matches `health_status` too, as in dockerd.
                "event" => action == *v || action.split(':').next() == Some(v.as_str()),
                "container" => typ == "container" && (id.starts_with(v.as_str()) || name == *v),
                "image" => {
                    (typ == "image" && (id == *v || name == *v))
                        || attrs.get("image").is_some_and(|i| i == v)
                }
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => attrs.get(lk).is_some_and(|x| x == lv),
                    None => attrs.contains_key(v.as_str()),
                },
                "scope" => v == "local",
                _ => false,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        typ: docker::EventMessageTypeEnum,
        action: &str,
        id: &str,
        t: i64,
    ) -> docker::EventMessage {
        docker::EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(docker::EventActor {
                id: Some(id.into()),
                attributes: Some(
                    [
                        ("name".to_owned(), "web".to_owned()),
                        ("tier".into(), "a".into()),
                    ]
                    .into_iter()
                    .collect(),
                ),
            }),
            scope: Some(docker::EventMessageScopeEnum::LOCAL),
            time: Some(t / 1_000_000_000),
            time_nano: Some(t),
        }
    }

    #[test]
    fn times_and_filters_as_docker_reads_them() {
        assert_eq!(parse_time("12", "since").unwrap(), 12_000_000_000);
        assert_eq!(parse_time("12.5", "since").unwrap(), 12_500_000_000);
        assert!(parse_time("soon", "until").is_err());
        let c = docker::EventMessageTypeEnum::CONTAINER;
        let start = ev(c, "start", "abc123", 10_000_000_000);
        let health = ev(c, "health_status: healthy", "abc123", 20_000_000_000);
        let f = |k: &str, v: &str| EventFilter {
            tenant: None,
            filters: [(k.to_owned(), vec![v.to_owned()])].into(),
            ..Default::default()
        };
        assert!(f("event", "start").matches(&start));
        assert!(!f("event", "start").matches(&health));
        assert!(f("event", "health_status").matches(&health));
        assert!(f("container", "web").matches(&start));
        assert!(f("container", "abc").matches(&start));
        assert!(!f("container", "db").matches(&start));
        assert!(f("type", "container").matches(&start));
        assert!(!f("type", "image").matches(&start));
        assert!(f("label", "tier=a").matches(&start) && !f("label", "tier=b").matches(&start));
        let window = EventFilter {
            tenant: None,
            since: Some(15_000_000_000),
            until: Some(25_000_000_000),
            ..Default::default()
        };
        assert!(!window.matches(&start) && window.matches(&health));
    }
}
