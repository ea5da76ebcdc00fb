//! Timestamps as Docker writes them (RFC 3339, UTC) and its json-file log lines, shared
//! by the agent, the image store (configs) and the daemon, without a date crate.

/// Seconds since the epoch (and optionally nanoseconds) as RFC 3339 UTC:
/// `2026-11-27T21:00:00Z`, or `2026-11-27T21:00:00.123456789Z` with nanoseconds.
pub fn rfc3339(secs: i64, nanos: Option<u32>) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = nanos.map(|n| format!(".{n:09}")).unwrap_or_default();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, RFC 3339 with nanoseconds (as Docker stamps log lines).
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, Some(d.subsec_nanos()))
}

/// One line of Docker's json-file log: `{"log":..,"stream":..,"time":..}` (no newline).
pub fn json_log_line(line: &[u8], stream: &str) -> String {
    serde_json::json!({
        "log": String::from_utf8_lossy(line),
        "stream": stream,
        "time": now_rfc3339(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_nanoseconds() {
        assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_000_000, Some(5)),
            "2026-11-18T11:06:40.000000005Z"
        );
    }
}
