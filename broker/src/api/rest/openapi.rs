//! The OpenAPI 3 document, generated from the handlers and types: served
//! at `/openapi.json`, never written by hand.

use axum::{Json, http::StatusCode};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use super::{cost, events, fleet, jobs, lessons, model, problem, series, timetable, vouchers};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "classgrid course-platform API",
        description = "Book lessons for classes, get each seat's private link on the school's edge, submit ad-hoc jobs, \
            watch progress and cancel. Authenticate with `Authorization: Bearer cg_…`. Times are RFC 3339 with an offset; \
            answers use the region's time zone. Errors are RFC 9457 problem details. Send `Idempotency-Key` on every POST."
    ),
    paths(
        lessons::book, lessons::list, lessons::read, lessons::cancel, lessons::explain,
        lessons::pause_links, lessons::resume_links, lessons::control_seat, events::events,
        jobs::submit, jobs::list, jobs::read, jobs::cancel,
        fleet::sites, fleet::nodes, fleet::node, fleet::approve,
        vouchers::list, vouchers::issue, vouchers::balances, vouchers::ledger, vouchers::usage, vouchers::set_quota,
        series::book, series::list, series::read, series::cancel_occurrence, series::move_occurrence, series::end, series::change,
        timetable::template, timetable::import,
    ),
    components(schemas(
        problem::Problem, problem::Violation, problem::FilterRemoval,
        model::SeatSpec, model::GpuSpec, model::Workload, model::Dataset,
        lessons::BookLesson, lessons::Lesson, lessons::Seat, lessons::Rtt, lessons::LessonPage,
        lessons::Explanation, lessons::FilterCount, lessons::SeatChoice, lessons::ScorePart,
        lessons::LessonPreview, cost::VoucherCost, cost::VoucherTake,
        series::BookSeries, series::Series, series::SeriesBooking, series::SeriesList, series::Occurrence,
        series::MoveOccurrence, series::EndSeries, series::ChangeFuture,
        timetable::TimetableImport, timetable::TimetableRow,
        jobs::SubmitJob, jobs::Job, jobs::JobList,
        fleet::Site, fleet::SiteList, fleet::Node, fleet::NodeList, fleet::Device, fleet::ApprovedNode,
        vouchers::Voucher, vouchers::VoucherList, vouchers::IssueVoucher, vouchers::Balances, vouchers::SchoolBalanceOut,
        vouchers::Alert, vouchers::LedgerEntry, vouchers::LedgerPage, vouchers::UsageReport, vouchers::UsageRow, vouchers::Quota,
    )),
    tags(
        (name = "lessons", description = "Lessons booked for classes, their seats and links"),
        (name = "jobs", description = "Ad-hoc and batch work outside the timetable"),
        (name = "fleet", description = "Sites and nodes"),
        (name = "vouchers", description = "Compute vouchers, the ledger and usage"),
        (name = "series", description = "Recurring lessons over a term: book (or dry run), read, edit"),
        (name = "timetable", description = "A school's timetable from its spreadsheet: template, preview, import"),
    ),
    modifiers(&Common)
)]
pub struct ApiDoc;

/// The bearer scheme, and the error answers every operation may give.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cg_<id>_<secret>")
                    .description(Some("An API token from `classgrid tokens create`"))
                    .build(),
            ),
        );
        doc.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let errors = [
            (
                StatusCode::BAD_REQUEST,
                "Invalid input; `errors` names each field and rule",
            ),
            (StatusCode::UNAUTHORIZED, "Missing or invalid token"),
            (StatusCode::FORBIDDEN, "The token's role may not do this"),
            (
                StatusCode::NOT_FOUND,
                "Not found, or not visible to this token",
            ),
            (
                StatusCode::CONFLICT,
                "Refused by placement (see `filters`), or in the wrong state",
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit of the token; retry after Retry-After seconds",
            ),
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable; retry",
            ),
        ];
        let with_body = [
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "The body is larger than 1 MiB",
            ),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "The body is not JSON"),
        ];
        let response = |what: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(what)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                (&mut item.get, false),
                (&mut item.delete, false),
                (&mut item.post, true),
                (&mut item.put, true),
            ];
            for (op, has_body) in ops {
                let Some(op) = op.as_mut() else { continue };
                let extra: &[(StatusCode, &str)] = if has_body { &with_body } else { &[] };
                for (code, what) in errors.iter().chain(extra) {
                    op.responses
                        .responses
                        .entry(code.as_u16().to_string())
                        .or_insert_with(|| response(what));
                }
            }
        }
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_an_id_and_documents_its_errors() {
        let doc = ApiDoc::openapi();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.put, &item.delete]
                .into_iter()
                .flatten()
            {
                let id = op.operation_id.clone().unwrap_or_default();
                assert!(
                    !id.is_empty() && ids.insert(id.clone()),
                    "{path}: operation id `{id}` missing or repeated"
                );
                for code in ["400", "401", "404", "429"] {
                    assert!(
                        op.responses.responses.contains_key(code),
                        "{path} {id}: no {code}"
                    );
                }
            }
        }
        assert!(doc.paths.paths.contains_key("/v1/lessons/{id}/events"));
    }
}
