//! Pre-staging: the broker orders content for booked lessons (at
//! `start − lead`), and the stager fetches it into the cache, one download
//! at a time so that each gets the whole uplink and the measured throughput
//! means something. A failed download keeps its partial file and is retried
//! with backoff; the retry resumes where it stopped.
//!
//! Traces (decision 102): each staging run — the stager waking to work
//! through the orders due, until none is — is one trace, a root span
//! `staging run` with a `stage` span per dataset attempted, a `fetch` span
//! per source tried, and the `verify` of the whole file under it. Made only
//! when the edge exports (`traced_span!`).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use classgrid_common::traced_span;
use tokio::sync::{Mutex, Notify, watch};
use tracing::{Instrument, Span, field::Empty};

use super::{fetch, store::Cache};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub name: String,
    pub url: String,
    /// Another edge that has it cached; tried before the origin.
    pub peer_url: String,
    pub sha256: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    pub sha256: String,
    pub name: String,
    pub state: &'static str,
    pub bytes_done: u64,
    pub size_bytes: u64,
    pub message: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub items: Vec<Progress>,
    /// Measured origin throughput, or the configured link rate before any
    /// download finished.
    pub bytes_per_sec: f64,
    pub measured: bool,
    pub cache_used_bytes: u64,
    pub cache_limit_bytes: u64,
}

struct Item {
    order: Order,
    state: &'static str,
    done: Arc<AtomicU64>,
    message: String,
    attempts: u32,
    not_before: Option<Instant>,
}

struct Inner {
    items: BTreeMap<String, Item>,
    /// Exponentially weighted mean of download throughput, bytes/s.
    measured_bps: Option<f64>,
}

#[derive(Clone)]
pub struct Stager {
    cache: Cache,
    assumed_bps: f64,
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
}

/// Downloads shorter than this say little about the link.
const MIN_SAMPLE_BYTES: u64 = 1 << 20;

