//! Times as people in the region read them: RFC 3339 in the region's time
//! zone (`--time-zone`, default Asia/Shanghai), with its offset.

use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};

static ZONE: OnceLock<chrono_tz::Tz> = OnceLock::new();

pub fn set(tz: chrono_tz::Tz) {
    let _ = ZONE.set(tz);
}

pub fn zone() -> chrono_tz::Tz {
    *ZONE.get().unwrap_or(&chrono_tz::Asia::Shanghai)
}

pub fn show_utc(t: DateTime<Utc>) -> String {
    t.with_timezone(&zone())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

pub fn show(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(show_utc)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_in_the_region_zone_with_offset() {
        let t = DateTime::parse_from_rfc3339("2030-09-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(show_utc(t), "2030-09-01T08:00:00+08:00");
    }
}
