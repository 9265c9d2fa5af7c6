//! One function per command group; each builds a request, calls the broker
//! and prints the answer as a table or JSON.

use clap::Subcommand;
use classgrid_proto::v1::{
    self as pb, fleet_service_client::FleetServiceClient, job_service_client::JobServiceClient,
    lesson_service_client::LessonServiceClient,
};

// parse_time stays reachable as commands::parse_time for vouchers.rs.
pub use crate::parse::{parse_duration, parse_time};
use crate::{
    client::{Global, input},
    output,
    parse::ts,
};

#[derive(Subcommand)]
pub enum Sites {
    /// List sites and their edges.
    List,
    /// Create a site (idempotent when kind and district agree).
    Create {
        name: String,
        /// school, district_pop or cloud
        #[arg(long, default_value = "school")]
        kind: String,
        #[arg(long, default_value = "")]
        district: String,
    },
}

#[derive(Subcommand)]
pub enum Nodes {
    /// List nodes with state and capacity.
    List {
        #[arg(long)]
        site: Option<String>,
    },
    /// Show one node (by id or SITE/NAME) with its devices and warnings.
    Get { id: String },
    /// Revoke a node's certificates and disconnect its agent (district admins).
    Revoke { id: String },
    /// Approve a node (by id or SITE/NAME) that joined with a token asking
    /// for approval, so that work is placed on it (district admins).
    Approve { id: String },
}

#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// CPU per seat, in thousandths of a core.
    #[arg(long, default_value_t = 500)]
    pub cpu_millis: i32,
    /// Memory per seat, MiB.
    #[arg(long, default_value_t = 512)]
    pub memory_mib: i64,
    /// Accepted accelerator vendor (repeatable; none means no accelerator unless other --gpu-* flags are given).
    #[arg(long = "gpu-vendor")]
    pub gpu_vendors: Vec<String>,
    /// Accelerator model substring, e.g. T4.
    #[arg(long)]
    pub gpu_model: Option<String>,
    /// Accelerator memory per seat, MiB.
    #[arg(long)]
    pub gpu_memory_mib: Option<i64>,
    /// Share of one accelerator's compute, 1-100.
    #[arg(long)]
    pub gpu_compute_percent: Option<i32>,
    /// Accelerators per seat.
    #[arg(long)]
    pub gpu_count: Option<i32>,
    /// Weakest acceptable isolation: none, soft or hard.
    #[arg(long)]
    pub gpu_isolation: Option<String>,
    /// process, container, kubernetes, slurm or notebook (JupyterLab per
    /// seat, no command needed). `--kind notebook` says the same.
    #[arg(long, default_value = "process", alias = "kind")]
    pub runtime: String,
    /// Environment for the workload, KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Container image (container runtime).
    #[arg(long)]
    pub image: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl SpecArgs {
    pub(crate) fn spec(&self) -> anyhow::Result<pb::SeatSpec> {
        let wants_gpu = !self.gpu_vendors.is_empty()
            || self.gpu_model.is_some()
            || self.gpu_memory_mib.is_some()
            || self.gpu_compute_percent.is_some()
            || self.gpu_count.is_some();
        let iso = match self.gpu_isolation.as_deref() {
            None | Some("none") => pb::Isolation::None,
            Some("soft") => pb::Isolation::Soft,
            Some("hard") => pb::Isolation::Hard,
            Some(o) => {
                return Err(input(format!(
                    "--gpu-isolation: must be none, soft or hard, not `{o}`"
                )));
            }
        };
        Ok(pb::SeatSpec {
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            runtime: self.runtime.clone(),
            gpu: wants_gpu.then(|| pb::GpuSpec {
                vendors: self.gpu_vendors.clone(),
                model: self.gpu_model.clone().unwrap_or_default(),
                memory_mib: self.gpu_memory_mib.unwrap_or(0),
                compute_percent: self.gpu_compute_percent.unwrap_or(100),
                count: self.gpu_count.unwrap_or(1),
                min_isolation: iso as i32,
            }),
        })
    }

    pub(crate) fn workload(&self) -> anyhow::Result<pb::Workload> {
        let mut env = std::collections::HashMap::new();
        for e in &self.env {
            let (k, v) = e
                .split_once('=')
                .ok_or_else(|| input(format!("--env: expected KEY=VALUE, not `{e}`")))?;
            env.insert(k.to_string(), v.to_string());
        }
        let (command, args) = match self.command.split_first() {
            Some((c, a)) => (c.clone(), a.to_vec()),
            None => (String::new(), Vec::new()),
        };
        Ok(pb::Workload {
            command,
            args,
            env,
            image: self.image.clone().unwrap_or_default(),
        })
    }
}

