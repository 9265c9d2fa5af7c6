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
    /// Broker gRPC URL; overrides the context file.
    #[arg(long, global = true, env = "CLASSGRID_GRPC_URL")]
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
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

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
        let url = ctx.grpc_url.clone();
        let mut ep = tonic::transport::Endpoint::from_shared(url.clone())
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
            ep = ep.tls_config(classgrid_common::tls::client_config(&url, &ca, None)?)?;
        }
        let ch = ep.connect().await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            Unreachable(format!(
                "cannot reach the broker at {url}: {msg}. Is `classgrid up` running?"
            ))
        })?;
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
