//! `classgrid bench storm --replicas N`: the storm through N real broker
//! replicas behind HAProxy, against the storm on one real broker process,
//! alternating in one run so that both meet the same machine (issue #20:
//! within 1.2× as medians). Both sides are separate `classgrid-broker
//! serve` processes on a fresh database each, so the only difference is
//! the load balancer and the standbys beside the leader.

use std::path::Path;

use crate::{
    bench_failover::{Programs, Replica, free_port, haproxy_config, http_status, spawn, until},
    bench_storm::{Outcome, StormArgs, storm_on},
    client::Global,
};

/// Which side of the comparison a run is.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Single,
    Replicated,
}

pub async fn compare(global: &Global, a: &StormArgs, replicas: u32) -> anyhow::Result<()> {
    crate::bench_storm::check(a)?;
    if global.grpc_url.is_some()
        || a.keep_database
        || a.ladder
        || a.logs
        || a.otlp_endpoint.is_some()
    {
        anyhow::bail!(
            "--replicas: starts its own broker processes and databases for each run; \
             it cannot be combined with --grpc-url, --keep-database, --ladder, --logs or --otlp-endpoint"
        );
    }
    if !(2..=9).contains(&replicas) {
        anyhow::bail!("--replicas: must be between 2 and 9, not {replicas}");
    }
    if !(1..=50).contains(&a.pairs) {
        anyhow::bail!("--pairs: must be between 1 and 50, not {}", a.pairs);
    }
    let progs = Programs::find_given(&a.broker_bin, &None, &a.haproxy)?;
    let dir = std::env::temp_dir().join(format!("classgrid-bench-storm-ha-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut single = Vec::new();
    let mut replicated = Vec::new();
    for pair in 0..a.pairs {
        // Alternate which side goes first, so a drift of the machine
        // weighs on both alike.
        let order = if pair % 2 == 0 {
            [Side::Single, Side::Replicated]
        } else {
            [Side::Replicated, Side::Single]
        };
        for side in order {
            let n = if side == Side::Single { 1 } else { replicas };
            let o = once(global, a, &progs, n, &dir.join(format!("run-{pair}-{n}")))
                .await
                .map_err(|e| e.context(format!("the processes' logs are in {}", dir.display())))?;
            let label = if side == Side::Single {
                "single".to_string()
            } else {
                format!("replicas={replicas}+haproxy")
            };
            println!("{} {label}", o.line);
            match side {
                Side::Single => single.push(o.running_s),
                Side::Replicated => replicated.push(o.running_s),
            }
        }
    }
    let (s, r) = (median(&mut single), median(&mut replicated));
    println!(
        "storm-ha pairs={} replicas={replicas} single_running_s_p50={s:.3} replicated_running_s_p50={r:.3} ratio={:.2}",
        a.pairs,
        r / s
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One storm on `n` replicas (HAProxy in front when more than one) on a
/// fresh database; every process is stopped after.
async fn once(
    global: &Global,
    a: &StormArgs,
    progs: &Programs,
    n: u32,
    dir: &Path,
) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir)?;
    let (db_url, db_name) = crate::bench_db::create_database(&a.database_url).await?;
    let mut started: Vec<Replica> = Vec::new();
    let mut lb = None;
    let result = async {
        // As the in-process storm: no rate limit, plain text on loopback.
        let extra = ["--rate-limit-per-s", "1000000"];
        for i in 0..n {
            let mut r = Replica::new(format!("r{i}"));
            r.start(progs, &db_url, 5, dir, &extra)?;
            // The first leads (it migrates the fresh database); the others
            // wait as standbys.
            let wait = if i == 0 { "/readyz" } else { "/healthz" };
            started.push(r);
            started
                .last_mut()
                .expect("just pushed")
                .wait(wait, dir)
                .await?;
        }
        let url = if n == 1 {
            format!("http://127.0.0.1:{}", started[0].grpc_port)
        } else {
            let (grpc, http) = (free_port(), free_port());
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_config(&started, grpc, http))?;
            lb = Some(spawn(
                &progs.haproxy,
                &["-f".into(), cfg.display().to_string(), "-db".into()],
                &dir.join("haproxy.log"),
            )?);
            if !until(
                std::time::Duration::from_secs(30),
                std::time::Duration::from_millis(50),
                || async { http_status(http, "/readyz").await == Some(200) },
            )
            .await
            {
                anyhow::bail!("HAProxy never reached the leader (haproxy.log)");
            }
            format!("http://127.0.0.1:{grpc}")
        };
        let store = classgrid_broker::store::Store::connect_with(&db_url, 2).await?;
        let token =
            classgrid_broker::service::admin::bootstrap_admin_token(&store, "storm-ha-bench")
                .await?;
        let g = Global {
            token: Some(token),
            ..global.clone()
        };
        storm_on(&g, a, &url, &db_url, None).await
    }
    .await;
    if let Some(mut c) = lb {
        crate::bench_failover::kill(&mut c);
    }
    for r in &mut started {
        if let Some(c) = &mut r.child {
            crate::bench_failover::kill(c);
        }
    }
    crate::bench_db::drop_database(&a.database_url, &db_name).await;
    result
}
