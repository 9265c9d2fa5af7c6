//! `classgrid lessons logs` and `classgrid jobs logs`: a seat's or a job's
//! output, read through the broker (scoped by tenant like every read).
//!
//! What the broker holds is the tail (at most 4 KiB) that the agent reported
//! when the program ended, so `--follow` waits for seats to end and prints
//! each seat's tail once, as it arrives; it stops when nothing more can come.

use std::{collections::HashMap, time::Duration};

use classgrid_proto::v1::{
    self as pb, job_service_client::JobServiceClient, lesson_service_client::LessonServiceClient,
};
use serde_json::json;

use crate::client::{Global, Output, input};

/// How often `--follow` asks the broker again.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, clap::Args)]
pub struct LessonLogs {
    /// The lesson's id.
    pub id: String,
    /// Only this seat (its number, from 0).
    #[arg(long)]
    pub seat: Option<i32>,
    /// Keep reading: print each seat's output as the seat ends, until every
    /// seat has ended.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct JobLogs {
    /// The job's id.
    pub id: String,
    /// Wait for the job to end and print its output then.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// A seat or job state after which no further output comes.
fn settled(state: &str) -> bool {
    matches!(
        state,
        "released" | "failed" | "replaced" | "succeeded" | "cancelled"
    )
}

fn print(o: Output, head: &str, fields: serde_json::Value, text: &str) {
    match o {
        Output::Json => println!("{}", json!({"source": fields, "output": text})),
        Output::Table => {
            println!("==> {head} <==");
            if text.trim().is_empty() {
                println!("(no output)");
            } else {
                println!("{}", text.trim_end());
            }
        }
    }
}

pub async fn lesson(g: &Global, a: LessonLogs) -> anyhow::Result<()> {
    if let Some(n) = a.seat
        && n < 0
    {
        return Err(input(format!("--seat: must be 0 or more, not {n}")));
    }
    let mut client = LessonServiceClient::new(g.channel().await?);
    // Seat id → the tail printed for it, so that each is printed once.
    let mut shown: HashMap<String, String> = HashMap::new();
    loop {
        let l = client
            .get(pb::GetLessonRequest { id: a.id.clone() })
            .await?
            .into_inner();
        let seats: Vec<&pb::Seat> = l
            .seats
            .iter()
            .filter(|s| a.seat.is_none_or(|n| s.number == n))
            .collect();
        if let Some(n) = a.seat
            && seats.is_empty()
        {
            return Err(input(format!(
                "--seat: lesson {} has no seat {n} (it has {})",
                l.id,
                l.seats.len()
            )));
        }
        for s in &seats {
            let ended = settled(&s.state);
            // Without --follow every seat is reported once, running or not.
            if (a.follow && !ended) || shown.get(&s.id) == Some(&s.output_tail) {
                continue;
            }
            let head = format!(
                "seat {} ({}{}{})",
                s.number,
                s.state,
                if s.node_name.is_empty() {
                    ""
                } else {
                    ", node "
                },
                s.node_name
            );
            let mut text = if !ended && s.output_tail.is_empty() {
                "(still running: its output is read when it ends)".to_string()
            } else {
                s.output_tail.clone()
            };
            // The broker's or agent's word on the seat (why it failed, for
            // one whose program could not start and printed nothing).
            if !s.message.is_empty() {
                text = format!("{}\n[{}]", text.trim_end(), s.message);
            }
            print(
                g.output,
                &head,
                json!({"lesson": l.id, "seat": s.number, "seat_id": s.id, "state": s.state, "node": s.node_name, "message": s.message}),
                &text,
            );
            shown.insert(s.id.clone(), s.output_tail.clone());
        }
        let done = seats.iter().all(|s| settled(&s.state))
            || matches!(l.state.as_str(), "cancelled")
                && seats
                    .iter()
                    .all(|s| settled(&s.state) || s.state == "planned");
        if !a.follow || done {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn job(g: &Global, a: JobLogs) -> anyhow::Result<()> {
    let mut client = JobServiceClient::new(g.channel().await?);
    loop {
        let j = client
            .get(pb::GetJobRequest { id: a.id.clone() })
            .await?
            .into_inner();
        let ended = settled(&j.state);
        if ended || !a.follow {
            let head = format!(
                "job {} ({}{}{})",
                if j.name.is_empty() { &j.id } else { &j.name },
                j.state,
                if j.node_name.is_empty() {
                    ""
                } else {
                    ", node "
                },
                j.node_name
            );
            let text = if !ended && j.output_tail.is_empty() {
                "(still running: its output is read when it ends)"
            } else {
                &j.output_tail
            };
            print(
                g.output,
                &head,
                json!({"job": j.id, "state": j.state, "node": j.node_name}),
                text,
            );
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
