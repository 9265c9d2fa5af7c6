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
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Global {
    pub fn grpc_url(&self) -> anyhow::Result<String> {
        if let Some(u) = &self.grpc_url {
            return Ok(u.clone());
        }
        let path = self.context.clone().unwrap_or_else(context::default_path);
        match Context::load(&path) {
            Ok(c) if !c.grpc_url.is_empty() => Ok(c.grpc_url),
            Ok(_) => anyhow::bail!("context file {} has no grpc_url", path.display()),
            Err(_) if !path.exists() => Ok("http://127.0.0.1:7443".into()),
            Err(e) => Err(e),
        }
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let url = self.grpc_url()?;
        let ch = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("--grpc-url: `{url}` is not a URL: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                Unreachable(format!(
                    "cannot reach the broker at {url}: {e}. Is `classgrid up` running?"
                ))
            })?;
        Ok(ch)
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
            _ => format!("{:?}: {}", s.code(), s.message()),
        };
    }
    format!("{e:#}")
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return match s.code() {
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
