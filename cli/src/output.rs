//! Tables for people, JSON for scripts. JSON field names follow the wire
//! contract so that scripts can move between the CLI and the API.

use chrono::Utc;
use classgrid_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::Output;

fn time(t: Option<&prost_types::Timestamp>) -> String {
    crate::tz::show(t)
}

fn source(s: i32) -> &'static str {
    match pb::RttSource::try_from(s).unwrap_or_default() {
        pb::RttSource::Measured => "measured",
        pb::RttSource::Estimated => "estimated",
        pb::RttSource::Configured => "configured",
        pb::RttSource::Unspecified => "",
    }
}

/// `12.0 ms (measured)`, or `14.2 ms (estimated ±3.1 ms)` with an
/// estimate's error bound, as placement explanations write it.
pub(crate) fn rtt_text(r: &pb::Rtt) -> String {
    match r.error_bound_ms {
        Some(e) => format!("{:.1} ms ({} ±{e:.1} ms)", r.ms, source(r.source)),
        None => format!("{:.1} ms ({})", r.ms, source(r.source)),
    }
}

pub(crate) fn rtt_json(r: &pb::Rtt) -> Value {
    json!({"ms": r.ms, "source": source(r.source), "error_bound_ms": r.error_bound_ms})
}

fn isolation(i: i32) -> &'static str {
    match pb::Isolation::try_from(i).unwrap_or_default() {
        pb::Isolation::Hard => "hard",
        pb::Isolation::Soft => "soft",
        pb::Isolation::None => "none",
        pb::Isolation::Unspecified => "",
    }
}

/// Prints rows as aligned columns.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub(crate) fn print_json(v: Value) {
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}

pub fn site_json(s: &pb::Site) -> Value {
    json!({
        "id": s.id, "name": s.name, "kind": s.kind, "district": s.district,
        "edges": s.edges.iter().map(|e| json!({"id": e.id, "name": e.name, "state": e.state, "last_seen": time(e.last_seen.as_ref())})).collect::<Vec<_>>(),
    })
}

pub fn sites(o: Output, sites: &[pb::Site]) {
    match o {
        Output::Json => print_json(Value::Array(sites.iter().map(site_json).collect())),
        Output::Table => table(
            &["NAME", "KIND", "DISTRICT", "EDGES", "ID"],
            sites
                .iter()
                .map(|s| {
                    let edges = s
                        .edges
                        .iter()
                        .map(|e| format!("{} ({})", e.name, e.state))
                        .collect::<Vec<_>>()
                        .join(", ");
                    vec![
                        s.name.clone(),
                        s.kind.clone(),
                        s.district.clone(),
                        edges,
                        s.id.clone(),
                    ]
                })
                .collect(),
        ),
    }
}

fn device_json(d: &pb::DeviceInfo) -> Value {
    json!({
        "index": d.index, "vendor": d.vendor, "model": d.model, "uuid": d.uuid, "memory_mib": d.memory_mib,
        "memory_used_mib": d.memory_used_mib, "utilization_percent": d.utilization_percent, "healthy": d.healthy,
        "max_slices": d.max_slices, "isolation": isolation(d.isolation),
    })
}

pub fn node_json(n: &pb::Node) -> Value {
    let cap = n.capacity.clone().unwrap_or_default();
    json!({
        "id": n.id, "site": n.site, "name": n.name, "tier": n.tier, "state": n.state, "cordoned": n.cordoned, "awaiting_approval": n.awaiting_approval, "relay": n.relay,
        "last_seen": time(n.last_seen.as_ref()), "cpu_millis": cap.cpu_millis, "memory_mib": cap.memory_mib,
        "devices": cap.devices.iter().map(device_json).collect::<Vec<_>>(), "runtimes": n.runtimes,
        "warnings": n.warnings, "running_assignments": n.running_assignments,
    })
}

/// What `classgrid nodes approve` did.
pub fn approved(o: Output, r: &pb::ApproveNodeResponse) {
    let n = r.node.clone().unwrap_or_default();
    match o {
        Output::Json => {
            print_json(json!({"node": node_json(&n), "already_approved": r.already_approved}))
        }
        Output::Table if r.already_approved => println!(
            "node {}/{} was already approved; nothing changed",
            n.site, n.name
        ),
        Output::Table => println!(
            "node {}/{} approved: lessons and jobs may be placed on it now",
            n.site, n.name
        ),
    }
}

/// The state column: liveness, then what keeps placement away.
fn node_state(n: &pb::Node) -> String {
    let mut s = n.state.clone();
    if n.awaiting_approval {
        s += ", awaiting approval";
    }
    if n.cordoned {
        s += ", cordoned";
    }
    if !n.relay.is_empty() {
        s += &format!(", via {}", n.relay);
    }
    s
}

