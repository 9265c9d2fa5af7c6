//! Broker configuration. Precedence: flag > `CLASSGRID_*` env > TOML file > default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use classgrid_common::config::{load_file, pick};
use classgrid_placement::{Topology, Weights};
use serde::Deserialize;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; its keys are the long flag names with `_` for `-`.
    #[arg(long, env = "CLASSGRID_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/classgrid
    #[arg(long, env = "CLASSGRID_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Most PostgreSQL connections the broker opens (2..=500, default 32).
    /// At a bell every class books at once, and on a 2-core server 32 kept
    /// the database busiest; keep it under the server's max_connections.
    #[arg(long, env = "CLASSGRID_DATABASE_CONNECTIONS")]
    pub database_connections: Option<u32>,
    /// gRPC listen address (agents, edges, platforms).
    #[arg(long, env = "CLASSGRID_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address (REST, /healthz, /metrics, console).
    #[arg(long, env = "CLASSGRID_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Seconds before a lesson's start from which its capacity is held and data staged.
    #[arg(long, env = "CLASSGRID_STAGING_LEAD_S")]
    pub staging_lead_s: Option<u64>,
    /// Seconds after a lesson's end during which its capacity stays held.
    #[arg(long, env = "CLASSGRID_GRACE_S")]
    pub grace_s: Option<u64>,
    /// Seconds of heartbeat silence after which a node is `disconnected`.
    #[arg(long, env = "CLASSGRID_DISCONNECTED_AFTER_S")]
    pub disconnected_after_s: Option<u64>,
    /// Seconds of silence after which a node is `lost` and its planned seats re-planned.
    #[arg(long, env = "CLASSGRID_LOST_AFTER_S")]
    pub lost_after_s: Option<u64>,
    /// RTT limit for lessons that do not give one, ms.
    #[arg(long, env = "CLASSGRID_DEFAULT_MAX_RTT_MS")]
    pub default_max_rtt_ms: Option<u32>,
    /// Longest lesson or job window accepted, seconds.
    #[arg(long, env = "CLASSGRID_MAX_WINDOW_S")]
    pub max_window_s: Option<u64>,
    /// `json` or `text`.
    #[arg(long, env = "CLASSGRID_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// OTLP/gRPC endpoint for traces, e.g. http://127.0.0.1:4317
    #[arg(long, env = "CLASSGRID_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The share of traces begun here that are exported, from 0 to 1
    /// (default 1); a request's sampled `traceparent` is always followed.
    #[arg(long, env = "CLASSGRID_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// The region's time zone (IANA name) for times shown to people; APIs
    /// answer RFC 3339 with this zone's offset.
    #[arg(long, env = "CLASSGRID_TIME_ZONE")]
    pub time_zone: Option<String>,
    /// Seconds a leader's lease lasts (1..=60, default 5): a standby
    /// replica takes over at most this long after the leader's death.
    #[arg(long, env = "CLASSGRID_LEASE_S")]
    pub lease_s: Option<u64>,
    /// This replica's name in `classgrid status` (default: the host name
    /// and the HTTP port).
    #[arg(long, env = "CLASSGRID_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// The host (name or IP) other replicas reach this one at, when it
    /// binds every address (default: the host name). A standby forwards
    /// calls to the leader there (decision 100).
    #[arg(long, env = "CLASSGRID_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    #[command(flatten)]
    pub security: crate::auth::config::SecurityArgs,
}

/// The TOML file. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub database_connections: Option<u32>,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub staging_lead_s: Option<u64>,
    pub grace_s: Option<u64>,
    pub disconnected_after_s: Option<u64>,
    pub lost_after_s: Option<u64>,
    pub default_max_rtt_ms: Option<u32>,
    pub max_window_s: Option<u64>,
    pub log_format: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub trace_sample_ratio: Option<f64>,
    pub time_zone: Option<String>,
    pub lease_s: Option<u64>,
    pub replica_name: Option<String>,
    pub advertise_host: Option<String>,
    pub topology: Option<TopologyConfig>,
    pub weights: Option<WeightsConfig>,
    pub security: Option<crate::auth::config::SecurityFile>,
    /// `[join]`: whether joining nodes wait for approval by default.
    pub join: Option<crate::auth::config::JoinFile>,
    /// Model substring → accelerator-hour weight (T4 = 1.0).
    pub voucher_weights: Option<std::collections::BTreeMap<String, f64>>,
    pub vouchers: Option<crate::vouchers::config::VoucherFile>,
    /// `[[lending]]`: nodes a school keeps for its own classes in its hours.
    pub lending: Option<Vec<crate::fleet::lending::LendingRule>>,
    /// `[job_priority]`: weights of the named factors that order the job queue.
    pub job_priority: Option<JobPriorityConfig>,
    /// `[federation]`: how classes are placed across peer regions.
    pub federation: Option<FederationFile>,
}

