//! Healthchecks, as Docker runs them: the image's `HEALTHCHECK` or the create body's
//! `Healthcheck` (merged field by field as dockerd merges them), probed through exec in
//! the running container (so the same in both isolation modes), with `State.Health`
//! (status, failing streak, the last five results), `health_status` events and the
//! `(healthy)` note in `ps`.
//!
//! Timing follows moby's monitor: a probe every `Interval` (every `StartInterval` during
//! the `StartPeriod`), each bounded by `Timeout`; a success makes the container healthy,
//! `Retries` failures in a row make it unhealthy, and failures during the start period do
//! not count.

use super::{blocking, new_id, now_rfc3339, Ctr, Daemon, Record};
use crate::errors::{Error, Result};
use crate::models::docker;
use berth_protocol::{Request, StreamKind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// The shortest duration a healthcheck setting may have (other than 0: the default).
const MIN_DURATION: i64 = 1_000_000;
/// Output kept per probe, as dockerd keeps it.
const MAX_OUTPUT: usize = 4096;
/// Results kept in `State.Health.Log`.
const MAX_LOG: usize = 5;

/// A container's healthcheck, resolved: what runs, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The command, as exec runs it (`CMD-SHELL x` is `/bin/sh -c x`).
    pub cmd: Vec<String>,
    /// Between probes.
    pub interval: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Failures in this window after a start do not count.
    pub start_period: Duration,
    /// Between probes during the start period.
    pub start_interval: Duration,
    /// Failures in a row that make the container unhealthy.
    pub retries: u32,
}

/// The Docker fields of an image config that OCI's types drop (`Healthcheck` among them).
#[derive(Deserialize, Default)]
struct DockerImageConfig {
    #[serde(default)]
    config: Option<DockerRunDefaults>,
}

#[derive(Deserialize, Default)]
struct DockerRunDefaults {
    #[serde(default, rename = "Healthcheck")]
    healthcheck: Option<docker::HealthConfig>,
}

/// The image's `HEALTHCHECK`, from its config document.
pub fn image_healthcheck(doc: &[u8]) -> Option<docker::HealthConfig> {
    serde_json::from_slice::<DockerImageConfig>(doc)
        .ok()
        .and_then(|c| c.config)
        .and_then(|c| c.healthcheck)
}

/// dockerd's merge: no `Healthcheck` in the body takes the image's; one without `Test`
/// takes the image's test, and each zero duration or retry count the image's value.
pub fn merge(
    body: Option<&docker::HealthConfig>,
    image: Option<&docker::HealthConfig>,
) -> Option<docker::HealthConfig> {
    let Some(b) = body else {
        return image.cloned();
    };
    let mut m = b.clone();
    if let Some(i) = image {
        if m.test.as_ref().is_none_or(|t| t.is_empty()) {
            m.test = i.test.clone();
        }
        let zero = |v: Option<i64>| v.is_none_or(|x| x == 0);
        if zero(m.interval) {
            m.interval = i.interval;
        }
        if zero(m.timeout) {
            m.timeout = i.timeout;
        }
        if zero(m.start_period) {
            m.start_period = i.start_period;
        }
        if zero(m.start_interval) {
            m.start_interval = i.start_interval;
        }
        if zero(m.retries) {
            m.retries = i.retries;
        }
    }
    Some(m)
}

fn duration(v: Option<i64>, field: &str, default: Duration) -> Result<Duration> {
    match v.unwrap_or(0) {
        0 => Ok(default),
        n if n < MIN_DURATION => Err(Error::InvalidParameter(format!(
            "{field} in Healthcheck cannot be less than 1ms"
        ))),
        n => Ok(Duration::from_nanos(n as u64)),
    }
}

impl HealthCheck {
    /// Checks a (merged) healthcheck: None when there is none or it is `NONE`; a bad
    /// value is a 400 naming the field.
    pub fn from_config(c: Option<&docker::HealthConfig>) -> Result<Option<HealthCheck>> {
        let Some(c) = c else { return Ok(None) };
        let test = c.test.clone().unwrap_or_default();
        let cmd = match test.first().map(String::as_str) {
            None | Some("NONE") => return Ok(None),
            Some("CMD") if test.len() > 1 => test[1..].to_vec(),
            Some("CMD-SHELL") if test.len() == 2 => {
                vec!["/bin/sh".into(), "-c".into(), test[1].clone()]
            }
            Some(other) => {
                return Err(Error::InvalidParameter(format!(
                    "Healthcheck.Test: {other:?} with {} arguments: expected [\"NONE\"], \
                     [\"CMD\", command, args...] or [\"CMD-SHELL\", command]",
                    test.len() - 1
                )))
            }
        };
        let retries = match c.retries.unwrap_or(0) {
            r if r < 0 => {
                return Err(Error::InvalidParameter(
                    "Retries in Healthcheck cannot be negative".into(),
                ))
            }
            0 => DEFAULT_RETRIES,
            r => u32::try_from(r).unwrap_or(u32::MAX),
        };
        Ok(Some(HealthCheck {
            cmd,
            interval: duration(c.interval, "Interval", DEFAULT_INTERVAL)?,
            timeout: duration(c.timeout, "Timeout", DEFAULT_TIMEOUT)?,
            start_period: duration(c.start_period, "StartPeriod", Duration::ZERO)?,
            start_interval: duration(c.start_interval, "StartInterval", DEFAULT_START_INTERVAL)?,
            retries,
        }))
    }
}

