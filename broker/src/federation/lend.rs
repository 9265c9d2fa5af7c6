//! The lender's side (decision 094): a peer asks for an offer, and this
//! region runs its own placement through its own plan applier (the
//! `Reserver`, by way of the ordinary booking path) on the nodes its lending
//! policy opens to that peer. What it admits is booked as a hosted lesson
//! and held until an expiry; the home region commits it or lets it go, and a
//! hold nobody commits is released by the sweeper. Everything is keyed by
//! the home lesson id, so a call that arrives twice does one thing.

use chrono::Utc;
use classgrid_placement::Explanation;
use uuid::Uuid;

use super::policy::LendingTerms;
use crate::{
    domain::{ServiceError, lesson::RawBooking, states::lesson as ls},
    service::lessons::{BookOptions, LessonView},
    state::Broker,
    store::{
        peers::{HoldRow, PeeringRow},
        settlement::Settled,
    },
    vouchers::{MicroHours, SeatCost, worst_case_uah},
};

/// Hold bounds, seconds: long enough for a home region to commit over a
/// slow link, short enough that a home broker that died gives the
/// capacity back within a minute or two.
const MIN_HOLD_S: i64 = 2;
const MAX_HOLD_S: i64 = 120;
const DEFAULT_HOLD_S: i64 = 30;

/// A lender's answer to an ask.
pub enum Lent {
    Held {
        hold: HoldRow,
        view: Box<LessonView>,
    },
    Refused(Box<Explanation>),
}

/// What the home region holds on the school's vouchers for an offer.
pub struct Price {
    /// The most the seats can cost, µAh.
    pub worst_case_uah: MicroHours,
    /// Each seat's node tier, in seat order.
    pub seat_tiers: Vec<String>,
}

/// A hosted lesson as its home region reads it.
pub struct Hosted {
    pub hold: HoldRow,
    pub view: Option<LessonView>,
    /// This region's settlement line for it, once it is over and metered.
    pub settled: Option<Settled>,
}

/// A refusal that reads like a placement refusal, as vouchers word theirs.
fn refusal(filter: &'static str, sentence: String) -> Box<Explanation> {
    match crate::service::vouchers::admission::refused(filter, sentence) {
        ServiceError::Refused(e) => e,
        other => unreachable!("refused() builds a refusal, not {other:?}"),
    }
}

impl Broker {
    /// Asks this region to hold `raw` (its school site is ignored: hosted
    /// lessons are booked at the peering's site) for the peer's lesson
    /// `home_lesson`.
    pub async fn lend_offer(
        &self,
        peer: &PeeringRow,
        home_lesson: Uuid,
        mut raw: RawBooking,
        hold_s: i64,
    ) -> Result<Lent, ServiceError> {
        if let Some(h) = self.store.hold(peer.id, home_lesson).await? {
            return self.answer_again(h).await;
        }
        if raw.seats < 1 {
            return Err(ServiceError::field("seats", "must be at least 1"));
        }
        let terms = LendingTerms::from_json(&peer.lending.0);
        let start = raw
            .start
            .ok_or_else(|| ServiceError::field("start", "is required"))?;
        let end = start + chrono::Duration::seconds(raw.duration_seconds.max(0));
        if !terms.window_allowed(start, end) {
            return Ok(Lent::Refused(refusal(
                "lending_policy",
                format!(
                    "region {} lends to {} only in {} UTC",
                    peer.local_name,
                    peer.name,
                    terms.hours_text()
                ),
            )));
        }
        let lead = chrono::Duration::from_std(self.cfg.staging_lead).unwrap_or_default();
        let grace = chrono::Duration::from_std(self.cfg.grace).unwrap_or_default();
        let window = (start - lead, end + grace);
        let used = self.store.lent_slices(peer.id, window, home_lesson).await?;
        let left = (i64::from(terms.max_slices) - used).max(0);
        if raw.seats > left && (raw.min_seats <= 0 || raw.min_seats > left) {
            return Ok(Lent::Refused(refusal(
                "lending_policy",
                format!(
                    "region {} lends {} at most {} slices at a time; {} are in use",
                    peer.local_name, peer.name, terms.max_slices, used
                ),
            )));
        }
        // The admission rule of the class still holds: with min_seats, as
        // many seats as the policy leaves.
        raw.seats = raw.seats.min(left);
        raw.school_site = peer.site.clone();
        raw.request_id = String::new();
        // The hold is written first, naming the lesson about to be booked:
        // a crash between the two leaves a hold that expires, never a
        // lesson nobody releases.
        let hold_s = if hold_s <= 0 {
            DEFAULT_HOLD_S
        } else {
            hold_s.clamp(MIN_HOLD_S, MAX_HOLD_S)
        };
        let lesson_id = Uuid::now_v7();
        let (hold, fresh) = self
            .store
            .insert_hold(&HoldRow {
                peering_id: peer.id,
                home_lesson_id: home_lesson,
                lesson_id,
                seats: raw.seats as i32,
                window_start: window.0,
                window_end: window.1,
                state: "holding".into(),
                expires_at: Utc::now() + chrono::Duration::seconds(hold_s),
                weight: terms.weight,
            })
            .await?;
        if !fresh {
            return self.answer_again(hold).await;
        }
        let opts = BookOptions {
            lesson_id: Some(lesson_id),
            hosted: true,
            nodes: Some(Box::new(move |n| terms.node_allowed(n))),
        };
        match self.book_with(raw, opts).await {
            Ok(view) => {
                match self
                    .store
                    .set_hold_state(peer.id, home_lesson, &["holding"], "held")
                    .await?
                {
                    Some(hold) => Ok(Lent::Held {
                        hold,
                        view: Box::new(view),
                    }),
                    None => {
                        // The sweeper expired the hold while it was being
                        // booked: the lesson goes too.
                        self.release_hosted(lesson_id, "hold expired before it was made")
                            .await?;
                        Ok(Lent::Refused(refusal(
                            "hold",
                            "the hold expired before it was made; ask again".into(),
                        )))
                    }
                }
            }
            Err(e) => {
                self.store
                    .set_hold_state(peer.id, home_lesson, &["holding"], "released")
                    .await?;
                match e {
                    ServiceError::Refused(expl) => Ok(Lent::Refused(expl)),
                    other => Err(other),
                }
            }
        }
    }

