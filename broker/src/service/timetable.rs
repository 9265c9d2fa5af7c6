//! Importing a school's (or a district's) timetable: every row of the sheet
//! validated first — a bad file books nothing, and every bad cell is named
//! by line and column — then all rows booked as one set of series, in one
//! transaction, under the caller's policy, or decided in a dry run.

use chrono::Utc;
use uuid::Uuid;

use super::series::SeriesAnswer;
use crate::{
    domain::{FieldError, ServiceError, spec::Workload},
    series::request::{Policy, SeriesRequest, parse_series},
    state::Broker,
    timetable::sheet::{self, Upload, cell_error, column_of},
    vouchers::Held,
};

/// A timetable import's answer: each row's series, and the term's cost.
pub struct TimetableAnswer {
    pub dry_run: bool,
    pub policy: Policy,
    /// (line in the file, its series' answer), in file order.
    pub rows: Vec<(usize, SeriesAnswer)>,
    pub held: Held,
}

impl TimetableAnswer {
    pub fn admitted(&self) -> usize {
        self.rows.iter().map(|(_, a)| a.admitted()).sum()
    }

    pub fn occurrences(&self) -> usize {
        self.rows.iter().map(|(_, a)| a.occurrences.len()).sum()
    }
}

impl Broker {
    /// Imports `text` (CSV, the template's columns), every seat running
    /// `workload`; schools must be ones `sees` admits.
    pub async fn import_timetable(
        &self,
        text: &str,
        workload: &Workload,
        policy: &str,
        dry_run: bool,
        sees: &(dyn Fn(Uuid) -> bool + Sync),
    ) -> Result<TimetableAnswer, ServiceError> {
        self.import_sheet(Upload::Csv(text), workload, policy, dry_run, sees)
            .await
    }

    /// Imports `file` (CSV, or an .xlsx workbook's first sheet; the
    /// template's columns), every seat running `workload`; schools must be
    /// ones `sees` admits.
    pub async fn import_sheet(
        &self,
        file: Upload<'_>,
        workload: &Workload,
        policy: &str,
        dry_run: bool,
        sees: &(dyn Fn(Uuid) -> bool + Sync),
    ) -> Result<TimetableAnswer, ServiceError> {
        let policy = Policy::parse(policy.trim()).ok_or_else(|| {
            ServiceError::field("policy", "must be all_or_nothing or book_what_fits")
        })?;
        let rows = sheet::read_upload(file, workload).map_err(ServiceError::Invalid)?;
        let now = Utc::now();
        let mut set: Vec<(usize, SeriesRequest)> = Vec::with_capacity(rows.len());
        let mut errors: Vec<FieldError> = Vec::new();
        for r in rows {
            let line = r.line;
            let school = r.series.lesson.school_site.clone();
            if !school.is_empty() && !self.fleet.site(&school).is_some_and(|s| sees(s.id)) {
                errors.push(cell_error(
                    line,
                    "school",
                    format!("unknown site `{school}`"),
                ));
                continue;
            }
            let cells = |fields: Vec<FieldError>| {
                fields.into_iter().map(move |f| {
                    cell_error(
                        line,
                        column_of(&f.field),
                        format!("{}: {}", f.field, f.rule),
                    )
                })
            };
            let mut s = match parse_series(r.series, now, &self.limits(), self.cfg.time_zone) {
                Ok(s) => s,
                Err(ServiceError::Invalid(fields)) => {
                    errors.extend(cells(fields));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // What no node of the region could ever hold is a bad cell too.
            match self.booking_input(s.lesson.clone(), now, Uuid::nil()) {
                Ok(_) => {}
                Err(ServiceError::Invalid(fields)) => {
                    errors.extend(cells(fields));
                    continue;
                }
                Err(e) => return Err(e),
            }
            s.policy = policy;
            set.push((line, s));
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let (lines, set): (Vec<usize>, Vec<SeriesRequest>) = set.into_iter().unzip();
        let answers = self.book_set(&set, policy, dry_run, now).await?;
        if !dry_run && answers.iter().all(|a| a.series.is_none()) {
            return Err(ServiceError::Refused(Box::new(
                self.refusal(&answers, policy),
            )));
        }
        let held = Held::sum(answers.iter().map(|a| &a.held));
        Ok(TimetableAnswer {
            dry_run,
            policy,
            rows: lines.into_iter().zip(answers).collect(),
            held,
        })
    }
}
