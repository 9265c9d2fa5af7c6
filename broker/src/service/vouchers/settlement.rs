//! Settlement and expiry. When a lesson or job is over, each of its holds is
//! released and the metered cost (the agents' slice-seconds × model weight)
//! is charged in its place, in one transaction. Usage reports can trail the
//! end by the agent's stop grace, so a hold whose owner ran work is settled
//! `settle_after` later, from a durable queue; one that ran nothing is
//! settled at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use classgrid_placement::Owner;
use sqlx::{Postgres, Transaction};
use tracing::{info, warn};

use crate::{
    state::Broker,
    store::vouchers::{self as store, HoldRow, NewEntry},
    vouchers::{
        MicroHours,
        allocate::{OpenHold, split_charge},
        hours, metered_uah,
    },
};

/// How long after its end a piece of work's usage is waited for while its
/// node is not connected.
pub(crate) const USAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Holds written by one booking: same owner, same transaction time.
fn groups(holds: Vec<HoldRow>) -> Vec<(Owner, Vec<HoldRow>)> {
    let mut out: Vec<(Owner, DateTime<Utc>, Vec<HoldRow>)> = Vec::new();
    for h in holds {
        let Some(owner) = h.owner() else { continue };
        match out.iter_mut().find(|(o, at, _)| *o == owner && *at == h.at) {
            Some((_, _, g)) => g.push(h),
            None => out.push((owner, h.at, vec![h])),
        }
    }
    out.into_iter().map(|(o, _, g)| (o, g)).collect()
}

/// A ledger row that settles hold `h`, for what the hold paid for.
fn settling<'a>(
    h: &HoldRow,
    kind: &'static str,
    amount_uah: MicroHours,
    note: &'a str,
) -> NewEntry<'a> {
    NewEntry {
        voucher_id: h.voucher_id,
        school_site_id: h.school_site_id,
        kind,
        amount_uah,
        owner: h.owner(),
        borrowed_lesson_id: h.borrowed_lesson_id,
        hold_id: Some(h.id),
        node_class: None,
        metered_slice_seconds: None,
        note,
    }
}

/// Releases each open hold and charges `by_class` (node class → µAh,
/// slice-seconds) in its place, split over the holds in order and never
/// beyond them; what a hold on an expired voucher leaves unused expires at
/// once. The one settlement writer for lessons, jobs and lessons hosted by
/// a peer region; `why` replaces the release rows' note.
pub(crate) async fn write_settlement(
    tx: &mut Transaction<'_, Postgres>,
    holds: &[&HoldRow],
    by_class: &BTreeMap<String, (MicroHours, f64)>,
    why: Option<&str>,
) -> anyhow::Result<()> {
    let classes: Vec<(String, MicroHours)> =
        by_class.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    let open_holds: Vec<OpenHold> = holds
        .iter()
        .map(|h| OpenHold {
            hold_id: h.id,
            amount: -h.amount_uah,
        })
        .collect();
    let parts = split_charge(&open_holds, &classes);
    let held: MicroHours = open_holds.iter().map(|h| h.amount).sum();
    let metered: MicroHours = classes.iter().map(|c| c.1).sum();
    let release_note = if let Some(why) = why {
        why.to_string()
    } else if metered > held {
        format!(
            "settled: metered {} accelerator-hours exceeds the hold; charged the hold",
            hours(metered)
        )
    } else {
        format!("settled: metered {} accelerator-hours", hours(metered))
    };
    for h in holds {
        store::append(tx, &settling(h, "release", -h.amount_uah, &release_note)).await?;
        let mut charged = 0;
        for p in parts.iter().filter(|p| p.hold_id == h.id) {
            let (class_uah, class_secs) = by_class[&p.node_class];
            let secs = if class_uah > 0 {
                class_secs * p.amount as f64 / class_uah as f64
            } else {
                0.0
            };
            let note = format!("metered use on {} nodes", p.node_class);
            store::append(
                tx,
                &NewEntry {
                    node_class: Some(&p.node_class),
                    metered_slice_seconds: Some(secs),
                    ..settling(h, "charge", -p.amount, &note)
                },
            )
            .await?;
            charged += p.amount;
        }
        let unused = -h.amount_uah - charged;
        if unused > 0 && store::has_expired(tx, h.voucher_id).await? {
            store::append(
                tx,
                &settling(
                    h,
                    "expiry",
                    -unused,
                    "released after the voucher's date; expired at once",
                ),
            )
            .await?;
        }
    }
    Ok(())
}

