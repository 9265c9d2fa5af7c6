//! Booking a series: every occurrence to come admitted against the calendar,
//! RTT, staging and the vouchers (each occurrence's own window, so a voucher
//! expiring mid-term pays only for those before its expiry), in one
//! transaction, under the caller's policy: all or nothing, or book what
//! fits and explain the rest (decision 097). A dry run decides the same and
//! writes nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use classgrid_placement::{Explanation, FilterCount};
use sqlx::Connection;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::booking_writes::{Rows, WriteMode};
use crate::{
    domain::ServiceError,
    reserve::{
        many::{Decisions, Item, WroteMany},
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
        let starts: Vec<DateTime<Utc>> = set
            .iter()
            .flat_map(|s| s.occurrences.iter().copied())
            .collect();
        let order = Order::of(set.iter().map(|s| s.occurrences.len()), &starts);
        // Lessons are named in the order they are written: their ids (time
        // ordered) then go to the end of each index on lesson id.
        let bookings = set.iter().flat_map(|s| s.bookings()).collect();
        let planned: Vec<Arc<BookingInput>> = order
            .planned(bookings)
            .into_iter()
            .map(|b| self.booking_input(b, now, Uuid::now_v7()))
            .collect::<Result<_, _>>()?;
        if dry_run {
            // Each occurrence is answered admitted or refused with what it
            // would hold; its seats and explanation are not built.
            let previews = self
                .preview_bookings(&planned, &order.prev, WriteMode::Preview)
                .await?;
            let mut outcomes = set
                .iter()
                .flat_map(|s| &s.occurrences)
                .zip(order.unplanned(previews))
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
        let items: Vec<Item> = planned.iter().map(|i| Item::of(i)).collect();
        let rtt = self.rtt_table();
        let w = self
            .reserver
            .reserve_streamed(&items, &order.prev, &rtt, BOOK_ATTEMPTS, |decisions| {
                self.write_set(set, policy, &planned, &order, decisions)
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

    /// The write of `reserve_streamed`: the occurrences' lessons and holds
    /// by the policy, a chunk at a time as they are planned (`planned` is
    /// the set's inputs in that order), then each series with a booked
    /// occurrence, with all its occurrences, all in one transaction. Under
    /// all-or-nothing, once one occurrence is refused (placement, quota or
    /// vouchers) nothing is committed, but the rest is still decided (and
    /// rolled back) so that the answer names every occurrence that would
    /// not fit. None, with nothing written, when the decisions stopped
    /// before the last occurrence (planning failed).
    async fn write_set(
        &self,
        set: &[SeriesRequest],
        policy: Policy,
        planned: &[Arc<BookingInput>],
        order: &Order,
        mut decisions: Decisions,
    ) -> sqlx::Result<Option<WroteMany<SetWrite>>> {
        let mut conn = self.store.acquire().await?;
        let mut tx = conn.begin().await?;
        let all = policy == Policy::AllOrNothing;
        let first = if all {
            WriteMode::Whole
        } else {
            WriteMode::Each
        };
        let schools: Vec<Uuid> = planned.iter().map(|i| i.site_id).collect();
        let mut locks = self.begin_bookings(&mut tx, &schools, first).await?;
        // Two stages in this task: the first takes the decisions as they
        // come and builds each chunk's rows on a blocking thread, the second
        // writes the chunks in order. PostgreSQL writes one chunk while the
        // next one's rows are built and the one after is planned.
        let (ready, chunks) = mpsc::channel::<Chunk>(2);
        let collect = async {
            let mut placed: Vec<Result<(), ServiceError>> = Vec::with_capacity(planned.len());
            // Under all or nothing, once a placement is refused nothing
            // will be committed: the rest is decided as a dry run.
            let mut refused = false;
            let mut chunk: Vec<BookingWrite> = Vec::with_capacity(CHUNK);
            loop {
                let next = decisions.recv().await;
                let ended = next.is_none();
                if let Some(d) = next {
                    let Some(input) = planned.get(placed.len()) else {
                        break;
                    };
                    match d {
                        Ok(admission) => {
                            chunk.push(BookingWrite {
                                input: input.clone(),
                                admission,
                            });
                            placed.push(Ok(()));
                        }
                        Err(e) => {
                            refused |= all;
                            placed.push(Err(ServiceError::Refused(Box::new(e))));
                        }
                    }
                    if chunk.len() < CHUNK {
                        continue;
                    }
                }
                if !chunk.is_empty() {
                    let ws = std::mem::take(&mut chunk);
                    let build = tokio::task::spawn_blocking(move || {
                        let rows = ws.iter().map(Rows::of).collect();
                        (ws, rows)
                    });
                    if ready.send(Chunk { build, refused }).await.is_err() {
                        // The write failed: its error is the answer.
                        break;
                    }
                }
                if ended {
                    break;
                }
            }
            drop(ready);
            placed
        };
        let write = async {
            // Owned here, so that a failed write drops it and the first
            // stage's next send fails instead of waiting on a full channel.
            let mut chunks = chunks;
            let mut refused_whole = false;
            let mut wrote = false;
            let mut written: Vec<Written> = Vec::with_capacity(planned.len());
            while let Some(c) = chunks.recv().await {
                let (ws, rows) = c.build.await.map_err(|e| {
                    sqlx::Error::Protocol(format!("building a chunk's rows stopped: {e}"))
                })?;
                refused_whole |= c.refused;
                let mode = match (all, refused_whole) {
                    (false, _) => WriteMode::Each,
                    (true, false) => WriteMode::Whole,
                    (true, true) => WriteMode::DryRun,
                };
                let refs: Vec<&BookingWrite> = ws.iter().collect();
                let (w, chunk_wrote) = self
                    .write_chunk(&mut tx, &mut locks, &refs, rows, mode)
                    .await?;
                // Under all or nothing, a quota or voucher refusal.
                refused_whole |= mode == WriteMode::Whole && !chunk_wrote;
                wrote |= chunk_wrote;
                written.extend(w);
            }
            Ok::<_, sqlx::Error>((written, wrote, refused_whole))
        };
        let (placed, wrote) = tokio::join!(collect, write);
        let (written, wrote, refused_whole) = wrote?;
        if placed.len() < planned.len() {
            tx.rollback().await?;
            return Ok(None);
        }
        // A placement refused after the last chunk was sent reached no
        // chunk: all or nothing still commits nothing.
        let placement_refused = all && placed.iter().any(Result::is_err);
        let commit = wrote && !refused_whole && !placement_refused;
        let mut written = written.into_iter();
        let mut started = Vec::new();
        let mut flat = Vec::with_capacity(placed.len());
        for (input, p) in planned.iter().zip(placed) {
            let start = input.b.start;
            let w: Written = match p {
                Err(e) => Err(e),
                Ok(()) => written
                    .next()
                    .unwrap_or_else(|| Err(ServiceError::Conflict("nothing was decided".into()))),
            };
            flat.push(match w {
                Ok(b) => {
                    if commit {
                        started.extend(b.started);
                    }
                    admitted(start, commit.then_some(b.view.lesson.id), b.held)
                }
                Err(e) => refused(start, &e),
            });
        }
        let committed: Vec<bool> = flat.iter().map(|o| o.lesson_id.is_some()).collect();
        let mut flat = order.unplanned(flat).into_iter();
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
        if commit {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(Some(WroteMany {
            answer: SetWrite {
                series: rows,
                outcomes,
                started,
            },
            committed,
        }))
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

/// A chunk of a set's bookings whose rows are being built, and whether a
/// placement of the set was refused up to its end (under all or nothing:
/// nothing will be committed).
struct Chunk {
    build: tokio::task::JoinHandle<(Vec<BookingWrite>, Vec<Rows>)>,
    refused: bool,
}

/// Occurrences written per chunk of a set: enough that a chunk's few
/// statements cost little beside its rows, few enough that the database
/// starts soon after planning does and finishes soon after it ends.
pub const SET_CHUNK: usize = 500;
const CHUNK: usize = SET_CHUNK;

/// The order a set's occurrences are planned and written in: by start
/// (series by series at the same start), so that each chunk of them spans a
/// few days and the capacity check of its reservations reads only those
/// days (decision 117). Answers come back in the set's order, series by
/// series.
struct Order {
    /// The set-order index of each occurrence, in planning order.
    flat: Vec<usize>,
    /// For each occurrence in planning order, where its series' previous
    /// occurrence is in that order.
    prev: Vec<Option<usize>>,
}

impl Order {
    /// `lengths`: each series' number of occurrences; `starts`: every
    /// occurrence's start, series by series.
    fn of(lengths: impl Iterator<Item = usize>, starts: &[DateTime<Utc>]) -> Self {
        let mut prev_flat: Vec<Option<usize>> = Vec::with_capacity(starts.len());
        for n in lengths {
            for k in 0..n {
                let i = prev_flat.len();
                prev_flat.push(k.checked_sub(1).map(|_| i - 1));
            }
        }
        let mut flat: Vec<usize> = (0..starts.len()).collect();
        flat.sort_by_key(|&i| (starts[i], i));
        let mut at = vec![0; starts.len()];
        for (p, &i) in flat.iter().enumerate() {
            at[i] = p;
        }
        let prev = flat
            .iter()
            .map(|&i| prev_flat.get(i).copied().flatten().map(|j| at[j]))
            .collect();
        Order { flat, prev }
    }

    /// `xs` (in the set's order) in planning order.
    fn planned<T>(&self, xs: Vec<T>) -> Vec<T> {
        let mut xs: Vec<Option<T>> = xs.into_iter().map(Some).collect();
        self.flat
            .iter()
            .filter_map(|&i| xs.get_mut(i).and_then(Option::take))
            .collect()
    }

    /// `xs` (in planning order) back in the set's order.
    fn unplanned<T>(&self, xs: Vec<T>) -> Vec<T> {
        let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(xs.len()).collect();
        for (&i, x) in self.flat.iter().zip(xs) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(x);
            }
        }
        out.into_iter().flatten().collect()
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_set_is_planned_by_start_and_answered_in_its_own_order() {
        let day = |d: u32, h: u32| Utc.with_ymd_and_hms(2027, 3, d, h, 0, 0).unwrap();
        // Series A: the 1st, 8th, 15th at 10:00; series B: the 1st at
        // 09:00 and at 10:00 (the same start as A's first), the 9th.
        let starts = [
            day(1, 10),
            day(8, 10),
            day(15, 10),
            day(1, 9),
            day(1, 10),
            day(9, 10),
        ];
        let order = Order::of([3, 3].into_iter(), &starts);
        // B1, then A1 and B2 at one start in the set's order, B3, A2, A3.
        assert_eq!(order.flat, vec![3, 0, 4, 1, 5, 2]);
        // Each points at its own series' previous occurrence, planned
        // before it: A2 at A1, B2 at B1, never across series.
        assert_eq!(
            order.prev,
            vec![None, None, Some(0), Some(1), Some(2), Some(3)]
        );
        for (p, prev) in order.prev.iter().enumerate() {
            assert!(prev.is_none_or(|q| q < p));
        }
        let names = ["A1", "A2", "A3", "B1", "B2", "B3"];
        let planned = order.planned(names.to_vec());
        assert_eq!(planned, vec!["B1", "A1", "B2", "A2", "B3", "A3"]);
        assert_eq!(order.unplanned(planned), names.to_vec());
    }
}
