//! How an agent or edge reaches the broker: straight to the host and port
//! of the broker's URL, or through its site edge's relay (`--relay
//! HOST:PORT`), which carries the TCP connection upstream untouched. TLS is
//! the same either way: the server name and the trusted CA come from the
//! broker's URL and the join, never from the relay, so a relay cannot stand
//! in for the broker.

use tonic::transport::{Channel, Endpoint};

/// `relay` must be `host:port`, as `--relay` documents.
pub fn check_relay(relay: &str) -> anyhow::Result<()> {
    let ok = relay.len() <= 300
        && relay.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if !ok {
        anyhow::bail!(
            "--relay: must be the site edge's relay address as host:port (such as 10.0.0.2:7481), not `{relay}`"
        );
    }
    Ok(())
}

/// The `host:port` a URL names, for dialling it directly.
pub fn host_port(url: &str) -> anyhow::Result<&str> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("broker URL `{url}` has no scheme"))?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// A TCP connection to `broker_url`'s host and port, or to the relay.
pub async fn tcp(broker_url: &str, relay: Option<&str>) -> anyhow::Result<tokio::net::TcpStream> {
    let (addr, what) = match relay {
        Some(r) => {
            check_relay(r)?;
            (r, "the site relay at")
        }
        None => (host_port(broker_url)?, "the broker at"),
    };
    tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {what} {addr}: {e}"))
}

/// Connects `ep` (with its TLS settings) directly, or over TCP to the relay.
pub async fn connect(ep: Endpoint, relay: Option<&str>) -> anyhow::Result<Channel> {
    let Some(relay) = relay else {
        return Ok(ep.connect().await?);
    };
    check_relay(relay)?;
    let addr = relay.to_string();
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let addr = addr.clone();
        async move {
            let s = tokio::net::TcpStream::connect(&addr).await?;
            // Nagle would hold back the small frames of the TLS handshake.
            let _ = s.set_nodelay(true);
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    });
    ep.connect_with_connector(connector).await.map_err(|e| {
        // tonic's own message is only "transport error"; the cause is
        // at the end of its sources.
        let mut cause: &dyn std::error::Error = &e;
        while let Some(s) = cause.source() {
            cause = s;
        }
        anyhow::anyhow!("cannot reach the broker through the site relay at {relay}: {cause}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_must_be_host_and_port() {
        for ok in ["10.0.0.2:7481", "edge.school.lan:7481", "[::1]:7481"] {
            assert!(check_relay(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.2",
            ":7481",
            "edge:0",
            "edge:99999",
            "http://edge:7481",
        ] {
            let e = check_relay(bad).unwrap_err().to_string();
            assert!(e.starts_with("--relay:") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn host_port_is_taken_from_the_url() {
        assert_eq!(
            host_port("https://broker.example:7443/x").unwrap(),
            "broker.example:7443"
        );
        assert!(host_port("broker:7443").is_err());
    }
}
