//! Connecting to the broker from the context file, and turning errors into
//! messages and exit codes scripts can rely on.

use std::path::PathBuf;

use classgrid_common::context::{self, Context};
use tonic::transport::Channel;

#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Context file with the broker address and token.
    #[arg(long, global = true, env = "CLASSGRID_CONTEXT")]
    pub context: Option<PathBuf>,
    /// Broker gRPC URL; overrides the context file. Several URLs separated
    /// by commas (a region's replicas without a load balancer) are tried in
    /// turn, and the command goes to the first that serves.
    #[arg(
        long,
        visible_alias = "broker",
        global = true,
        env = "CLASSGRID_GRPC_URL",
        value_name = "URL[,URL...]"
    )]
    pub grpc_url: Option<String>,
    /// API token; overrides the context file.
    #[arg(long, global = true, env = "CLASSGRID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for the broker; overrides the context file.
    #[arg(long, global = true, env = "CLASSGRID_CA")]
    pub ca: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// Time zone in which times are shown (IANA name); the region's.
    #[arg(
        long,
        global = true,
        env = "CLASSGRID_TIME_ZONE",
        default_value = "Asia/Shanghai"
    )]
    pub time_zone: chrono_tz::Tz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Auth(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Ch = tonic::service::interceptor::InterceptedService<Channel, Auth>;

impl Global {
    /// The context file, flags and environment merged (flags win).
    pub fn context(&self) -> anyhow::Result<Context> {
        let path = self.context.clone().unwrap_or_else(context::default_path);
        let mut ctx = match Context::load(&path) {
            Ok(c) => c,
            Err(_) if !path.exists() => Context {
                grpc_url: "https://127.0.0.1:7443".into(),
                ..Default::default()
            },
            Err(e) => return Err(e),
        };
        if let Some(u) = &self.grpc_url {
            ctx.grpc_url = u.clone();
        }
        if let Some(t) = &self.token {
            ctx.token = t.clone();
        }
        if let Some(ca) = &self.ca {
            ctx.ca_file = ca.display().to_string();
        }
        if ctx.grpc_url.is_empty() {
            anyhow::bail!(
                "no broker address: give --grpc-url or run `classgrid up` to write {}",
                path.display()
            );
        }
        Ok(ctx)
    }

    pub async fn channel(&self) -> anyhow::Result<Ch> {
        let ctx = self.context()?;
        let ch = if ctx.grpc_url.contains(',') {
            first_serving(&ctx).await?
        } else {
            connect(&ctx, &ctx.grpc_url).await?
        };
        let token = if ctx.token.is_empty() {
            None
        } else {
            Some(
                format!("Bearer {}", ctx.token)
                    .parse()
                    .map_err(|_| input("--token: not a valid token"))?,
            )
        };
        Ok(tonic::service::interceptor::InterceptedService::new(
            ch,
            Auth(token),
        ))
    }
}

/// A connection to the broker at `url`, with the context's CA for https://.
async fn connect(ctx: &Context, url: &str) -> anyhow::Result<Channel> {
    let mut ep = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| input(format!("--grpc-url: `{url}` is not a URL: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        if ctx.ca_file.is_empty() {
            return Err(input(
                "the broker uses TLS: give --ca CA.pem (or ca_file in the context file)",
            ));
        }
        let ca = std::fs::read_to_string(&ctx.ca_file)
            .map_err(|e| input(format!("--ca {}: {e}", ctx.ca_file)))?;
        ep = ep.tls_config(classgrid_common::tls::client_config(url, &ca, None)?)?;
    }
    ep.connect().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        Unreachable(format!(
            "cannot reach the broker at {url}: {msg}. Is `classgrid up` running?"
        ))
        .into()
    })
}

