//! Edge configuration. Precedence: flag > `CLASSGRID_*` env > TOML file > default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML config file; its keys are the long flag names with `_` for `-`.
    #[arg(long, env = "CLASSGRID_CONFIG")]
    pub config: Option<PathBuf>,
    /// The broker's gRPC URL, e.g. http://broker.example:7443, or the URLs
    /// of a region's replicas separated by commas, tried in turn (for a
    /// district without a load balancer).
    #[arg(long, env = "CLASSGRID_BROKER", value_name = "URL[,URL...]")]
    pub broker: Option<String>,
    /// The site this edge serves.
    #[arg(long, env = "CLASSGRID_SITE")]
    pub site: Option<String>,
    /// This edge's name within its site. Default: the host name.
    #[arg(long, env = "CLASSGRID_NAME")]
    pub name: Option<String>,
    /// Where the edge keeps its state (certificates from `join` go in its tls/ folder).
    #[arg(long, env = "CLASSGRID_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// `json` or `text`.
    #[arg(long, env = "CLASSGRID_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Milliseconds between probe rounds to the region's nodes (each probe
    /// lands at a random point within the round). Default: 5000.
    #[arg(long, env = "CLASSGRID_PROBE_INTERVAL_MS")]
    pub probe_interval_ms: Option<u64>,
    /// Probe samples kept per node for its median and variance. Default: 12.
    #[arg(long, env = "CLASSGRID_PROBE_WINDOW")]
    pub probe_window: Option<usize>,
    /// Milliseconds between reports to the broker (RTT table, cache, staging). Default: 5000.
    #[arg(long, env = "CLASSGRID_REPORT_INTERVAL_MS")]
    pub report_interval_ms: Option<u64>,
    /// Where cached content is kept. Default: STATE_DIR/cache.
    #[arg(long, env = "CLASSGRID_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The cache's size limit in bytes; least recently used unpinned content
    /// is evicted beyond it. Default: 53687091200 (50 GiB).
    #[arg(long, env = "CLASSGRID_CACHE_MAX_BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Where the content server listens for the site's agents. Default: 0.0.0.0:7480.
    #[arg(long, env = "CLASSGRID_LISTEN")]
    pub listen: Option<String>,
    /// The URL agents use to reach the content server. Default: http://LISTEN
    /// (with 127.0.0.1 for an unspecified address).
    #[arg(long, env = "CLASSGRID_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// The uplink's rate in bytes per second, assumed for staging leads until
    /// a download has been measured. Default: 12500000 (100 Mbit/s).
    #[arg(long, env = "CLASSGRID_LINK_BYTES_PER_SEC")]
    pub link_bytes_per_sec: Option<u64>,
    /// Where the site relay listens for agents that cannot reach the region
    /// directly (they run with `--relay` set to it), e.g. 0.0.0.0:7481. Each
    /// agent connection is carried over this edge's one connection to the
    /// broker. Default: off.
    #[arg(long, env = "CLASSGRID_RELAY_LISTEN")]
    pub relay_listen: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    broker: Option<String>,
    site: Option<String>,
    name: Option<String>,
    state_dir: Option<PathBuf>,
    log_format: Option<String>,
    probe_interval_ms: Option<u64>,
    probe_window: Option<usize>,
    report_interval_ms: Option<u64>,
    cache_dir: Option<PathBuf>,
    cache_max_bytes: Option<u64>,
    listen: Option<String>,
    advertise_url: Option<String>,
    link_bytes_per_sec: Option<u64>,
    relay_listen: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// One broker URL, or several separated by commas (see `brokers`).
    pub broker: String,
    pub site: String,
    pub name: String,
    pub state_dir: PathBuf,
    pub log_format: String,
    pub probe_interval: Duration,
    pub probe_window: usize,
    pub report_interval: Duration,
    pub cache_dir: PathBuf,
    pub cache_max_bytes: u64,
    pub listen: SocketAddr,
    pub advertise_url: String,
    pub link_bytes_per_sec: u64,
    /// Where the site relay listens; None runs none.
    pub relay_listen: Option<SocketAddr>,
    /// Seat links (decision 088), from `CLASSGRID_SEAT_LINKS_*`; None
    /// serves none.
    pub seat_links: Option<crate::seatlink::proxy::SeatLinks>,
}

impl EdgeConfig {
    /// Every default, for callers that build a config in code (`classgrid
    /// up`) and set only what they need.
    pub fn defaults(state_dir: PathBuf) -> Self {
        Self {
            broker: "https://127.0.0.1:7443".into(),
            site: String::new(),
            name: "edge".into(),
            cache_dir: state_dir.join("cache"),
            state_dir,
            log_format: "json".into(),
            probe_interval: Duration::from_secs(5),
            probe_window: crate::probe::DEFAULT_WINDOW,
            report_interval: Duration::from_secs(5),
            cache_max_bytes: 50 << 30,
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            advertise_url: "http://127.0.0.1:7480".into(),
            link_bytes_per_sec: 12_500_000,
            relay_listen: None,
            seat_links: None,
        }
    }

    /// The broker URLs to try in turn: `broker` split at its commas
    /// (decision 091); one URL for the usual single address.
    pub fn brokers(&self) -> Vec<String> {
        classgrid_common::broker_list::split(&self.broker)
    }

