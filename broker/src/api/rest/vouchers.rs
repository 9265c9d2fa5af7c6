//! Vouchers, balances, the ledger and usage reports (CSV too), through the
//! same scoped service calls as gRPC's VoucherService.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    extract::{JsonBody, Params, idempotency_key, parse_time},
    model::rfc3339,
    problem::{ApiResult, Problem},
};
use crate::{
    auth::Caller,
    service::vouchers::{RawLedgerQuery, RawVoucher, SchoolBalance},
    state::App,
    store::vouchers::{LedgerRow, VoucherRow},
    vouchers::{hours_f64, report},
};

type RawQuery = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/vouchers", get(list).post(issue))
        .route("/v1/vouchers/balances", get(balances))
        .route("/v1/vouchers/ledger", get(ledger))
        .route("/v1/usage", get(usage))
        .route("/v1/schools/{school}/quota", put(set_quota))
}

/// Accelerator-hours granted by a district to a school.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Voucher {
    pub id: Uuid,
    pub school_site: String,
    pub programme: String,
    pub issued_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub valid_from: String,
    #[schema(value_type = String, format = DateTime)]
    pub valid_until: String,
    /// Node classes it may pay for (edge, cloud); empty means any.
    pub tiers: Vec<String>,
    /// Sites it may pay for; empty means any.
    pub site_ids: Vec<Uuid>,
    pub issued_hours: f64,
    pub held_hours: f64,
    pub charged_hours: f64,
    pub expired_hours: f64,
    pub balance_hours: f64,
    /// Exact balance in millionths of an accelerator-hour.
    pub balance_micro_hours: i64,
    pub expired: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoucherList {
    pub vouchers: Vec<Voucher>,
}

/// A voucher to issue (district admins). Send `Idempotency-Key`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"school_site": "school-a", "programme": "AI 101 autumn", "accelerator_hours": 500.0,
    "valid_until": "2031-01-31T23:59:59+08:00", "tiers": ["edge"]}))]
pub struct IssueVoucher {
    #[serde(default)]
    pub school_site: String,
    #[serde(default)]
    pub programme: String,
    /// Who issued it, for the record; empty means the caller.
    #[serde(default)]
    pub issued_by: String,
    #[serde(default)]
    pub accelerator_hours: f64,
    /// RFC 3339; empty means now.
    #[schema(value_type = String, format = DateTime)]
    #[serde(default)]
    pub valid_from: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(default)]
    pub valid_until: String,
    #[serde(default)]
    pub tiers: Vec<String>,
    #[serde(default)]
    pub sites: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    /// low_balance or expiring_soon.
    pub kind: String,
    pub school_site: String,
    pub voucher_id: Uuid,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SchoolBalanceOut {
    pub school_site: String,
    pub issued_hours: f64,
    pub held_hours: f64,
    pub charged_hours: f64,
    pub expired_hours: f64,
    pub balance_hours: f64,
    pub balance_micro_hours: i64,
    /// 0 means no quota.
    pub max_concurrent_seats: i32,
    pub vouchers: Vec<Voucher>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Balances {
    pub schools: Vec<SchoolBalanceOut>,
    pub alerts: Vec<Alert>,
}

/// One metered use or grant, charged against a voucher.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: i64,
    pub voucher_id: Uuid,
    pub school_site: String,
    /// issue, hold, charge, release or expiry.
    pub kind: String,
    pub accelerator_hours: f64,
    pub micro_hours: i64,
    #[schema(nullable)]
    pub lesson_id: Option<Uuid>,
    #[schema(nullable)]
    pub job_id: Option<Uuid>,
    #[schema(nullable)]
    pub node_class: Option<String>,
    #[schema(nullable)]
    pub metered_slice_seconds: Option<f64>,
    #[schema(value_type = String, format = DateTime)]
    pub at: String,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    /// Pass as `after_id` for the next page; 0 on the last.
    pub next_after_id: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageRow {
    /// School name, voucher id, `YYYY-MM` or node class.
    pub key: String,
    pub label: String,
    pub charged_hours: f64,
    pub charged_micro_hours: i64,
    pub metered_slice_seconds: f64,
    pub lessons: i64,
    pub jobs: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageReport {
    /// school, voucher, month or node_class.
    pub by: String,
    pub rows: Vec<UsageRow>,
    pub total_charged_hours: f64,
    pub total_charged_micro_hours: i64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"max_concurrent_seats": 90}))]
pub struct Quota {
    /// Most seats the school may hold at once; 0 removes the quota.
    #[serde(default)]
    pub max_concurrent_seats: i64,
}

