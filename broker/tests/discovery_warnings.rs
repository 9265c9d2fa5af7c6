//! A node's discovery warnings follow its agent's heartbeats, not only its
//! Register: a warning that appears or clears after the agent connected
//! shows on the node page, and an agent that predates the field keeps the
//! warnings it registered with.

mod common;

use classgrid_proto::v1 as pb;
use common::{TestDb, agent_session, broker};

fn capacity() -> pb::NodeCapacity {
    pb::NodeCapacity {
        cpu_millis: 4000,
        memory_mib: 8192,
        devices: Vec::new(),
    }
}

async fn warnings_of(app: &classgrid_broker::app::App, node: uuid::Uuid) -> Vec<String> {
    let nodes = app.store.list_nodes().await.unwrap();
    let (row, _) = nodes.into_iter().find(|(n, _)| n.id == node).unwrap();
    row.warnings
}

#[tokio::test]
async fn heartbeat_warnings_replace_the_registered_ones_and_are_bounded() {
    let db = TestDb::new("cg_warn").await;
    let app = broker(&db).await;
    app.create_site("school-w", "school", "d1").await.unwrap();
    let (node, _inbox) = agent_session(&app, "school-w", "n1", capacity()).await;
    assert!(warnings_of(&app, node).await.is_empty());

    // nvidia-smi started failing after the agent connected.
    let now = pb::DiscoveryWarnings {
        lines: vec!["nvidia-smi: exited 9 (driver not loaded)".into()],
    };
    app.update_capacity(node, &capacity(), Some(&now))
        .await
        .unwrap();
    assert_eq!(warnings_of(&app, node).await, now.lines);

    // An older agent's heartbeat carries no warnings: the broker keeps them.
    app.update_capacity(node, &capacity(), None).await.unwrap();
    assert_eq!(warnings_of(&app, node).await, now.lines);

    // A hostile agent's flood is cut to 32 lines of 512 characters.
    let flood = pb::DiscoveryWarnings {
        lines: vec!["x".repeat(10_000); 1_000],
    };
    app.update_capacity(node, &capacity(), Some(&flood))
        .await
        .unwrap();
    let kept = warnings_of(&app, node).await;
    assert_eq!(kept.len(), 32);
    assert!(kept.iter().all(|w| w.chars().count() == 512));

    // The warnings cleared: the node page shows none.
    let cleared = pb::DiscoveryWarnings { lines: Vec::new() };
    app.update_capacity(node, &capacity(), Some(&cleared))
        .await
        .unwrap();
    assert!(warnings_of(&app, node).await.is_empty());
}