/// `[federation]` in the broker's TOML file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationFile {
    /// `home_first` (default): peers are asked only for what does not fit
    /// here. `best_rtt`: a peer whose seats the students would reach
    /// sooner than this region's hosts the class (decision 107).
    pub placement: Option<String>,
}

/// Where a class goes when it fits both here and at a peer region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FederationPlacement {
    #[default]
    HomeFirst,
    BestRtt,
}

impl FederationPlacement {
    fn parse(s: Option<&str>) -> anyhow::Result<Self> {
        match s {
            None | Some("home_first") => Ok(Self::HomeFirst),
            Some("best_rtt") => Ok(Self::BestRtt),
            Some(other) => anyhow::bail!(
                "config federation.placement: must be home_first or best_rtt, not {other:?}"
            ),
        }
    }
}

/// Job priority = Σ weight · factor over the factors the broker computes for
/// each queued job (see `service::jobs::priority_factors`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPriorityConfig {
    /// The job's own `priority` field, -1000..1000.
    pub priority: Option<f64>,
    /// Minutes the job has waited in the queue, so nothing starves.
    pub wait_minutes: Option<f64>,
    /// The school's share (0..1) of the jobs running now; a negative weight
    /// lets schools with fewer running jobs go first.
    pub school_share: Option<f64>,
}