fn voucher(app: &App, v: &VoucherRow) -> Voucher {
    let tz = app.cfg.time_zone;
    Voucher {
        id: v.id,
        school_site: v.school_site.clone(),
        programme: v.programme.clone(),
        issued_by: v.issued_by.clone(),
        valid_from: rfc3339(v.valid_from, tz),
        valid_until: rfc3339(v.valid_until, tz),
        tiers: v.tiers.clone(),
        site_ids: v.site_ids.clone(),
        issued_hours: hours_f64(v.issued_uah),
        held_hours: hours_f64(v.held_uah),
        charged_hours: hours_f64(v.charged_uah),
        expired_hours: hours_f64(v.expired_uah),
        balance_hours: hours_f64(v.balance_uah),
        balance_micro_hours: v.balance_uah,
        expired: v.expired,
        created: rfc3339(v.created_at, tz),
    }
}

fn school(app: &App, s: &SchoolBalance) -> SchoolBalanceOut {
    SchoolBalanceOut {
        school_site: s.school.name.clone(),
        issued_hours: hours_f64(s.issued_uah),
        held_hours: hours_f64(s.held_uah),
        charged_hours: hours_f64(s.charged_uah),
        expired_hours: hours_f64(s.expired_uah),
        balance_hours: hours_f64(s.balance_uah),
        balance_micro_hours: s.balance_uah,
        max_concurrent_seats: s.max_concurrent_seats.unwrap_or(0),
        vouchers: s.vouchers.iter().map(|v| voucher(app, v)).collect(),
    }
}

fn entry(app: &App, e: &LedgerRow) -> LedgerEntry {
    LedgerEntry {
        id: e.id,
        voucher_id: e.voucher_id,
        school_site: e.school_site.clone(),
        kind: e.kind.clone(),
        accelerator_hours: hours_f64(e.amount_uah),
        micro_hours: e.amount_uah,
        lesson_id: e.lesson_id,
        job_id: e.job_id,
        node_class: e.node_class.clone(),
        metered_slice_seconds: e.metered_slice_seconds,
        at: rfc3339(e.at, app.cfg.time_zone),
        note: e.note.clone(),
    }
}

/// Vouchers of the caller's schools.
#[utoipa::path(get, operation_id = "list_vouchers", path = "/v1/vouchers", tag = "vouchers",
    params(("school" = Option<String>, Query, description = "School site name or id"),
           ("include_expired" = Option<bool>, Query, description = "Also expired and used-up vouchers")),
    responses((status = 200, description = "Vouchers", body = VoucherList)))]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    q: RawQuery,
) -> ApiResult<Json<VoucherList>> {
    let p = Params::from_query(q, &["school", "include_expired"])?;
    let vs = app
        .scoped(&caller)
        .list_vouchers(&p.str("school"), p.bool("include_expired")?)
        .await?;
    Ok(Json(VoucherList {
        vouchers: vs.iter().map(|v| voucher(&app, v)).collect(),
    }))
}

/// Issue a voucher to a school (district admins).
#[utoipa::path(post, operation_id = "issue_voucher", path = "/v1/vouchers", tag = "vouchers", request_body = IssueVoucher,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first result")),
    responses((status = 201, description = "Issued", body = Voucher)))]
pub async fn issue(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(b): JsonBody<IssueVoucher>,
) -> ApiResult<(StatusCode, Json<Voucher>)> {
    let opt_time = |field: &str, s: &str| {
        if s.is_empty() {
            Ok(None)
        } else {
            parse_time(field, s).map(Some)
        }
    };
    let raw = RawVoucher {
        request_id: idempotency_key(&headers)?,
        school_site: b.school_site,
        programme: b.programme,
        issued_by: if b.issued_by.trim().is_empty() {
            caller.actor.clone()
        } else {
            b.issued_by
        },
        accelerator_hours: b.accelerator_hours,
        valid_from: opt_time("valid_from", &b.valid_from)?,
        valid_until: opt_time("valid_until", &b.valid_until)?,
        tiers: b.tiers,
        sites: b.sites,
    };
    let v = app.scoped(&caller).issue_voucher(raw).await?;
    Ok((StatusCode::CREATED, Json(voucher(&app, &v))))
}

/// Balances per school, with low-balance and expiring-soon alerts.
#[utoipa::path(get, operation_id = "get_balances", path = "/v1/vouchers/balances", tag = "vouchers",
    params(("school" = Option<String>, Query, description = "School site name or id")),
    responses((status = 200, description = "Balances", body = Balances)))]
pub async fn balances(
    State(app): State<App>,
    caller: Caller,
    q: RawQuery,
) -> ApiResult<Json<Balances>> {
    let p = Params::from_query(q, &["school"])?;
    let b = app
        .scoped(&caller)
        .voucher_balances(&p.str("school"))
        .await?;
    Ok(Json(Balances {
        schools: b.schools.iter().map(|s| school(&app, s)).collect(),
        alerts: b
            .alerts
            .iter()
            .map(|a| Alert {
                kind: a.kind.to_string(),
                school_site: a.school.clone(),
                voucher_id: a.voucher_id,
                message: a.message.clone(),
            })
            .collect(),
    }))
}

