//! A real HAProxy (Debian's) in front of several broker replicas, as a
//! district runs it: TCP mode, so gRPC, HTTP/2 and TLS pass untouched, and
//! an HTTP check of each replica's `/readyz`, so traffic goes only to the
//! leader. `on-marked-down shutdown-sessions` cuts the streams of a replica
//! that stops answering, so agents reconnect to the new leader at once.

use std::path::Path;

use crate::{Broker, Proc, free_port};

pub struct HaProxy {
    pub proc: Proc,
    /// Where platforms, agents and edges send gRPC.
    pub grpc_url: String,
    /// Where REST, the console and health checks go.
    pub http_url: String,
}

/// `haproxy`, or a clear word on how to get it.
fn program() -> std::path::PathBuf {
    for p in ["/usr/sbin/haproxy", "/usr/bin/haproxy"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("haproxy is missing: scripts/test.sh installs it (apt-get install haproxy)");
}

/// The backend's server lines: each replica's `port` for traffic, its HTTP
/// port for the check.
fn servers(replicas: &[&Broker], port: impl Fn(&Broker) -> u16) -> String {
    replicas
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "  server r{i} 127.0.0.1:{} check port {}\n",
                port(b),
                b.http_port()
            )
        })
        .collect()
}

impl HaProxy {
    pub fn start(replicas: &[&Broker], dir: &Path) -> Self {
        let (g, h) = (free_port(), free_port());
        let cfg = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n  timeout check 1s\n\
             \n  option redispatch\n  retries 3\n\
             frontend grpc\n  bind 127.0.0.1:{g}\n  default_backend brokers_grpc\n\
             frontend http\n  bind 127.0.0.1:{h}\n  default_backend brokers_http\n\
             backend brokers_grpc\n  option httpchk GET /readyz\n  http-check expect status 200\n\
             \n  default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions\n{}\
             backend brokers_http\n  option httpchk GET /readyz\n  http-check expect status 200\n\
             \n  default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions\n{}",
            servers(replicas, |b| b.grpc_port()),
            servers(replicas, |b| b.http_port()),
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).expect("haproxy config");
        let proc = Proc::spawn(
            &program(),
            &["-f".into(), file.display().to_string(), "-db".into()],
            dir.join("haproxy.log"),
            &[],
        );
        HaProxy {
            proc,
            grpc_url: format!("http://127.0.0.1:{g}"),
            http_url: format!("http://127.0.0.1:{h}"),
        }
    }
}