impl Stager {
    pub fn new(cache: Cache, assumed_bps: f64) -> Self {
        Self {
            cache,
            assumed_bps,
            inner: Arc::new(Mutex::new(Inner {
                items: BTreeMap::new(),
                measured_bps: None,
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Adds orders the stager does not know yet. Orders for content already
    /// cached are recorded as cached at once.
    pub async fn enqueue(&self, orders: Vec<Order>) {
        let mut added = false;
        let mut g = self.inner.lock().await;
        for o in orders {
            if g.items.contains_key(&o.sha256) {
                continue;
            }
            let cached = self.cache.has(&o.sha256).await.unwrap_or(false);
            tracing::info!(sha256 = %o.sha256, name = %o.name, cached, "staging ordered");
            g.items.insert(
                o.sha256.clone(),
                Item {
                    done: Arc::new(AtomicU64::new(if cached { o.size_bytes } else { 0 })),
                    state: if cached { "cached" } else { "queued" },
                    order: o,
                    message: String::new(),
                    attempts: 0,
                    not_before: None,
                },
            );
            added |= !cached;
        }
        drop(g);
        if added {
            self.wake.notify_one();
        }
    }

    pub async fn report(&self) -> Report {
        let g = self.inner.lock().await;
        let items = g
            .items
            .values()
            .map(|i| Progress {
                sha256: i.order.sha256.clone(),
                name: i.order.name.clone(),
                state: i.state,
                bytes_done: i.done.load(Ordering::Relaxed),
                size_bytes: i.order.size_bytes,
                message: i.message.clone(),
            })
            .collect();
        Report {
            items,
            bytes_per_sec: g.measured_bps.unwrap_or(self.assumed_bps),
            measured: g.measured_bps.is_some(),
            cache_used_bytes: self.cache.used_bytes().await.unwrap_or(0),
            cache_limit_bytes: self.cache.limit(),
        }
    }

    /// The next order due for an attempt, with its attempt number.
    async fn next(&self) -> Option<(Order, Arc<AtomicU64>, u32)> {
        let mut g = self.inner.lock().await;
        let now = Instant::now();
        let item = g.items.values_mut().find(|i| {
            (i.state == "queued" || i.state == "downloading" || i.state == "failed")
                && i.not_before.is_none_or(|t| t <= now)
        })?;
        item.state = "downloading";
        item.attempts += 1;
        Some((item.order.clone(), item.done.clone(), item.attempts))
    }

    async fn finish(&self, sha: &str, r: Result<fetch::Fetched, String>) {
        let mut g = self.inner.lock().await;
        if let Ok(f) = &r
            && f.bytes >= MIN_SAMPLE_BYTES
        {
            let bps = f.bytes as f64 / f.elapsed.as_secs_f64().max(1e-3);
            g.measured_bps = Some(match g.measured_bps {
                Some(old) => 0.5 * old + 0.5 * bps,
                None => bps,
            });
        }
        let Some(i) = g.items.get_mut(sha) else {
            return;
        };
        match r {
            Ok(f) => {
                i.state = "cached";
                i.message = if f.resumed_from > 0 {
                    format!("resumed at byte {} and verified", f.resumed_from)
                } else {
                    "verified".into()
                };
                i.done.store(i.order.size_bytes, Ordering::Relaxed);
            }
            Err(msg) => {
                i.state = "failed";
                i.message = msg;
                let backoff = Duration::from_millis(500 * 2u64.pow(i.attempts.min(6)));
                i.not_before = Some(Instant::now() + backoff);
            }
        }
    }

    /// Works through orders until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            // One trace per run, begun by the first order due; a retry after
            // its backoff falls in a later run (its `stage` span says which
            // attempt it is).
            let mut run: Option<(Span, u32, u32)> = None;
            while let Some((o, done, attempt)) = self.next().await {
                let (run_span, datasets, failed) = run.get_or_insert_with(|| {
                    (
                        traced_span!(parent: None, "staging run", datasets = Empty, failed = Empty),
                        0,
                        0,
                    )
                });
                let stage = traced_span!(
                    parent: &*run_span,
                    "stage",
                    sha256 = %o.sha256,
                    name = %o.name,
                    size_bytes = o.size_bytes,
                    attempt,
                    otel.status_description = Empty,
                );
                let r = self.attempt(&o, done).instrument(stage.clone()).await;
                *datasets += 1;
                if let Err(e) = &r {
                    *failed += 1;
                    stage.record("otel.status_description", e.as_str());
                }
                self.finish(&o.sha256, r).await;
            }
            if let Some((span, datasets, failed)) = run {
                span.record("datasets", datasets);
                span.record("failed", failed);
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One attempt: the peer edge first (when named), then the origin.
    async fn attempt(&self, o: &Order, done: Arc<AtomicU64>) -> Result<fetch::Fetched, String> {
        if self.cache.has(&o.sha256).await.unwrap_or(false) {
            return Ok(fetch::Fetched {
                bytes: 0,
                elapsed: Duration::ZERO,
                resumed_from: 0,
            });
        }
        let partial = self.cache.partial_path(&o.sha256);
        let mut sources = Vec::new();
        if !o.peer_url.is_empty() {
            sources.push(o.peer_url.as_str());
        }
        sources.push(o.url.as_str());
        let mut last = String::new();
        for url in sources {
            // The host, not the URL: a dataset's URL may be signed.
            let span = traced_span!(
                "fetch",
                source = if url == o.peer_url { "peer" } else { "origin" },
                host = %fetch::host_of(url),
                bytes = Empty,
                resumed_from = Empty,
                otel.status_description = Empty,
            );
            let fetched = fetch::fetch(url, &partial, &o.sha256, o.size_bytes, done.clone())
                .instrument(span.clone())
                .await;
            match &fetched {
                Ok(f) => {
                    span.record("bytes", f.bytes);
                    span.record("resumed_from", f.resumed_from);
                }
                Err(e) => {
                    span.record("otel.status_description", e.to_string());
                }
            }
            drop(span);
            match fetched {
                Ok(f) => {
                    let size = tokio::fs::metadata(&partial)
                        .await
                        .map(|m| m.len())
                        .unwrap_or(o.size_bytes);
                    return match self.cache.commit(&o.sha256, size).await {
                        Ok(()) => {
                            tracing::info!(sha256 = %o.sha256, url, bytes = size, resumed_from = f.resumed_from, "content staged and verified");
                            Ok(f)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                }
                Err(e) => {
                    tracing::warn!(sha256 = %o.sha256, url, error = %e, "staging download failed");
                    last = e.to_string();
                }
            }
        }
        Err(last)
    }
}