/// Configured RTT classes, used when no measurement or estimate exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    pub same_site_ms: f64,
    pub same_district_ms: f64,
    pub cross_district_ms: f64,
    pub cloud_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsConfig {
    pub rtt: f64,
    pub cached: f64,
    pub tier: f64,
    pub packing: f64,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub database_url: String,
    pub database_connections: u32,
    /// The region's time zone, default Asia/Shanghai.
    pub time_zone: chrono_tz::Tz,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub staging_lead: Duration,
    pub grace: Duration,
    pub disconnected_after: Duration,
    pub lost_after: Duration,
    pub default_max_rtt_ms: u32,
    pub max_window: Duration,
    pub log_format: String,
    pub otlp_endpoint: Option<String>,
    /// Checked to lie in 0..=1; None keeps the SDK's default (every trace).
    pub trace_sample_ratio: Option<f64>,
    pub topology: Topology,
    pub weights: Weights,
    pub security: crate::auth::config::SecurityConfig,
    pub join: crate::auth::config::JoinConfig,
    pub vouchers: crate::vouchers::VoucherConfig,
    pub lending: Vec<crate::fleet::lending::LendingRule>,
    pub job_priority: classgrid_placement::PriorityWeights,
    /// How long a leader's lease lasts (decision 078).
    pub lease: Duration,
    /// This replica's name, if configured.
    pub replica_name: Option<String>,
    /// The host other replicas reach this one at, if configured.
    pub advertise_host: Option<String>,
    /// `[federation] placement`.
    pub federation_placement: FederationPlacement,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/classgrid";

impl BrokerConfig {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file: FileConfig = load_file(args.config.as_deref())?;
        let log_format = pick(args.log_format.clone(), file.log_format, "json".into());
        log_format
            .parse::<classgrid_common::telemetry::LogFormat>()
            .map_err(|e| anyhow::anyhow!("log_format: {e}"))?;
        let topology = match file.topology {
            None => Topology::default(),
            Some(t) => {
                for (key, v) in [
                    ("topology.same_site_ms", t.same_site_ms),
                    ("topology.same_district_ms", t.same_district_ms),
                    ("topology.cross_district_ms", t.cross_district_ms),
                    ("topology.cloud_ms", t.cloud_ms),
                ] {
                    if !(v.is_finite() && (0.0..=60_000.0).contains(&v)) {
                        anyhow::bail!(
                            "config {key}: must be a number of ms between 0 and 60000, not {v}"
                        );
                    }
                }
                Topology {
                    same_site_ms: t.same_site_ms,
                    same_district_ms: t.same_district_ms,
                    cross_district_ms: t.cross_district_ms,
                    cloud_ms: t.cloud_ms,
                }
            }
        };
        let weights = match file.weights {
            None => Weights::default(),
            Some(w) => {
                for (key, v) in [
                    ("weights.rtt", w.rtt),
                    ("weights.cached", w.cached),
                    ("weights.tier", w.tier),
                    ("weights.packing", w.packing),
                ] {
                    if !(v.is_finite() && v >= 0.0) {
                        anyhow::bail!("config {key}: must be a non-negative number, not {v}");
                    }
                }
                Weights {
                    rtt: w.rtt,
                    cached: w.cached,
                    tier: w.tier,
                    packing: w.packing,
                }
            }
        };
        let job_priority = job_priority_weights(file.job_priority.as_ref())?;
        let tz_name = pick(
            args.time_zone.clone(),
            file.time_zone,
            "Asia/Shanghai".into(),
        );
        let time_zone: chrono_tz::Tz = tz_name.parse().map_err(|_| {
            anyhow::anyhow!(
                "time_zone: `{tz_name}` is not an IANA time zone name such as Asia/Shanghai"
            )
        })?;
        let cfg = Self {
            time_zone,
            database_url: pick(
                args.database_url.clone(),
                file.database_url,
                DEFAULT_DATABASE_URL.into(),
            ),
            database_connections: pick(
                args.database_connections,
                file.database_connections,
                crate::store::DEFAULT_CONNECTIONS,
            ),
            grpc_addr: pick(args.grpc_addr, file.grpc_addr, "127.0.0.1:7443".parse()?),
            http_addr: pick(args.http_addr, file.http_addr, "127.0.0.1:7080".parse()?),
            staging_lead: Duration::from_secs(pick(args.staging_lead_s, file.staging_lead_s, 600)),
            grace: Duration::from_secs(pick(args.grace_s, file.grace_s, 60)),
            disconnected_after: Duration::from_secs(pick(
                args.disconnected_after_s,
                file.disconnected_after_s,
                10,
            )),
            lost_after: Duration::from_secs(pick(args.lost_after_s, file.lost_after_s, 300)),
            default_max_rtt_ms: pick(args.default_max_rtt_ms, file.default_max_rtt_ms, 50),
            max_window: Duration::from_secs(pick(args.max_window_s, file.max_window_s, 12 * 3600)),
            log_format,
            otlp_endpoint: args.otlp_endpoint.clone().or(file.otlp_endpoint),
            trace_sample_ratio: args
                .trace_sample_ratio
                .or(file.trace_sample_ratio)
                .map(|r| classgrid_common::telemetry::check_sample_ratio("trace_sample_ratio", r))
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?,
            topology,
            weights,
            security: crate::auth::config::SecurityConfig::resolve(
                &args.security,
                file.security.as_ref(),
            )?,
            join: crate::auth::config::JoinConfig::resolve(&args.security, file.join.as_ref()),
            vouchers: crate::vouchers::VoucherConfig::from_file(
                file.voucher_weights.as_ref(),
                file.vouchers.as_ref(),
            )?,
            lending: file.lending.unwrap_or_default(),
            job_priority,
            lease: Duration::from_secs(pick(args.lease_s, file.lease_s, 5)),
            replica_name: args.replica_name.clone().or(file.replica_name),
            advertise_host: args.advertise_host.clone().or(file.advertise_host),
            federation_placement: FederationPlacement::parse(
                file.federation
                    .as_ref()
                    .and_then(|f| f.placement.as_deref()),
            )?,
        };
        if let Some(h) = &cfg.advertise_host {
            check_advertise_host(h)?;
        }
        if !(1..=60).contains(&cfg.lease.as_secs()) {
            anyhow::bail!(
                "lease_s: must be between 1 and 60 seconds, not {}",
                cfg.lease.as_secs()
            );
        }
        if cfg.lost_after < cfg.disconnected_after {
            anyhow::bail!("lost_after_s: must not be shorter than disconnected_after_s");
        }
        if !(2..=500).contains(&cfg.database_connections) {
            anyhow::bail!(
                "database_connections: must be between 2 and 500, not {}",
                cfg.database_connections
            );
        }
        if cfg.default_max_rtt_ms == 0 {
            anyhow::bail!("default_max_rtt_ms: must be at least 1");
        }
        Ok(cfg)
    }
}

/// An advertised host is a bare DNS name or IP address: what the other
/// replicas connect to, with this replica's own ports.
fn check_advertise_host(h: &str) -> anyhow::Result<()> {
    let ok_name = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok_name || h.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        anyhow::bail!(
            "advertise_host: must be a host name or IP address without scheme or port (e.g. broker-2.district.edu or 10.0.0.12), not {h:?}"
        )
    }
}

