//! What the dry-run and series tests share: a broker on a fresh database
//! (no clock, so lessons stay booked), a school
//! with T4 nodes, vouchers, and the database's own view of what was written.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use classgrid_broker::{
    app::App,
    domain::{lesson::RawBooking, spec::RawGpu},
    service::vouchers::RawVoucher,
};
use classgrid_proto::v1 as pb;
use uuid::Uuid;

use crate::common::TestDb;

pub struct Term {
    pub app: App,
    pub pool: sqlx::PgPool,
    pub db: TestDb,
}

/// A broker for `prefix`'s databases, with `school` and `nodes` nodes of
/// one T4 each (four quarter-T4 seats per node).
pub async fn term(prefix: &str, school: &str, nodes: usize) -> Term {
    let db = TestDb::new(prefix).await;
    let app = crate::common::broker(&db).await;
    app.create_site(school, "school", "d1").await.unwrap();
    for i in 0..nodes {
        t4_node(&app, school, &format!("t4-{i}")).await;
    }
    let pool = db.pool().await;
    Term { app, pool, db }
}

/// A node (edge tier, process runtime: the defaults) with one T4, attached
/// as an agent's session is.
async fn t4_node(app: &App, site: &str, name: &str) -> Uuid {
    let t4 = pb::DeviceInfo {
        vendor: "nvidia".into(),
        model: "Tesla T4".into(),
        memory_mib: 16 * 1024,
        healthy: true,
        max_slices: 64,
        isolation: pb::Isolation::Soft as i32,
        ..Default::default()
    };
    let cap = pb::NodeCapacity {
        cpu_millis: 16_000,
        memory_mib: 64 * 1024,
        devices: vec![t4],
    };
    crate::common::attached_node(app, site, name, cap).await
}

/// `seats` quarter-T4 seats for 40 minutes from `start`.
pub fn class(school: &str, start: DateTime<Utc>, seats: i64) -> RawBooking {
    let quarter_t4 = RawGpu {
        vendors: vec!["nvidia".into()],
        memory_mib: 2048,
        compute_percent: 25,
        count: 1,
        ..Default::default()
    };
    RawBooking {
        seats,
        ..crate::common::one_seat(school, "class 7-3", start, Some(quarter_t4))
    }
}

/// A voucher of `hours` for `school`, valid until `until`.
pub async fn voucher(app: &App, school: &str, hours: f64, until: DateTime<Utc>) -> Uuid {
    app.issue_voucher(RawVoucher {
        school_site: school.into(),
        programme: "term".into(),
        issued_by: "district".into(),
        accelerator_hours: hours,
        valid_until: Some(until),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

/// Every table's row count, by name: what a dry run must leave as it was.
pub async fn row_counts(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{t}\"")))
                .fetch_one(pool)
                .await
                .unwrap();
        out.push((t, n));
    }
    out
}

/// The whole ledger: (voucher, kind, µAh, lesson) in order.
pub async fn ledger(pool: &sqlx::PgPool) -> Vec<(Uuid, String, i64, Option<Uuid>)> {
    sqlx::query_as("SELECT voucher_id, kind, amount_uah, lesson_id FROM voucher_ledger ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The µAh held for `lesson` on the ledger (a positive number).
pub async fn held_for(pool: &sqlx::PgPool, lesson: Uuid) -> i64 {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT -sum(amount_uah)::bigint FROM voucher_ledger WHERE lesson_id = $1 AND kind = 'hold'",
    )
    .bind(lesson)
    .fetch_one(pool)
    .await
    .unwrap();
    n.unwrap_or(0)
}