impl Broker {
    /// End, cancel or completion hook: settles the owner's open holds now
    /// when there is no usage to wait for (`metering_complete`, or nothing
    /// ran), else queues them for `settle_after`.
    pub async fn settle_vouchers(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        owner: Owner,
        metering_complete: bool,
    ) -> anyhow::Result<()> {
        let holds = store::unsettled_holds(tx, owner).await?;
        for (owner, group) in groups(holds) {
            let at = group[0].at;
            if metering_complete || !store::has_assignments_since(tx, owner, at).await? {
                self.settle_group(tx, owner, &group).await?;
            } else {
                let due = Utc::now() + self.settle_delay();
                let ids: Vec<i64> = group.iter().map(|h| h.id).collect();
                store::queue_settlement(tx, &ids, due).await?;
            }
        }
        Ok(())
    }

    /// The clock's voucher step: expire vouchers on their date, then settle
    /// queued holds that are due.
    pub async fn voucher_tick(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        for id in self.store.vouchers_due_to_expire(now).await? {
            let mut tx = self.store.begin().await?;
            store::lock_vouchers(&mut tx, &[id]).await?;
            if store::has_expired(&mut tx, id).await? {
                continue;
            }
            let balance = store::balance_of(&mut tx, id).await?;
            let school = store::school_of(&mut tx, id).await?;
            store::append(
                &mut tx,
                &NewEntry {
                    voucher_id: id,
                    school_site_id: school,
                    kind: "expiry",
                    amount_uah: -balance.max(0),
                    owner: None,
                    borrowed_lesson_id: None,
                    hold_id: None,
                    node_class: None,
                    metered_slice_seconds: None,
                    note: "reached its valid_until; unused balance expired",
                },
            )
            .await?;
            tx.commit().await?;
            info!(voucher = %id, expired = %hours(balance), "voucher expired");
        }
        for (owner, group) in groups(self.store.settlements_due(now).await?) {
            if self.awaiting_usage(owner, &group, now).await? {
                let ids: Vec<i64> = group.iter().map(|h| h.id).collect();
                let later = now + self.settle_delay();
                self.store.postpone_settlement(&ids, later).await?;
                continue;
            }
            let mut tx = self.store.begin().await?;
            match self.settle_group(&mut tx, owner, &group).await {
                Ok(()) => tx.commit().await?,
                Err(e) => warn!(?owner, error = %e, "voucher settlement failed; will retry"),
            }
        }
        Ok(())
    }

    /// How long after its end a hold waits for the agents' last usage.
    fn settle_delay(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.vouchers.settle_after).unwrap_or_default()
    }

    /// True while some of the owner's work has not had its agent's final
    /// report (stopped, exited or failed, which carries the last
    /// slice-seconds), or ran on a node whose agent is not connected to this
    /// broker now. A stop takes up to the work's grace and a loaded machine
    /// delays reports further, so a timer alone charged usage that had not
    /// arrived yet, down to nothing (decision 076). A site cut off from the
    /// region keeps its lessons going (decision 043) and reports their usage
    /// when it is back; a node still counted as connected after a broker
    /// restart is waited for until its agent has delivered its backlog. Not
    /// past `USAGE_WAIT` after the work's end: a node that never returns
    /// must not hold a voucher forever.
    async fn awaiting_usage(
        &self,
        owner: Owner,
        group: &[HoldRow],
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let Some(at) = group.first().map(|h| h.at) else {
            return Ok(false);
        };
        let wait = chrono::Duration::from_std(USAGE_WAIT).unwrap_or_default();
        let nodes = self.store.owner_assignment_nodes(owner, at).await?;
        Ok(nodes.iter().any(|(node, ends_at, reported)| {
            now < *ends_at + wait && !(*reported && self.fleet.is_caught_up(*node))
        }))
    }

    /// Releases each hold of one booking and charges what its owner's work
    /// metered between this hold and the owner's next one, per node class.
    async fn settle_group(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        owner: Owner,
        group: &[HoldRow],
    ) -> anyhow::Result<()> {
        let ids: Vec<i64> = group.iter().map(|h| h.id).collect();
        let vouchers: Vec<_> = group.iter().map(|h| h.voucher_id).collect();
        store::lock_vouchers(tx, &vouchers).await?;
        let open = store::still_open(tx, &ids).await?;
        let holds: Vec<&HoldRow> = group.iter().filter(|h| open.contains(&h.id)).collect();
        store::dequeue_settlement(tx, &ids).await?;
        let Some(first) = holds.first() else {
            return Ok(());
        };
        let next = store::next_hold_at(tx, owner, first.at).await?;
        let weights = &self.cfg.vouchers.weights;
        // node class → (µAh, slice-seconds)
        let mut by_class: BTreeMap<String, (MicroHours, f64)> = BTreeMap::new();
        for m in store::metered(tx, owner, first.at, next).await? {
            let weight = if m.models.is_empty() {
                0.0
            } else {
                weights.mean_weight(&m.models)
            };
            let e = by_class.entry(m.tier).or_default();
            e.0 += metered_uah(m.slice_seconds, weight);
            e.1 += m.slice_seconds.max(0.0);
        }
        write_settlement(tx, &holds, &by_class, None).await
    }
}