pub fn nodes(o: Output, nodes: &[pb::Node]) {
    match o {
        Output::Json => print_json(Value::Array(nodes.iter().map(node_json).collect())),
        Output::Table => table(
            &[
                "SITE", "NAME", "STATE", "TIER", "CPU", "MEMORY", "DEVICES", "RUNNING", "ID",
            ],
            nodes
                .iter()
                .map(|n| {
                    let cap = n.capacity.clone().unwrap_or_default();
                    let devs = cap
                        .devices
                        .iter()
                        .map(|d| d.model.clone())
                        .collect::<Vec<_>>()
                        .join(",");
                    vec![
                        n.site.clone(),
                        n.name.clone(),
                        node_state(n),
                        n.tier.clone(),
                        format!("{:.1}", cap.cpu_millis as f64 / 1000.0),
                        format!("{} MiB", cap.memory_mib),
                        if devs.is_empty() { "-".into() } else { devs },
                        n.running_assignments.to_string(),
                        n.id.clone(),
                    ]
                })
                .collect(),
        ),
    }
}

pub fn node_detail(o: Output, n: &pb::Node) {
    if o == Output::Json {
        return print_json(node_json(n));
    }
    nodes(o, std::slice::from_ref(n));
    let cap = n.capacity.clone().unwrap_or_default();
    if !cap.devices.is_empty() {
        println!();
        table(
            &[
                "DEVICE",
                "VENDOR",
                "MODEL",
                "MEMORY",
                "HEALTHY",
                "ISOLATION",
                "MAX SLICES",
            ],
            cap.devices
                .iter()
                .map(|d| {
                    vec![
                        d.index.to_string(),
                        d.vendor.clone(),
                        d.model.clone(),
                        format!("{} MiB", d.memory_mib),
                        d.healthy.to_string(),
                        isolation(d.isolation).into(),
                        d.max_slices.to_string(),
                    ]
                })
                .collect(),
        );
    }
    for w in &n.warnings {
        println!("warning: {w}");
    }
}

/// Where a student opens the seat: its private link on the school's edge,
/// or, at a school without one, the node's own address.
pub fn seat_address(s: &pb::Seat) -> &str {
    if s.link.is_empty() {
        &s.endpoint
    } else {
        &s.link
    }
}

pub fn seat_json(s: &pb::Seat) -> Value {
    json!({
        "id": s.id, "number": s.number, "state": s.state, "node_id": s.node_id, "node_name": s.node_name,
        "device_indexes": s.device_indexes, "endpoint": s.endpoint, "link": s.link,
        "rtt": s.rtt.as_ref().map(rtt_json),
        "message": s.message, "assignment_id": s.assignment_id, "generation": s.generation,
        "output_tail": s.output_tail, "region": s.region,
    })
}

pub fn lesson_json(l: &pb::Lesson) -> Value {
    json!({
        "id": l.id, "school_site": l.school_site, "title": l.title, "start": time(l.start.as_ref()),
        "duration_seconds": l.duration_seconds, "state": l.state, "seat_count": l.seat_count,
        "min_seats": l.min_seats, "max_rtt_ms": l.max_rtt_ms, "message": l.message,
        "created": time(l.created.as_ref()), "seats": l.seats.iter().map(seat_json).collect::<Vec<_>>(),
        "failed_seats": l.failed_seats, "running_seats": l.running_seats, "series_id": l.series_id,
    })
}

/// The lesson's state for people: the lifecycle state, and beside it how
/// many seats failed, so a lesson whose seats all failed never reads as a
/// healthy `live` (decision 079).
fn lesson_state(l: &pb::Lesson) -> String {
    if l.failed_seats == 0 {
        return l.state.clone();
    }
    let open = !matches!(l.state.as_str(), "ended" | "cancelled");
    if open && l.failed_seats >= l.seat_count {
        format!("{} (FAILED: all {} seats)", l.state, l.seat_count)
    } else {
        format!(
            "{} ({}/{} seats failed)",
            l.state, l.failed_seats, l.seat_count
        )
    }
}

pub fn lesson(o: Output, l: &pb::Lesson) {
    if o == Output::Json {
        return print_json(lesson_json(l));
    }
    println!(
        "lesson {}  {}  school={}  start={}  duration={}s  seats={}",
        l.id,
        lesson_state(l),
        l.school_site,
        time(l.start.as_ref()),
        l.duration_seconds,
        l.seat_count
    );
    if !l.message.is_empty() {
        println!("message: {}", l.message);
    }
    if !l.series_id.is_empty() {
        println!("series: {}", l.series_id);
    }
    seats(&l.seats);
    // What a failed (or ended) seat's program printed last: usually why.
    for s in l.seats.iter().filter(|s| !s.output_tail.is_empty()) {
        println!("\n--- seat {} output (last lines) ---", s.number);
        println!("{}", s.output_tail.trim_end());
    }
}