    /// The most an offered lesson's seats can cost, priced by this
    /// region's voucher weights times the lending weight of the hold
    /// (decision 108) as its settlement line will be (`settle_lent`), from
    /// the start to the end plus this region's grace, and the tier of each
    /// seat's node. The home region holds this much of the school's
    /// vouchers before it commits (decision 105).
    pub fn lent_price(&self, view: &LessonView, lending_weight: f64) -> Price {
        let mut costs = Vec::with_capacity(view.seats.len());
        let mut seat_tiers = Vec::with_capacity(view.seats.len());
        for s in &view.seats {
            let Some(node_id) = s.node_id else {
                costs.push(SeatCost::of::<&str>(&[], &self.cfg.vouchers.weights));
                seat_tiers.push("edge".to_string());
                continue;
            };
            let pct = s.gpu_compute_pct.max(0) as u32;
            let grants: Vec<(u32, u32)> = s
                .device_indexes
                .iter()
                .map(|i| ((*i).max(0) as u32, pct))
                .collect();
            costs.push(self.grants_cost(node_id, &grants));
            let tier = self.fleet.node(node_id).map(|n| n.tier);
            seat_tiers.push(tier.unwrap_or_else(|| "edge".into()));
        }
        for c in &mut costs {
            c.weight *= lending_weight;
        }
        let grace = self.cfg.grace.as_secs() as i64;
        Price {
            worst_case_uah: worst_case_uah(&costs, i64::from(view.lesson.duration_s) + grace),
            seat_tiers,
        }
    }

    /// The answer to an ask this region already answered.
    async fn answer_again(&self, h: HoldRow) -> Result<Lent, ServiceError> {
        match h.state.as_str() {
            "held" | "committed" => {
                let view = self.lesson(h.lesson_id).await?;
                Ok(Lent::Held {
                    hold: h,
                    view: Box::new(view),
                })
            }
            "holding" => Err(ServiceError::Unavailable(
                "this lesson's offer is being made; ask again in a moment".into(),
            )),
            other => Ok(Lent::Refused(refusal(
                "hold",
                format!("the hold for this lesson was {other}; book the lesson again"),
            ))),
        }
    }

    fn hold_of(h: Option<HoldRow>, home_lesson: Uuid) -> Result<HoldRow, ServiceError> {
        h.ok_or_else(|| ServiceError::NotFound(format!("hosted lesson {home_lesson}")))
    }