/// A health status as Docker writes it.
pub fn status_str(h: &docker::Health) -> &'static str {
    match h.status {
        Some(docker::HealthStatusEnum::HEALTHY) => "healthy",
        Some(docker::HealthStatusEnum::UNHEALTHY) => "unhealthy",
        Some(docker::HealthStatusEnum::STARTING) => "starting",
        _ => "none",
    }
}

/// What a probe returned.
struct Outcome {
    exit_code: i64,
    output: String,
}

/// Reads a stream to its end, keeping the first `MAX_OUTPUT` bytes.
async fn read_capped(s: Option<std::os::unix::net::UnixStream>, keep: &mut Vec<u8>) {
    let Some(s) = s else { return };
    if s.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut s) = tokio::net::UnixStream::from_std(s) else {
        return;
    };
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(keep.len());
        keep.extend_from_slice(&buf[..n.min(room)]);
    }
}

impl Daemon {
    /// Runs one probe in the container.
    async fn probe(self: &Arc<Self>, rec: &Record, hc: &HealthCheck) -> Outcome {
        let exec_id = new_id();
        let agent = self.agent(rec);
        let (d, rec2, id2, cmd, a2) = (
            self.clone(),
            rec.clone(),
            exec_id.clone(),
            hc.cmd.clone(),
            agent.clone(),
        );
        let started = blocking(move || {
            let process = d.exec_process(&rec2, cmd, &[], None, None, false)?;
            a2.exec(
                &id2,
                berth_protocol::ExecSpec {
                    process,
                    open_stdin: false,
                    archive: None,
                },
            )?;
            let out = a2.open(Some(id2.clone()), StreamKind::Stdout)?;
            let err = a2.open(Some(id2), StreamKind::Stderr)?;
            Ok((out, err))
        })
        .await;
        let (out, err) = match started {
            Ok(s) => s,
            Err(e) => {
                return Outcome {
                    exit_code: -1,
                    output: e.to_string(),
                }
            }
        };
        let run = async {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            tokio::join!(
                read_capped(Some(out), &mut o),
                read_capped(Some(err), &mut e)
            );
            o.extend_from_slice(&e);
            o.truncate(MAX_OUTPUT);
            let code = agent.wait_async(Some(exec_id.clone())).await;
            (o, code)
        };
        match tokio::time::timeout(hc.timeout, run).await {
            Ok((o, Ok((code, _)))) => Outcome {
                exit_code: code,
                output: String::from_utf8_lossy(&o).into_owned(),
            },
            Ok((_, Err(e))) => Outcome {
                exit_code: -1,
                output: e.to_string(),
            },
            Err(_) => {
                let _ = agent
                    .call_async(&Request::Signal {
                        id: rec.id.clone(),
                        exec_id: Some(exec_id),
                        signal: libc::SIGKILL,
                        all: false,
                    })
                    .await;
                Outcome {
                    exit_code: -1,
                    output: format!(
                        "Health check exceeded timeout ({})",
                        go_duration(hc.timeout)
                    ),
                }
            }
        }
    }

    /// A container with a healthcheck that has just started is `starting` (set before
    /// `start` answers, so that an inspect right after it sees the status).
    pub fn health_starting(c: &Ctr) {
        if c.record().healthcheck.is_some() {
            *c.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(docker::Health {
                status: Some(docker::HealthStatusEnum::STARTING),
                failing_streak: Some(0),
                log: Some(vec![]),
            });
        }
    }

    /// Probes a running container until the task is aborted (its supervisor does that
    /// when the container exits). The status is `starting` until the first probe counts
    /// ([`Daemon::health_starting`], set by the supervisor before `start` answers).
    pub fn watch_health(self: &Arc<Self>, c: Arc<Ctr>) -> Option<tokio::task::JoinHandle<()>> {
        let rec = c.record();
        let hc = rec.healthcheck.clone()?;
        let d = self.clone();
        Some(self.rt.spawn(async move {
            let began = Instant::now();
            loop {
                let in_start = began.elapsed() < hc.start_period;
                tokio::time::sleep(if in_start {
                    hc.start_interval
                } else {
                    hc.interval
                })
                .await;
                // As dockerd: no probe while paused (its exec would freeze with it).
                if c.record().paused {
                    continue;
                }
                let start = now_rfc3339();
                let at = Instant::now();
                let o = d.probe(&rec, &hc).await;
                let counts = at.duration_since(began) >= hc.start_period;
                d.record_probe(&c, &hc, start, o, counts);
            }
        }))
    }

