//! The region's time zone, in which the console shows every time.
//!
//! Regions served so far keep no daylight-saving time, so a zone is a name
//! plus a fixed offset; this avoids shipping a time-zone database in the
//! broker (decision 063). `CLASSGRID_CONSOLE_TIME_ZONE` takes a known name
//! (`Asia/Shanghai`) or an offset (`+08:00`).

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};

pub const ENV: &str = "CLASSGRID_CONSOLE_TIME_ZONE";

/// IANA zones without daylight-saving time in the regions classgrid serves.
const KNOWN: &[(&str, i32)] = &[
    ("Asia/Shanghai", 480),
    ("Asia/Chongqing", 480),
    ("Asia/Hong_Kong", 480),
    ("Asia/Macau", 480),
    ("Asia/Taipei", 480),
    ("Asia/Urumqi", 360),
    ("Asia/Singapore", 480),
    ("Asia/Tokyo", 540),
    ("Asia/Seoul", 540),
    ("UTC", 0),
];

#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub offset: FixedOffset,
}

impl Default for Zone {
    fn default() -> Self {
        Self::parse("Asia/Shanghai").expect("built-in zone")
    }
}

impl Zone {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((name, min)) = KNOWN.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(Self {
                name: (*name).to_string(),
                offset: FixedOffset::east_opt(min * 60).ok_or("offset")?,
            });
        }
        let bad = || {
            format!(
                "{ENV}: `{}` is neither a known zone ({}) nor an offset like +08:00",
                s.chars().take(64).collect::<String>(),
                KNOWN.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            )
        };
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(0..=14).contains(&h) || !(0..60).contains(&m) {
            return Err(bad());
        }
        let offset = FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)?;
        Ok(Self {
            name: format!("UTC{s}"),
            offset,
        })
    }

    /// From the environment; a bad value is refused at start, not guessed.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v),
            _ => Ok(Self::default()),
        }
    }

    pub fn local(&self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        t.with_timezone(&self.offset)
    }

    pub fn fmt(&self, t: DateTime<Utc>) -> String {
        self.local(t).format("%Y-%m-%d %H:%M:%S").to_string()
    }

    pub fn hm(&self, t: DateTime<Utc>) -> String {
        self.local(t).format("%H:%M").to_string()
    }

    pub fn today(&self, now: DateTime<Utc>) -> NaiveDate {
        self.local(now).date_naive()
    }

    /// Midnight of a local date, as an instant.
    pub fn midnight(&self, d: NaiveDate) -> DateTime<Utc> {
        let naive = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        self.offset
            .from_local_datetime(&naive)
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_is_the_default_and_shows_local_time() {
        let z = Zone::default();
        assert_eq!(z.name, "Asia/Shanghai");
        let t = DateTime::parse_from_rfc3339("2026-11-22T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(z.fmt(t), "2026-11-22 10:00:00");
        assert_eq!(
            z.midnight(z.today(t)),
            DateTime::parse_from_rfc3339("2026-11-21T16:00:00Z").unwrap()
        );
    }

    #[test]
    fn offsets_parse_and_nonsense_is_refused_with_the_variable_name() {
        assert_eq!(
            Zone::parse("+05:30").unwrap().offset.local_minus_utc(),
            19800
        );
        assert_eq!(
            Zone::parse("-03:00").unwrap().offset.local_minus_utc(),
            -10800
        );
        for bad in ["Mars/Olympus", "+25:00", "08:00", "+8", ""] {
            let e = Zone::parse(bad).unwrap_err();
            assert!(e.contains(ENV), "{e}");
        }
    }
}
