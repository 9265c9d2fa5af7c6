//! Admission against balance and quota, inside the booking transaction: the
//! school's quota row and live vouchers are locked, so concurrent bookings
//! of one school serialise here and can never overspend or over-seat.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use classgrid_placement::{Explanation, FilterCount, Owner, SeatPlacement};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::{
    domain::ServiceError,
    state::Broker,
    store::{
        jobs::JobRow,
        vouchers::{self as store, NewEntry},
    },
    vouchers::{
        EligibleVoucher, MicroHours, Need, SeatCost, allocate, hours, quota, worst_case_uah,
    },
};

/// A refusal that reads like a placement refusal, with the numbers.
pub(crate) fn refused(filter: &'static str, sentence: String) -> ServiceError {
    ServiceError::Refused(Box::new(Explanation {
        nodes_considered: 0,
        filters: vec![FilterCount {
            filter,
            removed: 0,
            detail: sentence.clone(),
        }],
        summary: sentence,
    }))
}

/// What a hold takes from which voucher, decided but not yet written.
#[derive(Debug, Clone)]
pub struct HoldPlan {
    owner: Owner,
    school_site_id: Uuid,
    takes: Vec<(Uuid, MicroHours)>,
    note: String,
}

impl HoldPlan {
    /// A hold that takes nothing (a free seat, or a lesson hosted for a
    /// peer region, which its home region's vouchers pay for).
    pub fn nothing(owner: Owner, school_site_id: Uuid) -> Self {
        HoldPlan {
            owner,
            school_site_id,
            takes: Vec::new(),
            note: String::new(),
        }
    }

    /// The worst-case cost held, in µAh (0 for a booking that costs nothing).
    pub fn amount(&self) -> MicroHours {
        self.takes.iter().map(|(_, t)| t).sum()
    }

    /// (voucher, µAh) per voucher the hold draws on, soonest-expiring first.
    pub fn takes(&self) -> &[(Uuid, MicroHours)] {
        &self.takes
    }

    /// How the cost was reckoned, as the ledger's note says it.
    pub fn note(&self) -> &str {
        &self.note
    }

    /// The ledger entries that write this hold.
    pub fn entries(&self) -> impl Iterator<Item = NewEntry<'_>> {
        self.takes.iter().map(|&(voucher_id, take)| NewEntry {
            voucher_id,
            school_site_id: self.school_site_id,
            kind: "hold",
            amount_uah: -take,
            owner: Some(self.owner),
            borrowed_lesson_id: None,
            hold_id: None,
            node_class: None,
            metered_slice_seconds: None,
            note: &self.note,
        })
    }
}

/// Writes the ledger's hold entries of `plans`, in one statement.
pub async fn write_holds(
    tx: &mut Transaction<'_, Postgres>,
    plans: &[&HoldPlan],
) -> sqlx::Result<()> {
    let entries: Vec<NewEntry> = plans.iter().flat_map(|p| p.entries()).collect();
    store::append_many(tx, &entries).await
}

/// A school's quota row and live vouchers (with their balances), locked in
/// a transaction: what its holds are decided from, read once. Each hold
/// decided from it is taken off its balances at once, so several bookings of
/// one school decided in one transaction (a series) never spend a voucher
/// twice.
#[derive(Default)]
pub struct SchoolLock {
    quota: Option<i32>,
    vouchers: Vec<EligibleVoucher>,
    /// Seats of bookings decided from this lock and not yet committed,
    /// which the quota check of the next one counts as busy.
    decided: Vec<quota::Busy>,
}

impl SchoolLock {
    fn take(&mut self, plan: &HoldPlan, busy: quota::Busy) {
        crate::vouchers::allocate::spend(&mut self.vouchers, &plan.takes);
        self.decided.push(busy);
    }

    /// How many bookings' seats `decided` holds (a mark for `written_since`).
    pub(crate) fn decided_len(&self) -> usize {
        self.decided.len()
    }