#[derive(Subcommand)]
pub enum Lessons {
    /// A seat's output, read through the broker, e.g. why a seat failed.
    Logs(crate::logs::LessonLogs),
    /// Book a lesson for a class. Example:
    /// classgrid lessons book --school demo-school --start +2m --duration 40m --seats 6 -- python3 -m http.server '$(PORT)'
    Book {
        /// The school site's name or id.
        #[arg(long)]
        school: String,
        /// Start: RFC 3339 (2026-09-01T10:00:00+08:00), `now`, or relative (+90s, +10m, +2h).
        #[arg(long, default_value = "+1m")]
        start: String,
        /// Duration: seconds, or with a unit (40m, 1h).
        #[arg(long, default_value = "40m")]
        duration: String,
        #[arg(long)]
        seats: i32,
        /// Admit with at least this many seats (default: all or none).
        #[arg(long, default_value_t = 0)]
        min_seats: i32,
        /// Largest acceptable RTT from the school to a seat's node, ms (default: the broker's).
        #[arg(long, default_value_t = 0)]
        max_rtt_ms: i32,
        #[arg(long, default_value = "")]
        title: String,
        /// Idempotency key: a retried booking with the same key returns the first lesson.
        #[arg(long, default_value = "")]
        request_id: String,
        /// Decide as a booking would (seats, explanation, voucher cost) and
        /// write nothing, hold nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Show a lesson and its seats, with the output of seats whose program ended.
    Get { id: String },
    /// List lessons, optionally of one school and in a time range.
    List {
        #[arg(long)]
        school: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Follow a lesson's seats live until it ends.
    Watch {
        id: String,
        /// Stop once every seat is running (or failed).
        #[arg(long)]
        until_running: bool,
    },
    /// Each seat's private link, for the teacher to hand out: seat number →
    /// link, the same from the booking to the lesson's end.
    Links {
        id: String,
        /// Comma-separated values with a header (seat,link), for a spreadsheet.
        #[arg(long)]
        csv: bool,
    },
    /// Pause the class's seat links (each shows "paused by your teacher"),
    /// or resume them with --resume.
    PauseLinks {
        id: String,
        #[arg(long)]
        resume: bool,
    },
    /// Give one student a fresh seat server (same link), keeping their work
    /// folder unless --wipe-work.
    ResetSeat {
        id: String,
        /// The seat's number.
        seat: i32,
        #[arg(long)]
        wipe_work: bool,
    },
    /// Stop one student's seat until a reset.
    StopSeat {
        id: String,
        /// The seat's number.
        seat: i32,
    },
    /// Why each seat is where it is.
    Explain { id: String },
    /// Cancel a lesson and release its seats.
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum Jobs {
    /// A job's output, read through the broker.
    Logs(crate::logs::JobLogs),
    /// Submit an ad-hoc job; it runs now in leftover capacity or waits in the queue.
    Submit {
        #[arg(long)]
        school: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Upper bound on run time, seconds or with a unit.
        #[arg(long, default_value = "1h")]
        max_runtime: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// May be preempted by lessons (it gets its grace period to checkpoint).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        preemptible: bool,
        #[arg(long, default_value_t = 60)]
        grace_seconds: i32,
        #[arg(long, default_value = "")]
        request_id: String,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Show a job, with what its program printed last.
    Get {
        id: String,
    },
    /// List your jobs, newest first (at most 200).
    List {
        /// Only jobs in this state: queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
    },
    Cancel {
        id: String,
    },
}

pub async fn sites(g: &Global, c: Sites) -> anyhow::Result<()> {
    let mut client = FleetServiceClient::new(g.channel().await?);
    match c {
        Sites::List => {
            let r = client
                .list_sites(pb::ListSitesRequest {})
                .await?
                .into_inner();
            output::sites(g.output, &r.sites);
        }
        Sites::Create {
            name,
            kind,
            district,
        } => {
            let s = client
                .create_site(pb::CreateSiteRequest {
                    name,
                    kind,
                    district,
                })
                .await?
                .into_inner();
            output::sites(g.output, &[s]);
        }
    }
    Ok(())
}

pub async fn nodes(g: &Global, c: Nodes) -> anyhow::Result<()> {
    let mut client = FleetServiceClient::new(g.channel().await?);
    match c {
        Nodes::List { site } => {
            let r = client
                .list_nodes(pb::ListNodesRequest {
                    site: site.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output::nodes(g.output, &r.nodes);
        }
        Nodes::Get { id } => {
            let n = client
                .get_node(pb::GetNodeRequest { id })
                .await?
                .into_inner();
            output::node_detail(g.output, &n);
        }
        Nodes::Revoke { id } => crate::admin::revoke_node(g, id).await?,
        Nodes::Approve { id } => {
            let r = client
                .approve_node(pb::ApproveNodeRequest { id })
                .await?
                .into_inner();
            output::approved(g.output, &r);
        }
    }
    Ok(())
}

pub async fn lessons(g: &Global, c: Lessons) -> anyhow::Result<()> {
    let mut client = LessonServiceClient::new(g.channel().await?);
    match c {
        Lessons::Logs(a) => return crate::logs::lesson(g, a).await,
        Lessons::Book {
            school,
            start,
            duration,
            seats,
            min_seats,
            max_rtt_ms,
            title,
            request_id,
            dry_run,
            spec,
        } => {
            let req = pb::BookLessonRequest {
                request_id,
                school_site: school,
                title,
                start: Some(ts(parse_time("--start", &start)?)),
                duration_seconds: parse_duration("--duration", &duration)?,
                seats,
                min_seats,
                seat: Some(spec.spec()?),
                workload: Some(spec.workload()?),
                datasets: Vec::new(),
                max_rtt_ms,
                dry_run,
                ..Default::default()
            };
            let l = client.book(req).await?.into_inner();
            output::lesson(g.output, &l);
        }
        Lessons::Get { id } => {
            let l = client.get(pb::GetLessonRequest { id }).await?.into_inner();
            output::lesson(g.output, &l);
        }
        Lessons::PauseLinks { id, resume } => {
            let l = client
                .pause_links(pb::PauseLinksRequest {
                    id,
                    paused: !resume,
                })
                .await?
                .into_inner();
            println!(
                "lesson {}: seat links {}",
                l.id,
                if resume { "resumed" } else { "paused" }
            );
        }
        Lessons::ResetSeat {
            id,
            seat,
            wipe_work,
        } => {
            let l = control_seat(&mut client, id, seat, "reset", wipe_work).await?;
            println!("lesson {}: seat {seat} reset", l.id);
        }
        Lessons::StopSeat { id, seat } => {
            let l = control_seat(&mut client, id, seat, "stop", false).await?;
            println!("lesson {}: seat {seat} stopped", l.id);
        }
        Lessons::Links { id, csv } => {
            let l = client.get(pb::GetLessonRequest { id }).await?.into_inner();
            if l.seats.iter().all(|s| s.link.is_empty()) {
                anyhow::bail!(
                    "lesson {}: school {} has no edge serving seat links yet; start its edge with CLASSGRID_SEAT_LINKS_LISTEN, _CERT and _KEY (docs/operations.md)",
                    l.id,
                    l.school_site
                );
            }
            output::links(g.output, csv, &l);
        }
        Lessons::List { school, from, to } => {
            let from = from.map(|f| parse_time("--from", &f)).transpose()?.map(ts);
            let to = to.map(|t| parse_time("--to", &t)).transpose()?.map(ts);
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = client
                    .list(pb::ListLessonsRequest {
                        school_site: school.clone().unwrap_or_default(),
                        from,
                        to,
                        page_size: 200,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(r.lessons);
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            output::lessons(g.output, &all);
        }
        Lessons::Watch { id, until_running } => {
            let mut stream = client
                .watch(pb::GetLessonRequest { id })
                .await?
                .into_inner();
            let view = (g.output == crate::client::Output::Table).then(output::WatchView::new);
            let mut last = None;
            let mut seen = output::SeenSeats::default();
            while let Some(l) = stream.message().await? {
                match &view {
                    Some(v) => v.update(&l),
                    None => output::watch_update(g.output, &l, &mut seen),
                }
                let settled = !l.seats.is_empty()
                    && l.seats
                        .iter()
                        .all(|s| matches!(s.state.as_str(), "running" | "failed" | "released"));
                let stop = until_running && settled;
                last = Some(l);
                if stop {
                    break;
                }
            }
            if let (Some(v), Some(l)) = (&view, &last) {
                v.finish(l);
            }
        }
        Lessons::Explain { id } => {
            let e = client
                .explain(pb::GetLessonRequest { id })
                .await?
                .into_inner();
            output::explanation(g.output, &e);
        }
        Lessons::Cancel { id, reason } => {
            let l = client
                .cancel(pb::CancelLessonRequest { id, reason })
                .await?
                .into_inner();
            output::lesson(g.output, &l);
        }
    }
    Ok(())
}

pub async fn jobs(g: &Global, c: Jobs) -> anyhow::Result<()> {
    let mut client = JobServiceClient::new(g.channel().await?);
    let job = match c {
        Jobs::Logs(a) => return crate::logs::job(g, a).await,
        Jobs::Submit {
            school,
            name,
            max_runtime,
            priority,
            preemptible,
            grace_seconds,
            request_id,
            spec,
        } => {
            client
                .submit(pb::SubmitJobRequest {
                    request_id,
                    school_site: school,
                    name,
                    spec: Some(spec.spec()?),
                    workload: Some(spec.workload()?),
                    max_runtime_seconds: parse_duration("--max-runtime", &max_runtime)?,
                    priority,
                    preemptible,
                    grace_seconds,
                })
                .await?
        }
        Jobs::Get { id } => client.get(pb::GetJobRequest { id }).await?,
        Jobs::List { state } => {
            let r = client
                .list(pb::ListJobsRequest {
                    state: state.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output::jobs(g.output, &r.jobs);
            return Ok(());
        }
        Jobs::Cancel { id } => client.cancel(pb::CancelJobRequest { id }).await?,
    };
    output::job(g.output, &job.into_inner());
    Ok(())
}

async fn control_seat(
    client: &mut LessonServiceClient<crate::client::Ch>,
    id: String,
    seat: i32,
    action: &str,
    wipe_work: bool,
) -> anyhow::Result<pb::Lesson> {
    Ok(client
        .control_seat(pb::ControlSeatRequest {
            id,
            seat,
            action: action.into(),
            wipe_work,
        })
        .await?
        .into_inner())
}