    /// Books the hold for good; a second commit books nothing more.
    pub async fn lend_commit(
        &self,
        peer: &PeeringRow,
        home_lesson: Uuid,
    ) -> Result<Hosted, ServiceError> {
        let hold = match self.store.commit_hold(peer.id, home_lesson).await? {
            Some(h) => h,
            None => {
                let h = Self::hold_of(self.store.hold(peer.id, home_lesson).await?, home_lesson)?;
                return Err(ServiceError::Conflict(format!(
                    "the hold for lesson {home_lesson} is {} (it expired at {}); ask for a new offer",
                    h.state,
                    h.expires_at.to_rfc3339()
                )));
            }
        };
        self.hosted(hold).await
    }

    /// Lets the hold or the hosted lesson go; idempotent.
    pub async fn lend_release(
        &self,
        peer: &PeeringRow,
        home_lesson: Uuid,
    ) -> Result<Hosted, ServiceError> {
        let hold = match self
            .store
            .set_hold_state(
                peer.id,
                home_lesson,
                &["holding", "held", "committed"],
                "released",
            )
            .await?
        {
            Some(h) => h,
            None => Self::hold_of(self.store.hold(peer.id, home_lesson).await?, home_lesson)?,
        };
        self.release_hosted(hold.lesson_id, "released by its home region")
            .await?;
        self.hosted(hold).await
    }

    /// A hosted lesson of the calling peer, for its home region.
    pub async fn lend_get(
        &self,
        peer: &PeeringRow,
        home_lesson: Uuid,
    ) -> Result<Hosted, ServiceError> {
        let hold = Self::hold_of(self.store.hold(peer.id, home_lesson).await?, home_lesson)?;
        self.hosted(hold).await
    }

