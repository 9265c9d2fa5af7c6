//! Start-up: connect, migrate, bind, serve, and stop cleanly.

use classgrid_proto::v1::{
    FILE_DESCRIPTOR_SET, admin_service_server::AdminServiceServer,
    agent_service_server::AgentServiceServer, edge_service_server::EdgeServiceServer,
    fleet_service_server::FleetServiceServer, job_service_server::JobServiceServer,
    join_service_server::JoinServiceServer, lesson_service_server::LessonServiceServer,
};
use tokio::{net::TcpListener, sync::watch};
use tracing::info;

use crate::{
    api::{grpc, http},
    app::{App, Broker},
    clock,
    config::BrokerConfig,
    leader,
    store::Store,
};

/// Everything bound and ready; `run` serves until `shutdown` turns true.
pub struct Started {
    pub app: App,
    pub grpc: TcpListener,
    pub http: TcpListener,
    /// The lease's own connections (decision 078): renewals never wait
    /// behind the workload's pool.
    pub lease_store: Store,
}

/// Connects, migrates, binds, and waits until this replica leads the
/// region (decision 078): at once when it is alone, else as a standby that
/// answers health checks until the leader's lease expires.
pub async fn start(cfg: BrokerConfig) -> anyhow::Result<Started> {
    let store = Store::connect_with(&cfg.database_url, cfg.database_connections).await?;
    store.migrate().await?;
    let lease_store = Store::connect_with(&cfg.database_url, 2).await?;
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .map_err(|e| anyhow::anyhow!("grpc_addr {}: {e}", cfg.grpc_addr))?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("http_addr {}: {e}", cfg.http_addr))?;
    let me = leader::replica(&cfg, &grpc, &http)?;
    let tls = Broker::server_tls(&cfg)?.map(|t| leader::ServeTls {
        cert_pem: t.cert_pem,
        key_pem: t.key_pem,
        ca_pem: t.ca.cert_pem,
    });
    // A standby is stopped by the signal's default action: it holds nothing.
    let (_never, no_stop) = watch::channel(false);
    let listeners = leader::Listeners { grpc, http };
    let Some((leadership, leader::Listeners { grpc, http })) =
        leader::campaign(&lease_store, &cfg, me, listeners, tls, no_stop).await?
    else {
        anyhow::bail!("stopped while waiting to lead");
    };
    let app = crate::app::open(cfg, store).await?;
    let _ = app.leader.set(leadership);
    Ok(Started {
        app,
        grpc,
        http,
        lease_store,
    })
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

    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .timeout(std::time::Duration::from_secs(60));
    if let Some(tls) = &app.tls {
        // Client certificates are optional at the TLS layer: platforms use
        // bearer tokens, while agents and edges must present one (checked in
        // their services). Relayed agents' TLS ends here too.
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(
                    &tls.cert_pem,
                    &tls.key_pem,
                ))
                .client_ca_root(tonic::transport::Certificate::from_pem(&tls.ca.cert_pem))
                .client_auth_optional(true),
        )?;
    }
    let relayed = app
        .relays
        .take_incoming()
        .ok_or_else(|| anyhow::anyhow!("this broker's gRPC server is already running"))?;
    let mut stop = shutdown.clone();
    let grpc_server = builder
        // Outermost, so the gate's authentication is inside the call's span.
        .layer(crate::telemetry::trace::GrpcSpanLayer)
        .layer(crate::auth::gate::GateLayer { app: app.clone() })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            AgentServiceServer::new(grpc::agent::Agents::new(app.clone()))
                .max_decoding_message_size(4 << 20),
        )
        .add_service(
            LessonServiceServer::new(grpc::lesson::Lessons(app.clone()))
                .max_decoding_message_size(1 << 20),
        )
        .add_service(
            JobServiceServer::new(grpc::job::Jobs(app.clone())).max_decoding_message_size(1 << 20),
        )
        .add_service(
            FleetServiceServer::new(grpc::fleet::FleetApi(app.clone()))
                .max_decoding_message_size(1 << 20),
        )
        .add_service(
            EdgeServiceServer::new(grpc::edge::Edges(app.clone()))
                .max_decoding_message_size(1 << 20),
        )
        .add_service(
            AdminServiceServer::new(grpc::admin::Admin(app.clone()))
                .max_decoding_message_size(1 << 20),
        )
        .add_service(
            JoinServiceServer::new(grpc::admin::Join(app.clone()))
                .max_decoding_message_size(1 << 20),
        )
        .add_service(
            classgrid_proto::v1::federation_service_server::FederationServiceServer::new(
                grpc::federation::Federation(app.clone()),
            )
            .max_decoding_message_size(1 << 20),
        )
        .add_service(
            classgrid_proto::v1::series_service_server::SeriesServiceServer::new(
                grpc::series::SeriesApi(app.clone()),
            )
            .max_decoding_message_size(1 << 20),
        )
        .add_service(
            classgrid_proto::v1::peering_service_server::PeeringServiceServer::new(
                grpc::federation::Peerings(app.clone()),
            )
            .max_decoding_message_size(1 << 20),
        )
        .add_service(
            classgrid_proto::v1::timetable_service_server::TimetableServiceServer::new(
                grpc::timetable::TimetableApi(app.clone()),
            )
            // A district's sheet (2,000 rows) is well under 1 MiB; its
            // answer, every occurrence of every row, is what is large.
            .max_decoding_message_size(4 << 20),
        )
        .add_service(
            classgrid_proto::v1::voucher_service_server::VoucherServiceServer::new(
                grpc::voucher::Vouchers(app.clone()),
            )
            .max_decoding_message_size(1 << 20),
        )
        .serve_with_incoming_shutdown(
            // Agents' connections relayed by site edges are served beside
            // the accepted sockets, TLS and all.
            crate::relay::conn::incoming(s.grpc, relayed),
            async move {
                let _ = stop.wait_for(|v| *v).await;
            },
        );
    if let Some(l) = app.leader.get() {
        leader::keep(s.lease_store.clone(), &app.cfg, l, shutdown.clone());
    }
    let http_server = crate::api::serve::serve_router(
        http::router(app.clone()),
        app.tls
            .as_ref()
            .map(|t| (t.cert_pem.clone(), t.key_pem.clone())),
        s.http,
        shutdown.clone(),
    );
    let clock = tokio::spawn(clock::run(app.clone(), shutdown.clone()));
    crate::federation::start(&app, shutdown.clone());
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
