//! TimetableService: the template and the import (CSV, or an .xlsx
//! workbook told by its first bytes), through the same scoped call as
//! REST's `/v1/timetable/import`.

use classgrid_proto::v1::{self as pb, timetable_service_server::TimetableService};
use tonic::{Request, Response, Status};

use super::{convert, series::booking, status};
use crate::{
    auth::gate::caller,
    domain::ServiceError,
    state::App,
    timetable::sheet::{self, Upload},
};

pub struct TimetableApi(pub App);

#[tonic::async_trait]
impl TimetableService for TimetableApi {
    async fn template(
        &self,
        req: Request<pb::TimetableTemplateRequest>,
    ) -> Result<Response<pb::TimetableTemplate>, Status> {
        caller(&req)?;
        Ok(Response::new(pb::TimetableTemplate {
            csv: sheet::template(),
        }))
    }

    async fn import(
        &self,
        req: Request<pb::ImportTimetableRequest>,
    ) -> Result<Response<pb::TimetableImport>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        // An .xlsx workbook is told from CSV by its first bytes (a zip).
        let file = Upload::detect(&r.content).map_err(|_| {
            status(ServiceError::field(
                "content",
                "must be UTF-8 text (save the sheet as CSV UTF-8) or an .xlsx workbook",
            ))
        })?;
        let workload = convert::workload(r.workload.as_ref());
        let a = self
            .0
            .scoped(&c)
            .import_sheet(file, &workload, &r.policy, r.dry_run)
            .await
            .map_err(status)?;
        let admitted = a.admitted() as i32;
        Ok(Response::new(pb::TimetableImport {
            dry_run: a.dry_run,
            policy: a.policy.as_str().into(),
            occurrences: a.occurrences() as i32,
            admitted,
            refused: a.occurrences() as i32 - admitted,
            cost: Some(super::series::cost(&a.held)),
            rows: a
                .rows
                .iter()
                .map(|(line, s)| pb::TimetableRow {
                    line: *line as i32,
                    class: s.title.clone(),
                    series: Some(booking(s)),
                })
                .collect(),
        }))
    }
}
