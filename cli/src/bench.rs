//! `classgrid bench …`: the benchmarks the issues set targets for, each in
//! its own module; this one only names them.

use crate::client::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Book many classes at once on many simulated nodes and time it
    /// (with --replicas: through several replicas behind HAProxy, against
    /// one broker).
    Storm(crate::bench_storm::StormArgs),
    /// Kill the leader of several broker replicas behind HAProxy, round
    /// after round, under a stream of bookings; time the failovers.
    Failover(crate::bench_failover::FailoverArgs),
    /// A class of real seats on this machine (JupyterLab per seat by
    /// default): time from the bell until every link answers through the
    /// edge, warm (booked ahead) and cold (booked at the bell), and the
    /// memory of a warm seat.
    Bell(crate::bench_bell::BellArgs),
    /// A district's term imported as one timetable: the dry run, then the commit.
    Term(crate::bench_term::TermArgs),
    /// The storm across three peered regions, each its own broker and
    /// database: home holds part of the seats, the rest is borrowed from
    /// the nearest peer that can take each class.
    Federation(crate::bench_federation::FederationArgs),
}

pub async fn run(global: &Global, b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Storm(a) => match a.replicas {
            Some(n) => crate::bench_storm_ha::compare(global, &a, n).await,
            None => crate::bench_storm::storm(global, a).await,
        },
        Bench::Failover(a) => crate::bench_failover::run(a).await,
        Bench::Bell(a) => crate::bench_bell::run(a).await,
        Bench::Term(a) => crate::bench_term::run(a).await,
        Bench::Federation(a) => crate::bench_federation::run(a).await,
    }
}
