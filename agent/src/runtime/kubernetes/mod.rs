//! The kubernetes runtime: the agent stands for a whole cluster. Capacity is
//! read from the API server's NodeList (allocatable CPU and memory, HAMi's
//! GPU registry); a seat is a Pod with requests equal to limits and HAMi's
//! fraction resources, watched through the API's watch stream; stopping
//! deletes it with the seat's grace period.
//!
//! The API server is reached over plain HTTP through `kubectl proxy`, which
//! holds the credentials (decision 032).

pub mod api;
pub mod model;

use crate::now_ms;
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use classgrid_proto::v1 as pb;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Handle, Probe, Runtime, StartSpec};
use api::Api;
use model::Slot;

/// A pod's last known state from the watch; `None` once deleted.
type Cache = Arc<Mutex<HashMap<String, Option<Value>>>>;

pub struct KubeRuntime {
    api: Api,
    namespace: String,
    cache: Cache,
    slots: Mutex<Vec<Slot>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for KubeRuntime {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn selector() -> String {
    format!("{}%3Dclassgrid", model::LABEL_MANAGED)
}

/// Lists classgrid's pods, then follows the watch from that list's
/// resourceVersion; starts over (a fresh list) whenever the stream ends or
/// the version expired.
async fn watch_pods(api: Api, namespace: String, cache: Cache) {
    let pods = format!("/api/v1/namespaces/{namespace}/pods");
    loop {
        let list = match api
            .call("GET", &format!("{pods}?labelSelector={}", selector()), None)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes: cannot list pods; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        {
            let mut c = cache.lock().expect("lock");
            for p in list["items"].as_array().into_iter().flatten() {
                if let Some(n) = p["metadata"]["name"].as_str() {
                    c.insert(n.to_string(), Some(p.clone()));
                }
            }
        }
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let path = format!(
            "{pods}?labelSelector={}&watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=300",
            selector()
        );
        let c = cache.clone();
        let result = api
            .watch(&path, move |ev| {
                let name = ev["object"]["metadata"]["name"]
                    .as_str()
                    .map(str::to_string);
                let mut c = c.lock().expect("lock");
                match (ev["type"].as_str(), name) {
                    (Some("ADDED" | "MODIFIED"), Some(n)) => {
                        c.insert(n, Some(ev["object"].clone()));
                    }
                    (Some("DELETED"), Some(n)) => {
                        c.insert(n, None);
                    }
                    // BOOKMARK moves the version on; ERROR (410 Gone) ends the
                    // stream and the loop lists again.
                    _ => {}
                }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "kubernetes: pod watch ended; listing again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl KubeRuntime {
    /// Starts the pod watch; the API server need not answer yet.
    pub fn new(api_url: &str, namespace: &str) -> Self {
        let api = Api::new(api_url);
        let cache: Cache = Arc::default();
        let watcher = tokio::spawn(watch_pods(
            api.clone(),
            namespace.to_string(),
            cache.clone(),
        ));
        Self {
            api,
            namespace: namespace.to_string(),
            cache,
            slots: Mutex::new(Vec::new()),
            watcher,
        }
    }

    fn pod_path(&self, name: &str) -> String {
        format!("/api/v1/namespaces/{}/pods/{name}", self.namespace)
    }
}

impl Runtime for KubeRuntime {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<'_, anyhow::Result<Handle>> {
        Box::pin(async move {
            let slots = self.slots.lock().expect("lock").clone();
            let pod = model::pod(&spec, &self.namespace, &slots, now_ms())?;
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let path = format!("/api/v1/namespaces/{}/pods", self.namespace);
            match self.api.call("POST", &path, Some(&pod)).await {
                Ok(created) => {
                    self.cache
                        .lock()
                        .expect("lock")
                        .insert(name.clone(), Some(created));
                }
                // A pod of this assignment exists from an earlier try whose
                // record was lost: it is adopted.
                Err(e) if e.status == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Handle::Kubernetes {
                namespace: self.namespace.clone(),
                pod_name: name,
            })
        })
    }

    fn probe<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let Handle::Kubernetes { pod_name, .. } = handle else {
                return Probe::Gone;
            };
            let cached = self.cache.lock().expect("lock").get(pod_name).cloned();
            match cached {
                Some(Some(pod)) => model::probe(&pod),
                Some(None) => Probe::Gone,
                // Not seen by the watch yet (just adopted): ask directly.
                None => match self.api.call("GET", &self.pod_path(pod_name), None).await {
                    Ok(pod) => {
                        let p = model::probe(&pod);
                        self.cache
                            .lock()
                            .expect("lock")
                            .insert(pod_name.clone(), Some(pod));
                        p
                    }
                    Err(e) if e.status == 404 => Probe::Gone,
                    Err(e) => Probe::Unknown(e.to_string()),
                },
            }
        })
    }

    fn stop<'a>(
        &'a self,
        handle: &'a Handle,
        grace: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Handle::Kubernetes { pod_name, .. } = handle else {
                anyhow::bail!("not a kubernetes handle");
            };
            let path = format!(
                "{}?gracePeriodSeconds={}",
                self.pod_path(pod_name),
                grace.as_secs().max(1)
            );
            match self.api.call("DELETE", &path, None).await {
                Ok(_) => Ok(()),
                Err(e) if e.status == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn output_tail<'a>(&'a self, handle: &'a Handle, _work_dir: &'a Path) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let Handle::Kubernetes { pod_name, .. } = handle else {
                return String::new();
            };
            let text = self
                .api
                .text(&format!("{}/log?tailLines=50", self.pod_path(pod_name)))
                .await
                .unwrap_or_default();
            let start = text.len().saturating_sub(2048);
            let start = (start..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            text[start..].to_string()
        })
    }

    fn cleanup<'a>(&'a self, handle: &'a Handle, _id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Handle::Kubernetes { pod_name, .. } = handle {
                // A finished pod is kept by Kubernetes until deleted.
                let _ = self
                    .api
                    .call("DELETE", &self.pod_path(pod_name), None)
                    .await;
                self.cache.lock().expect("lock").remove(pod_name);
            }
        })
    }

    fn poll_interval(&self) -> Duration {
        // Probes read the watch's cache, so they are cheap.
        Duration::from_millis(500)
    }

    fn cluster_capacity(&self) -> BoxFuture<'_, Option<(pb::NodeCapacity, Vec<String>)>> {
        Box::pin(async move {
            match self.api.call("GET", "/api/v1/nodes", None).await {
                Ok(nodes) => {
                    let (cap, slots, warnings) = model::capacity(&nodes);
                    *self.slots.lock().expect("lock") = slots;
                    Some((cap, warnings))
                }
                Err(e) => Some((super::slurm::empty_capacity(), vec![e.to_string()])),
            }
        })
    }
}
