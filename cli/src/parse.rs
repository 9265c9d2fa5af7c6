//! Durations and times as people type them on the command line. Its own
//! module so that command groups (lessons, admin, vouchers) share it
//! without depending on each other.

use chrono::{DateTime, Utc};

use crate::client::input;

/// Seconds from `40m`, `1h`, `90s` or `2400`.
pub fn parse_duration(flag: &str, s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        _ => (s, 1),
    };
    num.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(|n| n * mult)
        .ok_or_else(|| {
            input(format!(
                "{flag}: `{s}` is not a duration (e.g. 2400, 40m, 1h)"
            ))
        })
}

pub fn parse_time(flag: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    if s == "now" {
        return Ok(Utc::now());
    }
    if let Some(rel) = s.strip_prefix('+') {
        return Ok(Utc::now() + chrono::Duration::seconds(parse_duration(flag, rel)?));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            input(format!(
                "{flag}: `{s}` is not an RFC 3339 time, `now` or +DURATION: {e}"
            ))
        })
}

/// A time as the wire carries it.
pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_seconds_and_refuse_the_rest_by_flag() {
        assert_eq!(parse_duration("--d", "40m").unwrap(), 2400);
        assert_eq!(parse_duration("--d", "1h").unwrap(), 3600);
        assert_eq!(parse_duration("--d", "90").unwrap(), 90);
        let e = parse_duration("--ttl", "-5m").unwrap_err().to_string();
        assert!(e.contains("--ttl") && e.contains("-5m"), "{e}");
    }
}
