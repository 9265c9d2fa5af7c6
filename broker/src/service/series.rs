//! Booking a series: every occurrence to come admitted against the calendar,
//! RTT, staging and the vouchers (each occurrence's own window, so a voucher
//! expiring mid-term pays only for those before its expiry), in one
//! transaction, under the caller's policy: all or nothing, or book what
//! fits and explain the rest (decision 097). A dry run decides the same and
//! writes nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use classgrid_placement::{Admission, Explanation, FilterCount};
use sqlx::Connection;
use uuid::Uuid;

use super::booking_writes::WriteMode;
use crate::{
    domain::ServiceError,
    reserve::{
        many::{Item, WroteMany},
        queue::{BookingInput, BookingWrite, Written},
    },
    series::request::{Policy, RawSeries, SeriesRequest, parse_series},
    state::Broker,
    store::series::{self as store, NewOccurrence, OccurrenceRow, SeriesRow},
    vouchers::Held,
};

const BOOK_ATTEMPTS: usize = 8;

/// One occurrence's fate in a booking or its dry run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Where the rule put it.
    pub start: DateTime<Utc>,
    /// Booked, or (in a dry run, or when the set was not written) would be.
    pub admitted: bool,
    /// Its lesson, when booked.
    pub lesson_id: Option<Uuid>,
    /// Why not, when not admitted; why it was not written otherwise.
    pub reason: String,
    /// What it holds (or would hold) on the vouchers.
    pub held: Held,
}

impl Outcome {
    /// Its lesson's state as the booking left it: `booked`, or none.
    pub fn lesson_state(&self) -> &'static str {
        if self.lesson_id.is_some() {
            "booked"
        } else {
            ""
        }
    }
}

/// A series booking's answer.
#[derive(Debug, Clone)]
pub struct SeriesAnswer {
    /// The lesson's title (for a timetable: the class).
    pub title: String,
    /// The series as written; None for a dry run.
    pub series: Option<SeriesRow>,
    pub dry_run: bool,
    pub policy: Policy,
    pub occurrences: Vec<Outcome>,
    /// Occurrences of the term already past, not booked.
    pub past: usize,
    /// The term's cost: what the admitted occurrences hold, per voucher.
    pub held: Held,
}

impl SeriesAnswer {
    pub fn admitted(&self) -> usize {
        self.occurrences.iter().filter(|o| o.admitted).count()
    }
}

/// A series as kept: its rule and template, and each occurrence with its
/// lesson's start and state.
#[derive(Debug, Clone)]
pub struct SeriesView {
    pub series: SeriesRow,
    pub occurrences: Vec<OccurrenceRow>,
}

impl Broker {
    /// Books a series (or, with `dry_run`, decides it and writes nothing).
    /// Under all-or-nothing, or when no occurrence fits, a refusal names
    /// every occurrence that does not fit and why.
    pub async fn book_series(
        &self,
        raw: RawSeries,
        dry_run: bool,
    ) -> Result<SeriesAnswer, ServiceError> {
        let now = Utc::now();
        let s = parse_series(raw, now, &self.limits(), self.cfg.time_zone)?;
        // Tries with one request id take turns, so that a retry sent before
        // the first answer came waits for it, then answers with its series
        // (planned beside the first's holds, it would only be refused).
        let _turn = match (&s.request_id, dry_run) {
            (Some(rid), false) => Some(RequestTurn::take(rid).await),
            _ => None,
        };
        if !dry_run
            && let Some(rid) = &s.request_id
            && let Some(id) = self.store.series_by_request_id(rid).await?
        {
            return self.answer_of(id).await;
        }
        let policy = s.policy;
        let booked = self
            .book_set(std::slice::from_ref(&s), policy, dry_run, now)
            .await
            .and_then(|mut a| {
                a.pop()
                    .ok_or_else(|| ServiceError::Conflict("nothing was decided".into()))
            })
            .and_then(|a| match a.series {
                None if !dry_run => Err(ServiceError::Refused(Box::new(
                    self.refusal(std::slice::from_ref(&a), policy),
                ))),
                _ => Ok(a),
            });
        match (booked, s.request_id.as_deref()) {
            // A concurrent retry with the same request id won the race (its
            // holds refused this one, or the unique key did): answer with
            // its series, as for any retry.
            (Err(e), Some(rid)) if !dry_run => match self.store.series_by_request_id(rid).await? {
                Some(id) => self.answer_of(id).await,
                None => Err(e),
            },
            (booked, _) => booked,
        }
    }

