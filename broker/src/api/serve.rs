//! Serving an HTTP router on a bound listener, over TLS or plain: shared by
//! the leader's full router and a standby's health answers, so that the
//! standby (`leader`) needs nothing of the API layer.

use tokio::{net::TcpListener, sync::watch};

/// Serves `router` over TLS with the server certificate, or plain under
/// --insecure-dev, until `shutdown` turns true.
pub async fn serve_router(
    router: axum::Router,
    tls: Option<(String, String)>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut stop = shutdown;
    // Every request in a span that joins the caller's W3C trace context.
    let router = router.layer(axum::middleware::from_fn(
        crate::telemetry::trace::http_span,
    ));
    match tls {
        None => {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|v| *v).await;
            })
            .await
        }
        Some((cert_pem, key_pem)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                cert_pem.into_bytes(),
                key_pem.into_bytes(),
            )
            .await?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                let _ = stop.wait_for(|v| *v).await;
                h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            });
            axum_server::from_tcp_rustls(listener.into_std()?, config)?
                .handle(handle)
                .serve(router.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await
        }
    }
}