    fn record_probe(&self, c: &Ctr, hc: &HealthCheck, start: String, o: Outcome, counts: bool) {
        let changed = {
            let mut g = c.health.lock().unwrap_or_else(|e| e.into_inner());
            let Some(h) = g.as_mut() else { return };
            let before = h.status;
            let log = h.log.get_or_insert_with(Vec::new);
            log.push(docker::HealthcheckResult {
                start: Some(start),
                end: Some(now_rfc3339()),
                exit_code: Some(o.exit_code),
                output: Some(o.output),
            });
            if log.len() > MAX_LOG {
                log.remove(0);
            }
            if o.exit_code == 0 {
                h.failing_streak = Some(0);
                h.status = Some(docker::HealthStatusEnum::HEALTHY);
            } else if counts {
                let streak = h.failing_streak.unwrap_or(0) + 1;
                h.failing_streak = Some(streak);
                if streak >= i64::from(hc.retries) {
                    h.status = Some(docker::HealthStatusEnum::UNHEALTHY);
                }
            }
            (h.status != before).then(|| status_str(h))
        };
        if let Some(s) = changed {
            let name = c.record().name;
            self.event(
                "container",
                &format!("health_status: {s}"),
                &c.id,
                &[("name", name)],
            );
        }
    }
}

/// A duration as Go prints it (`30s`, `1m30s`, `500ms`), for Docker's wording.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s) = (
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms % 60_000) as f64 / 1000.0,
    );
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str]) -> docker::HealthConfig {
        docker::HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn tests_and_defaults_are_dockers() {
        let h = HealthCheck::from_config(Some(&hc(&["CMD-SHELL", "curl -f x || exit 1"])))
            .unwrap()
            .unwrap();
        assert_eq!(h.cmd, ["/bin/sh", "-c", "curl -f x || exit 1"]);
        assert_eq!(
            (h.interval, h.timeout, h.start_period, h.retries),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Duration::ZERO, 3)
        );
        let h = HealthCheck::from_config(Some(&hc(&["CMD", "true", "x"])))
            .unwrap()
            .unwrap();
        assert_eq!(h.cmd, ["true", "x"]);
        assert_eq!(
            HealthCheck::from_config(Some(&hc(&["NONE"]))).unwrap(),
            None
        );
        assert_eq!(HealthCheck::from_config(None).unwrap(), None);
        for bad in [&["CMD"][..], &["CMD-SHELL", "a", "b"], &["RUN", "x"]] {
            assert!(HealthCheck::from_config(Some(&hc(bad))).is_err(), "{bad:?}");
        }
        let mut c = hc(&["CMD", "true"]);
        c.interval = Some(1000);
        let e = HealthCheck::from_config(Some(&c)).unwrap_err();
        assert!(e.to_string().contains("Interval"), "{e}");
        c.interval = Some(2_000_000_000);
        c.retries = Some(-1);
        assert!(HealthCheck::from_config(Some(&c)).is_err());
        c.retries = Some(5);
        let h = HealthCheck::from_config(Some(&c)).unwrap().unwrap();
        assert_eq!((h.interval, h.retries), (Duration::from_secs(2), 5));
    }

    #[test]
    fn the_body_and_the_image_merge_as_in_dockerd() {
        let mut image = hc(&["CMD", "check"]);
        image.interval = Some(5_000_000_000);
        image.retries = Some(7);
        assert_eq!(merge(None, Some(&image)), Some(image.clone()));
        // The body's own test and interval win; the rest come from the image.
        let mut body = hc(&["CMD", "mine"]);
        body.interval = Some(1_000_000_000);
        let m = merge(Some(&body), Some(&image)).unwrap();
        assert_eq!(m.test, body.test);
        assert_eq!((m.interval, m.retries), (Some(1_000_000_000), Some(7)));
        // Only durations (`--health-interval`): the image's test runs.
        let body = docker::HealthConfig {
            timeout: Some(3_000_000_000),
            ..Default::default()
        };
        let m = merge(Some(&body), Some(&image)).unwrap();
        assert_eq!(m.test, image.test);
        assert_eq!(m.timeout, Some(3_000_000_000));
        // --no-healthcheck.
        let m = merge(Some(&hc(&["NONE"])), Some(&image));
        assert_eq!(HealthCheck::from_config(m.as_ref()).unwrap(), None);
        let doc = br#"{"architecture":"amd64","config":{"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000}}}"#;
        assert_eq!(
            image_healthcheck(doc).unwrap().test.unwrap(),
            ["CMD-SHELL", "true"]
        );
        assert!(image_healthcheck(br#"{"config":{}}"#).is_none());
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
    }
}
