//! The agent's RTT probe responder and its peer probes.
//!
//! The responder is a TCP echo: whatever 8-byte probe arrives is written
//! back, after `--probe-delay-ms` when set. The delay exists for tests (there
//! is no `tc netem` on the project's machines): the probe still crosses the
//! real network stack, and the edge measures the delay as path latency.
//!
//! Peer probes time a few other nodes' responders (named by the broker at
//! registration), so that network coordinates see node-to-node distances.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use classgrid_proto::v1 as pb;
use rand::Rng;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};

/// Concurrent probe connections served; more wait.
const MAX_CONNECTIONS: usize = 256;
/// A probe connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
const PEER_INTERVAL: Duration = Duration::from_secs(5);
const PEER_WINDOW: usize = 12;

/// Binds the responder; returns the bound address (the port may have been 0).
pub async fn listen(addr: SocketAddr, delay: Duration) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--probe-addr: cannot listen on {addr}: {e}"))?;
    let bound = l.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            tokio::spawn(async move {
                let _permit = permit;
                let _ = echo(s, delay).await;
            });
        }
    });
    Ok(bound)
}

async fn echo(mut s: TcpStream, delay: Duration) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 8];
    loop {
        match tokio::time::timeout(IDLE, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        s.write_all(&buf).await?;
    }
}

/// One timed round trip on `conn` (opened first when None).
async fn round_trip(addr: &str, conn: Option<TcpStream>) -> Option<(f64, TcpStream)> {
    let work = async {
        let mut s = match conn {
            Some(s) => s,
            None => TcpStream::connect(addr).await.ok()?,
        };
        let _ = s.set_nodelay(true);
        let nonce: u64 = rand::rng().random();
        let t0 = Instant::now();
        s.write_all(&nonce.to_be_bytes()).await.ok()?;
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.ok()?;
        (u64::from_be_bytes(b) == nonce).then(|| (t0.elapsed().as_secs_f64() * 1000.0, s))
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .ok()
        .flatten()
}

fn variance(v: &VecDeque<f64>) -> f64 {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64
}

fn median(v: &VecDeque<f64>) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Probes `peers` every few seconds (jittered) and sends their medians.
/// Ends when the receiver is gone (the stream to the broker closed).
pub async fn probe_peers(peers: Vec<pb::ProbePeer>, out: mpsc::Sender<pb::PeerRtts>) {
    if peers.is_empty() {
        return;
    }
    let mut windows: HashMap<String, VecDeque<f64>> = HashMap::new();
    let mut conns: HashMap<String, TcpStream> = HashMap::new();
    loop {
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::time::sleep(PEER_INTERVAL.mul_f64(jitter)).await;
        for p in &peers {
            let conn = conns.remove(&p.node_id);
            let r = match round_trip(&p.addr, conn).await {
                Some(r) => Some(r),
                None => round_trip(&p.addr, None).await,
            };
            if let Some((ms, c)) = r {
                conns.insert(p.node_id.clone(), c);
                let w = windows.entry(p.node_id.clone()).or_default();
                if w.len() == PEER_WINDOW {
                    w.pop_front();
                }
                w.push_back(ms);
            }
        }
        let report = pb::PeerRtts {
            peers: windows
                .iter()
                .map(|(id, w)| pb::PeerRtt {
                    node_id: id.clone(),
                    median_ms: median(w),
                    variance_ms2: variance(w),
                    samples: w.len() as i32,
                })
                .collect(),
        };
        if out.send(report).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn responder_echoes_after_the_injected_delay() {
        let addr = listen("127.0.0.1:0".parse().unwrap(), Duration::from_millis(40))
            .await
            .unwrap();
        let (ms, conn) = round_trip(&addr.to_string(), None).await.unwrap();
        assert!(ms >= 40.0, "{ms}");
        let (ms, _) = round_trip(&addr.to_string(), Some(conn)).await.unwrap();
        assert!((40.0..500.0).contains(&ms), "{ms}");
    }
}
