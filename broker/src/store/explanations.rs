//! How an admission's explanation is stored in `lessons.explanation`, and
//! read back in the shape every reader expects.
//!
//! Stored, a seat whose score, score parts and reason are those of the seat
//! before it leaves them out: the engine takes seats in runs from one
//! node's devices, and a run shares one score and reason, so a class of 45
//! carried the same few hundred bytes 45 times (~28 KB a lesson; 300 MB for
//! a term of 10,800 lessons, a fifth of its commit). `read` puts them back,
//! so the explain views, gRPC and REST see every seat whole, and rows
//! written before this format read as they are.

use classgrid_placement::{Admission, SeatPlacement};
use serde::Serialize;
use serde_json::{Value, value::RawValue};

/// A seat as stored: what is its own, and its score only where it differs
/// from the seat before.
#[derive(Serialize)]
struct StoredSeat<'a> {
    seat: u32,
    node_id: &'a classgrid_placement::NodeId,
    devices: &'a [classgrid_placement::DeviceGrant],
    rtt: &'a classgrid_placement::Rtt,
    #[serde(flatten)]
    scored: Option<Scored<'a>>,
}

#[derive(Serialize)]
struct Scored<'a> {
    score: f64,
    parts: &'a [classgrid_placement::ScorePart],
    reason: &'a str,
}

#[derive(Serialize)]
struct StoredAdmission<'a> {
    seats: Vec<StoredSeat<'a>>,
    preempted: &'a [classgrid_placement::Owner],
    explanation: &'a classgrid_placement::Explanation,
}

#[derive(Serialize)]
struct Stored<'a> {
    admitted: bool,
    admission: StoredAdmission<'a>,
}

/// Whether two seats were scored alike (same score, parts and reason).
fn scored_alike(a: &SeatPlacement, b: &SeatPlacement) -> bool {
    a.score.to_bits() == b.score.to_bits() && a.parts == b.parts && a.reason == b.reason
}

/// An admission's explanation as stored, written straight to text (as a
/// `serde_json::Value` tree first, building and printing it took ~9 % of
/// the broker's CPU at a bell).
pub fn write(admission: &Admission) -> Box<RawValue> {
    let mut prev: Option<&SeatPlacement> = None;
    let seats = admission
        .seats
        .iter()
        .map(|s| {
            let same = prev.is_some_and(|p| scored_alike(p, s));
            prev = Some(s);
            StoredSeat {
                seat: s.seat,
                node_id: &s.node_id,
                devices: &s.devices,
                rtt: &s.rtt,
                scored: (!same).then_some(Scored {
                    score: s.score,
                    parts: &s.parts,
                    reason: &s.reason,
                }),
            }
        })
        .collect();
    serde_json::value::to_raw_value(&Stored {
        admitted: true,
        admission: StoredAdmission {
            seats,
            preempted: &admission.preempted,
            explanation: &admission.explanation,
        },
    })
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not write an admission's explanation");
        RawValue::from_string(r#"{"admitted":true}"#.into()).unwrap_or_default()
    })
}

/// The stored explanation `text`, every seat whole; null if it cannot be
/// parsed.
pub fn read(text: &str) -> Value {
    let mut v: Value = serde_json::from_str(text).unwrap_or_default();
    if let Some(seats) = v
        .pointer_mut("/admission/seats")
        .and_then(Value::as_array_mut)
    {
        let mut last: Option<(Value, Value, Value)> = None;
        for s in seats.iter_mut().filter_map(Value::as_object_mut) {
            match (s.get("score"), s.get("parts"), s.get("reason")) {
                (Some(score), Some(parts), Some(reason)) => {
                    last = Some((score.clone(), parts.clone(), reason.clone()));
                }
                _ => {
                    if let Some((score, parts, reason)) = &last {
                        s.insert("score".into(), score.clone());
                        s.insert("parts".into(), parts.clone());
                        s.insert("reason".into(), reason.clone());
                    }
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use classgrid_placement::{
        DeviceGrant, Explanation, Owner, Rtt, RttSource, ScorePart, SeatPlacement,
    };
    use uuid::Uuid;

    use super::*;

    fn seat(n: u32, node: Uuid, score: f64, reason: &str) -> SeatPlacement {
        SeatPlacement {
            seat: n,
            node_id: node,
            devices: vec![DeviceGrant {
                index: n % 4,
                memory_mib: 2048,
                compute_percent: 25,
            }],
            rtt: Rtt {
                ms: 4.0,
                source: RttSource::Estimated,
                error_ms: Some(1.5),
            },
            score,
            parts: vec![
                ScorePart {
                    name: "rtt",
                    value: score,
                    weight: 0.5,
                },
                ScorePart {
                    name: "pack",
                    value: 0.25,
                    weight: 0.5,
                },
            ],
            reason: reason.into(),
        }
    }

    fn admission() -> Admission {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        Admission {
            seats: vec![
                seat(0, a, 0.9, "near, packs node a"),
                seat(1, a, 0.9, "near, packs node a"),
                seat(2, a, 0.9, "near, packs node a"),
                seat(3, b, 0.7, "next nearest"),
                seat(4, b, 0.7, "next nearest"),
            ],
            preempted: vec![Owner::Job(Uuid::now_v7())],
            explanation: Explanation {
                nodes_considered: 2,
                filters: Vec::new(),
                summary: "5/5 seats on 2 nodes".into(),
            },
        }
    }

    #[test]
    fn a_stored_explanation_reads_back_as_the_whole_admission() {
        let a = admission();
        let whole =
            serde_json::json!({"admitted": true, "admission": serde_json::to_value(&a).unwrap()});
        let stored = write(&a);
        assert_eq!(read(stored.get()), whole);
        // Seats scored like the seat before them are stored without it.
        let raw: Value = serde_json::from_str(stored.get()).unwrap();
        let kept: Vec<bool> = raw["admission"]["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.get("reason").is_some())
            .collect();
        assert_eq!(kept, [true, false, false, true, false]);
        assert!(stored.get().len() < whole.to_string().len());
    }

    #[test]
    fn rows_written_whole_and_rows_without_seats_read_as_they_are() {
        let a = admission();
        let whole =
            serde_json::json!({"admitted": true, "admission": serde_json::to_value(&a).unwrap()});
        assert_eq!(read(&whole.to_string()), whole);
        let hosted =
            r#"{"admitted":true,"admission":{"seats":[],"explanation":{"summary":"hosted"}}}"#;
        assert_eq!(read(hosted), serde_json::from_str::<Value>(hosted).unwrap());
        assert_eq!(read("not json"), Value::Null);
    }
}