/// The first broker of the context's list (decision 091) that serves, tried
/// in turn: a dead replica refuses the connection, and a standby closes it
/// at once (decision 078). A command is one try of each; retrying is the
/// caller's, as with one URL.
async fn first_serving(ctx: &Context) -> anyhow::Result<Channel> {
    let urls = classgrid_common::broker_list::parse("--grpc-url", &ctx.grpc_url)
        .map_err(|e| input(e.to_string()))?;
    let mut why = Vec::new();
    for url in &urls {
        match connect(ctx, url).await {
            Ok(ch) if url.starts_with("https://") || speaks_http2(url).await => return Ok(ch),
            Ok(_) => why.push(format!("{url}: closed the connection (a standby)")),
            Err(e) if e.downcast_ref::<InputError>().is_some() => return Err(e),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(Unreachable(format!(
        "no broker of {} serves: {}. Is the region's leader up?",
        ctx.grpc_url,
        why.join("; ")
    ))
    .into())
}

/// Whether the server at an http:// URL answers the HTTP/2 preface with a
/// frame. Over plain TCP the client's HTTP/2 handshake does not wait for
/// the server, so a standby, which accepts connections and closes them,
/// would otherwise be found out only by the command's own call. Over TLS
/// the handshake itself fails on a standby.
async fn speaks_http2(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let wait = std::time::Duration::from_secs(3);
    let probe = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await?;
        // The client preface and an empty SETTINGS frame; a server's first
        // frame is its own SETTINGS.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await?;
        let mut first = [0u8; 9];
        s.read_exact(&mut first).await?;
        Ok::<bool, std::io::Error>(first[3] == 0x04)
    };
    matches!(tokio::time::timeout(wait, probe).await, Ok(Ok(true)))
}

#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

pub fn describe(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return match s.code() {
            tonic::Code::InvalidArgument => format!("invalid: {}", s.message()),
            tonic::Code::NotFound => s.message().to_string(),
            tonic::Code::FailedPrecondition => s.message().to_string(),
            tonic::Code::Unavailable => format!("broker unavailable: {}", s.message()),
            tonic::Code::Unauthenticated => format!(
                "not authenticated: {} (give --token, or use the context file from `classgrid up`)",
                s.message()
            ),
            tonic::Code::PermissionDenied => format!("not allowed: {}", s.message()),
            tonic::Code::ResourceExhausted => s.message().to_string(),
            _ => format!("{:?}: {}", s.code(), s.message()),
        };
    }
    format!("{e:#}")
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => 6,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => 2,
            tonic::Code::NotFound => 3,
            tonic::Code::FailedPrecondition
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted => 4,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => 5,
            _ => 1,
        };
    }
    if e.downcast_ref::<Unreachable>().is_some() {
        return 5;
    }
    if e.downcast_ref::<InputError>().is_some() {
        return 2;
    }
    1
}

/// A bad flag value found by the client itself.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

pub fn input(msg: impl Into<String>) -> anyhow::Error {
    InputError(msg.into()).into()
}

#[cfg(test)]
mod broker_list_tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        g: super::Global,
    }

    fn global(args: &[&str]) -> super::Global {
        let mut argv = vec![
            "classgrid",
            "--context",
            "/nonexistent/classgrid-cli-test.toml",
        ];
        argv.extend(args);
        Cli::parse_from(argv).g
    }

    #[tokio::test]
    async fn a_bad_entry_in_the_broker_list_is_named_and_is_invalid_input() {
        for flag in ["--grpc-url", "--broker"] {
            let g = global(&[flag, "http://127.0.0.1:1,127.0.0.1:2"]);
            let e = g.channel().await.err().expect("refused");
            let msg = super::describe(&e);
            assert!(
                msg.starts_with("--grpc-url: entry 2 `127.0.0.1:2`"),
                "{msg}"
            );
            assert_eq!(super::exit_code(&e), 2, "{msg}");
        }
    }

    #[tokio::test]
    async fn a_list_of_dead_brokers_is_unreachable_and_names_each() {
        // Ports below 1024 that nothing on a test machine serves.
        let g = global(&["--grpc-url", "http://127.0.0.1:9,http://127.0.0.1:13"]);
        let e = g.channel().await.err().expect("nothing serves");
        let msg = super::describe(&e);
        assert_eq!(super::exit_code(&e), 5, "{msg}");
        assert!(
            msg.contains("http://127.0.0.1:9") && msg.contains("http://127.0.0.1:13"),
            "{msg}"
        );
    }
}