    /// Precedence: flag > `CLASSGRID_*` env > TOML file > default.
    pub fn resolve(a: &RunArgs) -> anyhow::Result<Self> {
        use classgrid_common::config::{load_file, pick};
        let f: FileConfig = load_file(a.config.as_deref())?;
        let state_dir = a
            .state_dir
            .clone()
            .or(f.state_dir)
            .unwrap_or_else(|| classgrid_common::context::home().join("edge"));
        // After `join`, the state folder remembers broker, site and name.
        let joined = classgrid_common::join::Joined::load(&state_dir);
        let broker = a
            .broker
            .clone()
            .or(f.broker)
            .or(joined.as_ref().map(|j| j.broker.clone()))
            .unwrap_or_else(|| "https://127.0.0.1:7443".into());
        classgrid_common::broker_list::parse("--broker", &broker)?;
        let in_range = |flag: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                anyhow::bail!("--{flag}: must be between {lo} and {hi}, not {v}");
            }
            Ok(v)
        };
        let probe_interval_ms = in_range(
            "probe-interval-ms",
            pick(a.probe_interval_ms, f.probe_interval_ms, 5000),
            100,
            3_600_000,
        )?;
        let report_interval_ms = in_range(
            "report-interval-ms",
            pick(a.report_interval_ms, f.report_interval_ms, 5000),
            200,
            600_000,
        )?;
        let probe_window = in_range(
            "probe-window",
            pick(a.probe_window, f.probe_window, crate::probe::DEFAULT_WINDOW) as u64,
            1,
            1000,
        )? as usize;
        let cache_max_bytes = in_range(
            "cache-max-bytes",
            pick(a.cache_max_bytes, f.cache_max_bytes, 50 << 30),
            1 << 20,
            1 << 50,
        )?;
        let link_bytes_per_sec = in_range(
            "link-bytes-per-sec",
            pick(a.link_bytes_per_sec, f.link_bytes_per_sec, 12_500_000),
            1000,
            1 << 40,
        )?;
        let addr = |flag: &str, v: &str, example: &str| -> anyhow::Result<SocketAddr> {
            v.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--{flag}: must be an address and port such as {example}, not `{v}`"
                )
            })
        };
        let listen_s = pick(a.listen.clone(), f.listen, "0.0.0.0:7480".into());
        let listen = addr("listen", &listen_s, "0.0.0.0:7480")?;
        let relay_listen = match a.relay_listen.clone().or(f.relay_listen) {
            Some(r) => Some(addr("relay-listen", &r, "0.0.0.0:7481")?),
            None => None,
        };
        let advertise_url = a
            .advertise_url
            .clone()
            .or(f.advertise_url)
            .unwrap_or_else(|| {
                let host = if listen.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    listen.ip().to_string()
                };
                format!("http://{host}:{}", listen.port())
            });
        if !advertise_url.starts_with("http://") || advertise_url.len() > 300 {
            anyhow::bail!(
                "--advertise-url: must be an http:// URL of at most 300 bytes, not `{advertise_url}`"
            );
        }
        Ok(Self {
            broker,
            site: a
                .site
                .clone()
                .or(f.site)
                .or(joined.as_ref().map(|j| j.site.clone()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--site: is required (the site this edge serves), unless it has joined"
                    )
                })?,
            name: a
                .name
                .clone()
                .or(f.name)
                .or(joined.map(|j| j.name))
                .unwrap_or_else(|| "edge".into()),
            cache_dir: a
                .cache_dir
                .clone()
                .or(f.cache_dir)
                .unwrap_or_else(|| state_dir.join("cache")),
            state_dir,
            log_format: pick(a.log_format.clone(), f.log_format, "json".into()),
            probe_interval: Duration::from_millis(probe_interval_ms),
            probe_window,
            report_interval: Duration::from_millis(report_interval_ms),
            cache_max_bytes,
            listen,
            advertise_url: advertise_url.trim_end_matches('/').to_string(),
            link_bytes_per_sec,
            relay_listen,
            seat_links: crate::seatlink::proxy::SeatLinks::from_env()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: super::RunArgs,
    }

    fn resolve(extra: &[&str]) -> anyhow::Result<super::EdgeConfig> {
        let mut argv = vec![
            "classgrid-edge",
            "--site",
            "school-a",
            "--state-dir",
            "/nonexistent/classgrid-edge-config-test",
        ];
        argv.extend(extra);
        super::EdgeConfig::resolve(&Cli::parse_from(argv).a)
    }

    #[test]
    fn relay_is_off_by_default_and_its_address_is_checked() {
        assert_eq!(resolve(&[]).unwrap().relay_listen, None);
        assert_eq!(
            resolve(&["--relay-listen", "0.0.0.0:7481"])
                .unwrap()
                .relay_listen,
            Some(([0, 0, 0, 0], 7481).into())
        );
        let e = resolve(&["--relay-listen", "edge:7481"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--relay-listen:") && e.contains("`edge:7481`"),
            "{e}"
        );
    }

    #[test]
    fn broker_takes_one_url_as_before_or_a_list_checked_by_entry() {
        let one = resolve(&["--broker", "http://b1:7443"]).unwrap();
        assert_eq!(one.brokers(), vec!["http://b1:7443"]);
        let e = resolve(&["--broker", "b1"]).unwrap_err().to_string();
        assert_eq!(e, "--broker: must be an http:// or https:// URL, not `b1`");
        let list = resolve(&["--broker", "http://b1:7443,http://b2:7443"]).unwrap();
        assert_eq!(list.brokers(), vec!["http://b1:7443", "http://b2:7443"]);
        let e = resolve(&["--broker", "http://b1:7443,"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--broker: entry 2 of `http://b1:7443,`"),
            "{e}"
        );
    }
}
