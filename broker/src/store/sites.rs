use sqlx::FromRow;
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, FromRow)]
pub struct SiteRow {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub district: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct EdgeRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// Creates the site, or returns the existing one of that name unchanged
    /// when kind and district agree (so setup scripts can be re-run).
    pub async fn create_site(
        &self,
        name: &str,
        kind: &str,
        district: &str,
    ) -> sqlx::Result<(SiteRow, bool)> {
        let inserted: Option<SiteRow> = sqlx::query_as(
            "INSERT INTO sites (id, name, kind, district) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING RETURNING id, name, kind, district",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(kind)
        .bind(district)
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(s) => Ok((s, true)),
            None => {
                let s =
                    sqlx::query_as("SELECT id, name, kind, district FROM sites WHERE name = $1")
                        .bind(name)
                        .fetch_one(&self.pool)
                        .await?;
                Ok((s, false))
            }
        }
    }

    pub async fn list_sites(&self) -> sqlx::Result<Vec<SiteRow>> {
        sqlx::query_as("SELECT id, name, kind, district FROM sites ORDER BY name")
            .fetch_all(&self.pool)
            .await
    }

    pub async fn upsert_edge(
        &self,
        site_id: Uuid,
        name: &str,
        version: &str,
    ) -> sqlx::Result<Uuid> {
        sqlx::query_scalar(
            "INSERT INTO edges (id, site_id, name, version, last_seen) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (site_id, name) DO UPDATE SET version = EXCLUDED.version, last_seen = now()
             RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(site_id)
        .bind(name)
        .bind(version)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn touch_edge(&self, id: Uuid) -> sqlx::Result<bool> {
        let r = sqlx::query("UPDATE edges SET last_seen = now() WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn list_edges(&self) -> sqlx::Result<Vec<EdgeRow>> {
        sqlx::query_as("SELECT id, site_id, name, last_seen FROM edges ORDER BY name")
            .fetch_all(&self.pool)
            .await
    }
}
