//! RTT probes from the site to every node of the region, over the network
//! the students use. A probe is one 8-byte round trip to the node agent's TCP
//! echo responder on an open connection, so it times the path and the
//! responder, not connection setup. Each node keeps a sliding window of
//! samples; the table reports its median (robust to one slow sample) and
//! variance.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rand::Rng;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};

/// Samples kept per node; at the default 5 s interval, about a minute.
pub const DEFAULT_WINDOW: usize = 12;
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A sliding window of RTT samples in milliseconds.
#[derive(Debug, Clone)]
pub struct RttWindow {
    cap: usize,
    samples: VecDeque<f64>,
}

impl RttWindow {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            samples: VecDeque::new(),
        }
    }

    pub fn push(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The median; for an even count, the mean of the two middle samples.
    pub fn median(&self) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.samples.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// The population variance in ms².
    pub fn variance(&self) -> Option<f64> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        let mean = self.samples.iter().sum::<f64>() / n as f64;
        Some(self.samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64)
    }
}

/// One row of the site → node table.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub node_id: String,
    pub name: String,
    pub median_ms: f64,
    pub variance_ms2: f64,
    pub samples: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node_id: String,
    pub name: String,
    pub addr: String,
}

#[derive(Default)]
struct Entry {
    target: Option<Target>,
    window: Option<RttWindow>,
    conn: Option<TcpStream>,
    last_error: Option<String>,
}

/// The probe table shared by the prober and the reporter.
#[derive(Clone, Default)]
pub struct Table {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the target list; nodes no longer listed are forgotten, and a
    /// node whose responder moved starts a fresh window.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut g = self.lock();
        g.retain(|id, _| targets.iter().any(|t| &t.node_id == id));
        for t in targets {
            let e = g.entry(t.node_id.clone()).or_default();
            if e.target.as_ref().map(|o| &o.addr) != Some(&t.addr) {
                e.window = None;
                e.conn = None;
            }
            e.target = Some(t);
        }
    }

    pub fn targets(&self) -> Vec<Target> {
        self.lock()
            .values()
            .filter_map(|e| e.target.clone())
            .collect()
    }

    pub fn snapshot(&self) -> Vec<Measured> {
        let g = self.lock();
        let mut v: Vec<Measured> = g
            .iter()
            .filter_map(|(id, e)| {
                let w = e.window.as_ref()?;
                Some(Measured {
                    node_id: id.clone(),
                    name: e
                        .target
                        .as_ref()
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    median_ms: w.median()?,
                    variance_ms2: w.variance()?,
                    samples: w.len(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn record(&self, node_id: &str, window: usize, result: Result<(f64, TcpStream), String>) {
        let mut g = self.lock();
        let Some(e) = g.get_mut(node_id) else { return };
        match result {
            Ok((ms, conn)) => {
                e.window
                    .get_or_insert_with(|| RttWindow::new(window))
                    .push(ms);
                e.conn = Some(conn);
                e.last_error = None;
            }
            Err(msg) => {
                if e.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::info!(node = node_id, error = %msg, "probe failed");
                }
                e.last_error = Some(msg);
            }
        }
    }

    fn take_conn(&self, node_id: &str) -> Option<TcpStream> {
        self.lock().get_mut(node_id).and_then(|e| e.conn.take())
    }
}

/// One round trip to an echo responder: writes 8 bytes, waits for the same 8
/// back. Reuses `conn` when given; a fresh connection is opened otherwise
/// (its setup is not timed).
pub async fn probe_once(addr: &str, conn: Option<TcpStream>) -> Result<(f64, TcpStream), String> {
    let work = async {
        let mut s = match conn {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        let nonce: u64 = rand::rng().random();
        let t0 = Instant::now();
        s.write_all(&nonce.to_be_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if u64::from_be_bytes(buf) != nonce {
            return Err(format!(
                "{addr} answered with the wrong bytes; not a classgrid probe responder"
            ));
        }
        Ok((ms, s))
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .map_err(|_| format!("{addr}: no answer within {PROBE_TIMEOUT:?}"))?
}

/// Probes every target once per `interval`, each at a random offset within
/// it, so that a site's probes neither arrive in bursts nor in lockstep with
/// other sites'.
pub async fn run(
    table: Table,
    interval: Duration,
    window: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let targets = table.targets();
        let mut round = tokio::task::JoinSet::new();
        for t in targets {
            let offset = interval.mul_f64(rand::rng().random_range(0.0..0.9));
            let table = table.clone();
            round.spawn(async move {
                tokio::time::sleep(offset).await;
                let conn = table.take_conn(&t.node_id);
                let mut r = probe_once(&t.addr, conn).await;
                if r.is_err() {
                    // A kept-alive connection may have been dropped by the
                    // node; try once more on a fresh one.
                    r = probe_once(&t.addr, None).await;
                }
                table.record(&t.node_id, window, r);
            });
        }
        let pause = tokio::time::sleep(interval);
        let finished = async move {
            while round.join_next().await.is_some() {}
            pause.await
        };
        tokio::select! {
            _ = finished => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_reports_median_and_variance_of_recent_samples() {
        let mut w = RttWindow::new(3);
        for x in [100.0, 1.0, 2.0, 3.0] {
            w.push(x);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.median(), Some(2.0));
        assert!((w.variance().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn window_ignores_broken_samples() {
        let mut w = RttWindow::new(4);
        w.push(f64::NAN);
        w.push(-1.0);
        assert!(w.is_empty());
    }

    #[tokio::test]
    async fn probe_times_a_real_round_trip_to_an_echo_responder() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 8];
            while s.read_exact(&mut b).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(30)).await;
                s.write_all(&b).await.unwrap();
            }
        });
        let (ms, conn) = probe_once(&addr, None).await.unwrap();
        assert!(ms >= 30.0, "{ms}");
        let (ms2, _) = probe_once(&addr, Some(conn)).await.unwrap();
        assert!((30.0..200.0).contains(&ms2), "{ms2}");
    }
}
