//! Start-up: connect, migrate, bind, serve, and stop cleanly.

use classgrid_proto::v1::{
    FILE_DESCRIPTOR_SET, agent_service_server::AgentServiceServer,
    edge_service_server::EdgeServiceServer, fleet_service_server::FleetServiceServer,
    job_service_server::JobServiceServer, lesson_service_server::LessonServiceServer,
};
use tokio::{net::TcpListener, sync::watch};
use tracing::info;

use crate::{
    api::{grpc, http},
    app::{App, Broker},
    clock,
    config::BrokerConfig,
    store::Store,
};

/// Everything bound and ready; `run` serves until `shutdown` turns true.
pub struct Started {
    pub app: App,
    pub grpc: TcpListener,
    pub http: TcpListener,
}

pub async fn start(cfg: BrokerConfig) -> anyhow::Result<Started> {
    let store = Store::connect(&cfg.database_url).await?;
    store.migrate().await?;
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .map_err(|e| anyhow::anyhow!("grpc_addr {}: {e}", cfg.grpc_addr))?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("http_addr {}: {e}", cfg.http_addr))?;
    let app = Broker::new(cfg, store).await?;
    Ok(Started { app, grpc, http })
}

pub async fn run(s: Started, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let app = s.app;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<LessonServiceServer<grpc::lesson::Lessons>>()
        .await;
    health
        .set_serving::<AgentServiceServer<grpc::agent::Agents>>()
        .await;

    let grpc_addr = s.grpc.local_addr()?;
    let http_addr = s.http.local_addr()?;
    info!(%grpc_addr, %http_addr, "broker serving");

    let mut stop = shutdown.clone();
    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            AgentServiceServer::new(grpc::agent::Agents(app.clone()))
                .max_decoding_message_size(4 << 20),
        )
        .add_service(
            LessonServiceServer::new(grpc::lesson::Lessons(app.clone()))
                .max_decoding_message_size(1 << 20),
        )
        .add_service(
            JobServiceServer::new(grpc::job::Jobs(app.clone())).max_decoding_message_size(1 << 20),
        )
        .add_service(FleetServiceServer::new(grpc::fleet::FleetApi(app.clone())))
        .add_service(EdgeServiceServer::new(grpc::edge::Edges(app.clone())))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(s.grpc),
            async move {
                let _ = stop.wait_for(|v| *v).await;
            },
        );
    let mut stop = shutdown.clone();
    let http_server =
        axum::serve(s.http, http::router(app.clone())).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|v| *v).await;
        });
    let clock = tokio::spawn(clock::run(app.clone(), shutdown.clone()));
    let (g, h) = tokio::join!(grpc_server, http_server);
    clock.abort();
    g?;
    h?;
    info!("broker stopped");
    Ok(())
}

/// Resolves to true on SIGINT or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}
