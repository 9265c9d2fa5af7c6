//! Hostile input never panics the broker: arbitrary bytes decoded as the
//! wire messages platforms and agents send, then validated the way the
//! service layer does. (`cargo fuzz` needs a nightly toolchain, which this
//! project's machines do not have; proptest runs the same property on stable
//! and in CI.)

use chrono::Utc;
use classgrid_broker::{
    api::grpc::convert,
    domain::{
        error::Checks,
        lesson::{Limits, RawBooking, RawJob, parse_booking, parse_job},
    },
    service::agents::parse_capacity,
};
use classgrid_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

fn limits() -> Limits {
    Limits {
        default_max_rtt_ms: 50,
        max_window: std::time::Duration::from_secs(12 * 3600),
    }
}

fn booking(r: pb::BookLessonRequest) -> RawBooking {
    RawBooking {
        request_id: r.request_id,
        school_site: r.school_site,
        title: r.title,
        start: convert::from_ts("start", r.start.as_ref()).ok().flatten(),
        duration_seconds: r.duration_seconds,
        seats: r.seats as i64,
        min_seats: r.min_seats as i64,
        seat: r.seat.as_ref().map(convert::raw_seat),
        workload: convert::workload(r.workload.as_ref()),
        datasets: convert::raw_datasets(&r.datasets),
        max_rtt_ms: r.max_rtt_ms as i64,
        residency: r.residency,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_a_booking_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = pb::BookLessonRequest::decode(bytes.as_slice()) {
            let _ = parse_booking(booking(r), Utc::now(), &limits());
        }
    }

    #[test]
    fn arbitrary_booking_fields_never_panic(
        seats in any::<i32>(), min_seats in any::<i32>(), duration in any::<i64>(), rtt in any::<i32>(),
        secs in any::<i64>(), nanos in any::<i32>(), cpu in any::<i32>(), mem in any::<i64>(),
        gmem in any::<i64>(), pct in any::<i32>(), count in any::<i32>(), vendor in ".{0,20}", site in ".{0,300}",
    ) {
        let r = pb::BookLessonRequest {
            school_site: site,
            start: Some(prost_types::Timestamp { seconds: secs, nanos }),
            duration_seconds: duration,
            seats,
            min_seats,
            max_rtt_ms: rtt,
            seat: Some(pb::SeatSpec {
                cpu_millis: cpu,
                memory_mib: mem,
                gpu: Some(pb::GpuSpec { vendors: vec![vendor], memory_mib: gmem, compute_percent: pct, count, ..Default::default() }),
                runtime: String::new(),
            }),
            ..Default::default()
        };
        let _ = parse_booking(booking(r), Utc::now(), &limits());
    }

    #[test]
    fn arbitrary_bytes_as_a_job_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = pb::SubmitJobRequest::decode(bytes.as_slice()) {
            let raw = RawJob {
                request_id: r.request_id,
                school_site: r.school_site,
                name: r.name,
                spec: r.spec.as_ref().map(convert::raw_seat),
                workload: convert::workload(r.workload.as_ref()),
                max_runtime_seconds: r.max_runtime_seconds,
                priority: r.priority as i64,
                preemptible: r.preemptible,
                grace_seconds: r.grace_seconds as i64,
            };
            let _ = parse_job(raw, &limits());
        }
    }

    #[test]
    fn arbitrary_bytes_as_an_agent_message_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(m) = pb::AgentMessage::decode(bytes.as_slice()) {
            if let Some(pb::agent_message::Msg::Register(r)) = m.msg {
                let mut c = Checks::default();
                let _ = parse_capacity(&mut c, r.capacity.as_ref());
                let _ = c.finish();
            }
        }
    }
}
