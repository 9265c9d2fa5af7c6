//! A throwaway database for one benchmark run on the local PostgreSQL,
//! shared by the storm and failover benches.

use sqlx::{Connection, Executor};

pub(crate) async fn create_database(server_url: &str) -> anyhow::Result<(String, String)> {
    let name = format!("classgrid_storm_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(server_url)
        .await
        .map_err(|e| anyhow::anyhow!("--database-url: cannot reach PostgreSQL: {e}"))?;
    c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    let base = server_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or_else(|| server_url.to_string());
    Ok((format!("{base}/{name}"), name))
}

pub(crate) async fn drop_database(server_url: &str, name: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(server_url).await {
        let _ = c
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await;
    }
}