fn seats(seats: &[pb::Seat]) {
    if seats.is_empty() {
        return;
    }
    table(
        &["SEAT", "STATE", "NODE", "DEVICES", "RTT", "LINK", "MESSAGE"],
        seats
            .iter()
            .map(|s| {
                vec![
                    s.number.to_string(),
                    s.state.clone(),
                    // A seat a peer region hosts reads region/node.
                    if s.region.is_empty() {
                        s.node_name.clone()
                    } else {
                        format!("{}/{}", s.region, s.node_name)
                    },
                    s.device_indexes
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    s.rtt.as_ref().map(rtt_text).unwrap_or_default(),
                    seat_address(s).to_string(),
                    s.message.clone(),
                ]
            })
            .collect(),
    );
}

/// Seat number → link, for the teacher: a table, JSON, or CSV.
pub fn links(o: Output, csv: bool, l: &pb::Lesson) {
    let mut seats: Vec<&pb::Seat> = l.seats.iter().collect();
    seats.sort_by_key(|s| s.number);
    if csv {
        // Links are URL-safe (hex token) and numbers plain: nothing to quote.
        println!("seat,link");
        for s in seats {
            println!("{},{}", s.number, s.link);
        }
        return;
    }
    match o {
        Output::Json => print_json(Value::Array(
            seats
                .iter()
                .map(|s| json!({"seat": s.number, "link": s.link, "state": s.state}))
                .collect(),
        )),
        Output::Table => table(
            &["SEAT", "LINK", "STATE"],
            seats
                .iter()
                .map(|s| vec![s.number.to_string(), s.link.clone(), s.state.clone()])
                .collect(),
        ),
    }
}

pub fn lessons(o: Output, ls: &[pb::Lesson]) {
    match o {
        Output::Json => print_json(Value::Array(ls.iter().map(lesson_json).collect())),
        Output::Table => table(
            &[
                "ID", "SCHOOL", "START", "DURATION", "SEATS", "STATE", "TITLE",
            ],
            ls.iter()
                .map(|l| {
                    vec![
                        l.id.clone(),
                        l.school_site.clone(),
                        time(l.start.as_ref()),
                        format!("{}s", l.duration_seconds),
                        l.seat_count.to_string(),
                        lesson_state(l),
                        l.title.clone(),
                    ]
                })
                .collect(),
        ),
    }
}

/// One line per update with the lesson state and how many seats are in
/// each state, then a line for each seat whose state or endpoint changed
/// since the last update (`seen` remembers them): the state, node and link.
pub fn watch_update(o: Output, l: &pb::Lesson, seen: &mut SeenSeats) {
    if o == Output::Json {
        println!("{}", lesson_json(l));
        return;
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for s in &l.seats {
        *counts.entry(s.state.as_str()).or_default() += 1;
    }
    let c: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let now = Utc::now()
        .with_timezone(&crate::tz::zone())
        .format("%H:%M:%S");
    println!("{now}  lesson {}  seats: {}", l.state, c.join(", "));
    for s in seen.changed(l) {
        println!(
            "{now}    seat {:<3} {:<9} {}  {}{}",
            s.number,
            s.state,
            if s.node_name.is_empty() {
                "—"
            } else {
                &s.node_name
            },
            match seat_address(s) {
                "" => "—",
                a => a,
            },
            if s.message.is_empty() {
                String::new()
            } else {
                format!("  ({})", s.message)
            }
        );
    }
}

/// Each seat's last printed (state, endpoint), by seat id.
#[derive(Default)]
pub struct SeenSeats(std::collections::HashMap<String, (String, String)>);

impl SeenSeats {
    /// The seats whose state or endpoint differ from the last call's.
    pub fn changed<'a>(&mut self, l: &'a pb::Lesson) -> Vec<&'a pb::Seat> {
        l.seats
            .iter()
            .filter(|s| {
                let now = (s.state.clone(), s.endpoint.clone());
                self.0.insert(s.id.clone(), now.clone()) != Some(now)
            })
            .collect()
    }
}