    /// The bookings decided since `mark` were written in this transaction,
    /// where the quota check reads their seats from now on: counting them
    /// here too would count them twice.
    pub(crate) fn written_since(&mut self, mark: usize) {
        self.decided.truncate(mark);
    }

    /// The school's live vouchers with their balances, as locked.
    pub(crate) fn vouchers(&self) -> &[EligibleVoucher] {
        &self.vouchers
    }

    /// Why `requested` more seats of `owner` in `[start, end)` would exceed
    /// the school's seat quota, if they would; None when there is no quota
    /// or they fit.
    pub(crate) async fn quota_refusal(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        owner: Owner,
        school_site_id: Uuid,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        requested: i64,
        school: &str,
    ) -> sqlx::Result<Option<String>> {
        let Some(max) = self.quota else {
            return Ok(None);
        };
        let mut busy = store::busy_seats(tx, school_site_id, start, end, owner).await?;
        busy.extend(self.decided.iter().cloned());
        let peak = quota::peak(&busy, start, end);
        Ok(quota::check(i64::from(max), peak, requested, school))
    }
}

impl Broker {
    /// Booking hook, first in the transaction: locks the school's quota
    /// row and live vouchers, so that one school's concurrent bookings queue
    /// here rather than while holding node locks (whose order differs per
    /// booking).
    pub async fn lock_school_vouchers(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        school_site_id: Uuid,
    ) -> sqlx::Result<SchoolLock> {
        let mut locks = self.lock_schools(tx, &[school_site_id]).await?;
        Ok(locks.remove(&school_site_id).unwrap_or_default())
    }

    /// `lock_school_vouchers` for several schools in two statements and
    /// one order (a batch of bookings).
    pub async fn lock_schools(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        schools: &[Uuid],
    ) -> sqlx::Result<HashMap<Uuid, SchoolLock>> {
        let mut quotas = store::lock_quotas(tx, schools).await?;
        let mut vouchers = store::lock_live_vouchers(tx, schools, Utc::now()).await?;
        Ok(schools
            .iter()
            .map(|s| {
                let lock = SchoolLock {
                    quota: quotas.remove(s),
                    vouchers: vouchers.remove(s).unwrap_or_default(),
                    decided: Vec::new(),
                };
                (*s, lock)
            })
            .collect())
    }

    /// Booking hook: decides the lesson's hold, its worst-case cost from its
    /// start to its end plus grace, and checks the seat quota for
    /// `[start, end)`. Nothing is written: a refusal comes back as the inner
    /// `Err`, and the hold is written with `write_holds` once the lesson row
    /// exists (the ledger names it).
    pub async fn check_lesson_hold(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        lock: &mut SchoolLock,
        lesson_id: Uuid,
        school_site_id: Uuid,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        seats: &[SeatPlacement],
    ) -> sqlx::Result<Result<HoldPlan, ServiceError>> {
        let grace = chrono::Duration::from_std(self.cfg.grace).unwrap_or_default();
        let owner = Owner::Lesson(lesson_id);
        let verdict = self
            .admit_check(
                tx,
                lock,
                owner,
                school_site_id,
                (start, end),
                end + grace,
                seats,
            )
            .await?;
        Ok(verdict.map_err(|(filter, sentence)| refused(filter, sentence)))
    }

    /// Job-start hook: the same for a job's run, to its end plus its grace.
    /// On refusal the job stays queued with the reason as its message, like
    /// a capacity refusal, and `false` comes back; the caller rolls back.
    pub async fn hold_for_job(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        job: &JobRow,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        seat: &SeatPlacement,
    ) -> sqlx::Result<bool> {
        let stop = end + chrono::Duration::seconds(i64::from(job.grace_s.max(0)));
        let seats = std::slice::from_ref(seat);
        let owner = Owner::Job(job.id);
        let mut lock = self.lock_school_vouchers(tx, job.school_site_id).await?;
        match self
            .admit_check(
                tx,
                &mut lock,
                owner,
                job.school_site_id,
                (start, end),
                stop,
                seats,
            )
            .await?
        {
            Ok(plan) => {
                write_holds(tx, &[&plan]).await?;
                Ok(true)
            }
            Err((_, sentence)) => {
                let msg = format!("queued: {sentence}");
                self.store.set_job_message(job.id, &msg).await?;
                Ok(false)
            }
        }
    }