fn job_priority_weights(
    c: Option<&JobPriorityConfig>,
) -> anyhow::Result<classgrid_placement::PriorityWeights> {
    // Without a section: the job's own priority first, then one point per
    // ten minutes of waiting.
    let (p, w, s) = match c {
        None => (1.0, 0.1, 0.0),
        Some(c) => (
            c.priority.unwrap_or(0.0),
            c.wait_minutes.unwrap_or(0.0),
            c.school_share.unwrap_or(0.0),
        ),
    };
    for (key, v) in [
        ("job_priority.priority", p),
        ("job_priority.wait_minutes", w),
        ("job_priority.school_share", s),
    ] {
        if !(v.is_finite() && v.abs() <= 1e6) {
            anyhow::bail!("config {key}: must be a number between -1000000 and 1000000, not {v}");
        }
    }
    Ok(classgrid_placement::PriorityWeights(vec![
        ("priority".into(), p),
        ("wait_minutes".into(), w),
        ("school_share".into(), s),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            config,
            database_url: None,
            database_connections: None,
            grpc_addr: None,
            http_addr: None,
            staging_lead_s: None,
            grace_s: Some(5),
            disconnected_after_s: None,
            lost_after_s: None,
            default_max_rtt_ms: None,
            max_window_s: None,
            log_format: None,
            otlp_endpoint: None,
            trace_sample_ratio: None,
            time_zone: None,
            lease_s: None,
            replica_name: None,
            advertise_host: None,
            security: Default::default(),
        }
    }

    #[test]
    fn an_advertised_host_with_a_scheme_or_port_is_refused_by_name() {
        let mut a = args(None);
        for bad in ["https://b2", "b2:7443", "", "b 2", "-b2"] {
            a.advertise_host = Some(bad.into());
            let e = BrokerConfig::resolve(&a).unwrap_err().to_string();
            assert!(e.contains("advertise_host"), "{bad:?}: {e}");
        }
        for good in ["broker-2.district.edu", "10.0.0.12", "::1"] {
            a.advertise_host = Some(good.into());
            assert_eq!(
                BrokerConfig::resolve(&a).unwrap().advertise_host.as_deref(),
                Some(good)
            );
        }
    }

    #[test]
    fn a_lease_outside_1_to_60_seconds_is_refused_by_name() {
        let mut a = args(None);
        a.lease_s = Some(0);
        let e = BrokerConfig::resolve(&a).unwrap_err().to_string();
        assert!(
            e.contains("lease_s") && e.contains("between 1 and 60"),
            "{e}"
        );
        a.lease_s = Some(10);
        assert_eq!(BrokerConfig::resolve(&a).unwrap().lease.as_secs(), 10);
    }

    #[test]
    fn example_config_in_deploy_parses_and_flags_win() {
        let path = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/config/broker.toml"
        ));
        let cfg = BrokerConfig::resolve(&args(Some(path))).unwrap();
        assert_eq!(cfg.grpc_addr.port(), 7443);
        assert_eq!(cfg.topology.cloud_ms, 60.0);
        assert_eq!(
            cfg.grace,
            Duration::from_secs(5),
            "the flag wins over the file"
        );
    }

    #[test]
    fn federation_placement_is_home_first_unless_the_file_says_best_rtt() {
        let dir = std::env::temp_dir().join(format!("cg-cfg-fed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("fed.toml");
        std::fs::write(&p, "").unwrap();
        let cfg = BrokerConfig::resolve(&args(Some(p.clone()))).unwrap();
        assert_eq!(cfg.federation_placement, FederationPlacement::HomeFirst);
        std::fs::write(&p, "[federation]\nplacement = \"best_rtt\"\n").unwrap();
        let cfg = BrokerConfig::resolve(&args(Some(p.clone()))).unwrap();
        assert_eq!(cfg.federation_placement, FederationPlacement::BestRtt);
        std::fs::write(&p, "[federation]\nplacement = \"nearest\"\n").unwrap();
        let e = BrokerConfig::resolve(&args(Some(p.clone())))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("federation.placement: must be home_first or best_rtt"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lending_and_job_priority_sections_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("cg-cfg-lend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lend.toml");
        std::fs::write(
            &p,
            "[job_priority]\nschool_share = -50.0\n[[lending]]\nsite = \"school-a\"\nweekdays = [\"mon\"]\nhours = \"08:00-12:00\"\n",
        )
        .unwrap();
        let cfg = BrokerConfig::resolve(&args(Some(p.clone()))).unwrap();
        assert_eq!(cfg.lending.len(), 1);
        assert!(cfg.job_priority.0.contains(&("school_share".into(), -50.0)));
        std::fs::write(&p, "[job_priority]\nwait_minutes = inf\n").unwrap();
        let e = BrokerConfig::resolve(&args(Some(p.clone())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("job_priority.wait_minutes"), "{e}");
        std::fs::write(
            &p,
            "[[lending]]\nsite = \"s\"\nweekdays = []\nhours = \"08:00-12:00\"\n",
        )
        .unwrap();
        let e = BrokerConfig::resolve(&args(Some(p)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("at least one day"),
            "{e}"
        );
    }

    #[test]
    fn database_connections_default_file_flag_and_bounds() {
        assert_eq!(
            BrokerConfig::resolve(&args(None))
                .unwrap()
                .database_connections,
            crate::store::DEFAULT_CONNECTIONS
        );
        let dir = std::env::temp_dir().join(format!("cg-cfg-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pool.toml");
        std::fs::write(&p, "database_connections = 12\n").unwrap();
        let cfg = BrokerConfig::resolve(&args(Some(p.clone()))).unwrap();
        assert_eq!(cfg.database_connections, 12);
        let mut a = args(Some(p.clone()));
        a.database_connections = Some(40);
        assert_eq!(BrokerConfig::resolve(&a).unwrap().database_connections, 40);
        for bad in [0, 1, 501] {
            a.database_connections = Some(bad);
            let e = BrokerConfig::resolve(&a).unwrap_err().to_string();
            assert!(
                e.contains("database_connections") && e.contains("between 2 and 500"),
                "{e}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn trace_sample_ratio_from_file_or_flag_within_zero_and_one() {
        assert_eq!(
            BrokerConfig::resolve(&args(None))
                .unwrap()
                .trace_sample_ratio,
            None
        );
        let dir = std::env::temp_dir().join(format!("cg-cfg-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("trace.toml");
        std::fs::write(&p, "trace_sample_ratio = 0.1\n").unwrap();
        let cfg = BrokerConfig::resolve(&args(Some(p.clone()))).unwrap();
        assert_eq!(cfg.trace_sample_ratio, Some(0.1));
        let mut a = args(Some(p.clone()));
        a.trace_sample_ratio = Some(1.0);
        assert_eq!(
            BrokerConfig::resolve(&a).unwrap().trace_sample_ratio,
            Some(1.0)
        );
        a.trace_sample_ratio = Some(2.0);
        let e = BrokerConfig::resolve(&a).unwrap_err().to_string();
        assert!(
            e.contains("trace_sample_ratio must be a number from 0 to 1"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn join_approval_default_is_off_and_follows_precedence() {
        let dir = std::env::temp_dir().join(format!("cg-cfg-join-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("join.toml");
        assert!(
            !BrokerConfig::resolve(&args(None))
                .unwrap()
                .join
                .require_approval
        );
        std::fs::write(&p, "[join]\nrequire_approval = true\n").unwrap();
        assert!(
            BrokerConfig::resolve(&args(Some(p.clone())))
                .unwrap()
                .join
                .require_approval
        );
        let mut a = args(Some(p.clone()));
        a.security.join_require_approval = Some(false);
        assert!(
            !BrokerConfig::resolve(&a).unwrap().join.require_approval,
            "the flag (or CLASSGRID_JOIN_REQUIRE_APPROVAL) wins over the file"
        );
        std::fs::write(&p, "[join]\nrequire_approval = \"yes\"\n").unwrap();
        let e = BrokerConfig::resolve(&args(Some(p)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("require_approval"), "{e}");
    }

    #[test]
    fn malformed_topology_stops_start_with_line_and_key() {
        let dir = std::env::temp_dir().join(format!("cg-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(
            &p,
            "grpc_addr = \"127.0.0.1:1\"\n[topology]\nsame_site_ms = \"fast\"\n",
        )
        .unwrap();
        let e = BrokerConfig::resolve(&args(Some(p.clone())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("same_site_ms"), "{e}");
        std::fs::write(&p, "[topology]\nsame_site_ms = 2.0\nsame_district_ms = -1.0\ncross_district_ms = 1.0\ncloud_ms = 1.0\n").unwrap();
        let e = BrokerConfig::resolve(&args(Some(p.clone())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("topology.same_district_ms"), "{e}");
        std::fs::write(&p, "grcp_addr = \"127.0.0.1:1\"\n").unwrap();
        let e = BrokerConfig::resolve(&args(Some(p)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("grcp_addr"), "unknown keys are named: {e}");
    }
}
