//! Prometheus's classic text format (0.0.4) from the OpenMetrics text that
//! `prometheus-client` writes, for every classgrid `/metrics`.
//!
//! Why by hand: `prometheus-client` 0.25 encodes only OpenMetrics (and
//! protobuf), where a counter's HELP and TYPE name its family without
//! `_total`. `promtool check metrics` (and other readers of the classic
//! format) then see a `…_total` sample with no help and no type. The classic
//! format names the counter `…_total` throughout, and every Prometheus reads
//! it, so the services serve that instead.

/// The content type of what [`to_text`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites an OpenMetrics exposition into the classic text format: a
/// counter family's HELP and TYPE take its `_total` name, `unknown` becomes
/// `untyped`, and `# UNIT`, `# EOF` and `_created` samples (none of which the
/// classic format has) are dropped. classgrid records no exemplars, so none
/// are looked for: a label value may hold ` # `.
pub fn to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    // HELP comes before TYPE in OpenMetrics; its name waits for the type.
    let mut help: Option<(&str, &str)> = None;
    let mut counter: Option<String> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (family, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_string(), "untyped"),
                "info" => (format!("{name}_info"), "gauge"),
                other => (name.to_string(), other),
            };
            counter = (kind == "counter").then(|| name.to_string());
            if let Some((_, text)) = help.take().filter(|(h, _)| *h == name) {
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        if line.starts_with('#') {
            // # UNIT and # EOF.
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(c) = &counter {
            if line
                .strip_prefix(c.as_str())
                .is_some_and(|r| r.starts_with("_created"))
            {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_text;

    #[test]
    fn counters_take_their_total_name_and_the_rest_is_kept() {
        let om = "# HELP cg_bookings Lesson bookings.\n# TYPE cg_bookings counter\n\
                  cg_bookings_total 3\ncg_bookings_created 1700000000.0\n\
                  # HELP cg_seats Seats by state.\n# TYPE cg_seats gauge\n\
                  cg_seats{state=\"running\"} 4\n\
                  # HELP cg_wait_seconds Wait.\n# TYPE cg_wait_seconds histogram\n# UNIT cg_wait_seconds seconds\n\
                  cg_wait_seconds_bucket{le=\"+Inf\"} 2\n\
                  cg_wait_seconds_sum 0.5\ncg_wait_seconds_count 2\n# EOF\n";
        assert_eq!(
            to_text(om),
            "# HELP cg_bookings_total Lesson bookings.\n# TYPE cg_bookings_total counter\n\
             cg_bookings_total 3\n\
             # HELP cg_seats Seats by state.\n# TYPE cg_seats gauge\ncg_seats{state=\"running\"} 4\n\
             # HELP cg_wait_seconds Wait.\n# TYPE cg_wait_seconds histogram\n\
             cg_wait_seconds_bucket{le=\"+Inf\"} 2\ncg_wait_seconds_sum 0.5\ncg_wait_seconds_count 2\n"
        );
    }
}