/// The ledger, oldest first, a page at a time.
#[utoipa::path(get, operation_id = "list_ledger", path = "/v1/vouchers/ledger", tag = "vouchers",
    params(
        ("school" = Option<String>, Query, description = "School site name or id"),
        ("voucher_id" = Option<String>, Query, format = Uuid),
        ("lesson_id" = Option<String>, Query, format = Uuid),
        ("job_id" = Option<String>, Query, format = Uuid),
        ("kind" = Option<String>, Query, description = "issue, hold, charge, release or expiry; comma-separated"),
        ("from" = Option<String>, Query, format = DateTime),
        ("to" = Option<String>, Query, format = DateTime),
        ("after_id" = Option<i64>, Query, minimum = 0, description = "From the previous page's next_after_id"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Default 100"),
    ),
    responses((status = 200, description = "A page of ledger entries", body = LedgerPage)))]
pub async fn ledger(
    State(app): State<App>,
    caller: Caller,
    q: RawQuery,
) -> ApiResult<Json<LedgerPage>> {
    let p = Params::from_query(
        q,
        &[
            "school",
            "voucher_id",
            "lesson_id",
            "job_id",
            "kind",
            "from",
            "to",
            "after_id",
            "page_size",
        ],
    )?;
    let page_size = p.int("page_size", 100)?;
    let q = RawLedgerQuery {
        school_site: p.str("school"),
        voucher_id: p.str("voucher_id"),
        lesson_id: p.str("lesson_id"),
        job_id: p.str("job_id"),
        kinds: p
            .get("kind")
            .map(|k| k.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default(),
        from: p.time("from")?,
        to: p.time("to")?,
        after_id: p.int("after_id", 0)?,
        page_size,
    };
    let rows = app.scoped(&caller).voucher_ledger(q).await?;
    let next = if rows.len() as i64 == page_size {
        rows.last().map(|e| e.id).unwrap_or(0)
    } else {
        0
    };
    Ok(Json(LedgerPage {
        entries: rows.iter().map(|e| entry(&app, e)).collect(),
        next_after_id: next,
    }))
}

/// Charged accelerator-hours grouped by school, voucher, month or node
/// class; `format=csv` for a spreadsheet.
#[utoipa::path(get, operation_id = "usage_report", path = "/v1/usage", tag = "vouchers",
    params(
        ("by" = Option<String>, Query, description = "school (default), voucher, month or node_class"),
        ("school" = Option<String>, Query, description = "School site name or id"),
        ("from" = Option<String>, Query, format = DateTime),
        ("to" = Option<String>, Query, format = DateTime),
        ("format" = Option<String>, Query, description = "json (default) or csv"),
    ),
    responses((status = 200, description = "The report", content(
        (UsageReport = "application/json"),
        (String = "text/csv", example = "group,key,label,charged_accelerator_hours,charged_micro_hours,metered_slice_seconds,lessons,jobs\nschool,school-a,,1.5,1500000,5400.000,2,0\n")))))]
pub async fn usage(State(app): State<App>, caller: Caller, q: RawQuery) -> ApiResult<Response> {
    let p = Params::from_query(q, &["by", "school", "from", "to", "format"])?;
    let csv = match p.get("format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(Problem::field("format", "must be json or csv")),
    };
    let by = p.get("by").unwrap_or("school").to_string();
    let (group, rows) = app
        .scoped(&caller)
        .usage_report(&by, &p.str("school"), p.time("from")?, p.time("to")?)
        .await?;
    if csv {
        let disposition = format!(
            "attachment; filename=\"classgrid-usage-by-{}.csv\"",
            group.name()
        );
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            report::csv(group, &rows),
        )
            .into_response());
    }
    let total: i64 = rows.iter().map(|u| u.charged_uah).sum();
    Ok(Json(UsageReport {
        by: group.name().to_string(),
        rows: rows
            .iter()
            .map(|u| UsageRow {
                key: u.key.clone(),
                label: u.label.clone(),
                charged_hours: hours_f64(u.charged_uah),
                charged_micro_hours: u.charged_uah,
                metered_slice_seconds: u.metered_slice_seconds,
                lessons: u.lessons,
                jobs: u.jobs,
            })
            .collect(),
        total_charged_hours: hours_f64(total),
        total_charged_micro_hours: total,
    })
    .into_response())
}

/// Set a school's seat quota (district admins).
#[utoipa::path(put, operation_id = "set_quota", path = "/v1/schools/{school}/quota", tag = "vouchers", request_body = Quota,
    params(("school" = String, Path, description = "School site name or id")),
    responses((status = 200, description = "The quota now", body = Quota)))]
pub async fn set_quota(
    State(app): State<App>,
    caller: Caller,
    Path(school): Path<String>,
    JsonBody(b): JsonBody<Quota>,
) -> ApiResult<Json<Quota>> {
    let max = app
        .scoped(&caller)
        .set_quota(&school, b.max_concurrent_seats)
        .await?;
    Ok(Json(Quota {
        max_concurrent_seats: max.unwrap_or(0) as i64,
    }))
}
