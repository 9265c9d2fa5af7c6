//! A list of broker addresses, `--broker URL1,URL2,URL3` (decision 091): a
//! district that runs several broker replicas without a load balancer lists
//! them in its agents', edges' and CLI's configuration, and each client
//! tries them in turn. Only the leader keeps a connection (a standby closes
//! gRPC connections as they come, decision 078), so "in turn" finds it
//! without the client knowing which replica leads.

use std::time::Duration;

/// More replicas than this in one region is a configuration mistake (a
/// pasted node list, say), not a deployment: three is the usual number.
pub const MAX_BROKERS: usize = 16;

/// Checks a configured broker address: one URL, or several separated by
/// commas. `field` names the flag or key in errors (`--broker`). A single URL
/// is checked exactly as before lists existed; in a list every entry must be
/// an http:// or https:// URL with a host, no entry may repeat, and all use
/// the same scheme (the replicas of a region all use TLS, or none does).
pub fn parse(field: &str, value: &str) -> anyhow::Result<Vec<String>> {
    if !value.contains(',') {
        if !(value.starts_with("http://") || value.starts_with("https://")) {
            anyhow::bail!("{field}: must be an http:// or https:// URL, not `{value}`");
        }
        return Ok(vec![value.to_string()]);
    }
    let entries = split(value);
    if entries.len() > MAX_BROKERS {
        anyhow::bail!(
            "{field}: lists {} brokers; at most {MAX_BROKERS} replicas can be listed",
            entries.len()
        );
    }
    for (i, u) in entries.iter().enumerate() {
        let n = i + 1;
        if u.is_empty() {
            anyhow::bail!(
                "{field}: entry {n} of `{value}` is empty; separate the URLs with single commas"
            );
        }
        let scheme = scheme(u).ok_or_else(|| {
            anyhow::anyhow!("{field}: entry {n} `{u}` must be an http:// or https:// URL")
        })?;
        let uri: tonic::codegen::http::Uri = u
            .parse()
            .map_err(|e| anyhow::anyhow!("{field}: entry {n} `{u}` is not a URL: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            anyhow::bail!("{field}: entry {n} `{u}` has no host");
        }
        if let Some(m) = entries[..i].iter().position(|p| p == u) {
            anyhow::bail!("{field}: entry {n} `{u}` repeats entry {}", m + 1);
        }
        let first = scheme_of_first(&entries);
        if scheme != first {
            anyhow::bail!(
                "{field}: entry {n} `{u}` is {scheme}:// but entry 1 is {first}://; \
                 the replicas of a region all use TLS or none does"
            );
        }
    }
    Ok(entries)
}

fn scheme(u: &str) -> Option<&'static str> {
    if u.starts_with("https://") {
        Some("https")
    } else if u.starts_with("http://") {
        Some("http")
    } else {
        None
    }
}

fn scheme_of_first(entries: &[String]) -> &'static str {
    entries.first().and_then(|u| scheme(u)).unwrap_or("http")
}

/// The URLs of an address already checked by [`parse`] (or set in code, as
/// `classgrid up` does): a value without a comma is its one URL, as is.
pub fn split(value: &str) -> Vec<String> {
    if !value.contains(',') {
        return vec![value.to_string()];
    }
    value.split(',').map(|u| u.trim().to_string()).collect()
}

/// Which broker of the list to try next, and how long to wait before. After
/// a failed session the next URL is tried, so a dead replica costs one
/// attempt; the backoff doubles (up to `max`) once every URL has failed in
/// a row, so with one URL it doubles at each failure, as it always has.
#[derive(Debug, Clone)]
pub struct Rotation {
    urls: Vec<String>,
    at: usize,
    failed_in_a_row: usize,
    initial: Duration,
    backoff: Duration,
    max: Duration,
}

impl Rotation {
    pub fn new(urls: Vec<String>, initial: Duration, max: Duration) -> Self {
        assert!(!urls.is_empty(), "a broker list has at least one URL");
        Self {
            urls,
            at: 0,
            failed_in_a_row: 0,
            initial,
            backoff: initial,
            max,
        }
    }

    /// The URL to try now.
    pub fn current(&self) -> &str {
        &self.urls[self.at]
    }

    /// The wait before the next attempt, after the session with
    /// [`Rotation::current`] failed; moves on to the next URL.
    pub fn failed(&mut self) -> Duration {
        let wait = self.backoff;
        self.at = (self.at + 1) % self.urls.len();
        self.failed_in_a_row += 1;
        if self.failed_in_a_row.is_multiple_of(self.urls.len()) {
            self.backoff = (self.backoff * 2).min(self.max);
        }
        wait
    }

    /// A session that lasted: the next failure starts from the shortest wait.
    pub fn reset(&mut self) {
        self.backoff = self.initial;
        self.failed_in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_url_is_checked_and_kept_as_before() {
        assert_eq!(
            parse("--broker", "https://b:7443").unwrap(),
            vec!["https://b:7443"]
        );
        let e = parse("--broker", "b:7443").unwrap_err().to_string();
        assert_eq!(
            e,
            "--broker: must be an http:// or https:// URL, not `b:7443`"
        );
    }

    #[test]
    fn a_list_is_split_trimmed_and_each_entry_checked_by_number() {
        assert_eq!(
            parse(
                "--broker",
                "https://b1:7443, https://b2:7443,https://b3:7443"
            )
            .unwrap(),
            vec!["https://b1:7443", "https://b2:7443", "https://b3:7443"]
        );
        let e = parse("--broker", "https://b1:7443,b2:7443")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--broker: entry 2 `b2:7443`") && e.contains("http://"),
            "{e}"
        );
        let e = parse("broker", "https://b1:7443,,https://b3:7443")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("broker: entry 2 of `"), "{e}");
        let e = parse("--broker", "https://b1:7443,https://b1:7443")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("entry 2 `https://b1:7443` repeats entry 1"),
            "{e}"
        );
        let e = parse("--broker", "https://b1:7443,http://b2:7443")
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 2") && e.contains("TLS"), "{e}");
        let e = parse("--grpc-url", "http://b1:7443,http://")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--grpc-url: entry 2 `http://`"), "{e}");
        let e = parse("--broker", "http://b1:7443,http://b 2:7443")
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 2 `http://b 2:7443` is not a URL"), "{e}");
        let many = (0..17)
            .map(|i| format!("http://b{i}:7443"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            parse("--broker", &many)
                .unwrap_err()
                .to_string()
                .contains("at most 16")
        );
    }

    #[test]
    fn rotation_moves_on_at_each_failure_and_doubles_after_a_full_pass() {
        let ms = Duration::from_millis;
        let mut r = Rotation::new(split("http://a:1,http://b:1,http://c:1"), ms(250), ms(5000));
        assert_eq!(r.current(), "http://a:1");
        assert_eq!(r.failed(), ms(250));
        assert_eq!(r.current(), "http://b:1");
        assert_eq!(r.failed(), ms(250));
        assert_eq!(r.failed(), ms(250));
        assert_eq!(r.current(), "http://a:1");
        // Every replica failed once: now wait longer between tries.
        assert_eq!(r.failed(), ms(500));
        r.reset();
        assert_eq!(r.current(), "http://b:1");
        assert_eq!(r.failed(), ms(250));

        // One URL: the backoff doubles at each failure, up to the cap.
        let mut one = Rotation::new(split("http://a:1"), ms(250), ms(5000));
        let waits: Vec<_> = (0..7).map(|_| one.failed()).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 5000, 5000].map(ms).to_vec()
        );
        assert_eq!(one.current(), "http://a:1");
    }
}