    async fn hosted(&self, hold: HoldRow) -> Result<Hosted, ServiceError> {
        let view = match self.lesson(hold.lesson_id).await {
            Ok(v) => Some(v),
            Err(ServiceError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let settled = self
            .store
            .settled(hold.peering_id, "lent", hold.home_lesson_id)
            .await?;
        Ok(Hosted {
            hold,
            view,
            settled,
        })
    }

    /// Cancels a hosted lesson unless it is over or was never booked.
    async fn release_hosted(&self, lesson: Uuid, why: &str) -> Result<(), ServiceError> {
        match self.store.get_lesson(lesson).await? {
            Some(l) if !ls::is_final(&l.state) => match self.cancel_lesson(lesson, why).await {
                Ok(_) | Err(ServiceError::Conflict(_)) => Ok(()),
                Err(e) => Err(e),
            },
            _ => Ok(()),
        }
    }

    /// Releases every hold past its expiry that was never committed; the
    /// capacity comes back. Returns how many.
    pub async fn expire_holds(&self) -> Result<usize, ServiceError> {
        let mut n = 0;
        for h in self.store.expired_holds().await? {
            if self
                .store
                .set_hold_state(
                    h.peering_id,
                    h.home_lesson_id,
                    &["holding", "held"],
                    "expired",
                )
                .await?
                .is_some()
            {
                tracing::info!(lesson = %h.lesson_id, home_lesson = %h.home_lesson_id, "peer hold expired uncommitted; releasing it");
                self.release_hosted(h.lesson_id, "hold expired uncommitted")
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Broker {
    /// Free capacity this region would lend `peer` for `[start, end)`, by
    /// tier, vendor and model: sums, never the node list. Reservations that
    /// overlap the window count in full (an upper bound of what is taken).
    pub async fn capacity_summary(
        &self,
        peer: &PeeringRow,
        start: chrono::DateTime<Utc>,
        end: chrono::DateTime<Utc>,
    ) -> Result<classgrid_proto::v1::CapacitySummary, ServiceError> {
        use std::collections::BTreeMap;

        use classgrid_proto::v1 as pb;
        if end <= start {
            return Err(ServiceError::field(
                "window.end",
                "must be after window.start",
            ));
        }
        let terms = LendingTerms::from_json(&peer.lending.0);
        let window = crate::reserve::window_ms(start, end);
        let taken = self.store.reservations_overlapping(window).await?;
        let fleet = self.fleet.snapshot();
        let mut groups: BTreeMap<(String, String, String), pb::FreeSlices> = BTreeMap::new();
        for n in fleet.nodes.iter().filter(|n| terms.node_allowed(n)) {
            let tier = format!("{:?}", n.tier).to_lowercase();
            let mine = || taken.iter().filter(|r| r.node_id == n.id);
            let cpu_taken: u64 = mine().map(|r| u64::from(r.cpu_millis)).sum();
            let free_cpu = u64::from(n.cpu_millis).saturating_sub(cpu_taken) as i32;
            if n.devices.is_empty() {
                let g = groups
                    .entry((tier.clone(), String::new(), String::new()))
                    .or_default();
                g.tier = tier;
                g.free_cpu_millis += free_cpu;
                continue;
            }
            for d in &n.devices {
                let on = || mine().filter(|r| r.device_index == Some(d.index));
                let mem: u64 = on().map(|r| r.gpu_memory_mib).sum();
                let pct: u32 = on().map(|r| r.gpu_compute_percent).sum();
                let key = (tier.clone(), d.vendor.clone(), d.model.clone());
                let g = groups.entry(key).or_default();
                g.tier = tier.clone();
                g.vendor = d.vendor.clone();
                g.model = d.model.clone();
                g.devices += 1;
                g.free_memory_mib += d.memory_mib.saturating_sub(mem) as i64;
                g.free_compute_percent += 100u32.saturating_sub(pct) as i32;
            }
            if let Some(g) = groups
                .values_mut()
                .find(|g| g.tier == tier && !g.vendor.is_empty())
            {
                g.free_cpu_millis += free_cpu;
            }
        }
        let used = self
            .store
            .lent_slices(peer.id, (start, end), Uuid::nil())
            .await?;
        Ok(pb::CapacitySummary {
            region: peer.local_name.clone(),
            window: Some(pb::TimeWindow {
                start: Some(prost_types::Timestamp {
                    seconds: start.timestamp(),
                    nanos: 0,
                }),
                end: Some(prost_types::Timestamp {
                    seconds: end.timestamp(),
                    nanos: 0,
                }),
            }),
            free: groups.into_values().collect(),
            lendable_slices: (i64::from(terms.max_slices) - used).max(0) as i32,
        })
    }
}

impl Broker {
    /// The probe responders of the nodes this region would lend `peer`
    /// (its lending policy's tiers and vendors), as (node name, host:port),
    /// for the peer's school edges to time (decision 109).
    pub async fn lendable_probe_targets(
        &self,
        peer: &PeeringRow,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        let terms = LendingTerms::from_json(&peer.lending.0);
        if terms.max_slices == 0 {
            return Ok(Vec::new());
        }
        let fleet = self.fleet.snapshot();
        let lent: std::collections::HashSet<Uuid> = fleet
            .nodes
            .iter()
            .filter(|n| terms.node_allowed(n))
            .map(|n| n.id)
            .collect();
        Ok(self
            .store
            .probe_targets()
            .await?
            .into_iter()
            .filter(|t| lent.contains(&t.node_id))
            .take(super::probes::MAX_TARGETS_PER_PEER)
            .map(|t| (t.name, t.addr))
            .collect())
    }
}

impl Broker {
    /// Records what each lent lesson that is over used, once, as the
    /// lender's settlement line: the agents' metered slice-seconds, priced
    /// by this region's voucher weights as a voucher charge would be, times
    /// the lending weight the lesson was lent at (decision 108). The
    /// home region copies the same line (`settle_borrowed`), so both
    /// ledgers agree to the micro-hour.
    pub async fn settle_lent(&self) -> Result<usize, ServiceError> {
        let wait = self.cfg.vouchers.settle_after.as_secs_f64();
        let mut n = 0;
        for l in self.store.lent_to_settle(wait).await? {
            let mut tx = self.store.begin().await?;
            let used = crate::store::vouchers::metered(
                &mut tx,
                classgrid_placement::Owner::Lesson(l.lesson_id),
                chrono::DateTime::UNIX_EPOCH,
                None,
            )
            .await?;
            tx.rollback().await?;
            let weights = &self.cfg.vouchers.weights;
            let mut s = Settled {
                seats: l.seats,
                amount_uah: 0,
                slice_seconds: 0.0,
            };
            for m in used {
                let weight = if m.models.is_empty() {
                    0.0
                } else {
                    weights.mean_weight(&m.models) * l.weight
                };
                s.amount_uah += crate::vouchers::metered_uah(m.slice_seconds, weight);
                s.slice_seconds += m.slice_seconds.max(0.0);
            }
            self.store
                .record_settlement(l.peering_id, "lent", l.home_lesson_id, s)
                .await?;
            tracing::info!(lesson = %l.lesson_id, home_lesson = %l.home_lesson_id, amount_uah = s.amount_uah, "lent lesson settled");
            n += 1;
        }
        Ok(n)
    }
}