    /// Checks quota, then decides which vouchers hold the cost; answers the
    /// refusal, if any, as (filter, sentence).
    #[allow(clippy::too_many_arguments)]
    async fn admit_check(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        lock: &mut SchoolLock,
        owner: Owner,
        school_site_id: Uuid,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        charge_end: DateTime<Utc>,
        seats: &[SeatPlacement],
    ) -> sqlx::Result<Result<HoldPlan, (&'static str, String)>> {
        let nothing = HoldPlan::nothing(owner, school_site_id);
        let school = self
            .fleet
            .site_by_id(school_site_id)
            .map(|s| s.name)
            .unwrap_or_else(|| school_site_id.to_string());
        let requested = seats.len() as i64;
        if let Some(s) = lock
            .quota_refusal(tx, owner, school_site_id, (start, end), requested, &school)
            .await?
        {
            return Ok(Err(("quota", s)));
        }

        let costs: Vec<(SeatCost, &SeatPlacement)> =
            seats.iter().map(|p| (self.seat_cost(p), p)).collect();
        let priced: Vec<SeatCost> = costs.iter().map(|(c, _)| *c).collect();
        let amount = worst_case_uah(&priced, (charge_end - start).num_seconds());
        let busy = quota::Busy {
            start,
            end,
            seats: requested,
        };
        if amount == 0 {
            lock.take(&nothing, busy);
            return Ok(Ok(nothing));
        }
        // Each node once: a voucher's rule holds for every node or not
        // (`allocate`), and a class puts several seats on one node.
        let mut used: Vec<Uuid> = costs
            .iter()
            .filter(|(c, _)| !c.is_free())
            .map(|(_, p)| p.node_id)
            .collect();
        used.sort_unstable();
        used.dedup();
        let nodes = used
            .into_iter()
            .filter_map(|id| self.fleet.with_node(id, |n| (n.tier.clone(), n.site_id)))
            .collect();
        let need = Need {
            amount,
            start,
            end: charge_end,
            nodes,
        };
        let holds = match allocate(&lock.vouchers, &need) {
            Ok(h) => h,
            Err(short) => return Ok(Err(("voucher", short.sentence(&school)))),
        };
        let gpu_seats = priced.iter().filter(|c| !c.is_free()).count();
        let note = format!(
            "worst case {} accelerator-hours: {gpu_seats} accelerator seat(s) from {} to {}",
            hours(amount),
            start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            charge_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let plan = HoldPlan {
            takes: holds,
            note,
            ..nothing
        };
        lock.take(&plan, busy);
        Ok(Ok(plan))
    }

    /// A seat's fraction and model weight, from the live view of its node.
    fn seat_cost(&self, p: &SeatPlacement) -> SeatCost {
        let grants: Vec<(u32, u32)> = p
            .devices
            .iter()
            .map(|g| (g.index, g.compute_percent))
            .collect();
        self.grants_cost(p.node_id, &grants)
    }

    /// What (device index, compute percent) grants on a node cost, by the
    /// models the live view of the node has at those indexes.
    pub(crate) fn grants_cost(&self, node_id: Uuid, grants: &[(u32, u32)]) -> SeatCost {
        let weights = &self.cfg.vouchers.weights;
        let priced = |n: Option<&crate::fleet::LiveNode>| {
            let priced: Vec<(u32, &str)> = grants
                .iter()
                .map(|&(index, pct)| {
                    let model = n
                        .and_then(|n| n.devices.iter().find(|d| d.idx as u32 == index))
                        .map_or("", |d| d.model.as_str());
                    (pct, model)
                })
                .collect();
            SeatCost::of(&priced, weights)
        };
        self.fleet
            .with_node(node_id, |n| priced(Some(n)))
            .unwrap_or_else(|| priced(None))
    }
}
