//! Content for seats: before a seat with datasets starts, the agent fetches
//! each dataset from its site's edge over the LAN (or from the origin when no
//! edge has it), verifies its sha256, and hands the seat a folder of them in
//! `CLASSGRID_DATASETS` (one entry per dataset name). Downloads resume and
//! are verified with the edge's own fetcher; content already here is reused.

use std::{path::PathBuf, sync::Arc};

use classgrid_edge::cache::fetch;
use classgrid_proto::v1 as pb;
use tracing::Instrument;

use crate::supervisor::Supervisor;

/// Passes `a` to the supervisor, fetching its datasets first (in the
/// background, so the broker stream is never blocked on a download). A
/// fetch that fails is reported as the seat's failure, with the reason.
pub fn assign(sup: Arc<Supervisor>, data_dir: PathBuf, mut a: pb::Assign) {
    if a.datasets.is_empty() {
        sup.assign(a);
        return;
    }
    // The fetch is part of the seat's start in the broker's trace, beside
    // the supervisor's spans: a slow LAN shows here.
    let span = classgrid_common::traced_span!(
        "content fetch",
        assignment = %a.assignment_id,
        datasets = a.datasets.len()
    );
    classgrid_common::telemetry::join_remote(&span, &a.traceparent);
    let fetch = async move {
        match prepare(&data_dir, &a).await {
            Ok(dir) => {
                let w = a.workload.get_or_insert_with(Default::default);
                w.env
                    .insert("CLASSGRID_DATASETS".into(), dir.display().to_string());
                sup.assign(a);
            }
            Err(e) => {
                tracing::warn!(assignment = %a.assignment_id, error = %e, "seat content could not be fetched");
                // Started without its data the seat would only confuse a
                // class; the message tells the platform why.
                if let Some(w) = a.workload.as_mut() {
                    w.env
                        .insert("CLASSGRID_DATASETS_ERROR".into(), e.to_string());
                }
                sup.assign(a);
            }
        }
    };
    tokio::spawn(fetch.instrument(span));
}

/// One lock per digest being fetched on this node. Entries are few (the
/// datasets of the node's lessons) and a few bytes each, so they are kept.
fn digest_lock(sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(sha256.to_string())
        .or_default()
        .clone()
}

fn safe_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

async fn prepare(data_dir: &std::path::Path, a: &pb::Assign) -> anyhow::Result<PathBuf> {
    let blobs = data_dir.join("blobs");
    let view = data_dir.join("seats").join(&a.assignment_id);
    tokio::fs::create_dir_all(&blobs).await?;
    tokio::fs::create_dir_all(&view).await?;
    for d in &a.datasets {
        if !safe_name(&d.name) {
            anyhow::bail!(
                "dataset name `{}` cannot be a file name",
                d.name.chars().take(64).collect::<String>()
            );
        }
        let blob = blobs.join(&d.sha256);
        // The seats of a class on one node start together and share their
        // datasets: one download per digest, the others wait for it and
        // reuse the blob. Without this they wrote the same `.partial` at
        // once, and every seat but the first started without its data.
        let lock = digest_lock(&d.sha256);
        let _fetching = lock.lock().await;
        if !blob.exists() {
            let partial = blobs.join(format!("{}.partial", d.sha256));
            let mut sources: Vec<&str> = Vec::new();
            if !d.edge_url.is_empty() {
                sources.push(&d.edge_url);
            }
            sources.push(&d.origin_url);
            let mut last = String::new();
            let mut done = false;
            for url in sources {
                let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
                match fetch::fetch(
                    url,
                    &partial,
                    &d.sha256,
                    d.size_bytes.max(0) as u64,
                    progress,
                )
                .await
                {
                    Ok(f) => {
                        tokio::fs::rename(&partial, &blob).await?;
                        tracing::info!(dataset = %d.name, url, bytes = f.bytes, "dataset fetched and verified");
                        done = true;
                        break;
                    }
                    Err(e) => last = format!("{url}: {e}"),
                }
            }
            if !done {
                anyhow::bail!("dataset `{}`: {last}", d.name);
            }
        }
        let link = view.join(&d.name);
        let _ = tokio::fs::remove_file(&link).await;
        tokio::fs::symlink(&blob, &link).await?;
    }
    Ok(view)
}
