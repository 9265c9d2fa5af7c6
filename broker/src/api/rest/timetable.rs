//! `/v1/timetable`: the downloadable template, and importing a timetable
//! sheet (CSV, or an .xlsx workbook's first sheet) as one set of series, or
//! its dry run (the preview).

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    cost::VoucherCost,
    extract::Params,
    problem::{ApiResult, Problem},
    series::{SeriesBooking, booking},
};
use crate::{
    auth::Caller,
    domain::spec::Workload,
    service::timetable::TimetableAnswer,
    state::App,
    timetable::{
        sheet::{self, Upload},
        workbook,
    },
};

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/timetable/template", get(template))
        .route("/v1/timetable/import", post(import))
}

/// One row of the sheet: its class's series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimetableRow {
    /// The row's line in the file (the header is line 1).
    pub line: i32,
    pub class: String,
    pub series: SeriesBooking,
}

/// A timetable import's answer, or its dry run's (the preview).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimetableImport {
    pub dry_run: bool,
    pub policy: String,
    /// Occurrences of all rows.
    pub occurrences: i32,
    /// Booked (in a dry run: that fit).
    pub admitted: i32,
    pub refused: i32,
    /// The term's voucher cost.
    pub voucher_cost: VoucherCost,
    pub rows: Vec<TimetableRow>,
}

pub fn import_answer(app: &App, a: &TimetableAnswer) -> TimetableImport {
    let admitted = a.admitted() as i32;
    TimetableImport {
        dry_run: a.dry_run,
        policy: a.policy.as_str().into(),
        occurrences: a.occurrences() as i32,
        admitted,
        refused: a.occurrences() as i32 - admitted,
        voucher_cost: VoucherCost::of(&a.held),
        rows: a
            .rows
            .iter()
            .map(|(line, s)| TimetableRow {
                line: *line as i32,
                class: s.title.clone(),
                series: booking(app, s),
            })
            .collect(),
    }
}

/// The timetable template: CSV (UTF-8 with a byte-order mark, for
/// spreadsheets), headers in Chinese and English, one example row.
#[utoipa::path(get, operation_id = "timetable_template", path = "/v1/timetable/template", tag = "timetable",
    responses((status = 200, description = "The template", content_type = "text/csv", body = String)))]
pub async fn template() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"timetable-template.csv\"",
            ),
        ],
        format!("\u{feff}{}", sheet::template()),
    )
        .into_response()
}

/// Import a timetable sheet (CSV, or the first sheet of an .xlsx workbook;
/// the template's columns; at most 1 MiB): every row
/// checked first, and a file with a bad row books nothing (400, each bad cell
/// named `line N, column C` with its rule). Then every class's weekly series
/// is booked as one set under `policy`, or with `dry_run=true` decided and
/// nothing written: the preview, with each occurrence's outcome and the
/// term's voucher cost.
#[utoipa::path(post, operation_id = "import_timetable", path = "/v1/timetable/import", tag = "timetable",
    request_body(description = "The sheet, as the template: CSV (UTF-8), or an .xlsx workbook whose first sheet is read",
        content(
            (String = "text/csv"),
            ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        )),
    params(
        ("dry_run" = Option<bool>, Query, description = "Preview: decide, write nothing, hold nothing"),
        ("policy" = Option<String>, Query, description = "all_or_nothing (default) or book_what_fits"),
        ("command" = Option<String>, Query, description = "What every seat runs; `$(PORT)` is the seat's port. Not needed for runtime=notebook"),
        ("arg" = Option<Vec<String>>, Query, description = "The command's arguments, in order"),
    ),
    responses(
        (status = 201, description = "Booked", body = TimetableImport),
        (status = 200, description = "Dry run: the preview", body = TimetableImport),
    ))]
pub async fn import(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    let p = Params::from_query(q, &["dry_run", "policy", "command", "arg"])?;
    let dry_run = p.bool("dry_run")?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let file = if kind == workbook::MEDIA_TYPE {
        Upload::Xlsx(&body)
    } else if kind == "text/csv" || kind == "text/plain" {
        Upload::Csv(std::str::from_utf8(&body).map_err(|_| {
            Problem::field(
                "body",
                "must be UTF-8 text (save the sheet as CSV UTF-8, or send the .xlsx workbook as application/vnd.openxmlformats-officedocument.spreadsheetml.sheet)",
            )
        })?)
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "The body is not CSV or an .xlsx workbook",
            format!(
                "send the sheet as text/csv (UTF-8) or as an .xlsx workbook ({})",
                workbook::MEDIA_TYPE
            ),
        ));
    };
    let workload = Workload {
        command: p.str("command"),
        args: p.all("arg"),
        ..Default::default()
    };
    let a = app
        .scoped(&caller)
        .import_sheet(file, &workload, &p.str("policy"), dry_run)
        .await?;
    let code = if dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(import_answer(&app, &a))).into_response())
}