pub fn explanation(o: Output, e: &pb::Explanation) {
    if o == Output::Json {
        return print_json(json!({
            "lesson_id": e.lesson_id, "admitted": e.admitted, "summary": e.summary, "nodes_considered": e.nodes_considered,
            "filters": e.filters.iter().map(|f| json!({"filter": f.filter, "removed": f.removed, "detail": f.detail})).collect::<Vec<_>>(),
            "seats": e.seats.iter().map(|s| json!({
                "seat": s.seat, "node_id": s.node_id, "node_name": s.node_name, "device_indexes": s.device_indexes,
                "rtt": s.rtt.as_ref().map(rtt_json), "score": s.score,
                "scores": s.scores.iter().map(|p| json!({"name": p.name, "value": p.value, "weight": p.weight})).collect::<Vec<_>>(),
                "reason": s.reason,
            })).collect::<Vec<_>>(),
        }));
    }
    println!("{} ({} nodes considered)", e.summary, e.nodes_considered);
    for f in &e.filters {
        println!("  filtered: {} {}", f.removed, f.detail);
    }
    for s in &e.seats {
        println!("  seat {}: {}", s.seat, s.reason);
    }
}

pub fn job(o: Output, j: &pb::Job) {
    if o == Output::Json {
        return print_json(json!({
            "id": j.id, "school_site": j.school_site, "name": j.name, "state": j.state, "priority": j.priority,
            "preemptible": j.preemptible, "node_id": j.node_id, "node_name": j.node_name, "endpoint": j.endpoint,
            "exit_code": j.has_exit_code.then_some(j.exit_code), "output_tail": j.output_tail, "message": j.message,
            "created": time(j.created.as_ref()), "max_runtime_seconds": j.max_runtime_seconds,
        }));
    }
    println!(
        "job {}  {}  school={}  node={}  endpoint={}",
        j.id, j.state, j.school_site, j.node_name, j.endpoint
    );
    if j.has_exit_code {
        println!("exit code: {}", j.exit_code);
    }
    if !j.message.is_empty() {
        println!("message: {}", j.message);
    }
    if !j.output_tail.is_empty() {
        println!("--- output (last lines) ---\n{}", j.output_tail.trim_end());
    }
}

pub fn jobs(o: Output, js: &[pb::Job]) {
    if o == Output::Json {
        return print_json(Value::Array(
            js.iter()
                .map(|j| {
                    json!({
                        "id": j.id, "school_site": j.school_site, "name": j.name, "state": j.state,
                        "priority": j.priority, "node_name": j.node_name, "endpoint": j.endpoint,
                        "exit_code": j.has_exit_code.then_some(j.exit_code), "message": j.message,
                        "created": time(j.created.as_ref()),
                    })
                })
                .collect(),
        ));
    }
    table(
        &[
            "ID", "SCHOOL", "NAME", "STATE", "NODE", "EXIT", "CREATED", "MESSAGE",
        ],
        js.iter()
            .map(|j| {
                vec![
                    j.id.clone(),
                    j.school_site.clone(),
                    j.name.clone(),
                    j.state.clone(),
                    j.node_name.clone(),
                    if j.has_exit_code {
                        j.exit_code.to_string()
                    } else {
                        String::new()
                    },
                    time(j.created.as_ref()),
                    j.message.clone(),
                ]
            })
            .collect(),
    );
}

/// A live view of a lesson's seats for people: a bar of running seats and
/// the count in each state; one line per update when not on a terminal.
pub struct WatchView {
    bar: indicatif::ProgressBar,
    seen: std::cell::RefCell<SeenSeats>,
}

impl WatchView {
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30.green/white}] {pos}/{len} running  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Self {
            bar,
            seen: Default::default(),
        }
    }

    pub fn update(&self, l: &pb::Lesson) {
        if self.bar.is_hidden() {
            return watch_update(Output::Table, l, &mut self.seen.borrow_mut());
        }
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for s in &l.seats {
            *counts.entry(s.state.as_str()).or_default() += 1;
        }
        self.bar.set_length(l.seats.len() as u64);
        self.bar
            .set_position(counts.get("running").copied().unwrap_or(0) as u64);
        self.bar.set_prefix(format!("lesson {}", l.state));
        self.bar.set_message(
            counts
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    /// Leaves the last state on screen and lists the endpoints.
    pub fn finish(&self, l: &pb::Lesson) {
        self.bar.finish();
        if !self.bar.is_hidden() {
            seats(&l.seats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_prints_a_seat_again_only_when_its_state_or_link_changed() {
        let seat = |state: &str, endpoint: &str| pb::Seat {
            id: "s0".into(),
            state: state.into(),
            endpoint: endpoint.into(),
            ..Default::default()
        };
        let lesson = |s: pb::Seat| pb::Lesson {
            seats: vec![s],
            ..Default::default()
        };
        let mut seen = SeenSeats::default();
        assert_eq!(seen.changed(&lesson(seat("starting", ""))).len(), 1);
        assert_eq!(seen.changed(&lesson(seat("starting", ""))).len(), 0);
        let l = lesson(seat("running", "http://127.0.0.1:9000"));
        assert_eq!(seen.changed(&l)[0].endpoint, "http://127.0.0.1:9000");
    }
}
