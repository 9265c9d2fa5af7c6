//! proto ↔ domain conversions, in one place for all gRPC services.

use chrono::{DateTime, TimeZone, Utc};
use classgrid_proto::v1 as pb;
use prost_types::Timestamp;

use crate::{
    domain::{
        ServiceError,
        spec::{self, RawDataset, RawGpu, RawSeat, Workload},
    },
    service::lessons::LessonView,
    store::{jobs::JobRow, lessons::SeatRow},
};

pub fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_ts(field: &str, t: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>, ServiceError> {
    match t {
        None => Ok(None),
        Some(t) => Utc
            .timestamp_opt(t.seconds, t.nanos.max(0) as u32)
            .single()
            .map(Some)
            .ok_or_else(|| ServiceError::field(field, "is not a valid time")),
    }
}

pub fn raw_seat(s: &pb::SeatSpec) -> RawSeat {
    RawSeat {
        cpu_millis: s.cpu_millis as i64,
        memory_mib: s.memory_mib,
        runtime: s.runtime.clone(),
        gpu: s.gpu.as_ref().map(|g| RawGpu {
            vendors: g.vendors.clone(),
            model: g.model.clone(),
            memory_mib: g.memory_mib,
            compute_percent: g.compute_percent as i64,
            count: g.count as i64,
            min_isolation: match pb::Isolation::try_from(g.min_isolation).unwrap_or_default() {
                pb::Isolation::Hard => "hard",
                pb::Isolation::Soft => "soft",
                _ => "none",
            }
            .into(),
        }),
    }
}

/// A lesson booking as the domain takes it; its start only if `with_start`
/// (a series' template has none of its own).
pub fn raw_booking(
    r: &pb::BookLessonRequest,
    with_start: bool,
) -> Result<crate::domain::lesson::RawBooking, ServiceError> {
    Ok(crate::domain::lesson::RawBooking {
        request_id: r.request_id.clone(),
        school_site: r.school_site.clone(),
        title: r.title.clone(),
        start: if with_start {
            from_ts("start", r.start.as_ref())?
        } else {
            None
        },
        duration_seconds: r.duration_seconds,
        seats: r.seats as i64,
        min_seats: r.min_seats as i64,
        seat: r.seat.as_ref().map(raw_seat),
        workload: workload(r.workload.as_ref()),
        datasets: raw_datasets(&r.datasets),
        max_rtt_ms: r.max_rtt_ms as i64,
        residency: r.residency.clone(),
    })
}

pub fn workload(w: Option<&pb::Workload>) -> Workload {
    w.map(|w| Workload {
        command: w.command.clone(),
        args: w.args.clone(),
        env: w.env.clone().into_iter().collect(),
        image: w.image.clone(),
    })
    .unwrap_or_default()
}

pub fn raw_datasets(d: &[pb::Dataset]) -> Vec<RawDataset> {
    d.iter()
        .map(|d| RawDataset {
            name: d.name.clone(),
            url: d.url.clone(),
            sha256: d.sha256.clone(),
            size_bytes: d.size_bytes,
        })
        .collect()
}

pub fn pb_datasets(d: &[spec::Dataset]) -> Vec<pb::Dataset> {
    d.iter()
        .map(|d| pb::Dataset {
            name: d.name.clone(),
            url: d.url.clone(),
            sha256: d.sha256.clone(),
            size_bytes: d.size_bytes as i64,
        })
        .collect()
}

pub fn seat_spec(s: &spec::SeatSpec) -> pb::SeatSpec {
    pb::SeatSpec {
        cpu_millis: s.cpu_millis as i32,
        memory_mib: s.memory_mib as i64,
        runtime: s.runtime.clone(),
        gpu: s.gpu.as_ref().map(|g| pb::GpuSpec {
            vendors: g.vendors.clone(),
            model: g.model.clone().unwrap_or_default(),
            memory_mib: g.memory_mib as i64,
            compute_percent: g.compute_percent as i32,
            count: g.count as i32,
            min_isolation: match g.min_isolation.as_str() {
                "hard" => pb::Isolation::Hard,
                "soft" => pb::Isolation::Soft,
                _ => pb::Isolation::None,
            } as i32,
        }),
    }
}

pub fn pb_workload(w: &Workload) -> pb::Workload {
    pb::Workload {
        command: w.command.clone(),
        args: w.args.clone(),
        env: w.env.clone().into_iter().collect(),
        image: w.image.clone(),
    }
}

pub fn rtt_source(s: Option<&str>) -> i32 {
    (match s {
        Some("measured") => pb::RttSource::Measured,
        Some("estimated") => pb::RttSource::Estimated,
        Some("configured") => pb::RttSource::Configured,
        _ => pb::RttSource::Unspecified,
    }) as i32
}

pub fn seat(s: &SeatRow) -> pb::Seat {
    pb::Seat {
        id: s.id.to_string(),
        number: s.number,
        state: s.state.clone(),
        node_id: s.node_id.map(|n| n.to_string()).unwrap_or_default(),
        node_name: s.node_name.clone().unwrap_or_default(),
        device_indexes: s.device_indexes.clone(),
        endpoint: s.endpoint.clone(),
        rtt: s.rtt_ms.map(|ms| pb::Rtt {
            ms,
            source: rtt_source(s.rtt_source.as_deref()),
            error_bound_ms: s.rtt_error_ms,
        }),
        message: s.message.clone(),
        assignment_id: s.assignment_id.map(|a| a.to_string()).unwrap_or_default(),
        generation: s.generation.unwrap_or(0),
        // Filled by the reads that fetch tails (`with_output_tails`).
        output_tail: String::new(),
        link: s.link.clone(),
        link_opened: s.link_opened_at.map(ts),
        region: s.region.clone(),
    }
}

/// Puts each seat's output tail (by seat id) into a converted lesson.
pub fn with_output_tails(
    mut l: pb::Lesson,
    tails: &std::collections::HashMap<uuid::Uuid, String>,
) -> pb::Lesson {
    for s in &mut l.seats {
        if let Some(t) = s.id.parse().ok().and_then(|id| tails.get(&id)) {
            s.output_tail = t.clone();
        }
    }
    l
}

pub fn lesson(v: &LessonView) -> pb::Lesson {
    let l = &v.lesson;
    pb::Lesson {
        id: l.id.to_string(),
        school_site: l.school_site.clone(),
        title: l.title.clone(),
        start: Some(ts(l.start_at)),
        duration_seconds: l.duration_s as i64,
        state: l.state.clone(),
        seat_count: l.seat_count,
        min_seats: l.min_seats,
        seat: Some(seat_spec(&l.seat_spec.0)),
        workload: Some(pb_workload(&l.workload.0)),
        datasets: pb_datasets(&l.datasets.0),
        max_rtt_ms: l.max_rtt_ms,
        seats: v.seats.iter().map(seat).collect(),
        created: Some(ts(l.created_at)),
        message: l.message.clone(),
        failed_seats: v.seats.iter().filter(|s| s.state == "failed").count() as i32,
        running_seats: v.seats.iter().filter(|s| s.state == "running").count() as i32,
        residency: l.residency.clone(),
        series_id: l.series_id.map(|s| s.to_string()).unwrap_or_default(),
    }
}

pub fn job(j: &JobRow) -> pb::Job {
    pb::Job {
        id: j.id.to_string(),
        school_site: j.school_site.clone(),
        name: j.name.clone(),
        state: j.state.clone(),
        spec: Some(seat_spec(&j.spec.0)),
        workload: Some(pb_workload(&j.workload.0)),
        priority: j.priority,
        preemptible: j.preemptible,
        node_id: j.node_id.map(|n| n.to_string()).unwrap_or_default(),
        node_name: j.node_name.clone().unwrap_or_default(),
        endpoint: j.endpoint.clone(),
        exit_code: j.exit_code.unwrap_or(0),
        has_exit_code: j.exit_code.is_some(),
        output_tail: j.output_tail.clone(),
        message: j.message.clone(),
        created: Some(ts(j.created_at)),
        max_runtime_seconds: j.max_runtime_s as i64,
    }
}

pub fn parse_id(field: &str, s: &str) -> Result<uuid::Uuid, ServiceError> {
    s.parse()
        .map_err(|_| ServiceError::field(field, "must be a UUID"))
}