    /// Books several series as one (a timetable), or decides them in a
    /// dry run: every occurrence of every series in one transaction, under
    /// one policy for the whole set. One answer per series, in order; a
    /// series with no occurrence booked has no row.
    pub(crate) async fn book_set(
        &self,
        set: &[SeriesRequest],
        policy: Policy,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<SeriesAnswer>, ServiceError> {
        let mut inputs: Vec<Arc<BookingInput>> = Vec::new();
        for s in set {
            for b in s.bookings() {
                inputs.push(self.booking_input(b, now, Uuid::now_v7())?);
            }
        }
        if dry_run {
            // Each occurrence is answered admitted or refused with what it
            // would hold; its seats and explanation are not built.
            let previews = self.preview_bookings(&inputs, WriteMode::Preview).await?;
            let mut outcomes =
                set.iter()
                    .flat_map(|s| &s.occurrences)
                    .zip(previews)
                    .map(|(start, p)| match p {
                        Ok(p) => admitted(*start, None, p.held),
                        Err(e) => refused(*start, &e),
                    });
            return Ok(set
                .iter()
                .map(|s| {
                    let mine = outcomes.by_ref().take(s.occurrences.len()).collect();
                    self.answer(s, None, true, mine)
                })
                .collect());
        }
        let items: Vec<Item> = inputs.iter().map(|i| Item::of(i)).collect();
        let rtt = self.rtt_table();
        let w = self
            .reserver
            .reserve_many(&items, &[], &rtt, BOOK_ATTEMPTS, |decisions| {
                self.write_set(set, policy, &inputs, decisions)
            })
            .await?
            .ok_or_else(|| {
                ServiceError::Conflict(
                    "capacity kept changing under concurrent bookings; retry".into(),
                )
            })?;
        if !w.started.is_empty() {
            // Datasets are the template's, one set per series; an occurrence
            // that starts as it is booked has nothing to stage (it would not
            // have started), so none are needed here.
            self.send_seat_assignments(&w.started, &[]);
        }
        for id in w.outcomes.iter().flatten().filter_map(|o| o.lesson_id) {
            self.lesson_changed(id);
        }
        if w.series.iter().any(Option::is_some) {
            self.clock.notify_one();
        }
        Ok(set
            .iter()
            .zip(w.series)
            .zip(w.outcomes)
            .map(|((s, row), outcomes)| self.answer(s, row, false, outcomes))
            .collect())
    }

    /// The write of `reserve_many`: the occurrences' lessons and holds by
    /// the policy, and each series with a booked occurrence, with all its
    /// occurrences, in one transaction. Under all-or-nothing with a
    /// placement refusal nothing is written, but the vouchers are still
    /// decided (and rolled back) so that the answer names every occurrence
    /// that would not fit.
    async fn write_set(
        &self,
        set: &[SeriesRequest],
        policy: Policy,
        inputs: &[Arc<BookingInput>],
        decisions: Vec<Result<Admission, Explanation>>,
    ) -> sqlx::Result<WroteMany<SetWrite>> {
        let placement_refused = decisions.iter().any(Result::is_err);
        let mode = match (policy, placement_refused) {
            (Policy::AllOrNothing, true) => WriteMode::DryRun,
            (Policy::AllOrNothing, false) => WriteMode::Whole,
            (Policy::BookWhatFits, _) => WriteMode::Each,
        };
        let mut writes = Vec::new();
        let mut placed: Vec<Result<(), ServiceError>> = Vec::with_capacity(decisions.len());
        for (input, d) in inputs.iter().zip(decisions) {
            match d {
                Ok(admission) => {
                    writes.push(BookingWrite {
                        input: input.clone(),
                        admission,
                    });
                    placed.push(Ok(()));
                }
                Err(e) => placed.push(Err(ServiceError::Refused(Box::new(e)))),
            }
        }
        let refs: Vec<&BookingWrite> = writes.iter().collect();
        let mut conn = self.store.acquire().await?;
        let mut tx = conn.begin().await?;
        let (written, wrote) = if refs.is_empty() {
            (Vec::new(), false)
        } else {
            self.write_bookings_in(&mut tx, &refs, mode).await?
        };
        let mut written = written.into_iter();
        let mut started = Vec::new();
        let mut flat = Vec::with_capacity(placed.len());
        let starts = set.iter().flat_map(|s| &s.occurrences);
        for (start, p) in starts.zip(placed) {
            let w: Written = match p {
                Err(e) => Err(e),
                Ok(()) => written
                    .next()
                    .unwrap_or_else(|| Err(ServiceError::Conflict("nothing was decided".into()))),
            };
            flat.push(match w {
                Ok(b) => {
                    started.extend(b.started);
                    admitted(*start, wrote.then_some(b.view.lesson.id), b.held)
                }
                Err(e) => refused(*start, &e),
            });
        }
        let committed: Vec<bool> = flat.iter().map(|o| o.lesson_id.is_some()).collect();
        let mut flat = flat.into_iter();
        let outcomes: Vec<Vec<Outcome>> = set
            .iter()
            .map(|s| flat.by_ref().take(s.occurrences.len()).collect())
            .collect();
        let mut rows = Vec::with_capacity(set.len());
        for (s, outcomes) in set.iter().zip(&outcomes) {
            if !outcomes.iter().any(|o| o.lesson_id.is_some()) {
                rows.push(None);
                continue;
            }
            let row = self.series_row(s, Uuid::now_v7());
            store::insert_series(&mut tx, &row).await?;
            let occurrences: Vec<NewOccurrence> = outcomes
                .iter()
                .map(|o| NewOccurrence {
                    rule_start: o.start,
                    lesson_id: o.lesson_id,
                    reason: &o.reason,
                })
                .collect();
            store::insert_occurrences(&mut tx, row.id, &occurrences).await?;
            rows.push(Some(row));
        }
        if wrote {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
            started.clear();
        }
        Ok(WroteMany {
            answer: SetWrite {
                series: rows,
                outcomes,
                started,
            },
            committed,
        })
    }

    fn series_row(&self, s: &SeriesRequest, id: Uuid) -> SeriesRow {
        let site = self.fleet.site(&s.lesson.school_site);
        SeriesRow {
            id,
            request_id: s.request_id.clone(),
            school_site_id: site.as_ref().map(|x| x.id).unwrap_or_default(),
            school_site: site.map(|x| x.name).unwrap_or_default(),
            title: s.lesson.title.clone(),
            rrule: s.rule.rrule.clone(),
            time_zone: self.cfg.time_zone.name().to_string(),
            start_time: s.rule.start_time,
            duration_s: s.rule.duration.num_seconds() as i32,
            term_start: s.rule.term_start,
            term_end: s.rule.term_end,
            exception_dates: s.rule.exceptions.clone(),
            template: sqlx::types::Json(s.template()),
            policy: s.policy.as_str().to_string(),
            ended_at: None,
            created_at: crate::store::lessons::stored(Utc::now()),
        }
    }

    fn answer(
        &self,
        s: &SeriesRequest,
        series: Option<SeriesRow>,
        dry_run: bool,
        occurrences: Vec<Outcome>,
    ) -> SeriesAnswer {
        let held = Held::sum(occurrences.iter().filter(|o| o.admitted).map(|o| &o.held));
        SeriesAnswer {
            title: s.lesson.title.clone(),
            series,
            dry_run,
            policy: s.policy,
            occurrences,
            past: s.past,
            held,
        }
    }

    /// A series booked earlier with the same request id, answered as booked.
    async fn answer_of(&self, id: Uuid) -> Result<SeriesAnswer, ServiceError> {
        let v = self.series(id).await?;
        let occurrences = v
            .occurrences
            .iter()
            .map(|o| Outcome {
                start: o.rule_start,
                admitted: o.lesson_id.is_some(),
                lesson_id: o.lesson_id,
                reason: o.reason.clone(),
                held: Held::default(),
            })
            .collect();
        Ok(SeriesAnswer {
            title: v.series.title.clone(),
            policy: Policy::parse(&v.series.policy).unwrap_or(Policy::AllOrNothing),
            series: Some(v.series),
            dry_run: false,
            occurrences,
            past: 0,
            held: Held::default(),
        })
    }

    /// Why a series (or a timetable) was not booked: one line per
    /// occurrence that does not fit, in the region's time, with its series'
    /// title when there are several.
    pub(crate) fn refusal(&self, answers: &[SeriesAnswer], policy: Policy) -> Explanation {
        let tz = self.cfg.time_zone;
        let mut filters = Vec::new();
        let mut total = 0;
        for a in answers {
            total += a.occurrences.len();
            for o in a.occurrences.iter().filter(|o| !o.admitted) {
                let title = if answers.len() > 1 {
                    format!("{} ", a.title)
                } else {
                    String::new()
                };
                filters.push(FilterCount {
                    filter: "series",
                    removed: 0,
                    detail: format!(
                        "{title}{}: {}",
                        o.start.with_timezone(&tz).format("%F %R"),
                        o.reason
                    ),
                });
            }
        }
        let rule = match policy {
            Policy::AllOrNothing => "all or nothing, so none was booked",
            Policy::BookWhatFits => "none was booked",
        };
        Explanation {
            nodes_considered: 0,
            summary: format!(
                "{} of {total} occurrences cannot be booked; {rule}",
                filters.len()
            ),
            filters,
        }
    }

    pub async fn series(&self, id: Uuid) -> Result<SeriesView, ServiceError> {
        let series = self
            .store
            .get_series(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("series {id}")))?;
        let occurrences = self.store.occurrences_of(id).await?;
        Ok(SeriesView {
            series,
            occurrences,
        })
    }
}

/// One request id's turn at booking a series, in this broker (only the
/// leader books, decision 078).
struct RequestTurn {
    rid: String,
    turn: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

type Turns = std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

fn turns() -> &'static Turns {
    static TURNS: std::sync::OnceLock<Turns> = std::sync::OnceLock::new();
    TURNS.get_or_init(Default::default)
}

impl RequestTurn {
    async fn take(rid: &str) -> Self {
        let turn = turns()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(rid.to_string())
            .or_default()
            .clone();
        let guard = turn.clone().lock_owned().await;
        RequestTurn {
            rid: rid.to_string(),
            turn,
            _guard: guard,
        }
    }
}

impl Drop for RequestTurn {
    fn drop(&mut self) {
        let mut map = turns().lock().unwrap_or_else(|p| p.into_inner());
        // The map's and this one's: nobody else waits for this id.
        if Arc::strong_count(&self.turn) <= 3
            && map
                .get(&self.rid)
                .is_some_and(|t| Arc::ptr_eq(t, &self.turn))
        {
            map.remove(&self.rid);
        }
    }
}

/// What `write_set` made: per series, its row (None when none of it was
/// written) and every occurrence's outcome; and the assignments of any
/// occurrence that started as it was booked.
pub struct SetWrite {
    series: Vec<Option<SeriesRow>>,
    outcomes: Vec<Vec<Outcome>>,
    started: Vec<crate::store::assignments::AssignmentRow>,
}

pub(super) fn admitted(start: DateTime<Utc>, lesson_id: Option<Uuid>, held: Held) -> Outcome {
    Outcome {
        start,
        admitted: true,
        lesson_id,
        reason: String::new(),
        held,
    }
}

pub(super) fn refused(start: DateTime<Utc>, e: &ServiceError) -> Outcome {
    let reason = match e {
        ServiceError::Refused(x) if !x.filters.is_empty() => {
            let details: Vec<&str> = x
                .filters
                .iter()
                .filter(|f| !f.detail.is_empty())
                .map(|f| f.detail.as_str())
                .collect();
            if details.is_empty() || details.iter().all(|d| *d == x.summary) {
                x.summary.clone()
            } else {
                format!("{} ({})", x.summary, details.join("; "))
            }
        }
        ServiceError::Refused(x) => x.summary.clone(),
        other => other.to_string(),
    };
    Outcome {
        start,
        admitted: false,
        lesson_id: None,
        reason,
        held: Held::default(),
    }
}
